// sd_notify(3) messages from the control thread.
#include "proxy/control/systemd_notify.h"

#include <systemd/sd-daemon.h>

#include <cstring>
#include <ctime>

#include "proxy/log.h"

namespace sprayer::proxy {
namespace {

std::string monotonic_usec() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return std::to_string(static_cast<unsigned long long>(now.tv_sec) * 1000000ULL +
                        static_cast<unsigned long long>(now.tv_nsec) / 1000ULL);
}

}  // namespace

void SystemdNotifier::send(const std::string& message) {
  int rc = sd_notify(0, message.c_str());
  if (rc < 0) LOG_WARN("systemd notification failed: %s", std::strerror(-rc));
}

void SystemdNotifier::ready(const std::string& status) {
  if (ready_) {
    this->status(status);
    return;
  }
  ready_ = true;
  last_status_ = status;
  send("READY=1\nSTATUS=" + status);
}

void SystemdNotifier::reloading() { send("RELOADING=1\nMONOTONIC_USEC=" + monotonic_usec()); }

void SystemdNotifier::reloaded(const std::string& status) {
  last_status_ = status;
  send(std::string(ready_ ? "READY=1\n" : "") + "STATUS=" + status);
}

void SystemdNotifier::stopping(const std::string& status) {
  last_status_ = status;
  send("STOPPING=1\nSTATUS=" + status);
}

void SystemdNotifier::status(const std::string& text) {
  if (text == last_status_) return;
  last_status_ = text;
  send("STATUS=" + text);
}

void SystemdNotifier::main_pid(pid_t pid) { send("MAINPID=" + std::to_string(pid)); }

}  // namespace sprayer::proxy
