// Access log lines (JSON lines or Apache "combined" plus sprayer's fields) and the writer
// thread that owns the file descriptor.
#include "proxy/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>

#include "proxy/json.h"

namespace sprayer::proxy {
namespace {

// Client-supplied text in a combined line: quotes, backslashes and control bytes escaped
// as \xHH (as nginx does), so a crafted User-Agent cannot forge a line or a field.
void combined_string(std::string& out, std::string_view s) {
  if (s.empty()) {
    out.push_back('-');
    return;
  }
  static constexpr char kHex[] = "0123456789ABCDEF";
  size_t run = 0;  // pending bytes that need no escape, appended at once
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    const char escaped[4] = {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
    out.append(escaped, 4);
  }
  out.append(s.data() + run, s.size() - run);
}

// Number formatting without printf: a line is formatted per request on a worker loop.
void append_uint(std::string& out, uint64_t v) {
  char buf[24];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, res.ptr);
}

void append_padded(std::string& out, unsigned v, int width) {
  char buf[12];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 || n < width);
  while (n > 0) out.push_back(buf[--n]);
}

// Milliseconds with three decimals, rounded to the microsecond.
void append_ms(std::string& out, int64_t ns) {
  uint64_t us = (static_cast<uint64_t>(ns < 0 ? 0 : ns) + 500) / 1000;
  append_uint(out, us / 1000);
  out.push_back('.');
  append_padded(out, static_cast<unsigned>(us % 1000), 3);
}

void append_iso_time(std::string& out, std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  append_padded(out, static_cast<unsigned>(tm.tm_year + 1900), 4);
  out.push_back('-');
  append_padded(out, static_cast<unsigned>(tm.tm_mon + 1), 2);
  out.push_back('-');
  append_padded(out, static_cast<unsigned>(tm.tm_mday), 2);
  out.push_back('T');
  append_padded(out, static_cast<unsigned>(tm.tm_hour), 2);
  out.push_back(':');
  append_padded(out, static_cast<unsigned>(tm.tm_min), 2);
  out.push_back(':');
  append_padded(out, static_cast<unsigned>(tm.tm_sec), 2);
  out.push_back('.');
  append_padded(out, static_cast<unsigned>(ms % 1000), 3);
  out.push_back('Z');
}

void append_clf_time(std::string& out, std::chrono::system_clock::time_point t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  static const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  out.push_back('[');
  append_padded(out, static_cast<unsigned>(tm.tm_mday), 2);
  out.push_back('/');
  out.append(months[tm.tm_mon]);
  out.push_back('/');
  append_padded(out, static_cast<unsigned>(tm.tm_year + 1900), 4);
  out.push_back(':');
  append_padded(out, static_cast<unsigned>(tm.tm_hour), 2);
  out.push_back(':');
  append_padded(out, static_cast<unsigned>(tm.tm_min), 2);
  out.push_back(':');
  append_padded(out, static_cast<unsigned>(tm.tm_sec), 2);
  out.append(" +0000]");
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A query parameter name as a client may spell it: percent-encoded, '+' for space, any case.
bool name_matches(std::string_view raw, std::string_view name) {
  size_t j = 0;
  for (size_t i = 0; i < raw.size(); ++i, ++j) {
    char c = raw[i];
    if (c == '%' && i + 2 < raw.size() && hex_value(raw[i + 1]) >= 0 && hex_value(raw[i + 2]) >= 0) {
      c = static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]));
      i += 2;
    } else if (c == '+') {
      c = ' ';
    }
    if (j >= name.size()) return false;
    const auto lower = [](char x) { return x >= 'A' && x <= 'Z' ? static_cast<char>(x + 32) : x; };
    if (lower(c) != lower(name[j])) return false;
  }
  return j == name.size();
}

}  // namespace

std::string_view mask_query(std::string_view target, std::span<const std::string> mask, std::string& scratch) {
  const size_t q = target.find('?');
  if (mask.empty() || q == std::string_view::npos) return target;
  const size_t end = std::min(target.find('#', q), target.size());
  bool masked = false;
  size_t copied = 0;  // target[0, copied) is in scratch when masked
  size_t start = q + 1;
  while (start <= end) {
    size_t stop = target.find_first_of("&;", start);
    if (stop == std::string_view::npos || stop > end) stop = end;
    std::string_view param = target.substr(start, stop - start);
    size_t eq = param.find('=');
    if (eq != std::string_view::npos && eq + 1 < param.size()) {
      std::string_view name = param.substr(0, eq);
      for (const auto& m : mask) {
        if (!name_matches(name, m)) continue;
        if (!masked) scratch.clear();
        masked = true;
        const size_t value_at = start + eq + 1;
        scratch.append(target.data() + copied, value_at - copied);
        scratch += "***";
        copied = stop;
        break;
      }
    }
    start = stop + 1;
  }
  if (!masked) return target;
  scratch.append(target.data() + copied, target.size() - copied);
  return scratch;
}

void format_access_line(conf::AccessLogFormat format, const AccessRecord& record, std::string& out,
                        std::span<const std::string> mask) {
  AccessRecord r = record;
  std::string target_scratch, referer_scratch;
  r.target = mask_query(record.target, mask, target_scratch);
  r.referer = mask_query(record.referer, mask, referer_scratch);
  if (format == conf::AccessLogFormat::json) {
    out += "{\"time\":\"";
    append_iso_time(out, r.time);
    out += "\",\"client\":";
    json_string(out, r.client_ip);
    out += ",\"user\":";
    if (r.user.empty())
      out += "null";
    else
      json_string(out, r.user);
    out += ",\"method\":";
    json_string(out, r.method);
    out += ",\"target\":";
    json_string(out, r.target);
    out += ",\"protocol\":\"HTTP/1.";
    out += r.http_minor == 0 ? '0' : '1';
    out += "\",\"status\":";
    append_uint(out, static_cast<uint64_t>(r.status < 0 ? 0 : r.status));
    out += ",\"server\":";
    if (r.server.empty())
      out += "null";
    else
      json_string(out, r.server);
    out += ",\"reason\":";
    json_string(out, r.reason);
    out += ",\"bytes_in\":";
    append_uint(out, r.bytes_in);
    out += ",\"bytes_out\":";
    append_uint(out, r.bytes_out);
    out += ",\"duration_ms\":";
    append_ms(out, r.total_ns);
    out += ",\"connect_ms\":";
    if (r.connect_ns < 0)
      out += "null";
    else
      append_ms(out, r.connect_ns);
    out += ",\"ttfb_ms\":";
    if (r.ttfb_ns < 0)
      out += "null";
    else
      append_ms(out, r.ttfb_ns);
    out += ",\"referer\":";
    json_string(out, r.referer);
    out += ",\"user_agent\":";
    json_string(out, r.user_agent);
    if (!r.rejected.empty()) {
      out += ",\"rejected\":";
      json_string(out, r.rejected);
    }
    out += "}\n";
    return;
  }
  // combined: host ident user [time] "request" status bytes "referer" "agent", then
  // sprayer's own fields as key=value so standard parsers still read the first part.
  combined_string(out, r.client_ip);
  out += " - ";
  combined_string(out, r.user);
  out.push_back(' ');
  append_clf_time(out, r.time);
  out += " \"";
  combined_string(out, r.method);
  out.push_back(' ');
  combined_string(out, r.target);
  out += r.http_minor == 0 ? " HTTP/1.0\" " : " HTTP/1.1\" ";
  append_uint(out, static_cast<uint64_t>(r.status < 0 ? 0 : r.status));
  out.push_back(' ');
  if (r.bytes_out)
    append_uint(out, r.bytes_out);
  else
    out.push_back('-');
  out += " \"";
  combined_string(out, r.referer);
  out += "\" \"";
  combined_string(out, r.user_agent);
  out += "\" server=";
  combined_string(out, r.server);
  out += " reason=";
  combined_string(out, r.reason);
  out += " in=";
  append_uint(out, r.bytes_in);
  out += " total_ms=";
  append_ms(out, r.total_ns);
  out += " connect_ms=";
  if (r.connect_ns < 0)
    out.push_back('-');
  else
    append_ms(out, r.connect_ns);
  out += " ttfb_ms=";
  if (r.ttfb_ns < 0)
    out.push_back('-');
  else
    append_ms(out, r.ttfb_ns);
  if (!r.rejected.empty()) {
    out += " rejected=";
    combined_string(out, r.rejected);
  }
  out.push_back('\n');
}

// ---- writer ----------------------------------------------------------------------------

std::shared_ptr<AccessLog> AccessLog::open(const conf::AccessLogConfig& config, std::string& error) {
  std::shared_ptr<AccessLog> log(new AccessLog(config));
  if (!log->open_file(error)) return nullptr;
  log->thread_ = std::thread([raw = log.get()] { raw->run(); });
  return log;
}

AccessLog::~AccessLog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (own_fd_ && fd_ >= 0) ::close(fd_);
}

bool AccessLog::open_file(std::string& error) {
  if (config_.path == "stderr") {
    fd_ = STDERR_FILENO;
    own_fd_ = false;
    return true;
  }
  int fd = ::open(config_.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    error = "access_log.path: cannot open " + config_.path + ": " + std::strerror(errno);
    return false;
  }
  if (own_fd_ && fd_ >= 0) ::close(fd_);
  fd_ = fd;
  own_fd_ = true;
  return true;
}

bool AccessLog::submit(std::string&& batch) {
  if (batch.empty()) return true;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queued_bytes_ + batch.size() > config_.max_queued_bytes) return false;
    queued_bytes_ += batch.size();
    queue_.push_back(std::move(batch));
    ++submitted_;
  }
  wake_.notify_one();
  return true;
}

void AccessLog::reopen() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    reopen_ = true;
  }
  wake_.notify_one();
}

void AccessLog::flush() {
  std::unique_lock<std::mutex> lock(mutex_);
  uint64_t target = submitted_;
  written_.wait(lock, [&] { return done_ >= target || stop_; });
}

void AccessLog::write_all(const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd_, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      write_errors_.fetch_add(1, std::memory_order_relaxed);
      return;  // disk full or gone: the batch is lost, the proxy goes on
    }
    off += static_cast<size_t>(n);
  }
}

void AccessLog::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || reopen_ || !queue_.empty(); });
    if (reopen_) {
      reopen_ = false;
      lock.unlock();
      std::string error;
      if (config_.path != "stderr" && !open_file(error)) write_errors_.fetch_add(1, std::memory_order_relaxed);
      reopens_.fetch_add(1, std::memory_order_relaxed);
      lock.lock();
    }
    while (!queue_.empty()) {
      std::string batch = std::move(queue_.front());
      queue_.pop_front();
      queued_bytes_ -= batch.size();
      lock.unlock();
      write_all(batch);
      lock.lock();
      ++done_;
    }
    written_.notify_all();
    if (stop_ && queue_.empty()) return;
  }
}

// ---- per-worker buffer -----------------------------------------------------------------

uint64_t AccessLogBuffer::add(const AccessRecord& record) {
  if (!log_) return 0;
  format_access_line(log_->format(), record, buffer_, log_->mask_query());
  ++lines_;
  return buffer_.size() >= kFlushBytes ? flush() : 0;
}

uint64_t AccessLogBuffer::flush() {
  if (!log_ || buffer_.empty()) return 0;
  uint64_t lines = lines_;
  std::string batch;
  batch.swap(buffer_);
  lines_ = 0;
  buffer_.reserve(4096);
  return log_->submit(std::move(batch)) ? 0 : lines;
}

}  // namespace sprayer::proxy
