// DOM helpers. Every value reaches the page as a Text node or an attribute: this file (and the
// whole console) never parses markup from data, so a message body holding `<script>` stays text.

/** `h('button', {class: 'primary', onclick: fn}, 'Save')`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
    else if (k === 'value' || k === 'checked') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces `el`'s children. */
export function put(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let ids = 0;
export const uid = (p = 'f') => `${p}-${++ids}`;

/** RFC 3339 from the API, shown in UTC to the second (the API's own clock). */
export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return h('time', { datetime: iso, title: iso }, d.toISOString().slice(0, 19).replace('T', ' '));
}

export const pill = (text, cls = text) => h('span', { class: `pill ${cls ?? ''}` }, text ?? '—');

export function num(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return Number(n).toLocaleString('en', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function bytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  return `${(n / 1024 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** A live status line next to an action: `.ok(text)`, `.error(err)`, `.busy()`, `.clear()`. */
export function statusLine() {
  const el = h('span', { class: 'status', role: 'status', 'aria-live': 'polite' });
  el.busy = () => put(el, 'Working…') && (el.className = 'status muted');
  el.ok = (text) => put(el, text) && (el.className = 'status success');
  el.error = (e) => put(el, String(e)) && (el.className = 'status error');
  el.clear = () => put(el) && (el.className = 'status');
  return el;
}

/**
 * A button that runs `fn` and shows its outcome (or the API's error) right beside it.
 * `fn` may return a message to show on success.
 */
export function action(label, fn, { cls = '', confirm, id } = {}) {
  const status = statusLine();
  const button = h('button', { type: 'button', class: cls, id });
  button.textContent = label;
  button.addEventListener('click', async () => {
    if (confirm && !(await confirmDialog(confirm))) return;
    button.disabled = true;
    status.busy();
    try {
      const msg = await fn();
      status.ok(typeof msg === 'string' ? msg : 'Done.');
    } catch (e) {
      status.error(e);
    } finally {
      button.disabled = false;
    }
  });
  return h('span', { class: 'actions' }, button, status);
}

/** A modal confirmation. `typed`: the text the operator must type to enable the button. */
export function confirmDialog({ title, message, confirmLabel = 'Confirm', typed, danger = true }) {
  return new Promise((resolve) => {
    const titleId = uid('dlg');
    const input = typed ? h('input', { id: uid('confirm'), autocomplete: 'off', spellcheck: 'false' }) : null;
    const ok = h('button', { type: 'submit', class: danger ? 'danger primary' : 'primary', value: 'ok' }, confirmLabel);
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const form = h('form', { method: 'dialog' },
      h('h2', { id: titleId }, title),
      h('p', {}, message),
      typed && h('div', { class: 'field' }, h('label', { for: input.id }, `Type ${typed} to confirm`), input),
      h('div', { class: 'actions' }, ok, cancel));
    const dialog = h('dialog', { 'aria-labelledby': titleId }, form);
    if (typed) {
      ok.disabled = true;
      input.addEventListener('input', () => { ok.disabled = input.value !== typed; });
    }
    let answer = false;
    form.addEventListener('submit', (ev) => {
      if (typed && input.value !== typed) {
        ev.preventDefault();
        return;
      }
      answer = true;
    });
    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    (input ?? cancel).focus();
  });
}

/** A labelled control: `{el, control, error}`; `error` is where a field's API error goes. */
export function field(label, control, { hint, cls = '' } = {}) {
  control.id ||= uid();
  const error = h('span', { class: 'field-error', id: uid('err'), role: 'alert' });
  const hintEl = hint ? h('span', { class: 'muted', id: uid('hint') }, hint) : null;
  control.setAttribute('aria-describedby', [error.id, hintEl?.id].filter(Boolean).join(' '));
  const el = control.type === 'checkbox'
    ? h('div', { class: `field check ${cls}` }, control, h('label', { for: control.id }, label), error)
    : h('div', { class: `field ${cls}` }, h('label', { for: control.id }, label), control, hintEl, error);
  return { el, control, error };
}

export function select(options, value) {
  const s = h('select');
  for (const o of options) {
    const [v, text] = Array.isArray(o) ? o : [o, o || 'any'];
    s.append(h('option', { value: v }, text));
  }
  s.value = value ?? '';
  return s;
}

export const errorBlock = (e) => h('p', { class: 'error', role: 'alert' }, String(e));

/**
 * A table: `columns` are `{label, cell(row) → node|string, num?}`. `caption` names it for
 * screen readers.
 */
export function table(columns, rows, { caption, empty = 'Nothing here.' } = {}) {
  if (!rows.length) return h('div', { class: 'table-wrap' }, h('p', { class: 'empty' }, empty));
  return h('div', { class: 'table-wrap' },
    h('table', {},
      caption && h('caption', { class: 'muted' }, caption),
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : '' }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, columns.map((c) => h('td', { class: c.num ? 'num' : '' }, c.cell(r))))))));
}

/**
 * A cursor-paged list: `load(after)` answers `{items, next}` for one page; Next follows
 * `next`, Previous returns to the cursor before. Only one page is ever held.
 */
export function pagedList({ load, render, label }) {
  const root = h('div', { class: 'paged' });
  const body = h('div', { class: 'paged-body' });
  const prev = h('button', { type: 'button' }, 'Previous');
  const next = h('button', { type: 'button' }, 'Next');
  const where = h('span', { class: 'muted', role: 'status', 'aria-live': 'polite' });
  // The pager sits above the rows, and a page's rows stay until the next ones arrive: what
  // loads never pushes the controls around (no layout shift under the operator's pointer).
  const pager = h('nav', { class: 'pager', 'aria-label': `${label} pages` }, prev, next, where);
  root.append(pager, body);
  const cursors = [undefined];
  let page = 0;
  let nextCursor = null;
  let generation = 0;
  async function show() {
    const mine = ++generation;
    prev.disabled = next.disabled = true;
    put(where, 'Loading…');
    if (!body.firstChild) put(body, h('p', { class: 'muted' }, 'Loading…'));
    try {
      const data = await load(cursors[page]);
      if (mine !== generation) return;
      nextCursor = data.next ?? null;
      put(body, render(data.items));
      if (!data.items.length && nextCursor) {
        body.append(h('p', { class: 'muted' }, 'No matches in the part scanned so far; Next searches further back.'));
      }
    } catch (e) {
      if (mine !== generation) return;
      put(body, errorBlock(e));
    }
    prev.disabled = page === 0;
    next.disabled = !nextCursor;
    put(where, `Page ${page + 1}`);
  }
  prev.addEventListener('click', () => { if (page > 0) { page -= 1; show(); } });
  next.addEventListener('click', () => {
    if (!nextCursor) return;
    cursors[page + 1] = nextCursor;
    page += 1;
    show();
  });
  root.reload = () => show();
  root.reset = () => { cursors.length = 1; page = 0; return show(); };
  show();
  return root;
}

/** A button that copies `text` to the clipboard. */
export function copyButton(text, label = 'Copy') {
  const status = statusLine();
  const b = h('button', { type: 'button' }, label);
  b.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      status.ok('Copied.');
    } catch {
      status.error('The browser refused the clipboard: select the text and copy it by hand.');
    }
  });
  return h('span', { class: 'actions' }, b, status);
}

/** Offers `data` as a JSON file download. */
export function download(filename, data) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' }));
  const a = h('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export const section = (title, ...children) => h('section', { class: 'panel' }, h('h2', {}, title), ...children);
