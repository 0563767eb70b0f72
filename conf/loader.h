// Inside conf/ only: the Loader that walks a YAML document into a Config, shared by the files
// that hold its parts (conf/config.cpp says which file holds what).
#pragma once

#include <yaml-cpp/yaml.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "conf/config.h"
#include "conf/scalars.h"

namespace sprayer::conf::detail {

constexpr size_t max_errors = 100;
constexpr size_t max_name_length = 64;
constexpr size_t max_file_bytes = 16 << 20;  // also stops a read of /dev/zero or similar
constexpr Duration max_timeout = std::chrono::hours(24);
constexpr std::string_view int_tag = "tag:yaml.org,2002:int";
constexpr std::string_view bool_tag = "tag:yaml.org,2002:bool";

// yaml-cpp counts from 0 and uses -1 for "no position"; ConfigError counts from 1 and uses 0.
inline int one_based(int zero_based) { return zero_based >= 0 ? zero_based + 1 : 0; }

inline std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

inline std::string index_path(const std::string& path, size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

inline bool is_quoted(const YAML::Node& node) { return node.Tag() != "?"; }

// How a node reads in a message: "a map", "a list", "nothing", "\"abc\"".
std::string describe(const YAML::Node& node);

// The whole file into out (at most max_file_bytes); empty, or the problem for a message.
std::string read_whole_file(const std::string& path, std::string& out);

// A value in the document, with the key path and position to report it at.
struct Item {
  YAML::Node node;
  std::string path;
  YAML::Mark mark;
};

struct Field {
  std::string_view key;
  bool required;
  std::function<void(const Item&)> read;
};

// Walks one document into a Config. Problems are collected, not thrown, so that one run
// reports everything wrong with a file.
class Loader {
 public:
  explicit Loader(std::string file) : file_(std::move(file)) {}

  LoadResult load(std::string_view yaml);

 private:
  // conf/config.cpp: the walk and the typed readers every section uses.
  void error(const YAML::Mark& mark, const std::string& key, std::string message);
  void error(const Item& item, std::string message) { error(item.mark, item.path, std::move(message)); }

  // False when the stream is not one parseable document; reports the problem.
  bool check_documents(std::string_view yaml);

  void read_map(const Item& item, const std::vector<Field>& fields);
  template <typename Element, typename ReadElement>
  void read_list(const Item& item, std::string_view noun, std::vector<Element>& out, ReadElement read_element);

  void read_config(const Item& root, Config& config);
  void read_string_list(const Item& item, std::vector<std::string>& out);
  // Relative file names in a config mean "next to the config file".
  std::string resolve_path(const std::string& path) const;

  bool expect_scalar(const Item& item, std::string_view expected);
  bool read_integer(const Item& item, uint64_t min, uint64_t max, uint32_t& out);
  bool read_bool(const Item& item, bool& out);
  bool read_string(const Item& item, std::string& out);
  bool read_name(const Item& item, std::string& out);
  bool read_duration(const Item& item, Duration min, Duration max, Duration& out);
  bool read_size(const Item& item, uint64_t min, uint64_t max, uint32_t& out);
  bool read_size64(const Item& item, uint64_t min, uint64_t max, uint64_t& out);
  bool read_endpoint(const Item& item, bool numeric_only, Endpoint& out);
  // One of a fixed set of words, e.g. a log level.
  template <typename T, size_t N>
  bool read_choice(const Item& item, const std::array<std::pair<std::string_view, T>, N>& choices, T& out);

  // conf/config_sections_proxy.cpp: listeners, servers, TLS, timeouts, limits, upstream,
  // http, admin, log, access_log.
  void read_listener(const Item& item, ListenerConfig& listener);
  void read_tls(const Item& item, TlsConfig& tls);
  void read_server(const Item& item, ServerConfig& server);
  void read_upstream_tls(const Item& item, UpstreamTlsConfig& tls);
  // servers[i].tls is read on top of upstream.tls, which may come later in the file.
  void apply_server_tls(Config& config);
  void read_timeouts(const Item& item, TimeoutConfig& timeouts);
  void read_limits(const Item& item, LimitConfig& limits);
  void read_upstream(const Item& item, UpstreamConfig& upstream);
  void read_http(const Item& item, HttpConfig& http);
  void read_admin(const Item& item, AdminConfig& admin);
  void read_token(const Item& item, std::string& out);
  void read_token_file(const Item& item, std::string& path, std::string& token);
  void read_peer(const Item& item, Endpoint& out);
  void read_log(const Item& item, LogConfig& log);
  void read_access_log(const Item& item, AccessLogConfig& access_log);

  // conf/config_sections_routing.cpp: affinity, ownership, health, directory.
  void read_affinity(const Item& item, AffinityConfig& affinity);
  void read_extractors(const Item& item, std::vector<ExtractorStepConfig>& steps);
  void read_user_map(const Item& item, std::vector<std::pair<std::string, std::string>>& map);
  void read_ownership(const Item& item, OwnershipConfig& ownership);
  void read_ownership_mariadb(const Item& item, OwnershipMariadbConfig& mariadb);
  void read_ownership_odbc(const Item& item, OwnershipOdbcConfig& odbc);
  void read_health(const Item& item, HealthConfig& health);
  void read_directory(const Item& item, DirectoryConfig& directory);
  void read_check_headers(const Item& item, std::vector<std::pair<std::string, std::string>>& headers);

  // conf/config_checks.cpp: checks across keys, each called where the keys it needs are read
  // (a section's at the end of that section, the whole file's after the walk).
  void check_listener(const Item& item, const ListenerConfig& listener);
  void check_upstream_tls(const Item& item, const UpstreamTlsConfig& tls);
  void check_admin_tokens(const Item& item);
  void check_admin_peer(const AdminConfig& admin);
  void check_extractor(const Item& step_item, const ExtractorStepConfig& step);
  void check_user_map(const AffinityConfig& affinity);
  void check_ownership(const OwnershipConfig& ownership);
  void check_health(const Item& item, const HealthConfig& health);
  void check_directory(const Item& item, const DirectoryConfig& directory);
  void check_listeners(const Config& config);
  void check_servers(const Config& config);
  void check_watermarks(const Config& config);

  // A key that was written and read without error; checks across keys look only at those.
  bool usable(const std::string& path) const { return marks_.contains(path) && !failed_.contains(path); }
  int line_of(const std::string& path) const {
    auto it = marks_.find(path);
    return it == marks_.end() ? 0 : one_based(it->second.line);
  }

  std::string file_;
  std::vector<ConfigError> errors_;
  std::map<std::string, YAML::Mark> marks_;  // key path → where its value is written
  std::set<std::string> failed_;             // key paths that already have an error
  std::map<std::string, Item> server_tls_;   // "servers[2]" → its tls block, read last
};

template <typename Element, typename ReadElement>
void Loader::read_list(const Item& item, std::string_view noun, std::vector<Element>& out,
                       ReadElement read_element) {
  if (item.node.IsNull() || (item.node.IsSequence() && item.node.size() == 0)) {
    error(item, "at least one " + std::string(noun) + " is required");
    return;
  }
  if (!item.node.IsSequence()) {
    error(item, "expected a list of " + std::string(noun) + "s, found " + describe(item.node));
    return;
  }
  size_t index = 0;
  for (const YAML::Node& element : item.node) {
    Item child{element, index_path(item.path, index++), element.IsNull() ? item.mark : element.Mark()};
    marks_[child.path] = child.mark;
    out.emplace_back();
    read_element(child, out.back());
  }
}

template <typename T, size_t N>
bool Loader::read_choice(const Item& item, const std::array<std::pair<std::string_view, T>, N>& choices, T& out) {
  std::string text;
  if (!read_string(item, text)) return false;
  std::vector<std::string_view> names;
  for (const auto& [name, value] : choices) {
    if (name == text) {
      out = value;
      return true;
    }
    names.push_back(name);
  }
  std::string_view suggestion = closest(text, names);
  error(item, "expected one of: " + list_words(names) +
                  (suggestion.empty() ? "" : "; did you mean " + quoted(suggestion) + "?"));
  return false;
}

}  // namespace sprayer::conf::detail
