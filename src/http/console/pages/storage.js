// Storage: file and table sizes, commit timings, the last maintenance report (index health) as
// herald keeps it — scheduled or run from here — and running maintenance (admin).

import { api, get } from '../api.js';
import { action, bytes, errorBlock, h, num, pill, put, section, table, time } from '../ui.js';

function report(r) {
  if (!r) return h('p', { class: 'muted' }, 'No maintenance has run since herald started. It runs on its own every storage.maintenance_interval_secs.');
  return h('div', {},
    h('p', {}, `Last run took ${num(r.took_ms)} ms.`),
    table([
      { label: 'Index', cell: (i) => h('span', { class: 'mono' }, i.index) },
      { label: 'Of', cell: (i) => i.primary },
      { label: 'Missing', num: true, cell: (i) => num(i.missing) },
      { label: 'Extra', num: true, cell: (i) => num(i.extra) },
      { label: 'Rebuilt', cell: (i) => (i.rebuilt ? pill('rebuilt', 'at_risk') : 'no') },
    ], r.indexes),
    r.integrity_note && h('p', { class: 'muted' }, `Integrity: ${r.integrity_note}`),
    r.compaction_note && h('p', { class: 'muted' }, `Compaction: ${r.compaction_note}`));
}

export async function render(root, ctx) {
  const out = h('div');
  const last = h('div');
  put(root, h('h1', { tabindex: '-1' }, 'Storage'), out,
    section('Maintenance', last, ctx.can('admin') && action('Run maintenance', async () => {
      put(last, report(await api('POST', '/v1/storage/maintenance')));
      return 'Done.';
    }, { cls: 'primary' })));
  let s;
  try {
    s = await get('/v1/storage');
  } catch (e) {
    put(out, errorBlock(e));
    return;
  }
  const c = s.commits;
  put(last, report(s.last_maintenance));
  put(out,
    h('div', { class: 'cards' },
      h('div', { class: 'card' }, h('div', { class: 'value' }, bytes(s.stats.file_bytes)), h('div', { class: 'label' }, 'Database file')),
      h('div', { class: 'card' }, h('div', { class: 'value' }, num(s.stats.schema_version)), h('div', { class: 'label' }, 'Schema version')),
      c && h('div', { class: 'card' }, h('div', { class: 'value' }, num(c.commits)), h('div', { class: 'label' }, 'Commits')),
      c && h('div', { class: 'card' }, h('div', { class: 'value' }, num(c.slow_commits)), h('div', { class: 'label' }, `Commits over ${c.slow_threshold_ms} ms`))),
    section('Tables', table([
      { label: 'Table', cell: (t) => h('span', { class: 'mono' }, t.name) },
      { label: 'Entries', num: true, cell: (t) => num(t.entries) },
      { label: 'Index of', cell: (t) => t.index_of ?? '—' },
    ], s.stats.tables)),
    c?.recent_slow?.length ? section('Recent slow commits', table([
      { label: 'At', cell: ([at]) => time(new Date(at).toISOString()) },
      { label: 'Took ms', num: true, cell: ([, took]) => num(took) },
      { label: 'Jobs', num: true, cell: ([, , jobs]) => num(jobs) },
    ], c.recent_slow)) : null);
}
