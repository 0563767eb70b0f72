// Request record and endpoint classification for poolsim (see exchange.h).
#include "tests/poolsim/exchange.h"

#include "tests/poolsim/text.h"

namespace poolsim {

namespace {

// "/x" or "/x/..." (case-insensitive, like the IIS and Domino servers Traveler runs on).
bool is_under(std::string_view path, std::string_view prefix) {
  return istarts_with(path, prefix) && (path.size() == prefix.size() || path[prefix.size()] == '/');
}

}  // namespace

const char* route_name(Route route) {
  switch (route) {
    case Route::status: return "status";
    case Route::activesync: return "activesync";
    case Route::echo: return "echo";
    case Route::blob: return "blob";
    case Route::early_hints: return "early_hints";
    case Route::available: return "available";
    case Route::stats: return "stats";
    case Route::headers: return "headers";
    case Route::status_code: return "status_code";
    case Route::owner: return "owner";
    case Route::assign: return "assign";
    case Route::availability: return "availability";
    case Route::not_found: return "not_found";
    case Route::bad_request: return "bad_request";
  }
  return "unknown";
}

Route classify(std::string_view path, std::string_view query) {
  if (path.starts_with("/poolsim/")) {
    std::string_view rest = path.substr(9);
    if (rest == "echo") return Route::echo;
    if (rest == "blob") return Route::blob;
    if (rest == "early-hints") return Route::early_hints;
    if (rest == "available") return Route::available;
    if (rest == "stats") return Route::stats;
    if (rest == "headers") return Route::headers;
    if (rest == "owner") return Route::owner;
    if (rest == "assign") return Route::assign;
    if (rest == "availability") return Route::availability;
    if (rest.starts_with("status/")) return Route::status_code;
    return Route::not_found;
  }
  bool traveler_root = iequals(path, "/traveler") || iequals(path, "/servlet/traveler");
  if (traveler_root) {
    auto action = query_param(query, "action");
    if (action && iequals(*action, "getStatus")) return Route::status;
  }
  if (is_under(path, "/Microsoft-Server-ActiveSync") || is_under(path, "/traveler") ||
      is_under(path, "/servlet/traveler")) {
    return Route::activesync;
  }
  return Route::not_found;
}

void Exchange::reset() {
  method = 0;
  http_minor = 1;
  url.clear();
  header_count = 0;
  head_bytes = 0;
  field_open = false;
  upgrade = false;
  keep_alive = true;
  path = {};
  query = {};
  route = Route::not_found;
  body_bytes = 0;
  body_fnv = kFnvOffset;
  status = 200;
  content_type = nullptr;
  extra_headers.clear();
  body.clear();
  delay_ms = 0;
  hold = false;
  early_hints = false;
  blob = false;
  blob_chunked = false;
  blob_size = 0;
  blob_sent = 0;
}

const std::string* Exchange::header(std::string_view name) const {
  for (size_t i = 0; i < header_count; ++i) {
    if (iequals(headers[i].name, name)) return &headers[i].value;
  }
  return nullptr;
}

void Exchange::split_url() {
  std::string_view target = url;
  if (istarts_with(target, "http://") || istarts_with(target, "https://")) {
    size_t authority = target.find("//") + 2;
    size_t slash = target.find('/', authority);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  if (size_t hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);
  size_t q = target.find('?');
  path = target.substr(0, q);
  query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
}

}  // namespace poolsim
