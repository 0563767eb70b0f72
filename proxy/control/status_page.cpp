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
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#eee}.up{color:#070;font-weight:bold}.down{color:#b00;font-weight:bold}
.draining{color:#a60;font-weight:bold}.maintenance{color:#555;font-weight:bold}
#msg{margin:.5em 0;min-height:1.2em}.err{color:#b00}.ok{color:#070}
button{margin-right:.3em}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:bold}
</style></head><body>
<h1>sprayer</h1>
<dl id="proc"><dt>version</dt><dd id="version">-</dd><dt>uptime</dt><dd id="uptime">-</dd>
<dt>client connections</dt><dd id="conns">-</dd><dt>state</dt><dd id="pstate">-</dd></dl>
<h2>Ownership source</h2>
<dl><dt>source</dt><dd id="source">-</dd><dt>epoch</dt><dd id="epoch">-</dd><dt>users</dt><dd id="users">-</dd>
<dt>snapshot age</dt><dd id="age">-</dd><dt>errors</dt><dd id="errors">-</dd><dt>last error</dt><dd id="lasterr">-</dd></dl>
<h2>Servers</h2>
<p><label>Admin token <input id="token" type="password" autocomplete="off" size="30"></label></p>
<div id="msg"></div>
<table id="servers"><thead><tr><th>server</th><th>state</th><th>availability</th><th>owned users</th>
<th>active requests</th><th>ejections</th><th>actions</th></tr></thead><tbody></tbody></table>
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
function say(text, ok) { const m = $("msg"); m.textContent = text; m.className = ok ? "ok" : "err"; }
async function act(id, action) {
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
function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td; }
async function refresh() {
  let s;
  try { s = await (await fetch("/api/v1/status", {cache: "no-store"})).json(); }
  catch (e) { say("cannot read /api/v1/status: " + e, false); return; }
  $("version").textContent = s.version;
  $("uptime").textContent = age(s.uptime_seconds);
  $("conns").textContent = s.downstream_connections + " (upstream " + s.upstream_connections + ")";
  $("pstate").textContent = s.shutting_down ? "draining (stop signal)" : "serving";
  const o = s.ownership;
  $("source").textContent = o.configured ? o.state + (o.stale ? " (stale)" : "") : "none (rendezvous only)";
  $("epoch").textContent = o.epoch;
  $("users").textContent = o.users;
  $("age").textContent = age(o.snapshot_age_seconds);
  $("errors").textContent = o.errors;
  $("lasterr").textContent = o.last_error || "-";
  const body = $("servers").tBodies[0];
  body.replaceChildren();
  for (const v of s.servers) {
    const row = body.insertRow();
    row.dataset.server = v.id;
    cell(row, v.id);
    cell(row, v.state, v.state).dataset.field = "state";
    cell(row, v.availability);
    cell(row, v.owned_users);
    cell(row, v.active_requests);
    cell(row, v.ejections);
    const td = row.insertCell();
    for (const a of ["drain", "maintenance", "ready"]) {
      const b = document.createElement("button");
      b.textContent = a;
      b.dataset.action = a;
      b.addEventListener("click", () => act(v.id, a));
      td.appendChild(b);
    }
  }
  document.body.dataset.loaded = "1";
}
refresh();
setInterval(refresh, 3000);
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
  series(out, "p50", samples, [](std::string& o, const ServerSample& s) { optional_number(o, s.p50); });
  series(out, "p99", samples, [](std::string& o, const ServerSample& s) { optional_number(o, s.p99); });
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
