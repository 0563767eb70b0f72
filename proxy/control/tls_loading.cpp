// Loading the TLS files a configuration names (control thread).
#include "proxy/control/tls_loading.h"

#include <netdb.h>

#include <chrono>
#include <cstring>

#include "proxy/log.h"
#include "proxy/tls/tls_client_context.h"
#include "proxy/tls/tls_context.h"

namespace sprayer::proxy {

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

}  // namespace sprayer::proxy
