// Time travel in real Chromium, driven by topomap's Go test:
//   node timetravel.mjs <page url with token> <failure instant, unix ms> <edge id> <erring flow id> <artifacts dir>
// The page opens 20 s before a scripted failure, is scrubbed past it, played through it
// at 60x, and sent back to live. Prints one JSON object per step.
import { launch, emit, redAt, greenAt } from './browser.mjs';

const [pageURL, failArg, edge, flow, artifacts] = process.argv.slice(2);
const fail = +failArg;
const { context, close } = await launch();

// drawn waits until the page shows instant at (0: live) with edge in status, then checks
// the pixels at the edge's middle.
async function drawn(page, at, status, tolerance = 0) {
  await page.waitForFunction(([at, id, st, tol]) => {
    const shown = window.__topomap.store.at;
    return (at ? shown && Math.abs(shown - at) <= tol : !shown) && window.__topomap.status(id) === st;
  }, [at, edge, status, tolerance], { timeout: 15000 });
  const check = status === 'down' ? redAt : greenAt;
  for (let i = 0; i < 60; i++) {
    const pt = await page.evaluate((id) => window.__topomap.edgeMid(id), edge);
    if (pt && await check(page, pt)) return true;
    await page.waitForTimeout(16);
  }
  return false;
}

try {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const before = fail - 20000;
  await page.goto(pageURL + '&at=' + before);
  const green = await drawn(page, before, 'ok');
  const timeText = await page.textContent('#tb-time');
  await page.screenshot({ path: `${artifacts}/timebar-before.png` });
  emit({ step: 'before', at: before, green, timeText, url: page.url() });

  // Scrub: move the time bar's thumb to a minute after the failure.
  const after = fail + 60000;
  await page.evaluate((at) => {
    const r = document.getElementById('tb-range');
    r.value = String(at);
    r.dispatchEvent(new Event('input', { bubbles: true }));
  }, after);
  const red = await drawn(page, after, 'down', 1000); // the range input snaps to its 1 s steps
  await page.screenshot({ path: `${artifacts}/timebar-failed.png` });
  emit({ step: 'scrubbed', at: after, red });

  // The erring flow's details show the chain beneath it; its first cause opens the tunnel
  // on the world map.
  await page.click('#view-services');
  await page.selectOption('#cluster', 'destroyer');
  await page.evaluate((id) => window.__topomap.select('edge', id), flow);
  const chain = await page.waitForSelector('#details ol.causes', { timeout: 5000 }).then((el) => el.textContent()).catch(() => '');
  await page.screenshot({ path: `${artifacts}/cause-chain.png` });
  await page.click('#details ol.causes li');
  const opened = await page.evaluate(() => ({ selected: window.__topomap.ui.selected?.id, view: document.querySelector('#view-world').classList.contains('active') }));
  const effectOf = await page.textContent('#details-body');
  await page.screenshot({ path: `${artifacts}/cause-tunnel.png` });
  emit({ step: 'causes', chain, opened, effectOf });
  await page.click('#details-close');

  // Back before the failure, then play at 60x: the edge turns red as the clock passes it.
  await page.evaluate((at) => window.__topomap.goTo(at, 0), fail - 30000);
  await drawn(page, fail - 30000, 'ok');
  await page.selectOption('#tb-speed', '60');
  await page.click('#tb-play');
  const seen = await page.evaluate((id) => new Promise((resolve) => {
    const out = [];
    const t0 = performance.now();
    const poll = () => {
      const t = window.__topomap;
      const last = out[out.length - 1];
      const cur = { at: t.store.at, speed: t.store.speed, status: t.status(id) };
      if (!last || last.at !== cur.at || last.status !== cur.status) out.push(cur);
      if (cur.status === 'down' || performance.now() - t0 > 20000) resolve(out);
      else requestAnimationFrame(poll);
    };
    poll();
  }), edge);
  const redPlaying = await redAt(page, await page.evaluate((id) => window.__topomap.edgeMid(id), edge));
  await page.screenshot({ path: `${artifacts}/timebar-playback.png` });
  emit({ step: 'playback', seen, red: redPlaying });

  // One click back to live.
  await page.click('#tb-live');
  const liveGreen = await drawn(page, 0, 'ok');
  emit({ step: 'live', green: liveGreen, conn: await page.evaluate(() => window.__topomap.ui.conn), url: page.url() });
  emit({ step: 'done', errors });
} finally {
  await close();
}
