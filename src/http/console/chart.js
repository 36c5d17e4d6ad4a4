// A line chart drawn as inline SVG: no library, no inline style (every look is a class).

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const hhmm = (ms) => new Date(ms).toISOString().slice(11, 16);

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v) ?? v;
}

/** The drawing width that keeps the chart's text near its CSS size: the page's content width. */
export function contentWidth(fraction = 1) {
  const main = document.querySelector('main');
  const w = (main?.clientWidth ?? 1000) * fraction - 64;
  return Math.round(Math.min(1200, Math.max(300, w)));
}

/**
 * `series`: `[{name, points: [[unix ms, value], …]}]`; `xDomain`: `[from, to]` ms;
 * `limit`: `{value, label}` drawn as a dashed line (a budget). Answers a figure with a legend.
 */
export function lineChart({ series, xDomain, unit = '', limit, label, width = contentWidth() }) {
  const W = width, H = 240, L = 52, R = 12, T = 12, B = 26;
  const all = series.flatMap((x) => x.points);
  const [x0, x1] = xDomain ?? [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  const span = Math.max(1, x1 - x0);
  const ymax = niceMax(Math.max(0, ...all.map((p) => p[1]), limit?.value ?? 0) * 1.05);
  const x = (t) => L + ((t - x0) / span) * (W - L - R);
  const y = (v) => T + (1 - v / ymax) * (H - T - B);
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label });
  svg.append(s('title', {}, label));
  for (let i = 0; i <= 4; i += 1) {
    const v = (ymax * i) / 4;
    svg.append(s('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(s('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, `${+v.toFixed(2)}${unit}`));
  }
  for (let i = 0; i <= 5; i += 1) {
    const t = x0 + (span * i) / 5;
    svg.append(s('text', { x: x(t), y: H - 8, 'text-anchor': i === 0 ? 'start' : i === 5 ? 'end' : 'middle' }, hhmm(t)));
  }
  svg.append(s('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
  svg.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  if (limit) svg.append(s('line', { class: 'limit', x1: L, x2: W - R, y1: y(limit.value), y2: y(limit.value) }));
  series.forEach((ser, i) => {
    if (!ser.points.length) return;
    const pts = ser.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(s('polyline', { class: `s${i % 4}`, points: pts }));
  });
  const legend = document.createElement('ul');
  legend.className = 'legend';
  series.forEach((ser, i) => {
    const li = document.createElement('li');
    const sw = document.createElement('span');
    sw.className = `swatch s${i % 4}`;
    li.append(sw, document.createTextNode(ser.name));
    legend.append(li);
  });
  if (limit) {
    const li = document.createElement('li');
    li.textContent = `- - ${limit.label}`;
    legend.append(li);
  }
  const fig = document.createElement('figure');
  fig.className = 'chart-figure';
  fig.append(svg, legend);
  return fig;
}
