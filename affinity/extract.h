// Finds the user in a request head (ActiveSync plain and base64 queries, Basic auth,
// Traveler URLs, configured header/cookie/query) and returns its normalised key.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "affinity/request_view.h"
#include "affinity/user_key.h"

namespace sprayer::affinity {

// Where a user can be found. Each kind only looks at requests it applies to:
//  activesync_query   ActiveSync path (see below) with a plain query "Cmd=..&User=..":
//                     parameters User, DeviceId, DeviceType, Cmd; names case-insensitive,
//                     values percent-decoded with '+' as space; the first of a name wins.
//  activesync_base64  ActiveSync path whose whole query is one base64 value (MS-ASHTTP
//                     2.2.1.1.1.1); the user is its User parameter (tag 8), often absent.
//  basic_auth         "Authorization: Basic base64(user:password)"; only the user part is
//                     decoded, the password never leaves a zeroed scratch buffer.
//  traveler_url       /traveler and /servlet/traveler (and anything below them): the first
//                     "user" query parameter (name case-insensitive).
//  header, cookie,    the configured name: the first header of that name (trimmed);
//  query              the first cookie of that exact name (quotes removed, percent-
//                     decoded); the first query parameter of that name (case-insensitive,
//                     percent-decoded with '+' as space), on any path.
// ActiveSync paths (case-insensitive, optional trailing '/'): /Microsoft-Server-ActiveSync,
// /traveler/Microsoft-Server-ActiveSync, /servlet/traveler/Microsoft-Server-ActiveSync.
enum class Source : std::uint8_t {
  none,
  activesync_query,
  activesync_base64,
  basic_auth,
  traveler_url,
  header,
  cookie,
  query,
};

std::string_view to_string(Source source) noexcept;  // "activesync_query", ... (metric labels)

struct ExtractorStep {
  Source kind = Source::none;
  std::string name;  // for header, cookie and query; ignored by the other kinds
};

// activesync_query, activesync_base64, basic_auth, traveler_url: a base64 query without
// a User parameter falls back to Basic auth, which every ActiveSync client sends.
std::vector<ExtractorStep> default_extractor_order();

// One key per person: a device's query names whoever the client was set up with, the
// Authorization login is who the server authenticates (and whose mail it monitors). With
// authenticated_wins, a Basic login (basic_auth later in the order, found and valid) decides
// the key even when an earlier step found another user in the request target
// (activesync_query, activesync_base64, traveler_url, query); the two differing is a
// disagreement. Header and cookie steps keep their place: a front end may set them.

struct ExtractorConfig {
  std::vector<ExtractorStep> order = default_extractor_order();
  // false: a malformed source is skipped as if absent (later steps may still find the
  //        user; if none does, the request is user-less and spread);
  // true:  the first malformed source ends extraction with Status::malformed (answer 400).
  bool reject_malformed = false;
  std::size_t max_user_length = 256;  // bytes of the decoded user before normalisation
  bool authenticated_wins = true;     // see above; false: the first step that finds a user wins
  NormaliseConfig normalise;
};

struct ExtractResult {
  enum class Status : std::uint8_t { found, none, malformed };

  Status status = Status::none;
  std::string user_key;        // normalised; set when found
  std::string raw_user;        // the user as the winning step decoded it (for a directory lookup)
  std::uint64_t key_hash = 0;  // hash_key(user_key), when found: hash once per request
  Source source = Source::none;  // the step that found the user, or that was malformed
  // An earlier step found a user that normalises to another key than the Basic login that
  // won (authenticated_wins): one device would otherwise be routed under two keys.
  bool disagreement = false;
  // From the ActiveSync steps that ran, for logs (never metric labels). Values that are
  // not printable UTF-8 (a binary GUID device id) are given in lower-case hex.
  std::string device_id;
  std::string device_type;
  std::string cmd;
  // Static text saying why a source was malformed. Set with Status::malformed, and also
  // (for counting) when reject_malformed is false and a malformed source was skipped.
  std::string_view error;

  bool found() const noexcept { return status == Status::found; }
};

// Stateless after construction and const, so one instance serves all worker threads.
// Every step runs in time linear in the request head, and nothing is read out of bounds
// whatever the bytes (fuzzed by tests/fuzz/extract_fuzz.cpp).
// A user is malformed if its decoded bytes are longer than max_user_length, are not
// valid UTF-8, hold a control character (C0, DEL, C1), or normalise to an empty key.
// An empty user is treated as absent.
class Extractor {
 public:
  explicit Extractor(ExtractorConfig config);

  ExtractResult extract(const RequestView& request) const;
  const ExtractorConfig& config() const noexcept { return config_; }
  // The normalisation rules alone (for a name the directory gave).
  std::string normalise(std::string_view raw) const { return normaliser_(raw); }

 private:
  // authenticated_wins: `winner` (a step of config_.order) found `key`; a valid Basic login
  // from a later basic_auth step replaces it. Sets result.source and result.disagreement.
  void prefer_login(const RequestView& request, const ExtractorStep* winner, std::string& raw, std::string& key,
                    ExtractResult& result) const;

  ExtractorConfig config_;
  UserNormaliser normaliser_;
};

}  // namespace sprayer::affinity
