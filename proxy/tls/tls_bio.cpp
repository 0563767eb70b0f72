// BIO callbacks are C: thin noexcept trampolines that never let an exception cross OpenSSL.
#include "proxy/tls/tls_bio.h"

#include <openssl/bio.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace sprayer::proxy {

namespace {

// A fixed type number rather than BIO_get_new_index(): that hands out at most ~128 indexes per
// process and every TlsContext (re)load would take one. Nothing looks the type up.
constexpr int kBioType = 0x7e | BIO_TYPE_SOURCE_SINK;

TlsBioBuffers* buffers_of(BIO* bio) { return static_cast<TlsBioBuffers*>(BIO_get_data(bio)); }

int on_bio_read(BIO* bio, char* out, size_t len, size_t* done) noexcept {
  BIO_clear_retry_flags(bio);
  TlsBioBuffers* buffers = buffers_of(bio);
  size_t n = buffers ? buffers->read_input(out, len) : 0;
  *done = n;
  if (n == 0) {
    BIO_set_retry_read(bio);  // "would block": more ciphertext comes with the next socket read
    return 0;
  }
  return 1;
}

int on_bio_write(BIO* bio, const char* data, size_t len, size_t* done) noexcept {
  BIO_clear_retry_flags(bio);
  TlsBioBuffers* buffers = buffers_of(bio);
  *done = 0;
  if (!buffers) return 0;
  // No retry flag on failure: OpenSSL reports a hard error and the connection fails.
  if (!buffers->write_output(data, len)) return 0;
  *done = len;
  return 1;
}

long on_bio_ctrl(BIO* bio, int cmd, long, void*) noexcept {
  switch (cmd) {
    case BIO_CTRL_FLUSH:  // OpenSSL flushes after each flight; our output is already "sent"
    case BIO_CTRL_DUP:
      return 1;
    case BIO_CTRL_PENDING: {
      TlsBioBuffers* buffers = buffers_of(bio);
      return buffers ? static_cast<long>(buffers->input_bytes()) : 0;
    }
    case BIO_CTRL_WPENDING:  // writes never block, so nothing waits inside the BIO
    default:
      return 0;
  }
}

int on_bio_create(BIO* bio) noexcept {
  BIO_set_init(bio, 1);
  return 1;
}

int on_bio_destroy(BIO* bio) noexcept {
  BIO_set_data(bio, nullptr);
  return 1;
}

}  // namespace

void TlsBioBuffers::push_input(Slice data) {
  if (data.empty()) return;
  in_bytes_ += data.size();
  in_.push_back(std::move(data));
}

bool TlsBioBuffers::push_input_copy(const char* data, size_t len) {
  while (len > 0) {
    Chunk* chunk = pool_.acquire();
    if (!chunk) return false;
    size_t n = std::min<size_t>(len, chunk->capacity);
    std::memcpy(chunk->data(), data, n);
    push_input(Slice(chunk, chunk->data(), n));
    BufferPool::unref(chunk);
    data += n;
    len -= n;
  }
  return true;
}

size_t TlsBioBuffers::read_input(char* out, size_t cap) {
  size_t done = 0;
  while (done < cap && !in_.empty()) {
    const Slice& front = in_.front();
    size_t n = std::min(cap - done, front.size() - in_off_);
    std::memcpy(out + done, front.data() + in_off_, n);
    done += n;
    in_off_ += n;
    if (in_off_ == front.size()) {
      in_.erase(in_.begin());  // gives the chunk back as soon as OpenSSL has it
      in_off_ = 0;
    }
  }
  in_bytes_ -= done;
  return done;
}

size_t TlsBioBuffers::peek_input(char* out, size_t len) const {
  size_t done = 0;
  size_t off = in_off_;
  for (const Slice& s : in_) {
    if (done == len) break;
    size_t n = std::min(len - done, s.size() - off);
    std::memcpy(out + done, s.data() + off, n);
    done += n;
    off = 0;
  }
  return done;
}

void TlsBioBuffers::count_records(const char* data, size_t len) {
  while (len > 0) {
    if (out_body_left_ > 0) {
      size_t n = std::min<size_t>(len, out_body_left_);
      out_body_left_ -= static_cast<uint32_t>(n);
      data += n;
      len -= n;
      continue;
    }
    out_header_[out_header_have_++] = static_cast<unsigned char>(*data++);
    --len;
    if (out_header_have_ == 5) {
      out_header_have_ = 0;
      out_body_left_ = (uint32_t(out_header_[3]) << 8) | out_header_[4];
      ++out_records_;
    }
  }
}

bool TlsBioBuffers::write_output(const char* data, size_t len) {
  count_records(data, len);
  while (len > 0) {
    if (out_.empty() || out_.back().len == out_.back().chunk->capacity) {
      Chunk* chunk = pool_.acquire();
      if (!chunk) return false;
      out_.push_back(OutChunk{chunk, 0});
    }
    OutChunk& part = out_.back();
    size_t n = std::min<size_t>(len, part.chunk->capacity - part.len);
    std::memcpy(part.chunk->data() + part.len, data, n);
    part.len += static_cast<uint32_t>(n);
    out_bytes_ += n;
    data += n;
    len -= n;
  }
  return true;
}

char* TlsBioBuffers::output_space(size_t len) {
  if (!out_.empty() && out_.back().chunk->capacity - out_.back().len >= len)
    return out_.back().chunk->data() + out_.back().len;
  if (len > pool_.chunk_size()) return nullptr;
  Chunk* chunk = pool_.acquire();
  if (!chunk) return nullptr;
  // Left empty if the caller then fails: take_output() skips it.
  out_.push_back(OutChunk{chunk, 0});
  return chunk->data();
}

void TlsBioBuffers::commit_output(const char* data, size_t len) {
  count_records(data, len);
  out_.back().len += static_cast<uint32_t>(len);
  out_bytes_ += len;
}

void TlsBioBuffers::release() {
  in_.clear();
  in_off_ = 0;
  in_bytes_ = 0;
  for (OutChunk& part : out_) BufferPool::unref(part.chunk);
  out_.clear();
  out_bytes_ = 0;
}

TlsBioMethod::TlsBioMethod() {
  method_ = BIO_meth_new(kBioType, "sprayer tls buffers");
  if (!method_) return;
  if (!BIO_meth_set_read_ex(method_, on_bio_read) || !BIO_meth_set_write_ex(method_, on_bio_write) ||
      !BIO_meth_set_ctrl(method_, on_bio_ctrl) || !BIO_meth_set_create(method_, on_bio_create) ||
      !BIO_meth_set_destroy(method_, on_bio_destroy)) {
    BIO_meth_free(method_);
    method_ = nullptr;
  }
}

TlsBioMethod::~TlsBioMethod() { BIO_meth_free(method_); }

BIO* TlsBioMethod::new_bio(TlsBioBuffers& buffers) const {
  if (!method_) return nullptr;
  BIO* bio = BIO_new(method_);
  if (bio) BIO_set_data(bio, &buffers);
  return bio;
}

}  // namespace sprayer::proxy
