// libFuzzer target for user extraction: the input becomes a request target, an
// Authorization header and a cookie, run through every extractor; invariants trap.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "affinity/extract.h"
#include "affinity/rendezvous.h"
#include "affinity/user_key.h"

namespace {

using sprayer::affinity::ExtractorConfig;
using sprayer::affinity::ExtractResult;
using sprayer::affinity::Source;

std::string base64(std::string_view bytes) {
  constexpr std::string_view alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : bytes) {
    acc = (acc << 8) | static_cast<unsigned char>(c);
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += alphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += alphabet[(acc << (6 - bits)) & 63];
  return out;  // unpadded: the extractor tolerates missing padding
}

std::string_view take_line(std::string_view& rest) {
  const std::size_t nl = rest.find('\n');
  const std::string_view line = rest.substr(0, nl);
  rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
  return line;
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

ExtractorConfig config_for(unsigned mode) {
  ExtractorConfig config;
  config.order.push_back({Source::header, "X-User"});
  config.order.push_back({Source::cookie, "user"});
  config.order.push_back({Source::query, "uid"});
  config.reject_malformed = (mode & 1) != 0;
  config.max_user_length = (mode & 2) != 0 ? 8 : 256;
  config.normalise.lower_case = (mode & 4) != 0;
  config.normalise.strip_domain = (mode & 8) != 0;
  config.normalise.notes_canonical = (mode & 16) != 0;
  return config;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const unsigned mode = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string target(take_line(rest));
  std::string auth(take_line(rest));
  const std::string cookie(rest);

  // Mode bits 5 and 6 wrap raw bytes in the encodings the parsers expect, so the fuzzer
  // reaches the MS-ASHTTP layout and the Basic user/password split directly.
  if ((mode & 32) != 0) target = "/Microsoft-Server-ActiveSync?" + base64(target);
  const bool basic_wrapped = (mode & 64) != 0;
  const std::string raw_credentials = auth;
  if (basic_wrapped) auth = "Basic " + base64(auth);

  const sprayer::affinity::Header headers[] = {
      {"Authorization", auth}, {"Cookie", cookie}, {"X-User", cookie}};
  const sprayer::affinity::RequestView request{"GET", target, headers};

  const ExtractorConfig config = config_for(mode & 31);
  const sprayer::affinity::Extractor extractor(config);
  const ExtractResult result = extractor.extract(request);

  switch (result.status) {
    case ExtractResult::Status::found:
      check(!result.user_key.empty());
      check(result.user_key.size() <= config.max_user_length);
      check(result.key_hash == sprayer::affinity::hash_key(result.user_key));
      check(result.source != Source::none);
      check(result.error.empty() || !config.reject_malformed);
      if (result.source == Source::basic_auth && basic_wrapped) {
        // The key comes from the user part alone: the password can never leak into it.
        const std::string_view raw(raw_credentials);
        check(result.user_key ==
              sprayer::affinity::normalise_user(raw.substr(0, raw.find(':')), config.normalise));
      }
      break;
    case ExtractResult::Status::malformed:
      check(config.reject_malformed);
      check(!result.error.empty());
      check(result.user_key.empty());
      check(result.source != Source::none);
      break;
    case ExtractResult::Status::none:
      check(result.user_key.empty());
      check(result.source == Source::none);
      break;
  }
  check(result.device_id.size() <= 512 && result.device_type.size() <= 512);

  // The normaliser on arbitrary bytes: the indexed and the linear alias lookups agree.
  sprayer::affinity::NormaliseConfig normalise = config.normalise;
  normalise.map = {{"alias", "key"}, {std::string(cookie.substr(0, 4)), "mapped"}};
  const sprayer::affinity::UserNormaliser normaliser(normalise);
  check(normaliser(cookie) == sprayer::affinity::normalise_user(cookie, normalise));
  return 0;
}
