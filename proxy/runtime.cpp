// Server address resolution for the published runtime.
#include "proxy/runtime.h"

#include <netdb.h>

#include <chrono>
#include <cstring>

#include "proxy/log.h"
#include "proxy/tls_client_context.h"
#include "proxy/tls_context.h"

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
  out.normalise.lower_case = config.lower_case;
  out.normalise.strip_domain = config.strip_domain;
  out.normalise.notes_canonical = config.notes_canonical;
  out.normalise.map = config.map;
  return out;
}

bool load_listener_tls(const conf::Config& config, std::vector<std::shared_ptr<const TlsContext>>& out,
                       std::string& error, const std::vector<std::shared_ptr<const TlsContext>>* previous) {
  out.clear();
  for (size_t index = 0; index < config.listeners.size(); ++index) {
    const auto& listener = config.listeners[index];
    if (!listener.tls.enabled) {
      out.push_back(nullptr);
      continue;
    }
    const conf::TlsConfig& tc = listener.tls;
    TlsSettings settings;
    for (const auto& c : tc.certificates) settings.certificates.push_back(TlsCertificateFiles{c.cert, c.key});
    settings.min_version = tc.min_version;
    if (!tc.ciphers.empty()) settings.ciphers = tc.ciphers;
    if (!tc.ciphersuites.empty()) settings.ciphersuites = tc.ciphersuites;
    if (!tc.groups.empty()) settings.groups = tc.groups;
    settings.alpn = tc.alpn;
    settings.strict_sni = tc.strict_sni;
    settings.ticket_key_file = tc.ticket_key_file;
    settings.session_cache_size = tc.session_cache_size;
    settings.session_tickets = tc.session_tickets;
    settings.own_records = tc.record_layer == "sprayer";
    settings.session_timeout = std::chrono::duration_cast<std::chrono::seconds>(tc.session_timeout);
    const TlsContext* before = previous && index < previous->size() ? (*previous)[index].get() : nullptr;
    TlsLoadResult loaded = TlsContext::load(settings, std::chrono::system_clock::now(), before);
    if (!loaded.ok()) {
      error = "listener " + listener.name + ": " + loaded.error;
      return false;
    }
    out.push_back(loaded.context);
  }
  return true;
}

namespace {

// Each TLS server's context, loaded from its files; null for plain servers. All or nothing.
bool load_server_contexts(const conf::Config& config, std::vector<std::shared_ptr<const TlsClientContext>>& out,
                          std::string& error) {
  out.assign(config.servers.size(), nullptr);
  for (size_t i = 0; i < config.servers.size(); ++i) {
    const conf::ServerConfig& server = config.servers[i];
    if (!server.tls.enabled) continue;
    TlsClientSettings settings;
    settings.server_id = server.id;
    settings.host = server.address.host;
    settings.sni = server.tls.sni;
    settings.verify = server.tls.verify;
    settings.ca_file = server.tls.ca_file;
    settings.client_cert = server.tls.client_cert;
    settings.client_key = server.tls.client_key;
    settings.min_version = server.tls.min_version;
    TlsClientLoadResult loaded = TlsClientContext::load(settings);
    if (!loaded.ok()) {
      error = "server " + server.id + ": tls: " + loaded.error;
      return false;
    }
    out[i] = loaded.context;
  }
  return true;
}

}  // namespace

bool load_server_tls(const conf::Config& config, std::vector<ServerTarget>& out, std::string& error) {
  std::vector<std::shared_ptr<const TlsClientContext>> contexts;
  if (!load_server_contexts(config, contexts, error)) return false;
  for (size_t i = 0; i < out.size() && i < contexts.size(); ++i) {
    out[i].tls = nullptr;
    if (!contexts[i]) continue;
    if (!config.servers[i].tls.verify)
      LOG_WARN("server %s: TLS certificate verification is OFF (tls.verify: false): anyone on the path can "
               "impersonate this server and read its traffic",
               config.servers[i].id.c_str());
    out[i].tls = std::make_shared<ServerTls>();
    out[i].tls->context.store(contexts[i]);
  }
  return true;
}

bool reload_server_tls(const conf::Config& config, const std::vector<ServerTarget>& servers, std::string& error) {
  std::vector<std::shared_ptr<const TlsClientContext>> contexts;
  if (!load_server_contexts(config, contexts, error)) return false;
  for (size_t i = 0; i < servers.size() && i < contexts.size(); ++i)
    if (servers[i].tls && contexts[i]) servers[i].tls->context.store(contexts[i]);
  return true;
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

}  // namespace sprayer::proxy
