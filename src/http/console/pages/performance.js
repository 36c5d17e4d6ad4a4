// Performance: route latencies, web-vitals p75 per page and metric against the budgets, and the
// budgets' p75 over time. herald reports the current window only, so "over time" is sampled by
// this tab (GET /v1/perf every 15 s while the page is open, an hour kept in sessionStorage).

import { get } from '../api.js';
import { contentWidth, lineChart } from '../chart.js';
import { errorBlock, h, num, pill, put, section, table } from '../ui.js';

const KEY = 'herald.p75';
const HOUR_MS = 3_600_000;

const budgetName = (b) => `${b.metric}${b.page ? ` ${b.page}` : ''}`;

function history(perf) {
  let xs = [];
  try {
    xs = JSON.parse(sessionStorage.getItem(KEY)) ?? [];
  } catch {
    xs = [];
  }
  const now = Date.now();
  if (perf) xs.push({ t: now, b: Object.fromEntries(perf.budgets.filter((b) => b.p75 !== null).map((b) => [budgetName(b), b.p75])) });
  xs = xs.filter((x) => now - x.t <= HOUR_MS);
  sessionStorage.setItem(KEY, JSON.stringify(xs));
  return xs;
}

function charts(perf, xs) {
  const now = Date.now();
  // At least a quarter of an hour across, so the time axis reads well from the first samples.
  const from = Math.max(Math.min(xs[0]?.t ?? now, now - HOUR_MS / 4), now - HOUR_MS);
  const vital = perf.budgets.filter((b) => !b.metric.startsWith('route:'));
  if (!vital.length) return h('p', { class: 'muted' }, 'No budgets.');
  return h('div', { class: 'grid2' }, vital.map((b) => h('div', {},
    h('h3', {}, budgetName(b), ' ', pill(b.state)),
    lineChart({
      series: [{ name: `p75 ${budgetName(b)}`, points: xs.filter((x) => budgetName(b) in x.b).map((x) => [x.t, x.b[budgetName(b)]]) }],
      xDomain: [from, now],
      limit: { value: b.p75_max, label: `budget ${num(b.p75_max, 2)}` },
      label: `p75 of ${budgetName(b)} over time`,
      width: contentWidth(matchMedia('(max-width: 760px)').matches ? 1 : 0.5),
    }))));
}

export async function render(root) {
  const out = h('div');
  put(root, h('h1', { tabindex: '-1' }, 'Performance'), out);
  const load = async () => {
    let perf;
    try {
      perf = await get('/v1/perf');
    } catch (e) {
      put(out, errorBlock(e));
      return;
    }
    const xs = history(perf);
    const ms = (v) => num(v, 1);
    put(out,
      section('Budgets', table([
        { label: 'Metric', cell: (b) => b.metric },
        { label: 'Page', cell: (b) => b.page ?? 'all pages' },
        { label: 'p75', num: true, cell: (b) => num(b.p75, 2) },
        { label: 'Budget (p75 max)', num: true, cell: (b) => num(b.p75_max, 2) },
        { label: 'Samples', num: true, cell: (b) => num(b.samples) },
        { label: 'State', cell: (b) => pill(b.state) },
      ], perf.budgets, { empty: 'No budgets.' })),
      section('Web vitals p75, per page', table([
        { label: 'Page', cell: (v) => h('span', { class: 'mono' }, v.page) },
        { label: 'Metric', cell: (v) => v.metric },
        { label: 'p75', num: true, cell: (v) => num(v.p75, v.metric === 'CLS' ? 3 : 1) },
        { label: 'Samples', num: true, cell: (v) => num(v.samples) },
        { label: 'vs budget', cell: (v) => {
          const b = perf.budgets.find((x) => x.metric === v.metric && (!x.page || x.page === v.page));
          if (!b) return '—';
          return v.p75 <= b.p75_max ? pill('within', 'ok') : pill('over', 'violated');
        } },
      ], perf.vitals, { empty: 'No vitals reported yet.' })),
      section('p75 over time', h('p', { class: 'note' }, 'Sampled by this page from /v1/perf every 15 s while it is open, up to an hour.'), charts(perf, xs)),
      section('Route latency', table([
        { label: 'Port', cell: (r) => r.port },
        { label: 'Route', cell: (r) => h('span', { class: 'mono' }, r.route) },
        { label: 'Status', cell: (r) => r.status_class },
        { label: 'Count', num: true, cell: (r) => num(r.count) },
        { label: 'p50 ms', num: true, cell: (r) => ms(r.p50_ms) },
        { label: 'p95 ms', num: true, cell: (r) => ms(r.p95_ms) },
        { label: 'p99 ms', num: true, cell: (r) => ms(r.p99_ms) },
      ], perf.routes, { empty: 'No requests yet.' })));
  };
  await load();
  const timer = setInterval(load, 15_000);
  return () => clearInterval(timer);
}
