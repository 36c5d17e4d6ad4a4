// Messages: a filtered, cursor-paged list, and one message with its body and, per destination,
// the timeline of every attempt. Bodies are rendered as text only: JSON pretty-printed, any
// other type raw.

import { api, get, qs, seg } from '../api.js';
import { action, errorBlock, field, h, pagedList, pill, put, section, select, time } from '../ui.js';

const STATUSES = ['', 'pending', 'succeeded', 'retrying', 'dead', 'suppressed'];

export function render(root, ctx) {
  return ctx.rest[0] ? detail(root, ctx, ctx.rest[0]) : list(root, ctx);
}

/** `datetime-local` (the operator's local time) ↔ RFC 3339 UTC. */
const toIso = (local) => (local ? new Date(local).toISOString() : '');
function toLocal(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function list(root, ctx) {
  const p = Object.fromEntries(ctx.params);
  const status = field('Status', select(STATUSES, p.status ?? ''));
  const source = field('Source', h('input', { name: 'source', value: p.source ?? '', spellcheck: 'false' }));
  const eventType = field('Event type', h('input', { name: 'event_type', value: p.event_type ?? '', spellcheck: 'false' }));
  const recipient = field('Recipient', h('input', { name: 'recipient', value: p.recipient ?? '', spellcheck: 'false', autocomplete: 'off' }));
  const since = field('Received from', h('input', { type: 'datetime-local', name: 'since', value: toLocal(p.since) }));
  const until = field('Received before', h('input', { type: 'datetime-local', name: 'until', value: toLocal(p.until) }));
  const apply = h('button', { type: 'submit', class: 'primary' }, 'Apply filters');
  const reset = h('button', { type: 'reset' }, 'Clear');
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter messages' },
    status.el, source.el, eventType.el, recipient.el, since.el, until.el, h('div', { class: 'actions' }, apply, reset));

  const filters = () => ({
    status: status.control.value,
    source: source.control.value.trim(),
    event_type: eventType.control.value.trim(),
    recipient: recipient.control.value.trim(),
    since: toIso(since.control.value),
    until: toIso(until.control.value),
  });
  let current = filters();

  const columns = [
    { label: 'Received', cell: (m) => time(m.received_at) },
    { label: 'Message', cell: (m) => h('a', { href: `#/messages/${encodeURIComponent(m.id)}`, class: 'mono' }, m.id) },
    { label: 'Source', cell: (m) => m.source ?? 'published' },
    { label: 'Event type', cell: (m) => m.event_type ?? '—' },
    { label: 'Recipient', cell: (m) => m.recipient ?? '—' },
    { label: 'Deliveries', cell: (m) => m.deliveries.length
      ? m.deliveries.map((d) => h('div', {}, pill(d.status), ' ', d.destination))
      : h('span', { class: 'muted' }, 'no destination matched') },
  ];
  const listing = pagedList({
    label: 'Messages',
    load: (after) => get(`/v1/messages${qs({ ...current, limit: 50, after })}`),
    render: (items) => {
      const wrap = h('div', { class: 'table-wrap' });
      if (!items.length) return put(wrap, h('p', { class: 'empty' }, 'No messages match.'));
      return put(wrap, h('table', {},
        h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.label)))),
        h('tbody', {}, items.map((m) => h('tr', { 'data-id': m.id }, columns.map((c) => h('td', {}, c.cell(m))))))));
    },
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    current = filters();
    ctx.setParams(current);
    listing.reset();
  });
  form.addEventListener('reset', () => {
    setTimeout(() => {
      current = filters();
      ctx.setParams({});
      listing.reset();
    });
  });
  put(root, h('h1', { tabindex: '-1' }, 'Messages'), form, listing);
}

/** The body as the operator should read it: JSON pretty-printed, other types as raw text. */
function bodyText(m) {
  if ('payload' in m) return JSON.stringify(m.payload, null, 2);
  if (m.body_base64 !== undefined) {
    const bin = atob(m.body_base64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  }
  return '(no body)';
}

function attemptItem(a) {
  const ok = a.status_code >= 200 && a.status_code < 300;
  return h('li', { class: ok ? 'ok' : 'fail' },
    h('div', {}, time(a.at), ' · ', a.status_code ? h('strong', {}, `HTTP ${a.status_code}`) : h('strong', {}, 'no response'),
      ' · ', `${a.duration_ms} ms`),
    a.error && h('div', { class: 'error' }, a.error));
}

async function detail(root, ctx, id) {
  put(root, h('p', {}, h('a', { href: '#/messages' }, '← Messages')), h('h1', { tabindex: '-1' }, 'Message'), h('p', { class: 'muted' }, 'Loading…'));
  let m;
  try {
    m = await get(`/v1/messages/${seg(id)}`);
  } catch (e) {
    put(root, h('p', {}, h('a', { href: '#/messages' }, '← Messages')), h('h1', { tabindex: '-1' }, 'Message'), errorBlock(e));
    return;
  }
  const resend = (destination) => async () => {
    const r = await api('POST', `/v1/messages/${seg(m.id)}/resend`, destination ? { destination } : {});
    return `Re-queued ${r?.requeued ?? 0} delivery(ies).`;
  };
  const facts = h('dl', { class: 'kv' }, [
    ['ID', h('span', { class: 'mono' }, m.id)], ['Received', time(m.received_at)], ['Source', m.source ?? 'published through the API'],
    ['External id', m.external_id ?? '—'], ['Event type', m.event_type ?? '—'], ['Content type', m.content_type ?? '—'],
    ['Recipient', m.recipient ?? '—'], ['Channel', m.channel ?? '—'], ['Category', m.category ?? '—'], ['Size', `${m.body_bytes} bytes`],
  ].flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  const body = h('pre', { class: 'body', tabindex: '0', 'aria-label': 'Message body' });
  body.textContent = bodyText(m);
  const deliveries = m.deliveries.map((d) => h('div', { class: 'delivery', 'data-destination': d.destination },
    h('h3', {}, d.destination, ' ', pill(d.status)),
    d.next_attempt_at && h('p', { class: 'muted' }, 'Next attempt: ', time(d.next_attempt_at)),
    d.reason && h('p', { class: 'muted' }, `Reason: ${d.reason}`),
    d.attempts.length
      ? h('ol', { class: 'timeline', 'aria-label': `Attempts to ${d.destination}` }, d.attempts.map(attemptItem))
      : h('p', { class: 'muted' }, 'No attempt yet.'),
    ctx.can('write') && action(`Resend to ${d.destination}`, resend(d.destination))));
  put(root,
    h('p', {}, h('a', { href: '#/messages' }, '← Messages')),
    h('h1', { tabindex: '-1' }, `Message ${m.event_type ?? ''}`.trim()),
    h('div', { class: 'grid2' },
      section('Details', facts, ctx.can('write') && h('div', { class: 'actions' }, action('Resend to all matched destinations', resend(null), { cls: 'primary' }))),
      section('Body', body)),
    section('Deliveries', deliveries.length ? deliveries : h('p', { class: 'muted' }, 'No destination matched this message.')));
}
