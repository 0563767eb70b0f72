// The access log: one line per request, formatted on the worker that served it into a
// per-worker buffer, handed over in batches to one writer thread, so that a slow disk never
// stalls a worker loop. The writer reopens the file on request (SIGUSR1, for logrotate).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <span>
#include <thread>
#include <vector>

#include "conf/config.h"

namespace sprayer::proxy {

// What one line says. Durations in nanoseconds; a negative duration is "not measured"
// (a reused upstream connection has no connect time, a request no server answered no TTFB).
// Never carries the Authorization header or any password: the user is the normalised key.
struct AccessRecord {
  std::chrono::system_clock::time_point time;  // when the request head arrived
  std::string_view client_ip;
  std::string_view method;
  std::string_view target;
  int http_minor = 1;
  std::string_view user;     // normalised user key, empty = none
  std::string_view server;   // pool server id, empty = none
  std::string_view reason;   // route reason (owner, takeover, new_user, no_user, unavailable, retry)
  int status = 0;            // 0 = no response (the client went away first)
  uint64_t bytes_in = 0;     // request head and body as received
  uint64_t bytes_out = 0;    // bytes written to the client for this request
  int64_t total_ns = 0;
  int64_t connect_ns = -1;
  int64_t ttfb_ns = -1;
  std::string_view referer;
  std::string_view user_agent;
  // Why sprayer refused the request itself, a short snake_case code (bad_transfer_encoding,
  // missing_host, ...); empty for a request that was not refused (then not written).
  std::string_view rejected;
};

// Appends one line (with its newline) in the given format. Pure: unit-tested directly.
// The values of the query parameters named in `mask` (target and referer) are written as ***.
// JSON lines are valid JSON whatever the client sent: a byte that is not part of valid
// UTF-8 is written as \u00XX (its value as a code point), valid UTF-8 as is.
void format_access_line(conf::AccessLogFormat format, const AccessRecord& record, std::string& out,
                        std::span<const std::string> mask = {});

// `target` with the values of the query parameters named in `mask` (case-insensitive,
// percent-encoded names decoded) replaced by ***; the result is `target` itself or `scratch`.
std::string_view mask_query(std::string_view target, std::span<const std::string> mask, std::string& scratch);

class AccessLog {
 public:
  // Opens the file (or takes stderr) and starts the writer thread; null and `error` set
  // if the file cannot be opened.
  static std::shared_ptr<AccessLog> open(const conf::AccessLogConfig& config, std::string& error);
  ~AccessLog();  // writes what is queued, then stops the writer
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  conf::AccessLogFormat format() const { return config_.format; }
  const std::vector<std::string>& mask_query() const { return config_.mask_query; }
  // Any thread: queue a batch of whole lines. False if the queue is over its limit and the
  // batch was dropped (the caller counts the lines).
  bool submit(std::string&& batch);
  // Any thread: the writer reopens the file (by name) before its next write.
  void reopen();
  // Blocks until everything submitted so far is written (tests, shutdown).
  void flush();
  uint64_t write_errors() const { return write_errors_.load(std::memory_order_relaxed); }
  uint64_t reopens() const { return reopens_.load(std::memory_order_relaxed); }

 private:
  explicit AccessLog(const conf::AccessLogConfig& config) : config_(config) {}
  void run();
  bool open_file(std::string& error);
  void write_all(const std::string& data);

  conf::AccessLogConfig config_;
  int fd_ = -1;
  bool own_fd_ = false;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable written_;
  std::deque<std::string> queue_;
  uint64_t queued_bytes_ = 0;
  uint64_t submitted_ = 0;  // batches accepted
  uint64_t done_ = 0;       // batches written
  bool reopen_ = false;
  bool stop_ = false;
  std::atomic<uint64_t> write_errors_{0};
  std::atomic<uint64_t> reopens_{0};
};

// One per worker, used on its loop only: lines collect here and go to the writer when the
// buffer passes a size or at the worker's next tick.
class AccessLogBuffer {
 public:
  static constexpr size_t kFlushBytes = 64 * 1024;

  explicit AccessLogBuffer(std::shared_ptr<AccessLog> log) : log_(std::move(log)) {}
  bool enabled() const { return log_ != nullptr; }
  // Returns the number of lines dropped (0 unless the writer fell behind).
  uint64_t add(const AccessRecord& record);
  uint64_t flush();

 private:
  std::shared_ptr<AccessLog> log_;
  std::string buffer_;
  uint64_t lines_ = 0;
};

}  // namespace sprayer::proxy
