// Binary upgrade on the control loop. Old process: SIGUSR2 starts the binary on disk with
// the listening sockets, and once it is ready stops accepting and drains for
// timeouts.upgrade. New process: adopts the sockets it is configured for, accepts only once
// the admin states and the ownership snapshot are loaded, then says ready (pipe, MAINPID=).
#include <unistd.h>

#include "proxy/control/control_loop.h"
#include "proxy/log.h"

namespace sprayer::proxy {
namespace {

// As long as systemd gives a start (TimeoutStartSec=5min): a large ownership table without a
// cache file takes a while to read.
constexpr std::chrono::minutes kReadyBound{5};

}  // namespace

bool ControlLoop::take_over(std::string& error) {
  own_command_ = read_own_command();
  inherited_ = take_inherited_sockets(error);
  if (!error.empty()) return false;
  if (inherited_.upgrade)
    LOG_INFO("binary upgrade: taking over from pid %d (%zu sockets inherited); accepting once the admin states "
             "and the ownership snapshot are loaded",
             static_cast<int>(inherited_.parent), inherited_.count());
  return true;
}

// Worker `worker` takes the old process's socket of the same rank for each address; a worker
// beyond the old process's count binds its own (it joins the same SO_REUSEPORT group).
std::vector<int> ControlLoop::inherited_for(unsigned worker) const {
  std::vector<int> fds;
  for (const auto& listener : config_->listeners) {
    auto it = inherited_.listeners.find(listener.address.to_string());
    fds.push_back(it != inherited_.listeners.end() && worker < it->second.size() ? it->second[worker] : -1);
  }
  return fds;
}

void ControlLoop::close_unused_inherited(unsigned workers) {
  for (auto& [address, fds] : inherited_.listeners) {
    bool configured = false;
    for (const auto& listener : config_->listeners) configured = configured || listener.address.to_string() == address;
    size_t keep = configured ? std::min<size_t>(workers, fds.size()) : 0;
    if (!configured)
      LOG_INFO("binary upgrade: %s is no longer configured: its sockets close with the old process", address.c_str());
    else if (keep < fds.size())
      // The kernel resets what waits in a closed socket's accept queue (unless
      // net.ipv4.tcp_migrate_req=1): keep `workers` across an upgrade to refuse nothing.
      LOG_WARN("binary upgrade: %s: %zu sockets of the old process's workers have no worker here (workers: %u); "
               "connections queued on them at the switch may be reset",
               address.c_str(), fds.size() - keep, workers);
    for (size_t i = keep; i < fds.size(); ++i) ::close(fds[i]);
    fds.resize(keep);
  }
  const bool admin_used = config_->admin.enabled && inherited_.admin.address == config_->admin.address.to_string();
  if (inherited_.admin.fd >= 0 && !admin_used) {
    LOG_INFO("binary upgrade: the admin address %s is not configured here: it closes with the old process",
             inherited_.admin.address.c_str());
    ::close(inherited_.admin.fd);
    inherited_.admin.fd = -1;
  }
}

void ControlLoop::upgrade_ready() {
  for (auto& w : workers_) w->allow_accept();
  notifier_.main_pid(getpid());
  announce_ready(inherited_);
  LOG_INFO("binary upgrade: serving; pid %d stops accepting and finishes its connections",
           static_cast<int>(inherited_.parent));
  inherited_ = InheritedSockets{};
}

void ControlLoop::start_upgrade() {
  if (shutting_down_) {
    LOG_WARN("SIGUSR2: no binary upgrade: this process is %s", handed_over_ ? "already handing over" : "stopping");
    return;
  }
  if (upgrade_) {
    LOG_WARN("SIGUSR2: no binary upgrade: one is in progress (new process pid %d, not ready yet)",
             static_cast<int>(upgrade_->pid()));
    return;
  }
  if (inherited_.upgrade) {
    LOG_WARN("SIGUSR2: no binary upgrade: this process is not serving yet");
    return;
  }
  std::vector<HandedSocket> listeners;
  for (auto& w : workers_)
    for (auto& [address, fd] : w->listening_sockets()) listeners.push_back({address, fd});
  HandedSocket admin{config_->admin.address.to_string(), admin_ ? admin_->fd() : -1};
  std::string error;
  upgrade_ = UpgradeChild::start(
      &loop_, own_command_, listeners, admin.fd >= 0 ? &admin : nullptr, kReadyBound,
      [this](bool ready, const std::string& why) { on_upgrade_done(ready, why); }, error);
  if (!upgrade_) {
    LOG_ERROR("SIGUSR2: binary upgrade failed: %s; this process keeps serving", error.c_str());
    return;
  }
  LOG_INFO("SIGUSR2: binary upgrade: started %s as pid %d with %zu listening sockets%s; waiting up to %lld s "
           "for it to be ready",
           own_command_.path.c_str(), static_cast<int>(upgrade_->pid()), listeners.size(),
           admin.fd >= 0 ? " and the admin socket" : "",
           static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(kReadyBound).count()));
}

void ControlLoop::on_upgrade_done(bool ready, const std::string& why) {
  const pid_t pid = upgrade_ ? upgrade_->pid() : 0;
  upgrade_ = nullptr;
  if (!ready) {
    LOG_ERROR("binary upgrade: new process pid %d %s; this process keeps serving, nothing changed",
              static_cast<int>(pid), why.c_str());
    return;
  }
  auto [connections, parked] = open_connections();
  LOG_INFO("binary upgrade: pid %d is ready: this process stops accepting and waits up to %lld ms for %lld client "
           "connections (%lld parked long-polls among them)",
           static_cast<int>(pid), static_cast<long long>(config_->timeouts.upgrade_drain().count()),
           static_cast<long long>(connections), static_cast<long long>(parked));
  handed_over_ = true;
  // The admin socket is the new process's now; ours would take a share of its requests.
  if (admin_) admin_->close();
  if (peer_) peer_->stop();  // the new process exchanges admin states with the peer from now on
  begin_shutdown(true);
}

}  // namespace sprayer::proxy
