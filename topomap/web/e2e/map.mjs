// End-to-end check of the map in real Chromium, driven by topomap's Go test:
//   node map.mjs <page url with token> <control url> <artifacts dir>
// Prints one JSON object per step; the Go test asserts on them.
import { launch, emit, redAt } from './browser.mjs';

const [pageURL, controlURL, artifacts] = process.argv.slice(2);
const { context, close } = await launch();
try {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(pageURL);
  await page.waitForFunction(() => window.__topomap?.ui.conn === 'live' && window.__topomap.store.edges.size > 0, null, { timeout: 15000 });
  await page.waitForTimeout(100); // let one frame paint before the screenshot
  const loaded = await page.evaluate(() => {
    const s = window.__topomap.store;
    const nodes = [...s.nodes.values()], edges = [...s.edges.values()];
    return {
      step: 'loaded',
      conn: document.getElementById('conn-text').textContent,
      sites: nodes.filter((n) => n.kind === 'site').map((n) => n.label).sort(),
      tunnels: edges.filter((e) => e.kind === 'tunnel').map((e) => e.id).sort(),
      tunnelsDrawn: edges.filter((e) => e.kind === 'tunnel' && window.__topomap.edgeMid(e.id)).length,
      legend: document.getElementById('legend').textContent.includes('WireGuard tunnel'),
    };
  });
  await page.screenshot({ path: `${artifacts}/world.png` });
  emit(loaded);

  // Hover the first tunnel: the tooltip shows RTT and throughput.
  const tunnel = 'tunnel:node:nyc-1|node:tyo-1';
  const mid = await page.evaluate((id) => {
    const p = window.__topomap.edgeMid(id), r = document.getElementById('map').getBoundingClientRect();
    return [p[0] + r.left, p[1] + r.top];
  }, tunnel);
  await page.mouse.move(mid[0], mid[1]);
  const tip = await page.waitForSelector('#tooltip:not([hidden])', { timeout: 3000 }).then((el) => el.textContent()).catch(() => '');
  emit({ step: 'hover', tunnel, tooltip: tip });

  // Hover a steering arrow: the tooltip shows the region's regret.
  const steer = 'steer:us-east->lon/api.example.net.';
  const smid = await page.evaluate((id) => {
    const p = window.__topomap.edgeMid(id), r = document.getElementById('map').getBoundingClientRect();
    return p && [p[0] + r.left, p[1] + r.top];
  }, steer);
  let steerTip = '';
  if (smid) {
    await page.mouse.move(smid[0], smid[1]);
    steerTip = await page.waitForFunction(() => {
      const t = document.getElementById('tooltip');
      return !t.hidden && t.textContent.includes('weight') && t.textContent;
    }, null, { timeout: 3000 }).then((h) => h.jsonValue())
      .catch(() => page.evaluate(() => document.getElementById('tooltip').textContent));
  }
  emit({ step: 'hover-steer', steer, drawn: !!smid, tooltip: steerTip });

  // Ask the Go test to take one tunnel down, then time how long until it is drawn red.
  const victim = 'tunnel:node:lon-1|node:nyc-1';
  const t0 = Date.now();
  const r = await fetch(controlURL + '/tunnel-down', { method: 'POST' });
  if (!r.ok) throw new Error('control: ' + r.status);
  await page.waitForFunction((id) => window.__topomap.status(id) === 'down', victim, { timeout: 5000, polling: 'raf' });
  let red = false;
  for (let i = 0; i < 60 && !red; i++) {
    const pt = await page.evaluate((id) => window.__topomap.edgeMid(id), victim);
    red = await redAt(page, [pt[0], pt[1]]);
    if (!red) await page.waitForTimeout(16);
  }
  const elapsed = Date.now() - t0;
  const reloaded = await page.evaluate(() => performance.getEntriesByType('navigation').length);
  await page.screenshot({ path: `${artifacts}/tunnel-down.png` });
  emit({ step: 'tunnel-down', edge: victim, red, ms: elapsed, navigations: reloaded });

  // Service view of the cluster that received the bookinfo flows.
  await page.click('#view-services');
  await page.selectOption('#cluster', 'destroyer');
  await page.waitForFunction(() => window.__topomap.flowsDrawn().length > 0, null, { timeout: 5000 });
  await page.waitForTimeout(100);
  const flows = await page.evaluate(() => window.__topomap.flowsDrawn());
  const boxes = await page.evaluate(() => [...window.__topomap.store.nodes.values()].filter((n) => n.kind === 'workload')
    .map((n) => ({ label: n.label, at: window.__topomap.nodeScreen(n.id) })));
  await page.screenshot({ path: `${artifacts}/services.png` });
  emit({ step: 'services', flows, boxes });

  // Search jumps to a node and opens its details.
  await page.click('#view-world');
  await page.fill('#search', 'par');
  await page.keyboard.press('Enter');
  const details = await page.waitForSelector('#details:not([hidden])', { timeout: 3000 }).then((el) => el.textContent()).catch(() => '');
  await page.screenshot({ path: `${artifacts}/search-details.png` });
  emit({ step: 'search', details });
  emit({ step: 'done', errors });
} finally {
  await close();
}
