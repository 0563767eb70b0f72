// Sorted vectors rather than hash maps: built once per (re)load, looked up without allocating.
#include "proxy/tls/tls_names.h"

#include <algorithm>

namespace sprayer::proxy {

namespace {

constexpr size_t kMaxHostName = 253;

char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

bool entry_less(const std::pair<std::string, size_t>& e, std::string_view name) { return e.first < name; }

}  // namespace

bool TlsNameTable::insert(std::vector<Entry>& table, std::string name, size_t set) {
  auto it = std::lower_bound(table.begin(), table.end(), std::string_view(name), entry_less);
  if (it != table.end() && it->first == name) return false;
  table.insert(it, Entry(std::move(name), set));
  return true;
}

size_t TlsNameTable::lookup(const std::vector<Entry>& table, std::string_view name) {
  auto it = std::lower_bound(table.begin(), table.end(), name, entry_less);
  return (it != table.end() && it->first == name) ? it->second : npos;
}

bool TlsNameTable::add(std::string_view name, size_t set) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > kMaxHostName) return false;
  if (name.size() > 2 && name.substr(0, 2) == "*.") {
    std::string_view suffix = name.substr(2);
    if (suffix.find('*') != std::string_view::npos || suffix.front() == '.') return false;
    return insert(wildcard_, lowered(suffix), set);
  }
  if (name.find('*') != std::string_view::npos) return false;
  return insert(exact_, lowered(name), set);
}

size_t TlsNameTable::find(std::string_view host) const {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  if (host.empty() || host.size() > kMaxHostName) return npos;
  char buf[kMaxHostName];
  for (size_t i = 0; i < host.size(); ++i) buf[i] = lower(host[i]);
  std::string_view name(buf, host.size());
  size_t set = lookup(exact_, name);
  if (set != npos) return set;
  size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot + 1 == name.size()) return npos;
  return lookup(wildcard_, name.substr(dot + 1));
}

}  // namespace sprayer::proxy
