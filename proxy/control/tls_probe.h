// The proxy's side of HTTPS health checks: health::ProbeTls sessions made from each server's
// backend TLS context, so a check verifies exactly what the data path verifies.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "health/probe_tls.h"
#include "proxy/buffer_pool.h"
#include "proxy/runtime.h"

namespace sprayer::proxy {

// Lives on the control thread as long as the checker. Handshake failures are logged once per
// server and distinct reason (a down server is checked every interval).
class TlsProbeFactory {
 public:
  explicit TlsProbeFactory(std::vector<ServerTarget> servers) : servers_(std::move(servers)) {}
  std::unique_ptr<health::ProbeTls> make(const std::string& server_id);
  void report(const std::string& server_id, const std::string& error);  // "" = handshake ok
  // A reload's server list; probes in flight keep the context they started with.
  void set_servers(std::vector<ServerTarget> servers) { servers_ = std::move(servers); }

 private:
  std::vector<ServerTarget> servers_;
  BufferPool buffers_{16 * 1024, 16};
  std::map<std::string, std::string> last_error_;
};

}  // namespace sprayer::proxy
