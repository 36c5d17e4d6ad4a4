// Audit trail: every change to suppressions, preferences, destinations and the DLQ, newest first.

import { get, qs } from '../api.js';
import { field, h, pagedList, put, table, time } from '../ui.js';

const json = (v) => {
  if (v === null || v === undefined) return '—';
  const pre = h('pre', { class: 'body' });
  pre.textContent = JSON.stringify(v, null, 2);
  return h('details', {}, h('summary', {}, 'show'), pre);
};

export function render(root, ctx) {
  const subject = field('Subject', h('input', { value: ctx.params.get('subject') ?? '', spellcheck: 'false' }));
  const actor = field('Actor (token name)', h('input', { value: ctx.params.get('actor') ?? '', spellcheck: 'false' }));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the audit trail' }, subject.el, actor.el,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Apply filters')));
  const filters = () => ({ subject: subject.control.value.trim(), actor: actor.control.value.trim() });
  let current = filters();
  const listing = pagedList({
    label: 'Audit entries',
    load: (after) => get(`/v1/audit${qs({ ...current, limit: 50, after })}`),
    render: (items) => table([
      { label: 'At', cell: (e) => time(e.at) },
      { label: 'Actor', cell: (e) => e.actor },
      { label: 'Action', cell: (e) => h('span', { class: 'mono' }, e.action) },
      { label: 'Subject', cell: (e) => e.subject },
      { label: 'Before', cell: (e) => json(e.before) },
      { label: 'After', cell: (e) => json(e.after) },
    ], items, { empty: 'No entries.' }),
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    current = filters();
    ctx.setParams(current);
    listing.reset();
  });
  put(root, h('h1', { tabindex: '-1' }, 'Audit trail'), form, listing);
}
