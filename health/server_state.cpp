// Names of the health vocabulary, as shown by /status and in logs.
#include "health/server_state.h"

namespace sprayer::health {

std::string_view to_string(ServerState state) noexcept {
  switch (state) {
    case ServerState::up: return "up";
    case ServerState::down: return "down";
    case ServerState::draining: return "draining";
    case ServerState::maintenance: return "maintenance";
  }
  return "?";
}

std::string_view to_string(AdminState state) noexcept {
  switch (state) {
    case AdminState::ready: return "ready";
    case AdminState::drain: return "drain";
    case AdminState::maintenance: return "maintenance";
  }
  return "?";
}

std::string_view to_string(Liveness liveness) noexcept {
  switch (liveness) {
    case Liveness::checking: return "checking";
    case Liveness::up: return "up";
    case Liveness::down: return "down";
  }
  return "?";
}

std::string_view to_string(Reason reason) noexcept {
  switch (reason) {
    case Reason::none: return "none";
    case Reason::check_passed: return "check_passed";
    case Reason::check_status: return "check_status";
    case Reason::check_body: return "check_body";
    case Reason::check_timeout: return "check_timeout";
    case Reason::check_connect: return "check_connect";
    case Reason::check_reset: return "check_reset";
    case Reason::passive_connect: return "passive_connect";
    case Reason::passive_reset: return "passive_reset";
    case Reason::passive_timeout: return "passive_timeout";
    case Reason::passive_5xx: return "passive_5xx";
    case Reason::admin_ready: return "admin_ready";
    case Reason::admin_drain: return "admin_drain";
    case Reason::admin_maintenance: return "admin_maintenance";
  }
  return "?";
}

std::string_view to_string(PassiveFailure kind) noexcept {
  switch (kind) {
    case PassiveFailure::connect: return "connect";
    case PassiveFailure::reset: return "reset";
    case PassiveFailure::timeout: return "timeout";
    case PassiveFailure::status_5xx: return "5xx";
  }
  return "?";
}

}  // namespace sprayer::health
