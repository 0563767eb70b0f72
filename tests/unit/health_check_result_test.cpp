// Unit tests for judging a health-check answer (health/check_result.h): status, body
// text, the availability header, transport failures and spec validation.
#include <doctest/doctest.h>

#include <string>

#include "health/check_result.h"

using namespace sprayer::health;
using namespace std::chrono_literals;
using Outcome = CheckResult::Outcome;

namespace {
const std::string kOkBody = "<html><body>Traveler server is available.</body></html>";
}  // namespace

TEST_CASE("check: defaults follow the Traveler status servlet") {
  const CheckSpec spec;
  CHECK(spec.path == "/traveler?action=getStatus");
  CHECK(spec.expected_statuses == std::vector<int>{200});
  CHECK(spec.body_contains == "Traveler server is available.");
  CHECK(spec.interval == 1000ms);
  CHECK(spec.timeout == 800ms);
  CHECK(spec.timeout < spec.interval);
  CHECK(spec.rise == 2);
  CHECK(spec.fall == 2);
  CHECK(spec.jitter == doctest::Approx(0.1));
  CHECK(spec.availability_header.empty());
  CHECK(validate(spec).empty());
}

TEST_CASE("check: 200 with the text passes") {
  const auto r = evaluate_response(200, kOkBody, CheckSpec{});
  CHECK(r.outcome == Outcome::pass);
  CHECK(r.passed());
  CHECK(r.status == 200);
  CHECK_FALSE(r.availability.has_value());
}

TEST_CASE("check: 200 without the text is a body failure (servlet up, sync task down)") {
  for (const char* body : {"", "Traveler server is not available.", "traveler server is available.",
                           "Traveler server is available", "Server is available."}) {
    const auto r = evaluate_response(200, body, CheckSpec{});
    CHECK_MESSAGE(r.outcome == Outcome::fail_body, body);
    CHECK_FALSE(r.passed());
    CHECK(r.status == 200);
  }
}

TEST_CASE("check: every status but the expected ones fails on status, body notwithstanding") {
  const CheckSpec spec;
  for (int status = 0; status <= 999; ++status) {
    const auto r = evaluate_response(status, kOkBody, spec);
    if (status == 200) {
      CHECK(r.outcome == Outcome::pass);
    } else {
      REQUIRE_MESSAGE(r.outcome == Outcome::fail_status, status);
      CHECK(r.status == status);
    }
  }
}

TEST_CASE("check: status is judged before the body") {
  CHECK(evaluate_response(503, "nothing", CheckSpec{}).outcome == Outcome::fail_status);
}

TEST_CASE("check: a custom list of statuses") {
  CheckSpec spec;
  spec.expected_statuses = {200, 204};
  spec.body_contains.clear();
  CHECK(evaluate_response(200, "", spec).passed());
  CHECK(evaluate_response(204, "", spec).passed());
  CHECK(evaluate_response(201, "", spec).outcome == Outcome::fail_status);
}

TEST_CASE("check: an empty status list accepts exactly 2xx") {
  CheckSpec spec;
  spec.expected_statuses.clear();
  for (int status = 100; status <= 599; ++status) {
    CHECK(evaluate_response(status, kOkBody, spec).passed() == (status >= 200 && status <= 299));
  }
}

TEST_CASE("check: an empty body text means no body check") {
  CheckSpec spec;
  spec.body_contains.clear();
  CHECK(evaluate_response(200, "", spec).passed());
  CHECK(evaluate_response(200, "anything", spec).passed());
}

TEST_CASE("check: only the first max_body_bytes count") {
  CheckSpec spec;
  spec.max_body_bytes = 64;
  const std::string text = spec.body_contains;
  CHECK(evaluate_response(200, std::string(64 - text.size(), 'x') + text, spec).passed());
  CHECK(evaluate_response(200, std::string(65 - text.size(), 'x') + text, spec).outcome == Outcome::fail_body);
  CHECK(evaluate_response(200, std::string(200, 'x') + text, spec).outcome == Outcome::fail_body);
}

TEST_CASE("check: availability header is read only when configured and only on a pass") {
  CheckSpec spec;
  CHECK_FALSE(evaluate_response(200, kOkBody, std::string_view("-50"), spec).availability.has_value());

  spec.availability_header = "X-Availability-Index";
  auto r = evaluate_response(200, kOkBody, std::string_view("-50"), spec);
  CHECK(r.passed());
  REQUIRE(r.availability.has_value());
  CHECK(*r.availability == -50);

  CHECK_FALSE(evaluate_response(200, kOkBody, std::nullopt, spec).availability.has_value());

  r = evaluate_response(200, kOkBody, std::string_view("busy"), spec);
  CHECK(r.passed());  // a bad header value never fails a working server
  CHECK_FALSE(r.availability.has_value());

  CHECK_FALSE(evaluate_response(503, kOkBody, std::string_view("80"), spec).availability.has_value());
  CHECK_FALSE(evaluate_response(200, "down", std::string_view("80"), spec).availability.has_value());
}

TEST_CASE("check: parse_availability") {
  CHECK(parse_availability("0") == 0);
  CHECK(parse_availability("100") == 100);
  CHECK(parse_availability("57") == 57);
  CHECK(parse_availability("-1") == -1);
  CHECK(parse_availability("-100") == -100);
  CHECK(parse_availability("-150") == -150);  // between classes: constrained
  CHECK(parse_availability("-200") == -200);
  CHECK(parse_availability("+42") == 42);
  CHECK(parse_availability(" \t 42 \t") == 42);
  CHECK(parse_availability("007") == 7);
  CHECK(parse_availability("-0") == 0);
  // Clamped to [-200, 100].
  CHECK(parse_availability("101") == 100);
  CHECK(parse_availability("-201") == -200);
  CHECK(parse_availability("99999999999999999999") == 100);
  CHECK(parse_availability("-99999999999999999999") == -200);
  CHECK(parse_availability("0000000000000000000042") == 42);
  for (const char* bad : {"", " ", "-", "+", "+-1", "--1", "1.5", "1e2", "0x10", "ten", "1 2", "12a", "- 1"}) {
    CHECK_MESSAGE(!parse_availability(bad).has_value(), std::string(bad));
  }
}

TEST_CASE("check: transport failures") {
  for (Outcome o : {Outcome::fail_timeout, Outcome::fail_connect, Outcome::fail_reset}) {
    const auto r = failed_check(o, 800ms);
    CHECK(r.outcome == o);
    CHECK_FALSE(r.passed());
    CHECK(r.status == 0);
    CHECK(r.latency == 800ms);
    CHECK_FALSE(r.availability.has_value());
  }
  // Without an answer there is no pass.
  CHECK(failed_check(Outcome::pass, 1ms).outcome == Outcome::fail_connect);
  CHECK_FALSE(CheckResult{}.passed());
}

TEST_CASE("check: outcome names") {
  CHECK(to_string(Outcome::pass) == "pass");
  CHECK(to_string(Outcome::fail_status) == "fail_status");
  CHECK(to_string(Outcome::fail_body) == "fail_body");
  CHECK(to_string(Outcome::fail_timeout) == "fail_timeout");
  CHECK(to_string(Outcome::fail_connect) == "fail_connect");
  CHECK(to_string(Outcome::fail_reset) == "fail_reset");
}

TEST_CASE("check: validate") {
  auto bad = [](auto mutate) {
    CheckSpec spec;
    mutate(spec);
    return !validate(spec).empty();
  };
  CHECK(bad([](CheckSpec& s) { s.path = ""; }));
  CHECK(bad([](CheckSpec& s) { s.path = "traveler"; }));
  CHECK(bad([](CheckSpec& s) { s.expected_statuses = {200, 99}; }));
  CHECK(bad([](CheckSpec& s) { s.expected_statuses = {600}; }));
  CHECK(bad([](CheckSpec& s) { s.interval = 0ms; }));
  CHECK(bad([](CheckSpec& s) { s.timeout = 0ms; }));
  CHECK(bad([](CheckSpec& s) { s.timeout = 1001ms; }));
  CHECK(bad([](CheckSpec& s) { s.rise = 0; }));
  CHECK(bad([](CheckSpec& s) { s.fall = 0; }));
  CHECK(bad([](CheckSpec& s) { s.fall = 101; }));
  CHECK(bad([](CheckSpec& s) { s.jitter = -0.1; }));
  CHECK(bad([](CheckSpec& s) { s.jitter = 0.6; }));
  CHECK(bad([](CheckSpec& s) { s.max_body_bytes = 4; }));
  CHECK_FALSE(bad([](CheckSpec& s) { s.expected_statuses.clear(); }));
  CHECK_FALSE(bad([](CheckSpec& s) { s.body_contains.clear(); s.max_body_bytes = 0; }));
  CHECK_FALSE(bad([](CheckSpec& s) { s.timeout = s.interval; s.jitter = 0; s.rise = 1; s.fall = 1; }));
}
