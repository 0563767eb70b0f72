// The client connection's timeouts on its one timer: the purpose's deadline (head, idle, body,
// lingering close, the next pipelined request) and the send deadline (writes in flight must
// progress), the connection's Deadline armed for whichever is due first.
#include <algorithm>

#include "proxy/downstream_connection.h"

namespace sprayer::proxy {
namespace {

constexpr uint64_t kLingerMs = 2000;

}  // namespace

void DownstreamConnection::arm_timer(Timer purpose) {
  if (state_ == State::closed) return;
  timer_purpose_ = purpose;
  const auto& t = ctx_.config().timeouts;
  uint64_t ms = 0;
  switch (purpose) {
    case Timer::none:
      set_purpose_due(0);
      return;
    case Timer::head: ms = static_cast<uint64_t>(t.client_header.count()); break;
    case Timer::idle: ms = static_cast<uint64_t>(t.client_idle.count()); break;
    case Timer::body: ms = static_cast<uint64_t>(t.client_body.count()); break;
    case Timer::linger: ms = kLingerMs; break;
    case Timer::next_request: ms = 0; break;
  }
  set_purpose_due(uv_now(ctx_.loop) + ms);
}

void DownstreamConnection::watch_sending() {
  send_due_ = uv_now(ctx_.loop) + static_cast<uint64_t>(ctx_.config().timeouts.client_send.count());
  rearm_deadline();
}

void DownstreamConnection::stop_watching_sending() {
  if (send_due_ == 0) return;
  send_due_ = 0;
  rearm_deadline();
}

void DownstreamConnection::set_purpose_due(uint64_t due) {
  purpose_due_ = due;
  rearm_deadline();
}

void DownstreamConnection::rearm_deadline() {
  if (handles_closing()) return;
  uint64_t due = purpose_due_ == 0 ? send_due_ : send_due_ == 0 ? purpose_due_ : std::min(purpose_due_, send_due_);
  if (due == 0) {
    deadline().clear();
    return;
  }
  // Moving the deadline later (a write completed, a keep-alive request moved on) stays a field
  // write in Deadline; only an earlier one restarts the uv timer.
  uint64_t now = uv_now(ctx_.loop);
  deadline().set_in(due > now ? due - now : 0);
}

void DownstreamConnection::on_deadline() {
  const uint64_t now = uv_now(ctx_.loop);
  const bool send_passed = send_due_ != 0 && send_due_ <= now;
  const bool purpose_passed = purpose_due_ != 0 && purpose_due_ <= now;
  // Both passed (a long loop turn): the earlier one is the one two timers would have run first.
  if (send_passed && (!purpose_passed || send_due_ <= purpose_due_)) {
    on_send_timeout();
    return;
  }
  if (!purpose_passed) {
    rearm_deadline();
    return;
  }
  purpose_due_ = 0;
  rearm_deadline();  // the send deadline, if one is running; the handler may arm a new purpose
  on_purpose_deadline(timer_purpose_);
}

void DownstreamConnection::on_purpose_deadline(Timer purpose) {
  switch (purpose) {
    case Timer::none:
      return;
    case Timer::next_request:
      timer_purpose_ = Timer::none;
      start_next_request();
      return;
    case Timer::idle:
      ctx_.stats.timeout(TimeoutKind::client_idle);
      close_between_requests();
      return;
    case Timer::head:
      ctx_.stats.timeout(TimeoutKind::client_header);
      if (state_ == State::reading_head) {
        send_error_and_close(408);
      } else {
        close_between_requests();  // connected (maybe handshaken) but never sent a request byte
      }
      return;
    case Timer::body:
      ctx_.stats.timeout(TimeoutKind::client_body);
      exchange_.abort();
      if (exchange_.response_started())
        close();
      else
        send_error_and_close(408);
      return;
    case Timer::linger:
      close();
      return;
  }
}

void DownstreamConnection::on_send_timeout() {
  // A client that stopped reading holds buffers and an upstream: let it go.
  ctx_.stats.timeout(TimeoutKind::client_send);
  exchange_.abort();
  close();
}

}  // namespace sprayer::proxy
