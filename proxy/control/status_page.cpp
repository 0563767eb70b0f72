// Status page markup and the JSON status document. The page has no external assets: an
// admin listener is often reached through a jump host with no internet.
#include "proxy/control/status_page.h"

#include <cstdio>

#include "proxy/json.h"

namespace sprayer::proxy {
namespace {

constexpr std::string_view kPage = R"HTML(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sprayer status</title>
<style>
body{font:13px/1.35 system-ui,sans-serif;margin:1em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.1em 0 .4em}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #ccc;padding:.2em .4em;text-align:left;vertical-align:top}
th{background:#eee;font-weight:600;white-space:nowrap}td.act{white-space:nowrap}td.n{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#070;font-weight:bold}.down{color:#b00;font-weight:bold}
.draining{color:#a60;font-weight:bold}.maintenance{color:#555;font-weight:bold}
.sub{color:#666;font-size:.85em;display:block}.bad{color:#b00}
#msg{margin:.5em 0;min-height:1.2em}.err{color:#b00}.ok{color:#070}
button{margin:0 .2em 0 0;padding:.1em .4em;font-size:.95em}
.cards{display:flex;flex-wrap:wrap;gap:.6em}.card{background:#fff;border:1px solid #ccc;padding:.35em .6em;min-width:9.5em}
.card b{display:block;font-size:1.15em}.card span{color:#666;font-size:.85em}
svg.spark{display:block;background:#f4f7fb;border:1px solid #dde}
svg.spark polyline{fill:none;stroke-width:1.5}
</style></head><body>
<h1>sprayer <span id="version" class="sub" style="display:inline">-</span></h1>
<div class="cards">
<div class="card"><span>state</span><b id="pstate">-</b><span>up <i id="uptime">-</i></span></div>
<div class="card"><span>client connections</span><b id="conns">-</b><span id="upconns">-</span>
<svg class="spark" id="plot-conns" width="150" height="30"><polyline/></svg></div>
<div class="card"><span>memory (resident)</span><b id="rss">-</b><span id="fds">-</span>
<svg class="spark" id="plot-rss" width="150" height="30"><polyline/></svg></div>
<div class="card"><span>ownership source</span><b id="source">-</b><span>epoch <i id="epoch">-</i>, <i id="users">-</i> users</span></div>
<div class="card"><span>snapshot age (lag)</span><b id="age">-</b><span>errors <i id="errors">-</i></span>
<svg class="spark" id="plot-age" width="150" height="30"><polyline/></svg></div>
<div class="card"><span>last reload</span><b id="reload">-</b><span id="reloads">-</span></div>
</div>
<p class="sub">last source error: <span id="lasterr">-</span></p>
<h2>Servers</h2>
<p><label>Admin token <input id="token" type="password" autocomplete="off" size="30"></label>
<span class="sub" style="display:inline">read when a button is clicked; drain and maintenance ask first</span></p>
<div id="msg"></div>
<table id="servers"><thead><tr><th>server</th><th>state</th><th>checks</th><th title="Traveler availability index">avail.</th><th title="users the ownership table gives it">owned</th>
<th title="requests in flight">active</th><th title="long-polls (Ping) in flight">parked</th><th>req/s</th><th>errors</th><th>p50 / p99</th><th title="one point per sample: requests/s (blue), p99 (orange)">last 5 min</th>
<th title="requests taken over from an unusable owner / requests of its users sent elsewhere">takeovers<br>in / out</th><th>actions</th></tr></thead><tbody></tbody></table>
<p class="sub">Rates and latencies over the last sample interval (long-polls left out of latency); the plot
shows requests per second (blue) and p99 latency (orange), one point per sample.</p>
<template id="spark"><svg class="spark" width="120" height="30" data-field="spark"><polyline/><polyline/></svg></template>
<script>
"use strict";
const $ = id => document.getElementById(id);
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) $("token").value = hash.get("token");
function age(s) {
  if (s === null || s === undefined) return "-";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function bytes(b) {
  if (b === null || b === undefined) return "-";
  if (b < 1048576) return (b / 1024).toFixed(0) + " KiB";
  if (b < 1073741824) return (b / 1048576).toFixed(1) + " MiB";
  return (b / 1073741824).toFixed(2) + " GiB";
}
function ms(s) {
  if (s === null || s === undefined) return "-";
  return s < 0.01 ? (s * 1000).toFixed(2) + " ms" : s < 1 ? (s * 1000).toFixed(0) + " ms" : s.toFixed(2) + " s";
}
function last(a) { return a && a.length ? a[a.length - 1] : null; }
// One polyline per series (the markup's own, so no namespace is spelled here), scaled to
// its own maximum; the points are also kept in data-points so a test can see the plot move.
function spark(svg, series) {
  const w = svg.width.baseVal.value, h = svg.height.baseVal.value;
  const lines = svg.querySelectorAll("polyline");
  const all = [];
  series.forEach(([values, color], k) => {
    const n = values.length;
    const max = Math.max(1e-9, ...values.filter(v => v !== null));
    const pts = [];
    values.forEach((v, i) => {
      if (v === null) return;
      const x = n > 1 ? (i * (w - 2)) / (n - 1) + 1 : w / 2;
      pts.push(x.toFixed(1) + "," + (h - 2 - (v / max) * (h - 4)).toFixed(1));
    });
    lines[k].setAttribute("points", pts.join(" "));
    lines[k].setAttribute("stroke", color);
    all.push(pts.join(" "));
  });
  svg.dataset.points = all.join("|");
}
function say(text, ok) { const m = $("msg"); m.textContent = text; m.className = ok ? "ok" : "err"; }
const ASK = {drain: "Drain %s? It keeps its users but takes no new ones.",
             maintenance: "Put %s in maintenance? It gets no traffic at all; its users go to other servers."};
async function act(id, action) {
  if (ASK[action] && !window.confirm(ASK[action].replace("%s", id))) { say(id + ": " + action + " cancelled", true); return; }
  const headers = {};
  const token = $("token").value;
  if (token) headers["Authorization"] = "Bearer " + token;
  headers["X-Sprayer-Admin"] = "1";  // the admin API refuses state changes without it (CSRF)
  try {
    const r = await fetch("/api/v1/servers/" + encodeURIComponent(id) + "/" + action, {method: "POST", headers});
    if (!r.ok) { say(id + " " + action + ": HTTP " + r.status + " " + (await r.text()), false); return; }
    say(id + ": " + action + " done", true);
  } catch (e) { say(id + " " + action + ": " + e, false); }
  refresh();
}
// Rows are built once per server list and then updated in place, so a button keeps
// existing under the pointer while the page refreshes.
let rows = new Map(), rowKey = "";
function span(parent, cls, field) {
  const e = document.createElement("span");
  if (cls) e.className = cls;
  if (field) e.dataset.field = field;
  parent.appendChild(e);
  return e;
}
function buildRows(servers) {
  const body = $("servers").tBodies[0];
  body.replaceChildren();
  rows = new Map();
  for (const v of servers) {
    const row = body.insertRow();
    row.dataset.server = v.id;
    const r = {};
    const name = row.insertCell();
    span(name).textContent = v.id;
    r.where = span(name, "sub");
    const st = row.insertCell();
    r.state = span(st, "", "state");
    r.why = span(st, "sub");
    const checks = row.insertCell();
    r.checks = span(checks);
    r.failure = span(checks, "sub");
    for (const f of ["availability", "owned", "active", "parked", "rate", "errors", "latency"]) {
      const td = row.insertCell();
      td.className = f === "latency" ? "n act" : "n";
      td.dataset.field = f;
      r[f] = td;
    }
    const plot = row.insertCell();
    plot.appendChild($("spark").content.cloneNode(true));
    r.svg = plot.querySelector("svg");
    r.takeovers = row.insertCell();
    r.takeovers.className = "n";
    const actions = row.insertCell();
    actions.className = "act";
    for (const a of ["drain", "maintenance", "ready"]) {
      const b = document.createElement("button");
      b.textContent = a;
      b.dataset.action = a;
      b.addEventListener("click", () => act(v.id, a));
      actions.appendChild(b);
    }
    rows.set(v.id, r);
  }
}
async function refresh() {
  let s;
  // Off loopback the read needs a token: the one typed here, else the browser's login prompt.
  const headers = $("token").value ? {Authorization: "Bearer " + $("token").value} : {};
  try { s = await (await fetch("/api/v1/status", {cache: "no-store", headers})).json(); }
  catch (e) { say("cannot read /api/v1/status: " + e, false); return; }
  $("version").textContent = s.version;
  $("uptime").textContent = age(s.uptime_seconds);
  $("conns").textContent = s.downstream_connections;
  $("upconns").textContent = "upstream " + s.upstream_connections;
  $("pstate").textContent = s.shutting_down ? "draining (stop signal)" : "serving";
  const p = s.process || {}, ps = p.samples || {};
  $("rss").textContent = bytes(p.resident_bytes);
  $("fds").textContent = "descriptors " + (p.open_fds ?? "-") + (p.max_fds ? " of " + p.max_fds : "");
  spark($("plot-conns"), [[ps.connections || [], "#2a6fdb"]]);
  spark($("plot-rss"), [[ps.resident_bytes || [], "#7a4fc4"]]);
  spark($("plot-age"), [[ps.ownership_age_seconds || [], "#d9822b"]]);
  const rl = s.reload || {};
  $("reload").textContent = rl.last_ok ? "applied" : "REFUSED";
  $("reload").className = rl.last_ok ? "" : "bad";
  $("reloads").textContent = rl.applied + " applied, " + rl.refused + " refused; last applied " +
      (rl.last_success_seconds ? new Date(rl.last_success_seconds * 1000).toLocaleString() : "-");
  const o = s.ownership;
  $("source").textContent = o.configured ? o.state + (o.stale ? " (stale)" : "") : "none (rendezvous only)";
  $("epoch").textContent = o.epoch;
  $("users").textContent = o.users;
  $("age").textContent = age(o.snapshot_age_seconds);
  $("errors").textContent = o.errors;
  $("lasterr").textContent = o.last_error || "-";
  const key = s.servers.map(v => v.id).join("\n");
  if (key !== rowKey) { buildRows(s.servers); rowKey = key; }
  s.servers.forEach((v, i) => {
    const d = (s.server_details || [])[i] || {};
    const m = d.samples || {};
    const r = rows.get(v.id);
    r.where.textContent = (d.address || "") + (d.weight !== undefined ? ", weight " + d.weight : "");
    r.state.textContent = v.state;
    r.state.className = v.state;
    r.why.textContent = d.reason === undefined ? "" :
        (d.reason === "none" ? "since start, " : d.reason + ", ") + age(d.since_seconds) + " ago";
    r.checks.textContent = d.checks || "-";
    r.failure.textContent = (d.last_failure && d.last_failure !== "none"
        ? "last failure " + d.last_failure + ", " + age(d.last_failure_seconds) + " ago" : "no failure") +
        (v.ejections ? "; ejected " + v.ejections + "x" : "");
    r.availability.textContent = v.availability;
    r.owned.textContent = v.owned_users;
    r.active.textContent = v.active_requests;
    r.parked.textContent = d.parked ?? "-";
    const rate = last(m.rate), err = last(m.error_ratio);
    r.rate.textContent = rate === null ? "-" : rate.toFixed(1);
    r.errors.textContent = err === null ? "-" : (err * 100).toFixed(1) + " %";
    r.errors.className = err > 0.05 ? "n bad" : "n";
    r.latency.textContent = ms(last(m.p50)) + " / " + ms(last(m.p99));
    spark(r.svg, [[m.rate || [], "#2a6fdb"], [m.p99 || [], "#d9822b"]]);
    r.takeovers.textContent = (d.takeovers_in ?? "-") + " / " + (d.takeovers_out ?? "-");
  });
  document.body.dataset.loaded = "1";
}
refresh();
setInterval(refresh, 2000);
</script>
</body></html>
)HTML";

void number(std::string& out, double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  out += buf;
}

void optional_number(std::string& out, const std::optional<double>& v) {
  if (v)
    number(out, *v);
  else
    out += "null";
}

// A series as one array: {"t":[...],"rate":[...]} keeps the document small and the page's
// plotting simple.
template <typename Sample, typename Get>
void series(std::string& out, const char* name, const std::deque<Sample>& samples, Get get) {
  out += ",\"";
  out += name;
  out += "\":[";
  bool first = true;
  for (const auto& s : samples) {
    if (!first) out += ",";
    first = false;
    get(out, s);
  }
  out += "]";
}

void server_samples(std::string& out, const std::deque<ServerSample>& samples) {
  out += ",\"samples\":{\"interval_seconds\":";
  number(out, kSampleIntervalMs / 1000.0);
  series(out, "t", samples, [](std::string& o, const ServerSample& s) { number(o, s.time); });
  series(out, "rate", samples, [](std::string& o, const ServerSample& s) { number(o, s.rate); });
  series(out, "error_ratio", samples, [](std::string& o, const ServerSample& s) { number(o, s.error_ratio); });
  // Latencies in seconds to the microsecond: a fast pool answers well under a millisecond.
  auto micro = [](std::string& o, const std::optional<double>& v) {
    if (!v) {
      o += "null";
      return;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6f", *v);
    o += buf;
  };
  series(out, "p50", samples, [&](std::string& o, const ServerSample& s) { micro(o, s.p50); });
  series(out, "p99", samples, [&](std::string& o, const ServerSample& s) { micro(o, s.p99); });
  series(out, "parked", samples, [](std::string& o, const ServerSample& s) { o += std::to_string(s.parked); });
  out += "}";
}

void process_samples(std::string& out, const std::deque<ProcessSample>& samples) {
  out += ",\"samples\":{\"interval_seconds\":";
  number(out, kSampleIntervalMs / 1000.0);
  series(out, "t", samples, [](std::string& o, const ProcessSample& s) { number(o, s.time); });
  series(out, "connections", samples,
         [](std::string& o, const ProcessSample& s) { o += std::to_string(s.connections); });
  series(out, "resident_bytes", samples, [](std::string& o, const ProcessSample& s) { number(o, s.resident_bytes); });
  series(out, "ownership_age_seconds", samples,
         [](std::string& o, const ProcessSample& s) { optional_number(o, s.ownership_age); });
  out += "}";
}

}  // namespace

std::string_view status_page_html() { return kPage; }

std::string status_json(const ControlState& st) {
  std::string out = "{\"version\":";
  json_string(out, st.version);
  out += ",\"uptime_seconds\":";
  number(out, st.uptime_seconds);
  out += ",\"start_time_seconds\":";
  number(out, st.start_time_seconds);
  out += ",\"shutting_down\":";
  out += st.shutting_down ? "true" : "false";
  out += ",\"downstream_connections\":" + std::to_string(st.downstream_connections);
  out += ",\"upstream_connections\":" + std::to_string(st.upstream_connections);
  out += ",\"process\":{\"resident_bytes\":";
  optional_number(out, st.process ? std::optional<double>(st.process->resident_bytes) : std::nullopt);
  out += ",\"open_fds\":";
  optional_number(out, st.process ? std::optional<double>(st.process->open_fds) : std::nullopt);
  out += ",\"max_fds\":";
  optional_number(out, st.process && st.process->max_fds > 0 ? std::optional<double>(st.process->max_fds)
                                                             : std::nullopt);
  out += ",\"cpu_seconds\":";
  optional_number(out, st.process ? std::optional<double>(st.process->cpu_seconds) : std::nullopt);
  if (st.samples) process_samples(out, st.samples->process());
  out += "},\"reload\":{\"last_ok\":";
  out += st.last_reload_ok ? "true" : "false";
  out += ",\"applied\":" + std::to_string(st.reloads_applied);
  out += ",\"refused\":" + std::to_string(st.reloads_refused);
  out += ",\"last_success_seconds\":";
  number(out, st.last_reload_success_seconds);
  out += "},\"ownership\":{\"configured\":";
  out += st.source_configured ? "true" : "false";
  out += ",\"state\":";
  json_string(out, st.source_state);
  out += ",\"epoch\":" + std::to_string(st.epoch);
  out += ",\"users\":" + std::to_string(st.users);
  out += ",\"snapshot_age_seconds\":";
  optional_number(out, st.snapshot_age_seconds);
  out += ",\"stale\":";
  out += st.stale ? "true" : "false";
  out += ",\"errors\":" + std::to_string(st.source_errors);
  out += ",\"last_error\":";
  json_string(out, st.source_last_error);
  out += "},\"servers\":[";
  for (size_t i = 0; i < st.servers.size(); ++i) {
    const auto& s = st.servers[i];
    if (i) out += ",";
    out += "{\"id\":";
    json_string(out, s.id);
    out += ",\"state\":";
    json_string(out, s.state);
    out += ",\"availability\":" + std::to_string(s.availability);
    out += ",\"owned_users\":" + std::to_string(s.owned_users);
    out += ",\"ejections\":" + std::to_string(s.ejections);
    out += ",\"active_requests\":" + std::to_string(s.active_requests);
    out += "}";
  }
  // What the page shows beyond the summary, in the same order as "servers".
  out += "],\"server_details\":[";
  for (size_t i = 0; i < st.servers.size(); ++i) {
    const auto& s = st.servers[i];
    if (i) out += ",";
    out += "{\"id\":";
    json_string(out, s.id);
    out += ",\"address\":";
    json_string(out, s.address);
    out += ",\"weight\":" + std::to_string(s.weight);
    out += ",\"checks\":";
    json_string(out, s.checks);
    out += ",\"admin\":";
    json_string(out, s.admin);
    out += ",\"reason\":";
    json_string(out, s.reason);
    out += ",\"since_seconds\":";
    number(out, s.since_seconds);
    out += ",\"last_failure\":";
    json_string(out, s.last_failure);
    out += ",\"last_failure_seconds\":";
    optional_number(out, s.last_failure_seconds);
    out += ",\"parked\":" + std::to_string(s.parked);
    out += ",\"takeovers_in\":" + std::to_string(s.takeovers_in);
    out += ",\"takeovers_out\":" + std::to_string(s.takeovers_out);
    if (st.samples) {
      if (const auto* samples = st.samples->server(s.id)) server_samples(out, *samples);
    }
    out += "}";
  }
  out += "]}\n";
  return out;
}

}  // namespace sprayer::proxy
