// YAML → validated Config: scalar parsers (durations, sizes, endpoints), the loader that walks
// the document and collects every problem with its file:line:column and key path.
#include "conf/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <utility>

namespace sprayer::conf {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool all_digits(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!is_digit(c)) return false;
  }
  return true;
}

// Leading decimal digits of text, consumed; false on overflow of uint64.
bool take_number(std::string_view& text, uint64_t& out) {
  size_t n = 0;
  while (n < text.size() && is_digit(text[n])) ++n;
  auto [end, ec] = std::from_chars(text.data(), text.data() + n, out);
  text.remove_prefix(n);
  return ec == std::errc{} && end == text.data();
}

std::string quoted(std::string_view text) { return "\"" + std::string(text) + "\""; }

struct DurationUnit {
  std::string_view name;
  int64_t millis;
};

// Largest first: a duration must list its units in this order, each at most once.
constexpr std::array<DurationUnit, 4> duration_units{{
    {"h", 3'600'000},
    {"m", 60'000},
    {"s", 1'000},
    {"ms", 1},
}};

struct SizeUnit {
  std::string_view name;
  uint64_t bytes;
};

constexpr std::array<SizeUnit, 7> size_units{{
    {"B", 1},
    {"KiB", uint64_t{1} << 10},
    {"MiB", uint64_t{1} << 20},
    {"GiB", uint64_t{1} << 30},
    {"KB", 1'000},
    {"MB", 1'000'000},
    {"GB", 1'000'000'000},
}};

bool is_host_label_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' || c == '_';
}

// RFC 1123 host name, also allowing '_' (common in internal zones and accepted by resolvers)
// and one trailing dot.
bool is_host_name(std::string_view host) {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  if (host.empty() || host.size() > 253) return false;
  std::string_view last_label;
  while (!host.empty()) {
    size_t dot = host.find('.');
    std::string_view label = host.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (char c : label) {
      if (!is_host_label_char(c)) return false;
    }
    last_label = label;
    host = dot == std::string_view::npos ? std::string_view{} : host.substr(dot + 1);
    if (dot != std::string_view::npos && host.empty()) return false;  // a second trailing dot
  }
  // An all-numeric last label means an attempted IPv4 address, never a name (RFC 3696 2).
  return !all_digits(last_label);
}

bool looks_like_ipv4(std::string_view host) {
  if (host.empty()) return false;
  for (char c : host) {
    if (!is_digit(c) && c != '.') return false;
  }
  return true;
}

// inet_pton reads a C string: a NUL inside host (a YAML "\0" escape) would hide what follows.
bool is_ipv4_literal(std::string_view host) {
  in_addr addr{};
  return host.find('\0') == std::string_view::npos && inet_pton(AF_INET, std::string(host).c_str(), &addr) == 1;
}

bool is_ipv6_literal(std::string_view host) {
  in6_addr addr{};
  return host.find('\0') == std::string_view::npos && inet_pton(AF_INET6, std::string(host).c_str(), &addr) == 1;
}

std::string duration_problem(std::string_view text, Duration& out) {
  if (text.empty()) return "empty duration";
  if (text.front() == '-') return "a duration cannot be negative";
  if (all_digits(text)) {
    return "units are required, e.g. " + quoted(std::string(text) + "s") + " (ms, s, m or h)";
  }
  int64_t total = 0;
  size_t next_unit = 0;  // index into duration_units of the largest unit still allowed
  std::string_view rest = text;
  while (!rest.empty()) {
    if (!is_digit(rest.front())) {
      return "expected a number followed by a unit (ms, s, m or h), e.g. \"30s\" or \"1h30m\"";
    }
    uint64_t number = 0;
    if (!take_number(rest, number)) return "duration is too large";
    size_t unit_length = 0;
    while (unit_length < rest.size() && !is_digit(rest[unit_length])) ++unit_length;
    std::string_view unit = rest.substr(0, unit_length);
    rest.remove_prefix(unit_length);
    if (unit.empty()) return "every number needs a unit (ms, s, m or h), e.g. \"1m30s\"";
    size_t index = 0;
    while (index < duration_units.size() && duration_units[index].name != unit) ++index;
    if (index == duration_units.size()) return "unknown unit " + quoted(unit) + " (use ms, s, m or h)";
    if (index < next_unit) return "each unit may appear once, largest first, e.g. \"1h30m\"";
    next_unit = index + 1;
    int64_t part = 0;
    if (number > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(static_cast<int64_t>(number), duration_units[index].millis, &part) ||
        __builtin_add_overflow(total, part, &total)) {
      return "duration is too large";
    }
  }
  out = Duration(total);
  return {};
}

std::string size_problem(std::string_view text, uint64_t& out) {
  if (text.empty()) return "empty size";
  if (text.front() == '-') return "a size cannot be negative";
  if (!is_digit(text.front())) {
    return "expected a number of bytes, optionally followed by a unit (B, KiB, MiB, GiB, KB, MB, GB)";
  }
  std::string_view rest = text;
  uint64_t number = 0;
  if (!take_number(rest, number)) return "size is too large";
  uint64_t multiplier = 1;
  if (!rest.empty()) {
    size_t index = 0;
    while (index < size_units.size() && size_units[index].name != rest) ++index;
    if (index == size_units.size()) {
      return "unknown unit " + quoted(rest) + " (use B, KiB, MiB, GiB, KB, MB or GB)";
    }
    multiplier = size_units[index].bytes;
  }
  if (__builtin_mul_overflow(number, multiplier, &out)) return "size is too large";
  return {};
}

std::string endpoint_problem(std::string_view text, Endpoint& out) {
  if (text.empty()) return "empty address";
  std::string_view host;
  std::string_view port;
  if (text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return "missing \"]\" after the IPv6 address";
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') return "missing port, expected \"[address]:port\"";
    port = rest.substr(1);
    if (!is_ipv6_literal(host)) return quoted(host) + " is not an IPv6 address";
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return "missing port, expected \"host:port\"";
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return "an IPv6 address must be written in brackets, e.g. \"[::1]:8080\"";
    }
    if (host.empty()) return "missing host before \":\" (0.0.0.0 or [::] mean every address)";
    if (looks_like_ipv4(host)) {
      if (!is_ipv4_literal(host)) return quoted(host) + " is not a valid IPv4 address";
    } else if (!is_host_name(host)) {
      return quoted(host) + " is neither an IP address nor a valid host name";
    }
  }
  if (port.empty()) return "missing port after \":\"";
  uint64_t port_number = 0;
  if (!all_digits(port) || port.size() > 5 || !take_number(port, port_number)) {
    return "invalid port " + quoted(port);
  }
  if (port_number > 65535) return "port must be between 1 and 65535";
  out.host = std::string(host);
  out.port = static_cast<uint16_t>(port_number);
  return {};
}

std::string format_duration(Duration value) {
  int64_t millis = value.count();
  if (millis == 0) return "0s";
  std::string text;
  for (const DurationUnit& unit : duration_units) {
    if (millis >= unit.millis) {
      text += std::to_string(millis / unit.millis) + std::string(unit.name);
      millis %= unit.millis;
    }
  }
  return text;
}

std::string format_size(uint64_t bytes) {
  for (size_t i = 3; i >= 1; --i) {  // GiB, MiB, KiB: the largest unit that divides exactly
    const SizeUnit& unit = size_units[i];
    if (bytes != 0 && bytes % unit.bytes == 0) return std::to_string(bytes / unit.bytes) + std::string(unit.name);
  }
  return std::to_string(bytes) + "B";
}

constexpr size_t max_errors = 100;
constexpr size_t max_name_length = 64;
constexpr size_t max_file_bytes = 16 << 20;  // also stops a read of /dev/zero or similar
constexpr Duration max_timeout = std::chrono::hours(24);
constexpr std::string_view int_tag = "tag:yaml.org,2002:int";
constexpr std::string_view bool_tag = "tag:yaml.org,2002:bool";

// yaml-cpp counts from 0 and uses -1 for "no position"; ConfigError counts from 1 and uses 0.
int one_based(int zero_based) { return zero_based >= 0 ? zero_based + 1 : 0; }

std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string index_path(const std::string& path, size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

// Edit distance counting an adjacent transposition as one edit, the most common typo.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// The candidate closest to word if it is within two edits (first one wins a tie), else empty.
std::string_view closest(std::string_view word, const std::vector<std::string_view>& candidates) {
  std::string_view best;
  size_t best_distance = 3;
  for (std::string_view candidate : candidates) {
    // The length difference is a lower bound of the distance; it also keeps a huge key cheap.
    size_t length_difference = word.size() > candidate.size() ? word.size() - candidate.size()
                                                              : candidate.size() - word.size();
    if (length_difference >= best_distance) continue;
    size_t distance = edit_distance(word, candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

std::string list_words(const std::vector<std::string_view>& words) {
  std::string text;
  for (std::string_view word : words) {
    if (!text.empty()) text += ", ";
    text += word;
  }
  return text;
}

bool is_quoted(const YAML::Node& node) { return node.Tag() != "?"; }

// How a node reads in a message: "a map", "a list", "nothing", "\"abc\"".
std::string describe(const YAML::Node& node) {
  if (node.IsMap()) return "a map";
  if (node.IsSequence()) return "a list";
  if (!node.IsScalar()) return "nothing";
  std::string text;
  for (char c : node.Scalar()) {
    if (text.size() >= 40) {
      text += "...";
      break;
    }
    text += static_cast<unsigned char>(c) < 0x20 ? '?' : c;
  }
  return (is_quoted(node) ? "the quoted string " : "") + quoted(text);
}

bool is_name(std::string_view text) {
  for (char c : text) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' || c == '.' ||
              c == '-';
    if (!ok) return false;
  }
  return true;
}

// RFC 9110 token: what may stand as the pseudonym in a Via header.
bool is_http_token(std::string_view text) {
  constexpr std::string_view specials = "!#$%&'*+-.^_`|~";
  for (char c : text) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
              specials.find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return !text.empty();
}

bool iequals_ascii(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x >= 'A' && x <= 'Z' ? x + 32 : x) == (y >= 'A' && y <= 'Z' ? y + 32 : y);
         });
}

bool is_visible_ascii(std::string_view text) {
  for (char c : text) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

// The bytes of a numeric endpoint, so that "[::1]:80" and "[0:0::1]:80" compare equal.
std::string address_key(const Endpoint& endpoint) {
  std::array<unsigned char, sizeof(in6_addr)> bytes{};
  int family = endpoint.host.find(':') != std::string::npos ? AF_INET6 : AF_INET;
  if (inet_pton(family, endpoint.host.c_str(), bytes.data()) != 1) return endpoint.to_string();
  return std::to_string(family) + "/" + std::string(bytes.begin(), bytes.end()) + "/" +
         std::to_string(endpoint.port);
}

std::string read_whole_file(const std::string& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("cannot open: ") + std::strerror(errno);
  std::array<char, 64 * 1024> buffer;
  std::string problem;
  for (;;) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      problem = std::string("cannot read: ") + std::strerror(errno);
      break;
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_file_bytes) {
      problem = "file is larger than " + format_size(max_file_bytes) + ", not a configuration file";
      break;
    }
    out.append(buffer.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return problem;
}

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

// Records where each document of a stream starts, and builds nothing.
struct DocumentStarts : YAML::EventHandler {
  std::vector<YAML::Mark> marks;
  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// Walks one document into a Config. Problems are collected, not thrown, so that one run
// reports everything wrong with a file.
class Loader {
 public:
  explicit Loader(std::string file) : file_(std::move(file)) {}

  LoadResult load(std::string_view yaml);

 private:
  void error(const YAML::Mark& mark, const std::string& key, std::string message);
  void error(const Item& item, std::string message) { error(item.mark, item.path, std::move(message)); }

  // False when the stream is not one parseable document; reports the problem.
  bool check_documents(std::string_view yaml);

  void read_map(const Item& item, const std::vector<Field>& fields);
  template <typename Element, typename ReadElement>
  void read_list(const Item& item, std::string_view noun, std::vector<Element>& out, ReadElement read_element);

  void read_config(const Item& root, Config& config);
  void read_listener(const Item& item, ListenerConfig& listener);
  void read_tls(const Item& item, TlsConfig& tls);
  void read_string_list(const Item& item, std::vector<std::string>& out);
  // Relative file names in a config mean "next to the config file".
  std::string resolve_path(const std::string& path) const;
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
  void read_log(const Item& item, LogConfig& log);
  void read_access_log(const Item& item, AccessLogConfig& access_log);
  void read_affinity(const Item& item, AffinityConfig& affinity);
  void read_extractors(const Item& item, std::vector<ExtractorStepConfig>& steps);
  void read_user_map(const Item& item, std::vector<std::pair<std::string, std::string>>& map);
  void read_ownership(const Item& item, OwnershipConfig& ownership);
  void read_ownership_mariadb(const Item& item, OwnershipMariadbConfig& mariadb);
  void read_ownership_odbc(const Item& item, OwnershipOdbcConfig& odbc);
  void read_health(const Item& item, HealthConfig& health);
  void read_directory(const Item& item, DirectoryConfig& directory);
  void read_check_headers(const Item& item, std::vector<std::pair<std::string, std::string>>& headers);

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

  void check_listeners(const Config& config);
  void check_servers(const Config& config);
  void check_watermarks(const Config& config);
  void check_user_map(const AffinityConfig& affinity);
  void check_ownership(const OwnershipConfig& ownership);

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

void Loader::error(const YAML::Mark& mark, const std::string& key, std::string message) {
  failed_.insert(key);
  if (errors_.size() > max_errors) return;
  if (errors_.size() == max_errors) {
    errors_.push_back({file_, 0, 0, "", "too many errors; only the first " + std::to_string(max_errors) +
                                            " are shown"});
    return;
  }
  errors_.push_back({file_, one_based(mark.line), one_based(mark.column), key, std::move(message)});
}

LoadResult Loader::load(std::string_view yaml) {
  YAML::Node root(YAML::NodeType::Null);
  try {
    if (!check_documents(yaml)) return {nullptr, std::move(errors_), {}};
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    error(e.mark, "", "invalid YAML: " + e.msg);
    return {nullptr, std::move(errors_), {}};
  }
  YAML::Mark start;  // line 1, column 1: where a key missing from an empty file belongs
  auto config = std::make_shared<Config>();
  config->source = file_;
  read_config(Item{root, "", root.IsNull() ? start : root.Mark()}, *config);
  apply_server_tls(*config);
  check_listeners(*config);
  check_servers(*config);
  check_watermarks(*config);
  if (!errors_.empty()) return {nullptr, std::move(errors_), {}};
  for (const auto& [path, mark] : marks_) config->positions[path] = {one_based(mark.line), one_based(mark.column)};
  LoadResult result{std::move(config), {}, {}};
  for (const auto& [key, mark] : marks_) result.lines.emplace(key, one_based(mark.line));
  return result;
}

bool Loader::check_documents(std::string_view yaml) {
  // YAML::LoadAll is not used: in yaml-cpp 0.7 a document that starts with a token the parser
  // cannot place (a "," at the top level, also after a tag, anchor or "---") is returned as
  // empty without being consumed, and LoadAll appends empty documents until memory runs out
  // (jbeder/yaml-cpp#1040, fixed upstream after 0.8). Counting documents here, without building
  // them, stops at the first one that does not move the parser forward.
  std::istringstream stream{std::string(yaml)};
  YAML::Parser parser(stream);
  DocumentStarts starts;
  // Any second document is an error, so a few are enough: the cap guarantees the end, and four
  // let a stuck parser after a "---" or a tag be named as such.
  while (starts.marks.size() < 4 && parser.HandleNextDocument(starts)) {
    size_t count = starts.marks.size();
    const YAML::Mark& mark = starts.marks.back();
    if (count >= 2 && mark.pos == starts.marks[count - 2].pos) {
      std::string token = mark.pos >= 0 && static_cast<size_t>(mark.pos) < yaml.size()
                              ? quoted(yaml.substr(static_cast<size_t>(mark.pos), 1))
                              : "token";
      error(mark, "", "invalid YAML: unexpected " + token);
      return false;
    }
  }
  if (starts.marks.size() > 1) {
    error(starts.marks[1], "", "a configuration file holds one YAML document; found a second one");
  }
  return true;
}

void Loader::read_map(const Item& item, const std::vector<Field>& fields) {
  if (!item.node.IsNull() && !item.node.IsMap()) {
    error(item, "expected a map, found " + describe(item.node));
    return;
  }
  std::map<std::string, int> seen;  // key → line of its first occurrence
  if (item.node.IsMap()) {
    for (const auto& pair : item.node) {
      const YAML::Node& key = pair.first;
      const YAML::Node& value = pair.second;
      if (!key.IsScalar()) {
        error(key.Mark(), item.path, "a key must be a plain string, found " + describe(key));
        continue;
      }
      std::string path = join(item.path, key.Scalar());
      auto [first, inserted] = seen.emplace(key.Scalar(), one_based(key.Mark().line));
      if (!inserted) {
        error(key.Mark(), path, "duplicate key (first at line " + std::to_string(first->second) + ")");
        continue;
      }
      auto field = std::find_if(fields.begin(), fields.end(),
                                [&](const Field& f) { return f.key == key.Scalar(); });
      if (field == fields.end()) {
        std::vector<std::string_view> known;
        for (const Field& f : fields) known.push_back(f.key);
        std::string_view suggestion = closest(key.Scalar(), known);
        error(key.Mark(), path,
              suggestion.empty() ? "unknown key; expected one of: " + list_words(known)
                                 : "unknown key; did you mean " + quoted(suggestion) + "?");
        continue;
      }
      // yaml-cpp places an empty value at the next token, often on a later line; its key is
      // where the operator will look.
      Item child{value, path, value.IsNull() ? key.Mark() : value.Mark()};
      marks_[path] = child.mark;
      field->read(child);
    }
  }
  for (const Field& field : fields) {
    if (field.required && !seen.contains(std::string(field.key))) {
      error(item.mark, join(item.path, field.key), "required key is missing");
    }
  }
}

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

void Loader::read_config(const Item& root, Config& config) {
  if (!root.node.IsNull() && !root.node.IsMap()) {
    error(root, "expected a map of settings at the top level, found " + describe(root.node));
    return;
  }
  read_map(root, {
      {"workers", false, [&](const Item& v) { read_integer(v, 0, 256, config.workers); }},
      {"listeners", true,
       [&](const Item& v) {
         read_list(v, "listener", config.listeners,
                   [this](const Item& e, ListenerConfig& l) { read_listener(e, l); });
       }},
      {"servers", true,
       [&](const Item& v) {
         read_list(v, "server", config.servers, [this](const Item& e, ServerConfig& s) { read_server(e, s); });
       }},
      {"timeouts", false, [&](const Item& v) { read_timeouts(v, config.timeouts); }},
      {"limits", false, [&](const Item& v) { read_limits(v, config.limits); }},
      {"upstream", false, [&](const Item& v) { read_upstream(v, config.upstream); }},
      {"http", false, [&](const Item& v) { read_http(v, config.http); }},
      {"admin", false, [&](const Item& v) { read_admin(v, config.admin); }},
      {"log", false, [&](const Item& v) { read_log(v, config.log); }},
      {"access_log", false, [&](const Item& v) { read_access_log(v, config.access_log); }},
      {"affinity", false, [&](const Item& v) { read_affinity(v, config.affinity); }},
      {"ownership", false, [&](const Item& v) { read_ownership(v, config.ownership); }},
      {"health", false, [&](const Item& v) { read_health(v, config.health); }},
      {"directory", false, [&](const Item& v) { read_directory(v, config.directory); }},
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
  for (const auto& [name, value] : health.headers) {
    std::string path = join(join(item.path, "headers"), name);
    if (!health.auth_file.empty() && iequals_ascii(name, "Authorization") && usable(path))
      error(marks_[path], path, "auth_file already sends Authorization; keep the login in one place");
  }
  if (health.max_hold < health.min_hold && usable(join(item.path, "max_hold")))
    error(marks_[join(item.path, "max_hold")], join(item.path, "max_hold"), "must not be less than min_hold");
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
  if (!d.enabled || !usable(join(item.path, "enabled"))) return;
  for (const char* key : {"uri", "base_dn"}) {
    std::string path = join(item.path, key);
    const std::string& value = std::string_view(key) == "uri" ? d.uri : d.base_dn;
    if (value.empty() && !failed_.contains(path)) error(marks_[join(item.path, "enabled")], path, "required when enabled");
  }
  const std::string min = join(item.path, "reconnect_min");
  if (d.reconnect_min > d.reconnect_max && usable(min)) error(marks_[min], min, "must not exceed reconnect_max");
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

void Loader::read_listener(const Item& item, ListenerConfig& listener) {
  read_map(item, {
      {"name", true, [&](const Item& v) { read_name(v, listener.name); }},
      {"address", true, [&](const Item& v) { read_endpoint(v, true, listener.address); }},
      {"backlog", false, [&](const Item& v) { read_integer(v, 1, 65535, listener.backlog); }},
      {"tls", false, [&](const Item& v) { read_tls(v, listener.tls); }},
      {"redirect_to_https", false, [&](const Item& v) { read_bool(v, listener.redirect_to_https); }},
      {"https_port", false,
       [&](const Item& v) {
         uint32_t port = listener.https_port;
         if (read_integer(v, 1, 65535, port)) listener.https_port = static_cast<uint16_t>(port);
       }},
      {"freebind", false, [&](const Item& v) { read_bool(v, listener.freebind); }},
  });
  if (listener.tls.enabled && listener.redirect_to_https) {
    error(item, "redirect_to_https is for a plain listener; this one has tls");
  }
}

std::string Loader::resolve_path(const std::string& path) const {
  if (path.empty() || path.front() == '/') return path;
  size_t slash = file_.rfind('/');
  if (slash == std::string::npos) return path;
  return file_.substr(0, slash + 1) + path;
}

void Loader::read_string_list(const Item& item, std::vector<std::string>& out) {
  if (!item.node.IsSequence()) {
    error(item, "expected a list of strings, found " + describe(item.node));
    return;
  }
  out.clear();
  size_t index = 0;
  for (const YAML::Node& element : item.node) {
    Item child{element, index_path(item.path, index++), element.Mark()};
    std::string value;
    if (read_string(child, value)) out.push_back(value);
  }
}

void Loader::read_tls(const Item& item, TlsConfig& tls) {
  // Writing a tls section turns TLS on; "enabled: false" keeps the section but switches it off.
  tls.enabled = true;
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 2> versions{{
      {"1.2", "1.2"},
      {"1.3", "1.3"},
  }};
  read_map(item, {
      {"enabled", false, [&](const Item& v) { read_bool(v, tls.enabled); }},
      {"certificates", true,
       [&](const Item& v) {
         read_list(v, "certificate", tls.certificates, [this](const Item& e, TlsCertificateConfig& c) {
           read_map(e, {
               {"cert", true, [&](const Item& f) { if (read_string(f, c.cert)) c.cert = resolve_path(c.cert); }},
               {"key", true, [&](const Item& f) { if (read_string(f, c.key)) c.key = resolve_path(c.key); }},
           });
         });
       }},
      {"min_version", false,
       [&](const Item& v) {
         std::string_view chosen;
         if (read_choice(v, versions, chosen)) tls.min_version = std::string(chosen);
       }},
      {"ciphers", false, [&](const Item& v) { read_string(v, tls.ciphers); }},
      {"ciphersuites", false, [&](const Item& v) { read_string(v, tls.ciphersuites); }},
      {"groups", false, [&](const Item& v) { read_string(v, tls.groups); }},
      {"alpn", false, [&](const Item& v) { read_string_list(v, tls.alpn); }},
      {"strict_sni", false, [&](const Item& v) { read_bool(v, tls.strict_sni); }},
      {"check_host", false, [&](const Item& v) { read_bool(v, tls.check_host); }},
      {"ticket_key_file", false,
       [&](const Item& v) {
         if (read_string(v, tls.ticket_key_file)) tls.ticket_key_file = resolve_path(tls.ticket_key_file);
       }},
      {"session_cache_size", false,
       [&](const Item& v) { read_integer(v, 0, 10'000'000, tls.session_cache_size); }},
      {"session_tickets", false, [&](const Item& v) { read_bool(v, tls.session_tickets); }},
      {"record_layer", false,
       [&](const Item& v) {
         static constexpr std::array<std::pair<std::string_view, std::string_view>, 2> layers{
             {{"sprayer", "sprayer"}, {"openssl", "openssl"}}};
         std::string_view chosen;
         if (read_choice(v, layers, chosen)) tls.record_layer = std::string(chosen);
       }},
      {"session_timeout", false,
       [&](const Item& v) { read_duration(v, std::chrono::seconds(1), std::chrono::hours(7 * 24), tls.session_timeout); }},
  });
}

void Loader::read_server(const Item& item, ServerConfig& server) {
  read_map(item, {
      {"id", true, [&](const Item& v) { read_name(v, server.id); }},
      {"address", true, [&](const Item& v) { read_endpoint(v, false, server.address); }},
      {"weight", false, [&](const Item& v) { read_integer(v, 1, 1000, server.weight); }},
      {"tls", false, [&](const Item& v) { server_tls_.emplace(item.path, v); }},
  });
}

void Loader::read_upstream_tls(const Item& item, UpstreamTlsConfig& tls) {
  // As for listeners, writing a tls block turns TLS on unless it says "enabled: false".
  tls.enabled = true;
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 2> versions{{
      {"1.2", "1.2"},
      {"1.3", "1.3"},
  }};
  auto file = [this](std::string& out) {
    return [this, &out](const Item& v) {
      if (read_string(v, out)) out = resolve_path(out);
    };
  };
  read_map(item, {
      {"enabled", false, [&](const Item& v) { read_bool(v, tls.enabled); }},
      {"verify", false, [&](const Item& v) { read_bool(v, tls.verify); }},
      {"ca_file", false, file(tls.ca_file)},
      {"sni", false,
       [&](const Item& v) {
         if (read_string(v, tls.sni) &&
             (tls.sni.size() > 253 || tls.sni.find_first_of(" \t/:@") != std::string::npos))
           error(v, "must be a host name");
       }},
      {"client_cert", false, file(tls.client_cert)},
      {"client_key", false, file(tls.client_key)},
      {"min_version", false,
       [&](const Item& v) {
         std::string_view chosen;
         if (read_choice(v, versions, chosen)) tls.min_version = std::string(chosen);
       }},
  });
  if (tls.client_cert.empty() != tls.client_key.empty())
    error(item, "client_cert and client_key must be given together");
}

void Loader::apply_server_tls(Config& config) {
  for (size_t i = 0; i < config.servers.size(); ++i) {
    ServerConfig& server = config.servers[i];
    server.tls = config.upstream.tls;
    auto it = server_tls_.find(index_path("servers", i));
    if (it == server_tls_.end()) continue;
    read_upstream_tls(it->second, server.tls);
  }
}

void Loader::read_timeouts(const Item& item, TimeoutConfig& timeouts) {
  // Zero would mean "expire at once" to a libuv timer, never "no timeout": rejected everywhere.
  auto timeout = [this](Duration& out, Duration min = Duration(1)) {
    return [this, &out, min](const Item& v) { read_duration(v, min, max_timeout, out); };
  };
  read_map(item, {
      {"client_header", false, timeout(timeouts.client_header)},
      {"client_idle", false, timeout(timeouts.client_idle)},
      {"client_body", false, timeout(timeouts.client_body)},
      {"client_send", false, timeout(timeouts.client_send)},
      {"upstream_connect", false, timeout(timeouts.upstream_connect)},
      // Long-poll requests (ActiveSync Ping) legitimately wait for minutes; below a second
      // this can only be a unit mistake.
      {"upstream_response", false, timeout(timeouts.upstream_response, std::chrono::seconds(1))},
      {"upstream_idle", false, timeout(timeouts.upstream_idle)},
      {"drain", false, timeout(timeouts.drain)},
      {"upgrade", false, timeout(timeouts.upgrade)},
  });
}

void Loader::read_limits(const Item& item, LimitConfig& limits) {
  read_map(item, {
      {"max_connections", false, [&](const Item& v) { read_integer(v, 1, 10'000'000, limits.max_connections); }},
      {"max_header_bytes", false, [&](const Item& v) { read_size(v, 1 << 10, 1 << 20, limits.max_header_bytes); }},
      {"max_header_count", false, [&](const Item& v) { read_integer(v, 1, 10'000, limits.max_header_count); }},
      {"max_uri_length", false, [&](const Item& v) { read_size(v, 256, 1 << 20, limits.max_uri_length); }},
      {"max_body_bytes", false,
       [&](const Item& v) { read_size64(v, 0, uint64_t(1) << 50, limits.max_body_bytes); }},
  });
}

void Loader::read_upstream(const Item& item, UpstreamConfig& upstream) {
  read_map(item, {
      {"max_idle_per_server", false,
       [&](const Item& v) { read_integer(v, 0, 100'000, upstream.max_idle_per_server); }},
      {"max_requests_per_connection", false,
       [&](const Item& v) {
         read_integer(v, 0, std::numeric_limits<uint32_t>::max(), upstream.max_requests_per_connection);
       }},
      {"tls", false, [&](const Item& v) { read_upstream_tls(v, upstream.tls); }},
  });
}

void Loader::read_http(const Item& item, HttpConfig& http) {
  read_map(item, {
      {"preserve_host", false, [&](const Item& v) { read_bool(v, http.preserve_host); }},
      {"via", false,
       [&](const Item& v) {
         if (read_string(v, http.via) && !http.via.empty() && !is_http_token(http.via)) {
           error(v, "must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~), or \"\" for no Via header");
         }
       }},
      {"x_forwarded", false, [&](const Item& v) { read_bool(v, http.x_forwarded); }},
      {"allow_upgrade", false, [&](const Item& v) { read_bool(v, http.allow_upgrade); }},
      {"buffer_high_watermark", false,
       [&](const Item& v) { read_size(v, 1 << 10, 1 << 30, http.buffer_high_watermark); }},
      {"buffer_low_watermark", false,
       [&](const Item& v) { read_size(v, 0, 1 << 30, http.buffer_low_watermark); }},
  });
}

void Loader::read_admin(const Item& item, AdminConfig& admin) {
  read_map(item, {
      {"enabled", false, [&](const Item& v) { read_bool(v, admin.enabled); }},
      {"address", false, [&](const Item& v) { read_endpoint(v, true, admin.address); }},
      {"token", false, [&](const Item& v) { read_token(v, admin.token); }},
      {"token_file", false, [&](const Item& v) { read_token_file(v, admin.token_file, admin.token); }},
      {"read_token", false, [&](const Item& v) { read_token(v, admin.read_token); }},
      {"read_token_file", false, [&](const Item& v) { read_token_file(v, admin.read_token_file, admin.read_token); }},
      {"state_file", false,
       [&](const Item& v) {
         if (read_string(v, admin.state_file)) admin.state_file = resolve_path(admin.state_file);
       }},
  });
  for (const char* key : {"token", "read_token"}) {
    std::string path = join(item.path, key);
    std::string file_path = path + "_file";
    if (marks_.contains(path) && marks_.contains(file_path))
      error(marks_[file_path], file_path, "give " + std::string(key) + " or " + key + "_file, not both");
  }
}

void Loader::read_token(const Item& item, std::string& out) {
  if (read_string(item, out) && !is_visible_ascii(out))
    error(item, "must be printable ASCII without spaces (it is sent as an HTTP bearer token)");
}

void Loader::read_token_file(const Item& item, std::string& path, std::string& token) {
  if (!read_string(item, path)) return;
  if (path.empty()) return;
  path = resolve_path(path);
  std::string text;
  if (std::string problem = read_whole_file(path, text); !problem.empty()) {
    error(item, path + ": " + problem);
    return;
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (text.empty() || !is_visible_ascii(text)) {
    error(item, path + ": must hold one token of printable ASCII without spaces");
    return;
  }
  token = std::move(text);
}

void Loader::read_log(const Item& item, LogConfig& log) {
  static constexpr std::array<std::pair<std::string_view, LogLevel>, 4> levels{{
      {"debug", LogLevel::debug},
      {"info", LogLevel::info},
      {"warn", LogLevel::warn},
      {"error", LogLevel::error},
  }};
  read_map(item, {
      {"level", false, [&](const Item& v) { read_choice(v, levels, log.level); }},
  });
}

void Loader::read_access_log(const Item& item, AccessLogConfig& access_log) {
  static constexpr std::array<std::pair<std::string_view, AccessLogFormat>, 2> formats{{
      {"json", AccessLogFormat::json},
      {"combined", AccessLogFormat::combined},
  }};
  read_map(item, {
      {"enabled", false, [&](const Item& v) { read_bool(v, access_log.enabled); }},
      {"path", false,
       [&](const Item& v) {
         if (!read_string(v, access_log.path)) return;
         if (access_log.path.empty())
           error(v, "must be a file name or \"stderr\"");
         else if (access_log.path != "stderr")
           access_log.path = resolve_path(access_log.path);
       }},
      {"format", false, [&](const Item& v) { read_choice(v, formats, access_log.format); }},
      {"max_queued_bytes", false,
       [&](const Item& v) { read_size64(v, 64u << 10, uint64_t{1} << 32, access_log.max_queued_bytes); }},
      {"mask_query", false,
       [&](const Item& v) {
         std::vector<std::string> names;
         read_string_list(v, names);
         for (const auto& name : names) {
           if (name.empty() || name.find_first_of("=&# ") != std::string::npos) {
             error(v, "each entry must be a query parameter name (no '=', '&', '#' or space)");
             return;
           }
         }
         access_log.mask_query = std::move(names);
       }},
  });
}

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
    std::string name_path = join(step_item.path, "name");
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
    if (!usable(kind_path) || failed_.contains(name_path)) continue;
    bool takes_name = step.kind == "header" || step.kind == "cookie" || step.kind == "query";
    if (takes_name && step.name.empty()) {
      if (marks_.contains(name_path)) {
        error(marks_[name_path], name_path, "must not be empty for kind " + step.kind);
      } else {
        error(step_item.mark, name_path, "required for kind " + step.kind);
      }
    } else if (!takes_name && marks_.contains(name_path)) {
      error(marks_[name_path], name_path, "only header, cookie and query extractors take a name");
    } else if (step.kind != "query" && takes_name && !is_http_token(step.name)) {
      error(marks_[name_path], name_path, "must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)");
    } else if (step.kind == "query" && !is_visible_ascii(step.name)) {
      error(marks_[name_path], name_path, "must be printable ASCII without spaces");
    }
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

void Loader::check_user_map(const AffinityConfig& affinity) {
  // Aliases are compared with the normalised user, so one that normalisation would change
  // can never match: a silent misroute unless it is caught here.
  for (const auto& [alias, user_key] : affinity.map) {
    std::string path = join("affinity.map", alias);
    if (!usable(path)) continue;
    auto is_space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
    std::string problem;
    if (is_space(alias.front()) || is_space(alias.back())) {
      problem = "users are trimmed of surrounding white space";
    } else if (affinity.notes_canonical && alias.size() >= 3 && (alias[0] == 'c' || alias[0] == 'C') &&
               (alias[1] == 'n' || alias[1] == 'N') && alias[2] == '=') {
      problem = "notes_canonical is on, so \"CN=\" names are reduced to their common name";
    } else if (affinity.strip_domain && alias.find_first_of("@\\") != std::string::npos) {
      problem = "strip_domain is on, so users have no domain; write the alias without it";
    } else if (affinity.lower_case &&
               std::any_of(alias.begin(), alias.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
      problem = "lower_case is on, so users have no upper-case letters; write the alias in lower case";
    }
    if (!problem.empty()) error(marks_[path], path, "this alias can never match: " + problem);
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

void Loader::check_ownership(const OwnershipConfig& ownership) {
  const std::string source = "ownership.source";
  if (usable(source) && ownership.source != OwnershipSourceKind::none) {
    std::string needed;
    bool empty = false;
    std::string kind;
    switch (ownership.source) {
      case OwnershipSourceKind::sqlite:
        needed = "ownership.sqlite_path", empty = ownership.sqlite_path.empty(), kind = "sqlite";
        break;
      case OwnershipSourceKind::postgresql:
        needed = "ownership.postgresql", empty = ownership.postgresql.empty(), kind = "postgresql";
        break;
      case OwnershipSourceKind::mariadb:
        needed = "ownership.mariadb", empty = !marks_.contains(needed), kind = "mariadb";
        break;
      case OwnershipSourceKind::odbc:
        needed = "ownership.odbc", empty = !marks_.contains(needed), kind = "odbc";
        break;
      case OwnershipSourceKind::none: break;
    }
    if (empty && !failed_.contains(needed)) {
      if (marks_.contains(needed)) {
        error(marks_[needed], needed, "must not be empty when source is " + kind);
      } else {
        error(marks_[source], needed, "required when source is " + kind);
      }
    }
  }
  // A password file that cannot be read fails every connect: say so at load time. Its
  // content is never read here, nor shown.
  for (const std::string& key : {std::string("ownership.mariadb.password_file"), std::string("ownership.odbc.password_file")}) {
    const std::string& path = key == "ownership.odbc.password_file" ? ownership.odbc.password_file
                                                                    : ownership.mariadb.password_file;
    if (usable(key) && !path.empty() && ::access(path.c_str(), R_OK) != 0) {
      error(marks_[key], key, "cannot read " + path + ": " + std::strerror(errno));
    }
  }
  const std::string min = "ownership.reconnect_min";
  const std::string max = "ownership.reconnect_max";
  if (failed_.contains(min) || failed_.contains(max) || ownership.reconnect_min <= ownership.reconnect_max) return;
  if (marks_.contains(min)) {
    error(marks_[min], min, "must not exceed reconnect_max (" + format_duration(ownership.reconnect_max) + ")");
  } else {
    error(marks_[max], max, "must not be below reconnect_min (" + format_duration(ownership.reconnect_min) + ")");
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

bool Loader::expect_scalar(const Item& item, std::string_view expected) {
  if (item.node.IsScalar()) return true;
  if (item.node.IsMap() || item.node.IsSequence()) {
    error(item, "expected " + std::string(expected) + ", found " + describe(item.node));
  } else {
    error(item, "missing value, expected " + std::string(expected));
  }
  return false;
}

bool Loader::read_integer(const Item& item, uint64_t min, uint64_t max, uint32_t& out) {
  if (!expect_scalar(item, "an integer")) return false;
  std::string_view text = item.node.Scalar();
  bool plain = !is_quoted(item.node) || item.node.Tag() == int_tag;
  bool negative = text.size() > 1 && text.front() == '-' && all_digits(text.substr(1));
  if (!plain || (!negative && !all_digits(text))) {
    error(item, "expected an integer, found " + describe(item.node));
    return false;
  }
  uint64_t value = 0;
  std::string_view digits = text;
  if (negative || !take_number(digits, value) || value < min || value > max) {
    error(item, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    return false;
  }
  out = static_cast<uint32_t>(value);
  return true;
}

bool Loader::read_bool(const Item& item, bool& out) {
  if (!expect_scalar(item, "true or false")) return false;
  // YAML 1.1 spellings (yes/no/on/off) are refused: "no" as a country code or a name has
  // bitten enough people.
  bool plain = !is_quoted(item.node) || item.node.Tag() == bool_tag;
  const std::string& text = item.node.Scalar();
  if (!plain || (text != "true" && text != "false")) {
    error(item, "expected true or false, found " + describe(item.node));
    return false;
  }
  out = text == "true";
  return true;
}

bool Loader::read_string(const Item& item, std::string& out) {
  if (item.node.IsNull()) {
    error(item, "missing value, expected a string (write \"\" for an empty one)");
    return false;
  }
  if (!expect_scalar(item, "a string")) return false;
  out = item.node.Scalar();
  return true;
}

bool Loader::read_name(const Item& item, std::string& out) {
  if (!read_string(item, out)) return false;
  if (out.empty()) {
    error(item, "must not be empty");
  } else if (out.size() > max_name_length) {
    error(item, "must be at most " + std::to_string(max_name_length) + " characters");
  } else if (!is_name(out)) {
    error(item, "may contain only letters, digits, \"_\", \".\" and \"-\"");
  } else {
    return true;
  }
  return false;
}

bool Loader::read_duration(const Item& item, Duration min, Duration max, Duration& out) {
  if (!expect_scalar(item, "a duration such as \"30s\"")) return false;
  Duration value{};
  const std::string& text = item.node.Scalar();
  if (std::string problem = duration_problem(text, value); !problem.empty()) {
    error(item, "invalid duration " + quoted(text) + ": " + problem);
    return false;
  }
  if (value < min || value > max) {
    error(item, "must be between " + format_duration(min) + " and " + format_duration(max));
    return false;
  }
  out = value;
  return true;
}

bool Loader::read_size(const Item& item, uint64_t min, uint64_t max, uint32_t& out) {
  uint64_t value = 0;
  if (!read_size64(item, min, std::min<uint64_t>(max, UINT32_MAX), value)) return false;
  out = static_cast<uint32_t>(value);
  return true;
}

bool Loader::read_size64(const Item& item, uint64_t min, uint64_t max, uint64_t& out) {
  if (!expect_scalar(item, "a size such as \"64KiB\"")) return false;
  uint64_t value = 0;
  const std::string& text = item.node.Scalar();
  if (std::string problem = size_problem(text, value); !problem.empty()) {
    error(item, "invalid size " + quoted(text) + ": " + problem);
    return false;
  }
  if (value < min || value > max) {
    error(item, "must be between " + format_size(min) + " and " + format_size(max));
    return false;
  }
  out = value;
  return true;
}

bool Loader::read_endpoint(const Item& item, bool numeric_only, Endpoint& out) {
  if (!expect_scalar(item, "an address such as \"127.0.0.1:8080\"")) return false;
  Endpoint value;
  const std::string& text = item.node.Scalar();
  if (std::string problem = endpoint_problem(text, value); !problem.empty()) {
    error(item, "invalid address " + quoted(text) + ": " + problem);
    return false;
  }
  if (numeric_only && !is_ipv4_literal(value.host) && !is_ipv6_literal(value.host)) {
    error(item, "must be a numeric IP address and port such as \"0.0.0.0:443\" or \"[::]:443\" "
                "(a host name is not resolved for a listening address)");
    return false;
  }
  if (value.port == 0) {
    error(item, "port must be between 1 and 65535");
    return false;
  }
  out = std::move(value);
  return true;
}

void Loader::check_listeners(const Config& config) {
  std::map<std::string, std::string> names;      // name → path of its first listener
  std::map<std::string, std::string> addresses;  // address_key → path of its first listener
  for (size_t i = 0; i < config.listeners.size(); ++i) {
    const ListenerConfig& listener = config.listeners[i];
    std::string path = index_path("listeners", i);
    std::string name_path = path + ".name";
    if (usable(name_path)) {
      auto [first, inserted] = names.emplace(listener.name, name_path);
      if (!inserted) {
        error(marks_[name_path], name_path, "duplicate listener name " + quoted(listener.name) +
                                                " (first at line " + std::to_string(line_of(first->second)) + ")");
      }
    }
    std::string address_path = path + ".address";
    if (usable(address_path)) {
      auto [first, inserted] = addresses.emplace(address_key(listener.address), address_path);
      if (!inserted) {
        error(marks_[address_path], address_path,
              "another listener already uses " + listener.address.to_string() + " (line " +
                  std::to_string(line_of(first->second)) + ")");
      }
    }
  }
  // The admin listener binds in the same process; sharing an address would make one of the
  // two binds fail at start, long after the config was declared valid.
  if (!config.admin.enabled || failed_.contains("admin.enabled") || failed_.contains("admin.address")) return;
  auto clash = addresses.find(address_key(config.admin.address));
  if (clash == addresses.end()) return;
  if (marks_.contains("admin.address")) {
    error(marks_["admin.address"], "admin.address",
          "the listener at line " + std::to_string(line_of(clash->second)) + " already uses " +
              config.admin.address.to_string());
  } else {
    error(marks_[clash->second], clash->second,
          "clashes with the admin listener (admin.address defaults to " + config.admin.address.to_string() +
              "); change one of them or set admin.enabled: false");
  }
}

void Loader::check_servers(const Config& config) {
  std::map<std::string, std::string> ids;  // id → path of its first server
  for (size_t i = 0; i < config.servers.size(); ++i) {
    std::string id_path = index_path("servers", i) + ".id";
    if (!usable(id_path)) continue;
    auto [first, inserted] = ids.emplace(config.servers[i].id, id_path);
    if (!inserted) {
      error(marks_[id_path], id_path, "duplicate server id " + quoted(config.servers[i].id) + " (first at line " +
                                          std::to_string(line_of(first->second)) + ")");
    }
  }
}

void Loader::check_watermarks(const Config& config) {
  const std::string low = "http.buffer_low_watermark";
  const std::string high = "http.buffer_high_watermark";
  if (failed_.contains(low) || failed_.contains(high)) return;
  if (config.http.buffer_low_watermark < config.http.buffer_high_watermark) return;
  // Point at the key the operator wrote; a default cannot be the mistake.
  if (marks_.contains(low)) {
    error(marks_[low], low, "must be less than buffer_high_watermark (" +
                                format_size(config.http.buffer_high_watermark) + ")");
  } else {
    error(marks_[high], high, "must be greater than buffer_low_watermark (" +
                                  format_size(config.http.buffer_low_watermark) + ")");
  }
}

}  // namespace

LoadResult load_file(const std::string& path) {
  std::string text;
  if (std::string problem = read_whole_file(path, text); !problem.empty()) {
    LoadResult result;
    result.errors.push_back({path, 0, 0, "", std::move(problem)});
    return result;
  }
  return load_string(text, path);
}

LoadResult load_string(std::string_view yaml, const std::string& file_name) {
  return Loader(file_name).load(yaml);
}

bool parse_duration(std::string_view text, Duration& out) { return duration_problem(text, out).empty(); }

bool parse_size(std::string_view text, uint64_t& out) { return size_problem(text, out).empty(); }

bool parse_endpoint(std::string_view text, Endpoint& out) { return endpoint_problem(text, out).empty(); }

std::string duration_text(Duration value) { return format_duration(value); }

std::string size_text(uint64_t bytes) { return format_size(bytes); }

std::string Endpoint::to_string() const {
  std::string port_text = std::to_string(port);
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + port_text;
  return host + ":" + port_text;
}

ConfigError Config::error_at(const std::string& key, std::string message,
                             std::initializer_list<std::string_view> fallbacks) const {
  auto it = positions.find(key);
  for (auto fallback = fallbacks.begin(); it == positions.end() && fallback != fallbacks.end(); ++fallback)
    it = positions.find(std::string(*fallback));
  if (it == positions.end()) return {source, 0, 0, key, std::move(message)};
  return {source, it->second.line, it->second.column, key, std::move(message)};
}

std::string ConfigError::to_string() const {
  // Parts that are unknown are left out rather than printed as 0 or an empty field, so the
  // common forms are "file:line:column: key: message" and "file: message".
  std::string text = file;
  if (line > 0) {
    text += ":" + std::to_string(line);
    if (column > 0) text += ":" + std::to_string(column);
  }
  text += ": ";
  if (!key.empty()) text += key + ": ";
  text += message;
  return text;
}

}  // namespace sprayer::conf
