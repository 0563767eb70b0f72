// One probe = connect (and a TLS handshake for HTTPS), send a GET, read status and the first max_body_bytes of the body
// (and the availability header), judge, close. Probes end exactly once: by answer, error or
// deadline.
#include "health/active_checker.h"

#include <llhttp.h>

#include <algorithm>
#include <chrono>

namespace sprayer::health {

struct ActiveChecker::Probe {
  ActiveChecker* owner = nullptr;
  std::string id;
  uv_tcp_t tcp{};
  uv_connect_t connect_req{};
  uv_timer_t deadline{};
  llhttp_t parser{};
  std::unique_ptr<ProbeTls> tls;  // HTTPS only
  bool tls_ready = false;
  std::string request;
  std::string body;
  std::string header_field;
  std::string availability;
  bool have_availability = false;
  bool in_value = false;
  bool done = false;
  int open_handles = 0;
  TimePoint started{};
  char buffer[4096];

  std::chrono::milliseconds elapsed() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(owner->clock_.now() - started);
  }
};

namespace {

using Outcome = CheckResult::Outcome;

// One write in flight; freed by its callback, which libuv runs (cancelled at worst) before
// the probe's close callbacks.
struct ProbeWrite {
  uv_write_t req{};
  ActiveChecker::Probe* probe = nullptr;
  std::string bytes;
};

ActiveChecker::Probe* probe_of(llhttp_t* p) { return static_cast<ActiveChecker::Probe*>(p->data); }

std::string base64_encode(std::string_view in) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) n |= static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
    if (i + 2 < in.size()) n |= static_cast<unsigned char>(in[i + 2]);
    out.push_back(alphabet[(n >> 18) & 63]);
    out.push_back(alphabet[(n >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? alphabet[(n >> 6) & 63] : '=');
    out.push_back(i + 2 < in.size() ? alphabet[n & 63] : '=');
  }
  return out;
}

}  // namespace

std::string check_request_headers(std::string_view credentials,
                                  const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string lines;
  if (!credentials.empty()) lines += "Authorization: Basic " + base64_encode(credentials) + "\r\n";
  for (const auto& [name, value] : headers) lines += name + ": " + value + "\r\n";
  return lines;
}

ActiveChecker::ActiveChecker(uv_loop_t* loop, HealthTracker& tracker, const Clock& clock,
                             std::function<void()> on_change)
    : loop_(loop), tracker_(tracker), clock_(clock), on_change_(std::move(on_change)) {}

ActiveChecker::~ActiveChecker() = default;

void ActiveChecker::set_targets(std::vector<Target> targets) {
  targets_ = std::move(targets);
  schedule();  // a reload may have added servers whose first check is due sooner
}

void ActiveChecker::start() {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  timer_open_ = true;
  schedule();
}

void ActiveChecker::schedule() {
  if (stopping_ || !timer_open_) return;
  auto next = tracker_.earliest_check_time();
  if (!next) {
    // Every server has a check in flight; finishing one reschedules.
    uv_timer_stop(&timer_);
    return;
  }
  auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(*next - clock_.now());
  uint64_t ms = wait.count() > 0 ? static_cast<uint64_t>(wait.count()) : 0;
  uv_timer_start(&timer_, [](uv_timer_t* t) noexcept { static_cast<ActiveChecker*>(t->data)->on_timer(); }, ms, 0);
}

void ActiveChecker::on_timer() {
  TimePoint now = clock_.now();
  for (const std::string& id : tracker_.due_checks(now)) {
    auto target = std::find_if(targets_.begin(), targets_.end(), [&](const Target& t) { return t.id == id; });
    if (target == targets_.end()) continue;
    tracker_.on_check_started(id, now);
    // A server dropped and added again by reloads can be due while its old probe still
    // runs: that probe's answer is this check's, so the server is never checked twice at once.
    if (!in_flight(id)) launch(*target);
  }
  schedule();
}

bool ActiveChecker::in_flight(std::string_view id) const {
  return std::any_of(probes_.begin(), probes_.end(), [&](const Probe* p) { return !p->done && p->id == id; });
}

void ActiveChecker::launch(const Target& target) {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_header_field = [](llhttp_t* p, const char* at, size_t len) noexcept {
      Probe* probe = probe_of(p);
      if (probe->in_value) probe->header_field.clear();
      probe->in_value = false;
      probe->header_field.append(at, len);
      return 0;
    };
    s.on_header_value = [](llhttp_t* p, const char* at, size_t len) noexcept {
      Probe* probe = probe_of(p);
      if (!probe->in_value) probe->in_value = true;
      const std::string& wanted = probe->owner->tracker_.spec().check.availability_header;
      if (!wanted.empty() && probe->header_field.size() == wanted.size() &&
          std::equal(wanted.begin(), wanted.end(), probe->header_field.begin(),
                     [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
        probe->availability.append(at, len);
        probe->have_availability = true;
      }
      return 0;
    };
    s.on_body = [](llhttp_t* p, const char* at, size_t len) noexcept {
      Probe* probe = probe_of(p);
      size_t room = probe->owner->tracker_.spec().check.max_body_bytes - std::min(probe->body.size(),
                    probe->owner->tracker_.spec().check.max_body_bytes);
      probe->body.append(at, std::min(room, len));
      return 0;
    };
    s.on_message_complete = [](llhttp_t* p) noexcept {
      Probe* probe = probe_of(p);
      const CheckSpec& spec = probe->owner->tracker_.spec().check;
      std::optional<std::string_view> availability;
      if (probe->have_availability) availability = probe->availability;
      CheckResult result = evaluate_response(p->status_code, probe->body, availability, spec);
      result.latency = probe->elapsed();
      probe->owner->finish(probe, result);
      return static_cast<int>(HPE_PAUSED);
    };
    return s;
  }();

  auto* probe = new Probe;
  probe->owner = this;
  probe->id = target.id;
  probe->started = clock_.now();
  probes_.push_back(probe);
  ++started_;
  const CheckSpec& spec = tracker_.spec().check;
  probe->request = "GET " + spec.path + " HTTP/1.1\r\nHost: " + target.host +
                   "\r\nUser-Agent: sprayer-health-check\r\nAccept: */*\r\nConnection: close\r\n" +
                   request_headers_ + "\r\n";
  llhttp_init(&probe->parser, HTTP_RESPONSE, &settings);
  probe->parser.data = probe;

  uv_tcp_init(loop_, &probe->tcp);
  probe->tcp.data = probe;
  ++probe->open_handles;
  uv_timer_init(loop_, &probe->deadline);
  probe->deadline.data = probe;
  ++probe->open_handles;
  uv_timer_start(&probe->deadline, [](uv_timer_t* t) noexcept {
    Probe* p = static_cast<Probe*>(t->data);
    p->owner->finish(p, failed_check(Outcome::fail_timeout, p->elapsed()));
  }, static_cast<uint64_t>(spec.timeout.count()), 0);

  probe->connect_req.data = probe;
  if (target.tls) {
    probe->tls = tls_factory_ ? tls_factory_(target.id) : nullptr;
    if (!probe->tls) {
      finish(probe, failed_check(Outcome::fail_connect, probe->elapsed()));
      return;
    }
  }
  int rc = uv_tcp_connect(&probe->connect_req, &probe->tcp, reinterpret_cast<const sockaddr*>(&target.addr),
                          [](uv_connect_t* req, int status) noexcept {
    Probe* p = static_cast<Probe*>(req->data);
    if (p->done) return;
    if (status != 0) {
      p->owner->finish(p, failed_check(Outcome::fail_connect, p->elapsed()));
      return;
    }
    p->owner->on_connected(p);
  });
  if (rc != 0) finish(probe, failed_check(Outcome::fail_connect, probe->elapsed()));
}

void ActiveChecker::on_connected(Probe* probe) {
  uv_read_start(reinterpret_cast<uv_stream_t*>(&probe->tcp),
                [](uv_handle_t* h, size_t, uv_buf_t* b) noexcept {
                  Probe* q = static_cast<Probe*>(h->data);
                  *b = uv_buf_init(q->buffer, sizeof q->buffer);
                },
                [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) noexcept {
                  Probe* q = static_cast<Probe*>(s->data);
                  if (q->done) return;
                  if (n < 0) {
                    if (q->tls && !q->tls_ready) {
                      q->owner->finish(q, failed_check(Outcome::fail_connect, q->elapsed()));
                      return;
                    }
                    // A close-delimited answer ends here; anything else is a reset.
                    if (n == UV_EOF && llhttp_finish(&q->parser) == HPE_OK && q->done) return;
                    q->owner->finish(q, failed_check(Outcome::fail_reset, q->elapsed()));
                    return;
                  }
                  q->owner->on_bytes(q, b->base, static_cast<size_t>(n));
                });
  if (!probe->tls) {
    send(probe, probe->request);
    return;
  }
  on_bytes(probe, nullptr, 0);  // the ClientHello
}

void ActiveChecker::on_bytes(Probe* probe, const char* data, size_t len) {
  if (!probe->tls) {
    on_plaintext(probe, data, len);
    return;
  }
  ProbeTls& tls = *probe->tls;
  if (len > 0) tls.feed(data, len);
  if (!probe->tls_ready) {
    ProbeTls::Status status = tls.handshake();
    send(probe, tls.take_output());
    if (probe->done) return;
    if (status == ProbeTls::Status::want_io) return;
    if (status != ProbeTls::Status::ok) {
      // Wrong CA, wrong name, expired, no client certificate: the server is not usable.
      // The session's owner logs why (health/ does no logging of its own).
      finish(probe, failed_check(Outcome::fail_connect, probe->elapsed()));
      return;
    }
    probe->tls_ready = true;
    if (tls.write(probe->request) != ProbeTls::Status::ok) {
      finish(probe, failed_check(Outcome::fail_reset, probe->elapsed()));
      return;
    }
    send(probe, tls.take_output());
    if (probe->done) return;
  }
  std::string plain;
  ProbeTls::Status status = tls.read(plain);
  if (!plain.empty()) on_plaintext(probe, plain.data(), plain.size());
  if (probe->done) return;
  send(probe, tls.take_output());
  if (probe->done) return;
  if (status == ProbeTls::Status::closed) {
    if (llhttp_finish(&probe->parser) == HPE_OK && probe->done) return;
    finish(probe, failed_check(Outcome::fail_reset, probe->elapsed()));
  } else if (status == ProbeTls::Status::error) {
    finish(probe, failed_check(Outcome::fail_reset, probe->elapsed()));
  }
}

void ActiveChecker::on_plaintext(Probe* probe, const char* data, size_t len) {
  llhttp_errno_t err = llhttp_execute(&probe->parser, data, len);
  if (err != HPE_OK && err != HPE_PAUSED && !probe->done)
    finish(probe, failed_check(Outcome::fail_reset, probe->elapsed()));
}

void ActiveChecker::send(Probe* probe, std::string bytes) {
  if (bytes.empty() || probe->done) return;
  auto* w = new ProbeWrite;
  w->probe = probe;
  w->bytes = std::move(bytes);
  w->req.data = w;
  uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&probe->tcp), &buf, 1, [](uv_write_t* req, int st) noexcept {
    std::unique_ptr<ProbeWrite> done(static_cast<ProbeWrite*>(req->data));
    Probe* q = done->probe;
    if (st != 0 && !q->done) q->owner->finish(q, failed_check(Outcome::fail_reset, q->elapsed()));
  });
  if (rc != 0) {
    delete w;
    finish(probe, failed_check(Outcome::fail_reset, probe->elapsed()));
  }
}

void ActiveChecker::finish(Probe* probe, const CheckResult& result) {
  if (probe->done) return;
  probe->done = true;
  if (!stopping_ && tracker_.on_check_result(probe->id, result, clock_.now()) && on_change_) on_change_();
  auto close_cb = [](uv_handle_t* h) noexcept {
    Probe* p = static_cast<Probe*>(h->data);
    if (--p->open_handles == 0) p->owner->probe_closed(p);
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&probe->tcp), close_cb);
  uv_close(reinterpret_cast<uv_handle_t*>(&probe->deadline), close_cb);
  schedule();
}

void ActiveChecker::probe_closed(Probe* probe) {
  probes_.erase(std::find(probes_.begin(), probes_.end(), probe));
  delete probe;
  maybe_done();
}

void ActiveChecker::stop(std::function<void()> done) {
  stopping_ = true;
  done_ = std::move(done);
  auto probes = probes_;
  for (Probe* p : probes) finish(p, failed_check(Outcome::fail_reset, std::chrono::milliseconds(0)));
  if (timer_open_) {
    timer_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) noexcept {
      auto* self = static_cast<ActiveChecker*>(h->data);
      self->timer_.data = nullptr;
      self->maybe_done();
    });
  } else {
    maybe_done();
  }
}

void ActiveChecker::maybe_done() {
  if (!stopping_ || !probes_.empty() || timer_.data != nullptr) return;
  if (auto done = std::move(done_)) {
    done_ = nullptr;
    done();
  }
}

}  // namespace sprayer::health
