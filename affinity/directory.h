// Directory lookup, the pure parts: the name a device sent as the directory is asked for it,
// LDAP search filters with the value escaped (RFC 4515), an entry's DN as a Notes canonical
// name, and the cache of answers that every worker reads.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sprayer::affinity {

// The value a directory search is made with, from the user as the request carried it:
// trimmed; a Notes canonical "CN=Jane Doe/O=Acme" gives its common name "Jane Doe";
// "DOMAIN\jdoe" gives "jdoe"; an internet address stays whole (the directory knows it).
std::string directory_name(std::string_view raw);

// RFC 4515 3: '*', '(', ')', '\' and NUL (and every byte outside printable ASCII) as \XX.
std::string escape_filter_value(std::string_view value);

// `filter` with every "%s" replaced by the escaped value ("%%" is a '%').
std::string make_filter(std::string_view filter, std::string_view value);

// "cn=Jane Doe,ou=Sales,o=Acme" -> "CN=Jane Doe/OU=Sales/O=Acme" (attribute names upper
// case, RFC 4514 escapes "\," and "\XX" undone). Empty if it is not a DN.
std::string dn_to_notes_canonical(std::string_view dn);

using DirectoryClock = std::chrono::steady_clock;

// Answers by directory name (case-insensitive): the raw key the directory gave, or "no such
// user" (negative). Sharded, each shard a mutex, a hash map and an LRU list bounded to
// capacity / shards entries: a lookup locks one shard for a hash and a list splice, and
// workers rarely meet on the same shard. Time is passed in, so tests need no clock.
class DirectoryCache {
 public:
  struct Answer {
    bool found = false;      // false: the directory has no such user (a negative entry)
    std::string key;         // the directory's value, not yet normalised
  };

  explicit DirectoryCache(std::size_t capacity, std::size_t shards = 16);

  // nullopt: not cached, or expired (dropped).
  std::optional<Answer> find(std::string_view name, DirectoryClock::time_point now);
  void put(std::string_view name, Answer answer, DirectoryClock::time_point expires);
  std::size_t size() const;
  std::uint64_t evictions() const;

 private:
  struct Entry {
    std::string name;
    Answer answer;
    DirectoryClock::time_point expires;
  };
  struct Shard {
    mutable std::mutex mutex;
    std::list<Entry> lru;  // most recent first
    std::unordered_map<std::string, std::list<Entry>::iterator> index;
    std::uint64_t evictions = 0;
  };
  Shard& shard_of(const std::string& folded);

  std::size_t per_shard_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace sprayer::affinity
