// Meridian live map: wires the store, the websocket and the two canvas views to the page.
import { Store, Connection } from './store.js';
import { WorldView, popWeights } from './world.js';
import { ServiceView, flowLabel, fmtNum } from './services.js';
import { COLORS } from './style.js';

const $ = (id) => document.getElementById(id);
const canvas = $('map');
const ctx = canvas.getContext('2d');
const store = new Store();
const world = new WorldView(store);
const services = new ServiceView(store);
const ui = { view: world, selected: null, highlight: null, dirty: true, frames: 0, lastDraw: 0, drawn: 0, conn: 'connecting', firstRender: 0 };

// --- token and connection -------------------------------------------------------------
const params = new URLSearchParams(location.search);
if (params.get('token')) {
  sessionStorage.setItem('meridian.topomap.token', params.get('token'));
  params.delete('token');
  history.replaceState(null, '', location.pathname + (params.toString() ? '?' + params : '') + location.hash);
}
const token = sessionStorage.getItem('meridian.topomap.token') || '';
const conn = new Connection(store, { token, onState: setConn });
for (const k of ['layers', 'sites', 'clusters']) if (params.get(k)) conn.filter[k] = params.get(k).split(',');
// ?at=<unix ms or ISO time> opens the map at a past instant.
const parseAt = (v) => (/^\d+$/.test(v) ? +v : Date.parse(v));
if (params.get('at') && parseAt(params.get('at')) > 0) conn.travel = { at: parseAt(params.get('at')), speed: 0 };

function setConn(state, reason) {
  ui.conn = state;
  const el = $('conn');
  el.className = 'conn ' + state;
  const text = { connecting: 'connecting…', live: 'live', past: 'history', reconnecting: 'reconnecting…', unauthorized: 'unauthorized: add ?token=', error: 'error' }[state] || state;
  $('conn-text').textContent = text + (reason ? ' (' + reason + ')' : '');
  el.title = state === 'live' ? 'seq ' + store.seq : 'websocket ' + state;
}

store.onChange(() => {
  ui.dirty = true;
  showTime();
  if (!ui.fitted && store.nodes.size) { ui.fitted = true; world.fit(); }
  refreshClusters();
  if (ui.selected) showDetails(ui.selected);
});

// --- canvas sizing and the render loop --------------------------------------------------
function resize() {
  const dpr = window.devicePixelRatio || 1;
  const r = canvas.getBoundingClientRect();
  canvas.width = Math.round(r.width * dpr);
  canvas.height = Math.round(r.height * dpr);
  world.resize(r.width, r.height);
  services.resize(r.width, r.height);
  ui.dirty = true;
}
window.addEventListener('resize', resize);

function frame(ts) {
  if (!ui.dirty && ui.view.pending?.()) ui.dirty = true;
  if (ui.dirty) {
    ui.dirty = false;
    const t0 = performance.now();
    ui.drawn = ui.view.draw(ctx, window.devicePixelRatio || 1, { selected: ui.selected?.id, highlight: ui.highlight });
    drawCauses();
    ui.lastDraw = performance.now() - t0;
    ui.frames++;
    if (!ui.firstRender && store.nodes.size) ui.firstRender = performance.now();
    $('stats').textContent = `${store.nodes.size} nodes · ${store.edges.size} edges · seq ${store.seq} · ${ui.lastDraw.toFixed(1)} ms/frame`;
  }
  requestAnimationFrame(frame);
}

// drawCauses rings the selected element's causes in the picture, numbered as in the
// details panel (the ones the current view draws).
function drawCauses() {
  const el = ui.selected && (store.nodes.get(ui.selected.id) || store.edges.get(ui.selected.id));
  if (!el?.causes) return;
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  el.causes.forEach((c, i) => {
    const p = store.edges.has(c.id) ? ui.view.edgeMid(c.id) : ui.view.nodeScreen(c.id);
    if (!p) return;
    ctx.strokeStyle = '#58a6ff';
    ctx.lineWidth = 2;
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    ctx.arc(p[0], p[1], 12, 0, Math.PI * 2);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = '#58a6ff';
    ctx.font = 'bold 11px "Liberation Sans", Arial, sans-serif';
    ctx.fillText(String(i + 1), p[0] + 12, p[1] - 10);
  });
}

const WORLD_KINDS = new Set(['region', 'site', 'node', 'osd', 'pop', 'tunnel', 'probe', 'steer', 'storage']);

// causesHTML is the chain beneath a degraded or down element: each probable cause with
// the record that shows it and since when, worst and oldest first.
function causesHTML(el) {
  if (!el.causes?.length) return SEV[el.status] >= 2 ? '<h3>Probable causes</h3><p class="nocause">nothing beneath it is degraded or down</p>' : '';
  const since = (c) => (c.since ? ' · since ' + new Date(c.since).toISOString().slice(11, 19) + ' UTC' : '');
  return '<h3>Probable causes</h3><ol class="causes">' + el.causes.map((c) => {
    const el2 = store.nodes.get(c.id) || store.edges.get(c.id);
    const name = el2 ? (store.edges.has(c.id) ? describeEdge(el2) : el2.label) : c.id;
    return `<li data-cause="${esc(c.id)}" data-kind="${esc(c.kind)}">${badge(c.status)} <b>${esc(name)}</b><br><span class="evidence">${esc(c.evidence)}${esc(since(c))}</span></li>`;
  }).join('') + '</ol>';
}

// --- pan, zoom, hover, select --------------------------------------------------------------
let drag = null;
canvas.addEventListener('mousedown', (ev) => { drag = { x: ev.clientX, y: ev.clientY, moved: false }; canvas.classList.add('dragging'); });
window.addEventListener('mouseup', (ev) => {
  canvas.classList.remove('dragging');
  if (drag && !drag.moved && ev.target === canvas) select(pickAt(ev));
  drag = null;
});
canvas.addEventListener('mousemove', (ev) => {
  if (drag) {
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
    ui.view.t.x += dx; ui.view.t.y += dy;
    ui.view.interacted?.();
    drag.x = ev.clientX; drag.y = ev.clientY;
    ui.dirty = true;
    $('tooltip').hidden = true;
    return;
  }
  hover(ev);
});
canvas.addEventListener('mouseleave', () => { $('tooltip').hidden = true; });
canvas.addEventListener('wheel', (ev) => {
  ev.preventDefault();
  const r = canvas.getBoundingClientRect();
  zoomAt(ev.clientX - r.left, ev.clientY - r.top, Math.exp(-ev.deltaY * 0.0015));
}, { passive: false });

function zoomAt(sx, sy, f) {
  const t = ui.view.t;
  const k = Math.min(400, Math.max(0.3, t.k * f));
  t.x = sx - (sx - t.x) * (k / t.k);
  t.y = sy - (sy - t.y) * (k / t.k);
  t.k = k;
  ui.view.interacted?.();
  ui.dirty = true;
}

function pickAt(ev) {
  const r = canvas.getBoundingClientRect();
  return ui.view.pick(ev.clientX - r.left, ev.clientY - r.top);
}

function hover(ev) {
  const hit = pickAt(ev);
  const tip = $('tooltip');
  if (!hit) { tip.hidden = true; return; }
  if (hit.type === 'agg') tip.innerHTML = aggHTML(hit.agg);
  else {
    const el = hit.type === 'node' ? store.nodes.get(hit.id) : store.edges.get(hit.id);
    if (!el) { tip.hidden = true; return; }
    tip.innerHTML = tooltipHTML(hit.type, el);
  }
  const r = canvas.getBoundingClientRect();
  tip.style.left = Math.min(ev.clientX - r.left + 14, r.width - 300) + 'px';
  tip.style.top = (ev.clientY - r.top + 14) + 'px';
  tip.hidden = false;
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const badge = (s) => `<span class="badge st-${esc(s)}">${esc(s)}</span>`;

function bps(v) {
  if (v == null) return '–';
  const bits = v * 8;
  if (bits >= 1e9) return (bits / 1e9).toFixed(2) + ' Gbit/s';
  if (bits >= 1e6) return (bits / 1e6).toFixed(2) + ' Mbit/s';
  if (bits >= 1e3) return (bits / 1e3).toFixed(1) + ' kbit/s';
  return bits.toFixed(0) + ' bit/s';
}

function tooltipHTML(type, el) {
  const m = el.metrics || {};
  const lines = [`<b>${esc(type === 'node' ? el.label : describeEdge(el))}</b> ${badge(el.status)}`];
  if (type === 'edge' && el.kind === 'tunnel') {
    lines.push(`RTT ${m.rtt_ms != null ? fmtNum(m.rtt_ms) + ' ms' : '–'} · ↓ ${bps(m.rx_bytes_per_s)} · ↑ ${bps(m.tx_bytes_per_s)}`);
    if (m.last_handshake_unix) lines.push(`handshake ${Math.max(0, Math.round(Date.now() / 1000 - m.last_handshake_unix))} s ago`);
  } else if (type === 'edge' && el.kind === 'flow') lines.push(esc(flowLabel(el)));
  else if (type === 'edge' && el.kind === 'probe') lines.push(`${esc(el.attrs?.method || '')} RTT ${fmtNum(m.rtt_ms || 0)} ms${el.attrs?.error ? ' · ' + esc(el.attrs.error) : ''}`);
  else if (type === 'edge' && el.kind === 'steer') {
    lines.push(`weight ${m.weight} (was ${m.old_weight}) · ${esc(el.attrs?.cause || '')}`);
    // What steering costs the region: RTT to the POPs it is answered with minus the best allowed.
    if (m.regret_ms != null) lines.push(`regret ${fmtNum(m.regret_ms)} ms`);
  }
  else if (type === 'node' && el.kind === 'pop') {
    const w = popWeights(el, world.steerWeights());
    if (w) lines.push('steering weight ' + w);
    if (m.utilisation != null) {
      const cap = [m.capacity_session_rate ? fmtNum(m.capacity_session_rate) + ' sessions/s' : '', m.capacity_bandwidth ? bps(m.capacity_bandwidth) : ''].filter(Boolean).join(', ');
      lines.push(`load ${Math.round(m.utilisation * 100)}% of ${cap || 'unknown capacity'} · ${fmtNum(m.session_rate || 0)} sessions/s · ↑ ${bps(m.bytes_out_per_s || 0)}`);
    }
    if (el.attrs?.vrrp) lines.push(`VIP ${esc(el.attrs.vip_holder || 'no holder')} · ${esc(el.attrs.vrrp)}`);
  } else if (type === 'node' && el.kind === 'osd') lines.push(`commit ${m.commit_latency_ms} ms · apply ${m.apply_latency_ms} ms`);
  for (const a of el.alerts || []) lines.push(`<span class="alert">⚠ ${esc(a)}</span>`);
  return lines.join('<br>');
}

// aggHTML describes the tunnels between two sites drawn as one arc at low zoom.
function aggHTML(a) {
  const c = a.counts, total = c.ok + c.degraded + c.down + c.unknown;
  return `<b>${total} tunnels ${esc(a.sites[0])} ↔ ${esc(a.sites[1])}</b> ${badge(a.e.status)}<br>` +
    ['ok', 'degraded', 'down', 'unknown'].filter((s) => c[s]).map((s) => `${c[s]} ${s}`).join(' · ') + '<br>zoom in for each tunnel';
}

function describeEdge(e) {
  const a = store.nodes.get(e.source)?.label || e.source, b = store.nodes.get(e.target)?.label || e.target;
  return `${e.kind}: ${a} ${e.kind === 'tunnel' ? '↔' : '→'} ${b}`;
}

function select(hit) {
  ui.selected = hit;
  ui.dirty = true;
  if (!hit) { $('details').hidden = true; return; }
  showDetails(hit);
}

function showDetails(hit) {
  if (hit.type === 'agg') {
    const [sa, sb] = hit.agg.sites;
    const links = [...store.edges.values()].filter((e) => e.kind === 'tunnel' && ((store.nodes.get(e.source)?.site === sa && store.nodes.get(e.target)?.site === sb) || (store.nodes.get(e.source)?.site === sb && store.nodes.get(e.target)?.site === sa)));
    links.sort((a, b) => SEV[b.status] - SEV[a.status]);
    $('details-body').innerHTML = aggHTML(hit.agg) + `<h3>Tunnels</h3><ul>${links.slice(0, 100).map((e) => `<li data-edge="${esc(e.id)}">${badge(e.status)} ${esc(describeEdge(e))}</li>`).join('')}</ul>`;
    $('details').hidden = false;
    for (const li of $('details-body').querySelectorAll('li[data-edge]')) li.onclick = () => select({ type: 'edge', id: li.dataset.edge });
    return;
  }
  const el = hit.type === 'node' ? store.nodes.get(hit.id) : store.edges.get(hit.id);
  if (!el) { $('details-body').innerHTML = `<h2>${esc(hit.id)}</h2><p>removed</p>`; return; }
  const rows = (obj, fmt = (v) => v) => Object.entries(obj || {}).filter(([, v]) => v !== '' && v != null)
    .map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(fmt(v, k))}</td></tr>`).join('');
  const fmtMetric = (v, k) => k.endsWith('_unix') ? new Date(v * 1000).toISOString() : (typeof v === 'number' ? +v.toFixed(3) : v);
  let html = `<h2>${esc(hit.type === 'node' ? el.label : describeEdge(el))}</h2>${badge(el.status)} <span>${esc(el.kind)}</span>`;
  if (el.alerts) html += `<h3>Firing alerts</h3><ul>${el.alerts.map((a) => `<li class="alert">⚠ ${esc(a)}</li>`).join('')}</ul>`;
  html += causesHTML(el);
  const effects = [...store.nodes.values(), ...store.edges.values()].filter((x) => x.causes?.some((c) => c.id === el.id)).slice(0, 20);
  if (effects.length) html += `<h3>Probable cause of</h3><ul>${effects.map((x) => `<li data-cause="${esc(x.id)}" data-kind="${esc(x.kind)}">${badge(x.status)} ${esc(store.edges.has(x.id) ? describeEdge(x) : x.label)}</li>`).join('')}</ul>`;
  html += `<h3>Metrics</h3><table>${rows(el.metrics, fmtMetric) || '<tr><td>none</td></tr>'}</table>`;
  const info = { id: el.id, site: el.site, cluster: el.cluster, parent: el.parent, ...(el.attrs || {}) };
  if (el.updated) info.updated = new Date(el.updated).toISOString();
  html += `<h3>Attributes</h3><table>${rows(info)}</table>`;
  if (hit.type === 'node') {
    const links = [...store.edges.values()].filter((e) => e.source === el.id || e.target === el.id).slice(0, 50);
    if (links.length) html += `<h3>Links</h3><ul>${links.map((e) => `<li data-edge="${esc(e.id)}">${badge(e.status)} ${esc(describeEdge(e))}</li>`).join('')}</ul>`;
  }
  $('details-body').innerHTML = html;
  $('details').hidden = false;
  for (const li of $('details-body').querySelectorAll('li[data-edge]')) li.onclick = () => select({ type: 'edge', id: li.dataset.edge });
  // A cause may be drawn in the other view (a flow's tunnel is on the world map).
  for (const li of $('details-body').querySelectorAll('li[data-cause]')) {
    li.onclick = () => {
      setView(WORLD_KINDS.has(li.dataset.kind) ? 'world' : 'services');
      select({ type: store.edges.has(li.dataset.cause) ? 'edge' : 'node', id: li.dataset.cause });
    };
  }
}
$('details-close').onclick = () => select(null);

// --- views -------------------------------------------------------------------------------
function setView(name) {
  ui.view = name === 'services' ? services : world;
  $('view-world').classList.toggle('active', name !== 'services');
  $('view-services').classList.toggle('active', name === 'services');
  $('cluster').hidden = name !== 'services';
  ui.dirty = true;
}
$('view-world').onclick = () => setView('world');
$('view-services').onclick = () => setView('services');
$('cluster').onchange = (ev) => { services.cluster = ev.target.value; ui.dirty = true; };

let clusterList = '';
function refreshClusters() {
  const cs = services.clusters();
  if (cs.join('\n') === clusterList) return;
  clusterList = cs.join('\n');
  const sel = $('cluster');
  sel.innerHTML = cs.map((c) => `<option value="${esc(c)}">${esc(c || '(unmapped)')}</option>`).join('');
  if (!cs.includes(services.cluster)) services.cluster = cs[0] ?? '';
  sel.value = services.cluster;
}

const SEV = { unknown: 0, ok: 1, degraded: 2, down: 3 };
const KIND_RANK = { site: 0, pop: 1, region: 2, cluster: 3, node: 4, workload: 5, osd: 6 };

// --- search ------------------------------------------------------------------------------
let results = [];
$('search').addEventListener('input', () => {
  const q = $('search').value.trim().toLowerCase();
  const list = $('results');
  if (!q) { list.hidden = true; return; }
  // Exact and prefix matches first, then the big things (sites, POPs) before the small.
  const rank = (n) => (n.label.toLowerCase() === q ? 0 : n.label.toLowerCase().startsWith(q) ? 1 : 2) * 10 + (KIND_RANK[n.kind] ?? 9);
  results = [];
  for (const n of store.nodes.values()) {
    if (n.label.toLowerCase().includes(q) || n.id.toLowerCase().includes(q)) results.push(n);
  }
  results = results.sort((a, b) => rank(a) - rank(b) || a.label.localeCompare(b.label)).slice(0, 20);
  list.innerHTML = results.map((n, i) => `<li data-i="${i}">${badge(n.status)}<span class="kind">${esc(n.kind)}</span>${esc(n.label)}</li>`).join('') || '<li>no match</li>';
  list.hidden = false;
  for (const li of list.querySelectorAll('li[data-i]')) li.onclick = () => focusNode(results[+li.dataset.i]);
});
$('search').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && results.length) focusNode(results[0]);
  if (ev.key === 'Escape') $('results').hidden = true;
});

function focusNode(n) {
  $('results').hidden = true;
  if (n.kind === 'workload') {
    setView('services');
    services.cluster = n.cluster || '';
    $('cluster').value = services.cluster;
  } else setView('world');
  const r = canvas.getBoundingClientRect();
  ui.view.center(n.id, r.width, r.height);
  ui.highlight = n.id;
  select({ type: 'node', id: n.id });
}

// --- time bar: scrub the history, play it, back to live ---------------------------------
const tb = { range: $('tb-range'), oldest: 0, scrubbing: 0 };
async function loadRange() {
  try {
    const r = await fetch(new URL('api/history', location.href), { headers: token ? { Authorization: 'Bearer ' + token } : {} });
    const h = r.ok ? await r.json() : { available: false, reason: await r.text() };
    if (!h.available) {
      tb.range.disabled = $('tb-play').disabled = true;
      tb.range.title = $('tb-play').title = 'no history: ' + h.reason;
      return;
    }
    tb.oldest = h.oldest;
    tb.range.min = String(h.oldest);
  } catch { /* the range stays as it was */ }
  showTime();
}
function showTime() {
  const now = Date.now();
  tb.range.max = String(now);
  if (!tb.scrubbing) tb.range.value = String(store.at || now);
  const el = $('tb-time');
  el.textContent = store.at ? new Date(store.at).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC') + (store.speed ? ` ▶ ${store.speed}×` : '') : 'live';
  el.classList.toggle('past', !!store.at);
  $('tb-live').classList.toggle('active', !store.at);
  $('tb-play').textContent = store.at && store.speed ? '❚❚' : '▶';
  const u = new URL(location.href);
  if (store.at) u.searchParams.set('at', String(store.at)); else u.searchParams.delete('at');
  if (u.href !== location.href) history.replaceState(null, '', u);
}
// Scrubbing asks for the instant under the thumb; the server coalesces fast moves.
tb.range.addEventListener('input', () => {
  clearTimeout(tb.scrubbing);
  tb.scrubbing = setTimeout(() => { tb.scrubbing = 0; }, 400);
  const at = +tb.range.value;
  if (at >= Date.now() - 2000) conn.goLive(); else conn.goTo(at, 0);
});
$('tb-live').onclick = () => conn.goLive();
$('tb-play').onclick = () => {
  const speed = +$('tb-speed').value;
  if (store.at && store.speed) conn.goTo(store.at, 0); // pause
  else conn.goTo(store.at || Date.now() - 15 * 60 * 1000, speed); // from the live map: the last 15 minutes
};
$('tb-speed').onchange = () => { if (store.at && store.speed) conn.goTo(store.at, +$('tb-speed').value); };
setInterval(showTime, 1000);

// --- legend ------------------------------------------------------------------------------
$('legend').innerHTML = [
  ...Object.keys(COLORS).map((s) => `<div class="row"><span class="sw st-${s}"></span>${s}</div>`),
  '<div class="row"><svg viewBox="0 0 14 14"><circle cx="7" cy="7" r="5" fill="#8b949e"/></svg>site</div>',
  '<div class="row"><svg viewBox="0 0 14 14"><path d="M7 1L13 7L7 13L1 7Z" fill="#8b949e"/></svg>POP (steering weight)</div>',
  '<div class="row"><svg viewBox="0 0 14 14"><rect x="2" y="2" width="10" height="10" fill="#8b949e"/></svg>client region</div>',
  '<div class="row"><svg viewBox="0 0 14 14"><path d="M1 11Q7 1 13 11" stroke="#8b949e" fill="none" stroke-width="2"/></svg>WireGuard tunnel</div>',
  '<div class="row"><svg viewBox="0 0 14 14"><path d="M1 7H13" stroke="#8b949e" stroke-dasharray="2 2" stroke-width="1.5"/></svg>probe RTT</div>',
  '<div class="row"><svg viewBox="0 0 14 14"><path d="M1 10Q6 3 11 7" stroke="#8b949e" fill="none" stroke-width="3"/><path d="M13 8L9 5L9 10Z" fill="#8b949e"/></svg>steering</div>',
  `<div class="row"><svg viewBox="0 0 14 14"><circle cx="7" cy="7" r="5" fill="none" stroke="${COLORS.down}" stroke-width="2"/></svg>firing alert</div>`,
].join('');

// --- test and benchmark hooks (read-only views of the page's state) ----------------------
window.__topomap = {
  store, ui,
  status: (id) => (store.nodes.get(id) || store.edges.get(id))?.status,
  edgeMid: (id) => ui.view.edgeMid(id),
  nodeScreen: (id) => ui.view.nodeScreen(id),
  setView,
  goTo: (at, speed) => conn.goTo(at, speed),
  select: (type, id) => select({ type, id }),
  labelBoxes: () => services.placedOnScreen(),
  goLive: () => conn.goLive(),
  setCluster: (c) => { services.cluster = c; $('cluster').value = c; ui.dirty = true; },
  flowsDrawn: () => (ui.view === services ? services.flows.map((e) => [store.nodes.get(e.source)?.label, store.nodes.get(e.target)?.label, flowLabel(e)]) : []),
  // panZoom renders `frames` frames, each after a pan and a zoom step, and reports the
  // achieved frame rate (every frame is a full redraw).
  panZoom: (frames) => new Promise((resolve) => {
    const r = canvas.getBoundingClientRect();
    let i = 0, t0 = 0;
    const step = (ts) => {
      if (i === 0) t0 = ts;
      if (i === frames) { resolve({ fps: (frames - 1) / ((ts - t0) / 1000), lastDraw: ui.lastDraw, drawn: ui.drawn, fullRenderMs: ui.view.layerCost }); return; }
      ui.view.t.x += Math.sin(i / 7) * 6;
      zoomAt(r.width / 2, r.height / 2, i % 40 < 20 ? 1.03 : 1 / 1.03);
      i++;
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }),
};

resize();
refreshClusters();
setView(params.get('view') === 'services' ? 'services' : 'world');
requestAnimationFrame(frame);
conn.connect();
loadRange();
