// The directory thread: connect and bind (blocking, bounded by directory.timeout), then
// asynchronous searches driven by poll() on the LDAP socket and an eventfd for new names.
// Down and slow are logged once each, when they start and when they end.
#include "proxy/directory_client.h"

#include <ldap.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "proxy/log.h"

namespace sprayer::proxy {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxQueued = 10000;   // names waiting to be asked
constexpr size_t kMaxInFlight = 256;   // searches sent and not answered

timeval to_timeval(conf::Duration d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

}  // namespace

struct DirectoryClient::Session {
  struct Pending {
    std::string name;
    Clock::time_point deadline;
    int entries = 0;
    std::string value;
  };
  LDAP* ld = nullptr;
  int fd = -1;
  std::unordered_map<int, Pending> pending;  // by message id

  void close() {
    if (ld) ldap_unbind_ext_s(ld, nullptr, nullptr);
    ld = nullptr;
    fd = -1;
    pending.clear();
  }
};

bool DirectoryClient::read_password(const std::string& path, std::string& out, std::string& error) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    error = "directory.password_file " + path + ": " + std::strerror(errno);
    return false;
  }
  char buffer[1024];
  size_t n = std::fread(buffer, 1, sizeof buffer, f);
  bool more = n == sizeof buffer && std::fgetc(f) != EOF;
  std::fclose(f);
  std::string_view text(buffer, n);
  text = text.substr(0, text.find('\n'));
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  if (more || text.empty()) {
    error = "directory.password_file " + path + (more ? ": longer than 1 KiB" : ": empty first line");
    OPENSSL_cleanse(buffer, sizeof buffer);
    return false;
  }
  out.assign(text);
  OPENSSL_cleanse(buffer, sizeof buffer);
  return true;
}

DirectoryClient::DirectoryClient(const conf::DirectoryConfig& config, std::string password)
    : config_(config),
      password_(std::move(password)),
      cache_(std::make_shared<affinity::DirectoryCache>(config.cache_size)) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

DirectoryClient::~DirectoryClient() {
  stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
  OPENSSL_cleanse(password_.data(), password_.size());
}

void DirectoryClient::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { run(); });
}

void DirectoryClient::stop() {
  stop_ = true;
  wake();
  if (thread_.joinable()) thread_.join();
}

void DirectoryClient::wake() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void DirectoryClient::request(const std::string& name) {
  {
    std::lock_guard lock(mutex_);
    if (asked_.contains(name)) return;
    if (queue_.size() >= kMaxQueued) {
      stats_.dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    asked_.insert(name);
    queue_.push_back(name);
  }
  wake();
}

void DirectoryClient::run() {
  Session s;
  conf::Duration backoff = config_.reconnect_min;
  Clock::time_point next_connect = Clock::now();
  enum class Logged { nothing, up, down } logged = Logged::nothing;
  bool slow = false;  // a search timed out and none has been answered since
  const timeval timeout = to_timeval(config_.timeout);
  std::vector<char*> attrs;
  std::string attribute = config_.attribute;
  if (attribute != "dn") attrs.push_back(attribute.data());
  else attrs.push_back(const_cast<char*>(LDAP_NO_ATTRS));
  attrs.push_back(nullptr);

  auto forget = [this](const std::string& name) {
    std::lock_guard lock(mutex_);
    asked_.erase(name);
  };
  auto go_down = [&](const std::string& why) {
    for (const auto& [id, p] : s.pending) forget(p.name);
    s.close();
    stats_.up.store(false, std::memory_order_relaxed);
    {
      // Names asked while down are not kept: their requests went by the normalised name,
      // and the next request for them asks again.
      std::lock_guard lock(mutex_);
      queue_.clear();
      asked_.clear();
    }
    if (logged != Logged::down)
      LOG_WARN("directory %s: %s; requests go by their normalised names until it answers", config_.uri.c_str(),
               why.c_str());
    logged = Logged::down;
    next_connect = Clock::now() + backoff;
    backoff = std::min(backoff * 2, config_.reconnect_max);
    if (on_answer_) on_answer_();  // parked requests stop waiting
  };

  while (!stop_) {
    Clock::time_point now = Clock::now();
    if (!s.ld && now >= next_connect) {
      LDAP* ld = nullptr;
      int rc = ldap_initialize(&ld, config_.uri.c_str());
      if (rc == LDAP_SUCCESS) {
        int v3 = LDAP_VERSION3;
        ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
        ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &timeout);
        ldap_set_option(ld, LDAP_OPT_TIMEOUT, &timeout);
        ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
        berval cred{static_cast<ber_len_t>(password_.size()), password_.data()};
        rc = ldap_sasl_bind_s(ld, config_.bind_dn.empty() ? nullptr : config_.bind_dn.c_str(), LDAP_SASL_SIMPLE,
                              &cred, nullptr, nullptr, nullptr);
      }
      if (rc == LDAP_SUCCESS) {
        s.ld = ld;
        ldap_get_option(ld, LDAP_OPT_DESC, &s.fd);
        stats_.up.store(true, std::memory_order_relaxed);
        backoff = config_.reconnect_min;
        LOG_INFO("directory %s: %s", config_.uri.c_str(),
                 logged == Logged::down ? "answering again; names are resolved again" : "connected");
        logged = Logged::up;
      } else {
        if (ld) ldap_unbind_ext_s(ld, nullptr, nullptr);
        stats_.connects_failed.fetch_add(1, std::memory_order_relaxed);
        go_down(std::string("cannot connect and bind: ") + ldap_err2string(rc));
        continue;
      }
    }

    // Send what was asked for, up to the in-flight bound.
    while (s.ld && s.pending.size() < kMaxInFlight) {
      std::string name;
      {
        std::lock_guard lock(mutex_);
        if (queue_.empty()) break;
        name = std::move(queue_.front());
        queue_.pop_front();
      }
      std::string filter = affinity::make_filter(config_.filter, name);
      int msgid = 0;
      timeval tv = timeout;
      int rc = ldap_search_ext(s.ld, config_.base_dn.c_str(), LDAP_SCOPE_SUBTREE, filter.c_str(), attrs.data(), 0,
                               nullptr, nullptr, &tv, 2, &msgid);
      if (rc != LDAP_SUCCESS) {
        forget(name);
        stats_.errors.fetch_add(1, std::memory_order_relaxed);
        if (rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR) go_down(std::string("lost: ") + ldap_err2string(rc));
        continue;
      }
      stats_.searches.fetch_add(1, std::memory_order_relaxed);
      s.pending.emplace(msgid, Session::Pending{std::move(name), Clock::now() + config_.timeout, 0, {}});
    }

    // Sleep until the socket or the eventfd is readable, a search is due to time out, or a
    // reconnect is due.
    now = Clock::now();
    Clock::time_point until = now + std::chrono::seconds(1);
    if (!s.ld) until = std::min(until, next_connect);
    for (const auto& [id, p] : s.pending) until = std::min(until, p.deadline);
    int wait_ms = static_cast<int>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count() + 1));
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {s.fd, POLLIN, 0}};
    int n = ::poll(fds, s.ld && s.fd >= 0 ? 2 : 1, wait_ms);
    if (n > 0 && (fds[0].revents & POLLIN)) {
      uint64_t count;
      [[maybe_unused]] ssize_t r = ::read(wake_fd_, &count, sizeof count);
    }
    bool answered = false;
    if (s.ld && n > 0 && fds[1].revents != 0) {
      while (s.ld) {
        LDAPMessage* msg = nullptr;
        timeval zero{0, 0};
        int rc = ldap_result(s.ld, LDAP_RES_ANY, LDAP_MSG_ONE, &zero, &msg);
        if (rc == 0) break;
        if (rc < 0) {
          stats_.errors.fetch_add(1, std::memory_order_relaxed);
          go_down("connection lost");
          break;
        }
        auto it = s.pending.find(ldap_msgid(msg));
        if (it != s.pending.end()) {
          Session::Pending& p = it->second;
          if (rc == LDAP_RES_SEARCH_ENTRY) {
            if (++p.entries == 1) {
              if (attribute == "dn") {
                if (char* dn = ldap_get_dn(s.ld, msg)) {
                  p.value = affinity::dn_to_notes_canonical(dn);
                  ldap_memfree(dn);
                }
              } else if (berval** values = ldap_get_values_len(s.ld, msg, attribute.c_str())) {
                if (values[0]) p.value.assign(values[0]->bv_val, values[0]->bv_len);
                ldap_value_free_len(values);
              }
            }
          } else if (rc == LDAP_RES_SEARCH_RESULT) {
            int err = LDAP_OTHER;
            ldap_parse_result(s.ld, msg, &err, nullptr, nullptr, nullptr, nullptr, 0);
            if (err == LDAP_SUCCESS || err == LDAP_SIZELIMIT_EXCEEDED || err == LDAP_NO_SUCH_OBJECT) {
              // Exactly one entry names the user; none or several (ambiguous) do not.
              bool found = p.entries == 1 && !p.value.empty();
              (found ? stats_.found : stats_.not_found).fetch_add(1, std::memory_order_relaxed);
              auto expires = Clock::now() + (found ? config_.ttl : config_.negative_ttl);
              cache_->put(p.name, affinity::DirectoryCache::Answer{found, found ? p.value : std::string()}, expires);
              answered = true;
            } else {
              stats_.errors.fetch_add(1, std::memory_order_relaxed);
            }
            forget(p.name);
            s.pending.erase(it);
          }
        }
        ldap_msgfree(msg);
      }
    }
    if (answered && slow) {
      LOG_INFO("directory %s: answering in time again", config_.uri.c_str());
      slow = false;
    }
    now = Clock::now();
    bool timed_out = false;
    for (auto it = s.pending.begin(); s.ld && it != s.pending.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      ldap_abandon_ext(s.ld, it->first, nullptr, nullptr);
      stats_.timeouts.fetch_add(1, std::memory_order_relaxed);
      forget(it->second.name);
      it = s.pending.erase(it);
      timed_out = true;
    }
    if (timed_out && !slow) {
      LOG_WARN("directory %s: no answer within %lld ms; requests go by their normalised names meanwhile",
               config_.uri.c_str(), static_cast<long long>(config_.timeout.count()));
      slow = true;
    }
    if (answered && on_answer_) on_answer_();
  }
  s.close();
}

}  // namespace sprayer::proxy
