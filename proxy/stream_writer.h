// Batched writes to one uv stream: bytes are gathered (copied framing, zero-copy slices)
// while a read is processed, then flushed as one try-write plus, if the socket is full,
// one queued uv_write. Owners learn of completion through a callback.
#pragma once

#include <uv.h>

#include <string>
#include <string_view>
#include <vector>

#include "proxy/buffer_pool.h"

namespace sprayer::proxy {

class TlsEngine;
class Overload;

class StreamWriter {
 public:
  using DoneFn = void (*)(void* owner, int status);

  StreamWriter() = default;
  ~StreamWriter() { give_back(); }
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;

  void init(uv_stream_t* stream, void* owner, DoneFn done) {
    stream_ = stream;
    owner_ = owner;
    done_ = done;
  }

  // With an engine, each flush encrypts the batch and sends the ciphertext (and whatever
  // the engine produced on its own: handshake flights, tickets, alerts).
  void set_tls(TlsEngine* tls) { tls_ = tls; }
  // Queued writes charge what they hold besides pool chunks (copies, request) to `budget`.
  void set_budget(Overload* budget) { budget_ = budget; }

  void add_copy(std::string_view bytes);
  void add(Slice slice);
  size_t batch_bytes() const { return batch_bytes_; }
  // The next flush is the last data this side sends. When the socket takes it whole, that
  // flush also shuts the sending direction down, and the batch, written with MSG_MORE, waits
  // in the kernel for the FIN: both leave in one segment, which the peer reads and
  // acknowledges at once. Otherwise the rest is queued as usual and the owner ends the
  // direction after it (close or uv_shutdown). Plain TCP only (TLS ends with close_notify).
  void end_with_next_flush() { last_ = tls_ == nullptr; }
  bool writes_ended() const { return ended_; }
  // Sends the batch. Returns 0 or a libuv error (the owner closes the connection).
  int flush();

  // Bytes accepted but not yet written to the socket: the batch, ciphertext the TLS engine
  // holds, the socket's write queue, and what each queued write costs besides its bytes (so
  // that a client provoking many tiny writes, such as TLS alerts, is held to the watermarks
  // by the memory they take, not by their few bytes).
  size_t queued() const;
  // The memory one queued write holds besides its bytes: its request and buffer list.
  static constexpr size_t kRequestCost = 256;
  // Slices this small are copied when added: a 22-byte TLS record would otherwise pin a whole
  // pool chunk until the socket takes it.
  static constexpr size_t kCopyBelow = 512;
  size_t in_flight() const { return in_flight_; }
  bool idle() const { return in_flight_ == 0 && parts_.empty(); }
  void discard() {
    give_back();
    batch_bytes_ = 0;
    last_ = false;
  }
  // Bytes of batch memory held (0 between batches): what an idle or parked connection keeps.
  size_t held_capacity() const {
    return (copies_.capacity() > kInlineBytes ? copies_.capacity() : 0) + parts_.capacity() * sizeof(Part);
  }
  static constexpr size_t kInlineBytes = 15;  // what a std::string holds without the heap

 private:
  struct Part {
    Slice slice;        // empty: bytes are in copies_ at [offset, offset + len)
    size_t offset = 0;
    size_t len = 0;
  };
  struct Request;
  static void on_write(uv_write_t* req, int status) noexcept;

  int encrypt();
  // uv_try_write with MSG_MORE: the bytes written or a libuv error (UV_EAGAIN when none).
  int try_write_more(const uv_buf_t* bufs, size_t nbufs);
  void end_writes();
  // The batch's memory (copies_, parts_) is borrowed from the worker thread's spares at the
  // first add and given back when the batch is written or queued, so that the thousands of
  // connections that wait (parked Pings, idle keep-alive) hold none of it, without a malloc per
  // batch for the busy ones.
  void borrow();
  void give_back();

  uv_stream_t* stream_ = nullptr;
  TlsEngine* tls_ = nullptr;
  Overload* budget_ = nullptr;
  void* owner_ = nullptr;
  DoneFn done_ = nullptr;
  std::vector<Part> parts_;
  std::string copies_;
  size_t batch_bytes_ = 0;
  size_t in_flight_ = 0;
  size_t requests_ = 0;  // queued uv_write requests
  bool last_ = false;    // end_with_next_flush
  bool ended_ = false;   // shut down by the last flush
};

}  // namespace sprayer::proxy
