#include "common/http/request_arena.h"

#include <gtest/gtest.h>

#include <boost/beast/http/fields.hpp>
#include <cstddef>
#include <string>
#include <vector>

namespace berry::server::request_arena_test {
namespace {

bool Within(const void* p, const ArenaBlocks::Block* block) {
  const auto* byte = static_cast<const std::byte*>(p);
  return byte >= block->bytes.data() && byte < block->bytes.data() + block->bytes.size();
}

// Puts one block on the list and returns its address: the next RequestArena takes that block.
const ArenaBlocks::Block* OneIdleBlock(ArenaBlocks& blocks) {
  auto block = blocks.Take();
  const ArenaBlocks::Block* address = block.get();
  blocks.Give(std::move(block));
  return address;
}

TEST(RequestArena, FieldsAreCarvedOutOfItsBlockWhichGoesBackAfterwards) {
  ArenaBlocks blocks;
  const ArenaBlocks::Block* address = OneIdleBlock(blocks);
  {
    RequestArena arena(blocks);  // takes that very block
    EXPECT_EQ(blocks.idle(), 0u);
    ArenaFields fields(arena.allocator());
    fields.insert("Content-Type", "application/json");
    fields.insert("X-Request-Id", "abc");
    EXPECT_TRUE(Within(fields["X-Request-Id"].data(), address));
    EXPECT_TRUE(Within(fields["Content-Type"].data(), address));
  }
  ASSERT_EQ(blocks.idle(), 1u);
  EXPECT_EQ(blocks.Take().get(), address);
}

TEST(RequestArena, SmallAllocationsComeFromTheBlockLargeOnesFromTheHeap) {
  ArenaBlocks blocks;
  const ArenaBlocks::Block* address = OneIdleBlock(blocks);
  RequestArena arena(blocks);  // takes that very block
  std::pmr::string small(100, 'x', arena.allocator());
  EXPECT_TRUE(Within(small.data(), address));
  // Over kLargeBytes: from the heap on its own (freed when released, not with the arena).
  std::pmr::string large(RequestArena::kLargeBytes + 1, 'y', arena.allocator());
  EXPECT_FALSE(Within(large.data(), address));
  // Small ones that no longer fit the block spill over to the heap, and still work.
  std::vector<std::pmr::string> many;
  for (int i = 0; i < 200; ++i) {
    many.emplace_back(100, static_cast<char>('a' + i % 26), arena.allocator());
  }
  EXPECT_FALSE(Within(many.back().data(), address));
  EXPECT_EQ(std::string_view(many.back()), std::string(100, static_cast<char>('a' + 199 % 26)));
}

TEST(ArenaBlocks, KeepsAtMostMaxIdle) {
  ArenaBlocks blocks;
  for (size_t i = 0; i < ArenaBlocks::kMaxIdle + 5; ++i) {
    blocks.Give(std::make_unique<ArenaBlocks::Block>());
  }
  EXPECT_EQ(blocks.idle(), ArenaBlocks::kMaxIdle);
}

TEST(StringPool, AStringComesBackEmptyWithItsCapacity) {
  StringPool pool;
  const char* storage = nullptr;
  {
    PooledString text(pool);
    text->assign(2000, 'x');
    storage = text->data();
  }
  ASSERT_EQ(pool.idle(), 1u);
  PooledString again(pool);
  EXPECT_TRUE(again->empty());
  EXPECT_GE(again->capacity(), 2000u);
  EXPECT_EQ(again->data(), storage);
}

TEST(StringPool, LargeOrEmptyStringsAreNotKept) {
  StringPool pool;
  pool.Give(std::string());
  pool.Give(std::string(StringPool::kMaxKeptCapacity + 1, 'x'));
  EXPECT_EQ(pool.idle(), 0u);
  for (size_t i = 0; i < StringPool::kMaxIdle + 3; ++i) {
    pool.Give(std::string(100, 'x'));
  }
  EXPECT_EQ(pool.idle(), StringPool::kMaxIdle);
}

}  // namespace
}  // namespace berry::server::request_arena_test
