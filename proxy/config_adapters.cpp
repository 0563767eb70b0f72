// From the configuration to the parts of a Runtime: extractor settings, resolved servers.
#include "proxy/config_adapters.h"

#include <netdb.h>

#include <chrono>
#include <cstring>

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

}  // namespace sprayer::proxy
