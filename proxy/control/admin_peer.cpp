// The pair's admin state exchange (see admin_peer.h): a small HTTP/1.1 client on the control
// loop, one connection per exchange (resolve, connect, POST, read to the end), bounded in
// time and size.
#include "proxy/control/admin_peer.h"

#include <cstring>

#include "proxy/log.h"

namespace sprayer::proxy {
namespace {

constexpr size_t kMaxAnswer = 9 << 20;  // the state text is bounded to 8 MiB (admin_state.cpp)

}  // namespace

struct AdminPeer::Call {
  AdminPeer* owner = nullptr;  // null once the peer link stopped: nobody is told
  uv_getaddrinfo_t resolve{};
  uv_connect_t connect{};
  uv_write_t write{};
  uv_tcp_t tcp{};
  uv_timer_t deadline{};
  bool resolving = false;
  bool tcp_open = false;
  bool done = false;
  int open_handles = 0;
  std::string request;
  std::string answer;
  char buffer[16384];

  static Call* of(uv_handle_t* h) { return static_cast<Call*>(h->data); }

  void maybe_free() {
    if (open_handles == 0 && !resolving) delete this;
  }

  static void on_closed(uv_handle_t* h) noexcept {
    Call* call = of(h);
    --call->open_handles;
    call->maybe_free();
  }

  // Ends the exchange once; the owner (if any) hears of it, the handles close.
  void end(int status, std::string body, std::string error) {
    if (done) return;
    done = true;
    if (tcp_open) uv_close(reinterpret_cast<uv_handle_t*>(&tcp), on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline), on_closed);
    if (AdminPeer* peer = owner) {
      owner = nullptr;
      peer->finished(this, status, std::move(body), std::move(error));
    }
  }

  void complete() {
    // "HTTP/1.1 200 OK\r\n...\r\n\r\nbody"
    size_t space = answer.find(' ');
    size_t head_end = answer.find("\r\n\r\n");
    if (answer.rfind("HTTP/1.", 0) != 0 || space == std::string::npos || head_end == std::string::npos)
      return end(0, {}, "not an HTTP answer");
    int status = std::atoi(answer.c_str() + space + 1);
    end(status, answer.substr(head_end + 4), {});
  }
};

namespace {

void on_deadline(uv_timer_t* t) noexcept {
  AdminPeer::Call::of(reinterpret_cast<uv_handle_t*>(t))->end(0, {}, "no answer within " +
                                                                      std::to_string(kPeerTimeoutMs / 1000) + " s");
}

void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
  auto* call = AdminPeer::Call::of(h);
  *buf = uv_buf_init(call->buffer, sizeof call->buffer);
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) noexcept {
  auto* call = AdminPeer::Call::of(reinterpret_cast<uv_handle_t*>(s));
  if (call->done) return;
  if (n > 0) {
    call->answer.append(buf->base, static_cast<size_t>(n));
    if (call->answer.size() > kMaxAnswer) call->end(0, {}, "answer larger than " + std::to_string(kMaxAnswer) + " bytes");
  } else if (n == UV_EOF) {
    call->complete();
  } else if (n < 0) {
    call->end(0, {}, std::string("read: ") + uv_strerror(static_cast<int>(n)));
  }
}

void on_written(uv_write_t* w, int status) noexcept {
  auto* call = static_cast<AdminPeer::Call*>(w->data);
  if (status < 0) call->end(0, {}, std::string("write: ") + uv_strerror(status));
}

void on_connected(uv_connect_t* c, int status) noexcept {
  auto* call = static_cast<AdminPeer::Call*>(c->data);
  if (call->done) return;
  if (status < 0) return call->end(0, {}, std::string("connect: ") + uv_strerror(status));
  auto* stream = reinterpret_cast<uv_stream_t*>(&call->tcp);
  uv_buf_t buf = uv_buf_init(call->request.data(), static_cast<unsigned>(call->request.size()));
  call->write.data = call;
  if (int rc = uv_write(&call->write, stream, &buf, 1, on_written); rc < 0)
    return call->end(0, {}, std::string("write: ") + uv_strerror(rc));
  uv_read_start(stream, on_alloc, on_read);
}

void on_resolved(uv_getaddrinfo_t* r, int status, addrinfo* result) noexcept {
  auto* call = static_cast<AdminPeer::Call*>(r->data);
  call->resolving = false;
  if (call->done) {
    if (result) uv_freeaddrinfo(result);
    call->maybe_free();
    return;
  }
  if (status < 0 || !result) {
    if (result) uv_freeaddrinfo(result);
    return call->end(0, {}, std::string("resolve: ") + uv_strerror(status));
  }
  uv_loop_t* loop = r->loop;
  uv_tcp_init(loop, &call->tcp);
  call->tcp.data = call;
  call->tcp_open = true;
  ++call->open_handles;
  call->connect.data = call;
  int rc = uv_tcp_connect(&call->connect, &call->tcp, result->ai_addr, on_connected);
  uv_freeaddrinfo(result);
  if (rc < 0) call->end(0, {}, std::string("connect: ") + uv_strerror(rc));
}

}  // namespace

AdminPeer::AdminPeer(uv_loop_t* loop, conf::Endpoint peer, std::function<std::string()> token,
                     std::function<std::string()> our_states, std::function<void(std::string_view)> on_answer)
    : loop_(loop),
      peer_(std::move(peer)),
      token_(std::move(token)),
      our_states_(std::move(our_states)),
      on_answer_(std::move(on_answer)) {
  status_.address = peer_.to_string();
}

AdminPeer::~AdminPeer() {
  if (call_) call_->owner = nullptr;
}

void AdminPeer::start() {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  timer_open_ = true;
  uv_timer_start(&timer_, [](uv_timer_t* t) noexcept { static_cast<AdminPeer*>(t->data)->on_timer(); },
                 kPeerIntervalMs, kPeerIntervalMs);
  exchange();
}

void AdminPeer::changed() {
  if (stopped_) return;
  if (call_)
    again_ = true;
  else
    exchange();
}

void AdminPeer::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (timer_open_) {
    timer_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  }
  if (Call* call = call_) {
    call_ = nullptr;
    call->owner = nullptr;
    call->end(0, {}, "stopped");
  }
}

void AdminPeer::on_timer() {
  if (!call_) exchange();
}

void AdminPeer::exchange() {
  if (stopped_ || call_) return;
  std::string body = our_states_();
  auto* call = new Call;
  call->owner = this;
  call->request = "POST /api/v1/admin-states HTTP/1.1\r\nHost: " + peer_.to_string() +
                  "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Sprayer-Admin: 1\r\n";
  if (std::string token = token_(); !token.empty()) call->request += "Authorization: Bearer " + token + "\r\n";
  call->request += "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  uv_timer_init(loop_, &call->deadline);
  call->deadline.data = call;
  ++call->open_handles;
  uv_timer_start(&call->deadline, on_deadline, kPeerTimeoutMs, 0);
  call_ = call;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  call->resolve.data = call;
  std::string port = std::to_string(peer_.port);
  call->resolving = true;
  if (int rc = uv_getaddrinfo(loop_, &call->resolve, on_resolved, peer_.host.c_str(), port.c_str(), &hints); rc < 0) {
    call->resolving = false;
    call->end(0, {}, std::string("resolve: ") + uv_strerror(rc));
  }
}

void AdminPeer::finished(Call* call, int http_status, std::string body, std::string error) {
  if (call_ == call) call_ = nullptr;
  if (error.empty() && http_status != 200) {
    // The peer's own answer says why (a wrong token, an old sprayer without this call).
    std::string said = body.substr(0, 200);
    while (!said.empty() && (said.back() == '\n' || said.back() == '\r')) said.pop_back();
    error = "HTTP " + std::to_string(http_status) + (said.empty() ? "" : ": " + said);
  }
  if (!error.empty()) {
    ++status_.exchanges_failed;
    status_.last_error = error;
    if (status_.up != false)
      LOG_WARN("admin peer %s: no exchange (%s); drain and maintenance changes here apply at once and reach it "
               "once it answers",
               status_.address.c_str(), error.c_str());
    status_.up = false;
  } else {
    ++status_.exchanges_ok;
    if (status_.up == false)
      LOG_INFO("admin peer %s answers again: admin states exchanged", status_.address.c_str());
    else if (!status_.up)
      LOG_INFO("admin peer %s: admin states exchanged", status_.address.c_str());
    status_.up = true;
    on_answer_(body);
  }
  if (again_ && !stopped_) {
    again_ = false;
    exchange();
  }
}

}  // namespace sprayer::proxy
