// Loading the TLS files a configuration names, on the control thread: the listeners'
// certificates and ticket keys, and the servers' backend TLS settings.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"
#include "proxy/runtime.h"

namespace sprayer::proxy {

// Loads the certificates, keys and ticket keys of every TLS listener (control thread). An
// error names the listener and the file.
// `previous` (optional, same order): a reload keeps each listener's in-memory ticket keys.
bool load_listener_tls(const conf::Config& config, std::vector<std::shared_ptr<const TlsContext>>& out,
                       std::string& error,
                       const std::vector<std::shared_ptr<const TlsContext>>* previous = nullptr);

// Loads each server's client TLS settings into out[i].tls (control thread). An error names the
// server and the file. Servers with verify: false are logged as a warning.
bool load_server_tls(const conf::Config& config, std::vector<ServerTarget>& out, std::string& error);
// Reload: loads every TLS server's files again; only when all load are they swapped in.
bool reload_server_tls(const conf::Config& config, const std::vector<ServerTarget>& servers, std::string& error);

}  // namespace sprayer::proxy
