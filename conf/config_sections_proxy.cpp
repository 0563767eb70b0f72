// The proxy's own sections of the file, one read_* each: listeners (and their TLS), servers
// (and upstream TLS), timeouts, limits, upstream, http, admin, log, access_log. A new key of
// these goes into its section's field list here; checks across keys go to config_checks.cpp.
#include <limits>
#include <string>
#include <utility>

#include "conf/loader.h"

namespace sprayer::conf::detail {

void Loader::read_listener(const Item& item, ListenerConfig& listener) {
  read_map(item, {
      {"name", true, [&](const Item& v) { read_name(v, listener.name); }},
      {"address", true, [&](const Item& v) { read_endpoint(v, true, listener.address); }},
      {"backlog", false, [&](const Item& v) { read_integer(v, 1, 65535, listener.backlog); }},
      {"tls", false, [&](const Item& v) { read_tls(v, listener.tls); }},
      {"redirect_to_https", false, [&](const Item& v) { read_bool(v, listener.redirect_to_https); }},
      {"https_port", false,
       [&](const Item& v) {
         uint32_t port = listener.https_port;
         if (read_integer(v, 1, 65535, port)) listener.https_port = static_cast<uint16_t>(port);
       }},
      {"freebind", false, [&](const Item& v) { read_bool(v, listener.freebind); }},
  });
  check_listener(item, listener);
}

void Loader::read_tls(const Item& item, TlsConfig& tls) {
  // Writing a tls section turns TLS on; "enabled: false" keeps the section but switches it off.
  tls.enabled = true;
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 2> versions{{
      {"1.2", "1.2"},
      {"1.3", "1.3"},
  }};
  read_map(item, {
      {"enabled", false, [&](const Item& v) { read_bool(v, tls.enabled); }},
      {"certificates", true,
       [&](const Item& v) {
         read_list(v, "certificate", tls.certificates, [this](const Item& e, TlsCertificateConfig& c) {
           read_map(e, {
               {"cert", true, [&](const Item& f) { if (read_string(f, c.cert)) c.cert = resolve_path(c.cert); }},
               {"key", true, [&](const Item& f) { if (read_string(f, c.key)) c.key = resolve_path(c.key); }},
           });
         });
       }},
      {"min_version", false,
       [&](const Item& v) {
         std::string_view chosen;
         if (read_choice(v, versions, chosen)) tls.min_version = std::string(chosen);
       }},
      {"ciphers", false, [&](const Item& v) { read_string(v, tls.ciphers); }},
      {"ciphersuites", false, [&](const Item& v) { read_string(v, tls.ciphersuites); }},
      {"groups", false, [&](const Item& v) { read_string(v, tls.groups); }},
      {"alpn", false, [&](const Item& v) { read_string_list(v, tls.alpn); }},
      {"strict_sni", false, [&](const Item& v) { read_bool(v, tls.strict_sni); }},
      {"check_host", false, [&](const Item& v) { read_bool(v, tls.check_host); }},
      {"ticket_key_file", false,
       [&](const Item& v) {
         if (read_string(v, tls.ticket_key_file)) tls.ticket_key_file = resolve_path(tls.ticket_key_file);
       }},
      {"session_cache_size", false,
       [&](const Item& v) { read_integer(v, 0, 10'000'000, tls.session_cache_size); }},
      {"session_tickets", false, [&](const Item& v) { read_bool(v, tls.session_tickets); }},
      {"record_layer", false,
       [&](const Item& v) {
         static constexpr std::array<std::pair<std::string_view, std::string_view>, 2> layers{
             {{"sprayer", "sprayer"}, {"openssl", "openssl"}}};
         std::string_view chosen;
         if (read_choice(v, layers, chosen)) tls.record_layer = std::string(chosen);
       }},
      {"session_timeout", false,
       [&](const Item& v) { read_duration(v, std::chrono::seconds(1), std::chrono::hours(7 * 24), tls.session_timeout); }},
  });
}

void Loader::read_server(const Item& item, ServerConfig& server) {
  read_map(item, {
      {"id", true, [&](const Item& v) { read_name(v, server.id); }},
      {"address", true, [&](const Item& v) { read_endpoint(v, false, server.address); }},
      {"weight", false, [&](const Item& v) { read_integer(v, 1, 1000, server.weight); }},
      {"tls", false, [&](const Item& v) { server_tls_.emplace(item.path, v); }},
  });
}

void Loader::read_upstream_tls(const Item& item, UpstreamTlsConfig& tls) {
  // As for listeners, writing a tls block turns TLS on unless it says "enabled: false".
  tls.enabled = true;
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 2> versions{{
      {"1.2", "1.2"},
      {"1.3", "1.3"},
  }};
  auto file = [this](std::string& out) {
    return [this, &out](const Item& v) {
      if (read_string(v, out)) out = resolve_path(out);
    };
  };
  read_map(item, {
      {"enabled", false, [&](const Item& v) { read_bool(v, tls.enabled); }},
      {"verify", false, [&](const Item& v) { read_bool(v, tls.verify); }},
      {"ca_file", false, file(tls.ca_file)},
      {"sni", false,
       [&](const Item& v) {
         if (read_string(v, tls.sni) &&
             (tls.sni.size() > 253 || tls.sni.find_first_of(" \t/:@") != std::string::npos))
           error(v, "must be a host name");
       }},
      {"client_cert", false, file(tls.client_cert)},
      {"client_key", false, file(tls.client_key)},
      {"min_version", false,
       [&](const Item& v) {
         std::string_view chosen;
         if (read_choice(v, versions, chosen)) tls.min_version = std::string(chosen);
       }},
  });
  check_upstream_tls(item, tls);
}

void Loader::apply_server_tls(Config& config) {
  for (size_t i = 0; i < config.servers.size(); ++i) {
    ServerConfig& server = config.servers[i];
    server.tls = config.upstream.tls;
    auto it = server_tls_.find(index_path("servers", i));
    if (it == server_tls_.end()) continue;
    read_upstream_tls(it->second, server.tls);
  }
}

void Loader::read_timeouts(const Item& item, TimeoutConfig& timeouts) {
  // Zero would mean "expire at once" to a libuv timer, never "no timeout": rejected everywhere.
  auto timeout = [this](Duration& out, Duration min = Duration(1)) {
    return [this, &out, min](const Item& v) { read_duration(v, min, max_timeout, out); };
  };
  read_map(item, {
      {"client_header", false, timeout(timeouts.client_header)},
      {"client_idle", false, timeout(timeouts.client_idle)},
      {"client_body", false, timeout(timeouts.client_body)},
      {"client_send", false, timeout(timeouts.client_send)},
      {"upstream_connect", false, timeout(timeouts.upstream_connect)},
      // Long-poll requests (ActiveSync Ping) legitimately wait for minutes; below a second
      // this can only be a unit mistake.
      {"upstream_response", false, timeout(timeouts.upstream_response, std::chrono::seconds(1))},
      {"upstream_idle", false, timeout(timeouts.upstream_idle)},
      {"drain", false, timeout(timeouts.drain)},
      {"upgrade", false, timeout(timeouts.upgrade)},
  });
}

void Loader::read_limits(const Item& item, LimitConfig& limits) {
  read_map(item, {
      {"max_connections", false, [&](const Item& v) { read_integer(v, 1, 10'000'000, limits.max_connections); }},
      {"max_header_bytes", false, [&](const Item& v) { read_size(v, 1 << 10, 1 << 20, limits.max_header_bytes); }},
      {"max_header_count", false, [&](const Item& v) { read_integer(v, 1, 10'000, limits.max_header_count); }},
      {"max_uri_length", false, [&](const Item& v) { read_size(v, 256, 1 << 20, limits.max_uri_length); }},
      {"max_body_bytes", false,
       [&](const Item& v) { read_size64(v, 0, uint64_t(1) << 50, limits.max_body_bytes); }},
      {"memory_budget", false,
       [&](const Item& v) {
         // 0: sized from the machine at start. Below 1 MiB every connection would be refused.
         if (read_size64(v, 0, uint64_t(1) << 50, limits.memory_budget) && limits.memory_budget != 0 &&
             limits.memory_budget < (uint64_t(1) << 20))
           error(v, "must be 0 (from the machine's memory) or at least 1MiB");
       }},
  });
}

void Loader::read_upstream(const Item& item, UpstreamConfig& upstream) {
  read_map(item, {
      {"max_idle_per_server", false,
       [&](const Item& v) { read_integer(v, 0, 100'000, upstream.max_idle_per_server); }},
      {"max_requests_per_connection", false,
       [&](const Item& v) {
         read_integer(v, 0, std::numeric_limits<uint32_t>::max(), upstream.max_requests_per_connection);
       }},
      {"tls", false, [&](const Item& v) { read_upstream_tls(v, upstream.tls); }},
  });
}

void Loader::read_http(const Item& item, HttpConfig& http) {
  read_map(item, {
      {"preserve_host", false, [&](const Item& v) { read_bool(v, http.preserve_host); }},
      {"via", false,
       [&](const Item& v) {
         if (read_string(v, http.via) && !http.via.empty() && !is_http_token(http.via)) {
           error(v, "must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~), or \"\" for no Via header");
         }
       }},
      {"x_forwarded", false, [&](const Item& v) { read_bool(v, http.x_forwarded); }},
      {"allow_upgrade", false, [&](const Item& v) { read_bool(v, http.allow_upgrade); }},
      {"buffer_high_watermark", false,
       [&](const Item& v) { read_size(v, 1 << 10, 1 << 30, http.buffer_high_watermark); }},
      {"buffer_low_watermark", false,
       [&](const Item& v) { read_size(v, 0, 1 << 30, http.buffer_low_watermark); }},
  });
}

void Loader::read_admin(const Item& item, AdminConfig& admin) {
  read_map(item, {
      {"enabled", false, [&](const Item& v) { read_bool(v, admin.enabled); }},
      {"address", false, [&](const Item& v) { read_endpoint(v, true, admin.address); }},
      {"token", false, [&](const Item& v) { read_token(v, admin.token); }},
      {"token_file", false, [&](const Item& v) { read_token_file(v, admin.token_file, admin.token); }},
      {"read_token", false, [&](const Item& v) { read_token(v, admin.read_token); }},
      {"read_token_file", false, [&](const Item& v) { read_token_file(v, admin.read_token_file, admin.read_token); }},
      {"state_file", false,
       [&](const Item& v) {
         if (read_string(v, admin.state_file)) admin.state_file = resolve_path(admin.state_file);
       }},
      {"peer", false, [&](const Item& v) { read_peer(v, admin.peer); }},
  });
  check_admin_tokens(item);
  check_admin_peer(admin);
}

// admin.peer: "host:port" or "http://host:port" (the admin listener speaks plain HTTP); "": none.
void Loader::read_peer(const Item& item, Endpoint& out) {
  if (!expect_scalar(item, "the peer's admin address such as \"http://sprayer2.example.com:9100\"")) return;
  std::string_view text = item.node.Scalar();
  if (text.empty()) {  // what -T prints without a peer
    out = Endpoint{};
    return;
  }
  if (text.rfind("https://", 0) == 0) {
    error(item, "the admin listener speaks plain HTTP: write http://" + std::string(text.substr(8)) +
                    " (keep the admin addresses on a management network)");
    return;
  }
  if (text.rfind("http://", 0) == 0) text.remove_prefix(7);
  if (!text.empty() && text.back() == '/') text.remove_suffix(1);
  Endpoint value;
  if (std::string problem = endpoint_problem(text, value); !problem.empty()) {
    error(item, "invalid address " + quoted(std::string(item.node.Scalar())) + ": " + problem);
    return;
  }
  if (value.port == 0) {
    error(item, "port must be between 1 and 65535");
    return;
  }
  out = std::move(value);
}

void Loader::read_token(const Item& item, std::string& out) {
  if (read_string(item, out) && !is_visible_ascii(out))
    error(item, "must be printable ASCII without spaces (it is sent as an HTTP bearer token)");
}

void Loader::read_token_file(const Item& item, std::string& path, std::string& token) {
  if (!read_string(item, path)) return;
  if (path.empty()) return;
  path = resolve_path(path);
  std::string text;
  if (std::string problem = read_whole_file(path, text); !problem.empty()) {
    error(item, path + ": " + problem);
    return;
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (text.empty() || !is_visible_ascii(text)) {
    error(item, path + ": must hold one token of printable ASCII without spaces");
    return;
  }
  token = std::move(text);
}

void Loader::read_log(const Item& item, LogConfig& log) {
  static constexpr std::array<std::pair<std::string_view, LogLevel>, 4> levels{{
      {"debug", LogLevel::debug},
      {"info", LogLevel::info},
      {"warn", LogLevel::warn},
      {"error", LogLevel::error},
  }};
  read_map(item, {
      {"level", false, [&](const Item& v) { read_choice(v, levels, log.level); }},
  });
}

void Loader::read_access_log(const Item& item, AccessLogConfig& access_log) {
  static constexpr std::array<std::pair<std::string_view, AccessLogFormat>, 2> formats{{
      {"json", AccessLogFormat::json},
      {"combined", AccessLogFormat::combined},
  }};
  read_map(item, {
      {"enabled", false, [&](const Item& v) { read_bool(v, access_log.enabled); }},
      {"path", false,
       [&](const Item& v) {
         if (!read_string(v, access_log.path)) return;
         if (access_log.path.empty())
           error(v, "must be a file name or \"stderr\"");
         else if (access_log.path != "stderr")
           access_log.path = resolve_path(access_log.path);
       }},
      {"format", false, [&](const Item& v) { read_choice(v, formats, access_log.format); }},
      {"max_queued_bytes", false,
       [&](const Item& v) { read_size64(v, 64u << 10, uint64_t{1} << 32, access_log.max_queued_bytes); }},
      {"mask_query", false,
       [&](const Item& v) {
         std::vector<std::string> names;
         read_string_list(v, names);
         for (const auto& name : names) {
           if (name.empty() || name.find_first_of("=&# ") != std::string::npos) {
             error(v, "each entry must be a query parameter name (no '=', '&', '#' or space)");
             return;
           }
         }
         access_log.mask_query = std::move(names);
       }},
  });
}

}  // namespace sprayer::conf::detail
