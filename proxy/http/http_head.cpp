// Header-rewriting rules for both directions; no I/O, unit-tested in tests/unit/http_head_test.cpp.
#include "proxy/http/http_head.h"

#include <cstdio>
#include <iterator>
#include <optional>

namespace sprayer::proxy {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

void append_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

FieldKind classify_field(std::string_view n) {
  switch (n.size()) {
    case 2: return iequals(n, "te") ? FieldKind::te : FieldKind::other;
    case 3: return iequals(n, "via") ? FieldKind::via : FieldKind::other;
    case 4: return iequals(n, "host") ? FieldKind::host : FieldKind::other;
    case 7: return iequals(n, "upgrade") ? FieldKind::upgrade : FieldKind::other;
    case 10:
      if (iequals(n, "connection")) return FieldKind::connection;
      return iequals(n, "keep-alive") ? FieldKind::keep_alive : FieldKind::other;
    case 14: return iequals(n, "content-length") ? FieldKind::content_length : FieldKind::other;
    case 15: return iequals(n, "x-forwarded-for") ? FieldKind::x_forwarded_for : FieldKind::other;
    case 16:
      if (iequals(n, "proxy-connection")) return FieldKind::proxy_connection;
      return iequals(n, "x-forwarded-host") ? FieldKind::x_forwarded_host : FieldKind::other;
    case 17:
      if (iequals(n, "transfer-encoding")) return FieldKind::transfer_encoding;
      return iequals(n, "x-forwarded-proto") ? FieldKind::x_forwarded_proto : FieldKind::other;
    case 18: return iequals(n, "proxy-authenticate") ? FieldKind::proxy_authenticate : FieldKind::other;
    case 19: return iequals(n, "proxy-authorization") ? FieldKind::proxy_authorization : FieldKind::other;
    default: return FieldKind::other;
  }
}

void HttpHead::clear() {
  arena_.clear();
  fields_.clear();
  start_off_ = start_len_ = 0;
  last_ = Last::none;
}

void HttpHead::release() {
  clear();
  std::string().swap(arena_);
  std::vector<Field>().swap(fields_);
}

void HttpHead::shrink() {
  arena_.shrink_to_fit();
  fields_.shrink_to_fit();
}

void HttpHead::append_start(const char* at, size_t len) {
  if (last_ != Last::start) {
    start_off_ = static_cast<uint32_t>(arena_.size());
    start_len_ = 0;
    last_ = Last::start;
  }
  arena_.append(at, len);
  start_len_ += static_cast<uint32_t>(len);
}

void HttpHead::append_name(const char* at, size_t len) {
  if (last_ != Last::name) {
    fields_.push_back(Field{static_cast<uint32_t>(arena_.size()), 0, 0, 0});
    last_ = Last::name;
  }
  arena_.append(at, len);
  fields_.back().name_len += static_cast<uint32_t>(len);
}

void HttpHead::append_value(const char* at, size_t len) {
  if (fields_.empty()) return;
  if (last_ != Last::value) {
    fields_.back().value_off = static_cast<uint32_t>(arena_.size());
    last_ = Last::value;
  }
  arena_.append(at, len);
  fields_.back().value_len += static_cast<uint32_t>(len);
}

std::string_view HttpHead::trimmed(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

size_t HttpHead::find(std::string_view wanted, size_t from) const {
  for (size_t i = from; i < fields_.size(); ++i)
    if (iequals(name(i), wanted)) return i;
  return npos;
}

size_t HttpHead::find(FieldKind wanted, size_t from) const {
  for (size_t i = from; i < fields_.size(); ++i)
    if (kind(i) == wanted) return i;
  return npos;
}

bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (iequals(item, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

HopByHop::HopByHop(const HttpHead& head) : head_(&head) {
  for (size_t i = head.find(FieldKind::connection); i != HttpHead::npos; i = head.find(FieldKind::connection, i + 1)) {
    std::string_view list = head.value(i);
    while (!list.empty()) {
      size_t comma = list.find(',');
      std::string_view item = list.substr(0, comma);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      if (!item.empty()) {
        if (count_ == std::size(tokens_)) {
          count_ = std::size(tokens_) + 1;  // too many to keep: named_in_connection() scans the head
          return;
        }
        tokens_[count_++] = item;
      }
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
}

namespace {

// Whether a field of this kind is hop-by-hop whatever Connection says: yes, no, or "ask the
// Connection tokens" (nullopt).
std::optional<bool> fixed_hop_by_hop(FieldKind kind) {
  switch (kind) {
    case FieldKind::connection:
    case FieldKind::keep_alive:
    case FieldKind::proxy_connection:
    case FieldKind::te:
    case FieldKind::upgrade:
    case FieldKind::proxy_authorization:
    case FieldKind::proxy_authenticate:
      return true;
    // End to end whatever Connection names: bodies are forwarded with their framing intact,
    // and an HTTP/1.1 request without Host would be invalid.
    case FieldKind::transfer_encoding:
    case FieldKind::content_length:
    case FieldKind::host:
      return false;
    default:
      return std::nullopt;
  }
}

}  // namespace

bool HopByHop::contains(size_t field) const {
  if (auto fixed = fixed_hop_by_hop(head_->kind(field))) return *fixed;
  return count_ != 0 && named_in_connection(head_->name(field));
}

bool HopByHop::contains(std::string_view name) const {
  if (auto fixed = fixed_hop_by_hop(classify_field(name))) return *fixed;
  return count_ != 0 && named_in_connection(name);
}

bool HopByHop::named_in_connection(std::string_view name) const {
  if (count_ <= std::size(tokens_)) {
    for (size_t i = 0; i < count_; ++i)
      if (iequals(tokens_[i], name)) return true;
    return false;
  }
  for (size_t i = head_->find(FieldKind::connection); i != HttpHead::npos; i = head_->find(FieldKind::connection, i + 1))
    if (has_token(head_->value(i), name)) return true;
  return false;
}

bool valid_host(std::string_view host) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  auto hex = [&](char c) { return digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); };
  size_t i = 0;
  if (!host.empty() && host.front() == '[') {
    // IP-literal: IPv6 address characters only (no zone, no IPvFuture).
    size_t close = host.find(']');
    if (close == std::string_view::npos || close < 3) return false;
    for (i = 1; i < close; ++i)
      if (!hex(host[i]) && host[i] != ':' && host[i] != '.') return false;
    i = close + 1;
  } else {
    // reg-name or IPv4address: unreserved, pct-encoded, sub-delims but the comma.
    for (; i < host.size() && host[i] != ':'; ++i) {
      char c = host[i];
      bool alnum = digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
      if (alnum || c == '-' || c == '.' || c == '_' || c == '~') continue;
      if (c == '%') {
        if (i + 2 >= host.size() || !hex(host[i + 1]) || !hex(host[i + 2])) return false;
        i += 2;
        continue;
      }
      if (c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' || c == ')' || c == '*' || c == '+' ||
          c == ';' || c == '=')
        continue;
      return false;
    }
    if (i == 0 && i < host.size()) return false;  // ":80" names no host
  }
  if (i == host.size()) return true;
  if (host[i] != ':') return false;
  size_t digits = host.size() - i - 1;
  if (digits > 5) return false;
  for (++i; i < host.size(); ++i)
    if (!digit(host[i])) return false;
  return true;
}

TargetCheck check_target(std::string_view target, std::string_view host, std::string_view method,
                         std::string_view& origin) {
  if (!target.empty() && target.front() == '/') {
    origin = target;
    return TargetCheck::origin;
  }
  if (target == "*") {
    origin = target;
    return iequals(method, "OPTIONS") ? TargetCheck::asterisk : TargetCheck::bad;
  }
  std::string_view rest;
  if (target.size() > 7 && iequals(target.substr(0, 7), "http://"))
    rest = target.substr(7);
  else if (target.size() > 8 && iequals(target.substr(0, 8), "https://"))
    rest = target.substr(8);
  else
    return TargetCheck::bad;
  size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  if (authority.empty() || authority.find('@') != std::string_view::npos) return TargetCheck::bad;
  if (!iequals(authority, host)) return TargetCheck::bad;
  if (slash == std::string_view::npos) {
    origin = "/";
  } else {
    origin = rest.substr(slash);
    if (origin.front() == '?') return TargetCheck::bad;  // "http://h?x" has no path to forward
  }
  return TargetCheck::absolute_same_host;
}

void build_upstream_request(const HttpHead& head, const ForwardOptions& o, std::string& out) {
  out.reserve(out.size() + head.bytes() + 4 * head.count() + o.target.size() + 192);
  out.append(o.method);
  out.push_back(' ');
  out.append(o.target);
  out.append(o.http_minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");

  std::string_view host;
  std::string xff;
  std::string via;
  const HopByHop hop_by_hop(head);
  for (size_t i = 0; i < head.count(); ++i) {
    FieldKind kind = head.kind(i);
    if (o.upgrade && (kind == FieldKind::upgrade || kind == FieldKind::connection)) {
      if (kind == FieldKind::upgrade) append_field(out, head.name(i), head.value(i));
      continue;
    }
    if (hop_by_hop.contains(i)) continue;
    switch (kind) {
      case FieldKind::host:
        if (host.empty()) host = head.value(i);
        if (!o.preserve_host) continue;
        break;
      case FieldKind::x_forwarded_for:
        if (!o.x_forwarded) break;
        if (!xff.empty()) xff.append(", ");
        xff.append(head.value(i));
        continue;
      case FieldKind::x_forwarded_proto:
      case FieldKind::x_forwarded_host:
        // Fields this proxy owns on the upstream side; a client's copies are replaced, not trusted.
        if (o.x_forwarded) continue;
        break;
      case FieldKind::via:
        if (o.via.empty()) break;
        if (!via.empty()) via.append(", ");
        via.append(head.value(i));
        continue;
      default:
        break;
    }
    append_field(out, head.name(i), head.value(i));
  }
  if (!o.preserve_host) append_field(out, "Host", o.upstream_host);
  if (o.upgrade) append_field(out, "Connection", "upgrade");
  if (o.x_forwarded) {
    if (xff.empty()) {
      append_field(out, "X-Forwarded-For", o.client_ip);
    } else {
      xff.append(", ");
      xff.append(o.client_ip);
      append_field(out, "X-Forwarded-For", xff);
    }
    append_field(out, "X-Forwarded-Proto", o.proto);
    if (!host.empty()) append_field(out, "X-Forwarded-Host", host);
  }
  if (!o.via.empty()) {
    if (!via.empty()) via.append(", ");
    via.append(o.http_minor == 0 ? "1.0 " : "1.1 ");
    via.append(o.via);
    append_field(out, "Via", via);
  }
  out.append("\r\n");
}

void build_downstream_response(const HttpHead& head, const ResponseOptions& o, std::string& out) {
  out.reserve(out.size() + head.bytes() + 4 * head.count() + 128);
  char status_line[] = "HTTP/1.1 000 ";
  int status = o.status < 0 ? 0 : o.status % 1000;
  status_line[9] = static_cast<char>('0' + status / 100);
  status_line[10] = static_cast<char>('0' + status / 10 % 10);
  status_line[11] = static_cast<char>('0' + status % 10);
  out.append(status_line, sizeof status_line - 1);
  out.append(o.reason.empty() ? status_reason(o.status) : o.reason);
  out.append("\r\n");
  std::string via;
  const HopByHop hop_by_hop(head);
  for (size_t i = 0; i < head.count(); ++i) {
    FieldKind kind = head.kind(i);
    if (o.upgrade && kind == FieldKind::upgrade) {
      append_field(out, head.name(i), head.value(i));
      continue;
    }
    if (hop_by_hop.contains(i)) continue;
    if (kind == FieldKind::via && !o.via.empty()) {
      if (!via.empty()) via.append(", ");
      via.append(head.value(i));
      continue;
    }
    append_field(out, head.name(i), head.value(i));
  }
  if (!o.via.empty()) {
    if (!via.empty()) via.append(", ");
    via.append("1.1 ");
    via.append(o.via);
    append_field(out, "Via", via);
  }
  if (o.upgrade)
    append_field(out, "Connection", "upgrade");
  else if (o.close && o.status >= 200)
    append_field(out, "Connection", "close");
  out.append("\r\n");
}

std::string_view status_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

void build_error_response(int status, bool close, std::string& out) {
  std::string_view reason = status_reason(status);
  char buf[256];
  int body_len = static_cast<int>(reason.size()) + 1;
  int n = std::snprintf(buf, sizeof buf,
                        "HTTP/1.1 %03d %.*s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                        "Cache-Control: no-store\r\n%s\r\n%.*s\n",
                        status, static_cast<int>(reason.size()), reason.data(), body_len,
                        close ? "Connection: close\r\n" : "", static_cast<int>(reason.size()), reason.data());
  out.append(buf, static_cast<size_t>(n));
}

void build_explained_error(std::string_view why, std::string& out) {
  out.append("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: ");
  out.append(std::to_string(why.size()));
  out.append("\r\nConnection: close\r\n\r\n");
  out.append(why);
}

void build_https_redirect(std::string_view host, uint16_t https_port, std::string_view target, bool close,
                          std::string& out) {
  // Keep the name, replace the port with the HTTPS one (IPv6 literals keep their brackets).
  size_t colon = host.rfind(':');
  if (colon != std::string_view::npos && host.back() != ']') host = host.substr(0, colon);
  static constexpr std::string_view kBody = "Use HTTPS.\n";
  out.append("HTTP/1.1 308 Permanent Redirect\r\nLocation: https://");
  out.append(host);
  if (https_port != 443) out.append(":" + std::to_string(https_port));
  out.append(target);
  out.append("\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(kBody.size()));
  if (close) out.append("\r\nConnection: close");
  out.append("\r\n\r\n");
  out.append(kBody);
}

}  // namespace sprayer::proxy
