// Status colours shared by every view and the legend.
export const COLORS = { ok: '#2ea043', degraded: '#d29922', down: '#f85149', unknown: '#8a8f98' };
// Drawing order: the worst status last, so it stays visible where elements overlap.
export const STATUSES = ['unknown', 'ok', 'degraded', 'down'];
