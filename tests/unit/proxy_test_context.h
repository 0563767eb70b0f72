// A worker's data-path context on a private loop, without a Worker thread, listener or
// mailbox, and a fake pool server on a loopback socket, both driven from the test thread:
// the loop runs until a predicate holds or a deadline passes, the fake server is polled
// without blocking from inside the predicates.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tests/unit/test_loop.h"
#include "tests/unit/test_sockets.h"

#include "proxy/config_adapters.h"
#include "proxy/directory_waiters.h"
#include "proxy/downstream_connection.h"
#include "proxy/upstream_pool.h"
#include "proxy/worker_context.h"

namespace sprayer::test {

using namespace std::chrono_literals;

inline void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Reads what is there without waiting; false once the peer closed (or the socket failed).
inline bool drain_socket(int fd, std::string& into) {
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      into.append(buf, static_cast<size_t>(n));
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

// A pool server on 127.0.0.1, port 0. Each accepted connection is kept in order.
struct FakeServer {
  FakeServer() {
    listen_fd = listen_any(port);
    set_nonblocking(listen_fd);
  }
  ~FakeServer() {
    for (int fd : conns)
      if (fd >= 0) close(fd);
    close(listen_fd);
  }
  // Accepts whatever connections are waiting; true when there are at least `n` in all.
  bool accepted(size_t n) {
    for (;;) {
      int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK);
      if (fd < 0) break;
      conns.push_back(fd);
      got.emplace_back();
    }
    return conns.size() >= n;
  }
  // True when connection `i` has sent `until` (counted from `from`).
  bool received(size_t i, std::string_view until, size_t from = 0) {
    if (!accepted(i + 1)) return false;
    drain_socket(conns[i], got[i]);
    return got[i].find(until, from) != std::string::npos;
  }
  void reply(size_t i, std::string_view bytes) { REQUIRE(send(conns[i], bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size())); }
  void hang_up(size_t i) {
    close(conns[i]);
    conns[i] = -1;
  }

  uint16_t port = 0;
  int listen_fd = -1;
  std::vector<int> conns;
  std::vector<std::string> got;
};

// A configuration with one listener (not opened: tests hand sockets over themselves) and one
// server per port, pool1, pool2, ... in that order.
inline std::shared_ptr<conf::Config> make_config(const std::vector<uint16_t>& server_ports) {
  auto config = std::make_shared<conf::Config>();
  config->workers = 1;
  conf::ListenerConfig listener;
  listener.name = "test";
  listener.address = {"127.0.0.1", 0};
  config->listeners.push_back(listener);
  for (size_t i = 0; i < server_ports.size(); ++i) {
    conf::ServerConfig server;
    server.id = "pool" + std::to_string(i + 1);
    server.address = {"127.0.0.1", server_ports[i]};
    config->servers.push_back(server);
  }
  config->timeouts.upstream_connect = 2s;
  return config;
}

inline std::shared_ptr<const proxy::Runtime> make_runtime(std::shared_ptr<conf::Config> config) {
  auto runtime = std::make_shared<proxy::Runtime>();
  runtime->config = std::move(config);
  std::string error;
  REQUIRE(proxy::resolve_servers(*runtime->config, runtime->servers, error));
  return runtime;
}

// Everything WorkerContext refers to, owned here, on a TestLoop.
struct TestWorker final : proxy::DownstreamRegistry {
  explicit TestWorker(std::shared_ptr<const proxy::Runtime> rt)
      : runtime(std::move(rt)),
        route_state(proxy::RouteState::make(*runtime, nullptr, nullptr, 0)),
        extractor(runtime->extractor),
        passive(nullptr, runtime->servers.size()) {
    std::signal(SIGPIPE, SIG_IGN);  // as sprayer itself: a write to a closed peer is an error value
    for (const auto& server : runtime->servers) {
      if (server.slot >= pools.size()) pools.resize(server.slot + 1u);
      pools[server.slot] = std::make_unique<proxy::UpstreamPool>(context, server);
    }
  }
  ~TestWorker() {
    for (auto& pool : pools)
      if (pool) pool->close_idle();
  }
  TestWorker(const TestWorker&) = delete;
  TestWorker& operator=(const TestWorker&) = delete;

  template <class Pred>
  bool run_until(Pred pred, std::chrono::milliseconds limit = 5s) {
    return loop.run_until(pred, limit);
  }
  // Runs the loop dry and closes it: 0 when every handle was closed.
  int close_loop() {
    for (auto& pool : pools)
      if (pool) pool->close_idle();
    return loop.close();
  }

  proxy::UpstreamPool& pool(size_t slot) { return *pools[slot]; }

  void on_connection_opened(proxy::DownstreamConnection*) override { ++opened; }
  void on_connection_closed(proxy::DownstreamConnection*) override { ++closed; }

  TestLoop loop;
  proxy::BufferPool buffers;
  proxy::WorkerStats stats;
  proxy::AccessLogBuffer access_log{nullptr};
  std::shared_ptr<const proxy::Runtime> runtime;
  std::shared_ptr<const proxy::RouteState> route_state;
  affinity::Extractor extractor;
  proxy::PassiveReporter passive;
  proxy::DirectoryWaiters directory_waiters{context};  // never opened: no directory configured
  std::vector<std::unique_ptr<proxy::UpstreamPool>> pools;
  bool draining = false;
  uint64_t spread = 0;  // 0: a request without a user tries the servers in configuration order
  std::vector<affinity::Header> header_scratch;
  int opened = 0;
  int closed = 0;
  proxy::WorkerContext context{loop.get(), buffers,  stats,    access_log, runtime, route_state,   extractor,
                               passive,    directory_waiters, pools, draining, spread,  header_scratch};
};

}  // namespace sprayer::test
