// Control loop: workers up, signals, admin requests, bounded graceful drain.
#include "proxy/server.h"

#include <thread>

#include "proxy/log.h"

namespace sprayer::proxy {
namespace {

constexpr uint64_t kShutdownPollMs = 50;

}  // namespace

Server::Server(std::shared_ptr<const conf::Config> config) : config_(std::move(config)) {}

Server::~Server() = default;

int Server::run() {
  started_ = std::chrono::steady_clock::now();
  auto runtime = std::make_shared<Runtime>();
  runtime->config = config_;
  std::string error;
  if (!resolve_servers(*config_, runtime->servers, error)) {
    LOG_ERROR("%s", error.c_str());
    return 1;
  }
  runtime_ = runtime;

  uv_loop_init(&loop_);
  unsigned workers = config_->workers ? config_->workers : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < workers; ++i) {
    auto worker = std::make_unique<Worker>(static_cast<int>(i), runtime_, connections_);
    bool ok = worker->start(error);
    workers_.push_back(std::move(worker));
    if (!ok) {
      LOG_ERROR("%s", error.c_str());
      for (auto& w : workers_) w->force_stop();
      for (auto& w : workers_) w->join();
      uv_loop_close(&loop_);
      return 1;
    }
  }
  collector_ = std::make_unique<WorkerStatsCollector>(workers_);

  if (config_->admin.enabled) {
    admin_ = std::make_unique<AdminServer>(&loop_, [this](const AdminRequest& r) { return handle_admin(r); });
    if (admin_->listen(config_->admin.address, error) != 0) {
      LOG_ERROR("%s", error.c_str());
      admin_->close();
      for (auto& w : workers_) w->force_stop();
      for (auto& w : workers_) w->join();
      uv_run(&loop_, UV_RUN_DEFAULT);
      uv_loop_close(&loop_);
      return 1;
    }
  }

  auto signal_cb = [](uv_signal_t* h, int signum) noexcept { static_cast<Server*>(h->data)->on_signal(signum); };
  for (auto [handle, signum] : {std::pair{&sigterm_, SIGTERM}, std::pair{&sigint_, SIGINT}, std::pair{&sighup_, SIGHUP},
                                std::pair{&sigusr1_, SIGUSR1}}) {
    uv_signal_init(&loop_, handle);
    handle->data = this;
    uv_signal_start(handle, signal_cb, signum);
  }
  uv_timer_init(&loop_, &shutdown_timer_);
  shutdown_timer_.data = this;

  std::string listeners;
  for (const auto& l : config_->listeners) listeners += " " + l.name + "=" + l.address.to_string();
  LOG_INFO("sprayer %s started: %u workers, %zu servers, listeners:%s, admin=%s", SPRAYER_VERSION, workers,
           runtime_->servers.size(), listeners.c_str(),
           config_->admin.enabled ? config_->admin.address.to_string().c_str() : "off");

  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  uv_walk(&loop_, [](uv_handle_t* h, void*) noexcept {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }, nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
  LOG_INFO("sprayer stopped%s", forced_ ? " (drain deadline passed; remaining connections were closed)" : "");
  return 0;
}

void Server::on_signal(int signum) {
  switch (signum) {
    case SIGTERM:
    case SIGINT:
      if (shutting_down_) {
        LOG_INFO("second stop signal: closing every connection now");
        for (auto& w : workers_) w->force_stop();
        forced_ = true;
        return;
      }
      LOG_INFO("stop signal: no new connections; in-flight requests may finish for %lld ms",
               static_cast<long long>(config_->timeouts.drain.count()));
      begin_shutdown();
      return;
    case SIGHUP:
      LOG_WARN("SIGHUP: live reload is not supported yet; restart sprayer to apply a new configuration");
      return;
    case SIGUSR1:
      return;  // log reopening comes with the access log
  }
}

void Server::begin_shutdown() {
  shutting_down_ = true;
  drain_deadline_ = std::chrono::steady_clock::now() + config_->timeouts.drain;
  for (auto& w : workers_) w->begin_drain();
  uv_timer_start(&shutdown_timer_, [](uv_timer_t* t) noexcept { static_cast<Server*>(t->data)->on_shutdown_poll(); },
                 kShutdownPollMs, kShutdownPollMs);
}

void Server::on_shutdown_poll() {
  bool all_done = true;
  for (auto& w : workers_) all_done = all_done && w->finished();
  if (!all_done) {
    if (!forced_ && std::chrono::steady_clock::now() >= drain_deadline_) {
      LOG_WARN("drain deadline passed: closing remaining connections");
      forced_ = true;
      for (auto& w : workers_) w->force_stop();
    }
    return;
  }
  uv_timer_stop(&shutdown_timer_);
  if (admin_) admin_->close();
  for (auto* h : {&sigterm_, &sigint_, &sighup_, &sigusr1_}) uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&shutdown_timer_), nullptr);
}

AdminResponse Server::handle_admin(const AdminRequest& request) {
  std::string_view path = request.target;
  path = path.substr(0, path.find('?'));
  if (path == "/healthz") {
    if (shutting_down_) return AdminResponse{503, "text/plain; charset=utf-8", "draining\n"};
    return AdminResponse{200, "text/plain; charset=utf-8", "ok\n"};
  }
  if (path == "/metrics") {
    return AdminResponse{200, "text/plain; version=0.0.4; charset=utf-8", render_metrics({collector_.get()})};
  }
  return AdminResponse{404, "text/plain; charset=utf-8", "not found\n"};
}

}  // namespace sprayer::proxy
