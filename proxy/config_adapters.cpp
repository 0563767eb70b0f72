// From the configuration to the parts of a Runtime: extractor settings, resolved servers.
#include "proxy/config_adapters.h"

#include <netdb.h>

#include <chrono>
#include <cstring>

#include "affinity/ownership_changes.h"
#include "proxy/log.h"
#include "proxy/tls/tls_client_context.h"
#include "proxy/tls/tls_context.h"

namespace sprayer::proxy {

affinity::ExtractorConfig extractor_config(const conf::AffinityConfig& config) {
  using affinity::Source;
  affinity::ExtractorConfig out;
  out.order.clear();
  for (const auto& step : config.extractors) {
    Source kind = Source::none;
    if (step.kind == "activesync_query") kind = Source::activesync_query;
    else if (step.kind == "activesync_base64") kind = Source::activesync_base64;
    else if (step.kind == "basic_auth") kind = Source::basic_auth;
    else if (step.kind == "traveler_url") kind = Source::traveler_url;
    else if (step.kind == "header") kind = Source::header;
    else if (step.kind == "cookie") kind = Source::cookie;
    else if (step.kind == "query") kind = Source::query;
    if (kind != Source::none) out.order.push_back(affinity::ExtractorStep{kind, step.name});
  }
  out.reject_malformed = config.reject_malformed;
  out.max_user_length = config.max_user_length;
  out.authenticated_wins = config.authenticated_wins;
  out.normalise.lower_case = config.lower_case;
  out.normalise.strip_domain = config.strip_domain;
  out.normalise.notes_canonical = config.notes_canonical;
  out.normalise.map = config.map;
  return out;
}

bool resolve_servers(const conf::Config& config, std::vector<ServerTarget>& out, std::string& error) {
  out.clear();
  for (const auto& server : config.servers) {
    ServerTarget target;
    target.id = server.id;
    target.weight = server.weight;
    target.host_port = server.address.to_string();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* result = nullptr;
    std::string port = std::to_string(server.address.port);
    int rc = getaddrinfo(server.address.host.c_str(), port.c_str(), &hints, &result);
    if (rc != 0 || !result) {
      error = "server " + server.id + ": cannot resolve " + server.address.host + ": " + gai_strerror(rc);
      return false;
    }
    std::memcpy(&target.addr, result->ai_addr, result->ai_addrlen);
    freeaddrinfo(result);
    target.slot = static_cast<uint32_t>(out.size());
    out.push_back(std::move(target));
  }
  return true;
}

RequestLimits request_limits(const conf::LimitConfig& config) {
  RequestLimits limits;
  limits.max_uri_length = config.max_uri_length;
  limits.max_header_bytes = config.max_header_bytes;
  limits.max_header_count = config.max_header_count;
  limits.max_body_bytes = config.max_body_bytes;
  return limits;
}

affinity::OwnershipSourceConfig ownership_source_config(const conf::OwnershipConfig& oc) {
  using affinity::ChangeDetection;
  using affinity::SourceKind;
  affinity::OwnershipSourceConfig sc;
  switch (oc.source) {
    case conf::OwnershipSourceKind::postgresql: sc.kind = SourceKind::postgresql; break;
    case conf::OwnershipSourceKind::mariadb: sc.kind = SourceKind::mariadb; break;
    case conf::OwnershipSourceKind::odbc: sc.kind = SourceKind::odbc; break;
    case conf::OwnershipSourceKind::sqlite:
    case conf::OwnershipSourceKind::none: sc.kind = SourceKind::sqlite; break;
  }
  switch (oc.change_detection) {
    case conf::ChangeDetectionMode::epoch: sc.change_detection = ChangeDetection::epoch; break;
    case conf::ChangeDetectionMode::watermark: sc.change_detection = ChangeDetection::watermark; break;
    case conf::ChangeDetectionMode::full_scan: sc.change_detection = ChangeDetection::full_scan; break;
  }
  sc.sqlite_path = oc.sqlite_path;
  sc.pg_conninfo = oc.postgresql;
  sc.mariadb.host = oc.mariadb.host;
  sc.mariadb.port = oc.mariadb.port;
  sc.mariadb.unix_socket = oc.mariadb.socket;
  sc.mariadb.user = oc.mariadb.user;
  sc.mariadb.database = oc.mariadb.database;
  sc.mariadb.password_file = oc.mariadb.password_file;
  sc.mariadb.tls = oc.mariadb.tls;
  sc.mariadb.tls_ca_file = oc.mariadb.tls_ca_file;
  sc.odbc.connection = oc.odbc.connection;
  sc.odbc.password_file = oc.odbc.password_file;
  sc.watermark_overlap = oc.watermark_overlap;
  sc.queries = affinity::default_queries(sc.change_detection);
  if (!oc.query_full.empty()) sc.queries.full = oc.query_full;
  if (!oc.query_delta.empty()) sc.queries.delta = oc.query_delta;
  if (!oc.query_servers.empty()) sc.queries.servers = oc.query_servers;
  if (!oc.query_change.empty()) sc.queries.change = oc.query_change;
  sc.poll_interval = oc.poll_interval;
  // Without an epoch there is nothing for a NOTIFY trigger to announce: PostgreSQL polls.
  if (sc.change_detection != ChangeDetection::epoch) sc.delta_poll_interval = oc.poll_interval;
  sc.resync_interval = oc.resync_interval;
  sc.reconnect_min = oc.reconnect_min;
  sc.reconnect_max = oc.reconnect_max;
  sc.stale_after = oc.stale_after;
  sc.cache_file = oc.cache_file;
  return sc;
}

std::vector<uint16_t> assign_listener_slots(const conf::Config& config, std::vector<std::string>& names) {
  std::vector<uint16_t> slots;
  for (const auto& listener : config.listeners) {
    size_t slot = 0;
    while (slot < names.size() && names[slot] != listener.name) ++slot;
    if (slot == names.size()) names.push_back(listener.name);
    slots.push_back(static_cast<uint16_t>(std::min<size_t>(slot, UINT16_MAX)));
  }
  return slots;
}

}  // namespace sprayer::proxy
