// Talking to herald's API: the bearer token, error shapes, and a lost connection.
//
// The token lives in sessionStorage: this tab only, gone when it closes, and sent only by this
// code as `Authorization: Bearer …`. A browser never attaches such a header to a cross-site
// request by itself (it would a cookie), so there is no CSRF to defend against.

const TOKEN_KEY = 'herald.token';

export const session = {
  token: sessionStorage.getItem(TOKEN_KEY),
  /** `{name, scopes}` from GET /v1/whoami once signed in. */
  who: null,
};

/** An answer of the API's error shape `{"error": {"code", "message"}}`, or a lost connection. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() {
    return this.status ? `${this.status} ${this.code}: ${this.message}` : this.message;
  }
}

export function setToken(token) {
  session.token = token;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Whether the signed-in token has `scope` (`admin` implies every scope). */
export function can(scope) {
  const scopes = session.who?.scopes ?? [];
  return scopes.includes(scope) || scopes.includes('admin');
}

// ---- connection ---------------------------------------------------------------------------

const listeners = new Set();
let down = null; // a promise that resolves when herald answers again

/** `fn(state)` with state 'down' | 'up'. */
export function onConnection(fn) {
  listeners.add(fn);
}

/** Reports herald unreachable and resolves once it answers again. */
export function waitForHerald() {
  if (down) return down;
  listeners.forEach((fn) => fn('down'));
  down = (async () => {
    let wait = 1000;
    for (;;) {
      await new Promise((r) => setTimeout(r, wait));
      try {
        const r = await fetch('/healthz', { cache: 'no-store' });
        if (r.ok) break;
      } catch {
        // still down
      }
      wait = Math.min(wait * 2, 10000);
    }
    down = null;
    listeners.forEach((fn) => fn('up'));
  })();
  return down;
}

// ---- requests -----------------------------------------------------------------------------

/**
 * Calls the API and answers the parsed JSON (null for 204). Throws an ApiError with the API's
 * own code and message. A GET that meets a lost connection waits for herald and tries again;
 * a write does not (it may have happened): it throws, and the caller shows it.
 * A 401 signs the tab out (the token was revoked or mistyped).
 */
export async function api(method, path, body, { token = session.token } = {}) {
  for (;;) {
    let resp;
    try {
      const init = { method, headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' };
      if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      resp = await fetch(path, init);
    } catch {
      const back = waitForHerald();
      if (method === 'GET') {
        await back;
        continue;
      }
      throw new ApiError(0, 'connection_lost', 'Lost the connection to herald; the change may not have been made. Check, then try again.');
    }
    if (resp.status === 204) return null;
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (resp.ok) return data;
    const err = data?.error;
    const e = new ApiError(resp.status, err?.code ?? 'error', err?.message ?? (text || resp.statusText));
    if (resp.status === 401 && token === session.token) {
      window.dispatchEvent(new CustomEvent('herald:unauthorized', { detail: e }));
    }
    throw e;
  }
}

export const get = (path) => api('GET', path);

/** A query string from an object, leaving out empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** A path segment: recipients and names may hold `@`, `/`, `+` and spaces. */
export const seg = (s) => encodeURIComponent(s);
