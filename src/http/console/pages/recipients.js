// Recipients: one recipient's suppressions, preferences (editable) and messages; GDPR export
// (downloaded as JSON) and erasure (typed confirmation).

import { api, get, qs, seg } from '../api.js';
import {
  action, download, errorBlock, field, h, pagedList, pill, put, section, select, statusLine, table, time,
} from '../ui.js';

const CHANNELS = ['email', 'sms', 'push', 'in_app', 'webhook'];
const REASONS = ['user_request', 'bounce', 'complaint', 'admin_action'];

export function render(root, ctx) {
  const who = field('Recipient', h('input', { value: ctx.rest[0] ?? '', spellcheck: 'false', autocomplete: 'off', required: true }), { cls: 'wide', hint: 'an email address, phone number or user id, as sent in messages' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Find a recipient' }, who.el,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Look up')));
  const out = h('div');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const r = who.control.value.trim();
    if (r) ctx.go('recipients', [r]);
  });
  put(root, h('h1', { tabindex: '-1' }, 'Recipients'), form, out);
  if (ctx.rest[0]) show(out, ctx, ctx.rest[0]);
}

async function show(out, ctx, recipient) {
  const write = ctx.can('write');
  const admin = ctx.can('admin');
  const supp = h('div');
  const prefs = h('div');
  const loadSupp = async () => {
    try {
      const data = await get(`/v1/suppressions${qs({ recipient, limit: 100 })}`);
      put(supp, table([
        { label: 'Channel', cell: (s) => s.channel },
        { label: 'Reason', cell: (s) => pill(s.reason, 'suppressed') },
        { label: 'Expires', cell: (s) => time(s.expires_at) },
        { label: 'Note', cell: (s) => s.note ?? '—' },
        { label: 'By', cell: (s) => s.created_by },
        write && { label: 'Actions', cell: (s) => action('Remove', async () => {
          await api('DELETE', `/v1/suppressions/${seg(s.recipient)}/${seg(s.channel)}`);
          loadSupp();
        }, { cls: 'danger', confirm: { title: 'Remove this suppression?', message: `${s.recipient} may be sent ${s.channel} messages again.`, confirmLabel: 'Remove' } }) },
      ].filter(Boolean), data.items, { empty: 'No suppressions.' }));
    } catch (e) {
      put(supp, errorBlock(e));
    }
  };
  const addForm = () => {
    const channel = field('Channel', select([['*', '* (all)'], ...CHANNELS.map((c) => [c, c])], 'email'));
    const reason = field('Reason', select(REASONS, 'admin_action'));
    const note = field('Note', h('input'));
    const status = statusLine();
    const form = h('form', { class: 'filters', 'aria-label': 'Add a suppression' }, channel.el, reason.el, note.el,
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Suppress'), status));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        await api('POST', '/v1/suppressions', { recipient, channel: channel.control.value, reason: reason.control.value, note: note.control.value || undefined });
        status.ok('Suppressed.');
        loadSupp();
      } catch (e) {
        status.error(e);
      }
    });
    return form;
  };
  const loadPrefs = async () => {
    let p;
    try {
      p = await get(`/v1/preferences/${seg(recipient)}`);
    } catch (e) {
      put(prefs, errorBlock(e));
      return;
    }
    const boxes = CHANNELS.map((c) => field(`${c} allowed`, h('input', { type: 'checkbox', checked: p.channels[c] !== false, disabled: !write })));
    const cats = field('Categories (JSON)', h('textarea', { spellcheck: 'false', readonly: !write }), { hint: '{"marketing": {"email": false}}: false opts out of that category on that channel' });
    cats.control.value = JSON.stringify(p.categories ?? {}, null, 2);
    const status = statusLine();
    const form = h('form', { class: 'form', 'aria-label': 'Preferences' }, h('div', { class: 'filters' }, boxes.map((b) => b.el)), cats.el,
      write && h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save preferences'), status));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      let categories;
      try {
        categories = JSON.parse(cats.control.value || '{}');
      } catch (e) {
        cats.error.textContent = `Not JSON: ${e.message}`;
        return;
      }
      cats.error.textContent = '';
      const channels = Object.fromEntries(CHANNELS.map((c, i) => [c, boxes[i].control.checked]));
      try {
        await api('PUT', `/v1/preferences/${seg(recipient)}`, { channels, categories });
        status.ok('Saved.');
      } catch (e) {
        status.error(e);
      }
    });
    put(prefs, form);
  };
  const messages = pagedList({
    label: 'Messages of this recipient',
    load: (after) => get(`/v1/messages${qs({ recipient, limit: 20, after })}`),
    render: (items) => table([
      { label: 'Received', cell: (m) => time(m.received_at) },
      { label: 'Message', cell: (m) => h('a', { class: 'mono', href: `#/messages/${encodeURIComponent(m.id)}` }, m.id) },
      { label: 'Event type', cell: (m) => m.event_type ?? '—' },
      { label: 'Deliveries', cell: (m) => m.deliveries.map((d) => h('div', {}, pill(d.status), ' ', d.destination)) },
    ], items, { empty: 'No messages.' }),
  });
  const gdpr = admin && section('Data subject (GDPR)',
    h('p', { class: 'muted' }, 'Export downloads everything herald holds about this recipient. Erasure deletes their messages and preferences, pseudonymises their audit entries and keeps their opt-outs under a pseudonym.'),
    h('div', { class: 'actions' },
      action('Export (JSON)', async () => {
        const data = await get(`/v1/subjects/${seg(recipient)}/export`);
        download(`herald-export-${recipient.replace(/[^a-zA-Z0-9@._-]/g, '_')}.json`, data);
        return 'Downloaded.';
      }),
      action('Erase', async () => {
        await api('DELETE', `/v1/subjects/${seg(recipient)}`);
        return 'Erased.';
      }, { cls: 'danger', confirm: { title: `Erase ${recipient}?`, message: 'This cannot be undone.', confirmLabel: 'Erase', typed: recipient } })));
  put(out, h('h2', {}, recipient),
    section('Suppressions', supp, write && addForm()),
    section('Preferences', prefs),
    section('Messages', messages),
    gdpr);
  loadSupp();
  loadPrefs();
}
