// ClientConnection's Traveler-mode handlers (--traveler): finds the user as sprayer does, asks
// the pool for the master monitor and stamps the hop on the response.
#include <llhttp.h>

#include <cstdint>
#include <vector>

#include "affinity/extract.h"
#include "tests/poolsim/client_connection.h"
#include "tests/poolsim/pool_server.h"
#include "tests/poolsim/text.h"

namespace poolsim {

namespace {

void append_field(std::string& out, const char* name, uint64_t value, bool comma = true) {
  if (comma) out += ",";
  out += "\"";
  out += name;
  out += "\":";
  append_uint(out, value);
}

}  // namespace

void ClientConnection::plan_traveler(std::string& user) {
  Exchange& ex = exchange_;
  std::vector<sprayer::affinity::Header> headers;
  headers.reserve(ex.header_count);
  for (size_t i = 0; i < ex.header_count; ++i) headers.push_back({ex.headers[i].name, ex.headers[i].value});
  sprayer::affinity::RequestView view{llhttp_method_name(static_cast<llhttp_method_t>(ex.method)), ex.url,
                                      headers};
  sprayer::affinity::ExtractResult found = server_.extractor().extract(view);
  if (!found.found()) return;
  if (user.empty()) user = found.user_key;  // a base64 query's user, for X-User and the body
  Decision d = server_.traveler().on_request(found.user_key);
  ex.extra_headers = "X-Owner: " + header_safe(d.arrival) + "\r\nX-Master-Monitor: " + header_safe(d.master) +
                     (d.hop ? "\r\nX-Hop: 1\r\n" : "\r\nX-Hop: 0\r\n");
  if (d.hop) ex.delay_ms += server_.options().hop_latency_ms;
}

void ClientConnection::plan_traveler_owner(const std::string& key) {
  Exchange& ex = exchange_;
  if (key.empty()) {
    ex.status = 400;
    ex.body = "{\"error\":\"user=NAME is required\"}";
    return;
  }
  MonitorRow row;
  bool found = false;
  std::string error;
  if (!server_.traveler().fetch(key, row, found, error)) {
    ex.status = 503;
    ex.body = "{\"error\":";
    append_json_string(ex.body, error);
    ex.body += "}";
    return;
  }
  ex.body = "{\"user\":";
  append_json_string(ex.body, key);
  ex.body += ",\"owner\":";
  if (found && !row.server.empty()) {
    append_json_string(ex.body, row.server);
  } else {
    ex.body += "null";
  }
  ex.body += ",\"version\":" + (found ? std::to_string(row.version) : std::string("null"));
  ex.body += ",\"idle_ms\":" + (found ? std::to_string(row.idle_ms) : std::string("null"));
  ex.body += "}";
}

void ClientConnection::append_traveler_stats(std::string& body) const {
  TravelerPool& traveler = server_.traveler();
  const TravelerStats& t = traveler.stats();
  body += ",\"traveler\":{";
  append_field(body, "requests", t.requests, false);
  append_field(body, "hops", t.hops);
  append_field(body, "local", t.local);
  append_field(body, "assigned", t.assigned);
  append_field(body, "moved", t.moved);
  append_field(body, "taken_over", t.taken_over);
  append_field(body, "expired", t.expired);
  append_field(body, "lost_races", t.lost_races);
  append_field(body, "touches", t.touches);
  append_field(body, "heartbeats", t.heartbeats);
  append_field(body, "db_errors", t.db_errors);
  append_field(body, "cached_users", traveler.cached_users());
  append_field(body, "owned_users", traveler.owned_users());
  body += traveler.pinned() ? ",\"pinned\":true" : ",\"pinned\":false";
  // Availability of every server as this one sees it; null = not alive (stale heartbeat).
  body += ",\"view\":{";
  bool first = true;
  for (const auto& [id, index] : traveler.view()) {
    if (!first) body += ",";
    first = false;
    append_json_string(body, id);
    body += index == INT64_MIN ? std::string(":null") : ":" + std::to_string(index);
  }
  body += "}";
  body += ",\"schema\":";
  body += server_.options().pool_schema ? "\"pool\"" : "\"default\"";
  body += "}";
}

}  // namespace poolsim
