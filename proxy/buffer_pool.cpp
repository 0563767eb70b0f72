// Chunks are allocated once and recycled through an intrusive free list.
#include "proxy/buffer_pool.h"

#include <cassert>
#include <cstdlib>
#include <cstring>
#include <new>

namespace sprayer::proxy {

BufferPool::BufferPool(uint32_t chunk_size, uint32_t max_free) : chunk_size_(chunk_size), max_free_(max_free) {}

BufferPool::~BufferPool() {
  while (free_) {
    Chunk* next = free_->next_free;
    std::free(free_);
    free_ = next;
  }
}

Chunk* BufferPool::acquire() {
  Chunk* chunk = free_;
  if (chunk) {
    free_ = chunk->next_free;
    --free_count_;
  } else {
    void* mem = std::malloc(sizeof(Chunk) + chunk_size_);
    if (!mem) throw std::bad_alloc();
    chunk = static_cast<Chunk*>(mem);
    chunk->pool = this;
    chunk->capacity = chunk_size_;
  }
  chunk->refs = 1;
  chunk->next_free = nullptr;
  ++outstanding_;
  return chunk;
}

void BufferPool::unref(Chunk* chunk) {
  assert(chunk->refs > 0);
  if (--chunk->refs == 0) chunk->pool->give_back(chunk);
}

void BufferPool::give_back(Chunk* chunk) {
  --outstanding_;
  if (free_count_ >= max_free_) {
    std::free(chunk);
    return;
  }
  chunk->next_free = free_;
  free_ = chunk;
  ++free_count_;
}

bool BufferPool::join(Slice& held, const Slice& more) {
  size_t total = held.size() + more.size();
  if (total > chunk_size_) return false;
  Chunk* merged = acquire();
  std::memcpy(merged->data(), held.data(), held.size());
  std::memcpy(merged->data() + held.size(), more.data(), more.size());
  held = Slice(merged, merged->data(), total);
  unref(merged);
  return true;
}

}  // namespace sprayer::proxy
