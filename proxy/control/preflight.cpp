// The checks of `sprayer -t` that need the world: names, files, ports, the SQLite database.
#include "proxy/control/preflight.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "affinity/ownership_source.h"
#include "proxy/config_adapters.h"
#include "proxy/control/tls_loading.h"
#include "proxy/tls/tls_context.h"

namespace sprayer::proxy {
namespace {

std::string folder_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

class Checker {
 public:
  explicit Checker(const conf::Config& config) : config_(config) {}

  PreflightResult run() {
    resolve();
    listener_files();
    server_files();
    access_log();
    ownership();
    ports();
    return std::move(result_);
  }

 private:
  void error(const std::string& key, std::string message, std::initializer_list<std::string_view> fallbacks = {}) {
    result_.errors.push_back(config_.error_at(key, std::move(message), fallbacks));
  }
  void warning(const std::string& key, std::string message) {
    result_.warnings.push_back(config_.error_at(key, "warning: " + std::move(message)));
  }

  // The start opens it read-only; so does this.
  bool readable(const std::string& file, const std::string& key) {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      error(key, "cannot open " + file + ": " + std::strerror(errno));
      return false;
    }
    ::close(fd);
    return true;
  }

  void resolve() {
    for (size_t i = 0; i < config_.servers.size(); ++i) {
      const conf::ServerConfig& server = config_.servers[i];
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_NUMERICSERV;
      addrinfo* found = nullptr;
      int rc = getaddrinfo(server.address.host.c_str(), std::to_string(server.address.port).c_str(), &hints, &found);
      if (rc != 0 || !found) {
        error("servers[" + std::to_string(i) + "].address",
              "cannot resolve " + server.address.host + ": " + gai_strerror(rc));
        resolved_ = false;
      }
      if (found) freeaddrinfo(found);
    }
  }

  void listener_files() {
    bool all_open = true;
    for (size_t i = 0; i < config_.listeners.size(); ++i) {
      const conf::TlsConfig& tls = config_.listeners[i].tls;
      if (!tls.enabled) continue;
      std::string base = "listeners[" + std::to_string(i) + "].tls";
      for (size_t j = 0; j < tls.certificates.size(); ++j) {
        std::string at = base + ".certificates[" + std::to_string(j) + "]";
        all_open = readable(tls.certificates[j].cert, at + ".cert") && all_open;
        all_open = readable(tls.certificates[j].key, at + ".key") && all_open;
      }
      if (!tls.ticket_key_file.empty()) all_open = readable(tls.ticket_key_file, base + ".ticket_key_file") && all_open;
    }
    if (!all_open) return;
    // Every file opens: now whether they hold what they must (a key that fits its certificate).
    std::vector<std::shared_ptr<const TlsContext>> contexts;
    std::string problem;
    if (!load_listener_tls(config_, contexts, problem)) result_.errors.push_back({config_.source, 0, 0, "", problem});
  }

  void server_files() {
    bool all_open = true;
    for (size_t i = 0; i < config_.servers.size(); ++i) {
      const conf::UpstreamTlsConfig& tls = config_.servers[i].tls;
      if (!tls.enabled) continue;
      std::string base = "servers[" + std::to_string(i) + "].tls.";
      // A server's own tls block overrides upstream.tls key by key: point at whichever was written.
      auto check = [&](const std::string& file, const char* key) {
        if (file.empty()) return;
        std::string own = base + key;
        all_open = readable(file, config_.positions.contains(own) ? own : std::string("upstream.tls.") + key) &&
                   all_open;
      };
      check(tls.ca_file, "ca_file");
      check(tls.client_cert, "client_cert");
      check(tls.client_key, "client_key");
    }
    if (!all_open || !resolved_) return;
    std::vector<ServerTarget> targets;
    std::string problem;
    if (!resolve_servers(config_, targets, problem) || !load_server_tls(config_, targets, problem))
      result_.errors.push_back({config_.source, 0, 0, "", problem});
  }

  void access_log() {
    const conf::AccessLogConfig& log = config_.access_log;
    if (!log.enabled || log.path == "stderr") return;
    std::string folder = folder_of(log.path);
    struct stat st {};
    if (::stat(folder.c_str(), &st) != 0) {
      error("access_log.path", "folder " + folder + ": " + std::strerror(errno), {"access_log.enabled"});
    } else if (!S_ISDIR(st.st_mode)) {
      error("access_log.path", folder + " is not a folder", {"access_log.enabled"});
    } else if (::access(log.path.c_str(), F_OK) == 0 ? ::access(log.path.c_str(), W_OK) != 0
                                                     : ::access(folder.c_str(), W_OK | X_OK) != 0) {
      error("access_log.path", "cannot write " + log.path + ": " + std::strerror(errno), {"access_log.enabled"});
    }
  }

  void ownership() {
    const conf::OwnershipConfig& own = config_.ownership;
    if (!own.cache_file.empty() && ::access(folder_of(own.cache_file).c_str(), W_OK | X_OK) != 0)
      warning("ownership.cache_file", "cannot write in " + folder_of(own.cache_file) + " (" + std::strerror(errno) +
                                          "): the snapshot will not be kept for the next start");
    const std::string& state = config_.admin.state_file;
    if (!state.empty() && ::access(folder_of(state).c_str(), W_OK | X_OK) != 0)
      warning("admin.state_file", "cannot write in " + folder_of(state) + " (" + std::strerror(errno) +
                                      "): drain and maintenance will not survive a restart");
    if (own.source != conf::OwnershipSourceKind::sqlite) return;
    sqlite3* raw = nullptr;
    int rc = sqlite3_open_v2(own.sqlite_path.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    std::unique_ptr<sqlite3, int (*)(sqlite3*)> db(raw, sqlite3_close);
    if (rc != SQLITE_OK) {
      error("ownership.sqlite_path", "cannot open " + own.sqlite_path + " read-only: " +
                                         (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
      return;
    }
    // Preparing the queries finds a file that is not the pool's database (no such table).
    affinity::OwnershipQueries defaults;
    for (auto [key, text] : {std::pair{"ownership.query_full", own.query_full.empty() ? defaults.full : own.query_full},
                             std::pair{"ownership.query_servers",
                                       own.query_servers.empty() ? defaults.servers : own.query_servers}}) {
      sqlite3_stmt* stmt = nullptr;
      if (sqlite3_prepare_v2(db.get(), text.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
        error(key, own.sqlite_path + ": " + sqlite3_errmsg(db.get()), {"ownership.sqlite_path"});
      }
      sqlite3_finalize(stmt);
    }
  }

  // A bind without SO_REUSEPORT: a port held by any listening socket, sprayer's own included, fails.
  void probe(const conf::Endpoint& address, bool freebind, const std::string& key) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET, address.host.c_str(), &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      v4->sin_port = htons(address.port);
      len = sizeof(sockaddr_in);
    } else if (inet_pton(AF_INET6, address.host.c_str(), &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(address.port);
      len = sizeof(sockaddr_in6);
    } else {
      return;  // the loader accepts numeric addresses only
    }
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (freebind) setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
    int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
    int err = errno;
    ::close(fd);
    if (rc == 0) return;
    if (err == EADDRINUSE)
      warning(key, address.to_string() + " is in use: a start now would be refused (sprayer shares no port with "
                                         "another process); expected while the sprayer this file is for runs");
    else if (err == EACCES)
      warning(key, "cannot bind " + address.to_string() + " (" + std::strerror(err) +
                       "): a port below 1024 needs CAP_NET_BIND_SERVICE, as the systemd unit gives");
    else
      error(key, "cannot bind " + address.to_string() + ": " + std::strerror(err));
  }

  void ports() {
    for (size_t i = 0; i < config_.listeners.size(); ++i)
      probe(config_.listeners[i].address, config_.listeners[i].freebind,
            "listeners[" + std::to_string(i) + "].address");
    if (config_.admin.enabled) probe(config_.admin.address, false, "admin.address");
  }

  const conf::Config& config_;
  PreflightResult result_;
  bool resolved_ = true;
};

}  // namespace

PreflightResult preflight(const conf::Config& config) { return Checker(config).run(); }

}  // namespace sprayer::proxy
