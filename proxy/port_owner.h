// Who listens on a TCP port: read from /proc (net/tcp, net/tcp6, then the processes' open
// sockets), so that "address in use" can name the process that holds it.
#pragma once

#include <cstdint>
#include <string>

namespace sprayer::proxy {

// "pid 1234 (sprayer)", "another process" when the socket is not visible (another user,
// another namespace), or "" when nothing listens on the port.
std::string describe_port_owner(uint16_t port);

}  // namespace sprayer::proxy
