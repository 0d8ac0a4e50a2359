// Page benchmark in real Chromium, driven by topomap's Go benchmark:
//   node bench.mjs <page url with token> <pan/zoom frames> [screenshot.png]
// Prints {"step":"result", firstRenderMs, fps, ...}: time from navigation to the first
// frame drawn with data, and the frame rate while panning and zooming (full redraws).
import { launch, emit } from './browser.mjs';

const [pageURL, frames, shot] = process.argv.slice(2);
const { context, close } = await launch();
try {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(pageURL);
  await page.waitForFunction(() => window.__topomap?.ui.firstRender > 0, null, { timeout: 60000, polling: 50 });
  const first = await page.evaluate(() => ({
    firstRenderMs: window.__topomap.ui.firstRender,
    nodes: window.__topomap.store.nodes.size,
    edges: window.__topomap.store.edges.size,
  }));
  let pz = {};
  if (+frames > 0) pz = await page.evaluate((n) => window.__topomap.panZoom(n), +frames);
  const seq = await page.evaluate(() => window.__topomap.store.seq);
  if (shot) {
    await page.waitForFunction(() => !window.__topomap.ui.view.pending(), null, { timeout: 10000 }).catch(() => {});
    await page.screenshot({ path: shot });
  }
  emit({ step: 'result', ...first, ...pz, seq, errors });
} finally {
  await close();
}
