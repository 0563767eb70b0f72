// libFuzzer target for the ownership cache file reader (the last-known-good snapshot a start
// loads during a database outage): a corrupted file must be refused with a reason, never
// crash or half-load. Half the inputs get a valid checksum and end marker appended, so the
// fuzzer reaches the parsing behind the checksum instead of stopping at it.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "affinity/snapshot_cache.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// FNV-1a 64, as the file's trailer uses.
std::uint64_t fnv1a(const std::string& bytes) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::string file_path() {
  return "/tmp/sprayer-cache-fuzz-" + std::to_string(getpid()) + ".bin";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool seal = data[0] & 1;
  std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (seal) {
    // The header's magic is given too, so the body starts where the fuzzer's bytes do.
    bytes.insert(0, std::string("SPRYOWN\0", 8));
    const std::uint64_t h = fnv1a(bytes);
    for (int i = 0; i < 8; ++i) bytes += static_cast<char>((h >> (8 * i)) & 0xFF);
    bytes += std::string("SPRYEND\0", 8);
  }
  static const std::string path = file_path();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  check(f != nullptr);
  check(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
  std::fclose(f);

  const auto loaded = sprayer::affinity::load_snapshot_cache(path);
  check(loaded.ok() == loaded.error.empty());
  if (loaded.ok()) check(loaded.rows <= bytes.size());
  return 0;
}
