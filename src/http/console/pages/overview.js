// Overview: ingest and delivery rates over the last hour, DLQ depth, open circuits, active
// alerts, budget states.
//
// herald keeps counters, not a rate history, so the chart is sampled here: every 10 s this tab
// reads the counters of GET /metrics (herald_ingest_total, herald_deliveries_total) and keeps an
// hour of samples in sessionStorage. The chart therefore starts when the console is opened.

import { get } from '../api.js';
import { lineChart } from '../chart.js';
import { errorBlock, h, num, pill, put, section } from '../ui.js';

const KEY = 'herald.rates';
const EVERY_MS = 10_000;
const HOUR_MS = 3_600_000;
let sampler = null;
const listeners = new Set();

function samples() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY)) ?? [];
  } catch {
    return [];
  }
}

/** Sums a counter family of the Prometheus text by one label's value. */
function sums(text, family, label) {
  const out = {};
  const re = new RegExp(`^${family}_total\\{([^}]*)\\}\\s+([0-9.eE+-]+)`, 'gm');
  for (const [, labels, value] of text.matchAll(re)) {
    const m = labels.match(new RegExp(`${label}="([^"]*)"`));
    const k = m ? m[1] : '';
    out[k] = (out[k] ?? 0) + Number(value);
  }
  return out;
}

async function sample() {
  let text;
  try {
    const r = await fetch('/metrics', { cache: 'no-store' });
    if (!r.ok) return;
    text = await r.text();
  } catch {
    return; // the API client's banner reports lost connections
  }
  const ingest = sums(text, 'herald_ingest', 'outcome');
  const del = sums(text, 'herald_deliveries', 'outcome');
  const now = Date.now();
  const s = {
    t: now,
    accepted: ingest.accepted ?? 0,
    succeeded: del.succeeded ?? 0,
    failed: (del.retrying ?? 0) + (del.dead ?? 0) + (del.gone ?? 0),
  };
  const kept = samples().filter((x) => now - x.t <= HOUR_MS);
  kept.push(s);
  sessionStorage.setItem(KEY, JSON.stringify(kept));
  listeners.forEach((fn) => fn());
}

/** Starts sampling (once per tab). */
export function startSampler() {
  if (sampler) return;
  sample();
  sampler = setInterval(sample, EVERY_MS);
}

/** Per-second rates between consecutive samples; a counter that went down (restart) counts 0. */
function rates(key) {
  const xs = samples();
  const out = [];
  for (let i = 1; i < xs.length; i += 1) {
    const dt = (xs[i].t - xs[i - 1].t) / 1000;
    if (dt <= 0) continue;
    out.push([xs[i].t, Math.max(0, xs[i][key] - xs[i - 1][key]) / dt]);
  }
  return out;
}

function chart() {
  const now = Date.now();
  const series = [
    { name: 'webhooks accepted /s', points: rates('accepted') },
    { name: 'deliveries succeeded /s', points: rates('succeeded') },
    { name: 'attempts failed /s', points: rates('failed') },
  ];
  // At least a quarter of an hour across, so the time axis reads well from the first samples.
  const first = Math.min(samples()[0]?.t ?? now, now - HOUR_MS / 4);
  return h('div', {},
    lineChart({ series, xDomain: [Math.max(first, now - HOUR_MS), now], label: 'Ingest and delivery rates, per second' }),
    h('p', { class: 'note' },
      'Sampled by this console from /metrics every 10 s since it was opened (herald keeps counters, not a rate history); up to the last hour.'));
}

export async function render(root) {
  const card = (label, value, href) => h('div', { class: 'card' },
    h('div', { class: 'value' }, value), h('div', { class: 'label' }, href ? h('a', { href }, label) : label));
  const CARDS = [['Dead deliveries (DLQ)', '#/dlq'], ['Deliveries queued', '#/destinations'], ['Open circuits', '#/destinations'],
    ['Active alerts', '#/alerts'], ['Budgets violated', '#/performance']];
  // Placeholders of the final size, so the figures arriving move nothing.
  const cards = h('div', { class: 'cards' }, CARDS.map(([label, href]) => card(label, '…', href)));
  const chartBox = h('div');
  const budgets = h('div');
  put(root, h('h1', { tabindex: '-1' }, 'Overview'), cards, section('Rates, last hour', chartBox), section('Budgets', budgets));
  put(chartBox, chart()); // once attached: the chart is drawn at the width it is shown
  const redraw = () => put(chartBox, chart());
  listeners.add(redraw);

  const [metrics, dests, alerts, perf] = await Promise.allSettled([
    fetch('/metrics', { cache: 'no-store' }).then((r) => r.text()),
    get('/v1/destinations'),
    get('/v1/alerts?state=active'),
    get('/v1/perf'),
  ]);
  const dlq = metrics.status === 'fulfilled' ? metrics.value.match(/^herald_dlq_depth\s+(\d+)/m)?.[1] : null;
  const queued = metrics.status === 'fulfilled'
    ? [...metrics.value.matchAll(/^herald_queue_depth\{[^}]*\}\s+(\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0)
    : null;
  const open = dests.status === 'fulfilled' ? dests.value.items.filter((d) => d.circuit.state !== 'closed').length : null;
  const values = [
    num(dlq === null || dlq === undefined ? null : Number(dlq)),
    num(queued),
    num(open),
    alerts.status === 'fulfilled' ? num(alerts.value.items.length) : '—',
    perf.status === 'fulfilled' ? num(perf.value.budgets.filter((b) => b.state === 'violated').length) : '—',
  ];
  put(cards, CARDS.map(([label, href], i) => card(label, values[i], href)));
  for (const r of [metrics, dests, alerts, perf]) if (r.status === 'rejected') cards.after(errorBlock(r.reason));
  if (perf.status === 'fulfilled') {
    put(budgets, h('ul', { class: 'legend' }, perf.value.budgets.map((b) =>
      h('li', {}, pill(b.state), ' ', `${b.metric}${b.page ? ` ${b.page}` : ''}: p75 ${b.p75 === null ? '—' : num(b.p75, 2)} / ${num(b.p75_max, 2)}`))));
  }
  return () => listeners.delete(redraw);
}
