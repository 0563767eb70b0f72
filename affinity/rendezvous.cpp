// XXH64, the (user, server) mix, the fixed-point logarithm and the weighted HRW ranking.
#include "affinity/rendezvous.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>

namespace sprayer::affinity {
namespace {

using u128 = unsigned __int128;

constexpr std::uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr std::uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr std::uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr std::uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
constexpr std::uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;

// Little-endian loads regardless of the host, so the hash is the same everywhere.
std::uint64_t load64(const unsigned char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

std::uint32_t load32(const unsigned char* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap32(v);
  return v;
}

std::uint64_t xxh_round(std::uint64_t acc, std::uint64_t input) noexcept {
  acc += input * kPrime2;
  acc = std::rotl(acc, 31);
  return acc * kPrime1;
}

std::uint64_t xxh_merge(std::uint64_t acc, std::uint64_t value) noexcept {
  acc ^= xxh_round(0, value);
  return acc * kPrime1 + kPrime4;
}

// MurmurHash3's 64-bit finaliser: every input bit flips each output bit with p ~ 1/2.
constexpr std::uint64_t fmix64(std::uint64_t k) noexcept {
  k ^= k >> 33;
  k *= 0xFF51AFD7ED558CCDULL;
  k ^= k >> 33;
  k *= 0xC4CEB9FE1A85EC53ULL;
  k ^= k >> 33;
  return k;
}

// log2(1 + i / 1024) in 32.32 fixed point for i = 0..1024, by repeated squaring in
// 2.62 fixed point (each squaring yields one bit of the logarithm). Computed by the
// compiler with integer arithmetic only, so there is no libm in the loop.
constexpr int kLogTableBits = 10;
constexpr std::size_t kLogTableSize = (std::size_t{1} << kLogTableBits) + 1;

constexpr std::array<std::uint64_t, kLogTableSize> make_log_table() {
  std::array<std::uint64_t, kLogTableSize> table{};
  constexpr std::uint64_t one = std::uint64_t{1} << 62;
  for (std::size_t i = 0; i < kLogTableSize; ++i) {
    std::uint64_t y = static_cast<std::uint64_t>((std::uint64_t{1} << kLogTableBits) + i)
                      << (62 - kLogTableBits);
    if (y >= 2 * one) {  // i == 1024: log2(2) == 1 exactly
      table[i] = std::uint64_t{1} << 32;
      continue;
    }
    std::uint64_t result = 0;
    for (int bit = 31; bit >= 0; --bit) {
      y = static_cast<std::uint64_t>((static_cast<u128>(y) * y) >> 62);
      if (y >= 2 * one) {
        y >>= 1;
        result |= std::uint64_t{1} << bit;
      }
    }
    table[i] = result;
  }
  return table;
}

constexpr std::array<std::uint64_t, kLogTableSize> kLog2Table = make_log_table();

}  // namespace

std::uint64_t hash_key(std::string_view bytes) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t len = bytes.size();
  const unsigned char* const end = p + len;
  std::uint64_t h;
  if (len >= 32) {
    std::uint64_t v1 = kPrime1 + kPrime2;
    std::uint64_t v2 = kPrime2;
    std::uint64_t v3 = 0;
    std::uint64_t v4 = 0 - kPrime1;
    const unsigned char* const limit = end - 32;
    do {
      v1 = xxh_round(v1, load64(p));
      v2 = xxh_round(v2, load64(p + 8));
      v3 = xxh_round(v3, load64(p + 16));
      v4 = xxh_round(v4, load64(p + 24));
      p += 32;
    } while (p <= limit);
    h = std::rotl(v1, 1) + std::rotl(v2, 7) + std::rotl(v3, 12) + std::rotl(v4, 18);
    h = xxh_merge(h, v1);
    h = xxh_merge(h, v2);
    h = xxh_merge(h, v3);
    h = xxh_merge(h, v4);
  } else {
    h = kPrime5;
  }
  h += static_cast<std::uint64_t>(len);
  while (end - p >= 8) {
    h ^= xxh_round(0, load64(p));
    h = std::rotl(h, 27) * kPrime1 + kPrime4;
    p += 8;
  }
  if (end - p >= 4) {
    h ^= static_cast<std::uint64_t>(load32(p)) * kPrime1;
    h = std::rotl(h, 23) * kPrime2 + kPrime3;
    p += 4;
  }
  while (p < end) {
    h ^= static_cast<std::uint64_t>(*p) * kPrime5;
    h = std::rotl(h, 11) * kPrime1;
    ++p;
  }
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

std::uint64_t pair_hash(std::uint64_t key_hash, std::uint64_t id_hash) noexcept {
  // Two finaliser rounds with the server folded in before and between them, so the
  // draws of two servers for the same user are unrelated even if their id hashes
  // differ in few bits.
  return fmix64(fmix64(key_hash ^ id_hash) + id_hash * 0x9E3779B97F4A7C15ULL);
}

std::uint64_t neg_log2_q32(std::uint64_t h) noexcept {
  const std::uint64_t x = h | 1;
  const int msb = 63 - std::countl_zero(x);
  // The fraction bits of x / 2^msb, left-aligned: 64 bits of the mantissa after its 1.
  const std::uint64_t fraction = msb == 0 ? 0 : x << (64 - msb);
  const std::size_t index = static_cast<std::size_t>(fraction >> (64 - kLogTableBits));
  const std::uint64_t weight = (fraction << kLogTableBits) >> 32;  // next 32 bits
  const std::uint64_t low = kLog2Table[index];
  const std::uint64_t high = kLog2Table[index + 1];
  const std::uint64_t log2_mantissa = low + (((high - low) * weight) >> 32);
  // log2(u) = msb + log2(mantissa) - 64; never 0 because log2_mantissa < 2^32.
  return (static_cast<std::uint64_t>(64 - msb) << 32) - log2_mantissa;
}

RendezvousScore score(std::uint64_t key_hash, const WeightedServer& server) noexcept {
  const std::uint64_t draw = pair_hash(key_hash, server.id_hash);
  return RendezvousScore{neg_log2_q32(draw), draw, server.id_hash, server.weight};
}

namespace {

// <0: a ranks first, >0: b ranks first, 0: identical draws.
int compare(const RendezvousScore& a, const RendezvousScore& b) noexcept {
  // weight_a / L_a > weight_b / L_b  <=>  weight_a * L_b > weight_b * L_a  (L > 0). Equal
  // weights, the usual case, reduce to comparing L without the 128-bit products.
  if (a.weight == b.weight) {
    if (a.weight != 0 && a.neg_log2 != b.neg_log2) return a.neg_log2 < b.neg_log2 ? -1 : 1;
  } else {
    const u128 lhs = static_cast<u128>(a.weight) * b.neg_log2;
    const u128 rhs = static_cast<u128>(b.weight) * a.neg_log2;
    if (lhs != rhs) return lhs > rhs ? -1 : 1;
  }
  if (a.draw != b.draw) return a.draw > b.draw ? -1 : 1;
  if (a.id_hash != b.id_hash) return a.id_hash < b.id_hash ? -1 : 1;
  return 0;
}

struct Ranked {
  RendezvousScore score;
  std::uint16_t index;
};

// List order settles only exact duplicates (the same id twice), keeping the order total.
bool ranks_before(const Ranked& a, const Ranked& b) noexcept {
  const int c = compare(a.score, b.score);
  return c != 0 ? c < 0 : a.index < b.index;
}

}  // namespace

bool outranks(const RendezvousScore& a, const RendezvousScore& b) noexcept { return compare(a, b) < 0; }

ServerOrder rank(std::uint64_t key_hash, std::span<const WeightedServer> servers) {
  const std::size_t n = std::min<std::size_t>(servers.size(), std::numeric_limits<std::uint16_t>::max());
  SmallVector<Ranked, 16> ranked;
  for (std::size_t i = 0; i < n; ++i) {
    ranked.push_back(Ranked{score(key_hash, servers[i]), static_cast<std::uint16_t>(i)});
  }
  if (n <= 16) {
    // Insertion sort: a pool has a handful of servers, and this never allocates.
    for (std::size_t i = 1; i < n; ++i) {
      const Ranked item = ranked[i];
      std::size_t j = i;
      for (; j > 0 && ranks_before(item, ranked[j - 1]); --j) ranked[j] = ranked[j - 1];
      ranked[j] = item;
    }
  } else {
    std::sort(ranked.begin(), ranked.end(), ranks_before);
  }
  ServerOrder order;
  for (const Ranked& r : ranked) order.push_back(r.index);
  return order;
}

}  // namespace sprayer::affinity
