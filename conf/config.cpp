// YAML → validated Config: the walk of the document, collecting every problem with its
// file:line:column and key path, and the typed readers (integer, duration, ...) sections use.
// Where a key goes: its section's read_* in conf/config_sections_proxy.cpp (listeners,
// servers, TLS, timeouts, limits, upstream, http, admin, log, access_log) or
// conf/config_sections_routing.cpp (affinity, ownership, health, directory); a check across
// keys in conf/config_checks.cpp; a new kind of value (a unit, an address form) in
// conf/scalars.cpp; the Loader's declaration in conf/loader.h.
#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <sstream>
#include <utility>

#include "conf/config.h"
#include "conf/loader.h"
#include "conf/scalars.h"

namespace sprayer::conf {
namespace detail {

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

namespace {

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

}  // namespace

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
    if (!check_documents(yaml)) return {nullptr, std::move(errors_)};
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    error(e.mark, "", "invalid YAML: " + e.msg);
    return {nullptr, std::move(errors_)};
  }
  YAML::Mark start;  // line 1, column 1: where a key missing from an empty file belongs
  auto config = std::make_shared<Config>();
  config->source = file_;
  read_config(Item{root, "", root.IsNull() ? start : root.Mark()}, *config);
  apply_server_tls(*config);
  check_listeners(*config);
  check_servers(*config);
  check_watermarks(*config);
  if (!errors_.empty()) return {nullptr, std::move(errors_)};
  for (const auto& [path, mark] : marks_) config->positions[path] = {one_based(mark.line), one_based(mark.column)};
  return {std::move(config), {}};
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

}  // namespace detail

LoadResult load_file(const std::string& path) {
  std::string text;
  if (std::string problem = detail::read_whole_file(path, text); !problem.empty()) {
    LoadResult result;
    result.errors.push_back({path, 0, 0, "", std::move(problem)});
    return result;
  }
  return load_string(text, path);
}

LoadResult load_string(std::string_view yaml, const std::string& file_name) {
  return detail::Loader(file_name).load(yaml);
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
