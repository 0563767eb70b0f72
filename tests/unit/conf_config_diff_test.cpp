// Unit tests of conf::diff_configs and keep_restart_only: which servers, listeners and keys a
// reload changes, and which need a restart.
#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "conf/config.h"
#include "conf/config_diff.h"

namespace conf = sprayer::conf;

namespace {

constexpr std::string_view base =
    "workers: 2\n"
    "listeners:\n"
    "  - name: http\n"
    "    address: 127.0.0.1:8080\n"
    "  - name: plain\n"
    "    address: 127.0.0.1:8081\n"
    "servers:\n"
    "  - id: pool1\n"
    "    address: 127.0.0.1:9001\n"
    "  - id: pool2\n"
    "    address: 127.0.0.1:9002\n"
    "  - id: pool3\n"
    "    address: 127.0.0.1:9003\n";

std::shared_ptr<const conf::Config> load(std::string_view yaml) {
  conf::LoadResult result = conf::load_string(yaml, "test.yaml");
  std::string errors;
  for (const auto& e : result.errors) errors += e.to_string() + "\n";
  INFO(errors);
  REQUIRE(result.ok());
  return result.config;
}

std::string replace(std::string text, std::string_view from, std::string_view to) {
  size_t at = text.find(from);
  REQUIRE(at != std::string::npos);
  text.replace(at, from.size(), to);
  return text;
}

using Names = std::vector<std::string>;

}  // namespace

TEST_CASE("the same file twice changes nothing") {
  auto a = load(base);
  auto b = load(base);
  conf::ConfigDiff diff = conf::diff_configs(*a, *b);
  CHECK(diff.empty());
  CHECK(diff.summary() == "no change");
}

TEST_CASE("servers are matched by id: added, removed, changed address or weight") {
  auto running = load(base);
  std::string text = replace(std::string(base), "  - id: pool1\n    address: 127.0.0.1:9001\n", "");
  text = replace(text, "127.0.0.1:9002", "127.0.0.1:9012");
  text = replace(text, "    address: 127.0.0.1:9003\n", "    address: 127.0.0.1:9003\n    weight: 5\n");
  text += "  - id: pool4\n    address: 127.0.0.1:9004\n";
  auto next = load(text);
  conf::ConfigDiff diff = conf::diff_configs(*running, *next);
  CHECK(diff.servers_added == Names{"pool4"});
  CHECK(diff.servers_removed == Names{"pool1"});
  CHECK(diff.servers_changed == Names{"pool2", "pool3"});
  CHECK(diff.listeners_added.empty());
  CHECK(diff.live.empty());
  CHECK(diff.needs_restart.empty());
  CHECK(diff.summary() == "servers +pool4 -pool1 ~pool2 ~pool3");
}

TEST_CASE("reordering servers is no change (identity is the id)") {
  auto running = load(base);
  std::string text = replace(std::string(base), "  - id: pool1\n    address: 127.0.0.1:9001\n", "");
  text += "  - id: pool1\n    address: 127.0.0.1:9001\n";
  conf::ConfigDiff diff = conf::diff_configs(*running, *load(text));
  CHECK_FALSE(diff.servers_differ());
}

TEST_CASE("listeners are matched by name; a new address means a new socket") {
  auto running = load(base);
  std::string text = replace(std::string(base), "127.0.0.1:8081", "127.0.0.1:8091");
  text = replace(text, "    address: 127.0.0.1:8080\n", "    address: 127.0.0.1:8080\n    backlog: 128\n");
  text = replace(text, "servers:\n", "  - name: extra\n    address: 127.0.0.1:8082\nservers:\n");
  conf::ConfigDiff diff = conf::diff_configs(*running, *load(text));
  CHECK(diff.listeners_added == Names{"extra"});
  CHECK(diff.listeners_removed.empty());
  CHECK(diff.listeners_changed == Names{"http", "plain"});
  CHECK(diff.listeners_rebound == Names{"plain"});

  std::string removed = replace(std::string(base), "  - name: plain\n    address: 127.0.0.1:8081\n", "");
  conf::ConfigDiff diff2 = conf::diff_configs(*running, *load(removed));
  CHECK(diff2.listeners_removed == Names{"plain"});
  CHECK(diff2.listeners_differ());
}

TEST_CASE("live sections are named") {
  auto running = load(base);
  std::string text = std::string(base) +
                     "timeouts:\n  client_idle: 5s\n"
                     "limits:\n  max_header_count: 50\n"
                     "http:\n  via: ''\n"
                     "upstream:\n  max_idle_per_server: 3\n"
                     "affinity:\n  lower_case: false\n"
                     "health:\n  interval: 3s\n"
                     "log:\n  level: debug\n"
                     "admin:\n  token: s3cret\n";
  conf::ConfigDiff diff = conf::diff_configs(*running, *load(text));
  CHECK(diff.live == Names{"timeouts", "limits", "upstream", "http", "affinity", "health", "log", "admin.token"});
  CHECK(diff.needs_restart.empty());
  CHECK_FALSE(diff.empty());
}

TEST_CASE("restart-only keys are reported and kept at their running values") {
  auto running = load(base);
  std::string text = replace(std::string(base), "workers: 2", "workers: 4");
  text += "admin:\n  address: 127.0.0.1:9999\n"
          "health:\n  enabled: false\n"
          "ownership:\n  source: sqlite\n  sqlite_path: /tmp/pool.db\n";
  auto next = load(text);
  conf::ConfigDiff diff = conf::diff_configs(*running, *next);
  CHECK(diff.needs_restart == Names{"workers", "admin.address", "ownership", "health.enabled"});
  CHECK(diff.live.empty());  // health.enabled is not a live health change
  CHECK(diff.summary() == "needs restart: workers admin.address ownership health.enabled");

  auto kept = conf::keep_restart_only(*running, *next);
  CHECK(kept->workers == 2);
  CHECK(kept->admin.address == running->admin.address);
  CHECK(kept->ownership == running->ownership);
  CHECK(kept->health.enabled);
  CHECK(conf::diff_configs(*running, *kept).empty());
}

TEST_CASE("keep_restart_only keeps everything that is live") {
  auto running = load(base);
  std::string text = replace(std::string(base), "workers: 2", "workers: 3");
  text += "  - id: pool4\n    address: 127.0.0.1:9004\n";
  text += "timeouts:\n  drain: 3s\n";
  auto kept = conf::keep_restart_only(*running, *load(text));
  CHECK(kept->workers == 2);
  CHECK(kept->servers.size() == 4);
  CHECK(kept->timeouts.drain == std::chrono::seconds(3));
  conf::ConfigDiff diff = conf::diff_configs(*running, *kept);
  CHECK(diff.servers_added == Names{"pool4"});
  CHECK(diff.live == Names{"timeouts"});
  CHECK(diff.needs_restart.empty());
}
