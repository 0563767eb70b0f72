// Cache file encoding, atomic replacement (temp file, fsync, rename, fsync directory) and
// the checked loader.
#include "affinity/snapshot_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sprayer::affinity {

namespace {

constexpr char kMagic[8] = {'S', 'P', 'R', 'Y', 'O', 'W', 'N', '\0'};
constexpr char kEndMagic[8] = {'S', 'P', 'R', 'Y', 'E', 'N', 'D', '\0'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderBytes = 8 + 4 + 4 + 8 + 4 + 8;
constexpr std::size_t kTrailerBytes = 8 + 8;
constexpr std::size_t kRowHeadBytes = 2 + 2 + 8;
constexpr std::uint16_t kUnassigned = 0xFFFF;

constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr std::uint64_t kFnvPrime = 0x100000001b3ULL;

std::uint64_t fnv1a(std::uint64_t h, const char* p, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= kFnvPrime;
  }
  return h;
}

std::string errno_text(std::string_view what, const std::string& path, int err) {
  return std::string(what) + " " + path + ": " + std::strerror(err);
}

// Buffered writes to a file descriptor with a running checksum.
class Writer {
 public:
  explicit Writer(int fd) : fd_(fd) { buffer_.reserve(kChunk); }

  void bytes(const void* p, std::size_t n) {
    const char* c = static_cast<const char*>(p);
    hash_ = fnv1a(hash_, c, n);
    append_raw(c, n);
  }
  void u16(std::uint16_t v) { le(v, 2); }
  void u32(std::uint32_t v) { le(v, 4); }
  void u64(std::uint64_t v) { le(v, 8); }
  void i64(std::int64_t v) { le(static_cast<std::uint64_t>(v), 8); }

  // The trailer is not part of the checksum.
  void trailer() {
    char out[8];
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(hash_ >> (8 * i));
    append_raw(out, 8);
    append_raw(kEndMagic, 8);
  }

  bool flush(int& err) {
    std::size_t off = 0;
    while (off < buffer_.size()) {
      const ssize_t n = ::write(fd_, buffer_.data() + off, buffer_.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        err = errno;
        return false;
      }
      off += static_cast<std::size_t>(n);
    }
    written_ += buffer_.size();
    buffer_.clear();
    return true;
  }
  bool failed() const noexcept { return err_ != 0; }
  int error() const noexcept { return err_; }
  std::size_t written() const noexcept { return written_ + buffer_.size(); }

 private:
  static constexpr std::size_t kChunk = 1 << 20;

  void le(std::uint64_t v, int n) {
    char out[8];
    for (int i = 0; i < n; ++i) out[i] = static_cast<char>(v >> (8 * i));
    bytes(out, static_cast<std::size_t>(n));
  }
  void append_raw(const char* p, std::size_t n) {
    buffer_.append(p, n);
    if (buffer_.size() >= kChunk && err_ == 0) flush(err_);
  }

  int fd_;
  std::string buffer_;
  std::uint64_t hash_ = kFnvOffset;
  std::size_t written_ = 0;
  int err_ = 0;
};

// Bounds-checked little-endian reads over the loaded file.
class Reader {
 public:
  Reader(const char* p, std::size_t n) : p_(p), n_(n) {}
  bool has(std::size_t k) const noexcept { return n_ - pos_ >= k; }
  std::uint64_t le(int k) noexcept {
    std::uint64_t v = 0;
    for (int i = 0; i < k; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p_[pos_ + i])) << (8 * i);
    pos_ += static_cast<std::size_t>(k);
    return v;
  }
  std::string_view take(std::size_t k) noexcept {
    std::string_view s(p_ + pos_, k);
    pos_ += k;
    return s;
  }
  std::size_t pos() const noexcept { return pos_; }

 private:
  const char* p_;
  std::size_t n_;
  std::size_t pos_ = 0;
};

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool read_file(const std::string& path, std::string& out, std::string& error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = errno_text("cannot open cache file", path, errno);
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    error = errno_text("cannot stat cache file", path, errno);
    ::close(fd);
    return false;
  }
  out.resize(static_cast<std::size_t>(st.st_size));
  std::size_t off = 0;
  while (off < out.size()) {
    const ssize_t n = ::read(fd, out.data() + off, out.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = errno_text("cannot read cache file", path, errno);
      ::close(fd);
      return false;
    }
    if (n == 0) break;  // shrank under us: the checks below refuse it
    off += static_cast<std::size_t>(n);
  }
  out.resize(off);
  ::close(fd);
  return true;
}

}  // namespace

CacheWriteResult write_snapshot_cache(const std::string& path, std::int64_t epoch,
                                      std::span<const RowBlockPtr> blocks) {
  CacheWriteResult result;

  // One server table for the file; each block's indices are mapped onto it. The map's
  // keys view the blocks' own strings, which outlive this call.
  std::vector<std::string> servers;
  std::unordered_map<std::string_view, std::uint16_t> server_index;
  std::vector<std::vector<std::uint16_t>> maps(blocks.size());
  std::uint64_t rows = 0;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    rows += blocks[b]->size();
    for (const std::string& id : blocks[b]->server_ids()) {
      auto it = server_index.find(id);
      if (it == server_index.end()) {
        if (servers.size() >= kUnassigned || id.size() > 0xFFFF) {
          result.error = "cannot write cache file " + path + ": too many or too long server ids";
          return result;
        }
        servers.push_back(id);
        it = server_index.emplace(std::string_view(id), static_cast<std::uint16_t>(servers.size() - 1)).first;
      }
      maps[b].push_back(it->second);
    }
  }

  std::string temp = path + ".tmpXXXXXX";
  const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) {
    result.error = errno_text("cannot create temporary cache file", temp, errno);
    return result;
  }
  const auto abandon = [&](std::string error) {
    ::close(fd);
    ::unlink(temp.c_str());
    result.error = std::move(error);
    return result;
  };

  Writer w(fd);
  w.bytes(kMagic, sizeof kMagic);
  w.u32(kVersion);
  w.u32(0);
  w.i64(epoch);
  w.u32(static_cast<std::uint32_t>(servers.size()));
  w.u64(rows);
  for (const std::string& id : servers) {
    w.u16(static_cast<std::uint16_t>(id.size()));
    w.bytes(id.data(), id.size());
  }
  for (std::size_t b = 0; b < blocks.size() && !w.failed(); ++b) {
    const OwnershipRowBlock& block = *blocks[b];
    for (const auto& r : block.records()) {
      w.u16(r.key_length);
      w.u16(r.server == OwnershipRowBlock::kUnassigned ? kUnassigned : maps[b][r.server]);
      w.i64(r.epoch);
      w.bytes(block.key(r).data(), r.key_length);
    }
  }
  w.trailer();
  int err = w.error();
  if (err == 0) w.flush(err);
  if (err != 0) return abandon(errno_text("cannot write temporary cache file", temp, err));
  if (::fsync(fd) != 0) return abandon(errno_text("cannot fsync temporary cache file", temp, errno));
  if (::close(fd) != 0) {
    ::unlink(temp.c_str());
    result.error = errno_text("cannot close temporary cache file", temp, errno);
    return result;
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(temp.c_str());
    result.error = errno_text("cannot rename the temporary cache file to", path, e);
    return result;
  }
  // The rename is durable only once the directory entry is.
  const std::string dir = directory_of(path);
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0 || ::fsync(dir_fd) != 0) {
    result.error = errno_text("cannot fsync cache directory", dir, errno);
    if (dir_fd >= 0) ::close(dir_fd);
    return result;
  }
  ::close(dir_fd);
  result.bytes = w.written();
  return result;
}

CacheWriteResult write_snapshot_cache(const std::string& path, std::int64_t epoch,
                                      const OwnershipRowBlock& rows) {
  // A non-owning pointer: the block outlives the call.
  const RowBlockPtr one(std::shared_ptr<void>(), &rows);
  return write_snapshot_cache(path, epoch, std::span<const RowBlockPtr>(&one, 1));
}

LoadedSnapshotCache load_snapshot_cache(const std::string& path) {
  LoadedSnapshotCache out;
  std::string data;
  if (!read_file(path, data, out.error)) return out;
  const auto refuse = [&](std::string why) {
    out.error = "cache file " + path + " refused: " + why;
    return out;
  };

  if (data.size() < kHeaderBytes + kTrailerBytes) return refuse("truncated (" + std::to_string(data.size()) + " bytes)");
  if (std::memcmp(data.data(), kMagic, sizeof kMagic) != 0) return refuse("not a sprayer ownership cache (bad magic)");
  const std::size_t body = data.size() - kTrailerBytes;
  if (std::memcmp(data.data() + body + 8, kEndMagic, sizeof kEndMagic) != 0) return refuse("truncated or torn (no end marker)");
  Reader trailer(data.data() + body, 8);
  if (trailer.le(8) != fnv1a(kFnvOffset, data.data(), body)) return refuse("corrupt (checksum mismatch)");

  Reader r(data.data(), body);
  r.take(sizeof kMagic);
  const auto version = static_cast<std::uint32_t>(r.le(4));
  if (version != kVersion) return refuse("unsupported version " + std::to_string(version));
  r.le(4);
  out.epoch = static_cast<std::int64_t>(r.le(8));
  const auto server_count = static_cast<std::uint32_t>(r.le(4));
  const std::uint64_t rows = r.le(8);
  if (server_count > kUnassigned) return refuse("corrupt (server count)");
  // Each row takes at least its fixed head, so a bogus count cannot make us presize a
  // huge table.
  if (rows > body / kRowHeadBytes) return refuse("corrupt (row count)");

  std::vector<std::string> servers;
  servers.reserve(server_count);
  for (std::uint32_t i = 0; i < server_count; ++i) {
    if (!r.has(2)) return refuse("corrupt (server table)");
    const auto len = static_cast<std::size_t>(r.le(2));
    if (!r.has(len)) return refuse("corrupt (server table)");
    servers.emplace_back(r.take(len));
  }

  SnapshotBuilder builder(static_cast<std::size_t>(rows));
  for (std::uint64_t i = 0; i < rows; ++i) {
    if (!r.has(kRowHeadBytes)) return refuse("corrupt (row " + std::to_string(i) + ")");
    const auto key_len = static_cast<std::size_t>(r.le(2));
    const auto server = static_cast<std::uint16_t>(r.le(2));
    const auto epoch = static_cast<std::int64_t>(r.le(8));
    if (!r.has(key_len)) return refuse("corrupt (row " + std::to_string(i) + ")");
    if (server != kUnassigned && server >= servers.size()) return refuse("corrupt (server index)");
    OwnershipRow row;
    row.user_key = r.take(key_len);
    if (server != kUnassigned) row.server_id = servers[server];
    row.epoch = epoch;
    builder.add(row);
  }
  if (r.pos() != body) return refuse("corrupt (trailing bytes)");
  out.rows = static_cast<std::size_t>(rows);
  out.snapshot = builder.build();
  return out;
}

}  // namespace sprayer::affinity
