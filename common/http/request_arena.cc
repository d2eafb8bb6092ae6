#include "common/http/request_arena.h"

#include <utility>

namespace berry::server {

std::unique_ptr<ArenaBlocks::Block> ArenaBlocks::Take() {
  if (free_.empty()) {
    return std::make_unique<Block>();
  }
  std::unique_ptr<Block> block = std::move(free_.back());
  free_.pop_back();
  return block;
}

void ArenaBlocks::Give(std::unique_ptr<Block> block) {
  if (free_.size() < kMaxIdle) {
    free_.push_back(std::move(block));
  }
}

RequestArena::RequestArena(ArenaBlocks& blocks)
    : blocks_(blocks), block_(blocks.Take()), small_(block_->bytes.data(), block_->bytes.size()) {}

RequestArena::~RequestArena() {
  small_.release();  // what overflowed the block
  blocks_.Give(std::move(block_));
}

void* RequestArena::do_allocate(size_t bytes, size_t alignment) {
  if (bytes > kLargeBytes) {
    return std::pmr::new_delete_resource()->allocate(bytes, alignment);
  }
  return small_.allocate(bytes, alignment);
}

void RequestArena::do_deallocate(void* p, size_t bytes, size_t alignment) {
  if (bytes > kLargeBytes) {
    std::pmr::new_delete_resource()->deallocate(p, bytes, alignment);
  }
  // Small ones go with the arena.
}

std::string StringPool::Take() {
  if (free_.empty()) {
    return {};
  }
  std::string text = std::move(free_.back());
  free_.pop_back();
  return text;
}

void StringPool::Give(std::string text) {
  // A string that never left its inline buffer has no heap capacity worth keeping.
  static const size_t kInlineCapacity = std::string().capacity();
  if (text.capacity() <= kInlineCapacity || text.capacity() > kMaxKeptCapacity ||
      free_.size() >= kMaxIdle) {
    return;
  }
  text.clear();
  free_.push_back(std::move(text));
}

}  // namespace berry::server
