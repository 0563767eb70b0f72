// DownstreamConnection on a private loop, between a client socket the test drives without
// blocking and a fake pool server: keep-alive, pipelining in order, a refused head, the head
// timeout, the client's hang-up.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/unit/proxy_test_context.h"

using namespace sprayer;
using sprayer::test::FakeServer;
using sprayer::test::TestWorker;

namespace {

constexpr std::string_view kGet = "GET /a HTTP/1.1\r\nHost: mail.example.com\r\n\r\n";
constexpr std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

size_t count(const std::string& text, std::string_view what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// A client connected over loopback; its accepted end goes to a new DownstreamConnection.
struct Client {
  explicit Client(TestWorker& w) {
    uint16_t port = 0;
    int listener = test::listen_any(port);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    int accepted = accept(listener, reinterpret_cast<sockaddr*>(&peer), &len);
    REQUIRE(accepted >= 0);
    close(listener);
    connection = proxy::DownstreamConnection::accept(w.context, w, accepted, peer, w.runtime->config->listeners[0], nullptr);
    REQUIRE(connection);
  }
  ~Client() {
    if (fd >= 0) close(fd);
  }
  void send(std::string_view bytes) { REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size())); }
  bool received(std::string_view until, size_t from = 0) {
    open = test::drain_socket(fd, got);
    return got.find(until, from) != std::string::npos;
  }
  void hang_up() {
    close(fd);
    fd = -1;
  }

  int fd = -1;
  bool open = true;
  std::string got;
  proxy::DownstreamConnection* connection = nullptr;
};

}  // namespace

TEST_CASE("downstream: keep-alive requests go over one server connection; a hang-up frees the connection") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  Client client(w);
  CHECK(w.opened == 1);
  for (size_t i = 1; i <= 2; ++i) {
    client.send(kGet);
    REQUIRE(w.run_until([&] { return server.received(0, "") && count(server.got[0], "\r\n\r\n") == i; }));
    server.reply(0, kOk);
    REQUIRE(w.run_until([&] { return client.received("") && count(client.got, "\r\n\r\nok") == i; }));
  }
  CHECK(server.conns.size() == 1);
  CHECK(w.stats.requests.load() == 2);
  CHECK(client.connection->state() == proxy::DownstreamConnection::State::idle);
  client.hang_up();
  CHECK(w.run_until([&] { return w.closed == 1; }));
  CHECK(w.close_loop() == 0);
}

TEST_CASE("downstream: pipelined requests are sent one at a time and answered in order") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  Client client(w);
  std::string two = std::string(kGet) + "GET /b HTTP/1.1\r\nHost: mail.example.com\r\n\r\n";
  client.send(two);
  REQUIRE(w.run_until([&] { return server.received(0, "\r\n\r\n"); }));
  // The second request is held until the first is answered.
  CHECK(server.got[0].find("GET /b") == std::string::npos);
  server.reply(0, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na");
  REQUIRE(w.run_until([&] { return server.received(0, "GET /b"); }));
  REQUIRE(w.run_until([&] { return server.received(0, "\r\n\r\n", server.got[0].find("GET /b")); }));
  server.reply(0, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb");
  REQUIRE(w.run_until([&] { return client.received("\r\n\r\nb"); }));
  size_t a = client.got.find("\r\n\r\na");
  size_t b = client.got.find("\r\n\r\nb");
  CHECK(a != std::string::npos);
  CHECK(a < b);
  client.hang_up();
  CHECK(w.run_until([&] { return w.closed == 1; }));
  CHECK(w.close_loop() == 0);
}

TEST_CASE("downstream: a head with both Content-Length and Transfer-Encoding is refused before any server is asked") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  Client client(w);
  client.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
  REQUIRE(w.run_until([&] { return client.received("\r\n\r\n"); }));
  CHECK(client.got.rfind("HTTP/1.1 400 ", 0) == 0);
  CHECK(client.got.find("Connection: close\r\n") != std::string::npos);
  CHECK(w.stats.bad_requests.load() == 1);
  CHECK_FALSE(server.accepted(1));
  // Lingering close: the client sees the end of the response, then its hang-up ends it.
  CHECK(w.run_until([&] {
    client.received("");
    return !client.open;
  }));
  client.hang_up();
  CHECK(w.run_until([&] { return w.closed == 1; }));
  CHECK(w.close_loop() == 0);
}

TEST_CASE("downstream: a head cut short gets 408 at timeouts.client_header") {
  FakeServer server;
  auto config = test::make_config({server.port});
  config->timeouts.client_header = std::chrono::milliseconds(20);
  TestWorker w(test::make_runtime(config));
  Client client(w);
  client.send("GET /a HTTP/1.1\r\nHo");
  REQUIRE(w.run_until([&] { return client.received("\r\n\r\n"); }));
  CHECK(client.got.rfind("HTTP/1.1 408 ", 0) == 0);
  CHECK_FALSE(server.accepted(1));
  client.hang_up();
  CHECK(w.run_until([&] { return w.closed == 1; }));
  CHECK(w.close_loop() == 0);
}

TEST_CASE("downstream: a client that hangs up while its request waits frees the server side too") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  Client client(w);
  client.send(kGet);
  REQUIRE(w.run_until([&] { return server.received(0, "\r\n\r\n"); }));
  CHECK(w.pool(0).active_count() == 1);
  client.hang_up();
  CHECK(w.run_until([&] { return w.closed == 1 && w.pool(0).active_count() == 0; }));
  CHECK(w.pool(0).idle_count() == 0);
  // Counted as finished without a status (the client went away).
  CHECK(w.stats.finished[0][0][static_cast<size_t>(affinity::RouteReason::no_user)].load() == 1);
  CHECK(w.close_loop() == 0);
}

namespace {

uint64_t timeouts(const TestWorker& w, proxy::TimeoutKind kind) {
  return w.stats.timeouts_by[static_cast<size_t>(kind)].load();
}

// A pool server that never answers a connect: its accept queue is full and nobody accepts,
// so the kernel drops further SYNs and the connect stays pending.
struct SilentServer {
  SilentServer() {
    fd = sprayer::test::listen_any(port, 0);
    filler = sprayer::test::connect_to(port);
  }
  ~SilentServer() {
    close(filler);
    close(fd);
  }
  int fd = -1;
  int filler = -1;
  uint16_t port = 0;
};

}  // namespace

TEST_CASE("downstream: a client that stops reading its response is cut off at timeouts.client_send, the server side too") {
  FakeServer server;
  auto config = test::make_config({server.port});
  config->timeouts.client_send = std::chrono::milliseconds(100);
  TestWorker w(test::make_runtime(config));
  Client client(w);
  int small = 4096;
  setsockopt(client.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  client.send(kGet);
  REQUIRE(w.run_until([&] { return server.received(0, "\r\n\r\n"); }));
  server.reply(0, "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
  // The server sends as fast as sprayer takes it; the client reads nothing. Once every buffer
  // on the way is full, sprayer's write to the client makes no progress.
  const std::string piece(64 * 1024, 'x');
  REQUIRE(w.run_until(
      [&] {
        if (server.conns[0] >= 0) (void)::send(server.conns[0], piece.data(), piece.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        return w.closed == 1;
      },
      std::chrono::seconds(20)));
  CHECK(timeouts(w, proxy::TimeoutKind::client_send) == 1);
  CHECK(timeouts(w, proxy::TimeoutKind::client_idle) == 0);
  // The upstream connection went with it (the response was not complete: not reusable).
  CHECK(w.pool(0).active_count() == 0);
  CHECK(w.run_until([&] { return !test::drain_socket(server.conns[0], server.got[0]); }));
  CHECK(w.pool(0).idle_count() == 0);
  CHECK(w.close_loop() == 0);
}

TEST_CASE("downstream: after a response the idle timeout closes the connection, not the send timeout") {
  FakeServer server;
  auto config = test::make_config({server.port});
  config->timeouts.client_idle = std::chrono::milliseconds(50);
  config->timeouts.client_send = std::chrono::milliseconds(20);
  TestWorker w(test::make_runtime(config));
  Client client(w);
  client.send(kGet);
  REQUIRE(w.run_until([&] { return server.received(0, "\r\n\r\n"); }));
  server.reply(0, kOk);
  REQUIRE(w.run_until([&] { return client.received("\r\n\r\nok"); }));
  REQUIRE(w.run_until([&] { return w.closed == 1; }));
  CHECK(timeouts(w, proxy::TimeoutKind::client_idle) == 1);
  CHECK(timeouts(w, proxy::TimeoutKind::client_send) == 0);
  CHECK(w.run_until([&] {
    client.received("");
    return !client.open;
  }));
  CHECK(w.close_loop() == 0);
}

TEST_CASE("downstream: a server that never accepts the connect gets 503 at timeouts.upstream_connect") {
  SilentServer silent;
  auto config = test::make_config({silent.port});
  config->timeouts.upstream_connect = std::chrono::milliseconds(100);
  TestWorker w(test::make_runtime(config));
  Client client(w);
  client.send(kGet);
  REQUIRE(w.run_until([&] { return client.received("\r\n\r\n"); }));
  CHECK(client.got.rfind("HTTP/1.1 503 ", 0) == 0);
  CHECK(timeouts(w, proxy::TimeoutKind::upstream_connect) == 1);
  CHECK(w.pool(0).active_count() == 0);
  client.hang_up();
  CHECK(w.run_until([&] { return w.closed == 1; }));
  CHECK(w.close_loop() == 0);
}

TEST_CASE("downstream: a client that hangs up while the server connect is pending ends the connect") {
  SilentServer silent;
  TestWorker w(test::make_runtime(test::make_config({silent.port})));
  Client client(w);
  client.send(kGet);
  REQUIRE(w.run_until([&] { return w.pool(0).active_count() == 1; }));
  client.hang_up();
  CHECK(w.run_until([&] { return w.closed == 1 && w.pool(0).active_count() == 0; }));
  CHECK(timeouts(w, proxy::TimeoutKind::upstream_connect) == 0);
  CHECK(w.close_loop() == 0);
}
