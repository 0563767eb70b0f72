// Unit tests of conf::load_* and the scalar parsers: defaults, every key, every kind of error
// with its exact file:line:column and key path, and the edge cases of durations, sizes, addresses.
#include <doctest/doctest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "conf/config.h"

namespace conf = sprayer::conf;
using namespace std::chrono_literals;

namespace {

// The smallest valid file; tests append to it, so their lines start at 7.
constexpr std::string_view minimal =
    "listeners:\n"                   // 1
    "  - name: http\n"               // 2
    "    address: 127.0.0.1:8080\n"  // 3
    "servers:\n"                     // 4
    "  - id: pool1\n"                // 5
    "    address: 127.0.0.1:9001\n"; // 6

conf::LoadResult load(std::string_view yaml) { return conf::load_string(yaml, "test.yaml"); }

conf::LoadResult load_with(std::string_view extra) { return load(std::string(minimal) + std::string(extra)); }

std::string all_errors(const conf::LoadResult& result) {
  std::string text;
  for (const conf::ConfigError& error : result.errors) text += error.to_string() + "\n";
  return text;
}

// Asserts that result failed with exactly one error and returns it.
conf::ConfigError single_error(const conf::LoadResult& result) {
  INFO(all_errors(result));
  REQUIRE_FALSE(result.ok());
  REQUIRE(result.config == nullptr);
  REQUIRE(result.errors.size() == 1);
  return result.errors.front();
}

void check_error(const conf::ConfigError& error, int line, int column, std::string_view key,
                 std::string_view message) {
  INFO(error.to_string());
  CHECK(error.file == "test.yaml");
  CHECK(error.line == line);
  CHECK(error.column == column);
  CHECK(error.key == key);
  CHECK(error.message == message);
}

// One error expected at line:column of key, with exactly this message.
void expect_error(std::string_view yaml, int line, int column, std::string_view key, std::string_view message) {
  check_error(single_error(load(yaml)), line, column, key, message);
}

// Like expect_error, the yaml being appended to the minimal file.
void expect_error_with(std::string_view extra, int line, int column, std::string_view key,
                       std::string_view message) {
  expect_error(std::string(minimal) + std::string(extra), line, column, key, message);
}

// The example shipped with the sources, found from this file so no build setting is needed.
std::filesystem::path example_path() {
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "conf" / "examples" /
         "sprayer.yaml";
}

}  // namespace

TEST_CASE("a minimal file gets the documented defaults") {
  conf::LoadResult result = load(minimal);
  INFO(all_errors(result));
  REQUIRE(result.ok());
  CHECK(result.errors.empty());
  const conf::Config& c = *result.config;
  CHECK(c.source == "test.yaml");
  CHECK(c.workers == 0);
  REQUIRE(c.listeners.size() == 1);
  CHECK(c.listeners[0].name == "http");
  CHECK(c.listeners[0].address.host == "127.0.0.1");
  CHECK(c.listeners[0].address.port == 8080);
  CHECK(c.listeners[0].backlog == 4096);
  REQUIRE(c.servers.size() == 1);
  CHECK(c.servers[0].id == "pool1");
  CHECK(c.servers[0].address.to_string() == "127.0.0.1:9001");
  CHECK(c.servers[0].weight == 1);
  CHECK(c.timeouts.client_header == 10s);
  CHECK(c.timeouts.client_idle == 75s);
  CHECK(c.timeouts.client_body == 60s);
  CHECK(c.timeouts.client_send == 60s);
  CHECK(c.timeouts.upstream_connect == 2s);
  CHECK(c.timeouts.upstream_response == 35min);
  CHECK(c.timeouts.upstream_idle == 30s);
  CHECK(c.timeouts.drain == 30s);
  CHECK(c.limits.max_connections == 100000);
  CHECK(c.limits.max_header_bytes == 32 * 1024);
  CHECK(c.limits.max_header_count == 100);
  CHECK(c.limits.max_uri_length == 8 * 1024);
  CHECK(c.upstream.max_idle_per_server == 64);
  CHECK(c.upstream.max_requests_per_connection == 0);
  CHECK(c.http.preserve_host);
  CHECK(c.http.via == "sprayer");
  CHECK(c.http.x_forwarded);
  CHECK_FALSE(c.http.allow_upgrade);
  CHECK(c.http.buffer_high_watermark == 256 * 1024);
  CHECK(c.http.buffer_low_watermark == 64 * 1024);
  CHECK(c.admin.enabled);
  CHECK(c.admin.address.to_string() == "127.0.0.1:9100");
  CHECK(c.admin.token.empty());
  CHECK(c.log.level == conf::LogLevel::info);
  REQUIRE(c.affinity.extractors.size() == 4);
  CHECK(c.affinity.extractors[0].kind == "activesync_query");
  CHECK(c.affinity.extractors[3].kind == "traveler_url");
  CHECK_FALSE(c.affinity.reject_malformed);
  CHECK(c.affinity.max_user_length == 256);
  CHECK(c.affinity.lower_case);
  CHECK(c.affinity.strip_domain);
  CHECK(c.affinity.notes_canonical);
  CHECK(c.affinity.map.empty());
  CHECK(c.ownership.source == conf::OwnershipSourceKind::none);
  CHECK(c.ownership.poll_interval == 200ms);
  CHECK(c.ownership.resync_interval == 5min);
  CHECK(c.ownership.reconnect_min == 500ms);
  CHECK(c.ownership.reconnect_max == 30s);
  CHECK(c.ownership.stale_after == 30s);
  CHECK(c.ownership.cache_file.empty());
}

TEST_CASE("every key is parsed") {
  conf::LoadResult result = load(
      "workers: 8\n"
      "listeners:\n"
      "  - name: http\n"
      "    address: 0.0.0.0:80\n"
      "    backlog: 1024\n"
      "  - name: v6.http-2\n"
      "    address: \"[2001:db8::10]:8443\"\n"
      "servers:\n"
      "  - id: pool1\n"
      "    address: trav1.example.com:443\n"
      "    weight: 3\n"
      "  - id: pool_2\n"
      "    address: \"[fd00::2]:80\"\n"
      "  - id: POOL.3\n"
      "    address: 10.0.0.3:8080\n"
      "    weight: 1000\n"
      "timeouts:\n"
      "  client_header: 5s\n"
      "  client_idle: 2m\n"
      "  client_body: 90s\n"
      "  client_send: 45s\n"
      "  upstream_connect: 1500ms\n"
      "  upstream_response: 1h30m\n"
      "  upstream_idle: 10s\n"
      "  drain: 2m30s\n"
      "limits:\n"
      "  max_connections: 250000\n"
      "  max_header_bytes: 64KiB\n"
      "  max_header_count: 200\n"
      "  max_uri_length: 16384\n"
      "upstream:\n"
      "  max_idle_per_server: 0\n"
      "  max_requests_per_connection: 1000\n"
      "http:\n"
      "  preserve_host: false\n"
      "  via: \"\"\n"
      "  x_forwarded: false\n"
      "  allow_upgrade: true\n"
      "  buffer_high_watermark: 1MB\n"
      "  buffer_low_watermark: 128KiB\n"
      "admin:\n"
      "  enabled: false\n"
      "  address: \"[::1]:9200\"\n"
      "  token: s3cr3t-T0ken/+=\n"
      "log:\n"
      "  level: debug\n"
      "affinity:\n"
      "  extractors:\n"
      "    - kind: header\n"
      "      name: X-Sync-User\n"
      "    - basic_auth\n"
      "    - kind: query\n"
      "      name: uid\n"
      "    - kind: cookie\n"
      "      name: SyncUser\n"
      "  reject_malformed: true\n"
      "  max_user_length: 512\n"
      "  lower_case: false\n"
      "  strip_domain: false\n"
      "  notes_canonical: false\n"
      "  map:\n"
      "    JDoe: jane doe\n"
      "    \"ACME\\\\jdoe\": jane doe\n"
      "ownership:\n"
      "  source: postgresql\n"
      "  sqlite_path: /var/lib/sprayer/pool.db\n"
      "  postgresql: host=db1,db2 dbname=traveler target_session_attrs=read-write\n"
      "  query_full: SELECT u, s, e FROM owners\n"
      "  query_delta: SELECT u, s, e FROM owners WHERE e > $1\n"
      "  query_servers: \"\"\n"
      "  query_change: SELECT 1\n"
      "  poll_interval: 1s\n"
      "  resync_interval: 10m\n"
      "  reconnect_min: 1s\n"
      "  reconnect_max: 1m\n"
      "  stale_after: 45s\n"
      "  cache_file: /var/cache/sprayer/owners.snapshot\n");
  INFO(all_errors(result));
  REQUIRE(result.ok());
  const conf::Config& c = *result.config;
  CHECK(c.workers == 8);
  REQUIRE(c.listeners.size() == 2);
  CHECK(c.listeners[0].name == "http");
  CHECK(c.listeners[0].address.host == "0.0.0.0");
  CHECK(c.listeners[0].address.port == 80);
  CHECK(c.listeners[0].backlog == 1024);
  CHECK(c.listeners[1].name == "v6.http-2");
  CHECK(c.listeners[1].address.host == "2001:db8::10");
  CHECK(c.listeners[1].address.port == 8443);
  CHECK(c.listeners[1].backlog == 4096);
  REQUIRE(c.servers.size() == 3);
  CHECK(c.servers[0].id == "pool1");
  CHECK(c.servers[0].address.host == "trav1.example.com");
  CHECK(c.servers[0].address.port == 443);
  CHECK(c.servers[0].weight == 3);
  CHECK(c.servers[1].id == "pool_2");
  CHECK(c.servers[1].address.to_string() == "[fd00::2]:80");
  CHECK(c.servers[1].weight == 1);
  CHECK(c.servers[2].id == "POOL.3");
  CHECK(c.servers[2].weight == 1000);
  CHECK(c.timeouts.client_header == 5s);
  CHECK(c.timeouts.client_idle == 2min);
  CHECK(c.timeouts.client_body == 90s);
  CHECK(c.timeouts.client_send == 45s);
  CHECK(c.timeouts.upstream_connect == 1500ms);
  CHECK(c.timeouts.upstream_response == 90min);
  CHECK(c.timeouts.upstream_idle == 10s);
  CHECK(c.timeouts.drain == 150s);
  CHECK(c.limits.max_connections == 250000);
  CHECK(c.limits.max_header_bytes == 65536);
  CHECK(c.limits.max_header_count == 200);
  CHECK(c.limits.max_uri_length == 16384);
  CHECK(c.upstream.max_idle_per_server == 0);
  CHECK(c.upstream.max_requests_per_connection == 1000);
  CHECK_FALSE(c.http.preserve_host);
  CHECK(c.http.via.empty());
  CHECK_FALSE(c.http.x_forwarded);
  CHECK(c.http.allow_upgrade);
  CHECK(c.http.buffer_high_watermark == 1'000'000);
  CHECK(c.http.buffer_low_watermark == 128 * 1024);
  CHECK_FALSE(c.admin.enabled);
  CHECK(c.admin.address.host == "::1");
  CHECK(c.admin.address.port == 9200);
  CHECK(c.admin.token == "s3cr3t-T0ken/+=");
  CHECK(c.log.level == conf::LogLevel::debug);
  REQUIRE(c.affinity.extractors.size() == 4);
  CHECK(c.affinity.extractors[0].kind == "header");
  CHECK(c.affinity.extractors[0].name == "X-Sync-User");
  CHECK(c.affinity.extractors[1].kind == "basic_auth");
  CHECK(c.affinity.extractors[1].name.empty());
  CHECK(c.affinity.extractors[2].kind == "query");
  CHECK(c.affinity.extractors[2].name == "uid");
  CHECK(c.affinity.extractors[3].kind == "cookie");
  CHECK(c.affinity.extractors[3].name == "SyncUser");
  CHECK(c.affinity.reject_malformed);
  CHECK(c.affinity.max_user_length == 512);
  CHECK_FALSE(c.affinity.lower_case);
  CHECK_FALSE(c.affinity.strip_domain);
  CHECK_FALSE(c.affinity.notes_canonical);
  REQUIRE(c.affinity.map.size() == 2);
  CHECK(c.affinity.map[0] == std::pair<std::string, std::string>{"JDoe", "jane doe"});
  CHECK(c.affinity.map[1] == std::pair<std::string, std::string>{"ACME\\jdoe", "jane doe"});
  CHECK(c.ownership.source == conf::OwnershipSourceKind::postgresql);
  CHECK(c.ownership.sqlite_path == "/var/lib/sprayer/pool.db");
  CHECK(c.ownership.postgresql == "host=db1,db2 dbname=traveler target_session_attrs=read-write");
  CHECK(c.ownership.query_full == "SELECT u, s, e FROM owners");
  CHECK(c.ownership.query_delta == "SELECT u, s, e FROM owners WHERE e > $1");
  CHECK(c.ownership.query_servers.empty());
  CHECK(c.ownership.query_change == "SELECT 1");
  CHECK(c.ownership.poll_interval == 1s);
  CHECK(c.ownership.resync_interval == 10min);
  CHECK(c.ownership.reconnect_min == 1s);
  CHECK(c.ownership.reconnect_max == 1min);
  CHECK(c.ownership.stale_after == 45s);
  CHECK(c.ownership.cache_file == "/var/cache/sprayer/owners.snapshot");
}

TEST_CASE("each log level is accepted") {
  for (auto [text, level] : {std::pair{"debug", conf::LogLevel::debug}, std::pair{"info", conf::LogLevel::info},
                             std::pair{"warn", conf::LogLevel::warn}, std::pair{"error", conf::LogLevel::error}}) {
    conf::LoadResult result = load_with(std::string("log:\n  level: ") + text + "\n");
    REQUIRE(result.ok());
    CHECK(result.config->log.level == level);
  }
}

TEST_CASE("health.stall_after: default, a value, 0 = off, and out of range") {
  REQUIRE(load_with("").ok());
  CHECK(load_with("").config->health.stall_after == conf::Duration(300));
  auto set = load_with("health:\n  stall_after: 1s\n");
  REQUIRE(set.ok());
  CHECK(set.config->health.stall_after == conf::Duration(1000));
  auto off = load_with("health:\n  stall_after: 0s\n");
  REQUIRE(off.ok());
  CHECK(off.config->health.stall_after == conf::Duration(0));
  auto bad = load_with("health:\n  stall_after: 2h\n");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.errors[0].to_string().find("health.stall_after") != std::string::npos);
}

TEST_CASE("health.fast_interval: default, a value, positive, at most the interval") {
  REQUIRE(load_with("").ok());
  CHECK(load_with("").config->health.fast_interval == conf::Duration(200));
  auto set = load_with("health:\n  interval: 2s\n  fast_interval: 50ms\n");
  REQUIRE(set.ok());
  CHECK(set.config->health.fast_interval == conf::Duration(50));
  CHECK(load_with("health:\n  interval: 300ms\n  fast_interval: 300ms\n").ok());
  auto short_interval = load_with("health:\n  interval: 100ms\n");  // unset: follows the interval down
  REQUIRE(short_interval.ok());
  CHECK(short_interval.config->health.fast_interval == conf::Duration(100));

  const conf::ConfigError zero = single_error(load_with("health:\n  fast_interval: 0s\n"));
  CHECK(zero.file == "test.yaml");
  CHECK(zero.line == 8);
  CHECK(zero.key == "health.fast_interval");
  // Above the default interval (1 s), written or not; the error sits on fast_interval.
  check_error(single_error(load_with("health:\n  fast_interval: 2s\n")), 8, 18, "health.fast_interval",
              "must not exceed interval");
  check_error(single_error(load_with("health:\n  fast_interval: 500ms\n  interval: 400ms\n")), 8, 18,
              "health.fast_interval", "must not exceed interval");
  // A broken interval is reported once, not again through fast_interval.
  const conf::ConfigError bad_interval = single_error(load_with("health:\n  interval: 5ms\n  fast_interval: 200ms\n"));
  CHECK(bad_interval.key == "health.interval");
}

TEST_CASE("timeouts.upgrade: upstream_response unless set, and never zero") {
  auto unset = load_with("timeouts:\n  upstream_response: 20m\n");
  REQUIRE(unset.ok());
  CHECK(unset.config->timeouts.upgrade_drain() == 20min);
  auto set = load_with("timeouts:\n  upstream_response: 20m\n  upgrade: 90s\n");
  REQUIRE(set.ok());
  CHECK(set.config->timeouts.upgrade_drain() == 90s);
  const conf::ConfigError zero = single_error(load_with("timeouts:\n  upgrade: 0s\n"));
  CHECK(zero.line == 8);
  CHECK(zero.key == "timeouts.upgrade");
}

TEST_CASE("affinity.authenticated_wins: on by default, can be turned off") {
  REQUIRE(load_with("").ok());
  CHECK(load_with("").config->affinity.authenticated_wins);
  auto off = load_with("affinity:\n  authenticated_wins: false\n");
  REQUIRE(off.ok());
  CHECK_FALSE(off.config->affinity.authenticated_wins);
  expect_error_with("affinity:\n  authenticated_wins: yes\n", 8, 23, "affinity.authenticated_wins",
                    "expected true or false, found \"yes\"");
}

TEST_CASE("health.auth_file and health.headers: the status check's login and extra headers") {
  auto none = load_with("");
  REQUIRE(none.ok());
  CHECK(none.config->health.auth_file.empty());
  CHECK(none.config->health.headers.empty());
  auto set = conf::load_string(std::string(minimal) +
                             "health:\n  auth_file: secrets/check.auth\n  headers:\n    X-Check: sprayer\n"
                             "    Accept-Language: en\n",
                         "/etc/sprayer/sprayer.yaml");
  REQUIRE(set.ok());
  CHECK(set.config->health.auth_file == "/etc/sprayer/secrets/check.auth");  // next to the config
  REQUIRE(set.config->health.headers.size() == 2);
  CHECK(set.config->health.headers[0] == std::pair<std::string, std::string>{"X-Check", "sprayer"});
  CHECK(set.config->health.headers[1].first == "Accept-Language");
  expect_error_with("health:\n  headers:\n    host: x\n", 9, 5, "health.headers.host",
                    "the check sets this header itself");
  expect_error_with("health:\n  headers:\n    \"X Y\": x\n", 9, 5, "health.headers.X Y",
                    "must be a header name (an HTTP token)");
  expect_error_with("health:\n  headers:\n    X-A: \"a\\r\\nX-B: b\"\n", 9, 10, "health.headers.X-A",
                    "a header value must be one line of printable ASCII");
  expect_error_with("health:\n  headers:\n    X-A: a\n    x-a: b\n", 10, 5, "health.headers.x-a", "duplicate header");
  expect_error_with("health:\n  headers: [a]\n", 8, 12, "health.headers",
                    "expected a map of header name: value, found a list");
  expect_error_with("health:\n  auth_file: a\n  headers:\n    Authorization: Basic eDp5\n", 10, 5,
                    "health.headers.Authorization", "auth_file already sends Authorization; keep the login in one place");
}

TEST_CASE("directory: off by default; when on, uri and base_dn are required and checked") {
  auto none = load_with("");
  REQUIRE(none.ok());
  const conf::DirectoryConfig& d = none.config->directory;
  CHECK_FALSE(d.enabled);
  CHECK(d.filter == "(|(uid=%s)(mail=%s)(cn=%s))");
  CHECK(d.attribute == "uid");
  CHECK(d.ttl == std::chrono::hours(4));
  CHECK(d.negative_ttl == std::chrono::minutes(5));
  CHECK(d.wait == conf::Duration(50));
  CHECK(d.cache_size == 100000);
  auto on = conf::load_string(std::string(minimal) +
                                  "directory:\n  enabled: true\n  uri: ldaps://ldap.acme.example\n"
                                  "  base_dn: o=Acme\n  password_file: ldap.pw\n  attribute: dn\n  wait: 0s\n",
                              "/etc/sprayer/sprayer.yaml");
  REQUIRE(on.ok());
  CHECK(on.config->directory.password_file == "/etc/sprayer/ldap.pw");
  CHECK(on.config->directory.attribute == "dn");
  CHECK(on.config->directory.wait == conf::Duration(0));
  expect_error_with("directory:\n  enabled: true\n  base_dn: o=Acme\n", 8, 12, "directory.uri", "required when enabled");
  expect_error_with("directory:\n  uri: http://x\n", 8, 8, "directory.uri", "must be an ldap:// or ldaps:// URI");
  expect_error_with("directory:\n  filter: \"(uid=x)\"\n", 8, 11, "directory.filter",
                    "must contain %s, where the name goes");
  expect_error_with("directory:\n  filter: \"uid=%s\"\n", 8, 11, "directory.filter",
                    "must be an LDAP filter in parentheses");
  expect_error_with("directory:\n  attribute: \"a b\"\n", 8, 14, "directory.attribute",
                    "must be an attribute name, or dn");
  expect_error_with("directory:\n  wait: 1m\n", 8, 9, "directory.wait", "must be between 0s and 10s");
}

TEST_CASE("sections left empty or with every key commented out keep their defaults") {
  conf::LoadResult result = load_with(
      "timeouts:\n"
      "  # client_idle: 5s\n"
      "limits:\n"
      "http: {}\n");
  INFO(all_errors(result));
  REQUIRE(result.ok());
  CHECK(result.config->timeouts.client_idle == 75s);
  CHECK(result.config->http.via == "sprayer");
}

TEST_CASE("the example configuration loads without error") {
  std::filesystem::path path = example_path();
  conf::LoadResult result = conf::load_file(path.string());
  INFO(all_errors(result));
  REQUIRE(result.ok());
  const conf::Config& c = *result.config;
  CHECK(c.source == path.string());
  CHECK(c.servers.size() == 3);
  CHECK(c.timeouts.upstream_response >= 35min);
}

TEST_CASE("ConfigError::to_string leaves out unknown parts") {
  CHECK(conf::ConfigError{"a.yaml", 3, 7, "timeouts.drain", "bad"}.to_string() == "a.yaml:3:7: timeouts.drain: bad");
  CHECK(conf::ConfigError{"a.yaml", 3, 0, "workers", "bad"}.to_string() == "a.yaml:3: workers: bad");
  CHECK(conf::ConfigError{"a.yaml", 0, 0, "", "cannot open"}.to_string() == "a.yaml: cannot open");
  CHECK(conf::ConfigError{"a.yaml", 2, 1, "", "invalid YAML"}.to_string() == "a.yaml:2:1: invalid YAML");
}

TEST_CASE("Endpoint::to_string brackets IPv6 hosts") {
  CHECK(conf::Endpoint{"127.0.0.1", 80}.to_string() == "127.0.0.1:80");
  CHECK(conf::Endpoint{"::1", 8080}.to_string() == "[::1]:8080");
  CHECK(conf::Endpoint{"pool1.example.com", 443}.to_string() == "pool1.example.com:443");
}

TEST_CASE("parse_duration") {
  conf::Duration d{};
  SUBCASE("units and combinations") {
    CHECK(conf::parse_duration("500ms", d));
    CHECK(d == 500ms);
    CHECK(conf::parse_duration("10s", d));
    CHECK(d == 10s);
    CHECK(conf::parse_duration("35m", d));
    CHECK(d == 35min);
    CHECK(conf::parse_duration("2h", d));
    CHECK(d == 2h);
    CHECK(conf::parse_duration("1h30m", d));
    CHECK(d == 90min);
    CHECK(conf::parse_duration("1h2m3s4ms", d));
    CHECK(d == 1h + 2min + 3s + 4ms);
    CHECK(conf::parse_duration("90s", d));  // a unit need not stay below the next one up
    CHECK(d == 90s);
  }
  SUBCASE("zero is a valid duration; the loader decides where it is allowed") {
    CHECK(conf::parse_duration("0s", d));
    CHECK(d == 0ms);
    CHECK(conf::parse_duration("0ms", d));
    CHECK(d == 0ms);
  }
  SUBCASE("rejected forms leave the output alone") {
    d = 7ms;
    for (std::string_view bad : {"", "10", "0", "-1s", "10x", "s", "1.5s", "1h30", "30m1h", "1m1m", "1s500ms500ms",
                                 " 1s", "1s ", "1 s", "1S", "1H", "+1s", "1d", "1us", "ms"}) {
      INFO(bad);
      CHECK_FALSE(conf::parse_duration(bad, d));
    }
    CHECK(d == 7ms);
  }
  SUBCASE("overflow") {
    CHECK(conf::parse_duration("9223372036854775807ms", d));
    CHECK(d.count() == 9223372036854775807LL);
    CHECK_FALSE(conf::parse_duration("9223372036854775808ms", d));
    CHECK_FALSE(conf::parse_duration("99999999999999999999999s", d));
    CHECK(conf::parse_duration("2562047788015h", d));        // the largest whole hour below 2^63 ms
    CHECK_FALSE(conf::parse_duration("2562047788016h", d));
    CHECK_FALSE(conf::parse_duration("2562047788015h13m", d));  // each part fits, the sum does not
  }
}

TEST_CASE("parse_size") {
  uint64_t s = 0;
  SUBCASE("bytes and units") {
    CHECK(conf::parse_size("0", s));
    CHECK(s == 0);
    CHECK(conf::parse_size("512", s));
    CHECK(s == 512);
    CHECK(conf::parse_size("512B", s));
    CHECK(s == 512);
    CHECK(conf::parse_size("32KiB", s));
    CHECK(s == 32768);
    CHECK(conf::parse_size("4MiB", s));
    CHECK(s == 4u << 20);
    CHECK(conf::parse_size("1GiB", s));
    CHECK(s == 1u << 30);
    CHECK(conf::parse_size("2KB", s));
    CHECK(s == 2000);
    CHECK(conf::parse_size("3MB", s));
    CHECK(s == 3'000'000);
    CHECK(conf::parse_size("5GB", s));
    CHECK(s == 5'000'000'000ULL);
  }
  SUBCASE("rejected forms") {
    s = 7;
    for (std::string_view bad : {"", "-1", "10x", "KiB", "32kib", "32K", "32 KiB", "1.5KiB", " 1", "1 ", "+1",
                                 "0x10", "1KiB2", "1e3"}) {
      INFO(bad);
      CHECK_FALSE(conf::parse_size(bad, s));
    }
    CHECK(s == 7);
  }
  SUBCASE("overflow") {
    CHECK(conf::parse_size("18446744073709551615", s));
    CHECK(s == UINT64_MAX);
    CHECK_FALSE(conf::parse_size("18446744073709551616", s));
    CHECK(conf::parse_size("17179869183GiB", s));
    CHECK_FALSE(conf::parse_size("17179869184GiB", s));  // exactly 2^64
  }
}

TEST_CASE("parse_endpoint") {
  conf::Endpoint e;
  SUBCASE("IPv4, IPv6 and names") {
    REQUIRE(conf::parse_endpoint("127.0.0.1:8080", e));
    CHECK(e.host == "127.0.0.1");
    CHECK(e.port == 8080);
    REQUIRE(conf::parse_endpoint("[::1]:8080", e));
    CHECK(e.host == "::1");
    CHECK(e.port == 8080);
    REQUIRE(conf::parse_endpoint("[2001:db8::1]:443", e));
    CHECK(e.host == "2001:db8::1");
    CHECK(e.to_string() == "[2001:db8::1]:443");
    REQUIRE(conf::parse_endpoint("[::ffff:192.0.2.1]:80", e));
    CHECK(e.host == "::ffff:192.0.2.1");
    REQUIRE(conf::parse_endpoint("[::]:443", e));
    CHECK(e.host == "::");
    REQUIRE(conf::parse_endpoint("host.example:443", e));
    CHECK(e.host == "host.example");
    CHECK(e.port == 443);
    REQUIRE(conf::parse_endpoint("localhost:65535", e));
    CHECK(e.port == 65535);
    REQUIRE(conf::parse_endpoint("trav_1.corp.example.:80", e));
    CHECK(e.host == "trav_1.corp.example.");
  }
  SUBCASE("port 0 parses; the loader rejects it where a real port is needed") {
    REQUIRE(conf::parse_endpoint("127.0.0.1:0", e));
    CHECK(e.port == 0);
  }
  SUBCASE("rejected forms") {
    for (std::string_view bad :
         {"", "127.0.0.1", "127.0.0.1:", ":8080", "127.0.0.1:65536", "127.0.0.1:99999999999", "127.0.0.1:-1",
          "127.0.0.1:http", "127.0.0.1: 80", "::1:8080", "[::1]", "[::1]8080", "[::1:8080", "[]:80",
          "[127.0.0.1]:80", "[fe80::1%eth0]:80", "256.0.0.1:80", "1.2.3:80", "01.2.3.4:80", "-bad.example:80",
          "bad-.example:80", "a..b:80", "bad host:80", "123:80", "host.example.123:80", "*:80"}) {
      INFO(bad);
      CHECK_FALSE(conf::parse_endpoint(bad, e));
    }
  }
  SUBCASE("a NUL inside the host does not cut it short") {
    using namespace std::string_view_literals;
    CHECK_FALSE(conf::parse_endpoint("[::1\0x]:80"sv, e));
    CHECK_FALSE(conf::parse_endpoint("127.0.0.1\0x:80"sv, e));
  }
}

TEST_CASE("unknown keys are rejected, with a suggestion when one is close") {
  SUBCASE("a typo in a section") {
    expect_error_with("timeouts:\n  clinet_idle: 5s\n", 8, 3, "timeouts.clinet_idle",
                      "unknown key; did you mean \"client_idle\"?");
  }
  SUBCASE("a typo in a list element") {
    expect_error_with("    wieght: 2\n", 7, 5, "servers[0].wieght", "unknown key; did you mean \"weight\"?");
  }
  SUBCASE("nothing close: the known keys are listed") {
    expect_error_with("log:\n  verbosity: 3\n", 8, 3, "log.verbosity", "unknown key; expected one of: level");
  }
  SUBCASE("a typo at the top level also leaves the real key missing") {
    conf::LoadResult result = load(
        "listener:\n"
        "  - name: http\n"
        "    address: 127.0.0.1:8080\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: 127.0.0.1:9001\n");
    INFO(all_errors(result));
    REQUIRE(result.errors.size() == 2);
    check_error(result.errors[0], 1, 1, "listener", "unknown key; did you mean \"listeners\"?");
    check_error(result.errors[1], 1, 1, "listeners", "required key is missing");
  }
}

TEST_CASE("a key written twice is an error") {
  expect_error_with("workers: 2\nworkers: 4\n", 8, 1, "workers", "duplicate key (first at line 7)");
}

TEST_CASE("wrong types are rejected") {
  SUBCASE("a map where an integer is expected") {
    expect_error_with("workers:\n  count: 2\n", 8, 3, "workers", "expected an integer, found a map");
  }
  SUBCASE("text where an integer is expected") {
    expect_error_with("workers: abc\n", 7, 10, "workers", "expected an integer, found \"abc\"");
  }
  SUBCASE("a quoted number is a string") {
    expect_error_with("workers: \"4\"\n", 7, 10, "workers", "expected an integer, found the quoted string \"4\"");
  }
  SUBCASE("a float is not an integer") {
    expect_error_with("workers: 1.5\n", 7, 10, "workers", "expected an integer, found \"1.5\"");
  }
  SUBCASE("YAML 1.1 booleans are refused") {
    expect_error_with("http:\n  x_forwarded: yes\n", 8, 16, "http.x_forwarded",
                      "expected true or false, found \"yes\"");
    expect_error_with("admin:\n  enabled: no\n", 8, 12, "admin.enabled", "expected true or false, found \"no\"");
    expect_error_with("admin:\n  enabled: \"true\"\n", 8, 12, "admin.enabled",
                      "expected true or false, found the quoted string \"true\"");
  }
  SUBCASE("a list where a section is expected") {
    expect_error_with("timeouts:\n  - 10s\n", 8, 3, "timeouts", "expected a map, found a list");
  }
  SUBCASE("a scalar where the list of listeners is expected") {
    expect_error(
        "listeners: 127.0.0.1:8080\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: 127.0.0.1:9001\n",
        1, 12, "listeners", "expected a list of listeners, found \"127.0.0.1:8080\"");
  }
  SUBCASE("a list element that is not a map") {
    expect_error(
        "listeners:\n"
        "  - 127.0.0.1:8080\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: 127.0.0.1:9001\n",
        2, 5, "listeners[0]", "expected a map, found \"127.0.0.1:8080\"");
  }
  SUBCASE("an empty value is reported at its key") {
    expect_error_with("http:\n  via:\nlog:\n  level: info\n", 8, 3, "http.via",
                      "missing value, expected a string (write \"\" for an empty one)");
    expect_error_with("workers:\n", 7, 1, "workers", "missing value, expected an integer");
    expect_error_with("timeouts:\n  drain: ~\n", 8, 3, "timeouts.drain",
                      "missing value, expected a duration such as \"30s\"");
  }
  SUBCASE("a list where a string is expected") {
    expect_error_with("http:\n  via: [a, b]\n", 8, 8, "http.via", "expected a string, found a list");
  }
  SUBCASE("the top level is not a map") {
    expect_error("- a\n- b\n", 1, 1, "", "expected a map of settings at the top level, found a list");
  }
  SUBCASE("a key that is not a string") {
    expect_error_with("[a, b]: 1\n", 7, 1, "", "a key must be a plain string, found a list");
  }
}

TEST_CASE("out-of-range integers name the range") {
  expect_error_with("workers: 257\n", 7, 10, "workers", "must be between 0 and 256");
  expect_error_with("workers: -1\n", 7, 10, "workers", "must be between 0 and 256");
  expect_error_with("workers: 99999999999999999999999\n", 7, 10, "workers", "must be between 0 and 256");
  expect_error_with("limits:\n  max_connections: 0\n", 8, 20, "limits.max_connections",
                    "must be between 1 and 10000000");
  expect_error_with("limits:\n  max_header_count: 10001\n", 8, 21, "limits.max_header_count",
                    "must be between 1 and 10000");
  expect_error_with("upstream:\n  max_idle_per_server: 100001\n", 8, 24, "upstream.max_idle_per_server",
                    "must be between 0 and 100000");
  expect_error_with("upstream:\n  max_requests_per_connection: 4294967296\n", 8, 32,
                    "upstream.max_requests_per_connection", "must be between 0 and 4294967295");
  expect_error(
      "listeners:\n"
      "  - name: http\n"
      "    address: 127.0.0.1:8080\n"
      "    backlog: 0\n"
      "servers:\n"
      "  - id: pool1\n"
      "    address: 127.0.0.1:9001\n",
      4, 14, "listeners[0].backlog", "must be between 1 and 65535");
  conf::LoadResult result = load(
      "listeners:\n"
      "  - name: http\n"
      "    address: 127.0.0.1:8080\n"
      "servers:\n"
      "  - id: pool1\n"
      "    address: 127.0.0.1:9001\n"
      "    weight: 0\n");
  check_error(single_error(result), 7, 13, "servers[0].weight", "must be between 1 and 1000");
  expect_error_with("    weight: 1001\n", 7, 13, "servers[0].weight", "must be between 1 and 1000");
}

TEST_CASE("the extremes of each range are accepted") {
  conf::LoadResult result = load_with(
      "workers: 256\n"
      "limits:\n"
      "  max_connections: 10000000\n"
      "  max_header_bytes: 1MiB\n"
      "  max_header_count: 10000\n"
      "  max_uri_length: 256\n"
      "upstream:\n"
      "  max_idle_per_server: 100000\n"
      "  max_requests_per_connection: 4294967295\n"
      "http:\n"
      "  buffer_high_watermark: 1GiB\n"
      "  buffer_low_watermark: 0\n"
      "timeouts:\n"
      "  upstream_response: 1s\n"
      "  client_header: 1ms\n"
      "  drain: 24h\n");
  INFO(all_errors(result));
  REQUIRE(result.ok());
  CHECK(result.config->limits.max_header_bytes == 1u << 20);
  CHECK(result.config->upstream.max_requests_per_connection == 4294967295u);
  CHECK(result.config->http.buffer_high_watermark == 1u << 30);
  CHECK(result.config->timeouts.drain == 24h);
}

TEST_CASE("durations in the file") {
  SUBCASE("a bare number says units are required") {
    expect_error_with("timeouts:\n  client_idle: 10\n", 8, 16, "timeouts.client_idle",
                      "invalid duration \"10\": units are required, e.g. \"10s\" (ms, s, m or h)");
  }
  SUBCASE("zero is not a timeout") {
    expect_error_with("timeouts:\n  drain: 0s\n", 8, 10, "timeouts.drain", "must be between 1ms and 24h");
  }
  SUBCASE("negative") {
    expect_error_with("timeouts:\n  client_body: -1s\n", 8, 16, "timeouts.client_body",
                      "invalid duration \"-1s\": a duration cannot be negative");
  }
  SUBCASE("unknown unit") {
    expect_error_with("timeouts:\n  client_send: 10x\n", 8, 16, "timeouts.client_send",
                      "invalid duration \"10x\": unknown unit \"x\" (use ms, s, m or h)");
  }
  SUBCASE("units out of order") {
    expect_error_with("timeouts:\n  upstream_idle: 30m1h\n", 8, 18, "timeouts.upstream_idle",
                      "invalid duration \"30m1h\": each unit may appear once, largest first, e.g. \"1h30m\"");
  }
  SUBCASE("overflow") {
    expect_error_with("timeouts:\n  upstream_connect: 99999999999999999999s\n", 8, 21, "timeouts.upstream_connect",
                      "invalid duration \"99999999999999999999s\": duration is too large");
  }
  SUBCASE("above the maximum") {
    expect_error_with("timeouts:\n  client_idle: 24h1ms\n", 8, 16, "timeouts.client_idle",
                      "must be between 1ms and 24h");
  }
  SUBCASE("upstream_response must be at least a second") {
    expect_error_with("timeouts:\n  upstream_response: 999ms\n", 8, 22, "timeouts.upstream_response",
                      "must be between 1s and 24h");
  }
  SUBCASE("a quoted duration is fine") {
    conf::LoadResult result = load_with("timeouts:\n  client_idle: \"1m30s\"\n");
    REQUIRE(result.ok());
    CHECK(result.config->timeouts.client_idle == 90s);
  }
}

TEST_CASE("sizes in the file") {
  SUBCASE("plain bytes") {
    conf::LoadResult result = load_with("limits:\n  max_header_bytes: 4096\n");
    REQUIRE(result.ok());
    CHECK(result.config->limits.max_header_bytes == 4096);
  }
  SUBCASE("below the minimum") {
    expect_error_with("limits:\n  max_header_bytes: 1000\n", 8, 21, "limits.max_header_bytes",
                      "must be between 1KiB and 1MiB");
    expect_error_with("limits:\n  max_uri_length: 255\n", 8, 19, "limits.max_uri_length",
                      "must be between 256B and 1MiB");
  }
  SUBCASE("above the maximum, including beyond 32 bits") {
    expect_error_with("limits:\n  max_header_bytes: 2MiB\n", 8, 21, "limits.max_header_bytes",
                      "must be between 1KiB and 1MiB");
    expect_error_with("http:\n  buffer_high_watermark: 4GiB\n", 8, 26, "http.buffer_high_watermark",
                      "must be between 1KiB and 1GiB");
  }
  SUBCASE("bad forms") {
    expect_error_with("limits:\n  max_uri_length: 8 KiB\n", 8, 19, "limits.max_uri_length",
                      "invalid size \"8 KiB\": unknown unit \" KiB\" (use B, KiB, MiB, GiB, KB, MB or GB)");
    expect_error_with("limits:\n  max_uri_length: big\n", 8, 19, "limits.max_uri_length",
                      "invalid size \"big\": expected a number of bytes, optionally followed by a unit "
                      "(B, KiB, MiB, GiB, KB, MB, GB)");
    expect_error_with("limits:\n  max_uri_length: -1\n", 8, 19, "limits.max_uri_length",
                      "invalid size \"-1\": a size cannot be negative");
    expect_error_with("limits:\n  max_uri_length: 99999999999999999999\n", 8, 19, "limits.max_uri_length",
                      "invalid size \"99999999999999999999\": size is too large");
  }
}

TEST_CASE("addresses in the file") {
  SUBCASE("a listener needs a numeric address") {
    expect_error(
        "listeners:\n"
        "  - name: http\n"
        "    address: localhost:8080\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: 127.0.0.1:9001\n",
        3, 14, "listeners[0].address",
        "must be a numeric IP address and port such as \"0.0.0.0:443\" or \"[::]:443\" "
        "(a host name is not resolved for a listening address)");
  }
  SUBCASE("port 0") {
    expect_error(
        "listeners:\n"
        "  - name: http\n"
        "    address: 127.0.0.1:0\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: 127.0.0.1:9001\n",
        3, 14, "listeners[0].address", "port must be between 1 and 65535");
  }
  SUBCASE("missing port") {
    expect_error_with("admin:\n  address: 127.0.0.1\n", 8, 12, "admin.address",
                      "invalid address \"127.0.0.1\": missing port, expected \"host:port\"");
  }
  SUBCASE("IPv6 without brackets") {
    expect_error_with("admin:\n  address: \"::1:9100\"\n", 8, 12, "admin.address",
                      "invalid address \"::1:9100\": an IPv6 address must be written in brackets, e.g. "
                      "\"[::1]:8080\"");
  }
  SUBCASE("bad server address") {
    expect_error(
        "listeners:\n"
        "  - name: http\n"
        "    address: 127.0.0.1:8080\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: 300.1.1.1:80\n",
        6, 14, "servers[0].address", "invalid address \"300.1.1.1:80\": \"300.1.1.1\" is not a valid IPv4 address");
  }
  SUBCASE("IPv6 listeners") {
    conf::LoadResult result = load(
        "listeners:\n"
        "  - name: v6\n"
        "    address: \"[::]:8080\"\n"
        "  - name: v6-loopback\n"
        "    address: \"[::1]:8081\"\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: \"[::1]:9001\"\n");
    INFO(all_errors(result));
    REQUIRE(result.ok());
    CHECK(result.config->listeners[0].address.host == "::");
    CHECK(result.config->listeners[1].address.to_string() == "[::1]:8081");
  }
}

TEST_CASE("names and ids") {
  SUBCASE("characters") {
    expect_error(
        "listeners:\n"
        "  - name: my listener\n"
        "    address: 127.0.0.1:8080\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: 127.0.0.1:9001\n",
        2, 11, "listeners[0].name", "may contain only letters, digits, \"_\", \".\" and \"-\"");
  }
  SUBCASE("empty") {
    expect_error(
        "listeners:\n"
        "  - name: http\n"
        "    address: 127.0.0.1:8080\n"
        "servers:\n"
        "  - id: \"\"\n"
        "    address: 127.0.0.1:9001\n",
        5, 9, "servers[0].id", "must not be empty");
  }
  SUBCASE("64 characters at most") {
    std::string id64(64, 'a');
    std::string head = "listeners:\n  - name: http\n    address: 127.0.0.1:8080\nservers:\n  - id: ";
    std::string tail = "\n    address: 127.0.0.1:9001\n";
    CHECK(load(head + id64 + tail).ok());
    expect_error(head + id64 + "b" + tail, 5, 9, "servers[0].id", "must be at most 64 characters");
  }
  SUBCASE("a required key is missing") {
    expect_error(
        "listeners:\n"
        "  - name: http\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: 127.0.0.1:9001\n",
        2, 5, "listeners[0].address", "required key is missing");
  }
}

TEST_CASE("duplicates across list elements") {
  SUBCASE("listener names") {
    expect_error(
        "listeners:\n"
        "  - name: http\n"
        "    address: 127.0.0.1:8080\n"
        "  - name: http\n"
        "    address: 127.0.0.1:8081\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: 127.0.0.1:9001\n",
        4, 11, "listeners[1].name", "duplicate listener name \"http\" (first at line 2)");
  }
  SUBCASE("server ids") {
    expect_error_with(
        "  - id: pool2\n"
        "    address: 127.0.0.1:9002\n"
        "  - id: pool1\n"
        "    address: 127.0.0.1:9003\n",
        9, 9, "servers[2].id", "duplicate server id \"pool1\" (first at line 5)");
  }
  SUBCASE("ids differing in case are distinct") {
    CHECK(load_with("  - id: POOL1\n    address: 127.0.0.1:9002\n").ok());
  }
  SUBCASE("two listeners on one address, IPv6 written two ways") {
    expect_error(
        "listeners:\n"
        "  - name: a\n"
        "    address: \"[::1]:8080\"\n"
        "  - name: b\n"
        "    address: \"[0:0:0:0:0:0:0:1]:8080\"\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: 127.0.0.1:9001\n",
        5, 14, "listeners[1].address", "another listener already uses [0:0:0:0:0:0:0:1]:8080 (line 3)");
  }
  SUBCASE("same host, other port is fine") {
    CHECK(load(
              "listeners:\n"
              "  - name: a\n"
              "    address: 127.0.0.1:8080\n"
              "  - name: b\n"
              "    address: 127.0.0.1:8081\n"
              "servers:\n"
              "  - id: pool1\n"
              "    address: 127.0.0.1:9001\n")
              .ok());
  }
  SUBCASE("a listener on the default admin address") {
    expect_error(
        "listeners:\n"
        "  - name: http\n"
        "    address: 127.0.0.1:9100\n"
        "servers:\n"
        "  - id: pool1\n"
        "    address: 127.0.0.1:9001\n",
        3, 14, "listeners[0].address",
        "clashes with the admin listener (admin.address defaults to 127.0.0.1:9100); change one of them or set "
        "admin.enabled: false");
  }
  SUBCASE("an explicit admin address on a listener's") {
    expect_error_with("admin:\n  address: 127.0.0.1:8080\n", 8, 12, "admin.address",
                      "the listener at line 3 already uses 127.0.0.1:8080");
  }
  SUBCASE("a disabled admin listener does not clash") {
    CHECK(load_with("admin:\n  enabled: false\n  address: 127.0.0.1:8080\n").ok());
  }
}

TEST_CASE("http.via and admin.token") {
  expect_error_with("http:\n  via: \"my proxy\"\n", 8, 8, "http.via",
                    "must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~), or \"\" for no Via header");
  expect_error_with("admin:\n  token: \"two words\"\n", 8, 10, "admin.token",
                    "must be printable ASCII without spaces (it is sent as an HTTP bearer token)");
  CHECK(load_with("http:\n  via: edge-1.dc2\n").ok());
}

TEST_CASE("log.level") {
  expect_error_with("log:\n  level: inf\n", 8, 10, "log.level",
                    "expected one of: debug, info, warn, error; did you mean \"info\"?");
  expect_error_with("log:\n  level: verbose\n", 8, 10, "log.level", "expected one of: debug, info, warn, error");
  expect_error_with("log:\n  level: INFO\n", 8, 10, "log.level",
                    "expected one of: debug, info, warn, error");  // 4 edits away: no suggestion
}

TEST_CASE("access_log") {
  conf::LoadResult defaults = load(minimal);
  REQUIRE(defaults.ok());
  CHECK_FALSE(defaults.config->access_log.enabled);
  CHECK(defaults.config->access_log.path == "stderr");
  CHECK(defaults.config->access_log.format == conf::AccessLogFormat::json);

  conf::LoadResult set = load_with("access_log:\n  enabled: true\n  path: /var/log/sprayer/access.log\n"
                                   "  format: combined\n  max_queued_bytes: 1MiB\n");
  INFO(all_errors(set));
  REQUIRE(set.ok());
  CHECK(set.config->access_log.enabled);
  CHECK(set.config->access_log.path == "/var/log/sprayer/access.log");
  CHECK(set.config->access_log.format == conf::AccessLogFormat::combined);
  CHECK(set.config->access_log.max_queued_bytes == (1u << 20));

  expect_error_with("access_log:\n  format: clf\n", 8, 11, "access_log.format", "expected one of: json, combined");
  expect_error_with("access_log:\n  path: \"\"\n", 8, 9, "access_log.path", "must be a file name or \"stderr\"");
  expect_error_with("access_log:\n  rotate: daily\n", 8, 3, "access_log.rotate",
                    "unknown key; expected one of: enabled, path, format, max_queued_bytes, mask_query");
}

TEST_CASE("access_log.mask_query") {
  conf::LoadResult defaults = load(minimal);
  REQUIRE(defaults.ok());
  CHECK(defaults.config->access_log.mask_query == std::vector<std::string>{"password", "pwd"});
  conf::LoadResult set = load_with("access_log:\n  mask_query: [secret, token]\n");
  INFO(all_errors(set));
  REQUIRE(set.ok());
  CHECK(set.config->access_log.mask_query == std::vector<std::string>{"secret", "token"});
  conf::LoadResult none = load_with("access_log:\n  mask_query: []\n");
  REQUIRE(none.ok());
  CHECK(none.config->access_log.mask_query.empty());
  expect_error_with("access_log:\n  mask_query: [\"a=b\"]\n", 8, 15, "access_log.mask_query",
                    "each entry must be a query parameter name (no '=', '&', '#' or space)");
  expect_error_with("access_log:\n  mask_query: password\n", 8, 15, "access_log.mask_query",
                    "expected a list of strings, found \"password\"");
}

TEST_CASE("affinity.extractors") {
  SUBCASE("an empty list turns user extraction off") {
    conf::LoadResult result = load_with("affinity:\n  extractors: []\n");
    REQUIRE(result.ok());
    CHECK(result.config->affinity.extractors.empty());
  }
  SUBCASE("an unknown kind, with a suggestion") {
    expect_error_with("affinity:\n  extractors:\n    - kind: basic-auth\n", 9, 13, "affinity.extractors[0].kind",
                      "expected one of: activesync_query, activesync_base64, basic_auth, traveler_url, header, "
                      "cookie, query; did you mean \"basic_auth\"?");
    expect_error_with("affinity:\n  extractors:\n    - travelerurl\n", 9, 7, "affinity.extractors[0].kind",
                      "expected one of: activesync_query, activesync_base64, basic_auth, traveler_url, header, "
                      "cookie, query; did you mean \"traveler_url\"?");
  }
  SUBCASE("header, cookie and query need a name") {
    expect_error_with("affinity:\n  extractors:\n    - header\n", 9, 7, "affinity.extractors[0].name",
                      "required for kind header");
    expect_error_with("affinity:\n  extractors:\n    - kind: cookie\n      name: \"\"\n", 10, 13,
                      "affinity.extractors[0].name", "must not be empty for kind cookie");
  }
  SUBCASE("the other kinds take none") {
    expect_error_with("affinity:\n  extractors:\n    - kind: basic_auth\n      name: X\n", 10, 13,
                      "affinity.extractors[0].name", "only header, cookie and query extractors take a name");
  }
  SUBCASE("a header name is a token") {
    expect_error_with("affinity:\n  extractors:\n    - kind: header\n      name: \"X User\"\n", 10, 13,
                      "affinity.extractors[0].name", "must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)");
  }
  SUBCASE("a step without kind") {
    expect_error_with("affinity:\n  extractors:\n    - name: X-User\n", 9, 7, "affinity.extractors[0].kind",
                      "required key is missing");
  }
}

TEST_CASE("affinity.map") {
  SUBCASE("an alias that normalisation would change can never match") {
    expect_error_with("affinity:\n  map:\n    JDoe: jane doe\n", 9, 5, "affinity.map.JDoe",
                      "this alias can never match: lower_case is on, so users have no upper-case letters; write "
                      "the alias in lower case");
    expect_error_with("affinity:\n  map:\n    jdoe@acme.example: jane doe\n", 9, 5, "affinity.map.jdoe@acme.example",
                      "this alias can never match: strip_domain is on, so users have no domain; write the alias "
                      "without it");
    expect_error_with("affinity:\n  map:\n    \"cn=jane doe/o=acme\": jane doe\n", 9, 5,
                      "affinity.map.cn=jane doe/o=acme",
                      "this alias can never match: notes_canonical is on, so \"CN=\" names are reduced to their "
                      "common name");
    expect_error_with("affinity:\n  map:\n    \" jdoe\": jane doe\n", 9, 5, "affinity.map. jdoe",
                      "this alias can never match: users are trimmed of surrounding white space");
  }
  SUBCASE("the rule that forbids it may be turned off after the map") {
    conf::LoadResult result = load_with("affinity:\n  map:\n    JDoe: jane doe\n  lower_case: false\n");
    INFO(all_errors(result));
    CHECK(result.ok());
  }
  SUBCASE("duplicate alias, empty user key, not a map") {
    expect_error_with("affinity:\n  map:\n    jdoe: jane\n    jdoe: john\n", 10, 5, "affinity.map.jdoe",
                      "duplicate alias (first at line 9)");
    expect_error_with("affinity:\n  map:\n    jdoe: \"\"\n", 9, 11, "affinity.map.jdoe",
                      "the user key must not be empty");
    expect_error_with("affinity:\n  map: [jdoe]\n", 8, 8, "affinity.map",
                      "expected a map of alias: user key, found a list");
  }
  SUBCASE("max_user_length") {
    expect_error_with("affinity:\n  max_user_length: 0\n", 8, 20, "affinity.max_user_length",
                      "must be between 1 and 4096");
  }
}

TEST_CASE("ownership") {
  SUBCASE("sqlite") {
    conf::LoadResult result = load_with("ownership:\n  source: sqlite\n  sqlite_path: /var/lib/pool.db\n");
    REQUIRE(result.ok());
    CHECK(result.config->ownership.source == conf::OwnershipSourceKind::sqlite);
  }
  SUBCASE("a source needs its database") {
    expect_error_with("ownership:\n  source: sqlite\n", 8, 11, "ownership.sqlite_path",
                      "required when source is sqlite");
    expect_error_with("ownership:\n  source: postgresql\n  postgresql: \"\"\n", 9, 15, "ownership.postgresql",
                      "must not be empty when source is postgresql");
  }
  SUBCASE("mariadb and odbc, with a change detection mode and a heartbeat bound") {
    conf::LoadResult result = load_with(
        "ownership:\n  source: mariadb\n  mariadb:\n    host: db1\n    port: 3307\n    user: ro\n"
        "    database: traveler\n    tls: true\n  change_detection: watermark\n  watermark_overlap: 3s\n"
        "  heartbeat_max_age: 30s\n");
    REQUIRE(result.ok());
    const conf::OwnershipConfig& o = result.config->ownership;
    CHECK(o.source == conf::OwnershipSourceKind::mariadb);
    CHECK(o.mariadb.host == "db1");
    CHECK(o.mariadb.port == 3307);
    CHECK(o.mariadb.tls);
    CHECK(o.change_detection == conf::ChangeDetectionMode::watermark);
    CHECK(o.watermark_overlap == std::chrono::seconds(3));
    CHECK(o.heartbeat_max_age == std::chrono::seconds(30));
    result = load_with("ownership:\n  source: odbc\n  odbc:\n    connection: \"DSN=pool\"\n  change_detection: full_scan\n");
    REQUIRE(result.ok());
    CHECK(result.config->ownership.odbc.connection == "DSN=pool");
    CHECK(result.config->ownership.change_detection == conf::ChangeDetectionMode::full_scan);
  }
  SUBCASE("mariadb and odbc need their settings; a password file must be readable") {
    expect_error_with("ownership:\n  source: mariadb\n", 8, 11, "ownership.mariadb", "required when source is mariadb");
    expect_error_with("ownership:\n  source: odbc\n  odbc:\n    password_file: /dev/null\n", 10, 5,
                      "ownership.odbc.connection", "required key is missing");
    expect_error_with("ownership:\n  source: mariadb\n  mariadb:\n    user: ro\n    database: t\n"
                      "    password_file: /nonexistent/pw\n",
                      12, 20, "ownership.mariadb.password_file", "cannot read /nonexistent/pw: No such file or directory");
    expect_error_with("ownership:\n  change_detection: timestamps\n", 8, 21, "ownership.change_detection",
                      "expected one of: epoch, watermark, full_scan");
  }
  SUBCASE("an unknown source") {
    expect_error_with("ownership:\n  source: postgres\n", 8, 11, "ownership.source",
                      "expected one of: none, sqlite, postgresql, mariadb, odbc; did you mean \"postgresql\"?");
  }
  SUBCASE("intervals") {
    expect_error_with("ownership:\n  poll_interval: 0s\n", 8, 18, "ownership.poll_interval",
                      "must be between 1ms and 24h");
    expect_error_with("ownership:\n  reconnect_min: 1m\n", 8, 18, "ownership.reconnect_min",
                      "must not exceed reconnect_max (30s)");
    expect_error_with("ownership:\n  reconnect_max: 100ms\n", 8, 18, "ownership.reconnect_max",
                      "must not be below reconnect_min (500ms)");
  }
}

TEST_CASE("buffer watermarks: low must stay below high") {
  SUBCASE("the low one is written") {
    expect_error_with("http:\n  buffer_high_watermark: 64KiB\n  buffer_low_watermark: 64KiB\n", 9, 25,
                      "http.buffer_low_watermark", "must be less than buffer_high_watermark (64KiB)");
  }
  SUBCASE("only the high one is written, below the default low") {
    expect_error_with("http:\n  buffer_high_watermark: 32KiB\n", 8, 26, "http.buffer_high_watermark",
                      "must be greater than buffer_low_watermark (64KiB)");
  }
  SUBCASE("no cross check when one of them is already wrong") {
    expect_error_with("http:\n  buffer_high_watermark: 10x\n  buffer_low_watermark: 1MiB\n", 8, 26,
                      "http.buffer_high_watermark",
                      "invalid size \"10x\": unknown unit \"x\" (use B, KiB, MiB, GiB, KB, MB or GB)");
  }
}

TEST_CASE("lists must not be empty") {
  expect_error(
      "listeners: []\n"
      "servers:\n"
      "  - id: pool1\n"
      "    address: 127.0.0.1:9001\n",
      1, 12, "listeners", "at least one listener is required");
  expect_error(
      "listeners:\n"
      "  - name: http\n"
      "    address: 127.0.0.1:8080\n"
      "servers:\n",
      4, 1, "servers", "at least one server is required");
}

TEST_CASE("an empty file reports both required lists") {
  conf::LoadResult result = load("# nothing here\n");
  INFO(all_errors(result));
  REQUIRE(result.errors.size() == 2);
  check_error(result.errors[0], 1, 1, "listeners", "required key is missing");
  check_error(result.errors[1], 1, 1, "servers", "required key is missing");
}

TEST_CASE("YAML syntax errors carry a 1-based position") {
  expect_error(
      "listeners:\n"
      "  - name: http\n"
      "    address: [127.0.0.1:8080\n"
      "servers: []\n",
      4, 8, "", "invalid YAML: end of sequence flow not found");
  conf::ConfigError error = single_error(load("workers: 2\n\tlisteners: []\n"));
  CHECK(error.line == 2);
  CHECK(error.column == 1);
  CHECK(error.message.rfind("invalid YAML: ", 0) == 0);
}

TEST_CASE("a stray comma is a syntax error, not an endless parse (yaml-cpp 0.7 LoadAll bug)") {
  expect_error(",\n", 1, 1, "", "invalid YAML: unexpected \",\"");
  expect_error("workers: 2\n, listeners\n", 2, 1, "", "invalid YAML: end of map not found");
  expect_error("- a\n, b\n", 2, 1, "", "invalid YAML: unexpected \",\"");
  expect_error("!x ,\n", 1, 4, "", "invalid YAML: unexpected \",\"");
  expect_error("&a ,\n", 1, 4, "", "invalid YAML: unexpected \",\"");
  expect_error_with("--- ,\n", 7, 5, "", "invalid YAML: unexpected \",\"");
}

TEST_CASE("a second YAML document is refused") {
  expect_error_with("---\nworkers: 2\n", 7, 1, "", "a configuration file holds one YAML document; found a second one");
}

TEST_CASE("all errors are collected in document order") {
  conf::LoadResult result = load(
      "workers: many\n"                  // 1
      "listeners:\n"                     // 2
      "  - name: http\n"                 // 3
      "    address: 127.0.0.1:80800\n"   // 4
      "servers:\n"                       // 5
      "  - id: pool1\n"                  // 6
      "    address: 127.0.0.1:9001\n"    // 7
      "    wieght: 2\n"                  // 8
      "timeouts:\n"                      // 9
      "  client_idle: 75\n"              // 10
      "http:\n"                          // 11
      "  preserve_host: yes\n");         // 12
  INFO(all_errors(result));
  REQUIRE_FALSE(result.ok());
  REQUIRE(result.errors.size() == 5);
  CHECK(result.errors[0].to_string() == "test.yaml:1:10: workers: expected an integer, found \"many\"");
  CHECK(result.errors[1].to_string() ==
        "test.yaml:4:14: listeners[0].address: invalid address \"127.0.0.1:80800\": port must be between 1 and "
        "65535");
  CHECK(result.errors[2].to_string() == "test.yaml:8:5: servers[0].wieght: unknown key; did you mean \"weight\"?");
  CHECK(result.errors[3].key == "timeouts.client_idle");
  CHECK(result.errors[3].line == 10);
  CHECK(result.errors[4].to_string() ==
        "test.yaml:12:18: http.preserve_host: expected true or false, found \"yes\"");
}

TEST_CASE("the number of errors is capped") {
  std::string yaml(minimal);
  for (int i = 0; i < 150; ++i) yaml += "unknown_" + std::to_string(i) + ": 1\n";
  conf::LoadResult result = load(yaml);
  REQUIRE(result.errors.size() == 101);
  CHECK(result.errors[99].key == "unknown_99");
  CHECK(result.errors[100].message == "too many errors; only the first 100 are shown");
}

TEST_CASE("an anchor and alias may share a block") {
  conf::LoadResult result = load(
      "listeners:\n"
      "  - name: http\n"
      "    address: 127.0.0.1:8080\n"
      "servers:\n"
      "  - id: pool1\n"
      "    address: 127.0.0.1:9001\n"
      "    weight: &w 5\n"
      "  - id: pool2\n"
      "    address: 127.0.0.1:9002\n"
      "    weight: *w\n");
  INFO(all_errors(result));
  REQUIRE(result.ok());
  CHECK(result.config->servers[1].weight == 5);
}

TEST_CASE("load_file reports an unreadable file with its name and the system's reason") {
  SUBCASE("missing") {
    std::string path = "/nonexistent/sprayer-test/sprayer.yaml";
    conf::LoadResult result = conf::load_file(path);
    REQUIRE_FALSE(result.ok());
    REQUIRE(result.errors.size() == 1);
    const conf::ConfigError& error = result.errors.front();
    CHECK(error.file == path);
    CHECK(error.line == 0);
    CHECK(error.message == std::string("cannot open: ") + std::strerror(ENOENT));
    CHECK(error.to_string() == path + ": cannot open: " + std::strerror(ENOENT));
  }
  SUBCASE("a directory") {
    std::string path = std::filesystem::temp_directory_path().string();
    conf::LoadResult result = conf::load_file(path);
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors.front().file == path);
    CHECK(result.errors.front().message == std::string("cannot read: ") + std::strerror(EISDIR));
  }
}

TEST_CASE("active/standby pair keys: listeners[].freebind and ownership.max_staleness") {
  {
    conf::LoadResult result = load(std::string(minimal));
    REQUIRE(result.ok());
    CHECK_FALSE(result.config->listeners[0].freebind);
    CHECK(result.config->ownership.max_staleness == 0ms);
  }
  conf::LoadResult result = load(
      "listeners:\n"
      "  - name: vip\n"
      "    address: 192.0.2.10:443\n"
      "    freebind: true\n"
      "servers:\n"
      "  - id: pool1\n"
      "    address: 127.0.0.1:9001\n"
      "ownership:\n"
      "  max_staleness: 30s\n");
  INFO(all_errors(result));
  REQUIRE(result.ok());
  CHECK(result.config->listeners[0].freebind);
  CHECK(result.config->ownership.max_staleness == 30s);
  expect_error(
      "listeners:\n"
      "  - name: vip\n"
      "    address: 192.0.2.10:443\n"
      "    freebind: sometimes\n"
      "servers:\n"
      "  - id: pool1\n"
      "    address: 127.0.0.1:9001\n",
      4, 15, "listeners[0].freebind", single_error(load(
      "listeners:\n  - name: x\n    address: 127.0.0.1:1\n    redirect_to_https: sometimes\n"
      "servers:\n  - id: pool1\n    address: 127.0.0.1:9001\n")).message);
  check_error(single_error(load_with("ownership:\n  max_staleness: 25h\n")), 8, 18, "ownership.max_staleness",
              "must be between 0s and 24h");
}

TEST_CASE("admin.peer: the other member's admin listener, with the token") {
  conf::LoadResult r = load_with("admin:\n  token: t0k\n  peer: http://sprayer2.example.com:9100/\n");
  REQUIRE(r.ok());
  CHECK(r.config->admin.peer.to_string() == "sprayer2.example.com:9100");
  r = load_with("admin:\n  token: t0k\n  peer: \"10.0.0.2:9100\"\n");
  REQUIRE(r.ok());
  CHECK(r.config->admin.peer.to_string() == "10.0.0.2:9100");
  CHECK(load(minimal).config->admin.peer.port == 0);  // no peer by default
  r = load_with("admin:\n  peer: \"\"\n");  // as -T prints it: none, no token needed
  REQUIRE(r.ok());
  CHECK(r.config->admin.peer.port == 0);
  expect_error_with("admin:\n  peer: http://10.0.0.2:9100\n", 8, 9, "admin.peer",
                    "needs admin.token (or admin.token_file), the same on both members: the peer's calls change "
                    "admin states");
  expect_error_with("admin:\n  token: t0k\n  peer: https://10.0.0.2:9100\n", 9, 9, "admin.peer",
                    "the admin listener speaks plain HTTP: write http://10.0.0.2:9100 (keep the admin addresses on a "
                    "management network)");
  expect_error_with("admin:\n  token: t0k\n  peer: http://10.0.0.2\n", 9, 9, "admin.peer",
                    "invalid address \"http://10.0.0.2\": missing port, expected \"host:port\"");
  expect_error_with("admin:\n  token: t0k\n  enabled: false\n  peer: 10.0.0.2:9100\n", 10, 9, "admin.peer",
                    "needs the admin listener (admin.enabled: true): the peer sends its changes there");
}

TEST_CASE("limits.memory_budget: a size, 0 (the default) sized from the machine, nothing under 1MiB") {
  CHECK(load(minimal).config->limits.memory_budget == 0);
  auto result = load_with("limits:\n  memory_budget: 64MiB\n");
  INFO(all_errors(result));
  REQUIRE(result.ok());
  CHECK(result.config->limits.memory_budget == 64u << 20);
  expect_error_with("limits:\n  memory_budget: 512KiB\n", 8, 18, "limits.memory_budget",
                    "must be 0 (from the machine's memory) or at least 1MiB");
  expect_error_with("limits:\n  memory_budget: lots\n", 8, 18, "limits.memory_budget",
                    single_error(load_with("limits:\n  max_body_bytes: lots\n")).message);
}
