// The client copy of the live graph and the websocket that keeps it current.
// Protocol: see topomap/README.md. Snapshot, then deltas; on reconnect the client sends
// its last seq and epoch and gets the missed deltas or a fresh snapshot. A past instant
// (time travel) comes the same way, with `at` (unix ms) on its snapshot and deltas.

export class Store {
  constructor() {
    this.nodes = new Map();
    this.edges = new Map();
    this.seq = 0;
    this.epoch = '';
    this.at = 0;             // the past instant shown (unix ms); 0: live
    this.speed = 0;          // playback speed of the past
    this.version = 0;        // bumps on any change: renderers rebuild caches
    this.structure = 0;      // bumps when elements are added or removed
    this.listeners = new Set();
  }

  onChange(fn) { this.listeners.add(fn); }

  emit(structural) {
    this.version++;
    if (structural) this.structure++;
    for (const fn of this.listeners) fn(structural);
  }

  applySnapshot(m) {
    this.nodes.clear();
    this.edges.clear();
    for (const n of m.nodes) this.nodes.set(n.id, n);
    for (const e of m.edges) this.edges.set(e.id, e);
    this.seq = m.seq;
    this.epoch = m.epoch;
    this.at = m.at || 0;
    this.speed = m.speed || 0;
    this.emit(true);
  }

  applyDelta(m) {
    let structural = false;
    const up = m.upserts || {}, rm = m.removes || {};
    for (const n of up.nodes || []) {
      const old = this.nodes.get(n.id);
      if (!old || old.geo?.[0] !== n.geo?.[0] || old.parent !== n.parent) structural = true;
      this.nodes.set(n.id, n);
    }
    for (const e of up.edges || []) {
      if (!this.edges.has(e.id)) structural = true;
      this.edges.set(e.id, e);
    }
    for (const id of rm.nodes || []) structural = this.nodes.delete(id) || structural;
    for (const id of rm.edges || []) structural = this.edges.delete(id) || structural;
    this.seq = m.seq;
    if (m.at) this.at = m.at;
    this.emit(structural);
  }
}

// Connection keeps one websocket open, reconnecting with backoff and resuming from the
// last applied seq. onState gets 'connecting', 'live', 'reconnecting', 'unauthorized'.
export class Connection {
  constructor(store, { token, onState }) {
    this.store = store;
    this.token = token;
    this.onState = onState;
    this.attempt = 0;
    this.filter = {};
    this.messages = 0;
    this.travel = { at: 0, speed: 0 }; // asked for: a past instant (0: live) and a speed
  }

  // goTo shows the past instant at (unix ms), played forward at speed (0: paused).
  goTo(at, speed = 0) {
    this.travel = { at: Math.round(at), speed };
    this.send({ type: 'at', at: this.travel.at, speed });
  }

  goLive() {
    this.travel = { at: 0, speed: 0 };
    this.send({ type: 'live' });
  }

  send(m) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
  }

  url() {
    const u = new URL('ws', location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.token && !/^[A-Za-z0-9._~-]+$/.test(this.token)) u.searchParams.set('token', this.token);
    return u.toString();
  }

  connect() {
    const protos = ['meridian.topomap.v1'];
    if (this.token && /^[A-Za-z0-9._~-]+$/.test(this.token)) protos.push('bearer.' + this.token);
    this.onState(this.attempt ? 'reconnecting' : 'connecting');
    const ws = new WebSocket(this.url(), protos);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      const hello = { type: 'hello', filter: this.filter };
      if (this.travel.at) {
        // Back in the past where the page was: the instant reached, still playing.
        hello.at = this.store.at || this.travel.at;
        hello.speed = this.travel.speed;
      } else if (this.store.epoch) { hello.since = this.store.seq; hello.epoch = this.store.epoch; }
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      this.messages++;
      if (m.type === 'error') { this.onState('error', m.error); return; }
      if (m.type === 'snapshot') this.store.applySnapshot(m);
      else if (m.type === 'delta') this.store.applyDelta(m);
      else if (m.type === 'resume') { /* deltas follow */ }
      if (m.type === 'snapshot' && !m.at) this.travel = { at: 0, speed: 0 }; // live again (playback reached the present)
      this.attempt = 0;
      this.onState(this.store.at ? 'past' : 'live');
    };
    ws.onclose = async (ev) => {
      if (!opened && await this.unauthorized()) { this.onState('unauthorized'); return; }
      this.attempt++;
      this.onState('reconnecting', ev.reason);
      const wait = Math.min(10000, 250 * 2 ** Math.min(this.attempt, 6));
      setTimeout(() => this.connect(), wait);
    };
  }

  // A refused upgrade shows as close 1006 with no reason; ask the snapshot endpoint,
  // which applies the same token rule, whether the token is the problem.
  async unauthorized() {
    try {
      const u = new URL('api/snapshot?layers=site', location.href);
      const r = await fetch(u, { headers: this.token ? { Authorization: 'Bearer ' + this.token } : {} });
      return r.status === 401;
    } catch { return false; }
  }
}
