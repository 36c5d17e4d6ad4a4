// Destinations: circuit state and queue depth; create, edit, enable/disable, rotate the signing
// secret (shown once), delete. An API refusal of a field (`destination_not_allowed` for a URL the
// SSRF guard refuses, `invalid_request` naming a field) is shown at that field.

import { api, get, seg } from '../api.js';
import {
  action, copyButton, errorBlock, field, h, num, pill, put, section, select, statusLine, table, time,
} from '../ui.js';

const CHANNELS = ['webhook', 'email', 'sms', 'push', 'in_app'];

export function render(root, ctx) {
  return ctx.rest[0] ? detail(root, ctx, ctx.rest[0]) : list(root, ctx);
}

/** Queue depth per destination, from the one place that has them all: /metrics. */
async function queueDepths() {
  try {
    const text = await (await fetch('/metrics', { cache: 'no-store' })).text();
    const out = {};
    for (const [, name, n] of text.matchAll(/^herald_queue_depth\{destination="([^"]*)"\}\s+(\d+)/gm)) out[name] = Number(n);
    return out;
  } catch {
    return {};
  }
}

const circuit = (c) => h('span', {}, pill(c.state), c.consecutive_failures ? ` ${c.consecutive_failures} failures` : '');
const csv = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);

/**
 * The create / edit form. `d` is the destination being edited, or null to create one.
 * `submit(body)` sends it; field errors from the API land at their field.
 */
function destinationForm(d, submit) {
  const f = {
    name: d ? null : field('Name', h('input', { required: true, spellcheck: 'false', autocomplete: 'off' }), { hint: 'a-z, 0-9, _ and -' }),
    url: field('URL', h('input', { type: 'url', required: true, value: d?.url ?? '', spellcheck: 'false' }), { cls: 'wide' }),
    sources: field('Sources', h('input', { value: (d?.sources ?? ['*']).join(', '), spellcheck: 'false' }), { hint: 'comma-separated; * for every source and published messages' }),
    event_types: field('Event types', h('input', { value: (d?.event_types ?? []).join(', '), spellcheck: 'false' }), { hint: 'comma-separated globs; empty for all' }),
    channel: field('Channel', select(CHANNELS, d?.channel ?? 'webhook')),
    rate_limit_per_sec: field('Rate limit per second', h('input', { type: 'number', min: '1', value: d?.rate_limit_per_sec ?? '' }), { hint: 'empty for none' }),
  };
  const status = statusLine();
  const save = h('button', { type: 'submit', class: 'primary' }, d ? 'Save changes' : 'Create destination');
  const form = h('form', { class: 'form', novalidate: true, 'aria-label': d ? `Edit ${d.name}` : 'New destination' },
    Object.values(f).filter(Boolean).map((x) => x.el), h('div', { class: 'actions' }, save, status));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    for (const x of Object.values(f)) if (x) x.error.textContent = '';
    const rate = f.rate_limit_per_sec.control.value.trim();
    const body = {
      url: f.url.control.value.trim(),
      sources: csv(f.sources.control.value),
      event_types: csv(f.event_types.control.value),
      channel: f.channel.control.value,
      rate_limit_per_sec: rate === '' ? null : Number(rate),
    };
    if (f.name) {
      body.name = f.name.control.value.trim();
      if (body.rate_limit_per_sec === null) delete body.rate_limit_per_sec;
    }
    save.disabled = true;
    status.busy();
    try {
      await submit(body);
      status.ok(d ? 'Saved.' : 'Created.');
    } catch (e) {
      // `url: …`, `sources[0]: …`: the API names the field first.
      const name = e.code === 'destination_not_allowed' ? 'url' : /^([a-z_]+)/.exec(e.message)?.[1];
      const target = f[name];
      if (target && (e.code === 'destination_not_allowed' || e.code === 'invalid_request')) {
        target.error.textContent = `${e.code}: ${e.message}`;
        target.control.focus();
        status.error(`${e.status} ${e.code}: see the ${name.replace(/_/g, ' ')} field.`);
      } else {
        status.error(e);
      }
    } finally {
      save.disabled = false;
    }
  });
  return form;
}

async function list(root, ctx) {
  put(root, h('h1', { tabindex: '-1' }, 'Destinations'), h('p', { class: 'muted' }, 'Loading…'));
  let data;
  let depths;
  try {
    [data, depths] = await Promise.all([get('/v1/destinations'), queueDepths()]);
  } catch (e) {
    put(root, h('h1', { tabindex: '-1' }, 'Destinations'), errorBlock(e));
    return;
  }
  const write = ctx.can('write');
  const columns = [
    { label: 'Name', cell: (d) => h('a', { href: `#/destinations/${encodeURIComponent(d.name)}` }, d.name) },
    { label: 'URL', cell: (d) => h('span', { class: 'mono' }, d.url) },
    { label: 'Channel', cell: (d) => d.channel },
    { label: 'State', cell: (d) => (d.enabled ? pill('enabled') : pill('disabled')) },
    { label: 'Circuit', cell: (d) => circuit(d.circuit) },
    { label: 'Queued', num: true, cell: (d) => num(depths[d.name]) },
  ];
  if (write) {
    columns.push({
      label: 'Actions',
      cell: (d) => action(d.enabled ? 'Disable' : 'Enable', async () => {
        await api('PATCH', `/v1/destinations/${seg(d.name)}`, { enabled: !d.enabled });
        list(root, ctx);
      }),
    });
  }
  put(root,
    h('h1', { tabindex: '-1' }, 'Destinations'),
    table(columns, data.items, { caption: 'Every destination', empty: 'No destinations yet.' }),
    write && section('New destination', destinationForm(null, async (body) => {
      const created = await api('POST', '/v1/destinations', body);
      ctx.go('destinations', [created.name]);
    })));
}

async function detail(root, ctx, name) {
  const back = h('p', {}, h('a', { href: '#/destinations' }, '← Destinations'));
  let d;
  try {
    d = await get(`/v1/destinations/${seg(name)}`);
  } catch (e) {
    put(root, back, h('h1', { tabindex: '-1' }, name), errorBlock(e));
    return;
  }
  const write = ctx.can('write');
  const facts = h('dl', { class: 'kv' }, [
    ['URL', h('span', { class: 'mono' }, d.url)], ['State', d.enabled ? pill('enabled') : pill('disabled')],
    ['Disabled because', d.disabled_reason ?? '—'], ['Circuit', circuit(d.circuit)], ['Circuit opened', time(d.circuit.opened_at)],
    ['Queued deliveries', num(d.queued)], ['Channel', d.channel], ['Sources', d.sources.join(', ')],
    ['Event types', d.event_types.length ? d.event_types.join(', ') : 'all'], ['Rate limit', d.rate_limit_per_sec ? `${d.rate_limit_per_sec}/s` : 'none'],
    ['From config.toml', d.from_config ? 'yes' : 'no'], ['Created', time(d.created_at)], ['Updated', time(d.updated_at)],
  ].flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));

  const secretBox = h('div', { 'aria-live': 'polite' });
  const grace = field('Old secret keeps signing for (seconds)', h('input', { type: 'number', min: '0', value: '86400' }));
  const rotate = section('Signing secret',
    h('p', { class: 'muted' }, 'The secret is never shown again after rotation: copy it into the receiver now.'),
    grace.el,
    action('Rotate secret', async () => {
      const r = await api('POST', `/v1/destinations/${seg(d.name)}/rotate-secret`, { grace_secs: Number(grace.control.value || 0) });
      const code = h('code', { id: 'new-secret' }, r.secret);
      put(secretBox, h('div', { class: 'secret' }, h('span', {}, 'New secret:'), code, copyButton(r.secret)),
        h('p', { class: 'muted' }, 'The previous secret keeps signing until ', time(r.previous_secret_valid_until), '.'));
      return 'Rotated.';
    }, { cls: 'primary', confirm: { title: `Rotate the secret of ${d.name}?`, message: 'A new signing secret is made; the old one keeps signing during the grace period.', confirmLabel: 'Rotate', danger: false } }),
    secretBox);

  put(root, back, h('h1', { tabindex: '-1' }, d.name),
    h('div', { class: 'grid2' }, section('Details', facts,
      write && h('div', { class: 'actions' },
        action(d.enabled ? 'Disable' : 'Enable', async () => {
          await api('PATCH', `/v1/destinations/${seg(d.name)}`, { enabled: !d.enabled });
          detail(root, ctx, name);
        }),
        action('Delete', async () => {
          await api('DELETE', `/v1/destinations/${seg(d.name)}`);
          ctx.go('destinations');
        }, { cls: 'danger', confirm: { title: `Delete ${d.name}?`, message: 'Its pending deliveries will not be sent.', confirmLabel: 'Delete', typed: d.name } }))),
    write && rotate),
    write && section('Edit', destinationForm(d, async (body) => {
      await api('PATCH', `/v1/destinations/${seg(d.name)}`, body);
    })));
}
