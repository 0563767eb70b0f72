// Who may call what on the admin API. State changes (POST, PUT, DELETE, PATCH) need the
// write token when one is set, and always a JSON content type or the X-Sprayer-Admin header
// and no foreign Origin: a browser's cross-site form can send neither header, so a page on
// another site cannot drain a server through an operator's browser (CSRF). Every read but
// /healthz (metrics, the status page and its JSON, servers, ownership, route) is open only on a
// loopback listener; elsewhere it needs the read token (or the write token).
#pragma once

#include <string>
#include <string_view>

#include "conf/config.h"
#include "proxy/control/admin_server.h"

namespace sprayer::proxy {

struct AdminVerdict {
  int status = 0;     // 0: allowed; else 401 (no token given), 403 (wrong token or refused)
  std::string error;  // for the answer and the log; never holds a token
  bool challenge = false;  // a read without credentials: ask a browser for them (WWW-Authenticate: Basic)
  bool ok() const { return status == 0; }
};

bool is_state_change(std::string_view method);
// Every path but /healthz (keepalived's check asks it without a token): readable without a
// token only on a loopback listener.
bool is_guarded_read(std::string_view path);
bool is_loopback(const conf::Endpoint& address);

// Constant time in the tokens' contents (each is hashed, the digests compared with CRYPTO_memcmp).
bool tokens_equal(std::string_view a, std::string_view b);

AdminVerdict check_admin_request(const AdminRequest& request, std::string_view path, const conf::AdminConfig& config);

}  // namespace sprayer::proxy
