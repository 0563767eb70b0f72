// Try-write first (no request object on the fast path), queue only what the socket refused.
#include "proxy/stream_writer.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include "proxy/overload.h"
#include "proxy/tls/tls_engine.h"

namespace sprayer::proxy {

struct StreamWriter::Request {
  uv_write_t req;
  StreamWriter* writer;
  std::vector<Slice> slices;  // keeps chunk memory alive until written
  std::string copies;
  std::vector<uv_buf_t> bufs;
  Overload* budget = nullptr;
  size_t charged = 0;  // to `budget`, given back when the write completes
};

namespace {

// Per worker thread: batch buffers between two batches. Few writers batch at once (those a
// read or a tick touches before the flush), so a handful of spares serves a whole worker.
constexpr size_t kMaxSpares = 32;
constexpr size_t kMaxSpareBytes = 64 * 1024;  // a rare big batch's buffer goes back to malloc

template <typename T>
struct Spares {
  std::vector<T> items;
  void take(T& into) {
    if (items.empty()) return;
    into.swap(items.back());
    items.pop_back();
  }
  void put(T& from, size_t bytes) {
    from.clear();
    if (bytes > kMaxSpareBytes || items.size() >= kMaxSpares) {
      T().swap(from);
      return;
    }
    items.emplace_back();
    items.back().swap(from);
  }
};

template <typename T>
Spares<T>& spares() {
  thread_local Spares<T> kept;
  return kept;
}

}  // namespace

void StreamWriter::borrow() {
  auto& copies = spares<std::string>();
  auto& parts = spares<std::vector<Part>>();
  if (copies_.capacity() <= kInlineBytes) copies.take(copies_);
  if (parts_.capacity() == 0) parts.take(parts_);
}

void StreamWriter::give_back() {
  auto& copies = spares<std::string>();
  auto& parts = spares<std::vector<Part>>();
  parts_.clear();  // releases the slices' chunks first
  if (copies_.capacity() > kInlineBytes) copies.put(copies_, copies_.capacity());
  copies_.clear();
  if (parts_.capacity() > 0) parts.put(parts_, parts_.capacity() * sizeof(Part));
}

void StreamWriter::add_copy(std::string_view bytes) {
  if (bytes.empty()) return;
  if (parts_.empty()) borrow();
  if (!parts_.empty() && parts_.back().slice.empty() && parts_.back().offset + parts_.back().len == copies_.size()) {
    parts_.back().len += bytes.size();
  } else {
    parts_.push_back(Part{Slice(), copies_.size(), bytes.size()});
  }
  copies_.append(bytes);
  batch_bytes_ += bytes.size();
}

size_t StreamWriter::queued() const {
  if (!stream_) return 0;
  size_t engine = tls_ ? tls_->pending_ciphertext() : 0;
  return uv_stream_get_write_queue_size(stream_) + batch_bytes_ + engine + requests_ * kRequestCost;
}

void StreamWriter::add(Slice slice) {
  if (slice.empty()) return;
  if (slice.size() < kCopyBelow) {
    add_copy(std::string_view(slice.data(), slice.size()));
    return;
  }
  if (parts_.empty()) borrow();
  batch_bytes_ += slice.size();
  size_t len = slice.size();
  parts_.push_back(Part{std::move(slice), 0, len});
}

int StreamWriter::encrypt() {
  // Each SSL_write makes at least one record, and every record costs a cipher setup, a tag
  // and 22 bytes here and a decryption at the peer. A response head (framing copy) and its
  // body (slices) are gathered into full records instead of one record per part.
  constexpr size_t kRecord = 16384;  // the TLS maximum plaintext per record
  thread_local std::string gathered;  // one per worker thread, at most one record
  gathered.clear();
  auto seal = [this](const char* data, size_t len) {
    // Plaintext goes out only after a request was read, so after the handshake: anything
    // else (want_io included) is a failed connection.
    return tls_->write_plaintext(data, len) == TlsStatus::ok;
  };
  for (const Part& p : parts_) {
    const char* base = p.slice.empty() ? copies_.data() + p.offset : p.slice.data();
    size_t left = p.len;
    while (left > 0) {
      if (gathered.empty() && (parts_.size() == 1 || left >= kRecord)) {
        size_t whole = parts_.size() == 1 ? left : left - left % kRecord;  // full records, no copy
        if (!seal(base, whole)) return UV_EPROTO;
        base += whole;
        left -= whole;
        continue;
      }
      size_t n = std::min(left, kRecord - gathered.size());
      gathered.append(base, n);
      base += n;
      left -= n;
      if (gathered.size() == kRecord) {
        if (!seal(gathered.data(), gathered.size())) return UV_EPROTO;
        gathered.clear();
      }
    }
  }
  if (!gathered.empty() && !seal(gathered.data(), gathered.size())) return UV_EPROTO;
  give_back();
  batch_bytes_ = 0;
  tls_->take_ciphertext([this](Slice s) { add(std::move(s)); });
  return 0;
}

int StreamWriter::try_write_more(const uv_buf_t* bufs, size_t nbufs) {
  uv_os_fd_t fd = -1;
  if (uv_stream_get_write_queue_size(stream_) != 0 || uv_fileno(reinterpret_cast<uv_handle_t*>(stream_), &fd) != 0)
    return UV_EAGAIN;
  msghdr msg{};
  // uv_buf_t is laid out as struct iovec on Unix (libuv's own writev relies on it).
  msg.msg_iov = reinterpret_cast<iovec*>(const_cast<uv_buf_t*>(bufs));
  msg.msg_iovlen = std::min<size_t>(nbufs, 1024);
  ssize_t n;
  do {
    n = ::sendmsg(fd, &msg, MSG_MORE | MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) return static_cast<int>(n);
  return errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
}

void StreamWriter::end_writes() {
  // Straight to the socket, not uv_shutdown: that would wait for a writable event (an
  // epoll_ctl and a loop turn) and let the batch sit in the kernel until then.
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(stream_), &fd) == 0 && ::shutdown(fd, SHUT_WR) == 0) ended_ = true;
}

int StreamWriter::flush() {
  const bool last = last_;
  last_ = false;
  if (tls_ && (!parts_.empty() || tls_->pending_ciphertext() > 0)) {
    int rc = encrypt();
    if (rc != 0) {
      discard();
      return rc;
    }
  }
  if (parts_.empty()) return 0;
  uv_buf_t stack_bufs[32];
  std::vector<uv_buf_t> heap_bufs;
  uv_buf_t* bufs = stack_bufs;
  if (parts_.size() > 32) {
    heap_bufs.resize(parts_.size());
    bufs = heap_bufs.data();
  }
  for (size_t i = 0; i < parts_.size(); ++i) {
    const Part& p = parts_[i];
    const char* base = p.slice.empty() ? copies_.data() + p.offset : p.slice.data();
    bufs[i] = uv_buf_init(const_cast<char*>(base), static_cast<unsigned>(p.len));
  }
  size_t nbufs = parts_.size();
  size_t written = 0;
  if (in_flight_ == 0) {
    int n = last ? try_write_more(bufs, nbufs)
                 : uv_try_write(stream_, bufs, static_cast<unsigned>(std::min<size_t>(nbufs, 1024)));
    if (n < 0 && n != UV_EAGAIN) {
      discard();
      return n;
    }
    if (n > 0) written = static_cast<size_t>(n);
  }
  if (written == batch_bytes_) {
    discard();
    if (last) end_writes();
    return 0;
  }
  // Queue the rest; the request owns copies of framing bytes and references to slices.
  auto request = std::make_unique<Request>();
  request->writer = this;
  request->copies = std::move(copies_);
  size_t skip = written;
  for (size_t i = 0; i < parts_.size(); ++i) {
    Part& p = parts_[i];
    if (skip >= p.len) {
      skip -= p.len;
      continue;
    }
    const char* base = p.slice.empty() ? request->copies.data() + p.offset : p.slice.data();
    request->bufs.push_back(uv_buf_init(const_cast<char*>(base + skip), static_cast<unsigned>(p.len - skip)));
    if (!p.slice.empty()) request->slices.push_back(std::move(p.slice));
    skip = 0;
  }
  size_t remaining = batch_bytes_ - written;
  give_back();
  batch_bytes_ = 0;
  request->req.data = request.get();
  if (budget_) {
    // Charged, not refused: the bytes were accepted already; the marks keep this in bounds.
    request->budget = budget_;
    request->charged = kRequestCost + request->copies.capacity() + request->bufs.capacity() * sizeof(uv_buf_t) +
                       request->slices.capacity() * sizeof(Slice);
    budget_->charge(request->charged);
  }
  int rc = uv_write(&request->req, stream_, request->bufs.data(), static_cast<unsigned>(request->bufs.size()),
                    &StreamWriter::on_write);
  if (rc != 0) {
    if (request->budget) request->budget->release(request->charged);
    return rc;
  }
  in_flight_ += remaining;
  ++requests_;
  request.release();
  return 0;
}

void StreamWriter::on_write(uv_write_t* req, int status) noexcept {
  std::unique_ptr<Request> request(static_cast<Request*>(req->data));
  StreamWriter* self = request->writer;
  size_t bytes = 0;
  for (auto& b : request->bufs) bytes += b.len;
  self->in_flight_ -= std::min(bytes, self->in_flight_);
  self->requests_ -= self->requests_ > 0 ? 1 : 0;
  if (request->budget) request->budget->release(request->charged);
  request.reset();
  if (self->done_) self->done_(self->owner_, status);
}

}  // namespace sprayer::proxy
