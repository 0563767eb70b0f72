// Who may call what on the admin API. State changes (POST, PUT, DELETE, PATCH) need the
// write token when one is set, and always a JSON content type or the X-Sprayer-Admin header
// and no foreign Origin: a browser's cross-site form can send neither header, so a page on
// another site cannot drain a server through an operator's browser (CSRF). Reads that tell
// about users and traffic (/metrics, /api/v1/route) are open only on a loopback listener.
#pragma once

#include <string>
#include <string_view>

#include "conf/config.h"
#include "proxy/control/admin_server.h"

namespace sprayer::proxy {

struct AdminVerdict {
  int status = 0;     // 0: allowed; else 401 (no token given), 403 (wrong token or refused)
  std::string error;  // for the answer and the log; never holds a token
  bool ok() const { return status == 0; }
};

bool is_state_change(std::string_view method);
// /metrics and /api/v1/route: readable without a token only on a loopback listener.
bool is_guarded_read(std::string_view path);
bool is_loopback(const conf::Endpoint& address);

// Constant time in the tokens' contents (each is hashed, the digests compared with CRYPTO_memcmp).
bool tokens_equal(std::string_view a, std::string_view b);

AdminVerdict check_admin_request(const AdminRequest& request, std::string_view path, const conf::AdminConfig& config);

}  // namespace sprayer::proxy
