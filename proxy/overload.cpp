// The overload state machine, the default budget from cgroup and /proc/meminfo, and the
// 503 a refused request gets.
#include "proxy/overload.h"

#include <charconv>
#include <fstream>
#include <sstream>

namespace sprayer::proxy {
namespace {

// A limit file's number; 0 when it says "max", is empty or is not a number.
uint64_t limit_value(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return 0;
  // cgroup v1 says "no limit" with a page-rounded LONG_MAX.
  if (value >= (uint64_t{1} << 62)) return 0;
  return value;
}

uint64_t mem_total(std::string_view meminfo) {
  constexpr std::string_view kKey = "MemTotal:";
  size_t at = meminfo.find(kKey);
  if (at == std::string_view::npos) return 0;
  std::string_view rest = meminfo.substr(at + kKey.size());
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  uint64_t kib = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), kib);
  if (ec != std::errc()) return 0;
  return kib * 1024;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {};
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::string_view to_string(OverloadState state) {
  switch (state) {
    case OverloadState::normal: return "normal";
    case OverloadState::refusing: return "refusing";
    case OverloadState::shedding: return "shedding";
  }
  return "normal";
}

OverloadMarks OverloadMarks::of(uint64_t budget) {
  OverloadMarks m;
  m.budget = budget;
  m.resume = budget / 100 * kResumePercent + budget % 100 * kResumePercent / 100;
  m.refuse = budget / 100 * kRefusePercent + budget % 100 * kRefusePercent / 100;
  m.shed = budget / 100 * kShedPercent + budget % 100 * kShedPercent / 100;
  return m;
}

OverloadState next_overload_state(OverloadState current, uint64_t used, const OverloadMarks& marks,
                                  uint64_t in_state_ms) {
  if (marks.budget == 0) return OverloadState::normal;
  if (used >= marks.shed) return OverloadState::shedding;
  // Shedding goes on down to the resume mark: a client shed makes room for a new one, not
  // for the next hostile one already inside.
  if (current == OverloadState::shedding) return used >= marks.resume ? OverloadState::shedding : OverloadState::normal;
  bool held = current == OverloadState::refusing && used >= marks.resume;
  if (held && in_state_ms >= OverloadMarks::kShedAfterMs) return OverloadState::shedding;
  if (held || used >= marks.refuse) return OverloadState::refusing;
  return OverloadState::normal;
}

uint64_t default_memory_budget(std::string_view cgroup_v2_max, std::string_view cgroup_v1_limit,
                               std::string_view meminfo) {
  uint64_t limit = mem_total(meminfo);
  for (uint64_t cgroup : {limit_value(cgroup_v2_max), limit_value(cgroup_v1_limit)})
    if (cgroup > 0 && (limit == 0 || cgroup < limit)) limit = cgroup;
  return limit / 2;
}

uint64_t default_memory_budget_here() {
  // "0::/system.slice/sprayer.service" in /proc/self/cgroup names the v2 cgroup; inside a
  // container's namespace it is "0::/" and the file sits at the root.
  std::string v2 = read_text("/sys/fs/cgroup/memory.max");
  std::string self = read_text("/proc/self/cgroup");
  size_t at = self.find("0::/");
  if (at != std::string::npos) {
    size_t end = self.find('\n', at);
    std::string path = self.substr(at + 3, end == std::string::npos ? std::string::npos : end - at - 3);
    if (path != "/") {
      std::string own = read_text("/sys/fs/cgroup" + path + "/memory.max");
      if (!own.empty()) v2 = own;
    }
  }
  std::string v1 = read_text("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  return default_memory_budget(v2, v1, read_text("/proc/meminfo"));
}

void build_overload_response(std::string& out) {
  static constexpr std::string_view kBody = "Service Unavailable: overloaded, retry later.\n";
  out.append("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: ");
  out.append(std::to_string(kBody.size()));
  out.append("\r\nRetry-After: ");
  out.append(std::to_string(kOverloadRetryAfterSeconds));
  out.append("\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n");
  out.append(kBody);
}

void Overload::set_budget(uint64_t bytes) { budget_.store(bytes, std::memory_order_relaxed); }

bool Overload::try_charge(size_t bytes) {
  uint64_t limit = budget();
  uint64_t before = used_.fetch_add(bytes, std::memory_order_relaxed);
  if (limit == 0 || before + bytes <= limit) return true;
  used_.fetch_sub(bytes, std::memory_order_relaxed);
  allocation_failures_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

bool Overload::pressed() const {
  uint64_t limit = budget();
  return limit != 0 && used() >= limit / 100 * kKeepIdlePercent + limit % 100 * kKeepIdlePercent / 100;
}

uint64_t Overload::excess() const {
  OverloadMarks marks = OverloadMarks::of(budget());
  uint64_t now = used();
  return marks.budget != 0 && now >= marks.resume ? now - marks.resume + 1 : 0;
}

std::optional<Overload::Transition> Overload::update(uint64_t now_ms) {
  OverloadMarks marks = OverloadMarks::of(budget());
  OverloadState current = state();
  for (;;) {
    uint64_t since = since_ms_.load(std::memory_order_relaxed);
    OverloadState next = next_overload_state(current, used(), marks, now_ms > since ? now_ms - since : 0);
    if (next == current) return std::nullopt;
    if (state_.compare_exchange_weak(current, next, std::memory_order_relaxed)) {
      since_ms_.store(now_ms, std::memory_order_relaxed);
      return Transition{current, next};
    }
  }
}

}  // namespace sprayer::proxy
