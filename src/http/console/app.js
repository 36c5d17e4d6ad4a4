// The console shell: sign-in, navigation (a hash router, one module per page, loaded on first
// visit), the connection banner, and the page's own web vitals.

import { api, can, onConnection, session, setToken, waitForHerald } from './api.js';
import { errorBlock, h, put } from './ui.js';
import { flushVitals, recent, setPage, startVitals } from './vitals.js';

startVitals();

const PAGES = {
  overview: 'Overview',
  messages: 'Messages',
  destinations: 'Destinations',
  dlq: 'DLQ',
  recipients: 'Recipients',
  audit: 'Audit trail',
  alerts: 'Alerts',
  performance: 'Performance',
  storage: 'Storage',
};

const $ = (id) => document.getElementById(id);
const pageEl = $('page');
const nav = $('nav');
const menu = $('menu');
const banner = $('conn');
const narrow = matchMedia('(max-width: 760px)');

/** `#/messages/msg_…?status=dead` → `{page, rest, params}`. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map((p) => decodeURIComponent(p));
  return { page: parts[0] || 'overview', rest: parts.slice(1), params: new URLSearchParams(query) };
}

function hashFor(page, rest = [], params = {}) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null)).toString();
  return `#/${[page, ...rest].map(encodeURIComponent).join('/')}${q ? `?${q}` : ''}`;
}

/** What every page's `render(root, ctx)` gets. */
const ctx = {
  go: (page, rest, params) => { location.hash = hashFor(page, rest, params); },
  /** Records a page's filters in the address without re-rendering (so links can be shared). */
  setParams: (params) => {
    const r = parseHash();
    history.replaceState(null, '', hashFor(r.page, r.rest, params));
  },
  can,
};

let generation = 0;
const failedLoads = {};
let cleanup = null;

async function route({ focus = false } = {}) {
  if (!session.who) return;
  const r = parseHash();
  const title = PAGES[r.page];
  for (const a of nav.querySelectorAll('a')) {
    if (a.getAttribute('href') === `#/${r.page}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (narrow.matches) collapseNav(true);
  cleanup?.();
  cleanup = null;
  const mine = ++generation;
  if (!title) {
    put(pageEl, h('h1', { tabindex: '-1' }, 'No such page'), h('p', {}, h('a', { href: '#/overview' }, 'Go to the overview')));
    return;
  }
  setPage(r.page);
  document.title = `${title} · herald console`;
  let mod;
  try {
    // A module that failed to load stays failed in this document: after a failure, ask for it
    // under a new URL (its own imports, api.js and ui.js, are still the shared instances).
    const retry = failedLoads[r.page] ? `?retry=${failedLoads[r.page]}` : '';
    mod = await import(`./pages/${r.page}.js${retry}`);
  } catch (e) {
    failedLoads[r.page] = (failedLoads[r.page] ?? 0) + 1;
    put(pageEl, errorBlock(`Could not load the page: ${e.message}`));
    // Most likely herald is unreachable: if so, the banner shows it and the page is loaded
    // again once herald answers.
    fetch('/healthz', { cache: 'no-store' }).catch(() => waitForHerald());
    return;
  }
  if (mine !== generation) return;
  const root = h('div', { class: `page page-${r.page}` });
  put(pageEl, root);
  try {
    cleanup = (await mod.render(root, { ...ctx, ...r })) ?? null;
  } catch (e) {
    if (mine === generation) put(root, h('h1', { tabindex: '-1' }, title), errorBlock(e));
  }
  if (focus && mine === generation) root.querySelector('h1')?.focus();
}

function collapseNav(collapsed) {
  nav.classList.toggle('collapsed', collapsed);
  menu.setAttribute('aria-expanded', String(!collapsed));
}

function showSignin(message) {
  cleanup?.();
  cleanup = null;
  session.who = null;
  put(pageEl);
  for (const id of ['nav', 'menu', 'who']) $(id).hidden = true;
  $('signin').hidden = false;
  const err = $('signin-error');
  err.hidden = !message;
  err.textContent = message ?? '';
  $('token').value = '';
  $('token').focus();
}

function showShell() {
  $('signin').hidden = true;
  for (const id of ['nav', 'menu', 'who']) $(id).hidden = false;
  $('who-name').textContent = `${session.who.name} (${session.who.scopes.join(', ')})`;
  collapseNav(narrow.matches);
  if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/overview');
  route();
  import('./pages/overview.js').then((m) => m.startSampler());
}

async function signIn(token) {
  session.who = await api('GET', '/v1/whoami', undefined, { token });
  setToken(token);
  showShell();
}

$('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const token = $('token').value.trim();
  const err = $('signin-error');
  if (!token) {
    err.hidden = false;
    err.textContent = 'Enter a token.';
    return;
  }
  try {
    await signIn(token);
  } catch (e) {
    err.hidden = false;
    err.textContent = e.status === 401
      ? 'herald refused that token (401 unauthorized). Check it and try again.'
      : `Could not sign in: ${e}`;
    $('token').focus();
  }
});

$('signout').addEventListener('click', () => {
  setToken(null);
  showSignin('Signed out.');
});

addEventListener('herald:unauthorized', () => {
  setToken(null);
  showSignin('herald no longer accepts this token (401 unauthorized). Sign in again.');
});

menu.addEventListener('click', () => collapseNav(!nav.classList.contains('collapsed')));
narrow.addEventListener('change', () => collapseNav(narrow.matches));
$('skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  (pageEl.querySelector('h1') ?? $('main')).focus();
});
addEventListener('hashchange', () => route({ focus: true }));

let hideBanner = null;
onConnection((state) => {
  clearTimeout(hideBanner);
  banner.hidden = false;
  if (state === 'down') {
    banner.className = 'banner down';
    banner.textContent = 'Lost the connection to herald. Retrying…';
  } else {
    banner.className = 'banner';
    banner.textContent = 'Connection to herald restored.';
    hideBanner = setTimeout(() => { banner.hidden = true; }, 4000);
    route();
  }
});

// For the browser tests: send the queued vitals now instead of waiting for the tab to hide.
window.heraldConsole = { flushVitals, recentVitals: recent };

if (session.token) {
  signIn(session.token).catch((e) => {
    setToken(null);
    showSignin(e.status === 401 ? 'herald no longer accepts this token (401 unauthorized). Sign in again.' : `Could not sign in: ${e}`);
  });
} else {
  showSignin();
}
