// Scalar values on their own: durations, sizes and addresses parsed and printed back, names,
// HTTP tokens, "did you mean" suggestions. No YAML here: the walk is in config.cpp.
#include "conf/scalars.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>

namespace sprayer::conf {
namespace detail {

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

namespace {

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

}  // namespace

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

}  // namespace detail

using namespace detail;

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

}  // namespace sprayer::conf
