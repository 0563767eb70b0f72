// Judging a health-check answer: status, then body text, then the availability header.
#include "health/check_result.h"

#include <algorithm>
#include <charconv>

#include "health/server_state.h"

namespace sprayer::health {
namespace {

bool status_expected(int status, const CheckSpec& spec) noexcept {
  if (spec.expected_statuses.empty()) return status >= 200 && status <= 299;
  return std::find(spec.expected_statuses.begin(), spec.expected_statuses.end(), status) !=
         spec.expected_statuses.end();
}

bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }

}  // namespace

CheckResult evaluate_response(int status, std::string_view body, const CheckSpec& spec) {
  return evaluate_response(status, body, std::nullopt, spec);
}

CheckResult evaluate_response(int status, std::string_view body,
                              std::optional<std::string_view> availability_value,
                              const CheckSpec& spec) {
  CheckResult result;
  result.status = status;
  if (!status_expected(status, spec)) {
    result.outcome = CheckResult::Outcome::fail_status;
    return result;
  }
  body = body.substr(0, std::min(body.size(), spec.max_body_bytes));
  if (!spec.body_contains.empty() && body.find(spec.body_contains) == std::string_view::npos) {
    result.outcome = CheckResult::Outcome::fail_body;
    return result;
  }
  result.outcome = CheckResult::Outcome::pass;
  if (!spec.availability_header.empty() && availability_value) {
    result.availability = parse_availability(*availability_value);
  }
  return result;
}

CheckResult failed_check(CheckResult::Outcome outcome, std::chrono::milliseconds latency) {
  CheckResult result;
  // A pass needs an answer; turning one into a pass here would hide a caller bug.
  result.outcome = outcome == CheckResult::Outcome::pass ? CheckResult::Outcome::fail_connect : outcome;
  result.latency = latency;
  return result;
}

std::optional<int> parse_availability(std::string_view text) noexcept {
  while (!text.empty() && is_blank(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_blank(text.back())) text.remove_suffix(1);
  const bool negative = !text.empty() && text.front() == '-';
  if (!text.empty() && (text.front() == '-' || text.front() == '+')) text.remove_prefix(1);
  std::string_view digits = text;
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
  // Clamp instead of failing on huge values: "-99999999999" still means "no work".
  if (digits.size() > 6) return negative ? kAvailabilityBoundOnly : kAvailabilityMax;
  int value = 0;
  std::from_chars(digits.data(), digits.data() + digits.size(), value);
  return clamp_availability(negative ? -value : value);
}

std::string_view to_string(CheckResult::Outcome outcome) noexcept {
  switch (outcome) {
    case CheckResult::Outcome::pass: return "pass";
    case CheckResult::Outcome::fail_status: return "fail_status";
    case CheckResult::Outcome::fail_body: return "fail_body";
    case CheckResult::Outcome::fail_timeout: return "fail_timeout";
    case CheckResult::Outcome::fail_connect: return "fail_connect";
    case CheckResult::Outcome::fail_reset: return "fail_reset";
  }
  return "?";
}

std::string_view validate(const CheckSpec& spec) noexcept {
  if (spec.path.empty() || spec.path.front() != '/') return "health check path must start with '/'";
  for (int s : spec.expected_statuses) {
    if (s < 100 || s > 599) return "health check expected statuses must be within 100..599";
  }
  if (spec.interval.count() <= 0) return "health check interval must be positive";
  if (spec.fast_interval.count() <= 0) return "health check fast_interval must be positive";
  if (spec.fast_interval > spec.interval) return "health check fast_interval must not exceed the interval";
  if (spec.timeout.count() <= 0) return "health check timeout must be positive";
  if (spec.timeout > spec.interval) return "health check timeout must not exceed the interval";
  if (spec.rise < 1 || spec.rise > 100) return "health check rise must be within 1..100";
  if (spec.fall < 1 || spec.fall > 100) return "health check fall must be within 1..100";
  if (!(spec.jitter >= 0.0 && spec.jitter <= 0.5)) return "health check jitter must be within 0..0.5";
  if (spec.max_body_bytes < spec.body_contains.size()) {
    return "health check max_body_bytes is smaller than the expected body text";
  }
  return {};
}

}  // namespace sprayer::health
