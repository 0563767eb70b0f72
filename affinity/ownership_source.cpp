// The source factory, backoff with jitter, and database timestamp parsing.
#include "affinity/ownership_source.h"

#include <algorithm>
#include <charconv>

#include "affinity/ownership_mariadb.h"
#include "affinity/ownership_odbc.h"
#include "affinity/ownership_pg.h"
#include "affinity/ownership_sqlite.h"

namespace sprayer::affinity {

std::string_view to_string(SourceState state) noexcept {
  switch (state) {
    case SourceState::connecting: return "connecting";
    case SourceState::ok: return "ok";
    case SourceState::degraded: return "degraded";
    case SourceState::from_cache: return "from_cache";
    case SourceState::none: return "none";
  }
  return "unknown";
}


std::unique_ptr<OwnershipSource> make_ownership_source(uv_loop_t* loop, OwnershipSourceConfig config,
                                                       OwnershipCallbacks callbacks, SourceEnvironment env) {
  switch (config.kind) {
    case SourceKind::postgresql:
      return std::make_unique<PgOwnershipSource>(loop, std::move(config), std::move(callbacks), std::move(env));
    case SourceKind::mariadb: return make_mariadb_source(loop, std::move(config), std::move(callbacks), std::move(env));
    case SourceKind::odbc: return make_odbc_source(loop, std::move(config), std::move(callbacks), std::move(env));
    case SourceKind::sqlite: break;
  }
  return std::make_unique<SqliteOwnershipSource>(loop, std::move(config), std::move(callbacks), std::move(env));
}

bool heartbeat_stale(const PoolServerRow& row, std::chrono::system_clock::time_point now,
                     SourceDuration max_age) noexcept {
  if (max_age.count() <= 0) return false;
  return !row.heartbeat_at || now - *row.heartbeat_at > max_age;
}

SourceDuration Backoff::next(std::uint64_t random_bits) {
  const auto min = std::max<std::int64_t>(1, min_.count());
  const auto max = std::max<std::int64_t>(min, max_.count());
  std::int64_t ceiling = min;
  for (unsigned i = 0; i < attempts_ && ceiling < max; ++i) ceiling *= 2;
  ceiling = std::min(ceiling, max);
  if (attempts_ < 64) ++attempts_;
  const double u = static_cast<double>(random_bits >> 11) * 0x1.0p-53;  // [0, 1)
  const auto delay = static_cast<std::int64_t>(static_cast<double>(ceiling) * (0.5 + 0.5 * u));
  return SourceDuration(std::max<std::int64_t>(1, delay));
}

namespace {

bool take_int(std::string_view& s, std::size_t digits, int& out) {
  if (s.size() < digits) return false;
  int v = 0;
  for (std::size_t i = 0; i < digits; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  s.remove_prefix(digits);
  return true;
}

bool take_char(std::string_view& s, char c) {
  if (s.empty() || s.front() != c) return false;
  s.remove_prefix(1);
  return true;
}

}  // namespace

std::optional<std::chrono::system_clock::time_point> parse_db_timestamp(std::string_view s) noexcept {
  using namespace std::chrono;
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  if (s.empty()) return std::nullopt;

  // Unix seconds (SQLite's "unixepoch" style).
  if (s.find_first_not_of("0123456789.") == std::string_view::npos) {
    double seconds = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), seconds);
    if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    return system_clock::time_point(duration_cast<system_clock::duration>(duration<double>(seconds)));
  }

  int y, mo, d, h = 0, mi = 0, sec = 0;
  if (!take_int(s, 4, y) || !take_char(s, '-') || !take_int(s, 2, mo) || !take_char(s, '-') || !take_int(s, 2, d)) {
    return std::nullopt;
  }
  const year_month_day date{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!date.ok()) return std::nullopt;
  system_clock::duration frac{};
  minutes offset{0};
  if (!s.empty()) {
    if (!take_char(s, ' ') && !take_char(s, 'T')) return std::nullopt;
    if (!take_int(s, 2, h) || !take_char(s, ':') || !take_int(s, 2, mi)) return std::nullopt;
    if (take_char(s, ':') && !take_int(s, 2, sec)) return std::nullopt;
    if (h > 23 || mi > 59 || sec > 60) return std::nullopt;
    if (take_char(s, '.')) {
      std::int64_t nanos = 0;
      int digits = 0;
      while (!s.empty() && s.front() >= '0' && s.front() <= '9') {
        if (digits < 9) nanos = nanos * 10 + (s.front() - '0'), ++digits;
        s.remove_prefix(1);
      }
      if (digits == 0) return std::nullopt;
      for (; digits < 9; ++digits) nanos *= 10;
      frac = duration_cast<system_clock::duration>(nanoseconds(nanos));
    }
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    if (take_char(s, 'Z')) {
    } else if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
      const int sign = s.front() == '-' ? -1 : 1;
      s.remove_prefix(1);
      int oh = 0, om = 0;
      if (!take_int(s, 2, oh)) return std::nullopt;
      take_char(s, ':');
      if (!s.empty() && !take_int(s, 2, om)) return std::nullopt;
      offset = minutes(sign * (oh * 60 + om));
    }
    if (!s.empty()) return std::nullopt;
  }
  const auto local = sys_days(date).time_since_epoch() + hours(h) + minutes(mi) + seconds(sec);
  return system_clock::time_point(duration_cast<system_clock::duration>(local - offset)) + frac;
}

}  // namespace sprayer::affinity
