// User-key normalisation rules (see user_key.h for the list and their order).
#include "affinity/user_key.h"

#include <algorithm>

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

// Steps 1-4; every step only narrows the view, so one copy is made at the end.
std::string normalise_without_map(std::string_view raw, const NormaliseConfig& config) {
  std::string_view s = trim(raw);
  if (config.notes_canonical && s.size() >= 3 && iequals(s.substr(0, 3), "cn=")) {
    s.remove_prefix(3);
    s = trim(s.substr(0, s.find('/')));
  }
  if (config.strip_domain) {
    if (const auto backslash = s.rfind('\\'); backslash != std::string_view::npos) {
      s.remove_prefix(backslash + 1);
    }
    if (const auto at = s.rfind('@'); at != std::string_view::npos) s = s.substr(0, at);
    s = trim(s);
  }
  std::string key(s);
  if (config.lower_case) {
    for (char& c : key) c = ascii_lower(c);
  }
  return key;
}

bool alias_less(const std::pair<std::string, std::string>& a,
                const std::pair<std::string, std::string>& b) {
  return a.first < b.first;
}

}  // namespace

std::string normalise_user(std::string_view raw, const NormaliseConfig& config) {
  std::string key = normalise_without_map(raw, config);
  for (const auto& [alias, target] : config.map) {
    if (alias == key) return target;
  }
  return key;
}

UserNormaliser::UserNormaliser(NormaliseConfig config)
    : config_(std::move(config)), sorted_map_(config_.map) {
  // Stable, so among duplicate aliases the one listed first stays first and wins.
  std::stable_sort(sorted_map_.begin(), sorted_map_.end(), alias_less);
}

std::string UserNormaliser::operator()(std::string_view raw) const {
  std::string key = normalise_without_map(raw, config_);
  if (sorted_map_.empty()) return key;
  const auto it = std::lower_bound(
      sorted_map_.begin(), sorted_map_.end(), key,
      [](const std::pair<std::string, std::string>& entry, const std::string& k) {
        return entry.first < k;
      });
  if (it != sorted_map_.end() && it->first == key) return it->second;
  return key;
}

}  // namespace sprayer::affinity
