// The console's own Core Web Vitals, measured by the vendored web-vitals library and sent to
// herald's ingest port (`POST /vitals`), so herald's budgets watch its own UI.
//
// Each metric is sent under the console page it was first measured on (`/console/messages`),
// the hash route, since every page shares one URL. `reportAllChanges` sends each update; herald
// keeps the latest value per metric id. Beacons are batched and flushed a second after the last
// update and whenever the tab is hidden or closed.

import { onCLS, onFCP, onINP, onLCP, onTTFB } from './vendor/web-vitals.js';

// Until the router says otherwise, the page in the address (TTFB and FCP come before sign-in).
let page = location.hash.replace(/^#\/?/, '').split(/[/?]/)[0] || 'overview';
let endpoint = null;
let queue = [];
let timer = null;
const pageOf = new Map();

/** The page metrics measured from now on belong to. */
export function setPage(p) {
  page = p;
}

/** The last metrics reported, newest last (the browser tests read them). */
export const recent = [];

function report(m) {
  recent.push(`${m.name} ${m.value}`);
  if (recent.length > 50) recent.shift();
  if (!pageOf.has(m.id)) pageOf.set(m.id, page);
  queue = queue.filter((q) => q.id !== m.id);
  queue.push({
    name: m.name,
    value: m.value,
    id: m.id,
    rating: m.rating,
    navigationType: m.navigationType,
    page: `/console/${pageOf.get(m.id)}`,
  });
  clearTimeout(timer);
  timer = setTimeout(flush, 1000);
}

function flush() {
  if (!endpoint || !queue.length) return;
  // herald takes at most 100 beacons in one body.
  while (queue.length) {
    const body = JSON.stringify(queue.splice(0, 100));
    // A string body is text/plain: a CORS-safelisted type, so the beacon needs no preflight.
    if (!navigator.sendBeacon(endpoint, body)) {
      fetch(endpoint, { method: 'POST', body, keepalive: true, mode: 'no-cors' }).catch(() => {});
    }
  }
}

export async function startVitals() {
  const opts = { reportAllChanges: true };
  onLCP(report, opts);
  onINP(report, opts);
  onCLS(report, opts);
  onFCP(report, opts);
  onTTFB(report, opts);
  addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') flush();
  });
  addEventListener('pagehide', flush);
  try {
    const config = await (await fetch('/console/config.json', { cache: 'no-store' })).json();
    endpoint = `${location.protocol}//${location.hostname}:${config.ingest_port}/vitals`;
    flush();
  } catch {
    // No config: vitals stay unsent; the console works without them.
  }
}

/** Sends what is queued now (the browser tests call it through the page). */
export const flushVitals = flush;
