// Which certificate set serves a given SNI host name: exact certificate names first, then a
// wildcard one label deep ("*.example.com" covers "a.example.com", not "a.b.example.com").
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sprayer::proxy {

class TlsNameTable {
 public:
  static constexpr size_t npos = static_cast<size_t>(-1);

  // A DNS name from a certificate, any case. "*.example.com" is a wildcard; partial wildcards
  // ("w*.example.com") are ignored as RFC 6125 lets us. The first set to claim a name keeps it,
  // so the configured order decides overlaps. Returns false if the name was not added.
  bool add(std::string_view name, size_t set);

  // The set for a host name as sent in SNI (case-insensitive, one trailing dot allowed), or npos.
  size_t find(std::string_view host) const;

  bool empty() const { return exact_.empty() && wildcard_.empty(); }

 private:
  using Entry = std::pair<std::string, size_t>;
  static bool insert(std::vector<Entry>& table, std::string name, size_t set);
  static size_t lookup(const std::vector<Entry>& table, std::string_view name);

  std::vector<Entry> exact_;     // sorted by name, lower case
  std::vector<Entry> wildcard_;  // suffix after "*.", sorted, lower case
};

}  // namespace sprayer::proxy
