// The admin API's access rules (see admin_auth.h).
#include "proxy/control/admin_auth.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <array>

#include "affinity/extract_decode.h"
#include "proxy/http/http_head.h"

namespace sprayer::proxy {
namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// The token of "Bearer TOKEN"; empty when the header is another scheme or absent.
std::string_view bearer(std::string_view authorization) {
  authorization = trim(authorization);
  if (authorization.size() < 7 || !iequals(authorization.substr(0, 7), "bearer ")) return {};
  return trim(authorization.substr(7));
}

// The password of "Basic base64(user:password)": what a browser sends once the operator typed
// the read token at its login prompt (any user name). Empty for another scheme.
std::string basic_password(std::string_view authorization) {
  authorization = trim(authorization);
  if (authorization.size() < 6 || !iequals(authorization.substr(0, 6), "basic ")) return {};
  std::string_view encoded = trim(authorization.substr(6));
  auto data = affinity::decode::base64_data_length(encoded);
  if (!data) return {};
  std::string decoded = affinity::decode::base64_decode(encoded.substr(0, *data));
  size_t colon = decoded.find(':');
  return colon == std::string::npos ? std::string() : decoded.substr(colon + 1);
}

// Empty when the request's token is one of `accepted` (empty ones never match). Reads take it
// as a bearer token or, from a browser, as the password of Basic credentials; state changes
// only as a bearer token (a browser sends cached Basic credentials with any cross-site form).
AdminVerdict check_token(const AdminRequest& request, std::string_view first, std::string_view second,
                         bool basic_too = false) {
  if (request.authorization.empty()) return {401, "bearer token required", basic_too};
  std::string password = basic_too ? basic_password(request.authorization) : std::string();
  std::string_view given = password.empty() ? bearer(request.authorization) : std::string_view(password);
  bool match = false;
  // Both compared, whatever the first gave, so the time says nothing about which matched.
  if (!first.empty() && tokens_equal(given, first)) match = true;
  if (!second.empty() && tokens_equal(given, second)) match = true;
  // A browser asks its user again only after a 401.
  if (given.empty() || !match) return {password.empty() ? 403 : 401, "wrong token", !password.empty()};
  return {};
}

bool is_json(std::string_view content_type) {
  std::string_view type = trim(content_type.substr(0, content_type.find(';')));
  return iequals(type, "application/json");
}

// "http://host:port" -> "host:port"; Origin carries no path.
std::string_view origin_authority(std::string_view origin) {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (origin.size() > scheme.size() && iequals(origin.substr(0, scheme.size()), scheme))
      return origin.substr(scheme.size());
  }
  return {};
}

// The host part of a Host header: "127.0.0.1:9100" -> "127.0.0.1", "[::1]:9100" -> "::1".
std::string host_name(std::string_view host) {
  host = trim(host);
  if (!host.empty() && host.front() == '[') {
    size_t end = host.find(']');
    return std::string(host.substr(1, end == std::string_view::npos ? std::string_view::npos : end - 1));
  }
  return std::string(host.substr(0, host.rfind(':')));
}

}  // namespace

bool is_state_change(std::string_view method) {
  return method == "POST" || method == "PUT" || method == "DELETE" || method == "PATCH";
}

bool is_guarded_read(std::string_view path) { return path != "/healthz"; }

bool is_loopback(const conf::Endpoint& address) {
  in_addr v4{};
  if (inet_pton(AF_INET, address.host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, address.host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

bool tokens_equal(std::string_view a, std::string_view b) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> da{}, db{};
  SHA256(reinterpret_cast<const unsigned char*>(a.data()), a.size(), da.data());
  SHA256(reinterpret_cast<const unsigned char*>(b.data()), b.size(), db.data());
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

AdminVerdict check_admin_request(const AdminRequest& request, std::string_view path, const conf::AdminConfig& config) {
  if (is_state_change(request.method)) {
    if (!config.token.empty()) {
      if (AdminVerdict v = check_token(request, config.token, {}); !v.ok()) return v;
    }
    if (!is_json(request.content_type) && request.admin_header.empty())
      return {403, "a state-changing call needs Content-Type: application/json or the header X-Sprayer-Admin: 1"};
    // Without a token on loopback, a page whose own name resolves to 127.0.0.1 (DNS rebinding)
    // would be "same origin": its requests name that host, never a loopback one.
    if (config.token.empty() && is_loopback(config.address)) {
      std::string name = host_name(request.host);
      if (!iequals(name, "localhost") && !is_loopback({name, 1}))
        return {403, "Host must name the loopback admin listener (localhost or a loopback address)"};
    }
    if (!request.origin.empty()) {
      std::string_view authority = origin_authority(request.origin);
      if (authority.empty() || !iequals(authority, trim(request.host)))
        return {403, "cross-origin call refused (Origin is not this admin listener)"};
    }
    return {};
  }
  if (is_guarded_read(path) && !is_loopback(config.address)) {
    if (config.read_token.empty() && config.token.empty())
      return {403, "the admin listener is not on loopback: set admin.read_token to read " + std::string(path)};
    return check_token(request, config.read_token, config.token, true);
  }
  return {};
}

}  // namespace sprayer::proxy
