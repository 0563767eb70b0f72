// The directory (LDAP) client: a thread of its own asks the directory for the names workers
// have not seen yet and writes the answers into the shared DirectoryCache; workers never
// wait on it, they park a request for at most `directory.wait` and are woken by `on_answer`.
//
// Why a thread and not the control loop: libldap's connect, TLS handshake and bind are
// blocking calls (only searches have an asynchronous form), and a directory that hangs in
// a bind must not stall health checks, reloads and the admin API. On the thread, searches
// run asynchronously (ldap_search_ext, then ldap_result with a zero timeout whenever poll()
// says the LDAP socket is readable), so one slow answer holds back no other name.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>

#include "affinity/directory.h"
#include "conf/config.h"

namespace sprayer::proxy {

struct DirectoryStats {
  std::atomic<uint64_t> searches{0};        // sent to the directory
  std::atomic<uint64_t> found{0};           // answered with one entry
  std::atomic<uint64_t> not_found{0};       // no entry (or several: ambiguous, not used)
  std::atomic<uint64_t> errors{0};          // a search failed or the connection broke
  std::atomic<uint64_t> timeouts{0};        // no answer within directory.timeout (abandoned)
  std::atomic<uint64_t> connects_failed{0};
  std::atomic<uint64_t> dropped{0};         // names not asked: the queue was full
  std::atomic<bool> up{false};              // connected and bound
};

class DirectoryClient {
 public:
  // `password` is the bind password (read from directory.password_file by the caller).
  DirectoryClient(const conf::DirectoryConfig& config, std::string password);
  ~DirectoryClient();
  DirectoryClient(const DirectoryClient&) = delete;
  DirectoryClient& operator=(const DirectoryClient&) = delete;

  // Called on the directory thread after answers were cached or the directory went down.
  void set_on_answer(std::function<void()> on_answer) { on_answer_ = std::move(on_answer); }
  void start();
  void stop();

  // Any thread: ask for `name` (a directory_name) unless it is already asked for. Cheap.
  void request(const std::string& name);
  bool up() const { return stats_.up.load(std::memory_order_relaxed); }
  affinity::DirectoryCache& cache() { return *cache_; }
  const DirectoryStats& stats() const { return stats_; }
  const conf::DirectoryConfig& config() const { return config_; }

  // The bind password from the first line of `path`; false with a reason naming the file.
  static bool read_password(const std::string& path, std::string& out, std::string& error);

 private:
  struct Session;

  void run();
  void wake();

  conf::DirectoryConfig config_;
  std::string password_;
  std::shared_ptr<affinity::DirectoryCache> cache_;
  std::function<void()> on_answer_;
  DirectoryStats stats_;
  int wake_fd_ = -1;  // eventfd: new names or stop
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;  // guards queue_ and asked_
  std::deque<std::string> queue_;
  std::unordered_set<std::string> asked_;  // queued or in flight
};

}  // namespace sprayer::proxy
