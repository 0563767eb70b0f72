// Weighted rendezvous (highest-random-weight) hashing of user keys over pool servers.
// Integer-only and endian-independent, so every sprayer on every machine ranks alike.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "affinity/small_vector.h"

namespace sprayer::affinity {

// XXH64 (seed 0) of the bytes, written out here so the value never depends on a
// library version, std::hash, a random seed or the host's byte order. Compute it once
// per request and pass it to OwnershipSnapshot::find and to the router.
std::uint64_t hash_key(std::string_view bytes) noexcept;

// The per-(user, server) hash that decides the ranking; exposed for tests and tools.
std::uint64_t pair_hash(std::uint64_t key_hash, std::uint64_t id_hash) noexcept;

// -log2(u) in 32.32 fixed point for u = (h | 1) / 2^64, in (0, 64]; monotonically
// non-increasing in h. Table-driven, so it is bit-identical on every host, unlike a
// libm log that may differ in the last bit between builds or CPUs.
std::uint64_t neg_log2_q32(std::uint64_t h) noexcept;

struct WeightedServer {
  std::uint64_t id_hash = 0;  // hash_key(server id): depends on the id, not on list order
  std::uint32_t weight = 1;   // 0 ranks last (behind every positive weight)
};

// One server's draw for one user: weight / -log2(u). Compared exactly by
// cross-multiplication, never divided, so no floating point is involved.
struct RendezvousScore {
  std::uint64_t neg_log2 = 0;  // neg_log2_q32(pair_hash(key, id))
  std::uint64_t draw = 0;      // pair_hash(key, id), breaks exact ties
  std::uint64_t id_hash = 0;   // breaks ties of identical draws (duplicate ids)
  std::uint32_t weight = 0;
};

RendezvousScore score(std::uint64_t key_hash, const WeightedServer& server) noexcept;

// True if `a` ranks before `b`: a strict weak order, total for distinct id hashes.
bool outranks(const RendezvousScore& a, const RendezvousScore& b) noexcept;

// Server indices (into `servers`), best first. Each server wins a key with probability
// weight / sum(weights); removing a server moves only the keys it had won. No heap
// allocation for up to 16 servers.
using ServerOrder = SmallVector<std::uint16_t, 16>;
ServerOrder rank(std::uint64_t key_hash, std::span<const WeightedServer> servers);

}  // namespace sprayer::affinity
