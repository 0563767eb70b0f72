// A real Worker on its own loop between a blocking client and a blocking fake upstream:
// request forwarding, keep-alive, a refused connect answered 503, drain, clean loop close.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "tests/unit/test_sockets.h"

#include "proxy/config_adapters.h"
#include "proxy/worker.h"

using namespace sprayer;
using namespace std::chrono_literals;

namespace {

using sprayer::test::listen_any;
using sprayer::test::free_port;
using sprayer::test::RefusingPort;
using sprayer::test::connect_to;
using sprayer::test::read_until;

std::shared_ptr<proxy::Runtime> make_runtime(uint16_t listen_port, uint16_t server_port) {
  auto config = std::make_shared<conf::Config>();
  config->workers = 1;
  conf::ListenerConfig listener;
  listener.name = "test";
  listener.address = {"127.0.0.1", listen_port};
  config->listeners.push_back(listener);
  conf::ServerConfig server;
  server.id = "pool1";
  server.address = {"127.0.0.1", server_port};
  config->servers.push_back(server);
  config->timeouts.upstream_connect = 1s;
  auto runtime = std::make_shared<proxy::Runtime>();
  runtime->config = config;
  std::string error;
  REQUIRE(proxy::resolve_servers(*config, runtime->servers, error));
  return runtime;
}

// Drains and joins the worker: afterwards its counters are final (the worker counts a request
// just after its last byte went out, which a client on another thread can outrun).
void stop_and_check(proxy::Worker& worker) {
  worker.begin_drain();
  REQUIRE(worker.wait_finished(5s));
  worker.join();
  CHECK(worker.loop_close_status() == 0);
}

}  // namespace

TEST_CASE("worker forwards requests over keep-alive and drains cleanly") {
  uint16_t upstream_port = 0;
  int upstream = listen_any(upstream_port);
  uint16_t port = free_port();
  std::atomic<int64_t> connections{0};
  proxy::Worker worker(0, make_runtime(port, upstream_port), connections);
  std::string error;
  REQUIRE(worker.start(error));

  std::string seen;
  std::thread server([&] {
    int c = accept(upstream, nullptr, nullptr);
    timeval tv{5, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 2; ++i) {
      std::string head = read_until(c, "\r\n\r\n");
      seen += head;
      const char* reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\nok";
      send(c, reply, std::strlen(reply), 0);
    }
    close(c);
  });

  int client = connect_to(port);
  for (int i = 0; i < 2; ++i) {
    const char* request = "GET /a HTTP/1.1\r\nHost: mail.example.com\r\nConnection: keep-alive\r\n\r\n";
    send(client, request, std::strlen(request), 0);
    std::string response = read_until(client, "\r\n\r\nok");
    CHECK(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(response.find("Keep-Alive") == std::string::npos);
    CHECK(response.find("Via: 1.1 sprayer\r\n") != std::string::npos);
  }
  server.join();
  CHECK(seen.find("X-Forwarded-For: 127.0.0.1\r\n") != std::string::npos);
  CHECK(seen.find("Host: mail.example.com\r\n") != std::string::npos);
  CHECK(seen.find("Connection:") == std::string::npos);
  close(client);
  close(upstream);
  stop_and_check(worker);
  // Both requests came over one upstream connection (the server accepted only once).
  CHECK(worker.stats().requests.load() == 2);
  // Both counted as finished by pool1 (index 0), 2xx, no user in the request; one new
  // upstream connection (connect time observed once), two first bytes.
  const auto no_user = static_cast<size_t>(affinity::RouteReason::no_user);
  CHECK(worker.stats().request_seconds.count.load() == 2);
  CHECK(worker.stats().finished[0][2][no_user].load() == 2);
  CHECK(worker.stats().ttfb_seconds.count.load() == 2);
  CHECK(worker.stats().connect_seconds.count.load() == 1);
  CHECK(worker.stats().upstream_bytes_in.load() > 0);
  CHECK(worker.stats().upstream_bytes_out.load() >= seen.size());
}

TEST_CASE("a refused connect to every server answers 503 and closes") {
  RefusingPort refusing;  // bound, never listening: no other process can take it meanwhile
  uint16_t dead_port = refusing.port;
  uint16_t port = free_port();
  std::atomic<int64_t> connections{0};
  proxy::Worker worker(0, make_runtime(port, dead_port), connections);
  std::string error;
  REQUIRE(worker.start(error));
  int client = connect_to(port);
  const char* request = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
  send(client, request, std::strlen(request), 0);
  std::string response = read_until(client, "\n\n\n");  // reads to EOF
  CHECK(response.rfind("HTTP/1.1 503 ", 0) == 0);
  CHECK(response.find("Connection: close\r\n") != std::string::npos);
  close(client);
  stop_and_check(worker);
  CHECK(worker.stats().upstream_connect_failures.load() >= 1);
  // Counted against the server of the last attempt, as a 5xx.
  CHECK(worker.stats().request_seconds.count.load() == 1);
  CHECK(worker.stats().finished[0][5][static_cast<size_t>(affinity::RouteReason::no_user)].load() == 1);
}

TEST_CASE("a worker writes access log lines through its buffer and hands them over by stop") {
  RefusingPort refusing;  // bound, never listening: no other process can take it meanwhile
  uint16_t dead_port = refusing.port;
  uint16_t port = free_port();
  std::string path = "/tmp/sprayer-unit-worker-access-" + std::to_string(getpid()) + ".log";
  std::remove(path.c_str());
  conf::AccessLogConfig log_config;
  log_config.enabled = true;
  log_config.path = path;
  std::string error;
  auto runtime = make_runtime(port, dead_port);
  runtime->access_log = proxy::AccessLog::open(log_config, error);
  REQUIRE_MESSAGE(runtime->access_log, error);
  auto log = runtime->access_log;
  std::atomic<int64_t> connections{0};
  {
    proxy::Worker worker(0, runtime, connections);
    REQUIRE(worker.start(error));
    int client = connect_to(port);
    const char* request = "GET /traveler?user=Jane HTTP/1.1\r\nHost: h\r\nAuthorization: Basic amFuZTpzZWNyZXQ=\r\n\r\n";
    send(client, request, std::strlen(request), 0);
    std::string response = read_until(client, "\n\n\n");
    CHECK(response.rfind("HTTP/1.1 503 ", 0) == 0);
    close(client);
    stop_and_check(worker);  // the unreferenced flush timer does not hold the loop open
  }
  log->flush();
  std::FILE* f = std::fopen(path.c_str(), "r");
  REQUIRE(f);
  char line[2048] = {0};
  REQUIRE(std::fgets(line, sizeof line, f));
  std::fclose(f);
  std::string text(line);
  CHECK(text.find("\"status\":503") != std::string::npos);
  CHECK(text.find("\"server\":\"pool1\"") != std::string::npos);
  CHECK(text.find("\"user\":\"jane\"") != std::string::npos);
  CHECK(text.find("\"target\":\"/traveler?user=Jane\"") != std::string::npos);
  CHECK(text.find("amFuZTpzZWNyZXQ") == std::string::npos);
  CHECK(text.find("secret") == std::string::npos);
  std::remove(path.c_str());
}

// Slots and positions differ once a reload removed a server: the runtime then lists
// "pool2" first, but its pools, metric rows and health reports stay at slot 1.
TEST_CASE("the access log names the server of a slot that is not its position") {
  RefusingPort refusing;  // bound, never listening: no other process can take it meanwhile
  uint16_t dead_port = refusing.port;
  uint16_t port = free_port();
  std::string path = "/tmp/sprayer-unit-worker-slot-" + std::to_string(getpid()) + ".log";
  std::remove(path.c_str());
  conf::AccessLogConfig log_config;
  log_config.enabled = true;
  log_config.path = path;
  std::string error;
  auto runtime = make_runtime(port, dead_port);
  REQUIRE(runtime->servers.size() == 1);
  runtime->servers[0].id = "pool2";
  runtime->servers[0].slot = 1;  // pool1 (slot 0) was removed by a reload
  runtime->access_log = proxy::AccessLog::open(log_config, error);
  REQUIRE_MESSAGE(runtime->access_log, error);
  auto log = runtime->access_log;
  std::atomic<int64_t> connections{0};
  {
    proxy::Worker worker(0, runtime, connections);
    REQUIRE(worker.start(error));
    int client = connect_to(port);
    const char* request = "GET /traveler?user=Jane HTTP/1.1\r\nHost: h\r\n\r\n";
    send(client, request, std::strlen(request), 0);
    std::string response = read_until(client, "\n\n\n");
    CHECK(response.rfind("HTTP/1.1 503 ", 0) == 0);
    close(client);
    stop_and_check(worker);
    CHECK(worker.stats().finished[1][5][static_cast<size_t>(affinity::RouteReason::new_user)].load() +
              worker.stats().finished[1][5][static_cast<size_t>(affinity::RouteReason::no_user)].load() ==
          1);
  }
  log->flush();
  std::FILE* f = std::fopen(path.c_str(), "r");
  REQUIRE(f);
  char line[2048] = {0};
  REQUIRE(std::fgets(line, sizeof line, f));
  std::fclose(f);
  std::string text(line);
  CHECK(text.find("\"status\":503") != std::string::npos);
  CHECK_MESSAGE(text.find("\"server\":\"pool2\"") != std::string::npos, text);
  std::remove(path.c_str());
}

TEST_CASE("a listener that cannot bind fails start with the reason") {
  uint16_t taken_port = 0;
  int taken = listen_any(taken_port);  // bound without SO_REUSEPORT: nobody else may bind
  std::atomic<int64_t> connections{0};
  proxy::Worker worker(0, make_runtime(taken_port, taken_port), connections);
  std::string error;
  CHECK_FALSE(worker.start(error));
  CHECK(error.find("cannot listen") != std::string::npos);
  worker.join();
  CHECK(worker.loop_close_status() == 0);
  close(taken);
}

TEST_CASE("a listening socket carries TCP_NODELAY, which the sockets it accepts inherit") {
  // The listener sets TCP_NODELAY (and TCP_QUICKACK off) once on its socket instead of on
  // every accepted one: that relies on Linux copying the option into accepted sockets.
  uint16_t port = free_port();
  std::atomic<int64_t> connections{0};
  proxy::Worker worker(0, make_runtime(port, port), connections);
  std::string error;
  REQUIRE(worker.start(error));
  auto sockets = worker.listening_sockets();
  REQUIRE(sockets.size() == 1);
  int value = 0;
  socklen_t len = sizeof value;
  REQUIRE(getsockopt(sockets[0].second, IPPROTO_TCP, TCP_NODELAY, &value, &len) == 0);
  CHECK(value == 1);
  stop_and_check(worker);

  uint16_t own_port = 0;
  int own = listen_any(own_port);
  int one = 1;
  REQUIRE(setsockopt(own, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
  int client = connect_to(own_port);
  int accepted = accept(own, nullptr, nullptr);
  REQUIRE(accepted >= 0);
  value = 0;
  len = sizeof value;
  REQUIRE(getsockopt(accepted, IPPROTO_TCP, TCP_NODELAY, &value, &len) == 0);
  CHECK(value == 1);
  close(accepted);
  close(client);
  close(own);
}
