// Socket plumbing shared by both sides: reads into pool chunks handed to the read phase,
// pausing by reasons, the deadline and writer callbacks, close and deferred delete.
#include "proxy/connection.h"

#include "proxy/tls/tls_engine.h"

namespace sprayer::proxy {

Connection::Connection(uv_loop_t* loop, BufferPool& buffers, std::atomic<uint64_t>& bytes_in)
    : buffers_(buffers), bytes_in_(bytes_in) {
  uv_tcp_init(loop, &tcp_);
  tcp_.data = this;
  ++handles_open_;
  deadline_.init(loop, this, &Connection::on_timer);
  ++handles_open_;
  writer_.init(stream(), this, &Connection::on_written);
}

Connection::~Connection() { writer_.set_tls(nullptr); }

void Connection::pause_reading(PauseReasons reasons) {
  pause_reasons_.add(reasons);
  update_read_state();
}

void Connection::resume_reading(PauseReasons reasons) {
  pause_reasons_.remove(reasons);
  update_read_state();
  if (pause_reasons_.empty() && !closing_) on_resumed();
}

void Connection::update_read_state() {
  bool want = read_ != nullptr && input_ != nullptr && !closing_ && pause_reasons_.empty();
  if (want == reading_) return;
  reading_ = want;
  if (want)
    uv_read_start(stream(), &Connection::on_alloc, &Connection::on_read);
  else
    uv_read_stop(stream());
}

void Connection::on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) noexcept {
  auto* self = static_cast<Connection*>(handle->data);
  // No chunk (memory budget spent): libuv reports UV_ENOBUFS and the connection closes.
  Chunk* chunk = self->buffers_.acquire();
  *buf = chunk ? uv_buf_init(chunk->data(), chunk->capacity) : uv_buf_init(nullptr, 0);
}

void Connection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto* self = static_cast<Connection*>(stream->data);
  Chunk* chunk = buf->base ? reinterpret_cast<Chunk*>(buf->base) - 1 : nullptr;
  if (nread <= 0) {
    if (chunk) BufferPool::unref(chunk);
    if (nread < 0) self->on_eof(nread);
    return;
  }
  self->bytes_in_.fetch_add(static_cast<uint64_t>(nread), std::memory_order_relaxed);
  Slice data(chunk, buf->base, static_cast<size_t>(nread));
  BufferPool::unref(chunk);
  if (Phase phase = self->read_) self->run_phase(phase, std::move(data));
}

// Every phase is called here, out of line: GCC 12's UBSan, at -O0, reported the argument of a
// pointer-to-member call made inside the uv read callback as the object's address ("member
// access within misaligned address 0x2b", 0x2b being nread).
void Connection::run_phase(Phase phase, Slice data) {
  Connection* self = this;
  (self->*phase)(std::move(data));
}

void Connection::on_timer(uv_timer_t* timer) noexcept {
  auto* self = static_cast<Connection*>(timer->data);
  if (self->deadline_.expired()) self->on_deadline();
}

void Connection::on_written(void* self, int status) noexcept { static_cast<Connection*>(self)->on_write_done(status); }

void Connection::close_handles() {
  if (closing_) return;
  read_ = nullptr;
  input_ = nullptr;
  reading_ = false;  // uv_close stops the read
  closing_ = true;
  for (auto* handle : {reinterpret_cast<uv_handle_t*>(&tcp_), deadline_.handle()}) {
    if (!uv_is_closing(handle)) uv_close(handle, &Connection::on_close);
  }
}

void Connection::on_close(uv_handle_t* handle) noexcept {
  auto* self = static_cast<Connection*>(handle->data);
  if (--self->handles_open_ == 0) delete self;
}

}  // namespace sprayer::proxy
