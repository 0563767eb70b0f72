// User-key normalisation: turns the many spellings of one user found in requests
// into the one key the pool's ownership table (user_owner.user_key) is indexed by.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sprayer::affinity {

// The rules, applied in this order:
//  1. Trim ASCII whitespace (space, \t, \r, \n, \v, \f) at both ends.
//  2. notes_canonical: a Notes canonical name "CN=Jane Doe/OU=Sales/O=Acme" becomes its
//     common name "Jane Doe" (the text after a leading "CN=", matched case-insensitively,
//     up to the first '/'; trimmed again). Abbreviated names ("Jane Doe/Sales/Acme") are
//     left alone: list them in `map` if the pool keys users that way.
//  3. strip_domain: "DOMAIN\user" becomes "user" (text after the last '\'), then
//     "user@example.com" becomes "user" (text before the last '@'); trimmed again.
//  4. lower_case: ASCII letters A-Z are lowered; every other byte (including UTF-8
//     multibyte sequences) is kept as is, so the result never depends on a locale.
//  5. map: if the result equals an alias exactly, it is replaced by that alias's key. The
//     first matching pair wins. Aliases are compared with the normalised form, so write
//     them normalised (lower case, no domain) when those rules are on.
// The result may be empty (e.g. "@example.com"); callers treat that as no user.
struct NormaliseConfig {
  bool lower_case = true;
  bool strip_domain = true;
  bool notes_canonical = true;
  std::vector<std::pair<std::string, std::string>> map;  // alias -> key
};

// Applies the rules above. The alias map is scanned linearly, which suits a handful of
// aliases; UserNormaliser indexes the map once for many calls.
std::string normalise_user(std::string_view raw, const NormaliseConfig& config);

// The same rules with the alias map sorted once, so each call costs O(log aliases).
class UserNormaliser {
 public:
  explicit UserNormaliser(NormaliseConfig config);

  std::string operator()(std::string_view raw) const;
  const NormaliseConfig& config() const noexcept { return config_; }

 private:
  NormaliseConfig config_;
  std::vector<std::pair<std::string, std::string>> sorted_map_;  // by alias, first wins
};

}  // namespace sprayer::affinity
