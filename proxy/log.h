// Process-wide leveled logging to stderr: one write(2) per line, so lines from
// worker threads never interleave.
#pragma once

#include <atomic>
#include <cstdarg>

#include "conf/config.h"

namespace sprayer::log {

void set_level(conf::LogLevel level);
bool enabled(conf::LogLevel level);
void write(conf::LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace sprayer::log

#define SPRAYER_LOG(level, ...)                                     \
  do {                                                              \
    if (::sprayer::log::enabled(level)) ::sprayer::log::write(level, __VA_ARGS__); \
  } while (0)
#define LOG_DEBUG(...) SPRAYER_LOG(::sprayer::conf::LogLevel::debug, __VA_ARGS__)
#define LOG_INFO(...) SPRAYER_LOG(::sprayer::conf::LogLevel::info, __VA_ARGS__)
#define LOG_WARN(...) SPRAYER_LOG(::sprayer::conf::LogLevel::warn, __VA_ARGS__)
#define LOG_ERROR(...) SPRAYER_LOG(::sprayer::conf::LogLevel::error, __VA_ARGS__)
