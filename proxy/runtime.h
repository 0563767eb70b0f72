// What the control thread publishes to workers: the config and the resolved server list,
// immutable and shared; a worker swaps its pointer at a loop boundary. Built by
// config_adapters.h (servers, extractor) and control/tls_loading.h (certificates).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "affinity/extract.h"
#include "conf/config.h"

namespace sprayer::proxy {

class TlsClientContext;
class TlsContext;
class AccessLog;
class DirectoryClient;

// A server's backend TLS context, replaced in place by a reload (SIGHUP): connections that
// start afterwards use the new one, established ones keep theirs.
struct ServerTls {
  std::atomic<std::shared_ptr<const TlsClientContext>> context;
};

struct ServerTarget {
  std::string id;
  std::string host_port;            // for the Host header when preserve_host is off, and logs
  sockaddr_storage addr{};
  uint32_t weight = 1;
  // Stable for the process's life: the index of this server's upstream pools in every
  // worker. A reload keeps it for a server whose id and address stay; a new or moved
  // server gets a new one, so requests in flight never switch servers under them.
  uint32_t slot = 0;
  std::shared_ptr<ServerTls> tls;  // null = plain HTTP to this server
};

struct Runtime {
  std::shared_ptr<const conf::Config> config;
  std::vector<ServerTarget> servers;
  affinity::ExtractorConfig extractor;  // how users are found in requests
  std::vector<std::shared_ptr<const TlsContext>> listener_tls;  // per listener; null = plain
  // Per listener, its row in the per-listener stats (by name, stable for the process's life).
  std::vector<uint16_t> listener_slots;
  std::shared_ptr<AccessLog> access_log;  // null = off; thread-safe hand-off to its writer
  std::string check_headers;  // extra status-check header lines; may hold a login: never log
  std::shared_ptr<DirectoryClient> directory;  // null = no directory lookup (restart-only)
};

}  // namespace sprayer::proxy
