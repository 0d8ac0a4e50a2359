// Service view label placement in real Chromium, driven by topomap's Go test:
//   node labels.mjs <page url with token> <cluster,cluster,...> <artifacts dir>
// Draws each cluster's service view and reports every workload box, edge label, namespace
// group and namespace title drawn, in screen pixels, for the Go test to check that no
// label or title covers a box or another label or title.
import { launch, emit } from './browser.mjs';

const [pageURL, clusters, artifacts] = process.argv.slice(2);
const { context, close } = await launch();
try {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(pageURL + '&view=services');
  for (const cluster of clusters.split(',')) {
    await page.waitForFunction((c) => window.__topomap?.ui.conn === 'live' && [...document.querySelectorAll('#cluster option')].some((o) => o.value === c), cluster, { timeout: 20000 });
    await page.selectOption('#cluster', cluster);
    await page.waitForFunction(() => window.__topomap.labelBoxes().labels.length > 0, null, { timeout: 10000 });
    await page.waitForTimeout(100);
    await page.screenshot({ path: `${artifacts}/services-${cluster}.png` });
    const placed = await page.evaluate(() => window.__topomap.labelBoxes());
    const flows = await page.evaluate(() => window.__topomap.flowsDrawn().length);
    const r = await page.evaluate(() => document.querySelector('#map').getBoundingClientRect().toJSON());
    const legend = await page.evaluate(() => {
      const m = document.querySelector('#map').getBoundingClientRect(), l = document.querySelector('#legend').getBoundingClientRect();
      return [l.left - m.left, l.top - m.top, l.right - m.left, l.bottom - m.top];
    });
    emit({ step: cluster, ...placed, flows, viewport: [r.width, r.height], legend });
    if (placed.boxes.length > 50) {
      // Fitted, a big cluster's edge labels are too small to read: zoom to 1:1 (a
      // workload box 34 px high, the labels at their own 11 px) into the namespace group
      // nearest the middle, as a user would, where the same placement is readable.
      const mid = [r.width / 2, r.height / 2];
      const c = placed.frames.map(({ r: f }) => [(f[0] + f[2]) / 2, (f[1] + f[3]) / 2])
        .sort((a, b) => Math.hypot(a[0] - mid[0], a[1] - mid[1]) - Math.hypot(b[0] - mid[0], b[1] - mid[1]))[0];
      await page.mouse.move(r.x + c[0], r.y + c[1]);
      const k = (placed.boxes[0][3] - placed.boxes[0][1]) / 34;
      await page.mouse.wheel(0, Math.log(k) / 0.0015);
      await page.waitForTimeout(200);
      await page.screenshot({ path: `${artifacts}/services-${cluster}-zoomed.png` });
      const zoomed = await page.evaluate(() => window.__topomap.labelBoxes());
      emit({ step: `${cluster}-zoomed`, ...zoomed, flows, viewport: [r.width, r.height] });
    }
  }
  emit({ step: 'done', errors });
} finally {
  await close();
}
