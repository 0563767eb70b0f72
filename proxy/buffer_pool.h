// Per-worker pool of fixed-size, reference-counted chunks: reads land in a chunk and
// body bytes are forwarded as slices of it without copying. Single-threaded by design; the
// memory it takes from the system is charged to the process's Overload budget.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace sprayer::proxy {

class BufferPool;
class Overload;

struct Chunk {
  BufferPool* pool;
  Chunk* next_free;
  uint32_t refs;
  uint32_t capacity;
  char* data() { return reinterpret_cast<char*>(this + 1); }
};

class Slice;

class BufferPool {
 public:
  explicit BufferPool(uint32_t chunk_size = 32 * 1024, uint32_t max_free = 256, Overload* budget = nullptr);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // refs == 1, or null when the system or the memory budget has no chunk to give (the
  // caller closes its connection; never an exception, it runs inside libuv callbacks).
  Chunk* acquire();
  // Gives every idle chunk back to the system (memory pressure).
  void trim();
  static void ref(Chunk* chunk) { ++chunk->refs; }
  static void unref(Chunk* chunk);
  // `held` followed by `more`, in one chunk of its own; `held` unchanged unless joined.
  enum class Join : uint8_t { joined, too_big, no_memory };
  Join join(Slice& held, const Slice& more);

  uint32_t chunk_size() const { return chunk_size_; }
  size_t outstanding() const { return outstanding_; }
  size_t free_count() const { return free_count_; }
  Overload* budget() const { return budget_; }
  // What one chunk costs the budget.
  size_t chunk_cost() const { return sizeof(Chunk) + chunk_size_; }

 private:
  void give_back(Chunk* chunk);

  uint32_t chunk_size_;
  uint32_t max_free_;
  Overload* budget_;
  Chunk* free_ = nullptr;
  size_t free_count_ = 0;
  size_t outstanding_ = 0;
};

// A counted reference to (part of) a chunk.
class Slice {
 public:
  Slice() = default;
  Slice(Chunk* chunk, const char* data, size_t len) : chunk_(chunk), data_(data), len_(len) {
    if (chunk_) BufferPool::ref(chunk_);
  }
  Slice(const Slice& other) : Slice(other.chunk_, other.data_, other.len_) {}
  Slice(Slice&& other) noexcept
      : chunk_(std::exchange(other.chunk_, nullptr)), data_(other.data_), len_(std::exchange(other.len_, 0)) {}
  Slice& operator=(Slice other) noexcept {
    std::swap(chunk_, other.chunk_);
    std::swap(data_, other.data_);
    std::swap(len_, other.len_);
    return *this;
  }
  ~Slice() { reset(); }

  void reset() {
    if (chunk_) BufferPool::unref(std::exchange(chunk_, nullptr));
    len_ = 0;
  }
  Slice sub(size_t offset, size_t len) const { return Slice(chunk_, data_ + offset, len); }
  const char* data() const { return data_; }
  size_t size() const { return len_; }
  bool empty() const { return len_ == 0; }

 private:
  Chunk* chunk_ = nullptr;
  const char* data_ = nullptr;
  size_t len_ = 0;
};

}  // namespace sprayer::proxy
