// One HTTP/1.1 message head as parsed by llhttp (pieces appended into one arena), and the
// pure rules that rewrite it on the way through: hop-by-hop removal, X-Forwarded-*, Via.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sprayer::proxy {

bool iequals(std::string_view a, std::string_view b);

// The fields the proxy treats specially, recognised once per field instead of by repeated
// case-insensitive comparisons in every rule.
enum class FieldKind : uint8_t {
  unclassified,
  other,
  host,
  connection,
  keep_alive,
  proxy_connection,
  te,
  upgrade,
  proxy_authorization,
  proxy_authenticate,
  transfer_encoding,
  content_length,
  x_forwarded_for,
  x_forwarded_proto,
  x_forwarded_host,
  via,
};
FieldKind classify_field(std::string_view name);

class HttpHead {
 public:
  struct Field {
    uint32_t name_off, name_len, value_off, value_len;
    mutable FieldKind kind = FieldKind::unclassified;  // classified on first use
  };

  void clear();
  void release();  // clear and give the memory back (idle and parked connections)
  void shrink();   // keep the head, give its spare capacity back (parked requests); views move

  // Parser callbacks; llhttp may deliver each piece in several parts.
  void append_start(const char* at, size_t len);  // request target or response reason
  void append_name(const char* at, size_t len);
  void append_value(const char* at, size_t len);

  size_t bytes() const { return arena_.size(); }
  size_t count() const { return fields_.size(); }
  std::string_view start() const { return view(start_off_, start_len_); }
  std::string_view name(size_t i) const { return view(fields_[i].name_off, fields_[i].name_len); }
  std::string_view value(size_t i) const { return trimmed(view(fields_[i].value_off, fields_[i].value_len)); }
  FieldKind kind(size_t i) const {
    const Field& f = fields_[i];
    if (f.kind == FieldKind::unclassified) f.kind = classify_field(name(i));
    return f.kind;
  }
  // First field with this name (case-insensitive), or npos.
  size_t find(std::string_view name, size_t from = 0) const;
  size_t find(FieldKind kind, size_t from = 0) const;
  static constexpr size_t npos = static_cast<size_t>(-1);

 private:
  enum class Last { none, start, name, value };
  std::string_view view(uint32_t off, uint32_t len) const { return std::string_view(arena_).substr(off, len); }
  static std::string_view trimmed(std::string_view v);

  std::string arena_;
  std::vector<Field> fields_;
  uint32_t start_off_ = 0, start_len_ = 0;
  Last last_ = Last::none;
};

// Does a comma-separated header value (Connection, Transfer-Encoding) contain token?
bool has_token(std::string_view list, std::string_view token);

// Headers that describe one hop and never travel further, plus those named in Connection.
// Built once per head: the Connection values are collected once, not per field checked.
class HopByHop {
 public:
  explicit HopByHop(const HttpHead& head);
  bool contains(std::string_view name) const;
  bool contains(size_t field) const;  // field i of the head given to the constructor

 private:
  bool named_in_connection(std::string_view name) const;

  std::string_view tokens_[8];  // the tokens of the Connection fields (rarely more than one or two)
  size_t count_ = 0;            // over the array size: too many to keep, the head is scanned
  const HttpHead* head_;
};

// A Host field value is `uri-host [ ":" port ]` (RFC 9112 3.2, RFC 3986 3.2.2), or empty. A
// comma is refused too although reg-name allows it: "a,b" is what two Host fields merged by
// some intermediary look like.
bool valid_host(std::string_view host);

enum class TargetCheck { origin, absolute_same_host, asterisk, bad };

// Classify a request target; an absolute-form target naming the Host of the request is
// turned into origin-form in `origin`; one naming another host is `bad` (RFC 9112 3.2.2
// lets us reject it, and forwarding it would let a client pick the upstream's vhost).
TargetCheck check_target(std::string_view target, std::string_view host, std::string_view method,
                         std::string_view& origin);

struct ForwardOptions {
  std::string_view method;
  std::string_view target;          // origin-form
  int http_minor = 1;
  bool x_forwarded = true;
  std::string_view client_ip;
  std::string_view proto = "http";
  std::string_view via;             // pseudonym, empty = none
  bool preserve_host = true;
  std::string_view upstream_host;   // Host to send when !preserve_host (host:port)
  bool upgrade = false;             // pass Upgrade/Connection: upgrade through
};

// Serialise the head to send upstream; appends to out.
void build_upstream_request(const HttpHead& head, const ForwardOptions& options, std::string& out);

struct ResponseOptions {
  int status = 200;
  std::string_view reason;
  std::string_view via;
  bool close = false;               // tell the client this connection ends after the response
  bool upgrade = false;             // 101 Switching Protocols passed through
};

// Serialise the response head to send downstream; appends to out.
void build_downstream_response(const HttpHead& head, const ResponseOptions& options, std::string& out);

// A short complete error response (status line, headers, body).
void build_error_response(int status, bool close, std::string& out);
// 400 with a text body that says why, and Connection: close (plain HTTP on the TLS port).
void build_explained_error(std::string_view why, std::string& out);
// 308 to the same name (its port replaced by `https_port`) and target over HTTPS.
void build_https_redirect(std::string_view host, uint16_t https_port, std::string_view target, bool close,
                          std::string& out);
std::string_view status_reason(int status);

}  // namespace sprayer::proxy
