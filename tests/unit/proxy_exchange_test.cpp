// Exchange on a private loop between a fake client side (ExchangeDownstream over a socket
// pair) and a fake pool server: forwarding, keep-alive reuse, the next candidate after a
// refused connect, a stale keep-alive connection sent again, a bad response, a timeout.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "tests/unit/proxy_test_context.h"

#include "proxy/exchange.h"

using namespace sprayer;
using sprayer::test::FakeServer;
using sprayer::test::RefusingPort;
using sprayer::test::TestWorker;

namespace {

// The client side as the Exchange sees it: a RequestParser fed by the test, a StreamWriter
// into one end of a socket pair the test reads from the other.
class FakeDownstream final : public proxy::ExchangeDownstream, private proxy::RequestParser::Handler {
 public:
  explicit FakeDownstream(TestWorker& w) : w_(w), exchange(*this, w.context) {
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds_) == 0);
    uv_pipe_init(w.loop.get(), &pipe_, 0);
    REQUIRE(uv_pipe_open(&pipe_, fds_[0]) == 0);
    writer_.init(reinterpret_cast<uv_stream_t*>(&pipe_), this, [](void*, int) noexcept {});
  }
  ~FakeDownstream() {
    exchange.abort();
    uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), nullptr);
    uv_run(w_.loop.get(), UV_RUN_NOWAIT);  // the pipe's close callback, while it still exists
    ::close(fds_[1]);
  }

  // One read's worth of request bytes, as DownstreamConnection feeds them.
  void send(std::string_view bytes) {
    proxy::Chunk* chunk = w_.buffers.acquire();
    REQUIRE(bytes.size() <= chunk->capacity);
    std::memcpy(chunk->data(), bytes.data(), bytes.size());
    input_ = proxy::Slice(chunk, chunk->data(), bytes.size());
    proxy::BufferPool::unref(chunk);
    parsing_ = true;
    proxy::RequestParser::Result result = parser_.execute(input_.data(), input_.size());
    parsing_ = false;
    input_.reset();
    REQUIRE(result.outcome != proxy::RequestParser::Outcome::reject);
    exchange.flush_upstream();
  }
  // What the client has received so far.
  const std::string& received() {
    test::drain_socket(fds_[1], received_);
    return received_;
  }

  // ExchangeDownstream
  const proxy::RequestParser& request() const override { return parser_; }
  std::string_view client_ip() const override { return "192.0.2.7"; }
  bool is_tls() const override { return false; }
  bool parsing() const override { return parsing_; }
  uint64_t bytes_written() const override { return bytes_written_; }
  bool request_complete() const override { return request_complete_; }
  bool closing_after_response() const override { return close_after_response_; }
  void set_close_after_response() override { close_after_response_ = true; }
  std::string_view rejected() const override { return rejected_; }
  void set_rejected(std::string_view code) override { rejected_ = code; }
  proxy::StreamWriter& writer() override { return writer_; }
  bool flush() override {
    bytes_written_ += writer_.batch_bytes();
    return writer_.flush() == 0;
  }
  void on_exchange_done() override { ++done; }
  void fail_exchange(int status) override {
    failed = status;
    exchange.record(status);
  }
  void enter_tunnel() override {}
  void pause_reading(proxy::PauseReasons reasons) override { paused.add(reasons); }
  void resume_reading(proxy::PauseReasons reasons) override { paused.remove(reasons); }
  void close() override { closed = true; }

  int done = 0;
  int failed = 0;
  bool closed = false;
  proxy::PauseReasons paused;

 private:
  // RequestParser::Handler
  void on_request_begin() override { request_complete_ = false; }
  Verdict on_request_head() override {
    exchange.start(parser_.has_body(), parser_.chunked(), false);
    return Verdict::proceed();
  }
  void on_request_body(const char* at, size_t len) override {
    exchange.on_request_body(input_.sub(static_cast<size_t>(at - input_.data()), len));
  }
  void on_request_complete() override {
    request_complete_ = true;
    exchange.on_request_complete();
  }

  TestWorker& w_;
  proxy::RequestParser parser_{*this};
  proxy::StreamWriter writer_;
  proxy::Slice input_;
  uv_pipe_t pipe_{};
  int fds_[2] = {-1, -1};
  std::string received_;
  std::string_view rejected_;
  uint64_t bytes_written_ = 0;
  bool parsing_ = false;
  bool request_complete_ = false;
  bool close_after_response_ = false;

 public:
  proxy::Exchange exchange;  // last: it refers to the members above
};

constexpr std::string_view kGet = "GET /a HTTP/1.1\r\nHost: mail.example.com\r\n\r\n";
constexpr std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const size_t kNoUser = static_cast<size_t>(affinity::RouteReason::no_user);

}  // namespace

TEST_CASE("exchange: a request goes to the server, the response back, the connection to the pool") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  {
    FakeDownstream ds(w);
    ds.send(kGet);
    REQUIRE(w.run_until([&] { return server.received(0, "\r\n\r\n"); }));
    const std::string& seen = server.got[0];
    CHECK(seen.rfind("GET /a HTTP/1.1\r\n", 0) == 0);
    CHECK(seen.find("X-Forwarded-For: 192.0.2.7\r\n") != std::string::npos);
    server.reply(0, kOk);
    REQUIRE(w.run_until([&] { return ds.done == 1 && ds.received().find("\r\n\r\nok") != std::string::npos; }));
    CHECK(ds.received().rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(ds.received().find("Via: 1.1 sprayer\r\n") != std::string::npos);
    CHECK(w.pool(0).idle_count() == 1);
    CHECK(w.stats.finished[0][2][kNoUser].load() == 1);
    CHECK(w.stats.connect_seconds.count.load() == 1);

    // The second request takes the pooled connection: no new connect.
    ds.send(kGet);
    REQUIRE(w.run_until([&] { return server.received(0, "GET /a", 1); }));
    server.reply(0, kOk);
    REQUIRE(w.run_until([&] { return ds.done == 2; }));
    CHECK(server.conns.size() == 1);
    CHECK(w.stats.finished[0][2][kNoUser].load() == 2);
    CHECK(w.stats.connect_seconds.count.load() == 1);
  }
  CHECK(w.close_loop() == 0);
}

TEST_CASE("exchange: a refused connect goes to the next server, none left answers 503") {
  RefusingPort refusing;
  FakeServer server;
  SUBCASE("the next candidate answers") {
    TestWorker w(test::make_runtime(test::make_config({refusing.port, server.port})));
    {
      FakeDownstream ds(w);
      ds.send(kGet);
      REQUIRE(w.run_until([&] { return server.received(0, "\r\n\r\n"); }));
      server.reply(0, kOk);
      REQUIRE(w.run_until([&] { return ds.done == 1; }));
      CHECK(ds.failed == 0);
      CHECK(w.stats.upstream_connect_failures.load() == 1);
      CHECK(w.stats.upstream_retries.load() == 1);
      // Counted against the server that answered, as a retry.
      CHECK(w.stats.finished[1][2][proxy::kReasonRetry].load() == 1);
    }
    CHECK(w.close_loop() == 0);
  }
  SUBCASE("with preserve_host off, the next candidate gets its own Host") {
    auto config = test::make_config({refusing.port, server.port});
    config->http.preserve_host = false;
    TestWorker w(test::make_runtime(config));
    {
      FakeDownstream ds(w);
      ds.send(kGet);
      REQUIRE(w.run_until([&] { return server.received(0, "\r\n\r\n"); }));
      const std::string host = "Host: 127.0.0.1:" + std::to_string(server.port) + "\r\n";
      CHECK(server.got[0].find(host) != std::string::npos);
      CHECK(server.got[0].find("Host: 127.0.0.1:" + std::to_string(refusing.port)) == std::string::npos);
      server.reply(0, kOk);
      REQUIRE(w.run_until([&] { return ds.done == 1; }));
    }
    CHECK(w.close_loop() == 0);
  }
  SUBCASE("no candidate left") {
    TestWorker w(test::make_runtime(test::make_config({refusing.port})));
    {
      FakeDownstream ds(w);
      ds.send(kGet);
      REQUIRE(w.run_until([&] { return ds.failed != 0; }));
      CHECK(ds.failed == 503);
      CHECK(ds.done == 0);
      CHECK(w.stats.finished[0][5][kNoUser].load() == 1);
    }
    CHECK(w.close_loop() == 0);
  }
}

TEST_CASE("exchange: a request that dies on a stale keep-alive connection is sent again on a fresh one") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  {
    FakeDownstream ds(w);
    ds.send(kGet);
    REQUIRE(w.run_until([&] { return server.received(0, "\r\n\r\n"); }));
    server.reply(0, kOk);
    REQUIRE(w.run_until([&] { return ds.done == 1; }));
    REQUIRE(w.pool(0).idle_count() == 1);
    // The server drops the idle connection; the next request takes it before the loop saw it.
    server.hang_up(0);
    ds.send(kGet);
    REQUIRE(w.run_until([&] { return server.received(1, "\r\n\r\n"); }));
    server.reply(1, kOk);
    REQUIRE(w.run_until([&] { return ds.done == 2; }));
    CHECK(ds.failed == 0);
    CHECK(w.stats.upstream_retries.load() == 1);
    CHECK(w.stats.finished[0][2][proxy::kReasonRetry].load() == 1);
  }
  CHECK(w.close_loop() == 0);
}

TEST_CASE("exchange: a response that is not HTTP answers 502") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  {
    FakeDownstream ds(w);
    ds.send(kGet);
    REQUIRE(w.run_until([&] { return server.received(0, "\r\n\r\n"); }));
    server.reply(0, "SMTP ready\r\n\r\n");
    REQUIRE(w.run_until([&] { return ds.failed != 0; }));
    CHECK(ds.failed == 502);
    CHECK(w.pool(0).idle_count() == 0);
  }
  CHECK(w.close_loop() == 0);
}

TEST_CASE("exchange: a server that does not answer within timeouts.upstream_response gets 504") {
  FakeServer server;
  auto config = test::make_config({server.port});
  config->timeouts.upstream_response = std::chrono::milliseconds(20);
  TestWorker w(test::make_runtime(config));
  {
    FakeDownstream ds(w);
    ds.send(kGet);
    REQUIRE(w.run_until([&] { return ds.failed != 0; }));
    CHECK(ds.failed == 504);
    CHECK(w.stats.finished[0][5][kNoUser].load() == 1);
  }
  CHECK(w.close_loop() == 0);
}

TEST_CASE("exchange: a chunked request body is re-framed and a held body waits for the connect") {
  FakeServer server;
  TestWorker w(test::make_runtime(test::make_config({server.port})));
  {
    FakeDownstream ds(w);
    ds.send("POST /s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n003\r\nabc\r\n0\r\n\r\n");
    REQUIRE(w.run_until([&] { return server.received(0, "0\r\n\r\n"); }));
    CHECK(server.got[0].find("\r\n\r\n3\r\nabc\r\n0\r\n\r\n") != std::string::npos);
    server.reply(0, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
    REQUIRE(w.run_until([&] { return ds.done == 1; }));
    CHECK(ds.received().find("\r\n\r\n2\r\nok\r\n0\r\n\r\n") != std::string::npos);
  }
  CHECK(w.close_loop() == 0);
}
