// One request/response on a poolsim connection: what the parser collected, which endpoint it
// addresses, and the response planned for it. Reused across keep-alive requests so the strings
// keep their capacity.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace poolsim {

// Endpoint classes; also the keys of the per-class counters in /poolsim/stats.
enum class Route : uint8_t {
  status,       // /traveler?action=getStatus
  activesync,   // /Microsoft-Server-ActiveSync, /traveler..., /servlet/traveler...
  echo,         // /poolsim/echo
  blob,         // /poolsim/blob
  early_hints,  // /poolsim/early-hints
  available,    // /poolsim/available
  stats,        // /poolsim/stats
  headers,      // /poolsim/headers
  status_code,  // /poolsim/status/NNN
  owner,        // /poolsim/owner (--db)
  assign,       // /poolsim/assign (--db)
  availability, // /poolsim/availability (Traveler availability index)
  not_found,
  bad_request,  // malformed requests, counted but never routed
};
constexpr size_t kRouteCount = static_cast<size_t>(Route::bad_request) + 1;
const char* route_name(Route route);

Route classify(std::string_view path, std::string_view query);

struct Header {
  std::string name;
  std::string value;
};

struct Exchange {
  // Request, as parsed.
  uint8_t method = 0;  // llhttp_method_t
  uint8_t http_minor = 1;
  std::string url;
  std::vector<Header> headers;  // first header_count entries are live
  size_t header_count = 0;
  size_t head_bytes = 0;
  bool field_open = false;  // a header name is being appended to
  bool upgrade = false;
  bool keep_alive = true;
  std::string_view path;  // into url, valid from headers-complete on
  std::string_view query;
  Route route = Route::not_found;
  uint64_t body_bytes = 0;
  uint64_t body_fnv = 0;

  // Planned response.
  int status = 200;
  const char* content_type = nullptr;
  std::string extra_headers;  // preformatted "Name: value\r\n" lines
  std::string body;
  uint64_t delay_ms = 0;
  bool hold = false;  // a held request (Ping): a disconnect cancels it instead of waiting
  bool early_hints = false;
  bool blob = false;
  bool blob_chunked = false;
  uint64_t blob_size = 0;
  uint64_t blob_sent = 0;

  void reset();
  bool is_head() const { return method == HTTP_HEAD; }
  // Value of the first header named `name` (case-insensitive), or nullptr.
  const std::string* header(std::string_view name) const;
  // Splits url into path and query; tolerates absolute-form targets.
  void split_url();
};

}  // namespace poolsim
