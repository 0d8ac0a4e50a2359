// Shared Chromium launch for the e2e scripts: Debian's chromium via playwright-core,
// headless, no network beyond the page's own loopback server, a fresh profile.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'topomap-chromium-'));
  // playwright passes the fresh profile as --user-data-dir itself.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1400, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return { context, close: async () => { await context.close(); rmSync(profile, { recursive: true, force: true }); } };
}

export function emit(obj) { console.log(JSON.stringify(obj)); }

// redAt reports whether the canvas shows the "down" red within 3 px of a screen point.
export const redAt = (page, pt) => colourAt(page, pt, [248, 81, 73]);

// greenAt: the same for the "ok" green.
export const greenAt = (page, pt) => colourAt(page, pt, [46, 160, 67]);

async function colourAt(page, pt, rgb) {
  return page.evaluate(([x, y, [r, g, b]]) => {
    const c = document.getElementById('map');
    const dpr = window.devicePixelRatio || 1;
    const d = c.getContext('2d').getImageData(Math.round(x * dpr) - 3, Math.round(y * dpr) - 3, 7, 7).data;
    for (let i = 0; i < d.length; i += 4) {
      if (Math.abs(d[i] - r) < 30 && Math.abs(d[i + 1] - g) < 30 && Math.abs(d[i + 2] - b) < 30) return true;
    }
    return false;
  }, [...pt, rgb]);
}
