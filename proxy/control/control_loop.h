// The control thread: starts the workers, owns signals and the admin listener, and runs
// the graceful drain on SIGTERM/SIGINT. Runs on the main thread's own uv loop.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "affinity/extract.h"
#include "affinity/ownership_source.h"
#include "health/active_checker.h"
#include "health/clock.h"
#include "health/health_view.h"
#include "proxy/control/admin_peer.h"
#include "proxy/control/admin_server.h"
#include "proxy/control/admin_state.h"
#include "proxy/control/config_reload.h"
#include "proxy/health_events.h"
#include "proxy/control/metrics.h"
#include "proxy/route_state.h"
#include "proxy/runtime.h"
#include "proxy/control/self_health.h"
#include "proxy/control/systemd_notify.h"
#include "proxy/control/upgrade.h"
#include "proxy/control/status_samples.h"
#include "proxy/worker.h"

namespace sprayer::proxy {

class TlsProbeFactory;

class ControlLoop {
 public:
  explicit ControlLoop(std::shared_ptr<const conf::Config> config);
  ~ControlLoop();
  // Blocks until shutdown; the process exit code.
  int run();

 private:
  AdminResponse handle_admin(const AdminRequest& request);
  SelfHealthInput self_health_input() const;
  AdminResponse route_api(std::string_view query);
  AdminResponse ownership_api();
  void start_ownership_source();
  void on_pool_servers(std::vector<affinity::PoolServerRow> rows);
  void start_health();
  void on_passive_events(const std::vector<PassiveEvent>& events);
  // With `runtime`: a reload's new runtime goes to the workers with the route built from it.
  void publish_route(std::shared_ptr<const Runtime> runtime = nullptr);
  bool reload_tls(const char* why);
  void watch_tls_files();
  AdminResponse servers_api();
  ControlState control_state() const;
  AdminResponse server_state_api(const AdminRequest& request, std::string_view path);
  // admin.state_file: read at start, written on every change (admin_state.h).
  void load_admin_state_file();
  void save_admin_state_file();
  // admin_sync.cpp: the stamped states, shared with admin.peer (admin_peer.h).
  void start_admin_peer();
  // True when the server's routing state changed (the caller publishes the route).
  bool set_admin_record(const std::string& id, const AdminRecord& record, const char* source);
  std::string admin_states_text() const;
  // Merges a peer's states (newer stamps win); false with `error` when the text is not states.
  bool merge_peer_states(std::string_view text, std::string& error);
  AdminResponse admin_states_api(const AdminRequest& request);
  void on_signal(int signum);
  // config_reload.cpp
  ReloadOutcome reload_config(const char* why);
  AdminResponse reload_api(const AdminRequest& request);
  void reload_health(const std::vector<ServerTarget>& servers, const conf::HealthConfig& config);
  void unwatch_tls_files();
  std::shared_ptr<const health::HealthView> hide_pending(std::shared_ptr<const health::HealthView> view) const;
  void on_pending_poll();
  // upgrade: the new process serves; drain for timeouts.upgrade and tell systemd nothing.
  void begin_shutdown(bool upgrade = false);
  // upgrade_control.cpp: SIGUSR2 in the old process, the inherited sockets in the new one.
  void start_upgrade();
  void on_upgrade_done(bool ready, const std::string& why);
  bool take_over(std::string& error);
  std::vector<int> inherited_for(unsigned worker) const;
  void close_unused_inherited(unsigned workers);
  void upgrade_ready();
  void on_shutdown_poll();
  // systemd: READY=1 once the listeners are bound and the ownership source has answered
  // (a snapshot, the cache, or a failure it serves through); STATUS= lines after that.
  void maybe_ready();
  std::string status_line() const;
  void take_sample();
  void judge_stalls();
  std::pair<int64_t, int64_t> open_connections() const;  // client connections, parked long-polls

  std::shared_ptr<const conf::Config> config_;
  std::shared_ptr<const Runtime> runtime_;
  // Server id by slot, removed servers included (slots are never reused): per-server metric
  // rows are kept by slot and named from here.
  std::vector<std::string> slot_ids_;
  void remember_slots();
  std::vector<std::string> listener_slot_names_;  // listener name by stats slot (never shrinks)
  uv_loop_t loop_{};
  uv_signal_t sigterm_{}, sigint_{}, sighup_{}, sigusr1_{}, sigusr2_{};
  uv_timer_t shutdown_timer_{};
  std::unique_ptr<AdminServer> admin_;
  // Before workers_: every worker's buffers are charged to it until the worker is gone.
  Overload overload_;
  // limits.memory_budget, or the default from this machine; logged when it changes.
  void apply_memory_budget(const conf::Config& config);
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<WorkerStatsCollector> collector_;
  std::unique_ptr<ControlStateCollector> control_collector_;
  std::shared_ptr<AccessLog> access_log_;
  std::chrono::system_clock::time_point started_wall_;
  std::atomic<int64_t> connections_{0};
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point drain_deadline_;
  health::SteadyClock clock_;
  health::SplitMix64 random_{0x5eed5eedULL};
  std::unique_ptr<health::HealthTracker> tracker_;
  std::unique_ptr<TlsProbeFactory> probe_tls_;  // HTTPS checks; outlives checker_
  std::unique_ptr<health::ActiveChecker> checker_;
  bool checker_stopped_ = true;
  HealthEvents health_events_;
  std::shared_ptr<const health::HealthView> published_health_;
  std::unique_ptr<affinity::OwnershipSource> source_;
  bool source_stopped_ = true;
  std::shared_ptr<const affinity::OwnershipSnapshot> snapshot_;
  // The last read of pool_server, by id, and whether each heartbeat was too old then.
  std::map<std::string, std::pair<affinity::PoolServerRow, bool>, std::less<>> pool_servers_;
  std::shared_ptr<const RouteState> route_;
  std::vector<std::shared_ptr<const TlsContext>> tls_;  // what the workers serve now
  std::vector<uv_fs_event_t*> tls_watches_;
  std::vector<std::string> tls_file_names_;  // base names of the watched certificate files
  uv_timer_t tls_debounce_{};
  uint64_t route_version_ = 0;
  std::unique_ptr<affinity::Extractor> admin_extractor_;  // a user name from the route API
  uint32_t next_slot_ = 0;                   // the next ServerTarget::slot a reload hands out
  uint64_t reloads_applied_ = 0;
  uint64_t reloads_refused_ = 0;
  std::optional<std::chrono::system_clock::time_point> last_reload_success_;  // none yet: the start
  bool last_reload_ok_ = true;
  std::vector<std::string> pending_servers_;  // added by reload, no traffic until a check passes
  uv_timer_t pending_timer_{};
  // Where each server's admin state came from: "api", "state_file" or "peer"; absent: never set.
  std::map<std::string, std::string> admin_sources_;
  AdminStates admin_records_;        // each server's last admin change and its stamp
  std::unique_ptr<AdminPeer> peer_;  // admin.peer, when set
  SystemdNotifier notifier_;
  bool listening_ = false;        // workers and admin listener bound
  bool source_answered_ = false;  // the ownership source gave a snapshot or its first verdict
  std::string reload_note_;       // the last refused reload, for the status line
  uv_timer_t sample_timer_{};
  StatusSamples samples_;  // the status page's sparklines
  // Servers reported stalled, waiting for the check that says whether they really are:
  // a server quietly holding long-polls is normal and not worth a line.
  struct StallWatch {
    uint64_t checks_passed = 0;
    uint64_t checks_failed = 0;
  };
  std::map<std::string, StallWatch> stalls_;
  std::atomic<bool> table_loaded_{false};  // the first snapshot arrived (load progress stops)
  OwnCommand own_command_;              // what SIGUSR2 starts again
  InheritedSockets inherited_;          // from the process this one replaced (binary upgrade)
  UpgradeChild* upgrade_ = nullptr;     // an upgrade in progress; frees itself
  bool handed_over_ = false;            // the new process serves: this one drains and exits
  bool shutting_down_ = false;
  bool forced_ = false;
  std::pair<int64_t, int64_t> cut_{0, 0};  // connections and parked long-polls a forced stop cut
};

}  // namespace sprayer::proxy
