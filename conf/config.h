// Validated, immutable configuration of one sprayer instance. Built by conf::load_*,
// then shared read-only as std::shared_ptr<const Config> (never through a global).
// Every struct has a defaulted == (a reload compares configs key by key, conf/config_diff.h):
// a new struct needs one too, or the diff does not compile.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sprayer::conf {

using Duration = std::chrono::milliseconds;

// A numeric address and port: "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:443".
// Server addresses may also carry a host name ("pool1.example.com:443"); it is
// resolved by the proxy, not by the loader.
struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::string to_string() const;  // "host:port", IPv6 hosts in brackets
  bool operator==(const Endpoint&) const = default;
};

struct TlsCertificateConfig {
  std::string cert;          // PEM chain, leaf first
  std::string key;           // PEM private key (unencrypted)
  bool operator==(const TlsCertificateConfig&) const = default;
};

// TLS on a listener. Defaults follow the widely used "intermediate" profile.
struct TlsConfig {
  bool enabled = false;
  std::vector<TlsCertificateConfig> certificates;  // the first is the default; RSA and ECDSA may pair
  std::string min_version = "1.2";                 // "1.2" | "1.3"
  std::string ciphers;                             // TLS 1.2 list; empty = profile default
  std::string ciphersuites;                        // TLS 1.3 list; empty = profile default
  std::string groups;                              // empty = profile default
  std::vector<std::string> alpn = {"http/1.1"};
  bool strict_sni = false;                         // unknown SNI names are refused
  bool check_host = false;                         // the Host header must name the SNI host
  std::string ticket_key_file;                     // shared by both members of a pair; empty = random
  uint32_t session_cache_size = 20480;
  bool session_tickets = true;                     // false: no resumption by tickets
  Duration session_timeout{std::chrono::hours(24)};
  std::string record_layer = "sprayer";            // "sprayer" | "openssl": who protects TLS 1.3 records
  bool operator==(const TlsConfig&) const = default;
};

struct ListenerConfig {
  std::string name;          // label in logs and metrics, unique
  Endpoint address;
  uint32_t backlog = 4096;
  TlsConfig tls;
  bool redirect_to_https = false;  // plain listener answering 308 to https://host/path
  uint16_t https_port = 443;       // the port in those redirects (443 = none written)
  bool freebind = false;           // IP_FREEBIND: bind an address not (yet) on this host, e.g. a standby's VIP
  bool operator==(const ListenerConfig&) const = default;
};

// TLS toward pool servers (the client side). `upstream.tls` gives the defaults, a server's own
// `tls` block overrides them key by key.
struct UpstreamTlsConfig {
  bool enabled = false;
  bool verify = true;              // false: any certificate is accepted (logged loudly)
  std::string ca_file;             // PEM bundle; empty = the system CA store
  std::string sni;                 // name sent and verified; empty = the server's address host
  std::string client_cert;         // PEM chain for servers that require a client certificate
  std::string client_key;
  std::string min_version = "1.2"; // "1.2" | "1.3"
  bool operator==(const UpstreamTlsConfig&) const = default;
};

struct ServerConfig {
  std::string id;            // pool server id (as in pool_server.server_id), unique
  Endpoint address;
  uint32_t weight = 1;       // 1..1000
  UpstreamTlsConfig tls;     // effective: upstream.tls with this server's overrides applied
  bool operator==(const ServerConfig&) const = default;
};

struct TimeoutConfig {
  Duration client_header{std::chrono::seconds(10)};      // whole request head (slowloris)
  Duration client_idle{std::chrono::seconds(75)};        // keep-alive idle between requests
  Duration client_body{std::chrono::seconds(60)};        // no byte of a request body for this long
  Duration client_send{std::chrono::seconds(60)};        // a write to the client makes no progress
  Duration upstream_connect{std::chrono::seconds(2)};
  Duration upstream_response{std::chrono::minutes(35)};  // request sent → first response byte / between bytes
  Duration upstream_idle{std::chrono::seconds(30)};      // idle pooled keep-alive connection
  Duration drain{std::chrono::seconds(30)};              // SIGTERM: in-flight requests may finish this long
  Duration upgrade{0};  // binary upgrade: the old process's drain; 0 = not set: upstream_response
  Duration upgrade_drain() const { return upgrade.count() ? upgrade : upstream_response; }
  bool operator==(const TimeoutConfig&) const = default;
};

struct LimitConfig {
  uint32_t max_connections = 100000;   // downstream connections per process
  uint32_t max_header_bytes = 32 * 1024;
  uint32_t max_header_count = 100;
  uint32_t max_uri_length = 8 * 1024;
  uint64_t max_body_bytes = 0;         // request body; 0 = no limit (413 beyond it)
  uint64_t memory_budget = 0;          // buffer memory per process; 0 = from the machine (cgroup, MemTotal)
  bool operator==(const LimitConfig&) const = default;
};

struct UpstreamConfig {
  uint32_t max_idle_per_server = 64;   // pooled idle connections per server per worker
  uint32_t max_requests_per_connection = 0;  // 0 = unlimited
  UpstreamTlsConfig tls;               // defaults for every server
  bool operator==(const UpstreamConfig&) const = default;
};

struct HttpConfig {
  bool preserve_host = true;           // forward the client's Host; false = server address
  std::string via = "sprayer";         // pseudonym in the Via header; empty = no Via
  bool x_forwarded = true;             // add X-Forwarded-For/-Proto/-Host
  bool allow_upgrade = false;          // pass Upgrade requests (e.g. websocket) through
  uint32_t buffer_high_watermark = 256 * 1024;  // bytes queued to a peer before reading pauses
  uint32_t buffer_low_watermark = 64 * 1024;    // resume below this
  bool operator==(const HttpConfig&) const = default;
};

struct AdminConfig {
  bool enabled = true;
  Endpoint address{"127.0.0.1", 9100};
  std::string token;                   // bearer token for state-changing API calls; empty = none
  std::string token_file;              // the token read from this file instead (trailing newline dropped)
  // Bearer token for the read-only API (/metrics, /api/v1/*) when the admin address is not a
  // loopback one; the write token is accepted too. Empty: those stay open.
  std::string read_token;
  std::string read_token_file;
  // Drain and maintenance survive a restart here (written on every change, read at start);
  // empty = kept in memory only.
  std::string state_file = "/var/lib/sprayer/admin-state";
  // The other member of an active/standby pair: its admin listener ("host:port" or
  // "http://host:port"). Drain and maintenance are exchanged with it (proxy/control/admin_peer.h),
  // with `token` on both sides. Port 0: no peer.
  Endpoint peer{};
  bool operator==(const AdminConfig&) const = default;
};

// How the user is found in a request (affinity/extract.h has the semantics).
struct ExtractorStepConfig {
  std::string kind;   // activesync_query | activesync_base64 | basic_auth | traveler_url | header | cookie | query
  std::string name;   // for header, cookie and query
  bool operator==(const ExtractorStepConfig&) const = default;
};

struct AffinityConfig {
  std::vector<ExtractorStepConfig> extractors = {
      {"activesync_query", ""}, {"activesync_base64", ""}, {"basic_auth", ""}, {"traveler_url", ""}};
  bool reject_malformed = false;       // true: a malformed user gets 400; false: routed as user-less
  uint32_t max_user_length = 256;
  bool authenticated_wins = true;      // a Basic login beats a query's User (one key per person)
  bool lower_case = true;              // normalisation into one user key
  bool strip_domain = true;            // DOMAIN\user and user@domain -> user
  bool notes_canonical = true;         // CN=Jane Doe/O=Acme -> jane doe
  std::vector<std::pair<std::string, std::string>> map;  // alias -> user key, after the rest
  bool operator==(const AffinityConfig&) const = default;
};

enum class OwnershipSourceKind { none, sqlite, postgresql, mariadb, odbc };
// How changes to the owner table are found (docs/configuration.md#change-detection).
enum class ChangeDetectionMode { epoch, watermark, full_scan };

struct OwnershipMariadbConfig {
  std::string host = "127.0.0.1";
  uint32_t port = 3306;
  std::string socket;                  // a Unix socket instead of host:port
  std::string user;
  std::string database;
  std::string password_file;           // first line is the password; never logged
  bool tls = false;                    // require TLS
  std::string tls_ca_file;             // verify the server's certificate and name against these CAs
  bool operator==(const OwnershipMariadbConfig&) const = default;
};

struct OwnershipOdbcConfig {
  std::string connection;              // "DSN=..." or "DRIVER={...};..." without the password
  std::string password_file;           // appended as PWD
  bool operator==(const OwnershipOdbcConfig&) const = default;
};

struct OwnershipConfig {
  OwnershipSourceKind source = OwnershipSourceKind::none;
  std::string sqlite_path;
  std::string postgresql;              // libpq connection string (multi-host allowed)
  OwnershipMariadbConfig mariadb;
  OwnershipOdbcConfig odbc;
  ChangeDetectionMode change_detection = ChangeDetectionMode::epoch;
  Duration watermark_overlap{2000};    // watermark: how late a commit may land and still be read
  Duration heartbeat_max_age{0};       // a server whose heartbeat_at is older takes no new users; 0 = off
  std::string query_full;              // empty = the default schema's query
  std::string query_delta;
  std::string query_servers;
  std::string query_change;
  Duration poll_interval{200};
  Duration resync_interval{std::chrono::minutes(5)};
  Duration reconnect_min{500};
  Duration reconnect_max{std::chrono::seconds(30)};
  Duration stale_after{std::chrono::seconds(30)};
  Duration max_staleness{0};  // /healthz is 503 past this without a good query; 0 = off (a pair sets it)
  std::string cache_file;              // last-known-good snapshot; empty = none
  bool operator==(const OwnershipConfig&) const = default;
};

// Active and passive health checks of the pool servers (health/ has the semantics).
struct HealthConfig {
  bool enabled = true;
  std::string path = "/traveler?action=getStatus";
  std::vector<uint32_t> expect_status = {200};      // empty = any 2xx
  // The Traveler servlet can answer 200 while its sync task is down: the text matters.
  std::string expect_body = "Traveler server is available.";
  std::string availability_header;                 // read the availability index from this header
  // A real Traveler server may want a login for the status URL: "user:password" on the first
  // line of this file (read at start and on every reload, never logged); empty = none.
  std::string auth_file;
  std::vector<std::pair<std::string, std::string>> headers;  // extra request headers, in order
  Duration interval{1000};
  Duration fast_interval{200};                     // checks of a suspected server; unset: min(200ms, interval)
  Duration timeout{800};
  uint32_t rise = 2;
  uint32_t fall = 2;
  uint32_t passive_failures = 3;                   // consecutive data-path failures that eject; 0 = off
  Duration stall_after{300};                       // requests wait, nothing comes back: check now; 0 = off
  Duration min_hold{2000};                         // a server that went down stays down this long...
  Duration max_hold{30000};                        // ...doubling for repeated downs, up to this
  bool operator==(const HealthConfig&) const = default;
};

// Optional directory (LDAP) lookup that maps every name form a device sends to the one key
// the ownership table uses (proxy/directory_client.h has the semantics). Restart-only.
struct DirectoryConfig {
  bool enabled = false;
  std::string uri;                     // ldap://host:port or ldaps://host:port
  std::string bind_dn;                 // empty = anonymous
  std::string password_file;           // the bind password (first line); never logged
  std::string base_dn;
  std::string filter = "(|(uid=%s)(mail=%s)(cn=%s))";  // %s = the name, escaped (RFC 4515)
  std::string attribute = "uid";       // the key; "dn" = the entry's DN as a Notes canonical name
  Duration timeout{std::chrono::seconds(2)};        // one search (and connect, bind)
  Duration wait{50};                   // a request for an unresolved name waits at most this
  Duration ttl{std::chrono::hours(4)};               // like Traveler's name lookup cache
  Duration negative_ttl{std::chrono::minutes(5)};    // "no such user"
  uint32_t cache_size = 100000;        // entries
  Duration reconnect_min{500};
  Duration reconnect_max{std::chrono::seconds(30)};
  bool operator==(const DirectoryConfig&) const = default;
};

enum class LogLevel { debug, info, warn, error };

struct LogConfig {
  LogLevel level = LogLevel::info;
  bool operator==(const LogConfig&) const = default;
};

// One line per request, written by a thread of its own (never by a worker loop).
enum class AccessLogFormat { json, combined };

struct AccessLogConfig {
  bool enabled = false;
  std::string path = "stderr";        // a file (appended; reopened on SIGUSR1) or "stderr"
  AccessLogFormat format = AccessLogFormat::json;
  uint64_t max_queued_bytes = 16u << 20;  // past this, lines are dropped (and counted)
  // Query parameters whose values are written as *** (names compared case-insensitively).
  std::vector<std::string> mask_query = {"password", "pwd"};
  bool operator==(const AccessLogConfig&) const = default;
};

// One problem found in a config, located in its file.
struct ConfigError {
  std::string file;
  int line = 0;        // 1-based; 0 when unknown
  int column = 0;      // 1-based; 0 when unknown
  std::string key;     // dotted key path: "servers[2].address"
  std::string message;
  std::string to_string() const;  // "file:line:column: key: message"
};

struct KeyPosition {
  int line = 0;    // 1-based
  int column = 0;  // 1-based
};

struct Config {
  std::string source;                  // file the config came from (for messages)
  // Where each written key's value stands in the file, so that checks made after loading
  // (files opened, names resolved: proxy/control/preflight, sprayer -t --check-queries) can
  // point at it too. The one map of key positions: error_at reads it.
  std::map<std::string, KeyPosition> positions;
  // An error at `key`'s position, or at the first of `fallbacks` that was written; at the
  // file alone when none was (a default).
  ConfigError error_at(const std::string& key, std::string message,
                       std::initializer_list<std::string_view> fallbacks = {}) const;
  uint32_t workers = 0;                // 0 = number of cores
  std::vector<ListenerConfig> listeners;
  std::vector<ServerConfig> servers;
  TimeoutConfig timeouts;
  LimitConfig limits;
  UpstreamConfig upstream;
  HttpConfig http;
  AdminConfig admin;
  LogConfig log;
  AccessLogConfig access_log;
  AffinityConfig affinity;
  OwnershipConfig ownership;
  HealthConfig health;
  DirectoryConfig directory;
};

struct LoadResult {
  std::shared_ptr<const Config> config;  // null when errors is not empty
  std::vector<ConfigError> errors;
  bool ok() const { return config != nullptr; }
};

LoadResult load_file(const std::string& path);
LoadResult load_string(std::string_view yaml, const std::string& file_name);

// "500ms", "10s", "35m", "2h", "1h30m"; a bare number is rejected (units are required).
bool parse_duration(std::string_view text, Duration& out);
// "512", "32KiB", "4MiB", "1GiB" (also "KB"/"MB"/"GB" as powers of 1000).
bool parse_size(std::string_view text, uint64_t& out);
// "127.0.0.1:80", "[::1]:80", "host.example:443"; the port is required.
bool parse_endpoint(std::string_view text, Endpoint& out);
// The inverse of parse_duration and parse_size: "1m30s", "64KiB", "1000B".
std::string duration_text(Duration value);
std::string size_text(uint64_t bytes);

}  // namespace sprayer::conf
