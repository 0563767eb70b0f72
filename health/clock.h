// Injected time and randomness for the health checker: the control loop passes the real
// ones, tests pass a ManualClock and a seeded SplitMix64 so every run is the same.
#pragma once

#include <chrono>
#include <cstdint>

namespace sprayer::health {

using TimePoint = std::chrono::steady_clock::time_point;
using Duration = std::chrono::steady_clock::duration;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class SteadyClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
};

// Time moves only when the test says so.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start = TimePoint{}) : now_(start) {}
  TimePoint now() const override { return now_; }
  void advance(Duration d) { now_ += d; }
  void set(TimePoint t) { now_ = t; }

 private:
  TimePoint now_;
};

class Random {
 public:
  virtual ~Random() = default;
  virtual std::uint64_t next() = 0;
};

// splitmix64 (Steele, Lea, Flood 2014): tiny, full 2^64 period, good enough to spread
// check start times; production seeds it from std::random_device once at start.
class SplitMix64 final : public Random {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() override {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t state_;
};

// Uniform in [0, 1): the top 53 bits, so every value is exactly representable.
inline double unit_interval(Random& random) {
  return static_cast<double>(random.next() >> 11) * 0x1.0p-53;
}

}  // namespace sprayer::health
