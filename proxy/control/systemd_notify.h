// Readiness for systemd (Type=notify): READY=1 once sprayer serves, RELOADING=1 / READY=1
// around a reload, STATUS= lines an operator sees in `systemctl status`. Without
// NOTIFY_SOCKET (not started by systemd) every call does nothing.
#pragma once

#include <sys/types.h>

#include <string>

namespace sprayer::proxy {

class SystemdNotifier {
 public:
  // READY=1 with a STATUS line. Later calls only update the status.
  void ready(const std::string& status);
  bool is_ready() const { return ready_; }
  // RELOADING=1 with MONOTONIC_USEC= (systemd 253 and later match it to the reload they sent).
  void reloading();
  // The end of a reload, applied or refused: READY=1 again if sprayer was ready before.
  void reloaded(const std::string& status);
  void stopping(const std::string& status);
  // The status line alone; sent only when it changed.
  void status(const std::string& text);
  // A binary upgrade hands the service over to another process.
  void main_pid(pid_t pid);

 private:
  void send(const std::string& message);
  bool ready_ = false;
  std::string last_status_;
};

}  // namespace sprayer::proxy
