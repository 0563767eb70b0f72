// The socket plumbing both sides share: the TCP handle, reads into pool chunks, pause
// reasons, the deadline, the batched writer, the TLS engine, close and deferred delete. The
// role on top (DownstreamConnection, UpstreamConnection) says what a read means by swapping
// two handlers as the connection moves on, instead of testing flags on every read:
//  - the read phase takes the socket's bytes (clear, TLS records, a handshake, a sniff of
//    the first bytes on a TLS port);
//  - the input phase takes the bytes as the role sees them (plaintext): parse a request or
//    response, hold a pipelined request, forward a tunnel, drop input while lingering.
// Reading runs only while both are set and no pause reason is left.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "proxy/buffer_pool.h"
#include "proxy/deadline.h"
#include "proxy/pause.h"
#include "proxy/stream_writer.h"

namespace sprayer::proxy {

class TlsEngine;

class Connection {
 public:
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  StreamWriter& writer() { return writer_; }
  bool is_tls() const { return tls_ != nullptr; }
  void pause_reading(PauseReasons reasons);
  void resume_reading(PauseReasons reasons);

 protected:
  using Phase = void (Connection::*)(Slice data);

  // `bytes_in` counts every byte read from the socket (before TLS).
  Connection(uv_loop_t* loop, BufferPool& buffers, std::atomic<uint64_t>& bytes_in);
  virtual ~Connection();

  template <class Role>
  void set_read_phase(void (Role::*phase)(Slice)) {
    static_assert(std::is_base_of_v<Connection, Role>);
    read_ = static_cast<Phase>(phase);
    update_read_state();
  }
  template <class Role>
  void set_input_phase(void (Role::*phase)(Slice)) {
    static_assert(std::is_base_of_v<Connection, Role>);
    input_ = static_cast<Phase>(phase);
    update_read_state();
  }
  template <class Role>
  bool in_read_phase(void (Role::*phase)(Slice)) const {
    return read_ == static_cast<Phase>(phase);
  }
  // Nothing is read at all (connecting, closed).
  void stop_phases() {
    read_ = nullptr;
    input_ = nullptr;
    update_read_state();
  }
  // The read phase of a connection without TLS: the bytes are the input.
  void read_clear(Slice data) { deliver(std::move(data)); }
  void run_phase(Phase phase, Slice data);
  // Hands (decrypted) bytes to the input phase.
  void deliver(Slice data) {
    if (input_) run_phase(input_, std::move(data));
  }
  bool pause_has(PauseReason reason) const { return pause_reasons_.has(reason); }
  bool paused() const { return !pause_reasons_.empty(); }
  void clear_pause() {
    pause_reasons_.clear();
    update_read_state();
  }

  uv_tcp_t* tcp() { return &tcp_; }
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  // The connection's one timer (docs/style.md): a role with more than one timeout keeps
  // their due times itself and sets this to the earliest.
  Deadline& deadline() { return deadline_; }
  // Idempotent. The role's destructor runs after the last close callback.
  void close_handles();
  bool handles_closing() const { return closing_; }

  // The role's events.
  virtual void on_eof(ssize_t status) = 0;      // a read ended with status < 0 (UV_EOF, an error)
  virtual void on_write_done(int status) = 0;   // a queued write completed
  virtual void on_deadline() = 0;               // the deadline passed
  virtual void on_resumed() {}                  // resume_reading left no pause reason

  std::unique_ptr<TlsEngine> tls_;  // null = plain TCP
  StreamWriter writer_;

 private:
  void update_read_state();
  static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf) noexcept;
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void on_timer(uv_timer_t* timer) noexcept;
  static void on_written(void* self, int status) noexcept;
  static void on_close(uv_handle_t* handle) noexcept;

  BufferPool& buffers_;
  std::atomic<uint64_t>& bytes_in_;
  uv_tcp_t tcp_{};
  Deadline deadline_;
  Phase read_ = nullptr;
  Phase input_ = nullptr;
  PauseReasons pause_reasons_;
  bool reading_ = false;
  bool closing_ = false;
  int handles_open_ = 0;
};

}  // namespace sprayer::proxy
