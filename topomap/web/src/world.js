// World view: Natural Earth countries (world-atlas TopoJSON, projected with d3-geo),
// sites and POPs at their coordinates, tunnels as arcs, probes as thin lines, client
// region -> POP steering arrows. Drawn on one canvas; geometry is projected once per
// resize or structural change, and each frame only applies the pan/zoom transform.
import { geoNaturalEarth1, geoPath, geoGraticule10 } from 'd3-geo';
import { feature, mesh } from 'topojson-client';
import countries110m from 'world-atlas/countries-110m.json';
import { COLORS } from './style.js';

const land = feature(countries110m, countries110m.objects.countries);
const borders = mesh(countries110m, countries110m.objects.countries, (a, b) => a !== b);

// Where elements without coordinates go: an "unplaced" corner in the South Pacific.
const UNPLACED = [-48, -150];

// Graphs with more elements than this render through a cached layer (see draw).
const LAYER_ABOVE = 6000;
const SETTLE_MS = 180;
// Graphs with more edges than this draw tunnels one arc per site pair until zoomed in.
const AGGREGATE_ABOVE = 4000;
const AGGREGATE_BELOW_ZOOM = 8;
const THIN_ABOVE = 1500;
// Strokes are flushed every CHUNK segments: one huge path is far slower to rasterise.
const CHUNK = 400;
const SEVERITY = { unknown: 0, ok: 1, degraded: 2, down: 3 };

function bend([ax, ay], [bx, by], f) {
  return [(ax + bx) / 2 - (by - ay) * f, (ay + by) / 2 + (bx - ax) * f];
}

// batcher collects path segments per status (and width) and strokes or fills them in
// chunks, worst status last.
function batcher(ctx, op) {
  const groups = new Map();
  return {
    add(status, build) {
      let g = groups.get(status);
      if (!g) { g = { status, paths: [new Path2D()], n: 0 }; groups.set(status, g); }
      if (g.n === CHUNK) { g.paths.push(new Path2D()); g.n = 0; }
      build(g.paths[g.paths.length - 1]);
      g.n++;
    },
    flush(style) {
      const list = [...groups.values()].sort((a, b) => SEVERITY[a.status] - SEVERITY[b.status]);
      for (const g of list) {
        style(g.status);
        if (op === 'fill') ctx.fillStyle = COLORS[g.status]; else ctx.strokeStyle = COLORS[g.status];
        for (const p of g.paths) if (op === 'fill') ctx.fill(p); else ctx.stroke(p);
      }
    },
  };
}

export class WorldView {
  constructor(store) {
    this.store = store;
    this.t = { k: 1, x: 0, y: 0 };
    this.pos = new Map();      // node id -> [x, y] in base (unzoomed) pixels
    this.builtFor = -1;
    this.size = [0, 0];
    this.interactedAt = -1e9;
    this.layerCost = 0;
    this.drawn = 0;
  }

  resize(w, h) {
    this.size = [w, h];
    this.projection = geoNaturalEarth1().fitExtent([[10, 10], [w - 10, h - 10]], { type: 'Sphere' });
    const path = geoPath(this.projection);
    this.sphere = new Path2D(path({ type: 'Sphere' }));
    this.graticule = new Path2D(path(geoGraticule10()));
    this.land = new Path2D(path(land));
    this.borders = new Path2D(path(borders));
    this.builtFor = -1;
    this.layer = null;
  }

  // layout projects every node once per structural change. Machines, OSDs and unknown
  // peers cluster around their site on a sunflower spiral so a zoom spreads them out.
  layout() {
    if (this.builtFor === this.store.structure) return;
    this.builtFor = this.store.structure;
    const { nodes, edges } = this.store;
    this.pos.clear();
    const around = new Map(); // anchor id -> count placed around it
    const place = (n, depth = 0) => {
      if (this.pos.has(n.id)) return this.pos.get(n.id);
      let p;
      const isPoint = n.kind === 'site' || n.kind === 'region';
      if (n.geo && isPoint) p = this.projection([n.geo[1], n.geo[0]]);
      else {
        let anchor = null;
        if (n.site && nodes.has('site:' + n.site)) anchor = 'site:' + n.site;
        else if (n.parent && nodes.has(n.parent) && depth < 4) anchor = n.parent;
        let a;
        if (anchor) a = place(nodes.get(anchor), depth + 1);
        else if (n.geo) a = this.projection([n.geo[1], n.geo[0]]);
        else a = this.projection([UNPLACED[1], UNPLACED[0]]);
        const i = around.get(anchor || 'unplaced') || 0;
        around.set(anchor || 'unplaced', i + 1);
        const r = n.kind === 'pop' ? 7 + 2.2 * Math.sqrt(i) : 1.6 * Math.sqrt(i + 4);
        const ang = i * 2.399963 + (n.kind === 'pop' ? 0.8 : 0);
        p = [a[0] + r * Math.cos(ang), a[1] + r * Math.sin(ang)];
      }
      this.pos.set(n.id, p);
      return p;
    };
    for (const n of nodes.values()) if (n.kind === 'site' || n.kind === 'region') place(n);
    for (const n of nodes.values()) place(n);
    // Arc control points, one per edge, bent to one side so A->B and B->A do not overlap;
    // tunnels also get their site pair's arc, drawn instead of them when zoomed out.
    this.geom = [];
    this.pairs = new Map();
    for (const e of edges.values()) {
      const a = this.pos.get(e.source), b = this.pos.get(e.target);
      if (!a || !b) continue;
      // Clients matching no region (steering's "default") have no place on the map: their
      // arrows would all start from the unplaced corner. They stay in search and details.
      if (e.kind === 'steer' && !nodes.get(e.source)?.geo) continue;
      const g = { id: e.id, a, b, c: bend(a, b, e.kind === 'tunnel' ? 0.18 : e.kind === 'steer' ? 0.12 : 0) };
      g.minx = Math.min(a[0], b[0], g.c[0]); g.maxx = Math.max(a[0], b[0], g.c[0]);
      g.miny = Math.min(a[1], b[1], g.c[1]); g.maxy = Math.max(a[1], b[1], g.c[1]);
      const sa = nodes.get(e.source)?.site, sb = nodes.get(e.target)?.site;
      const pa = this.pos.get('site:' + sa), pb = this.pos.get('site:' + sb);
      if (e.kind === 'tunnel' && pa && pb && sa !== sb) {
        g.pair = sa < sb ? sa + '|' + sb : sb + '|' + sa;
        if (!this.pairs.has(g.pair)) {
          const c = bend(pa, pb, 0.18);
          this.pairs.set(g.pair, { a: pa, b: pb, c, sites: sa < sb ? [sa, sb] : [sb, sa],
            minx: Math.min(pa[0], pb[0], c[0]), maxx: Math.max(pa[0], pb[0], c[0]), miny: Math.min(pa[1], pb[1], c[1]), maxy: Math.max(pa[1], pb[1], c[1]) });
        }
      }
      this.geom.push(g);
    }
  }

  // fit frames the sites, POPs and client regions (the whole world when there are none).
  fit() {
    this.layout();
    const [w, h] = this.size;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of this.store.nodes.values()) {
      if (n.kind !== 'site' && n.kind !== 'pop' && n.kind !== 'region') continue;
      const p = this.pos.get(n.id);
      if (!p) continue;
      x0 = Math.min(x0, p[0]); y0 = Math.min(y0, p[1]); x1 = Math.max(x1, p[0]); y1 = Math.max(y1, p[1]);
    }
    if (x0 === Infinity) { this.t = { k: 1, x: 0, y: 0 }; return; }
    const k = Math.max(1, Math.min(8, (w - 240) / (x1 - x0 || 1), (h - 200) / (y1 - y0 || 1)));
    this.t = { k, x: w / 2 - ((x0 + x1) / 2) * k, y: h / 2 - ((y0 + y1) / 2) * k };
  }

  screen(p) { return [p[0] * this.t.k + this.t.x, p[1] * this.t.k + this.t.y]; }
  base(s) { return [(s[0] - this.t.x) / this.t.k, (s[1] - this.t.y) / this.t.k]; }

  // draw renders a frame. Small graphs are drawn directly every frame. Large ones keep
  // the expensive part (land, edges, machines) in an offscreen layer: while the user pans
  // or zooms, the layer is transformed instead of redrawn, and it is redrawn once the
  // view settles or the data changed (at most every max(250 ms, 2x its cost)).
  draw(ctx, dpr, { selected, highlight }) {
    this.layout();
    const [w, h] = this.size;
    const now = performance.now();
    if (this.geom.length + this.store.nodes.size < LAYER_ABOVE) {
      this.drawScene(ctx, dpr, this.t);
    } else {
      const interacting = now - this.interactedAt < SETTLE_MS;
      const stale = this.layerVersion !== this.store.version && now - this.layerAt > Math.max(250, 2 * this.layerCost);
      const moved = !this.layerT || this.layerT.k !== this.t.k || this.layerT.x !== this.t.x || this.layerT.y !== this.t.y;
      if (!this.layer || (!interacting && (stale || moved))) this.renderLayer(dpr, now);
      const s = this.t.k / this.layerT.k;
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = '#0d1117';
      ctx.fillRect(0, 0, w, h);
      ctx.setTransform(s, 0, 0, s, dpr * (this.t.x - this.layerT.x * s), dpr * (this.t.y - this.layerT.y * s));
      ctx.drawImage(this.layer, 0, 0);
    }
    this.drawMarkers(ctx, dpr, selected, highlight);
    return this.drawn;
  }

  // pending tells the render loop a settled redraw is due (view moved or data changed).
  pending() {
    if (!this.layer || this.geom.length + this.store.nodes.size < LAYER_ABOVE) return false;
    const now = performance.now();
    if (now - this.interactedAt < SETTLE_MS) return true;
    const t = this.layerT;
    return t.k !== this.t.k || t.x !== this.t.x || t.y !== this.t.y || this.layerVersion !== this.store.version;
  }

  interacted() { this.interactedAt = performance.now(); }

  renderLayer(dpr, now) {
    const [w, h] = this.size;
    if (!this.layer || this.layer.width !== Math.round(w * dpr) || this.layer.height !== Math.round(h * dpr)) {
      this.layer = document.createElement('canvas');
      this.layer.width = Math.round(w * dpr);
      this.layer.height = Math.round(h * dpr);
    }
    const t0 = performance.now();
    this.drawScene(this.layer.getContext('2d'), dpr, this.t);
    this.layerCost = performance.now() - t0;
    this.layerT = { ...this.t };
    this.layerVersion = this.store.version;
    this.layerAt = now;
  }

  // drawScene draws land, edges and machines for transform t.
  drawScene(ctx, dpr, t) {
    const [w, h] = this.size;
    const { k, x, y } = t;
    const { nodes } = this.store;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#0d1117';
    ctx.fillRect(0, 0, w, h);
    ctx.setTransform(dpr * k, 0, 0, dpr * k, dpr * x, dpr * y);
    ctx.fillStyle = '#111d2b';
    ctx.fill(this.sphere);
    ctx.lineWidth = 0.5 / k;
    ctx.strokeStyle = '#1b2a3c';
    ctx.stroke(this.graticule);
    ctx.fillStyle = '#24303f';
    ctx.fill(this.land);
    ctx.strokeStyle = '#3a4a5e';
    ctx.stroke(this.borders);

    const [vx0, vy0] = this.base([0, 0]), [vx1, vy1] = this.base([w, h]);
    this.drawEdges(ctx, k, [vx0, vy0, vx1, vy1]);

    const showMachines = k >= 2.5 || nodes.size < 600;
    const dots = batcher(ctx, 'fill');
    for (const n of nodes.values()) {
      if (n.kind !== 'node' && n.kind !== 'osd') continue;
      if ((!showMachines && !n.alerts) || (n.kind === 'osd' && k < 6)) continue;
      const p = this.pos.get(n.id);
      if (!p || p[0] < vx0 || p[0] > vx1 || p[1] < vy0 || p[1] > vy1) continue;
      const r = (n.kind === 'osd' ? 1.2 : 1.8) / k;
      dots.add(n.status, (path) => { path.moveTo(p[0] + r, p[1]); path.arc(p[0], p[1], r, 0, Math.PI * 2); });
    }
    dots.flush(() => {});
  }

  // drawEdges strokes the visible edges grouped by kind and status (worst last, so it
  // stays on top). Past AGGREGATE_ABOVE visible tunnels, tunnels between the same two
  // sites are drawn as one arc in their worst status, its width growing with the count.
  drawEdges(ctx, k, [vx0, vy0, vx1, vy1]) {
    const { edges } = this.store;
    let all;
    this.aggregates = null;
    if (this.geom.length > AGGREGATE_ABOVE && k < AGGREGATE_BELOW_ZOOM) {
      if (this.aggVersion !== this.store.version) {
        this.aggVersion = this.store.version;
        this.aggMap = this.aggregate();
      }
      this.aggregates = this.aggMap;
      all = this.aggMap.values();
    } else {
      all = (function* (geom) { for (const g of geom) { const e = edges.get(g.id); if (e) yield { g, e }; } })(this.geom);
    }
    const list = [];
    for (const { g, e } of all) {
      if (e.kind === 'flow' || g.maxx < vx0 || g.minx > vx1 || g.maxy < vy0 || g.miny > vy1) continue;
      list.push([g, e]);
    }
    const showProbes = k >= 1.5 || list.length < 5000;
    // Many edges: sub-pixel widths, which canvas rasterises as fast hairlines (a wide
    // stroke costs ~10x more per segment in software rendering).
    const thin = list.length > THIN_ABOVE;
    const widths = thin ? { probe: 0.6, storage: 0.8, tunnel: 0.9, steer: 2.2 } : { probe: 0.6, storage: 0.8, tunnel: 1.3, steer: 2.2 };
    for (const kind of ['probe', 'storage', 'tunnel', 'steer']) {
      if (kind === 'probe' && !showProbes) continue;
      ctx.globalAlpha = kind === 'probe' ? 0.45 : 0.9;
      ctx.setLineDash(kind === 'probe' ? [3 / k, 3 / k] : []);
      const b = batcher(ctx, 'stroke');
      for (const [g, e] of list) {
        if (e.kind !== kind) continue;
        b.add(e.status, (p) => {
          p.moveTo(g.a[0], g.a[1]);
          if (kind === 'tunnel' || kind === 'steer') p.quadraticCurveTo(g.c[0], g.c[1], g.b[0], g.b[1]);
          else p.lineTo(g.b[0], g.b[1]);
        });
      }
      b.flush((s) => { ctx.lineWidth = (widths[kind] + (s === 'down' && !thin ? 0.8 : 0)) / k; });
    }
    ctx.globalAlpha = 1;
    ctx.setLineDash([]);
    this.drawSteerHeads(ctx, k);
    this.drawn = list.length;
  }

  // aggregate folds tunnels by site pair (worst status, counts); other edges pass through.
  aggregate() {
    const { edges } = this.store;
    const out = new Map();
    for (const g of this.geom) {
      const e = edges.get(g.id);
      if (!e) continue;
      if (!g.pair) { out.set(e.id, { g, e }); continue; }
      let a = out.get(g.pair);
      if (!a) {
        const pg = this.pairs.get(g.pair);
        a = { key: g.pair, g: pg, e: { kind: 'tunnel', status: 'unknown' }, counts: { ok: 0, degraded: 0, down: 0, unknown: 0 }, sites: pg.sites };
        out.set(g.pair, a);
      }
      a.counts[e.status]++;
      if (SEVERITY[e.status] > SEVERITY[a.e.status]) a.e = { kind: 'tunnel', status: e.status };
    }
    return out;
  }

  // drawMarkers draws sites, POPs and client regions with labels and alert rings: few,
  // and always crisp, so they are drawn live over the layer.
  drawMarkers(ctx, dpr, selected, highlight) {
    const [w, h] = this.size;
    const { nodes } = this.store;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = '11px "Liberation Sans", Arial, sans-serif';
    ctx.textBaseline = 'middle';
    const big = [];
    for (const n of nodes.values()) {
      if (n.kind !== 'site' && n.kind !== 'pop' && n.kind !== 'region') continue;
      const p = this.pos.get(n.id);
      if (!p) continue;
      const sp = this.screen(p);
      if (sp[0] < -20 || sp[0] > w + 20 || sp[1] < -20 || sp[1] > h + 20) continue;
      big.push([n, sp]);
    }
    const order = { site: 0, pop: 1, region: 2 };
    big.sort((a, b) => order[a[0].kind] - order[b[0].kind]);
    for (const [n, [sx, sy]] of big) {
      ctx.fillStyle = COLORS[n.status];
      ctx.strokeStyle = n.id === selected ? '#ffffff' : '#0d1117';
      ctx.lineWidth = n.id === selected ? 2.5 : 1.5;
      ctx.beginPath();
      if (n.kind === 'site') ctx.arc(sx, sy, 6, 0, Math.PI * 2);
      else if (n.kind === 'pop') { ctx.moveTo(sx, sy - 6); ctx.lineTo(sx + 6, sy); ctx.lineTo(sx, sy + 6); ctx.lineTo(sx - 6, sy); ctx.closePath(); }
      else ctx.rect(sx - 5, sy - 5, 10, 10);
      ctx.fill();
      ctx.stroke();
      if (n.kind === 'pop' && n.metrics?.utilisation != null) {
        // Utilisation against capacity: a bar under the diamond, full at capacity.
        const u = n.metrics.utilisation;
        ctx.fillStyle = '#30363d';
        ctx.fillRect(sx - 8, sy + 8, 16, 3);
        ctx.fillStyle = u >= 0.9 ? COLORS.down : u >= 0.7 ? COLORS.degraded : COLORS.ok;
        ctx.fillRect(sx - 8, sy + 8, 16 * Math.min(u, 1), 3);
      }
      if (n.alerts) {
        ctx.strokeStyle = COLORS.down;
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.arc(sx, sy, 10, 0, Math.PI * 2);
        ctx.stroke();
      }
    }
    if (big.length < 400 || this.t.k > 3) this.drawLabels(ctx, big.map((b) => b[0]), big.map((b) => b[1]), selected);
    const hp = highlight && this.pos.get(highlight);
    if (hp) {
      const [sx, sy] = this.screen(hp);
      ctx.strokeStyle = '#58a6ff';
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(sx, sy, 14, 0, Math.PI * 2);
      ctx.stroke();
    }
  }

  // drawLabels places each label at the first of four spots around its marker that does
  // not cover another label or marker, and leaves it out when none is free (zoom in).
  drawLabels(ctx, big, marks, selected) {
    const taken = marks.map(([x, y]) => [x - 7, y - 7, x + 7, y + 7]);
    const free = (r) => !taken.some((t) => r[0] < t[2] && r[2] > t[0] && r[1] < t[3] && r[3] > t[1]);
    for (let i = 0; i < big.length; i++) {
      const n = big[i];
      let text = n.label;
      if (n.kind === 'pop') {
        const w = popWeights(n, this.steerWeights());
        if (w) text += ' · w ' + w;
        if (n.metrics?.utilisation != null) text += ' · ' + Math.round(n.metrics.utilisation * 100) + '%';
        const holders = n.attrs?.vip_holder ? n.attrs.vip_holder.split(',') : [];
        if (holders.length > 1) text += ' · split brain';
        else if (holders.length === 1) text += ' · VIP ' + holders[0];
      }
      if (n.alerts) text = '⚠ ' + n.alerts.length + ' ' + text;
      const tw = ctx.measureText(text).width, [x, y] = marks[i];
      const spots = [[x + 10, y - 7], [x - 10 - tw, y - 7], [x - tw / 2, y + 9], [x - tw / 2, y - 23],
        [x + 8, y + 4], [x + 8, y - 18], [x - 8 - tw, y + 4], [x - 8 - tw, y - 18]];
      const spot = spots.map(([lx, ly]) => [lx, ly, lx + tw, ly + 14]).find(free) || (n.id === selected ? [x + 10, y - 7, x + 10 + tw, y + 7] : null);
      if (!spot) continue;
      taken.push(spot);
      ctx.fillStyle = n.alerts ? COLORS.down : '#e6edf3';
      ctx.fillText(text, spot[0], spot[1] + 7);
    }
  }

  // steerWeights maps each POP to the weights client regions are steered to it with.
  steerWeights() {
    if (this.weightsFor === this.store.version) return this.weights;
    this.weightsFor = this.store.version;
    this.weights = new Map();
    for (const e of this.store.edges.values()) {
      if (e.kind !== 'steer') continue;
      if (!this.weights.has(e.target)) this.weights.set(e.target, []);
      this.weights.get(e.target).push(e.metrics?.weight ?? 0);
    }
    return this.weights;
  }

  drawSteerHeads(ctx, k) {
    const { edges } = this.store;
    for (const g of this.geom) {
      const e = edges.get(g.id);
      if (!e || e.kind !== 'steer') continue;
      // Arrowhead along the curve's end tangent (control point -> target).
      const dx = g.b[0] - g.c[0], dy = g.b[1] - g.c[1];
      const len = Math.hypot(dx, dy) || 1;
      const ux = dx / len, uy = dy / len, s = 7 / k;
      const tip = [g.b[0] - ux * 7 / k, g.b[1] - uy * 7 / k];
      ctx.fillStyle = COLORS[e.status];
      ctx.beginPath();
      ctx.moveTo(tip[0], tip[1]);
      ctx.lineTo(tip[0] - ux * s - uy * s * 0.5, tip[1] - uy * s + ux * s * 0.5);
      ctx.lineTo(tip[0] - ux * s + uy * s * 0.5, tip[1] - uy * s - ux * s * 0.5);
      ctx.fill();
    }
  }

  // pick finds the node or edge under the screen point.
  pick(sx, sy) {
    this.layout();
    const [bx, by] = this.base([sx, sy]);
    const k = this.t.k;
    let best = null, bestD = 9 / k;
    for (const n of this.store.nodes.values()) {
      if (n.kind === 'workload' || n.kind === 'cluster') continue;
      const p = this.pos.get(n.id);
      if (!p) continue;
      const d = Math.hypot(p[0] - bx, p[1] - by) - (n.kind === 'site' || n.kind === 'pop' ? 4 / k : 0);
      if (d < bestD) { bestD = d; best = { type: 'node', id: n.id }; }
    }
    if (best) return best;
    bestD = 5 / k;
    if (this.aggregates) {
      for (const a of this.aggregates.values()) {
        if (!a.counts) continue;
        const g = a.g;
        for (let i = 0; i <= 16; i++) {
          const t = i / 16, u = 1 - t;
          const d = Math.hypot(u * u * g.a[0] + 2 * u * t * g.c[0] + t * t * g.b[0] - bx, u * u * g.a[1] + 2 * u * t * g.c[1] + t * t * g.b[1] - by);
          if (d < bestD) { bestD = d; best = { type: 'agg', id: a.key, agg: a }; }
        }
      }
      return best;
    }
    for (const g of this.geom) {
      if (bx < g.minx - bestD || bx > g.maxx + bestD || by < g.miny - bestD || by > g.maxy + bestD) continue;
      const e = this.store.edges.get(g.id);
      if (!e || e.kind === 'flow') continue;
      const curved = e.kind === 'tunnel' || e.kind === 'steer';
      for (let i = 0; i <= 12; i++) {
        const t = i / 12, u = 1 - t;
        const px = curved ? u * u * g.a[0] + 2 * u * t * g.c[0] + t * t * g.b[0] : u * g.a[0] + t * g.b[0];
        const py = curved ? u * u * g.a[1] + 2 * u * t * g.c[1] + t * t * g.b[1] : u * g.a[1] + t * g.b[1];
        const d = Math.hypot(px - bx, py - by);
        if (d < bestD) { bestD = d; best = { type: 'edge', id: g.id }; }
      }
    }
    return best;
  }

  // edgeMid returns the screen point halfway along an edge (tests sample its colour).
  edgeMid(id) {
    this.layout();
    const g = this.geom.find((g) => g.id === id);
    if (!g) return null;
    return this.screen([0.25 * g.a[0] + 0.5 * g.c[0] + 0.25 * g.b[0], 0.25 * g.a[1] + 0.5 * g.c[1] + 0.25 * g.b[1]]);
  }

  nodeScreen(id) {
    this.layout();
    const p = this.pos.get(id);
    return p ? this.screen(p) : null;
  }

  center(id, w, h) {
    this.layout();
    const p = this.pos.get(id);
    if (!p) return;
    this.t.k = Math.max(this.t.k, 3);
    this.t.x = w / 2 - p[0] * this.t.k;
    this.t.y = h / 2 - p[1] * this.t.k;
  }
}

// popWeights summarises a POP's current steering weights: the global per-service weight
// when steering published one, else the mean over client regions' steer edges.
export function popWeights(n, steer) {
  const ws = Object.entries(n.metrics || {}).filter(([k]) => k.startsWith('weight/')).map(([, v]) => v);
  if (ws.length) return ws.map((v) => +v.toFixed(2)).join('/');
  const rs = steer.get(n.id);
  if (rs?.length) return (rs.reduce((a, b) => a + b, 0) / rs.length).toFixed(2);
  return '';
}
