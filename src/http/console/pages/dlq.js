// DLQ: dead deliveries by destination; inspect one, retry one, retry the selected or all,
// discard.

import { api, get, qs, seg } from '../api.js';
import { action, errorBlock, field, h, pagedList, put, section, select, statusLine, time } from '../ui.js';

export function render(root, ctx) {
  return ctx.rest[0] ? detail(root, ctx, ctx.rest[0]) : list(root, ctx);
}

const lastAttempt = (l) => {
  const a = l.attempts[l.attempts.length - 1];
  if (!a) return '—';
  return `${a.status_code ? `HTTP ${a.status_code}` : 'no response'}${a.error ? ` · ${a.error}` : ''}`;
};

async function list(root, ctx) {
  const write = ctx.can('write');
  let names = [];
  try {
    names = (await get('/v1/destinations')).items.map((d) => d.name);
  } catch (e) {
    root.append(errorBlock(e));
  }
  const dest = field('Destination', select(['', ...names].map((n) => [n, n || 'all destinations']), ctx.params.get('destination') ?? ''));
  const selected = new Set();
  const bulkStatus = statusLine();
  const retrySelected = h('button', { type: 'button', disabled: true }, 'Retry selected');
  const updateSelected = () => {
    retrySelected.disabled = !selected.size;
    retrySelected.textContent = `Retry selected (${selected.size})`;
  };
  const listing = pagedList({
    label: 'Dead deliveries',
    load: (after) => {
      selected.clear();
      updateSelected();
      return get(`/v1/dlq${qs({ destination: dest.control.value, limit: 50, after })}`);
    },
    render: (items) => {
      if (!items.length) return h('div', { class: 'table-wrap' }, h('p', { class: 'empty' }, 'The DLQ is empty.'));
      return h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, write && h('th', { scope: 'col' }, h('span', { class: 'muted' }, 'Select')),
          ['Died', 'Destination', 'Message', 'Event type', 'Attempts', 'Last attempt', write && 'Actions'].filter(Boolean).map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, items.map((l) => {
          const box = write && h('input', { type: 'checkbox', 'aria-label': `Select ${l.id}` });
          box?.addEventListener('change', () => {
            if (box.checked) selected.add(l.id);
            else selected.delete(l.id);
            updateSelected();
          });
          return h('tr', { 'data-id': l.id },
            write && h('td', {}, box),
            h('td', {}, time(l.dead_at)),
            h('td', {}, l.destination),
            h('td', {}, h('a', { class: 'mono', href: `#/dlq/${encodeURIComponent(l.id)}` }, l.message_id)),
            h('td', {}, l.event_type ?? '—'),
            h('td', { class: 'num' }, l.attempts.length),
            h('td', {}, lastAttempt(l)),
            write && h('td', {}, h('div', { class: 'actions' },
              action('Retry', async () => {
                await api('POST', `/v1/dlq/${seg(l.id)}/retry`);
                return 'Re-queued.';
              }),
              action('Discard', async () => {
                await api('DELETE', `/v1/dlq/${seg(l.id)}`);
                return 'Discarded.';
              }, { cls: 'danger', confirm: { title: 'Discard this dead delivery?', message: `${l.message_id} to ${l.destination} will never be delivered.`, confirmLabel: 'Discard' } }))));
        }))));
    },
  });
  dest.control.addEventListener('change', () => {
    ctx.setParams({ destination: dest.control.value });
    listing.reset();
  });
  retrySelected.addEventListener('click', async () => {
    retrySelected.disabled = true;
    bulkStatus.busy();
    let done = 0;
    const failed = [];
    for (const id of selected) {
      try {
        await api('POST', `/v1/dlq/${seg(id)}/retry`);
        done += 1;
      } catch (e) {
        failed.push(`${id}: ${e}`);
      }
    }
    if (failed.length) bulkStatus.error(`Re-queued ${done}; failed: ${failed.join('; ')}`);
    else bulkStatus.ok(`Re-queued ${done}.`);
    listing.reset();
  });
  const retryAll = action('Retry all', async () => {
    const r = await api('POST', '/v1/dlq/retry', dest.control.value ? { destination: dest.control.value } : {});
    listing.reset();
    return `Re-queued ${r.requeued}.`;
  }, { confirm: { title: 'Retry every dead delivery?', message: 'Every dead delivery (of the chosen destination) is re-queued with fresh attempts.', confirmLabel: 'Retry all', danger: false } });
  put(root, h('h1', { tabindex: '-1' }, 'Dead-letter queue'),
    h('div', { class: 'filters' }, dest.el, write && h('div', { class: 'actions' }, retrySelected, bulkStatus, retryAll)),
    listing);
}

async function detail(root, ctx, id) {
  const back = h('p', {}, h('a', { href: '#/dlq' }, '← DLQ'));
  let l;
  try {
    l = await get(`/v1/dlq/${seg(id)}`);
  } catch (e) {
    put(root, back, h('h1', { tabindex: '-1' }, 'Dead delivery'), errorBlock(e));
    return;
  }
  const facts = h('dl', { class: 'kv' }, [
    ['Message', h('a', { class: 'mono', href: `#/messages/${encodeURIComponent(l.message_id)}` }, l.message_id)],
    ['Destination', l.destination], ['Died', time(l.dead_at)], ['Reason', l.reason ?? '—'],
    ['Source', l.source ?? 'published'], ['Event type', l.event_type ?? '—'],
  ].flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  const attempts = h('ol', { class: 'timeline', 'aria-label': 'Attempts' }, l.attempts.map((a) => h('li', { class: 'fail' },
    h('div', {}, time(a.at), ' · ', a.status_code ? `HTTP ${a.status_code}` : 'no response', ' · ', `${a.duration_ms} ms`),
    a.error && h('div', { class: 'error' }, a.error))));
  put(root, back, h('h1', { tabindex: '-1' }, 'Dead delivery'),
    section('Details', facts, ctx.can('write') && h('div', { class: 'actions' },
      action('Retry', async () => {
        await api('POST', `/v1/dlq/${seg(l.id)}/retry`);
        return 'Re-queued.';
      }, { cls: 'primary' }),
      action('Discard', async () => {
        await api('DELETE', `/v1/dlq/${seg(l.id)}`);
        ctx.go('dlq');
      }, { cls: 'danger', confirm: { title: 'Discard this dead delivery?', message: 'It will never be delivered.', confirmLabel: 'Discard' } }))),
    section('Attempts', attempts));
}
