// UpstreamPool and UpstreamConnection on a private loop against a fake server: connect,
// keep-alive reuse, the idle limit, a server that closes an idle connection, a refused
// connect, a retired pool.
#include <doctest/doctest.h>

#include "tests/unit/proxy_test_context.h"

#include "proxy/upstream_connection.h"

using namespace sprayer;
using sprayer::test::FakeServer;
using sprayer::test::RefusingPort;
using sprayer::test::TestWorker;

namespace {

using State = proxy::UpstreamConnection::State;

proxy::UpstreamConnection* connect_one(TestWorker& w, FakeServer& server, size_t accepted) {
  bool reused = true;
  int error = -1;
  proxy::UpstreamConnection* up = w.pool(0).acquire(reused, error);
  REQUIRE(up);
  CHECK_FALSE(reused);
  CHECK(error == 0);
  CHECK(up->state() == State::connecting);
  CHECK(w.run_until([&] { return up->state() == State::active && server.accepted(accepted); }));
  return up;
}

}  // namespace

TEST_CASE("upstream pool: a released connection is reused, warmest first") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  proxy::UpstreamConnection* up = connect_one(w, server, 1);
  CHECK(w.pool(0).active_count() == 1);
  CHECK(w.stats.upstream_open.load() == 1);

  w.pool(0).release(up);
  CHECK(up->state() == State::idle);
  CHECK(w.pool(0).idle_count() == 1);
  CHECK(w.pool(0).active_count() == 0);

  bool reused = false;
  int error = -1;
  CHECK(w.pool(0).acquire(reused, error) == up);
  CHECK(reused);
  CHECK(w.pool(0).idle_count() == 0);
  CHECK(w.stats.upstream_open.load() == 1);  // no second connection was opened
  w.pool(0).release(up);
  CHECK(w.close_loop() == 0);
  CHECK(w.stats.upstream_open.load() == 0);
}

TEST_CASE("upstream pool: an idle connection the server closes leaves the pool") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  proxy::UpstreamConnection* up = connect_one(w, server, 1);
  w.pool(0).release(up);
  REQUIRE(w.pool(0).idle_count() == 1);
  server.hang_up(0);
  CHECK(w.run_until([&] { return w.pool(0).idle_count() == 0; }));
  CHECK(w.run_until([&] { return w.stats.upstream_open.load() == 0; }));
  // The next request opens a fresh connection.
  bool reused = true;
  int error = -1;
  proxy::UpstreamConnection* fresh = w.pool(0).acquire(reused, error);
  REQUIRE(fresh);
  CHECK_FALSE(reused);
  fresh->close();
  CHECK(w.close_loop() == 0);
}

TEST_CASE("upstream pool: an idle connection the server writes to unasked is closed") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  proxy::UpstreamConnection* up = connect_one(w, server, 1);
  w.pool(0).release(up);
  server.reply(0, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  CHECK(w.run_until([&] { return w.pool(0).idle_count() == 0 && w.stats.upstream_open.load() == 0; }));
  CHECK(w.close_loop() == 0);
}

TEST_CASE("upstream pool: no more idle connections than upstream.max_idle_per_server") {
  FakeServer server;
  auto config = test::make_config({server.port});
  config->upstream.max_idle_per_server = 1;
  TestWorker w(test::make_runtime(config));
  proxy::UpstreamConnection* a = connect_one(w, server, 1);
  proxy::UpstreamConnection* b = connect_one(w, server, 2);
  w.pool(0).release(a);
  w.pool(0).release(b);
  CHECK(w.pool(0).idle_count() == 1);
  CHECK(w.run_until([&] { return w.stats.upstream_open.load() == 1; }));
  CHECK(w.close_loop() == 0);
}

TEST_CASE("upstream pool: a draining worker keeps no idle connection") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  proxy::UpstreamConnection* up = connect_one(w, server, 1);
  w.draining = true;
  w.pool(0).release(up);
  CHECK(w.pool(0).idle_count() == 0);
  CHECK(w.close_loop() == 0);
  CHECK(w.stats.upstream_open.load() == 0);
}

TEST_CASE("upstream pool: a refused connect closes the connection") {
  RefusingPort refusing;
  TestWorker w(test::make_runtime(test::make_config({refusing.port})));
  bool reused = true;
  int error = -1;
  proxy::UpstreamConnection* up = w.pool(0).acquire(reused, error);
  REQUIRE(up);
  CHECK(w.pool(0).active_count() == 1);
  CHECK(w.run_until([&] { return w.pool(0).active_count() == 0; }));
  CHECK(w.pool(0).idle_count() == 0);
  CHECK(w.close_loop() == 0);
  CHECK(w.stats.upstream_open.load() == 0);
}

TEST_CASE("upstream pool: a retired pool opens nothing and keeps nothing") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  proxy::UpstreamConnection* up = connect_one(w, server, 1);
  w.pool(0).retire();
  CHECK(w.pool(0).retired());
  bool reused = true;
  int error = 0;
  CHECK(w.pool(0).acquire(reused, error) == nullptr);
  CHECK(error == UV_ECANCELED);
  // The request in flight finishes; its connection is not kept.
  w.pool(0).release(up);
  CHECK(w.pool(0).idle_count() == 0);
  CHECK(w.close_loop() == 0);
}

TEST_CASE("upstream pool: a server going down ends the requests in flight on it") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  connect_one(w, server, 1);
  CHECK(w.pool(0).active_count() == 1);
  w.pool(0).fail_active();
  CHECK(w.pool(0).active_count() == 0);
  CHECK(w.close_loop() == 0);
  CHECK(w.stats.upstream_open.load() == 0);
}
