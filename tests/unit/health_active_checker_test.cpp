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
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "tests/unit/test_sockets.h"

#include "health/active_checker.h"

using namespace sprayer::health;
using namespace std::chrono_literals;

namespace {

using sprayer::test::listen_any;


// Accepts connections on loopback until destroyed; `serve` handles each one and closes it.
struct FakeListener {
  uint16_t port = 0;
  int fd = -1;
  std::atomic<bool> stop{false};
  std::thread thread;
  explicit FakeListener(std::function<void(int)> serve) {
    fd = listen_any(port);
    thread = std::thread([this, serve = std::move(serve)] {
      while (!stop) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0) continue;
        int c = accept(fd, nullptr, nullptr);
        if (c < 0) continue;
        serve(c);
        close(c);
      }
    });
  }
  ~FakeListener() {
    stop = true;
    thread.join();
    close(fd);
  }
};

// Answers every connection with `reply`.
struct FakeServer {
  FakeListener listener;
  uint16_t& port = listener.port;
  explicit FakeServer(std::string reply)
      : listener([reply](int c) {
          char buf[2048];
          recv(c, buf, sizeof buf, 0);
          send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
        }) {}
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

// Checks every 50 ms with a 300 ms timeout; up after one pass, down after two failures.
HealthSpec quick_spec() {
  HealthSpec spec;
  spec.check.interval = 50ms;
  spec.check.timeout = 300ms;
  spec.check.rise = 1;
  spec.check.fall = 2;
  spec.passive.min_hold = 10ms;
  return spec;
}

// A tracker for `spec` and the private uv loop the checker under test runs on.
struct CheckerLoop {
  HealthSpec spec;
  SplitMix64 random;
  SteadyClock clock;
  HealthTracker tracker{spec, random};
  uv_loop_t loop{};

  CheckerLoop(HealthSpec s, uint64_t seed) : spec(std::move(s)), random(seed) { uv_loop_init(&loop); }
  ServerState state(const char* id) { return tracker.view()->find(id)->state; }
  template <class Pred>
  void run_until(Pred done) {
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline && !done()) uv_run(&loop, UV_RUN_ONCE);
  }
  // Stops the checker; the stop completes and the loop closes with nothing left open.
  void stop(ActiveChecker& checker) {
    bool stopped = false;
    checker.stop([&] { stopped = true; });
    for (int i = 0; i < 100 && !stopped; ++i) uv_run(&loop, UV_RUN_ONCE);
    CHECK(stopped);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
};

}  // namespace

TEST_CASE("active checks mark servers up and down on a real loop") {
  FakeServer healthy("HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\nTraveler server is available.");
  FakeServer servlet_only("HTTP/1.1 200 OK\r\nContent-Length: 33\r\n\r\nTraveler server is not available.");
  uint16_t closed_port = 0;
  close(listen_any(closed_port));

  CheckerLoop t(quick_spec(), 7);
  std::vector<std::string> ids{"good", "dead", "servlet"};
  t.tracker.set_servers(ids, t.clock.now());

  int changes = 0;
  ActiveChecker checker(&t.loop, t.tracker, t.clock, [&] { ++changes; });
  checker.set_targets({target("good", healthy.port), target("dead", closed_port), target("servlet", servlet_only.port)});
  checker.start();

  t.run_until([&] {
    return t.state("dead") == ServerState::down && t.state("servlet") == ServerState::down &&
           t.tracker.find("good")->counters().checks_passed >= 2;
  });

  CHECK(t.state("good") == ServerState::up);
  CHECK(t.state("dead") == ServerState::down);
  CHECK(t.state("servlet") == ServerState::down);
  CHECK(t.tracker.find("good")->counters().checks_passed >= 2);
  CHECK(changes >= 2);
  CHECK(checker.checks_started() >= 6);
  t.stop(checker);
}

TEST_CASE("check request headers: Basic login and extra headers, in order") {
  // RFC 7617's example credentials.
  CHECK(check_request_headers("Aladdin:open sesame", {}) == "Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n");
  CHECK(check_request_headers("a:b", {}) == "Authorization: Basic YTpi\r\n");
  CHECK(check_request_headers("ab:", {}) == "Authorization: Basic YWI6\r\n");
  CHECK(check_request_headers("", {{"X-A", "1"}, {"X-B", "two words"}}) == "X-A: 1\r\nX-B: two words\r\n");
  CHECK(check_request_headers("", {}).empty());
}

TEST_CASE("a server that wants a login is up only with the right credentials") {
  // 200 with the Traveler text for the right login and header, 401 otherwise; the last
  // request seen is kept to look at.
  std::mutex mutex;
  std::string last_request;
  FakeListener secured([&](int c) {
    std::string request;
    char buf[2048];
    while (request.find("\r\n\r\n") == std::string::npos) {
      pollfd p{c, POLLIN, 0};
      if (poll(&p, 1, 1000) <= 0) break;
      ssize_t n = recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    bool ok = request.find("\r\nAuthorization: Basic c3ZjOnB3\r\n") != std::string::npos &&
              request.find("\r\nX-Check: 1\r\n") != std::string::npos;
    std::string reply = ok ? "HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\nTraveler server is available."
                           : "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
    send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
    std::lock_guard lock(mutex);
    last_request = request;
  });
  CheckerLoop t(quick_spec(), 13);
  std::vector<std::string> ids{"pool1"};
  t.tracker.set_servers(ids, t.clock.now());
  ActiveChecker checker(&t.loop, t.tracker, t.clock, nullptr);
  checker.set_targets({target("pool1", secured.port)});
  checker.set_request_headers(check_request_headers("svc:wrong", {{"X-Check", "1"}}));
  checker.start();
  t.run_until([&] { return t.state("pool1") == ServerState::down; });
  CHECK(t.state("pool1") == ServerState::down);
  CHECK(t.tracker.find("pool1")->counters().checks_passed == 0);

  // New credentials (a reload) are used by the next checks.
  checker.set_request_headers(check_request_headers("svc:pw", {{"X-Check", "1"}}));
  t.run_until([&] { return t.state("pool1") == ServerState::up; });
  CHECK(t.state("pool1") == ServerState::up);
  {
    std::lock_guard lock(mutex);
    CHECK(last_request.rfind("GET /traveler?action=getStatus HTTP/1.1\r\n", 0) == 0);
    CHECK(last_request.find("\r\nX-Check: 1\r\n\r\n") != std::string::npos);  // extra headers end the head
  }
  t.stop(checker);
}

TEST_CASE("a server added while the checker runs (reload) is checked without waiting for another event") {
  FakeServer healthy("HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\nTraveler server is available.");
  HealthSpec spec;
  spec.check.interval = 50ms;
  spec.check.timeout = 300ms;
  CheckerLoop t(spec, 11);

  ActiveChecker checker(&t.loop, t.tracker, t.clock, nullptr);
  checker.start();  // nothing to check: no timer armed
  std::vector<std::string> ids{"added"};
  t.tracker.set_servers(ids, t.clock.now());
  checker.set_targets({target("added", healthy.port)});

  t.run_until([&] { return t.tracker.find("added")->liveness() == Liveness::up; });
  CHECK(t.tracker.find("added")->liveness() == Liveness::up);
  CHECK(checker.checks_started() >= 1);
  t.stop(checker);
}

TEST_CASE("a server dropped and added again while its check hangs is not checked twice at once") {
  // Accepts into the backlog and never answers: every check waits out its timeout.
  uint16_t port = 0;
  const int hung = listen_any(port);
  HealthSpec spec = quick_spec();
  CheckerLoop t(spec, 13);
  std::vector<std::string> ids{"hung"};
  t.tracker.set_servers(ids, t.clock.now());
  ActiveChecker checker(&t.loop, t.tracker, t.clock, nullptr);
  checker.set_targets({target("hung", port)});
  checker.start();
  t.run_until([&] { return checker.checks_started() == 1; });
  REQUIRE(checker.checks_started() == 1);

  // Two reloads: the new slot's first check is due within one interval (50 ms), long
  // before the hanging probe's 300 ms timeout.
  t.tracker.remove_server("hung");
  t.tracker.add_server("hung", t.clock.now());
  checker.reschedule();
  t.run_until([&] { return checker.checks_started() >= 2; });
  CHECK(checker.checks_started() == 2);
  // The second started only after the first one's answer, which the new slot received.
  CHECK(t.tracker.find("hung")->counters().checks_failed >= 1);
  CHECK(t.tracker.find("hung")->counters().check_outcomes[static_cast<std::size_t>(CheckResult::Outcome::fail_timeout)] >= 1);
  t.stop(checker);
  close(hung);
}

namespace {

// A stand-in for TLS: the client says "HELLO\n", the server "WELCOME\n" (or anything else, a
// failed handshake); then plaintext passes unchanged. Enough to show the checker runs the
// handshake before the request and judges the answer that comes through the session.
class FakeTls final : public ProbeTls {
 public:
  Status handshake() override {
    if (!hello_sent_) {
      out_ += "HELLO\n";
      hello_sent_ = true;
    }
    if (in_.size() < 8) return Status::want_io;
    if (in_.compare(0, 8, "WELCOME\n") != 0) {
      error_ = "refused";
      return Status::error;
    }
    in_.erase(0, 8);
    return Status::ok;
  }
  void feed(const char* data, size_t len) override { in_.append(data, len); }
  Status read(std::string& plaintext) override {
    plaintext += in_;
    in_.clear();
    return Status::want_io;
  }
  Status write(std::string_view plaintext) override {
    out_.append(plaintext);
    return Status::ok;
  }
  std::string take_output() override { return std::move(out_); }
  std::string error() const override { return error_; }

 private:
  bool hello_sent_ = false;
  std::string in_, out_, error_;
};

// Answers the fake handshake with `greeting`, then the request with `reply`.
struct FakeTlsServer {
  std::atomic<int> requests{0};
  FakeListener listener;
  uint16_t& port = listener.port;
  FakeTlsServer(std::string greeting, std::string reply)
      : listener([this, greeting, reply](int c) {
          std::string got;
          auto read_until = [&](const char* marker) {
            for (int i = 0; i < 100 && got.find(marker) == std::string::npos; ++i) {
              pollfd q{c, POLLIN, 0};
              if (poll(&q, 1, 20) <= 0) continue;
              char buf[2048];
              ssize_t n = recv(c, buf, sizeof buf, 0);
              if (n <= 0) break;
              got.append(buf, size_t(n));
            }
            return got.find(marker) != std::string::npos;
          };
          if (read_until("HELLO\n")) {
            send(c, greeting.data(), greeting.size(), MSG_NOSIGNAL);
            if (greeting == "WELCOME\n" && read_until("\r\n\r\n") && got.find("GET /traveler") != std::string::npos) {
              ++requests;
              send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
            }
          }
        }) {}
};

}  // namespace

TEST_CASE("HTTPS checks: handshake through the injected session, then the request; failures mark down") {
  const std::string ok_reply = "HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\nTraveler server is available.";
  FakeTlsServer good("WELCOME\n", ok_reply);
  FakeTlsServer refusing("GO AWAY\n", ok_reply);
  FakeServer plain_only(ok_reply);  // speaks HTTP at once: no handshake answer

  CheckerLoop c(quick_spec(), 7);
  std::vector<std::string> ids{"good", "refusing", "plain", "no-session"};
  c.tracker.set_servers(ids, c.clock.now());

  ActiveChecker checker(&c.loop, c.tracker, c.clock, [] {});
  std::vector<ActiveChecker::Target> targets{target("good", good.port), target("refusing", refusing.port),
                                             target("plain", plain_only.port), target("no-session", good.port)};
  for (auto& t : targets) t.tls = true;
  checker.set_targets(targets);
  int sessions = 0;
  checker.set_tls_factory([&](const std::string& id) -> std::unique_ptr<ProbeTls> {
    if (id == "no-session") return nullptr;  // the proxy could not make one: a failed connect
    ++sessions;
    return std::make_unique<FakeTls>();
  });
  checker.start();

  c.run_until([&] {
    return c.state("refusing") == ServerState::down && c.state("plain") == ServerState::down &&
           c.state("no-session") == ServerState::down && c.tracker.find("good")->counters().checks_passed >= 2;
  });

  CHECK(c.state("good") == ServerState::up);
  CHECK(c.tracker.find("good")->counters().checks_passed >= 2);
  CHECK(good.requests >= 2);
  CHECK(c.state("refusing") == ServerState::down);
  CHECK(refusing.requests == 0);  // no request after a failed handshake
  CHECK(c.state("plain") == ServerState::down);
  CHECK(c.state("no-session") == ServerState::down);
  CHECK(sessions >= 6);
  c.stop(checker);
}
