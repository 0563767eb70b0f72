// Micro-benchmark of the directory cache on the data path: what a request pays for a hit, a
// miss and the name and normalisation around it, on one thread and on two threads at once
// (the worker count of this machine), in thread CPU time per operation. Run a -O2 build:
// `affinity/directory_bench [names]`.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "affinity/directory.h"
#include "affinity/user_key.h"

namespace {

using namespace sprayer::affinity;
using Clock = std::chrono::steady_clock;

// CPU time of this thread, not wall time: the machine is shared, and a preempted thread
// would otherwise charge other processes' time to the cache.
double thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

template <class F>
double ns_per_op(std::size_t ops, F&& f) {
  const double start = thread_cpu_ns();
  f();
  return (thread_cpu_ns() - start) / static_cast<double>(ops);
}

volatile std::size_t sink = 0;

}  // namespace

int main(int argc, char** argv) {
  const std::size_t names = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100000;
  const std::size_t rounds = 2'000'000;
  std::vector<std::string> sent, missing;
  for (std::size_t i = 0; i < names; ++i) {
    sent.push_back("person." + std::to_string(i) + "@acme.example");
    missing.push_back("ACME\\nobody" + std::to_string(i));
  }
  DirectoryCache cache(names * 2);
  const auto now = DirectoryClock::now();
  for (std::size_t i = 0; i < names; ++i) cache.put(sent[i], {true, "u" + std::to_string(i)}, now + std::chrono::hours(4));
  const UserNormaliser normalise{NormaliseConfig{}};

  const double hit = ns_per_op(rounds, [&] {
    for (std::size_t i = 0; i < rounds; ++i) sink = sink + cache.find(sent[(i * 7919) % names], now)->key.size();
  });
  const double miss = ns_per_op(rounds, [&] {
    for (std::size_t i = 0; i < rounds; ++i) sink = sink + cache.find(missing[(i * 7919) % names], now).has_value();
  });
  const double whole = ns_per_op(rounds, [&] {
    // What a request adds on a hit: the name, the lookup, normalising the answer.
    for (std::size_t i = 0; i < rounds; ++i) {
      std::string name = directory_name(sent[(i * 7919) % names]);
      auto answer = cache.find(name, now);
      sink = sink + normalise(answer->key).size();
    }
  });
  const double put = ns_per_op(names, [&] {
    for (std::size_t i = 0; i < names; ++i) cache.put(sent[i], {true, "u" + std::to_string(i)}, now + std::chrono::hours(4));
  });
  double two = 0;
  {
    std::vector<double> each(2);
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        each[t] = ns_per_op(rounds, [&] {
          for (std::size_t i = 0; i < rounds; ++i)
            sink = sink + cache.find(sent[(i * 7919 + t * 104729) % names], now)->key.size();
        });
      });
    }
    for (auto& th : threads) th.join();
    two = std::max(each[0], each[1]);
  }
  std::printf("directory cache, %zu names, %zu lookups each:\n", names, rounds);
  std::printf("  hit                         %7.1f ns\n", hit);
  std::printf("  miss                        %7.1f ns\n", miss);
  std::printf("  hit + name + normalise      %7.1f ns  (what a request adds on a hit)\n", whole);
  std::printf("  hit, 2 threads at once      %7.1f ns  (the busier thread)\n", two);
  std::printf("  put (directory thread)      %7.1f ns\n", put);
  return sink == 42 ? 1 : 0;
}
