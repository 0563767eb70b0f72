// The active checker on a real private loop: a healthy server comes up, a closed port goes
// down after `fall` failures, a server answering 200 without the Traveler text fails, and the
// loop closes cleanly after stop().
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "tests/unit/test_sockets.h"

#include "health/active_checker.h"

using namespace sprayer::health;
using namespace std::chrono_literals;

namespace {

using sprayer::test::listen_any;


// Answers every connection with `reply` until `stop`.
struct FakeServer {
  uint16_t port = 0;
  int fd = -1;
  std::atomic<bool> stop{false};
  std::thread thread;
  explicit FakeServer(std::string reply) {
    fd = listen_any(port);
    thread = std::thread([this, reply] {
      while (!stop) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0) continue;
        int c = accept(fd, nullptr, nullptr);
        if (c < 0) continue;
        char buf[2048];
        recv(c, buf, sizeof buf, 0);
        send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
        close(c);
      }
    });
  }
  ~FakeServer() {
    stop = true;
    thread.join();
    close(fd);
  }
};

ActiveChecker::Target target(const std::string& id, uint16_t port) {
  ActiveChecker::Target t;
  t.id = id;
  auto* a = reinterpret_cast<sockaddr_in*>(&t.addr);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a->sin_port = htons(port);
  t.host = "127.0.0.1:" + std::to_string(port);
  return t;
}

}  // namespace

TEST_CASE("active checks mark servers up and down on a real loop") {
  FakeServer healthy("HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\nTraveler server is available.");
  FakeServer servlet_only("HTTP/1.1 200 OK\r\nContent-Length: 33\r\n\r\nTraveler server is not available.");
  uint16_t closed_port = 0;
  close(listen_any(closed_port));

  HealthSpec spec;
  spec.check.interval = 50ms;
  spec.check.timeout = 300ms;
  spec.check.rise = 1;
  spec.check.fall = 2;
  spec.passive.min_hold = 10ms;
  SplitMix64 random(7);
  SteadyClock clock;
  HealthTracker tracker(spec, random);
  std::vector<std::string> ids{"good", "dead", "servlet"};
  tracker.set_servers(ids, clock.now());

  uv_loop_t loop;
  uv_loop_init(&loop);
  int changes = 0;
  ActiveChecker checker(&loop, tracker, clock, [&] { ++changes; });
  checker.set_targets({target("good", healthy.port), target("dead", closed_port), target("servlet", servlet_only.port)});
  checker.start();

  auto state = [&](const char* id) { return tracker.view()->find(id)->state; };
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline &&
         !(state("dead") == ServerState::down && state("servlet") == ServerState::down &&
           tracker.find("good")->counters().checks_passed >= 2))
    uv_run(&loop, UV_RUN_ONCE);

  CHECK(state("good") == ServerState::up);
  CHECK(state("dead") == ServerState::down);
  CHECK(state("servlet") == ServerState::down);
  CHECK(tracker.find("good")->counters().checks_passed >= 2);
  CHECK(changes >= 2);
  CHECK(checker.checks_started() >= 6);

  bool stopped = false;
  checker.stop([&] { stopped = true; });
  for (int i = 0; i < 100 && !stopped; ++i) uv_run(&loop, UV_RUN_ONCE);
  CHECK(stopped);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("a server added while the checker runs (reload) is checked without waiting for another event") {
  FakeServer healthy("HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\nTraveler server is available.");
  HealthSpec spec;
  spec.check.interval = 50ms;
  spec.check.timeout = 300ms;
  SplitMix64 random(11);
  SteadyClock clock;
  HealthTracker tracker(spec, random);

  uv_loop_t loop;
  uv_loop_init(&loop);
  ActiveChecker checker(&loop, tracker, clock, nullptr);
  checker.start();  // nothing to check: no timer armed
  std::vector<std::string> ids{"added"};
  tracker.set_servers(ids, clock.now());
  checker.set_targets({target("added", healthy.port)});

  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline && tracker.find("added")->liveness() != Liveness::up)
    uv_run(&loop, UV_RUN_ONCE);
  CHECK(tracker.find("added")->liveness() == Liveness::up);
  CHECK(checker.checks_started() >= 1);

  bool stopped = false;
  checker.stop([&] { stopped = true; });
  for (int i = 0; i < 100 && !stopped; ++i) uv_run(&loop, UV_RUN_ONCE);
  CHECK(stopped);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}
