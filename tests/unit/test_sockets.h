// Loopback socket helpers shared by the loop-level unit tests (blocking, test threads only).
#pragma once

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

namespace sprayer::test {

// A listening socket on 127.0.0.1 with a port the kernel picked.
inline int listen_any(uint16_t& port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(listen(fd, 64) == 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return fd;
}

// A port nobody listens on right now.
inline uint16_t free_port() {
  uint16_t port = 0;
  close(listen_any(port));
  return port;
}

}  // namespace sprayer::test
