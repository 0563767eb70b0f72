// The sections about whom a request goes to and whether a server may take it, one read_*
// each: affinity (extractors, user map), ownership (and its database connections), health,
// directory. A new key of these goes into its section's field list here; checks across keys
// go to config_checks.cpp.
#include <algorithm>
#include <array>
#include <map>
#include <string>
#include <utility>

#include "conf/loader.h"

namespace sprayer::conf::detail {

void Loader::read_affinity(const Item& item, AffinityConfig& affinity) {
  read_map(item, {
      {"extractors", false, [&](const Item& v) { read_extractors(v, affinity.extractors); }},
      {"reject_malformed", false, [&](const Item& v) { read_bool(v, affinity.reject_malformed); }},
      // A user name longer than this is not a user name; the bound also caps the work per request.
      {"max_user_length", false, [&](const Item& v) { read_integer(v, 1, 4096, affinity.max_user_length); }},
      {"authenticated_wins", false, [&](const Item& v) { read_bool(v, affinity.authenticated_wins); }},
      {"lower_case", false, [&](const Item& v) { read_bool(v, affinity.lower_case); }},
      {"strip_domain", false, [&](const Item& v) { read_bool(v, affinity.strip_domain); }},
      {"notes_canonical", false, [&](const Item& v) { read_bool(v, affinity.notes_canonical); }},
      {"map", false, [&](const Item& v) { read_user_map(v, affinity.map); }},
  });
  check_user_map(affinity);
}

void Loader::read_extractors(const Item& item, std::vector<ExtractorStepConfig>& steps) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 7> kinds{{
      {"activesync_query", "activesync_query"},
      {"activesync_base64", "activesync_base64"},
      {"basic_auth", "basic_auth"},
      {"traveler_url", "traveler_url"},
      {"header", "header"},
      {"cookie", "cookie"},
      {"query", "query"},
  }};
  if (item.node.IsNull()) {
    error(item, "missing value, expected a list of extractors ([] for none)");
    return;
  }
  if (!item.node.IsSequence()) {
    error(item, "expected a list of extractors, found " + describe(item.node));
    return;
  }
  steps.clear();  // a written list replaces the default order rather than extending it
  size_t index = 0;
  for (const YAML::Node& element : item.node) {
    Item step_item{element, index_path(item.path, index++), element.IsNull() ? item.mark : element.Mark()};
    ExtractorStepConfig& step = steps.emplace_back();
    std::string kind_path = join(step_item.path, "kind");
    std::string_view kind;
    if (element.IsScalar()) {
      // Shorthand for the kinds that take no name: "- basic_auth".
      marks_[kind_path] = step_item.mark;
      if (read_choice(Item{element, kind_path, step_item.mark}, kinds, kind)) step.kind = std::string(kind);
    } else {
      read_map(step_item, {
          {"kind", true, [&](const Item& v) {
             if (read_choice(v, kinds, kind)) step.kind = std::string(kind);
           }},
          {"name", false, [&](const Item& v) { read_string(v, step.name); }},
      });
    }
    check_extractor(step_item, step);
  }
}

void Loader::read_user_map(const Item& item, std::vector<std::pair<std::string, std::string>>& map) {
  if (item.node.IsNull()) return;
  if (!item.node.IsMap()) {
    error(item, "expected a map of alias: user key, found " + describe(item.node));
    return;
  }
  std::map<std::string, int> seen;  // alias → line of its first occurrence
  for (const auto& pair : item.node) {
    const YAML::Node& key = pair.first;
    if (!key.IsScalar()) {
      error(key.Mark(), item.path, "an alias must be a string, found " + describe(key));
      continue;
    }
    std::string path = join(item.path, key.Scalar());
    auto [first, inserted] = seen.emplace(key.Scalar(), one_based(key.Mark().line));
    if (!inserted) {
      error(key.Mark(), path, "duplicate alias (first at line " + std::to_string(first->second) + ")");
      continue;
    }
    marks_[path] = key.Mark();  // checks on the alias point at the alias
    Item value{pair.second, path, pair.second.IsNull() ? key.Mark() : pair.second.Mark()};
    std::string user_key;
    if (key.Scalar().empty()) {
      error(key.Mark(), path, "an alias must not be empty");
    } else if (read_string(value, user_key)) {
      if (user_key.empty()) {
        error(value, "the user key must not be empty");
      } else {
        map.emplace_back(key.Scalar(), std::move(user_key));
      }
    }
  }
}

void Loader::read_ownership(const Item& item, OwnershipConfig& ownership) {
  static constexpr std::array<std::pair<std::string_view, OwnershipSourceKind>, 5> sources{{
      {"none", OwnershipSourceKind::none},
      {"sqlite", OwnershipSourceKind::sqlite},
      {"postgresql", OwnershipSourceKind::postgresql},
      {"mariadb", OwnershipSourceKind::mariadb},
      {"odbc", OwnershipSourceKind::odbc},
  }};
  static constexpr std::array<std::pair<std::string_view, ChangeDetectionMode>, 3> modes{{
      {"epoch", ChangeDetectionMode::epoch},
      {"watermark", ChangeDetectionMode::watermark},
      {"full_scan", ChangeDetectionMode::full_scan},
  }};
  auto text = [this](std::string& out) { return [this, &out](const Item& v) { read_string(v, out); }; };
  auto interval = [this](Duration& out) {
    return [this, &out](const Item& v) { read_duration(v, Duration(1), max_timeout, out); };
  };
  read_map(item, {
      {"source", false, [&](const Item& v) { read_choice(v, sources, ownership.source); }},
      {"sqlite_path", false, text(ownership.sqlite_path)},
      {"postgresql", false, text(ownership.postgresql)},
      {"mariadb", false, [&](const Item& v) { read_ownership_mariadb(v, ownership.mariadb); }},
      {"odbc", false, [&](const Item& v) { read_ownership_odbc(v, ownership.odbc); }},
      {"change_detection", false, [&](const Item& v) { read_choice(v, modes, ownership.change_detection); }},
      {"watermark_overlap", false,
       [&](const Item& v) { read_duration(v, Duration(0), Duration(std::chrono::hours(1)), ownership.watermark_overlap); }},
      {"heartbeat_max_age", false,
       [&](const Item& v) { read_duration(v, Duration(0), max_timeout, ownership.heartbeat_max_age); }},
      {"query_full", false, text(ownership.query_full)},
      {"query_delta", false, text(ownership.query_delta)},
      {"query_servers", false, text(ownership.query_servers)},
      {"query_change", false, text(ownership.query_change)},
      {"poll_interval", false, interval(ownership.poll_interval)},
      {"resync_interval", false, interval(ownership.resync_interval)},
      {"reconnect_min", false, interval(ownership.reconnect_min)},
      {"reconnect_max", false, interval(ownership.reconnect_max)},
      {"stale_after", false, interval(ownership.stale_after)},
      {"max_staleness", false,
       [&](const Item& v) { read_duration(v, Duration(0), max_timeout, ownership.max_staleness); }},
      {"cache_file", false, text(ownership.cache_file)},
  });
  check_ownership(ownership);
}

void Loader::read_ownership_mariadb(const Item& item, OwnershipMariadbConfig& mariadb) {
  auto text = [this](std::string& out) { return [this, &out](const Item& v) { read_string(v, out); }; };
  read_map(item, {
      {"host", false, text(mariadb.host)},
      {"port", false, [&](const Item& v) { read_integer(v, 1, 65535, mariadb.port); }},
      {"socket", false, text(mariadb.socket)},
      {"user", true, text(mariadb.user)},
      {"database", true, text(mariadb.database)},
      {"password_file", false, text(mariadb.password_file)},
      {"tls", false, [&](const Item& v) { read_bool(v, mariadb.tls); }},
      {"tls_ca_file", false, text(mariadb.tls_ca_file)},
  });
}

void Loader::read_ownership_odbc(const Item& item, OwnershipOdbcConfig& odbc) {
  read_map(item, {
      {"connection", true, [&](const Item& v) { read_string(v, odbc.connection); }},
      {"password_file", false, [&](const Item& v) { read_string(v, odbc.password_file); }},
  });
}

void Loader::read_health(const Item& item, HealthConfig& health) {
  read_map(item, {
      {"enabled", false, [&](const Item& v) { read_bool(v, health.enabled); }},
      {"path", false,
       [&](const Item& v) {
         if (read_string(v, health.path) && (health.path.empty() || health.path.front() != '/' ||
                                             !is_visible_ascii(health.path)))
           error(v, "must be an origin-form path starting with / (no spaces)");
       }},
      {"expect_status", false,
       [&](const Item& v) {
         if (!v.node.IsSequence()) {
           error(v, "expected a list of status codes, found " + describe(v.node));
           return;
         }
         health.expect_status.clear();
         size_t index = 0;
         for (const YAML::Node& element : v.node) {
           Item child{element, index_path(v.path, index++), element.Mark()};
           uint32_t code = 0;
           if (read_integer(child, 100, 599, code)) health.expect_status.push_back(code);
         }
       }},
      {"expect_body", false, [&](const Item& v) { read_string(v, health.expect_body); }},
      {"availability_header", false,
       [&](const Item& v) {
         if (read_string(v, health.availability_header) && !health.availability_header.empty() &&
             !is_http_token(health.availability_header))
           error(v, "must be a header name");
       }},
      {"auth_file", false,
       [&](const Item& v) {
         if (read_string(v, health.auth_file)) health.auth_file = resolve_path(health.auth_file);
       }},
      {"headers", false, [&](const Item& v) { read_check_headers(v, health.headers); }},
      {"interval", false,
       [&](const Item& v) { read_duration(v, Duration(100), std::chrono::hours(1), health.interval); }},
      {"fast_interval", false,
       [&](const Item& v) { read_duration(v, Duration(1), std::chrono::hours(1), health.fast_interval); }},
      {"timeout", false,
       [&](const Item& v) { read_duration(v, Duration(10), std::chrono::minutes(5), health.timeout); }},
      {"rise", false, [&](const Item& v) { read_integer(v, 1, 100, health.rise); }},
      {"fall", false, [&](const Item& v) { read_integer(v, 1, 100, health.fall); }},
      {"passive_failures", false, [&](const Item& v) { read_integer(v, 0, 1000, health.passive_failures); }},
      {"stall_after", false,
       [&](const Item& v) { read_duration(v, Duration(0), std::chrono::minutes(10), health.stall_after); }},
      {"min_hold", false,
       [&](const Item& v) { read_duration(v, Duration(0), std::chrono::hours(1), health.min_hold); }},
      {"max_hold", false,
       [&](const Item& v) { read_duration(v, Duration(0), std::chrono::hours(24), health.max_hold); }},
  });
  // Unwritten, it follows a short interval down (100ms is allowed), so such files still load.
  if (!marks_.contains(join(item.path, "fast_interval"))) health.fast_interval = std::min(health.fast_interval, health.interval);
  check_health(item, health);
}

void Loader::read_directory(const Item& item, DirectoryConfig& d) {
  auto text = [this](std::string& out) { return [this, &out](const Item& v) { read_string(v, out); }; };
  auto span = [this](Duration min, Duration max, Duration& out) {
    return [this, min, max, &out](const Item& v) { read_duration(v, min, max, out); };
  };
  read_map(item, {
      {"enabled", false, [&](const Item& v) { read_bool(v, d.enabled); }},
      {"uri", false,
       [&](const Item& v) {
         if (read_string(v, d.uri) && d.uri.rfind("ldap://", 0) != 0 && d.uri.rfind("ldaps://", 0) != 0)
           error(v, "must be an ldap:// or ldaps:// URI");
       }},
      {"bind_dn", false, text(d.bind_dn)},
      {"password_file", false,
       [&](const Item& v) {
         if (read_string(v, d.password_file)) d.password_file = resolve_path(d.password_file);
       }},
      {"base_dn", false, text(d.base_dn)},
      {"filter", false,
       [&](const Item& v) {
         if (!read_string(v, d.filter)) return;
         if (d.filter.find("%s") == std::string::npos) error(v, "must contain %s, where the name goes");
         else if (d.filter.front() != '(' || d.filter.back() != ')') error(v, "must be an LDAP filter in parentheses");
       }},
      {"attribute", false,
       [&](const Item& v) {
         if (read_string(v, d.attribute) && (d.attribute.empty() || !is_name(d.attribute)))
           error(v, "must be an attribute name, or dn");
       }},
      {"timeout", false, span(Duration(10), std::chrono::minutes(1), d.timeout)},
      {"wait", false, span(Duration(0), std::chrono::seconds(10), d.wait)},
      {"ttl", false, span(std::chrono::seconds(1), std::chrono::hours(24 * 7), d.ttl)},
      {"negative_ttl", false, span(std::chrono::seconds(1), std::chrono::hours(24 * 7), d.negative_ttl)},
      {"cache_size", false, [&](const Item& v) { read_integer(v, 16, 10000000, d.cache_size); }},
      {"reconnect_min", false, span(Duration(10), max_timeout, d.reconnect_min)},
      {"reconnect_max", false, span(Duration(10), max_timeout, d.reconnect_max)},
  });
  check_directory(item, d);
}

void Loader::read_check_headers(const Item& item, std::vector<std::pair<std::string, std::string>>& headers) {
  if (item.node.IsNull()) return;
  if (!item.node.IsMap()) {
    error(item, "expected a map of header name: value, found " + describe(item.node));
    return;
  }
  // The checker writes these itself; a second copy would make the request ambiguous.
  static constexpr std::array<std::string_view, 4> reserved{"Host", "Connection", "Content-Length",
                                                            "Transfer-Encoding"};
  for (const auto& pair : item.node) {
    const YAML::Node& key = pair.first;
    if (!key.IsScalar()) {
      error(key.Mark(), item.path, "a header name must be a string, found " + describe(key));
      continue;
    }
    std::string path = join(item.path, key.Scalar());
    marks_[path] = key.Mark();
    Item value_item{pair.second, path, pair.second.IsNull() ? key.Mark() : pair.second.Mark()};
    std::string value;
    if (!is_http_token(key.Scalar())) {
      error(key.Mark(), path, "must be a header name (an HTTP token)");
    } else if (std::any_of(reserved.begin(), reserved.end(),
                           [&](std::string_view r) { return iequals_ascii(key.Scalar(), r); })) {
      error(key.Mark(), path, "the check sets this header itself");
    } else if (std::any_of(headers.begin(), headers.end(),
                           [&](const auto& h) { return iequals_ascii(h.first, key.Scalar()); })) {
      error(key.Mark(), path, "duplicate header");
    } else if (read_string(value_item, value)) {
      if (!std::all_of(value.begin(), value.end(), [](char c) { return c == ' ' || c == '\t' || (c > ' ' && c != 127); }))
        error(value_item, "a header value must be one line of printable ASCII");
      else
        headers.emplace_back(key.Scalar(), std::move(value));
    }
  }
}

}  // namespace sprayer::conf::detail
