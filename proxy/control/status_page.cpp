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
  out += ",\"ownership\":{\"configured\":";
  out += st.source_configured ? "true" : "false";
  out += ",\"state\":";
  json_string(out, st.source_state);
  out += ",\"epoch\":" + std::to_string(st.epoch);
  out += ",\"users\":" + std::to_string(st.users);
  out += ",\"snapshot_age_seconds\":";
  if (st.snapshot_age_seconds)
    number(out, *st.snapshot_age_seconds);
  else
    out += "null";
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
  out += "]}\n";
  return out;
}

}  // namespace sprayer::proxy
