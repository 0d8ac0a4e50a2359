// Service view: one cluster's workloads and the Hubble flow edges between them. Each
// namespace is a titled group laid out in layers (callers left of callees, longest path
// from the entry points) so request paths read left to right; the groups are packed in a
// grid shaped for the viewport. Edge labels carry request rate, error ratio and p99.
import { COLORS, STATUSES } from './style.js';

const BOX_W = 170, BOX_H = 34, COL_W = 290, ROW_H = 70;
// Namespace groups: inner padding, gap between groups, room for back-edge loops, and the
// title band (at least TITLE_MIN base units; the title fills TITLE_FILL of it, TITLE_PX
// screen pixels at the fitted zoom, at most TITLE_MAX_PX when zoomed in).
const PAD = 24, GAP = 50, LOOP_H = 50, TITLE_MIN = 26, TITLE_FILL = 0.7, TITLE_PX = 14, TITLE_MAX_PX = 16;
const sum = (a) => a.reduce((x, y) => x + y, 0);

export class ServiceView {
  constructor(store) {
    this.store = store;
    this.cluster = '';
    this.t = { k: 1, x: 40, y: 40 };
    this.builtFor = '';
    this.size = [0, 0];
  }

  resize(w, h) { this.size = [w, h]; }

  clusters() {
    const out = new Set();
    for (const n of this.store.nodes.values()) if (n.kind === 'workload' && n.cluster !== undefined) out.add(n.cluster || '');
    return [...out].sort();
  }

  layout() {
    const key = this.store.structure + '|' + this.cluster + '|' + this.size.join('x');
    if (this.builtFor === key) return;
    this.builtFor = key;
    const { nodes, edges } = this.store;
    const ws = [...nodes.values()].filter((n) => n.kind === 'workload' && (n.cluster || '') === this.cluster);
    const ids = new Set(ws.map((n) => n.id));
    this.flows = [...edges.values()].filter((e) => e.kind === 'flow' && ids.has(e.source) && ids.has(e.target));
    const byNs = new Map();
    for (const n of ws) {
      const ns = n.attrs?.namespace || '';
      if (!byNs.has(ns)) byNs.set(ns, []);
      byNs.get(ns).push(n);
    }
    // Each namespace is laid out on its own from its internal flows; flows between
    // namespaces are drawn between the members but do not shape the layers. The groups
    // go in the order of the calls between namespaces (callers first), then by name.
    const nsOf = (id) => nodes.get(id)?.attrs?.namespace || '';
    const across = this.flows.map((e) => ({ source: nsOf(e.source), target: nsOf(e.target) })).filter((e) => e.source !== e.target);
    const { layer } = longestPath([...byNs.keys()], across);
    const names = [...byNs.keys()].sort((a, b) => layer.get(a) - layer.get(b) || a.localeCompare(b));
    this.groups = names.map((ns) => ({ ns, ...this.layers(byNs.get(ns)) }));
    // The title band is sized so the fitted view draws titles about 14 px high: a few
    // rounds converge, since a taller band only lowers the fitted zoom a little.
    let band = TITLE_MIN;
    for (let i = 0; i < 4; i++) {
      const k = this.pack(band);
      if (band * TITLE_FILL * k >= TITLE_PX || k <= 0) break;
      band = TITLE_PX / TITLE_FILL / k;
    }
    this.band = band;
    this.fitted = false;
  }

  // layers places a namespace's workloads in columns by longest call path (callers left
  // of callees), each column ordered by the mean row of its callers to reduce crossings.
  // Positions are relative to the group's content origin.
  layers(ws) {
    const ids = new Set(ws.map((n) => n.id));
    const internal = this.flows.filter((e) => ids.has(e.source) && ids.has(e.target));
    const { layer, back } = longestPath(ws.map((n) => n.id), internal);
    const layers = [];
    for (const n of ws) (layers[layer.get(n.id) || 0] ||= []).push(n);
    // A layer taller than a square group's height wraps into several columns (say a
    // namespace of 60 services called only from another namespace's ingress: one layer).
    const maxRows = Math.max(8, Math.ceil(Math.sqrt((ws.length * COL_W) / ROW_H)));
    const rel = new Map(), cols = [];
    for (const col of layers) {
      if (!col) continue;
      const callerRow = (n) => {
        const rs = internal.filter((e) => e.target === n.id && rel.has(e.source)).map((e) => rel.get(e.source)[1]);
        return rs.length ? rs.reduce((a, b) => a + b, 0) / rs.length : 0;
      };
      col.sort((a, b) => callerRow(a) - callerRow(b) || a.label.localeCompare(b.label));
      const wrap = Math.ceil(col.length / maxRows), per = Math.ceil(col.length / wrap);
      for (let i = 0; i < col.length; i += per) {
        const part = col.slice(i, i + per);
        // Provisional rows (centred later) so the next layer can order by its callers.
        part.forEach((n, ri) => rel.set(n.id, [cols.length * COL_W, (ri - (part.length - 1) / 2) * ROW_H]));
        cols.push(part);
      }
    }
    const rows = Math.max(...cols.map((c) => c.length));
    cols.forEach((col, ci) => {
      const top = ((rows - col.length) * ROW_H) / 2;
      col.forEach((n, ri) => rel.set(n.id, [ci * COL_W, top + ri * ROW_H]));
    });
    // Room below the last row for the loops of edges against the layer order.
    const loops = back.size || internal.some((e) => e.source === e.target) ? LOOP_H : 0;
    return { rel, w: (cols.length - 1) * COL_W + BOX_W, h: (rows - 1) * ROW_H + BOX_H + loops };
  }

  // pack places the namespace groups in a grid (row by row, in name order; a column as
  // wide as its widest group, a row as tall as its tallest) with the column count that
  // gives the largest fitted zoom in the current viewport, and returns that zoom.
  pack(band) {
    const [vw, vh] = this.size[0] > 0 ? this.size : [1400, 720];
    const gs = this.groups;
    const dims = (c) => {
      const cw = new Array(c).fill(0), rh = new Array(Math.ceil(gs.length / c)).fill(0);
      gs.forEach((g, i) => {
        // Room for the title too, at its largest (the fitted size): 0.6 em a character.
        const title = titleText(g.ns, g.rel.size).length * 0.6 * TITLE_FILL * band;
        cw[i % c] = Math.max(cw[i % c], g.w + 2 * PAD, title + 2 * PAD);
        rh[Math.floor(i / c)] = Math.max(rh[Math.floor(i / c)], g.h + 2 * PAD + band);
      });
      return { cw, rh };
    };
    const zoom = ({ cw, rh }) => Math.min(1.6, (vw - 80) / (sum(cw) + GAP * (cw.length - 1)), (vh - 80) / (sum(rh) + GAP * (rh.length - 1)));
    let best = null;
    for (let c = 1; c <= gs.length; c++) {
      const d = dims(c);
      const k = zoom(d);
      if (!best || k > best.k + 1e-9) best = { c, k, ...d };
    }
    this.pos = new Map();
    this.groupOf = new Map();
    this.frames = [];
    if (!best) return 0;
    gs.forEach((g, i) => {
      const ci = i % best.c, ri = Math.floor(i / best.c);
      const x = sum(best.cw.slice(0, ci)) + GAP * ci, y = sum(best.rh.slice(0, ri)) + GAP * ri;
      // A frame as wide as its column (titles align) and as tall as its own content.
      const w = best.cw[ci], h = g.h + 2 * PAD + band;
      this.frames.push({ ns: g.ns, n: g.rel.size, r: [x, y, x + w, y + h] });
      // Centre the content in its cell's width so a narrow namespace is not pushed left.
      const ox = x + (w - g.w) / 2, oy = y + band + PAD;
      for (const [id, [rx, ry]] of g.rel) {
        this.pos.set(id, [ox + rx, oy + ry]);
        this.groupOf.set(id, i);
      }
    });
    return best.k;
  }

  fit() {
    const [w, h] = this.size;
    if (!this.pos.size) return;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const { r } of this.frames) { x0 = Math.min(x0, r[0]); y0 = Math.min(y0, r[1]); x1 = Math.max(x1, r[2]); y1 = Math.max(y1, r[3]); }
    const k = Math.min(1.6, (w - 80) / (x1 - x0 || 1), (h - 80) / (y1 - y0 || 1));
    // Centred across, from the top down: the room left over stays at the bottom, where
    // the legend is, so it hides no namespace title.
    this.t = { k, x: (w - (x1 - x0) * k) / 2 - x0 * k, y: 40 - y0 * k };
    this.fitted = true;
  }

  screen(p) { return [p[0] * this.t.k + this.t.x, p[1] * this.t.k + this.t.y]; }
  base(s) { return [(s[0] - this.t.x) / this.t.k, (s[1] - this.t.y) / this.t.k]; }

  // curve gives an edge's bezier from the right side of the source box to the left of
  // the target (or a loop back underneath for edges against the layer order).
  curve(e) {
    const a = this.pos.get(e.source), b = this.pos.get(e.target);
    if (!a || !b) return null;
    if (b[0] > a[0]) {
      const p0 = [a[0] + BOX_W, a[1] + BOX_H / 2], p3 = [b[0], b[1] + BOX_H / 2];
      const dx = (p3[0] - p0[0]) / 2;
      return [p0, [p0[0] + dx, p0[1]], [p3[0] - dx, p3[1]], p3];
    }
    if (this.groupOf.get(e.source) !== this.groupOf.get(e.target)) {
      // To a namespace to the left: out of the caller's right side, into the callee's left.
      const p0 = [a[0] + BOX_W, a[1] + BOX_H / 2], p3 = [b[0], b[1] + BOX_H / 2];
      const d = 120 + 0.25 * Math.abs(p0[0] - p3[0]);
      return [p0, [p0[0] + d, p0[1]], [p3[0] - d, p3[1]], p3];
    }
    const p0 = [a[0] + BOX_W / 2, a[1] + BOX_H], p3 = [b[0] + BOX_W / 2, b[1] + BOX_H];
    const drop = 60 + Math.abs(a[0] - b[0]) * 0.15;
    return [p0, [p0[0], p0[1] + drop], [p3[0], p3[1] + drop], p3];
  }

  draw(ctx, dpr, { selected, highlight }) {
    this.layout();
    if (!this.fitted) this.fit();
    const [w, h] = this.size;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#0d1117';
    ctx.fillRect(0, 0, w, h);
    ctx.font = '12px "Liberation Sans", Arial, sans-serif';
    ctx.textBaseline = 'middle';
    if (!this.pos.size) {
      ctx.fillStyle = '#8b949e';
      ctx.fillText(this.cluster === undefined ? 'No cluster selected' : 'No flows seen in cluster ' + (this.cluster || '(none)'), 20, 30);
      return 0;
    }
    const { k } = this.t;
    ctx.setTransform(dpr * k, 0, 0, dpr * k, dpr * this.t.x, dpr * this.t.y);
    ctx.lineWidth = 1 / k;
    for (const { r } of this.frames) {
      ctx.fillStyle = '#11161d';
      ctx.strokeStyle = '#30363d';
      ctx.beginPath();
      ctx.roundRect(r[0], r[1], r[2] - r[0], r[3] - r[1], 10);
      ctx.fill();
      ctx.stroke();
    }
    const byStatus = STATUSES.map((s) => [s, this.flows.filter((e) => this.store.edges.get(e.id)?.status === s)]);
    const labels = [];
    for (const [s, list] of byStatus) {
      for (const e0 of list) {
        const e = this.store.edges.get(e0.id);
        const c = this.curve(e);
        if (!c) continue;
        const rps = e.metrics?.requests_per_s || e.metrics?.flows_per_s || 0;
        ctx.strokeStyle = COLORS[s];
        ctx.lineWidth = 1.2 + Math.min(5, Math.log2(1 + rps));
        if (e.id === selected) ctx.lineWidth += 2;
        ctx.beginPath();
        ctx.moveTo(...c[0]);
        ctx.bezierCurveTo(...c[1], ...c[2], ...c[3]);
        ctx.stroke();
        // arrowhead
        const [p2, p3] = [c[2], c[3]];
        const dx = p3[0] - p2[0], dy = p3[1] - p2[1], len = Math.hypot(dx, dy) || 1;
        const ux = dx / len, uy = dy / len;
        ctx.fillStyle = COLORS[s];
        ctx.beginPath();
        ctx.moveTo(p3[0], p3[1]);
        ctx.lineTo(p3[0] - ux * 10 - uy * 5, p3[1] - uy * 10 + ux * 5);
        ctx.lineTo(p3[0] - ux * 10 + uy * 5, p3[1] - uy * 10 - ux * 5);
        ctx.fill();
        labels.push([e, c, s]);
      }
    }
    ctx.font = '12px "Liberation Sans", Arial, sans-serif';
    for (const [id, p] of this.pos) {
      const n = this.store.nodes.get(id);
      if (!n) continue;
      ctx.fillStyle = '#161b22';
      ctx.strokeStyle = COLORS[n.status];
      ctx.lineWidth = id === selected || id === highlight ? 3.5 : 2;
      ctx.beginPath();
      ctx.roundRect(p[0], p[1], BOX_W, BOX_H, 6);
      ctx.fill();
      ctx.stroke();
      ctx.fillStyle = COLORS[n.status];
      ctx.beginPath();
      ctx.arc(p[0] + 12, p[1] + BOX_H / 2, 4, 0, Math.PI * 2);
      ctx.fill();
      ctx.fillStyle = '#e6edf3';
      let label = n.attrs?.namespace ? n.label.slice(n.attrs.namespace.length + 1) : n.label;
      while (label.length > 3 && ctx.measureText(label).width > BOX_W - 30) label = label.slice(0, -2) + '…';
      ctx.fillText(label, p[0] + 22, p[1] + BOX_H / 2 - 5);
      ctx.fillStyle = '#8b949e';
      ctx.font = '10px "Liberation Sans", Arial, sans-serif';
      ctx.fillText(n.attrs?.namespace || '', p[0] + 22, p[1] + BOX_H / 2 + 8);
      ctx.font = '12px "Liberation Sans", Arial, sans-serif';
    }
    const titles = this.drawTitles(ctx);
    this.drawLabels(ctx, labels, titles);
    return this.flows.length;
  }

  // drawTitles writes each namespace's name and size in its group's title band, about
  // TITLE_PX high at the fitted zoom and never more than TITLE_MAX_PX, and returns the
  // titles' rectangles (base units) for the edge labels to keep clear of.
  drawTitles(ctx) {
    const { k } = this.t;
    const px = Math.min(TITLE_MAX_PX, this.band * TITLE_FILL * k), f = px / k;
    ctx.font = `bold ${f}px "Liberation Sans", Arial, sans-serif`;
    const out = [];
    for (const { ns, n, r } of this.frames) {
      const max = r[2] - r[0] - 2 * PAD;
      let text = titleText(ns, n);
      while (text.length > 3 && ctx.measureText(text).width > max) text = text.slice(0, -2) + '…';
      const cy = r[1] + PAD / 2 + this.band / 2;
      const tr = [r[0] + PAD, cy - 0.6 * f, r[0] + PAD + ctx.measureText(text).width, cy + 0.6 * f];
      // A plate under the title: flows crossing the group pass behind it.
      ctx.fillStyle = '#11161d';
      ctx.fillRect(tr[0] - 4 / k, tr[1], tr[2] - tr[0] + 8 / k, tr[3] - tr[1]);
      ctx.fillStyle = '#c9d1d9';
      ctx.fillText(text, tr[0], cy);
      out.push({ ns, r: tr });
    }
    return out;
  }

  // drawLabels puts each edge's label on or beside its curve at the first spot (middle
  // first) that covers neither a workload box nor another label. A label with no free
  // spot is left out: hovering its edge shows the same text. this.placed keeps the boxes
  // and labels drawn (the collision test reads them).
  drawLabels(ctx, labels, titles) {
    ctx.font = '11px "Liberation Sans", Arial, sans-serif';
    ctx.textAlign = 'center';
    const boxes = [...this.pos.values()].map(([x, y]) => [x, y, x + BOX_W, y + BOX_H]);
    const taken = [...boxes, ...titles.map((t) => t.r)];
    const free = (r) => !taken.some((t) => r[0] < t[2] && r[2] > t[0] && r[1] < t[3] && r[3] > t[1]);
    const placed = [];
    let hidden = 0;
    // Busy edges first: when space runs out, the quiet ones go to the tooltip.
    labels.sort((a, b) => (b[0].metrics?.requests_per_s || b[0].metrics?.flows_per_s || 0) - (a[0].metrics?.requests_per_s || a[0].metrics?.flows_per_s || 0));
    for (const [e, c, s] of labels) {
      const text = flowLabel(e);
      const tw = ctx.measureText(text).width + 8;
      let spot = null;
      for (const t of [0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8, 0.15, 0.85]) {
        const [mx, my] = bez(c, t);
        for (const dy of [0, -12, 12, -24, 24]) {
          const r = [mx - tw / 2, my + dy - 8, mx + tw / 2, my + dy + 8];
          if (free(r)) { spot = r; break; }
        }
        if (spot) break;
      }
      if (!spot) { hidden++; continue; }
      taken.push(spot);
      placed.push({ id: e.id, r: spot });
      ctx.fillStyle = '#0d1117d9';
      ctx.fillRect(spot[0], spot[1], spot[2] - spot[0], 16);
      ctx.fillStyle = s === 'ok' ? '#c9d1d9' : COLORS[s];
      ctx.fillText(text, (spot[0] + spot[2]) / 2, spot[1] + 8);
    }
    ctx.textAlign = 'left';
    this.placed = { boxes, labels: placed, hidden, titles, frames: this.frames };
  }

  // placedOnScreen is this.placed in screen pixels.
  placedOnScreen() {
    const sc = ([x0, y0, x1, y1]) => [...this.screen([x0, y0]), ...this.screen([x1, y1])];
    const p = this.placed || { boxes: [], labels: [], hidden: 0, titles: [], frames: [] };
    const named = (l) => ({ ...l, r: sc(l.r) });
    return { boxes: p.boxes.map(sc), labels: p.labels.map(named), hidden: p.hidden, titles: p.titles.map(named), frames: p.frames.map(({ ns, r }) => ({ ns, r: sc(r) })) };
  }

  pick(sx, sy) {
    this.layout();
    const [bx, by] = this.base([sx, sy]);
    for (const [id, p] of this.pos) {
      if (bx >= p[0] && bx <= p[0] + BOX_W && by >= p[1] && by <= p[1] + BOX_H) return { type: 'node', id };
    }
    let best = null, bestD = 8 / this.t.k;
    for (const e of this.flows || []) {
      const c = this.curve(e);
      if (!c) continue;
      for (let i = 0; i <= 20; i++) {
        const p = bez(c, i / 20);
        const d = Math.hypot(p[0] - bx, p[1] - by);
        if (d < bestD) { bestD = d; best = { type: 'edge', id: e.id }; }
      }
    }
    return best;
  }

  nodeScreen(id) {
    this.layout();
    const p = this.pos.get(id);
    return p ? this.screen([p[0] + BOX_W / 2, p[1] + BOX_H / 2]) : null;
  }

  edgeMid(id) {
    this.layout();
    const e = this.store.edges.get(id);
    const c = e && this.curve(e);
    return c ? this.screen(bez(c, 0.5)) : null;
  }

  center(id, w, h) {
    const p = this.pos?.get(id);
    if (!p) return;
    this.t.x = w / 2 - (p[0] + BOX_W / 2) * this.t.k;
    this.t.y = h / 2 - (p[1] + BOX_H / 2) * this.t.k;
  }
}

const titleText = (ns, n) => (ns || '(no namespace)') + ' · ' + n + (n === 1 ? ' workload' : ' workloads');

// longestPath layers a directed graph (edges {source, target} between ids): cycles are
// broken by a DFS from the least-called ids (back edges ignored), then each id's layer is
// its longest path from a root, so every other edge goes to a later layer.
function longestPath(ids, edges) {
  const out = new Map(ids.map((id) => [id, []]));
  const indeg = new Map(ids.map((id) => [id, 0]));
  for (const e of edges) {
    if (e.source === e.target) continue;
    out.get(e.source).push(e.target);
    indeg.set(e.target, indeg.get(e.target) + 1);
  }
  const state = new Map(), order = [], back = new Set();
  const dfs = (id) => {
    state.set(id, 1);
    for (const t of out.get(id)) {
      if (state.get(t) === 1) back.add(id + '>' + t);
      else if (!state.get(t)) dfs(t);
    }
    state.set(id, 2);
    order.push(id);
  };
  const roots = [...ids].sort((a, b) => indeg.get(a) - indeg.get(b) || a.localeCompare(b));
  for (const id of roots) if (!state.get(id)) dfs(id);
  const layer = new Map();
  for (const id of order.reverse()) {
    if (!layer.has(id)) layer.set(id, 0);
    for (const t of out.get(id)) {
      if (back.has(id + '>' + t)) continue;
      layer.set(t, Math.max(layer.get(t) || 0, layer.get(id) + 1));
    }
  }
  return { layer, back };
}

function bez(c, t) {
  const u = 1 - t;
  return [0, 1].map((i) => u * u * u * c[0][i] + 3 * u * u * t * c[1][i] + 3 * u * t * t * c[2][i] + t * t * t * c[3][i]);
}

export function flowLabel(e) {
  const m = e.metrics || {};
  const parts = [];
  if (m.requests_per_s) parts.push(fmtNum(m.requests_per_s) + ' rps');
  else parts.push(fmtNum(m.flows_per_s || 0) + ' flows/s');
  if (m.requests_per_s) parts.push((100 * (m.error_ratio || 0)).toFixed(1) + '% err');
  if (m.p99_ms) parts.push('p99 ' + fmtNum(m.p99_ms) + ' ms');
  if (m.drops_per_s) parts.push(fmtNum(m.drops_per_s) + ' drops/s');
  return parts.join(' · ');
}

export function fmtNum(v) {
  if (v >= 100) return Math.round(v).toString();
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}
