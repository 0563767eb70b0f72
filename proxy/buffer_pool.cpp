// Chunks are allocated once and recycled through an intrusive free list.
#include "proxy/buffer_pool.h"

#include <cassert>
#include <cstdlib>
#include <cstring>

#include "proxy/overload.h"

namespace sprayer::proxy {

BufferPool::BufferPool(uint32_t chunk_size, uint32_t max_free, Overload* budget)
    : chunk_size_(chunk_size), max_free_(max_free), budget_(budget) {}

BufferPool::~BufferPool() { trim(); }

void BufferPool::trim() {
  while (free_) {
    Chunk* next = free_->next_free;
    std::free(free_);
    if (budget_) budget_->release(chunk_cost());
    free_ = next;
  }
  free_count_ = 0;
}

Chunk* BufferPool::acquire() {
  Chunk* chunk = free_;
  if (chunk) {
    free_ = chunk->next_free;
    --free_count_;
  } else {
    if (budget_ && !budget_->try_charge(chunk_cost())) return nullptr;
    void* mem = std::malloc(chunk_cost());
    if (!mem) {
      if (budget_) {
        budget_->release(chunk_cost());
        budget_->count_allocation_failure();
      }
      return nullptr;
    }
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
  // Under memory pressure (half the budget) an idle chunk goes back to the system: the budget
  // is for the connections, not for a cache.
  if (free_count_ >= max_free_ || (budget_ && budget_->pressed())) {
    std::free(chunk);
    if (budget_) budget_->release(chunk_cost());
    return;
  }
  chunk->next_free = free_;
  free_ = chunk;
  ++free_count_;
}

BufferPool::Join BufferPool::join(Slice& held, const Slice& more) {
  size_t total = held.size() + more.size();
  if (total > chunk_size_) return Join::too_big;
  Chunk* merged = acquire();
  if (!merged) return Join::no_memory;
  std::memcpy(merged->data(), held.data(), held.size());
  std::memcpy(merged->data() + held.size(), more.data(), more.size());
  held = Slice(merged, merged->data(), total);
  unref(merged);
  return Join::joined;
}

}  // namespace sprayer::proxy
