// Loopback socket helpers shared by the loop-level unit tests (blocking, test threads only).
#pragma once

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>

namespace sprayer::test {

// A listening socket on 127.0.0.1 with a port the kernel picked.
inline int listen_any(uint16_t& port, int backlog = 64) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(listen(fd, backlog) == 0);
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

// A port on 127.0.0.1 that refuses connections for as long as this lives (bound, not
// listening: no other test can take it meanwhile).
struct RefusingPort {
  RefusingPort() {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~RefusingPort() { close(fd); }
  int fd = -1;
  uint16_t port = 0;
};

// A blocking client connected to 127.0.0.1:port (5 s receive timeout), retried for up to 5 s
// while the listener comes up; each attempt uses a fresh socket.
inline int connect_to(uint16_t port) {
  for (int i = 0; i < 250; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
    close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  FAIL("cannot connect");
  return -1;
}

// Reads until `until` appears (or EOF / timeout); returns everything read.
inline std::string read_until(int fd, std::string_view until) {
  std::string got;
  char buf[4096];
  while (got.find(until) == std::string::npos) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

}  // namespace sprayer::test
