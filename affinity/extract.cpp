// User extraction steps and the MS-ASHTTP base64 query layout (the decoders they share are
// in extract_decode.h). Every loop is bounded by its input's length.
#include "affinity/extract.h"

#include <algorithm>
#include <array>
#include <optional>

#include "affinity/extract_decode.h"
#include "affinity/rendezvous.h"

namespace sprayer::affinity {
namespace {

using namespace decode;
using Status = ExtractResult::Status;

constexpr std::size_t kMaxDeviceField = 256;

// Outcome of one step: a raw (decoded, not yet validated or normalised) user, none,
// or malformed with a reason.
struct StepOutcome {
  Status status = Status::none;
  std::string user;
  std::string_view error;
};

StepOutcome none() { return {}; }
StepOutcome malformed(std::string_view error) { return {Status::malformed, {}, error}; }
StepOutcome found(std::string user) { return {Status::found, std::move(user), {}}; }

// Wipes memory that held (part of) a password; volatile keeps the stores from being
// optimised away as dead.
void secure_zero(void* p, std::size_t n) noexcept {
  volatile unsigned char* v = static_cast<volatile unsigned char*>(p);
  while (n-- > 0) *v++ = 0;
}

constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

constexpr bool is_blank(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

bool all_blank(std::string_view s) noexcept {
  for (char c : s) {
    if (!is_blank(c)) return false;
  }
  return true;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) noexcept {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// Device ids may be binary GUIDs in the base64 form: log those as hex, not as bytes.
void set_device_field(std::string_view bytes, std::string& field) {
  field.clear();
  if (bytes.size() > kMaxDeviceField) return;
  if (check_text(bytes).empty()) {
    field.assign(bytes);
    return;
  }
  constexpr std::string_view digits = "0123456789abcdef";
  field.reserve(bytes.size() * 2);
  for (char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    field.push_back(digits[b >> 4]);
    field.push_back(digits[b & 0x0F]);
  }
}

void set_decoded_device_field(std::string_view raw, std::string& field) {
  if (percent_decode(raw, true, kMaxDeviceField, field) != DecodeError::ok) {
    field.clear();
  } else if (!check_text(field).empty()) {
    const std::string bytes = std::move(field);
    set_device_field(bytes, field);
  }
}

// Decodes a raw query/cookie value holding a user, bounded so a huge value costs no
// more than max_user_length + 1 bytes of memory.
StepOutcome decode_user(std::string_view raw, bool plus_as_space, std::size_t max_user_length) {
  std::string user;
  switch (percent_decode(raw, plus_as_space, max_user_length, user)) {
    case DecodeError::ok:
      return found(std::move(user));
    case DecodeError::bad_escape:
      return malformed("bad percent-encoding in user");
    case DecodeError::too_long:
      break;
  }
  return malformed("user too long");
}

// ---- request target --------------------------------------------------------------

struct Target {
  std::string_view path;
  std::string_view query;
  bool activesync = false;  // an ActiveSync path
  bool traveler = false;    // /traveler or /servlet/traveler, or below
  bool plain = false;       // the query has name=value pairs (not one base64 value)
};

bool path_is(std::string_view path, std::string_view want) noexcept {
  if (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  return iequals(path, want);
}

bool path_under(std::string_view path, std::string_view prefix) noexcept {
  return starts_with_ci(path, prefix) && (path.size() == prefix.size() || path[prefix.size()] == '/');
}

// A base64 query is one token of the base64 alphabet with at most trailing '='; any
// '&', or an '=' followed by something else, makes it name=value pairs.
bool is_plain_query(std::string_view query) noexcept {
  if (query.find('&') != std::string_view::npos) return true;
  const std::size_t eq = query.find('=');
  if (eq == std::string_view::npos) return false;
  return query.find_first_not_of('=', eq) != std::string_view::npos;
}

Target parse_target(std::string_view target) noexcept {
  // Absolute-form ("http://host/path?q") is legal in a request line; keep its path.
  if (starts_with_ci(target, "http://") || starts_with_ci(target, "https://")) {
    const std::size_t authority = target.find("//") + 2;
    const std::size_t path_start = target.find_first_of("/?", authority);
    target = path_start == std::string_view::npos ? std::string_view{} : target.substr(path_start);
  }
  Target t;
  const std::size_t q = target.find('?');
  t.path = target.substr(0, q);
  if (q != std::string_view::npos) {
    t.query = target.substr(q + 1);
    t.query = t.query.substr(0, t.query.find('#'));  // never sent, but never a parameter
  }
  t.activesync = path_is(t.path, "/Microsoft-Server-ActiveSync") ||
                 path_is(t.path, "/traveler/Microsoft-Server-ActiveSync") ||
                 path_is(t.path, "/servlet/traveler/Microsoft-Server-ActiveSync");
  t.traveler = path_under(t.path, "/traveler") || path_under(t.path, "/servlet/traveler");
  t.plain = is_plain_query(t.query);
  return t;
}

// ---- the steps -------------------------------------------------------------------

StepOutcome activesync_query(const Target& t, std::size_t max_user_length, ExtractResult& result) {
  if (!t.activesync || !t.plain) return none();
  std::optional<std::string_view> user, device_id, device_type, cmd;
  for_each_param(t.query, [&](std::string_view name, std::string_view value) {
    if (!user && name_equals(name, "User")) {
      user = value;
    } else if (!device_id && name_equals(name, "DeviceId")) {
      device_id = value;
    } else if (!device_type && name_equals(name, "DeviceType")) {
      device_type = value;
    } else if (!cmd && name_equals(name, "Cmd")) {
      cmd = value;
    }
    return true;
  });
  if (device_id) set_decoded_device_field(*device_id, result.device_id);
  if (device_type) set_decoded_device_field(*device_type, result.device_type);
  if (cmd) set_decoded_device_field(*cmd, result.cmd);
  if (!user) return none();
  return decode_user(*user, true, max_user_length);
}

// MS-ASHTTP 2.2.1.1.1.1.2.
std::string_view command_name(unsigned code) noexcept {
  switch (code) {
    case 0: return "Sync";
    case 1: return "SendMail";
    case 2: return "SmartForward";
    case 3: return "SmartReply";
    case 4: return "GetAttachment";
    case 9: return "FolderSync";
    case 10: return "FolderCreate";
    case 11: return "FolderDelete";
    case 12: return "FolderUpdate";
    case 13: return "MoveItems";
    case 14: return "GetItemEstimate";
    case 15: return "MeetingResponse";
    case 16: return "Search";
    case 17: return "Settings";
    case 18: return "Ping";
    case 19: return "ItemOperations";
    case 20: return "Provision";
    case 21: return "ResolveRecipients";
    case 22: return "ValidateCert";
    default: return {};
  }
}

// Bounds-checked cursor over the decoded base64 query.
class ByteReader {
 public:
  explicit ByteReader(std::string_view bytes) noexcept : bytes_(bytes) {}

  bool at_end() const noexcept { return pos_ == bytes_.size(); }
  bool byte(unsigned& out) noexcept {
    if (pos_ >= bytes_.size()) return false;
    out = static_cast<unsigned char>(bytes_[pos_++]);
    return true;
  }
  bool bytes(std::size_t n, std::string_view& out) noexcept {
    if (bytes_.size() - pos_ < n) return false;
    out = bytes_.substr(pos_, n);
    pos_ += n;
    return true;
  }

 private:
  std::string_view bytes_;
  std::size_t pos_ = 0;
};

constexpr unsigned kTagUser = 8;  // MS-ASHTTP 2.2.1.1.1.1.3

StepOutcome activesync_base64(const Target& t, ExtractResult& result) {
  if (!t.activesync || t.plain || t.query.empty()) return none();
  std::string encoded;
  if (percent_decode(t.query, false, t.query.size(), encoded) != DecodeError::ok) {
    return malformed("bad percent-encoding in base64 query");
  }
  const auto data_length = base64_data_length(encoded);
  if (!data_length) return malformed("bad base64 query");
  const std::string decoded = base64_decode(std::string_view(encoded).substr(0, *data_length));

  ByteReader reader(decoded);
  unsigned version = 0, command = 0, locale_lo = 0, locale_hi = 0;
  if (!reader.byte(version) || !reader.byte(command) || !reader.byte(locale_lo) ||
      !reader.byte(locale_hi)) {
    return malformed("truncated base64 query");
  }
  unsigned length = 0;
  std::string_view device_id, policy_key, device_type;
  if (!reader.byte(length) || !reader.bytes(length, device_id)) {
    return malformed("truncated base64 query");
  }
  if (length == 0) return malformed("empty device id in base64 query");
  if (!reader.byte(length)) return malformed("truncated base64 query");
  if (length != 0 && length != 4) return malformed("bad policy key length in base64 query");
  if (!reader.bytes(length, policy_key)) return malformed("truncated base64 query");
  if (!reader.byte(length) || !reader.bytes(length, device_type)) {
    return malformed("truncated base64 query");
  }
  if (length == 0) return malformed("empty device type in base64 query");

  std::optional<std::string_view> user;
  while (!reader.at_end()) {
    unsigned tag = 0;
    std::string_view value;
    if (!reader.byte(tag) || !reader.byte(length) || !reader.bytes(length, value)) {
      return malformed("truncated parameter in base64 query");
    }
    if (tag == kTagUser && !user) user = value;
  }
  set_device_field(device_id, result.device_id);
  set_device_field(device_type, result.device_type);
  result.cmd = std::string(command_name(command));
  if (!user) return none();
  return found(std::string(*user));
}

// Users read from the request target: whatever the client was set up to send, unlike the
// login the server authenticates, or a header or cookie an authenticating front end may set.
constexpr bool in_request_target(Source kind) noexcept {
  return kind == Source::activesync_query || kind == Source::activesync_base64 ||
         kind == Source::traveler_url || kind == Source::query;
}

StepOutcome basic_auth(const RequestView& request, std::size_t max_user_length) {
  const auto header = find_header(request, "Authorization");
  if (!header) return none();
  const std::string_view value = trim_ows(*header);
  if (!starts_with_ci(value, "Basic") || (value.size() > 5 && !is_ows(value[5]))) return none();
  const std::string_view token = trim_ows(value.substr(5));
  if (token.empty()) return malformed("empty Basic credentials");
  const auto data_length = base64_data_length(token);
  if (!data_length) return malformed("bad base64 in Basic credentials");

  // Decode only up to the ':' so the password is never materialised; the few password
  // bits that share the last base64 group with the ':' are wiped from `acc`.
  std::string user;
  std::uint32_t acc = 0;
  int bits = 0;
  bool colon = false;
  bool too_long = false;
  for (std::size_t i = 0; i < *data_length && !colon && !too_long; ++i) {
    acc = (acc << 6) | static_cast<std::uint32_t>(base64_value(token[i]));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      const char c = static_cast<char>((acc >> bits) & 0xFF);
      acc &= (1u << bits) - 1;
      if (c == ':') {
        colon = true;
      } else if (user.size() == max_user_length) {
        too_long = true;
      } else {
        user.push_back(c);
      }
    }
  }
  secure_zero(&acc, sizeof acc);
  if (too_long) return malformed("user too long");
  if (!colon) return malformed("Basic credentials without ':'");
  return found(std::move(user));
}

StepOutcome traveler_url(const Target& t, std::size_t max_user_length) {
  if (!t.traveler || !t.plain) return none();
  std::optional<std::string_view> user;
  for_each_param(t.query, [&](std::string_view name, std::string_view value) {
    if (name_equals(name, "user")) user = value;
    return !user;
  });
  if (!user) return none();
  return decode_user(*user, true, max_user_length);
}

StepOutcome header_step(const RequestView& request, std::string_view name,
                        std::size_t max_user_length) {
  if (name.empty()) return none();
  const auto header = find_header(request, name);
  if (!header) return none();
  const std::string_view value = trim_ows(*header);
  if (value.size() > max_user_length) return malformed("user too long");
  return found(std::string(value));
}

StepOutcome cookie_step(const RequestView& request, std::string_view name,
                        std::size_t max_user_length) {
  if (name.empty()) return none();
  for (const Header& header : request.headers) {
    if (!iequals(header.name, "Cookie")) continue;
    std::string_view rest = header.value;
    while (!rest.empty()) {
      const std::size_t semi = rest.find(';');
      const std::string_view pair = trim_ows(rest.substr(0, semi));
      rest = semi == std::string_view::npos ? std::string_view{} : rest.substr(semi + 1);
      const std::size_t eq = pair.find('=');
      if (eq == std::string_view::npos || trim_ows(pair.substr(0, eq)) != name) continue;
      std::string_view value = trim_ows(pair.substr(eq + 1));
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
        value = value.substr(1, value.size() - 2);
      }
      return decode_user(value, false, max_user_length);
    }
  }
  return none();
}

StepOutcome query_step(const Target& t, std::string_view name, std::size_t max_user_length) {
  if (name.empty()) return none();
  std::optional<std::string_view> user;
  for_each_param(t.query, [&](std::string_view param, std::string_view value) {
    if (name_equals(param, name)) user = value;
    return !user;
  });
  if (!user) return none();
  return decode_user(*user, true, max_user_length);
}

}  // namespace

std::string_view to_string(Source source) noexcept {
  switch (source) {
    case Source::none: return "none";
    case Source::activesync_query: return "activesync_query";
    case Source::activesync_base64: return "activesync_base64";
    case Source::basic_auth: return "basic_auth";
    case Source::traveler_url: return "traveler_url";
    case Source::header: return "header";
    case Source::cookie: return "cookie";
    case Source::query: return "query";
  }
  return "none";
}

std::vector<ExtractorStep> default_extractor_order() {
  return {{Source::activesync_query, {}},
          {Source::activesync_base64, {}},
          {Source::basic_auth, {}},
          {Source::traveler_url, {}}};
}

Extractor::Extractor(ExtractorConfig config)
    : config_(std::move(config)), normaliser_(config_.normalise) {}

void Extractor::prefer_login(const RequestView& request, const ExtractorStep* winner, std::string& raw,
                             std::string& key, ExtractResult& result) const {
  result.source = winner->kind;
  const ExtractorStep* end = config_.order.data() + config_.order.size();
  if (std::find_if(winner + 1, end, [](const ExtractorStep& s) { return s.kind == Source::basic_auth; }) == end)
    return;
  // A broken or odd login leaves the key found so far: only a usable one can win.
  StepOutcome login = basic_auth(request, config_.max_user_length);
  if (login.status != Status::found || all_blank(login.user) || !check_text(login.user).empty()) return;
  std::string login_key = normaliser_(login.user);
  if (login_key.empty() || login_key == key) return;
  result.source = Source::basic_auth;
  result.disagreement = true;
  key = std::move(login_key);
  raw = std::move(login.user);
}

ExtractResult Extractor::extract(const RequestView& request) const {
  ExtractResult result;
  const Target target = parse_target(request.target);
  const std::size_t max = config_.max_user_length;
  std::string_view skipped_error;

  for (const ExtractorStep& step : config_.order) {
    StepOutcome outcome;
    switch (step.kind) {
      case Source::none: continue;
      case Source::activesync_query: outcome = activesync_query(target, max, result); break;
      case Source::activesync_base64: outcome = activesync_base64(target, result); break;
      case Source::basic_auth: outcome = basic_auth(request, max); break;
      case Source::traveler_url: outcome = traveler_url(target, max); break;
      case Source::header: outcome = header_step(request, step.name, max); break;
      case Source::cookie: outcome = cookie_step(request, step.name, max); break;
      case Source::query: outcome = query_step(target, step.name, max); break;
    }

    if (outcome.status == Status::found) {
      if (all_blank(outcome.user)) continue;  // "User=" is no user
      if (outcome.user.size() > max) {
        outcome = malformed("user too long");
      } else if (const std::string_view error = check_text(outcome.user); !error.empty()) {
        outcome = malformed(error);
      } else {
        std::string key = normaliser_(outcome.user);
        if (key.empty()) {
          outcome = malformed("user normalises to an empty key");
        } else {
          if (config_.authenticated_wins && in_request_target(step.kind)) {
            prefer_login(request, &step, outcome.user, key, result);
          } else {
            result.source = step.kind;
          }
          result.status = Status::found;
          result.key_hash = hash_key(key);
          result.user_key = std::move(key);
          result.raw_user = std::move(outcome.user);
          result.error = skipped_error;
          return result;
        }
      }
    }
    if (outcome.status == Status::malformed) {
      if (config_.reject_malformed) {
        result.status = Status::malformed;
        result.source = step.kind;
        result.error = outcome.error;
        return result;
      }
      if (skipped_error.empty()) skipped_error = outcome.error;
    }
  }
  result.status = Status::none;
  result.error = skipped_error;
  return result;
}

}  // namespace sprayer::affinity
