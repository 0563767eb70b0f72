// Server address resolution for the published runtime.
#include "proxy/runtime.h"

#include <netdb.h>

#include <cstring>

namespace sprayer::proxy {

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
    out.push_back(std::move(target));
  }
  return true;
}

}  // namespace sprayer::proxy
