// The ciphertext side of a TlsEngine: a custom OpenSSL BIO whose input is the slices read from
// the socket (held, not copied) and whose output lands in BufferPool chunks handed out as slices.
#pragma once

#include <openssl/bio.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "proxy/buffer_pool.h"

namespace sprayer::proxy {

// Ciphertext waiting for OpenSSL (in) and produced by it (out). An idle connection holds no
// chunk: input is released as soon as it is consumed, output as soon as it is taken.
class TlsBioBuffers {
 public:
  explicit TlsBioBuffers(BufferPool& pool) : pool_(pool) {}
  ~TlsBioBuffers() { release(); }
  TlsBioBuffers(const TlsBioBuffers&) = delete;
  TlsBioBuffers& operator=(const TlsBioBuffers&) = delete;

  void push_input(Slice data);
  bool push_input_copy(const char* data, size_t len);  // false: no memory for it (some may be in)
  size_t input_bytes() const { return in_bytes_; }
  size_t read_input(char* out, size_t cap);  // BIO read side; 0 = nothing buffered
  size_t peek_input(char* out, size_t len) const;  // copies up to len bytes without consuming

  // BIO write side; false when the pool (the memory budget) had no chunk for all of it.
  bool write_output(const char* data, size_t len);
  size_t output_bytes() const { return out_bytes_; }
  // For a record sealed where it is sent from: `len` contiguous bytes at the end of the output
  // (in the last chunk, or a new one), null when no chunk has room or memory. The bytes count
  // as output once commit_output() is told how many were written.
  char* output_space(size_t len);
  void commit_output(const char* data, size_t len);
  // TLS records written so far (headers are followed through the stream), and whether the
  // output ends between records. The engine learns from these how many records OpenSSL sent.
  uint64_t output_records() const { return out_records_; }
  bool output_at_record_boundary() const { return out_header_have_ == 0 && out_body_left_ == 0; }
  // Hands every pending output byte to sink(Slice) in order; returns how many.
  template <class Sink>
  size_t take_output(Sink&& sink) {
    size_t n = out_bytes_;
    for (OutChunk& part : out_) {
      if (part.len > 0) sink(Slice(part.chunk, part.chunk->data(), part.len));  // see output_space()
      BufferPool::unref(part.chunk);
    }
    out_.clear();
    out_bytes_ = 0;
    return n;
  }

  void release();  // drops all pending input and output
  // Nothing pending: gives the (empty) lists' memory back, for a connection that waits long.
  void trim() {
    if (in_.empty()) std::vector<Slice>().swap(in_);
    if (out_.empty()) std::vector<OutChunk>().swap(out_);
  }

 private:
  struct OutChunk {
    Chunk* chunk;  // own reference
    uint32_t len;
  };

  BufferPool& pool_;
  std::vector<Slice> in_;
  size_t in_off_ = 0;  // consumed bytes of in_.front()
  size_t in_bytes_ = 0;
  void count_records(const char* data, size_t len);

  std::vector<OutChunk> out_;
  size_t out_bytes_ = 0;
  uint64_t out_records_ = 0;
  uint32_t out_body_left_ = 0;  // bytes of the current record's body still to come
  uint8_t out_header_have_ = 0;
  unsigned char out_header_[5] = {};
};

// Owns the BIO_METHOD (one per TlsContext, shared by its engines) whose callbacks route an
// SSL's reads and writes to a TlsBioBuffers.
class TlsBioMethod {
 public:
  TlsBioMethod();
  ~TlsBioMethod();
  TlsBioMethod(const TlsBioMethod&) = delete;
  TlsBioMethod& operator=(const TlsBioMethod&) = delete;

  bool ok() const { return method_ != nullptr; }
  BIO* new_bio(TlsBioBuffers& buffers) const;  // null when out of memory

 private:
  BIO_METHOD* method_ = nullptr;
};

}  // namespace sprayer::proxy
