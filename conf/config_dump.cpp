// Config -> YAML for `sprayer -T`. Strings are always double-quoted (so "1.2" or "no" stay
// strings), durations and sizes in the units the loader reads.
#include "conf/config_dump.h"

#include <iterator>

#include <yaml-cpp/yaml.h>

namespace sprayer::conf {
namespace {

class Dumper {
 public:
  std::string run(const Config& c) {
    out_ << YAML::BeginMap;
    if (!c.source.empty()) out_ << YAML::Comment("effective configuration of " + c.source);
    out_ << YAML::Key << "workers" << YAML::Value << c.workers;
    out_ << YAML::Key << "listeners" << YAML::Value << YAML::BeginSeq;
    for (const auto& l : c.listeners) listener(l);
    out_ << YAML::EndSeq;
    out_ << YAML::Key << "servers" << YAML::Value << YAML::BeginSeq;
    for (const auto& s : c.servers) server(s, c.upstream.tls);
    out_ << YAML::EndSeq;
    timeouts(c.timeouts);
    limits(c.limits);
    upstream(c.upstream);
    http(c.http);
    admin(c.admin);
    out_ << YAML::Key << "log" << YAML::Value << YAML::BeginMap;
    static constexpr const char* levels[] = {"debug", "info", "warn", "error"};
    text("level", levels[static_cast<int>(c.log.level)]);
    out_ << YAML::EndMap;
    access_log(c.access_log);
    affinity(c.affinity);
    ownership(c.ownership);
    health(c.health);
    directory(c.directory);
    out_ << YAML::EndMap;
    return std::string(out_.c_str()) + "\n";
  }

 private:
  void text(const char* key, const std::string& value) {
    out_ << YAML::Key << key << YAML::Value << YAML::DoubleQuoted << value;
  }
  void flag(const char* key, bool value) { out_ << YAML::Key << key << YAML::Value << value; }
  void number(const char* key, uint64_t value) { out_ << YAML::Key << key << YAML::Value << value; }
  void duration(const char* key, Duration value) { text(key, duration_text(value)); }
  void size(const char* key, uint64_t value) { text(key, size_text(value)); }
  void strings(const char* key, const std::vector<std::string>& values) {
    out_ << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const auto& v : values) out_ << YAML::DoubleQuoted << v;
    out_ << YAML::EndSeq;
  }

  void listener(const ListenerConfig& l) {
    out_ << YAML::BeginMap;
    text("name", l.name);
    text("address", l.address.to_string());
    number("backlog", l.backlog);
    flag("redirect_to_https", l.redirect_to_https);
    number("https_port", l.https_port);
    flag("freebind", l.freebind);
    // A tls block switches TLS on and needs certificates: written only when on.
    if (l.tls.enabled) {
      const TlsConfig& t = l.tls;
      out_ << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
      out_ << YAML::Key << "certificates" << YAML::Value << YAML::BeginSeq;
      for (const auto& cert : t.certificates) {
        out_ << YAML::BeginMap;
        text("cert", cert.cert);
        text("key", cert.key);
        out_ << YAML::EndMap;
      }
      out_ << YAML::EndSeq;
      text("min_version", t.min_version);
      text("ciphers", t.ciphers);
      text("ciphersuites", t.ciphersuites);
      text("groups", t.groups);
      strings("alpn", t.alpn);
      flag("strict_sni", t.strict_sni);
      flag("check_host", t.check_host);
      text("ticket_key_file", t.ticket_key_file);
      number("session_cache_size", t.session_cache_size);
      flag("session_tickets", t.session_tickets);
      duration("session_timeout", t.session_timeout);
      text("record_layer", t.record_layer);
      out_ << YAML::EndMap;
    }
    out_ << YAML::EndMap;
  }

  void upstream_tls(const UpstreamTlsConfig& t) {
    out_ << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
    flag("enabled", t.enabled);
    flag("verify", t.verify);
    text("ca_file", t.ca_file);
    text("sni", t.sni);
    text("client_cert", t.client_cert);
    text("client_key", t.client_key);
    text("min_version", t.min_version);
    out_ << YAML::EndMap;
  }

  void server(const ServerConfig& s, const UpstreamTlsConfig& defaults) {
    out_ << YAML::BeginMap;
    text("id", s.id);
    text("address", s.address.to_string());
    number("weight", s.weight);
    // Each server's effective settings; its own block only where they differ from upstream.tls.
    if (!(s.tls == defaults)) upstream_tls(s.tls);
    out_ << YAML::EndMap;
  }

  void timeouts(const TimeoutConfig& t) {
    out_ << YAML::Key << "timeouts" << YAML::Value << YAML::BeginMap;
    duration("client_header", t.client_header);
    duration("client_idle", t.client_idle);
    duration("client_body", t.client_body);
    duration("client_send", t.client_send);
    duration("upstream_connect", t.upstream_connect);
    duration("upstream_response", t.upstream_response);
    duration("upstream_idle", t.upstream_idle);
    duration("drain", t.drain);
    duration("upgrade", t.upgrade_drain());
    out_ << YAML::EndMap;
  }

  void limits(const LimitConfig& l) {
    out_ << YAML::Key << "limits" << YAML::Value << YAML::BeginMap;
    number("max_connections", l.max_connections);
    size("max_header_bytes", l.max_header_bytes);
    number("max_header_count", l.max_header_count);
    size("max_uri_length", l.max_uri_length);
    size("max_body_bytes", l.max_body_bytes);
    size("memory_budget", l.memory_budget);
    out_ << YAML::EndMap;
  }

  void upstream(const UpstreamConfig& u) {
    out_ << YAML::Key << "upstream" << YAML::Value << YAML::BeginMap;
    number("max_idle_per_server", u.max_idle_per_server);
    number("max_requests_per_connection", u.max_requests_per_connection);
    if (!(u.tls == UpstreamTlsConfig{})) upstream_tls(u.tls);
    out_ << YAML::EndMap;
  }

  void http(const HttpConfig& h) {
    out_ << YAML::Key << "http" << YAML::Value << YAML::BeginMap;
    flag("preserve_host", h.preserve_host);
    text("via", h.via);
    flag("x_forwarded", h.x_forwarded);
    flag("allow_upgrade", h.allow_upgrade);
    size("buffer_high_watermark", h.buffer_high_watermark);
    size("buffer_low_watermark", h.buffer_low_watermark);
    out_ << YAML::EndMap;
  }

  void admin(const AdminConfig& a) {
    out_ << YAML::Key << "admin" << YAML::Value << YAML::BeginMap;
    flag("enabled", a.enabled);
    text("address", a.address.to_string());
    // A token read from a file is shown by its file; one written inline is shown as written.
    if (a.token_file.empty()) text("token", a.token); else text("token_file", a.token_file);
    if (a.read_token_file.empty()) text("read_token", a.read_token); else text("read_token_file", a.read_token_file);
    text("state_file", a.state_file);
    text("peer", a.peer.port ? "http://" + a.peer.to_string() : std::string());
    out_ << YAML::EndMap;
  }

  void access_log(const AccessLogConfig& a) {
    out_ << YAML::Key << "access_log" << YAML::Value << YAML::BeginMap;
    flag("enabled", a.enabled);
    text("path", a.path);
    text("format", a.format == AccessLogFormat::json ? "json" : "combined");
    size("max_queued_bytes", a.max_queued_bytes);
    out_ << YAML::EndMap;
  }

  void affinity(const AffinityConfig& a) {
    out_ << YAML::Key << "affinity" << YAML::Value << YAML::BeginMap;
    out_ << YAML::Key << "extractors" << YAML::Value << YAML::BeginSeq;
    for (const auto& step : a.extractors) {
      out_ << YAML::Flow << YAML::BeginMap;
      text("kind", step.kind);
      if (!step.name.empty()) text("name", step.name);
      out_ << YAML::EndMap;
    }
    out_ << YAML::EndSeq;
    flag("reject_malformed", a.reject_malformed);
    number("max_user_length", a.max_user_length);
    flag("lower_case", a.lower_case);
    flag("strip_domain", a.strip_domain);
    flag("notes_canonical", a.notes_canonical);
    flag("authenticated_wins", a.authenticated_wins);
    out_ << YAML::Key << "map" << YAML::Value << YAML::BeginMap;
    for (const auto& [alias, user] : a.map) out_ << YAML::Key << YAML::DoubleQuoted << alias << YAML::Value << YAML::DoubleQuoted << user;
    out_ << YAML::EndMap;
    out_ << YAML::EndMap;
  }

  void ownership(const OwnershipConfig& o) {
    out_ << YAML::Key << "ownership" << YAML::Value << YAML::BeginMap;
    static constexpr const char* sources[] = {"none", "sqlite", "postgresql", "mariadb", "odbc"};
    static_assert(std::size(sources) == static_cast<size_t>(OwnershipSourceKind::odbc) + 1);
    text("source", sources[static_cast<size_t>(o.source)]);
    text("sqlite_path", o.sqlite_path);
    text("postgresql", o.postgresql);
    // user and database are required inside the section, so it is printed only when it was set.
    if (o.source == OwnershipSourceKind::mariadb || !o.mariadb.user.empty()) {
      const OwnershipMariadbConfig& m = o.mariadb;
      out_ << YAML::Key << "mariadb" << YAML::Value << YAML::BeginMap;
      text("host", m.host);
      number("port", m.port);
      text("socket", m.socket);
      text("user", m.user);
      text("database", m.database);
      text("password_file", m.password_file);
      flag("tls", m.tls);
      text("tls_ca_file", m.tls_ca_file);
      out_ << YAML::EndMap;
    }
    if (o.source == OwnershipSourceKind::odbc || !o.odbc.connection.empty()) {
      out_ << YAML::Key << "odbc" << YAML::Value << YAML::BeginMap;
      text("connection", o.odbc.connection);
      text("password_file", o.odbc.password_file);
      out_ << YAML::EndMap;
    }
    static constexpr const char* modes[] = {"epoch", "watermark", "full_scan"};
    static_assert(std::size(modes) == static_cast<size_t>(ChangeDetectionMode::full_scan) + 1);
    text("change_detection", modes[static_cast<size_t>(o.change_detection)]);
    duration("watermark_overlap", o.watermark_overlap);
    duration("heartbeat_max_age", o.heartbeat_max_age);
    text("query_full", o.query_full);
    text("query_delta", o.query_delta);
    text("query_servers", o.query_servers);
    text("query_change", o.query_change);
    duration("poll_interval", o.poll_interval);
    duration("resync_interval", o.resync_interval);
    duration("reconnect_min", o.reconnect_min);
    duration("reconnect_max", o.reconnect_max);
    duration("stale_after", o.stale_after);
    duration("max_staleness", o.max_staleness);
    text("cache_file", o.cache_file);
    out_ << YAML::EndMap;
  }

  void health(const HealthConfig& h) {
    out_ << YAML::Key << "health" << YAML::Value << YAML::BeginMap;
    flag("enabled", h.enabled);
    text("path", h.path);
    out_ << YAML::Key << "expect_status" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (uint32_t code : h.expect_status) out_ << code;
    out_ << YAML::EndSeq;
    text("expect_body", h.expect_body);
    text("availability_header", h.availability_header);
    text("auth_file", h.auth_file);
    out_ << YAML::Key << "headers" << YAML::Value << YAML::BeginMap;
    for (const auto& [name, value] : h.headers) out_ << YAML::Key << YAML::DoubleQuoted << name << YAML::Value << YAML::DoubleQuoted << value;
    out_ << YAML::EndMap;
    duration("interval", h.interval);
    duration("fast_interval", h.fast_interval);
    duration("timeout", h.timeout);
    number("rise", h.rise);
    number("fall", h.fall);
    number("passive_failures", h.passive_failures);
    duration("stall_after", h.stall_after);
    duration("min_hold", h.min_hold);
    duration("max_hold", h.max_hold);
    out_ << YAML::EndMap;
  }

  void directory(const DirectoryConfig& d) {
    out_ << YAML::Key << "directory" << YAML::Value << YAML::BeginMap;
    flag("enabled", d.enabled);
    if (!d.uri.empty()) text("uri", d.uri);  // an empty one is refused when written
    text("bind_dn", d.bind_dn);
    text("password_file", d.password_file);
    text("base_dn", d.base_dn);
    text("filter", d.filter);
    text("attribute", d.attribute);
    duration("timeout", d.timeout);
    duration("wait", d.wait);
    duration("ttl", d.ttl);
    duration("negative_ttl", d.negative_ttl);
    number("cache_size", d.cache_size);
    duration("reconnect_min", d.reconnect_min);
    duration("reconnect_max", d.reconnect_max);
    out_ << YAML::EndMap;
  }

  YAML::Emitter out_;
};

}  // namespace

std::string dump_yaml(const Config& config) { return Dumper().run(config); }

}  // namespace sprayer::conf
