// Directory names, filters, DNs and the shared answer cache (see directory.h).
#include "affinity/directory.h"

#include <algorithm>
#include <functional>

#include "affinity/request_view.h"

namespace sprayer::affinity {
namespace {

constexpr bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string fold(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

constexpr int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string directory_name(std::string_view raw) {
  std::string_view s = trim(raw);
  if (s.size() >= 3 && iequals(s.substr(0, 3), "cn=")) return std::string(trim(s.substr(3, s.find('/') - 3)));
  if (const auto backslash = s.rfind('\\'); backslash != std::string_view::npos) s.remove_prefix(backslash + 1);
  return std::string(trim(s));
}

std::string escape_filter_value(std::string_view value) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    const auto b = static_cast<unsigned char>(c);
    if (c == '*' || c == '(' || c == ')' || c == '\\' || b < 0x20 || b >= 0x7f) {
      out.push_back('\\');
      out.push_back(digits[b >> 4]);
      out.push_back(digits[b & 0x0f]);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string make_filter(std::string_view filter, std::string_view value) {
  const std::string escaped = escape_filter_value(value);
  std::string out;
  for (std::size_t i = 0; i < filter.size(); ++i) {
    if (filter[i] == '%' && i + 1 < filter.size() && filter[i + 1] == 's') {
      out += escaped;
      ++i;
    } else if (filter[i] == '%' && i + 1 < filter.size() && filter[i + 1] == '%') {
      out.push_back('%');
      ++i;
    } else {
      out.push_back(filter[i]);
    }
  }
  return out;
}

std::string dn_to_notes_canonical(std::string_view dn) {
  std::string out;
  std::size_t i = 0;
  bool first = true;
  while (i < dn.size()) {
    // One RDN: attribute '=' value, up to an unescaped ',' (multi-valued '+' RDNs are kept as text).
    while (i < dn.size() && dn[i] == ' ') ++i;
    const std::size_t eq = dn.find('=', i);
    if (eq == std::string_view::npos || eq == i) return {};
    std::string attribute(trim(dn.substr(i, eq - i)));
    for (char& c : attribute) c = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
    std::string value;
    i = eq + 1;
    while (i < dn.size() && dn[i] != ',') {
      if (dn[i] == '\\' && i + 1 < dn.size()) {
        const int hi = hex_value(dn[i + 1]);
        const int lo = i + 2 < dn.size() ? hex_value(dn[i + 2]) : -1;
        if (hi >= 0 && lo >= 0) {
          value.push_back(static_cast<char>((hi << 4) | lo));
          i += 3;
        } else {
          value.push_back(dn[i + 1]);
          i += 2;
        }
        continue;
      }
      value.push_back(dn[i++]);
    }
    if (i < dn.size()) ++i;  // the ','
    if (!first) out.push_back('/');
    first = false;
    out += attribute + "=" + std::string(trim(value));
  }
  return out;
}

DirectoryCache::DirectoryCache(std::size_t capacity, std::size_t shards) {
  if (shards == 0) shards = 1;
  per_shard_ = std::max<std::size_t>(1, capacity / shards);
  for (std::size_t i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>());
}

DirectoryCache::Shard& DirectoryCache::shard_of(const std::string& folded) {
  return *shards_[std::hash<std::string>{}(folded) % shards_.size()];
}

std::optional<DirectoryCache::Answer> DirectoryCache::find(std::string_view name, DirectoryClock::time_point now) {
  const std::string folded = fold(name);
  Shard& shard = shard_of(folded);
  std::lock_guard lock(shard.mutex);
  const auto it = shard.index.find(folded);
  if (it == shard.index.end()) return std::nullopt;
  if (it->second->expires <= now) {
    shard.lru.erase(it->second);
    shard.index.erase(it);
    return std::nullopt;
  }
  shard.lru.splice(shard.lru.begin(), shard.lru, it->second);
  return it->second->answer;
}

void DirectoryCache::put(std::string_view name, Answer answer, DirectoryClock::time_point expires) {
  std::string folded = fold(name);
  Shard& shard = shard_of(folded);
  std::lock_guard lock(shard.mutex);
  if (const auto it = shard.index.find(folded); it != shard.index.end()) {
    it->second->answer = std::move(answer);
    it->second->expires = expires;
    shard.lru.splice(shard.lru.begin(), shard.lru, it->second);
    return;
  }
  shard.lru.push_front(Entry{folded, std::move(answer), expires});
  shard.index.emplace(std::move(folded), shard.lru.begin());
  while (shard.lru.size() > per_shard_) {
    shard.index.erase(shard.lru.back().name);
    shard.lru.pop_back();
    ++shard.evictions;
  }
}

std::size_t DirectoryCache::size() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard->mutex);
    n += shard->lru.size();
  }
  return n;
}

std::uint64_t DirectoryCache::evictions() const {
  std::uint64_t n = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard->mutex);
    n += shard->evictions;
  }
  return n;
}

}  // namespace sprayer::affinity
