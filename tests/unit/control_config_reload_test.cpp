// Live reload pieces: server slots across reloads, the bind probe for new listeners, the API
// answer, and a real Worker taking a new runtime at a loop boundary (a listener added while
// the old one keeps its connections, a removed server's request in flight finishing).
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "tests/unit/test_sockets.h"

#include "proxy/config_adapters.h"
#include "proxy/control/config_reload.h"
#include "proxy/route_state.h"
#include "proxy/worker.h"

using namespace sprayer;
using namespace std::chrono_literals;

namespace {

using sprayer::test::free_port;
using sprayer::test::listen_any;
using sprayer::test::connect_to;
using sprayer::test::read_until;

proxy::ServerTarget target(const std::string& id, uint16_t port, uint32_t slot = 0) {
  proxy::ServerTarget t;
  t.id = id;
  t.host_port = "127.0.0.1:" + std::to_string(port);
  auto* a = reinterpret_cast<sockaddr_in*>(&t.addr);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  t.slot = slot;
  return t;
}

conf::ListenerConfig listener(const std::string& name, uint16_t port) {
  conf::ListenerConfig l;
  l.name = name;
  l.address = {"127.0.0.1", port};
  return l;
}

void send_all(int fd, std::string_view data) { REQUIRE(send(fd, data.data(), data.size(), 0) == ssize_t(data.size())); }

std::shared_ptr<proxy::Runtime> make_runtime(std::vector<conf::ListenerConfig> listeners,
                                             std::vector<std::pair<std::string, uint16_t>> servers) {
  auto config = std::make_shared<conf::Config>();
  config->workers = 1;
  config->listeners = std::move(listeners);
  for (const auto& [id, port] : servers) {
    conf::ServerConfig s;
    s.id = id;
    s.address = {"127.0.0.1", port};
    config->servers.push_back(s);
  }
  config->timeouts.upstream_connect = 1s;
  auto runtime = std::make_shared<proxy::Runtime>();
  runtime->config = config;
  std::string error;
  REQUIRE(proxy::resolve_servers(*config, runtime->servers, error));
  runtime->listener_tls.resize(runtime->config->listeners.size());
  return runtime;
}

}  // namespace

TEST_CASE("assign_slots keeps a server's slot while its id and address stay") {
  std::vector<proxy::ServerTarget> running = {target("pool1", 9001, 0), target("pool2", 9002, 1),
                                              target("pool3", 9003, 2)};
  uint32_t next_slot = 3;
  std::vector<proxy::ServerTarget> next = {target("pool3", 9003), target("pool4", 9004), target("pool2", 9012),
                                           target("pool1", 9001)};
  proxy::assign_slots(running, next, next_slot);
  CHECK(next[0].slot == 2);  // kept, reordered
  CHECK(next[1].slot == 3);  // new
  CHECK(next[2].slot == 4);  // same id, new address: a new pool, the old one finishes its requests
  CHECK(next[3].slot == 0);
  CHECK(next_slot == 5);

  // Removed and added back later: a fresh slot, never the old one.
  std::vector<proxy::ServerTarget> again = {target("pool9", 9009)};
  proxy::assign_slots(next, again, next_slot);
  CHECK(again[0].slot == 5);
  CHECK(next_slot == 6);
}

TEST_CASE("the bind probe refuses a new listener address that is taken, and skips known ones") {
  uint16_t taken_port = 0;
  int taken = listen_any(taken_port);  // no SO_REUSEPORT: nobody else may bind it
  conf::Config running;
  running.listeners = {listener("http", taken_port)};  // "ours": not probed
  conf::Config next = running;
  std::string error;
  CHECK(proxy::probe_new_listeners(running, next, error));

  next.listeners.push_back(listener("second", free_port()));
  CHECK(proxy::probe_new_listeners(running, next, error));

  conf::Config blocked;
  blocked.listeners = {listener("other", taken_port)};
  CHECK_FALSE(proxy::probe_new_listeners(conf::Config{}, blocked, error));
  CHECK(error.find("listener other: cannot listen on 127.0.0.1:" + std::to_string(taken_port)) == 0);

  conf::Config bad;
  bad.listeners = {listener("named", 80)};
  bad.listeners[0].address.host = "not-an-ip";
  CHECK_FALSE(proxy::probe_new_listeners(conf::Config{}, bad, error));
  CHECK(error.find("not a numeric address") != std::string::npos);
  close(taken);
}

TEST_CASE("the reload answer is JSON with the reasons escaped") {
  proxy::ReloadOutcome refused;
  refused.status = 422;
  refused.errors = {"a.yaml:3:5: servers[0].weight: must be 1..1000 \"here\""};
  CHECK(refused.to_json() ==
        "{\"applied\":false,\"changes\":\"\",\"needs_restart\":[],\"errors\":[\"a.yaml:3:5: servers[0].weight: must be "
        "1..1000 \\\"here\\\"\"]}\n");
  proxy::ReloadOutcome applied;
  applied.applied = true;
  applied.changes = "servers +pool4";
  applied.needs_restart = {"workers", "ownership"};
  CHECK(applied.to_json() ==
        "{\"applied\":true,\"changes\":\"servers +pool4\",\"needs_restart\":[\"workers\",\"ownership\"],"
        "\"errors\":[]}\n");
}

TEST_CASE("a worker takes a new runtime: new listener, old connections kept, removed server finishes") {
  uint16_t up1_port = 0, up2_port = 0;
  int up1 = listen_any(up1_port);
  int up2 = listen_any(up2_port);
  uint16_t port1 = free_port();
  uint16_t port2 = free_port();
  auto first = make_runtime({listener("one", port1)}, {{"pool1", up1_port}});
  std::atomic<int64_t> connections{0};
  proxy::Worker worker(0, first, connections);
  std::string error;
  REQUIRE(worker.start(error));

  // pool1 holds its answer until told: a parked request.
  std::atomic<bool> head_seen{false}, release{false};
  std::thread server1([&] {
    int c = accept(up1, nullptr, nullptr);
    read_until(c, "\r\n\r\n");
    head_seen = true;
    for (int i = 0; i < 500 && !release; ++i) std::this_thread::sleep_for(10ms);
    const char* reply = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none";
    send(c, reply, std::strlen(reply), 0);
    read_until(c, "never");  // until sprayer closes it
    close(c);
  });
  int old_client = connect_to(port1);
  send_all(old_client, "GET /parked HTTP/1.1\r\nHost: h\r\n\r\n");
  for (int i = 0; i < 500 && !head_seen; ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(head_seen);

  // Reload: pool1 removed, pool2 added, listener "two" added, "one" kept.
  auto second = make_runtime({listener("one", port1), listener("two", port2)}, {{"pool2", up2_port}});
  uint32_t next_slot = 1;
  proxy::assign_slots(first->servers, second->servers, next_slot);
  REQUIRE(second->servers[0].slot == 1);
  worker.publish_runtime(second, proxy::RouteState::make(*second, nullptr, nullptr, 2));

  std::thread server2([&] {
    int c = accept(up2, nullptr, nullptr);
    timeval tv{5, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 2; ++i) {
      read_until(c, "\r\n\r\n");
      const char* reply = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo";
      send(c, reply, std::strlen(reply), 0);
    }
    close(c);
  });
  int new_client = connect_to(port2);  // accepts once the worker applied the runtime
  send_all(new_client, "GET /new HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(read_until(new_client, "two").find("HTTP/1.1 200 OK\r\n") == 0);

  // The parked request on the removed server finishes normally, on the kept listener's connection.
  release = true;
  std::string parked = read_until(old_client, "one");
  CHECK(parked.find("HTTP/1.1 200 OK\r\n") == 0);
  CHECK(parked.find("one") != std::string::npos);
  // Its next request on the same connection goes to the server that is configured now.
  send_all(old_client, "GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
  std::string next_answer = read_until(old_client, "two");
  CHECK(next_answer.find("HTTP/1.1 200 OK\r\n") == 0);
  CHECK(next_answer.find("two") != std::string::npos);
  server2.join();
  server1.join();
  CHECK(worker.stats().requests.load() == 3);

  close(old_client);
  close(new_client);
  close(up1);
  close(up2);
  worker.begin_drain();
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!worker.finished() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  REQUIRE(worker.finished());
  worker.join();
  CHECK(worker.loop_close_status() == 0);
}
