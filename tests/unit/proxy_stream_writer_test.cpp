// The stream writer sealing through a TLS engine: a response's head and body slices go out
// as full records. Uses the TLS test helpers (tls_session.h).
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "proxy/stream_writer.h"
#include "test_loop.h"
#include "tests/unit/test_sockets.h"
#include "tests/unit/tls_session.h"

using namespace sprayer::test::tls;

TEST_CASE("tls data: a head and its body slices go out as full records, not a record per part") {
  Session s(load_ok(standard_settings()), {.sni = "pool1.example.com"});
  s.pump();
  REQUIRE(s.established());
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  sprayer::test::TestLoop loop;
  uv_pipe_t pipe;
  REQUIRE(uv_pipe_init(loop.get(), &pipe, 0) == 0);
  REQUIRE(uv_pipe_open(&pipe, fds[0]) == 0);
  StreamWriter writer;
  writer.init(reinterpret_cast<uv_stream_t*>(&pipe), nullptr, nullptr);
  writer.set_tls(&s.server);

  // Sends head + body parts and returns the lengths of the records that reached the socket.
  auto send = [&](std::string_view head, const std::vector<std::string>& body) {
    writer.add_copy(head);
    for (const std::string& part : body) {
      Chunk* chunk = s.pool.acquire();
      REQUIRE(part.size() <= chunk->capacity);
      std::memcpy(chunk->data(), part.data(), part.size());
      writer.add(Slice(chunk, chunk->data(), part.size()));
      BufferPool::unref(chunk);
    }
    REQUIRE(writer.flush() == 0);
    REQUIRE(loop.run_until([&] { return writer.idle(); }, std::chrono::seconds(5)));
    std::string wire;
    char buf[65536];
    ssize_t n;
    while ((n = recv(fds[1], buf, sizeof buf, MSG_DONTWAIT)) > 0) wire.append(buf, size_t(n));
    std::vector<size_t> records;
    for (size_t at = 0; at + 5 <= wire.size();) {
      CHECK(wire[at] == 23);  // application data
      size_t len = (size_t(uint8_t(wire[at + 3])) << 8) | uint8_t(wire[at + 4]);
      records.push_back(len);
      at += 5 + len;
    }
    REQUIRE(BIO_write(s.client.in, wire.data(), int(wire.size())) == int(wire.size()));
    s.client.received.clear();
    s.client.step();
    return records;
  };

  std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n";
  auto records = send(head, {"first ten.", "second ten", "third ten."});
  CHECK(records.size() == 1);
  CHECK(s.client.received == head + "first ten.second tenthird ten.");

  // 40,000 body bytes in pool-sized slices: three records (16 KiB, 16 KiB, the rest).
  std::vector<std::string> body;
  for (size_t left = 40000; left > 0;) {
    size_t n = std::min<size_t>(left, s.pool.chunk_size());
    body.emplace_back(n, char('a' + body.size()));
    left -= n;
  }
  records = send(head, body);
  CHECK(records.size() == 3);
  std::string expected = head;
  for (const std::string& part : body) expected += part;
  CHECK(s.client.received == expected);
  CHECK(s.pool.outstanding() == 0);

  uv_close(reinterpret_cast<uv_handle_t*>(&pipe), nullptr);
  CHECK(loop.close() == 0);
  close(fds[1]);
}

TEST_CASE("stream writer: small slices pin no chunk, and each queued write counts its cost") {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  int small = 4096;
  REQUIRE(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
  sprayer::test::TestLoop loop;
  uv_pipe_t pipe;
  REQUIRE(uv_pipe_init(loop.get(), &pipe, 0) == 0);
  REQUIRE(uv_pipe_open(&pipe, fds[0]) == 0);
  StreamWriter writer;
  writer.init(reinterpret_cast<uv_stream_t*>(&pipe), nullptr, nullptr);
  BufferPool pool(32 * 1024, 4);
  // A peer that never reads: once the socket is full every flush queues a write of 22 bytes
  // (a TLS alert or KeyUpdate answer), as a hostile client provokes them.
  size_t flushes = 0;
  while (writer.in_flight() == 0 || flushes < 200) {
    Chunk* chunk = pool.acquire();
    std::memset(chunk->data(), 'k', 22);
    writer.add(Slice(chunk, chunk->data(), 22));
    BufferPool::unref(chunk);
    CHECK(pool.outstanding() == 0);  // copied: the chunk went back at once
    REQUIRE(writer.flush() == 0);
    REQUIRE(++flushes < 100000);
  }
  CHECK(writer.queued() >= writer.in_flight() + 100 * StreamWriter::kRequestCost);
  // A slice of a useful size is still sent without a copy.
  Chunk* chunk = pool.acquire();
  writer.add(Slice(chunk, chunk->data(), StreamWriter::kCopyBelow));
  BufferPool::unref(chunk);
  CHECK(pool.outstanding() == 1);
  writer.discard();
  CHECK(pool.outstanding() == 0);
  uv_close(reinterpret_cast<uv_handle_t*>(&pipe), nullptr);
  REQUIRE(loop.run_until([&] { return true; }, std::chrono::seconds(1)));
  close(fds[1]);
  CHECK(loop.close() == 0);
}

TEST_CASE("stream writer: a written batch leaves the writer holding no buffer; the next one reuses it") {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  sprayer::test::TestLoop loop;
  uv_pipe_t pipe;
  REQUIRE(uv_pipe_init(loop.get(), &pipe, 0) == 0);
  REQUIRE(uv_pipe_open(&pipe, fds[0]) == 0);
  StreamWriter a, b;
  a.init(reinterpret_cast<uv_stream_t*>(&pipe), nullptr, nullptr);
  b.init(reinterpret_cast<uv_stream_t*>(&pipe), nullptr, nullptr);
  CHECK(a.held_capacity() == 0);
  std::string head(800, 'h');  // a phone's request head
  a.add_copy(head);
  a.add_copy("\r\n");
  CHECK(a.held_capacity() >= head.size());
  REQUIRE(a.flush() == 0);
  // Written whole: nothing stays with the writer (a parked Ping's upstream side waits minutes).
  CHECK(a.held_capacity() == 0);
  // Two writers batching at once each get a buffer; both go back when written.
  a.add_copy(head);
  b.add_copy("HTTP/1.1 200 OK\r\n\r\n");
  CHECK(a.held_capacity() >= head.size());
  CHECK(b.held_capacity() > 0);
  REQUIRE(a.flush() == 0);
  REQUIRE(b.flush() == 0);
  CHECK(a.held_capacity() == 0);
  CHECK(b.held_capacity() == 0);
  std::string wire;
  char buf[8192];
  ssize_t n;
  while ((n = recv(fds[1], buf, sizeof buf, MSG_DONTWAIT)) > 0) wire.append(buf, size_t(n));
  CHECK(wire == head + "\r\n" + head + "HTTP/1.1 200 OK\r\n\r\n");
  // A batch dropped unwritten gives its buffer back too.
  a.add_copy(head);
  a.discard();
  CHECK(a.held_capacity() == 0);
  CHECK(a.batch_bytes() == 0);
  uv_close(reinterpret_cast<uv_handle_t*>(&pipe), nullptr);
  REQUIRE(loop.run_until([&] { return true; }, std::chrono::seconds(1)));
  close(fds[1]);
  CHECK(loop.close() == 0);
}

namespace {

// A writer on the accepted end of a loopback TCP connection with a small send buffer; the test
// reads what it sent from `peer`.
struct TcpWriter {
  TcpWriter() {
    listener = sprayer::test::listen_any(port);
    peer = sprayer::test::connect_to(port);
    int fd = accept(listener, nullptr, nullptr);
    REQUIRE(fd >= 0);
    int small = 4096;
    REQUIRE(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    REQUIRE(uv_tcp_init(loop.get(), &tcp) == 0);
    REQUIRE(uv_tcp_open(&tcp, fd) == 0);
    writer.init(reinterpret_cast<uv_stream_t*>(&tcp), nullptr, nullptr);
  }
  ~TcpWriter() {
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp), nullptr);
    CHECK(loop.run_until([&] { return true; }, std::chrono::seconds(1)));
    CHECK(loop.close() == 0);
    close(peer);
    close(listener);
  }

  uint16_t port = 0;
  int listener = -1;
  int peer = -1;
  sprayer::test::TestLoop loop;
  uv_tcp_t tcp{};
  StreamWriter writer;
};

}  // namespace

TEST_CASE("stream writer: the last batch ends the sending direction when the socket takes it whole") {
  TcpWriter t;
  StreamWriter& writer = t.writer;

  // Not the last: the direction stays open whatever the batch.
  writer.add_copy("HTTP/1.1 100 Continue\r\n\r\n");
  REQUIRE(writer.flush() == 0);
  CHECK_FALSE(writer.writes_ended());
  // The last: written and shut down, the peer reads it and then the end.
  const std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
  writer.end_with_next_flush();
  writer.add_copy(response);
  REQUIRE(writer.flush() == 0);
  CHECK(writer.writes_ended());
  CHECK(writer.idle());
  std::string got;
  char buf[4096];
  ssize_t n;
  while ((n = recv(t.peer, buf, sizeof buf, 0)) > 0) got.append(buf, size_t(n));
  CHECK(n == 0);  // EOF, not the receive timeout
  CHECK(got == "HTTP/1.1 100 Continue\r\n\r\n" + response);
}

TEST_CASE("stream writer: a last batch the socket cannot take whole is queued, the direction left open") {
  TcpWriter t;
  StreamWriter& writer = t.writer;
  REQUIRE(uv_tcp_nodelay(&t.tcp, 1) == 0);
  const std::string big(16 * 1024 * 1024, 'b');  // far more than the socket buffers hold
  writer.end_with_next_flush();
  writer.add_copy(big);
  REQUIRE(writer.flush() == 0);
  // Queued: the owner shuts the direction down once the rest is written (uv_shutdown).
  CHECK_FALSE(writer.writes_ended());
  CHECK(writer.in_flight() > 0);
  std::atomic<size_t> got{0};
  std::thread reader([&] {
    char buf[65536];
    ssize_t n;
    while (got < big.size() && (n = recv(t.peer, buf, sizeof buf, 0)) > 0) got += size_t(n);
  });
  CHECK(t.loop.run_until([&] { return writer.idle(); }, std::chrono::seconds(10)));
  reader.join();
  CHECK(got == big.size());
  CHECK_FALSE(writer.writes_ended());
}
