// Leveled stderr logging; the level is the only shared state and is atomic.
#include "proxy/log.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>

namespace sprayer::log {
namespace {

std::atomic<int> current_level{static_cast<int>(conf::LogLevel::info)};

const char* level_name(conf::LogLevel level) {
  switch (level) {
    case conf::LogLevel::debug: return "debug";
    case conf::LogLevel::info: return "info";
    case conf::LogLevel::warn: return "warn";
    case conf::LogLevel::error: return "error";
  }
  return "?";
}

}  // namespace

void set_level(conf::LogLevel level) { current_level.store(static_cast<int>(level), std::memory_order_relaxed); }

bool enabled(conf::LogLevel level) {
  return static_cast<int>(level) >= current_level.load(std::memory_order_relaxed);
}

void write(conf::LogLevel level, const char* fmt, ...) {
  char line[2048];
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  tm parts{};
  gmtime_r(&now.tv_sec, &parts);
  int n = std::snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                        parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour,
                        parts.tm_min, parts.tm_sec, now.tv_nsec / 1000000, level_name(level));
  va_list args;
  va_start(args, fmt);
  int m = std::vsnprintf(line + n, sizeof line - n - 1, fmt, args);
  va_end(args);
  size_t len = static_cast<size_t>(n) + (m < 0 ? 0 : std::min<size_t>(m, sizeof line - n - 2));
  line[len++] = '\n';
  ssize_t ignored = ::write(STDERR_FILENO, line, len);
  (void)ignored;
}

}  // namespace sprayer::log
