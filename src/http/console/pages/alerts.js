// Alerts: active and resolved, from herald's alert book.

import { get, qs } from '../api.js';
import { errorBlock, field, h, pill, put, select, table, time } from '../ui.js';

export async function render(root, ctx) {
  const state = field('Show', select([['active', 'active only'], ['', 'all']], ctx.params.get('state') ?? 'active'));
  const out = h('div');
  const load = async () => {
    put(out, h('p', { class: 'muted' }, 'Loading…'));
    try {
      const data = await get(`/v1/alerts${qs({ state: state.control.value })}`);
      put(out, table([
        { label: 'Severity', cell: (a) => pill(a.severity) },
        { label: 'Kind', cell: (a) => h('span', { class: 'mono' }, a.kind) },
        { label: 'Subject', cell: (a) => a.subject },
        { label: 'Started', cell: (a) => time(a.started_at) },
        { label: 'Resolved', cell: (a) => (a.resolved_at ? time(a.resolved_at) : pill('active', 'open')) },
        { label: 'Detail', cell: (a) => a.detail },
      ], data.items, { empty: 'No alerts.' }));
    } catch (e) {
      put(out, errorBlock(e));
    }
  };
  state.control.addEventListener('change', () => {
    ctx.setParams({ state: state.control.value });
    load();
  });
  put(root, h('h1', { tabindex: '-1' }, 'Alerts'), h('div', { class: 'filters' }, state.el), out);
  await load();
}
