//! The status page: one static HTML document with its CSS and script inline, no external URL and
//! no build step. The script fetches `status.json` (relative, so the page works under any path
//! prefix) every second and draws it: the chart as inline SVG, the tables row by row.
//!
//! Everything that comes from `status.json` goes in through `textContent` or an SVG attribute,
//! never as markup: a key, a rule or an explanation (a client can choose its own key) is always
//! text, which is the escaping this page needs. The document itself holds no data.

/// The page served at `/status`.
pub const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ratelimit status</title>
<style>
:root { --fg:#1d2430; --muted:#5c6675; --line:#d9dee6; --card:#ffffff; --bg:#f3f5f8;
        --decisions:#2f6fdf; --denials:#d9402b; --ok:#1f8a4c; --bad:#c62f1e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 1em; padding: 14px 22px;
         background: #1d2430; color: #fff; }
header h1 { margin: 0; font-size: 19px; font-weight: 600; }
header .right { margin-left: auto; color: #b8c1cf; font-size: 12px; }
main { padding: 16px 22px; display: grid; gap: 14px; grid-template-columns: repeat(4, 1fr); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
          padding: 12px 14px; min-width: 0; }
section h2 { margin: 0 0 8px; font-size: 13px; text-transform: uppercase; letter-spacing: .04em;
             color: var(--muted); font-weight: 600; }
.wide { grid-column: 1 / -1; } .half { grid-column: span 2; }
.big { font-size: 28px; font-weight: 600; font-variant-numeric: tabular-nums; }
.sub { color: var(--muted); font-size: 12px; }
.decisions { color: var(--decisions); } .denials { color: var(--denials); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
         font-size: 12px; font-weight: 600; }
.badge.ok { background: var(--ok); } .badge.bad { background: var(--bad); }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; overflow-wrap: anywhere; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; }
td.empty { color: var(--muted); font-style: italic; }
td.nowrap { white-space: nowrap; }
ul { margin: 0; padding-left: 18px; } li { margin: 2px 0; overflow-wrap: anywhere; }
svg { width: 100%; height: auto; display: block; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg text { fill: var(--muted); font-size: 11px; }
#error { color: var(--bad); font-weight: 600; }
</style>
</head>
<body>
<header><h1 id="title">ratelimit status</h1><span id="error" hidden></span>
<span class="right">live from <a href="status.json" style="color:#b8c1cf">status.json</a>,
refreshed every second; <span id="updated">waiting for the first answer</span></span></header>
<noscript><p style="padding:0 22px">This page draws <a href="status.json">status.json</a>
with JavaScript, which is off: read status.json itself.</p></noscript>
<main>
<section><h2>Decisions a second</h2><div class="big decisions" id="decisions-now">-</div>
<div class="sub"><span id="decisions-total">-</span> since the start</div></section>
<section><h2>Denials a second</h2><div class="big denials" id="denials-now">-</div>
<div class="sub"><span id="denials-total">-</span> since the start</div></section>
<section><h2>Store</h2><div><span class="badge" id="store-health">-</span>
<span id="store-kind"></span></div><div class="sub">failure policy
<b id="store-policy">-</b>, <span id="replicas">-</span> replica(s)</div>
<div class="sub" id="store-mode"></div></section>
<section><h2>Anomaly controller</h2><div class="big" id="anomaly-state">-</div>
<div class="sub" id="anomaly-detail"></div></section>

<section class="wide"><h2>Decisions and denials a second, last five minutes</h2>
<svg id="chart" viewBox="0 0 1000 240" role="img" aria-label="decisions and denials a second">
<g id="chart-grid"></g>
<polyline id="line-decisions" fill="none" stroke="#2f6fdf" stroke-width="2" points=""/>
<polyline id="line-denials" fill="none" stroke="#d9402b" stroke-width="2" points=""/>
<g id="chart-labels"></g>
</svg>
<div class="sub"><span class="decisions">&#9632; decisions</span> &nbsp;
<span class="denials">&#9632; denials</span> &nbsp; <span id="chart-samples">no sample yet</span></div>
</section>

<section class="wide"><h2>Anomaly actions in force</h2>
<table><thead><tr><th>action</th><th>cohort</th><th>signal and evidence</th><th>decided</th>
<th>until</th><th class="num">time left</th></tr></thead><tbody id="actions"></tbody></table>
</section>

<section class="half"><h2>Most limited keys</h2>
<table><thead><tr><th>rule</th><th>key</th><th class="num">denials/s</th>
<th class="num">denials</th></tr></thead><tbody id="limited"></tbody></table></section>
<section class="half"><h2>Busiest clients (last tick)</h2>
<table><thead><tr><th>client</th><th class="num">requests</th></tr></thead>
<tbody id="clients"></tbody></table></section>

<section class="half"><h2>Counters</h2><table><thead id="breakdown-head"></thead>
<tbody id="breakdown"></tbody></table><ul id="facts" class="sub"></ul></section>
<section class="half"><h2>Recent anomaly decisions, explained</h2><ul id="recent"></ul></section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const WINDOW = 300, W = 1000, H = 240, LEFT = 56, RIGHT = 10, TOP = 10, BOTTOM = 24;
const set = (id, value) => { $(id).textContent = String(value); };
const int = (x) => Math.round(Number(x) || 0).toLocaleString("en-US");
const rate = (x) => { const v = Number(x) || 0; return v >= 100 ? int(v) : v.toFixed(1); };
const clock = (unix) => new Date(unix * 1000).toLocaleTimeString("en-GB", { hour12: false });

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = String(value);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fill(tbody, items, columns, empty, draw) {
  tbody.replaceChildren();
  if (!items.length) {
    const row = tbody.insertRow();
    cell(row, empty, "empty").colSpan = columns;
    return;
  }
  for (const item of items) draw(tbody.insertRow(), item);
}

function list(ul, items, empty) {
  ul.replaceChildren();
  for (const item of items.length ? items : empty ? [empty] : []) {
    const li = document.createElement("li");
    li.textContent = String(item);
    ul.appendChild(li);
  }
}

function svgText(parent, x, y, value, anchor) {
  const t = document.createElementNS(SVG, "text");
  t.setAttribute("x", x); t.setAttribute("y", y);
  t.setAttribute("text-anchor", anchor);
  t.textContent = value;
  parent.appendChild(t);
}

function chart(history, now) {
  const top = Math.max(1, ...history.map((s) => Math.max(s.decisions, s.denials)));
  // A round scale: 1, 2 or 5 times a power of ten.
  const power = Math.pow(10, Math.floor(Math.log10(top)));
  const max = [1, 2, 5, 10].map((m) => m * power).find((v) => v >= top);
  const plotW = W - LEFT - RIGHT, plotH = H - TOP - BOTTOM;
  const x = (at) => LEFT + plotW * (1 - Math.min(WINDOW, Math.max(0, now - at)) / WINDOW);
  const y = (v) => TOP + plotH * (1 - v / max);
  const grid = $("chart-grid"), labels = $("chart-labels");
  grid.replaceChildren(); labels.replaceChildren();
  // Steps of round numbers: fifths of 1, 5 or 10 times a power of ten, quarters of 2 times.
  const steps = max / power === 2 ? 4 : 5;
  for (let i = 0; i <= steps; i++) {
    const v = (max * i) / steps, line = document.createElementNS(SVG, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", LEFT); line.setAttribute("x2", W - RIGHT);
    line.setAttribute("y1", y(v)); line.setAttribute("y2", y(v));
    grid.appendChild(line);
    svgText(labels, LEFT - 6, y(v) + 4, max >= 10 ? int(v) : rate(v), "end");
  }
  for (let m = 0; m <= 5; m++) {
    svgText(labels, x(now - m * 60), H - 6, m === 0 ? "now" : "-" + m + " min", "middle");
  }
  const points = (key) => history.map((s) => x(s.at).toFixed(1) + "," + y(s[key]).toFixed(1)).join(" ");
  $("line-decisions").setAttribute("points", points("decisions"));
  $("line-denials").setAttribute("points", points("denials"));
  set("chart-samples", history.length + " one-second samples, scale up to " + rate(max) + "/s");
}

function render(s) {
  document.title = s.title + " status";
  set("title", s.title);
  set("updated", "updated " + clock(s.now) + ", up " + int(s.uptime_seconds) + " s");
  set("decisions-now", rate(s.current.decisions));
  set("denials-now", rate(s.current.denials));
  set("decisions-total", int(s.totals.decisions));
  set("denials-total", int(s.totals.denials));
  const health = $("store-health");
  health.textContent = s.store.healthy ? "healthy" : "unavailable";
  health.className = "badge " + (s.store.healthy ? "ok" : "bad");
  set("store-kind", s.store.kind);
  set("store-policy", s.store.failure_policy);
  set("replicas", s.store.replicas);
  set("store-mode", s.store.mode);
  chart(s.history, s.now);
  fill($("limited"), s.limited_keys, 4, "No key denied lately.", (row, k) => {
    cell(row, k.rule); cell(row, k.key);
    cell(row, rate(k.per_second), "num"); cell(row, int(k.denials), "num");
  });
  const a = s.anomaly;
  if (a) {
    set("anomaly-state", a.state);
    const budget = a.newcomer_budget
      ? "newcomers' budget " + a.newcomer_budget[0] + " (persistent " + a.newcomer_budget[1] + ") a tick"
      : "no newcomers' budget";
    set("anomaly-detail", "global limit at " + Math.round(a.factor * 100) + "%, score " +
      a.score.toFixed(2) + ", " + budget + "; last tick " + int(a.requests_last_tick) +
      " requests, " + int(a.limited_last_tick) + " limited (" + int(a.ticks) + " ticks of " +
      a.tick_seconds + " s)");
  } else {
    set("anomaly-state", "off");
    set("anomaly-detail", "No anomaly controller runs here.");
  }
  fill($("actions"), a ? a.active : [], 6, "No anomaly action in force.", (row, x) => {
    cell(row, (x.applied ? "" : "[shadow] ") + x.action);
    cell(row, x.cohort);
    cell(row, x.signal + ": " + x.evidence);
    cell(row, clock(x.decided_at), "nowrap");
    cell(row, x.until);
    cell(row, x.seconds_left == null ? "while it holds" : Math.ceil(x.seconds_left) + " s", "num nowrap");
  });
  fill($("clients"), a ? a.top_clients : [], 2, "No client seen in the last tick.", (row, c) => {
    cell(row, c[0]); cell(row, int(c[1]), "num");
  });
  list($("recent"), a ? a.recent.map((r) => clock(r.at) + " " + r.text) : [],
    a ? "No anomaly action decided yet." : "No anomaly controller runs here.");
  const names = s.breakdown.length ? s.breakdown[0].counts.map((c) => c[0]) : [];
  const head = $("breakdown-head");
  head.replaceChildren();
  const hr = head.insertRow();
  for (const n of [""].concat(names)) {
    const th = document.createElement("th");
    th.textContent = n.replace(/_/g, " ");
    if (n) th.className = "num";
    hr.appendChild(th);
  }
  fill($("breakdown"), s.breakdown, names.length + 1, "No counter.", (row, b) => {
    cell(row, b.name);
    for (const c of b.counts) cell(row, int(c[1]), "num");
  });
  list($("facts"), s.facts.map((f) => f.name + ": " + f.value), "");
}

async function refresh() {
  try {
    const response = await fetch("status.json", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    $("error").hidden = true;
  } catch (error) {
    $("error").hidden = false;
    set("error", "status.json unreachable (" + error.message + "); retrying");
  } finally {
    setTimeout(refresh, 1000);
  }
}
refresh();
</script>
</body>
</html>
"##;
