// Parking and resuming requests around the directory cache (see directory_waiters.h).
#include "proxy/directory_waiters.h"

#include <algorithm>

#include "affinity/directory.h"
#include "proxy/directory_client.h"
#include "proxy/exchange.h"
#include "proxy/worker_context.h"

namespace sprayer::proxy {

void DirectoryWaiters::open(uv_loop_t* loop) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(&timer_));
  open_ = true;
}

bool DirectoryWaiters::cached_key(const std::string& name, std::string& key, bool& answered) {
  DirectoryClient* directory = ctx_.runtime().directory.get();
  auto answer = directory->cache().find(name, affinity::DirectoryClock::now());
  answered = answer.has_value();
  if (!answer || !answer->found) return false;
  std::string resolved = ctx_.extractor.normalise(answer->key);
  if (resolved.empty()) return false;
  key = std::move(resolved);
  return true;
}

bool DirectoryWaiters::resolve(Exchange& exchange, std::string_view raw_user, std::string& key) {
  DirectoryClient* directory = ctx_.runtime().directory.get();
  if (!directory) return false;
  std::string name = affinity::directory_name(raw_user);
  if (name.empty()) return false;
  WorkerStats& stats = ctx_.stats;
  bool answered = false;
  cached_key(name, key, answered);
  if (answered) {
    WorkerStats::add(stats.directory_hits);
    return false;
  }
  WorkerStats::add(stats.directory_misses);
  if (!directory->up()) {
    // Down: no wait at all, today's normalisation (the directory thread logged it once).
    WorkerStats::add(stats.directory_degraded);
    return false;
  }
  directory->request(name);
  const uint64_t wait = static_cast<uint64_t>(directory->config().wait.count());
  if (wait == 0 || !open_) return false;
  WorkerStats::add(stats.directory_waits);
  parked_.push_back(Parked{&exchange, std::move(name), uv_now(ctx_.loop) + wait});
  arm();
  return true;
}

void DirectoryWaiters::cancel(Exchange& exchange) {
  std::erase_if(parked_, [&](const Parked& p) { return p.exchange == &exchange; });
  arm();
}

void DirectoryWaiters::arm() {
  if (!open_) return;
  if (parked_.empty()) {
    uv_timer_stop(&timer_);
    return;
  }
  uint64_t first = parked_.front().deadline_ms;
  for (const Parked& p : parked_) first = std::min(first, p.deadline_ms);
  uint64_t now = uv_now(ctx_.loop);
  uv_timer_start(&timer_, [](uv_timer_t* t) noexcept { static_cast<DirectoryWaiters*>(t->data)->on_timer(); },
                 first > now ? first - now : 0, 0);
}

void DirectoryWaiters::on_answers() {
  DirectoryClient* directory = ctx_.runtime().directory.get();
  if (!directory || parked_.empty()) return;
  const bool up = directory->up();
  // Taken out first: resuming one request may end another's connection.
  std::vector<std::pair<Exchange*, std::string>> ready;
  std::erase_if(parked_, [&](Parked& p) {
    std::string key;
    bool answered = false;
    cached_key(p.name, key, answered);
    if (!answered && up) return false;
    ready.emplace_back(p.exchange, std::move(key));
    return true;
  });
  arm();
  for (auto& [exchange, key] : ready) exchange->resume_route(std::move(key));
}

void DirectoryWaiters::on_timer() {
  const uint64_t now = uv_now(ctx_.loop);
  std::vector<Exchange*> late;
  std::erase_if(parked_, [&](const Parked& p) {
    if (p.deadline_ms > now) return false;
    late.push_back(p.exchange);
    return true;
  });
  WorkerStats::add(ctx_.stats.directory_wait_timeouts, late.size());
  arm();
  for (Exchange* exchange : late) exchange->resume_route({});
}

}  // namespace sprayer::proxy
