// Per-request memory for message fields and bodies.
//
// Beast's header container allocates every field separately, and a request's body string is
// allocated anew for every request: on the relay's path that was six to eight trips through
// malloc per request (bench/README.md, "Profile"). Instead each request gets a block of a
// worker-owned free list as a monotonic arena: the request's fields and body, and the fields of
// the upstream response, are carved out of it, and the whole block goes back to the list when
// the request is over. What does not fit (a large body) comes from the heap and is freed then.
//
// Threads: a worker's ArenaBlocks and every RequestArena made from it are used on that worker's
// thread only.
#pragma once

#include <array>
#include <boost/beast/http/fields.hpp>
#include <cstddef>
#include <memory>
#include <memory_resource>
#include <string>
#include <utility>
#include <vector>

namespace berry::server {

using ArenaAllocator = std::pmr::polymorphic_allocator<char>;
using ArenaFields = boost::beast::http::basic_fields<ArenaAllocator>;

class ArenaBlocks {
 public:
  // Room for the fields and body of a typical chat request and the upstream response's fields.
  static constexpr size_t kBlockBytes = size_t{8} * 1024;
  // Blocks kept for reuse; more are freed (they were only needed at a peak).
  static constexpr size_t kMaxIdle = 256;

  struct Block {
    alignas(std::max_align_t) std::array<std::byte, kBlockBytes> bytes;
  };

  std::unique_ptr<Block> Take();
  void Give(std::unique_ptr<Block> block);
  size_t idle() const { return free_.size(); }

 private:
  std::vector<std::unique_ptr<Block>> free_;
};

// One request's arena. Everything allocated from it must be gone before it is destroyed.
//
// Small allocations are carved out of the block (and out of heap chunks the monotonic resource
// adds when the block is full) and freed all at once with the arena. An allocation larger than
// kLargeBytes (a big body) goes to the heap on its own and is freed when it is released: a body
// that grows by reallocation, as a chunked upload does, then holds its final size, not the sum
// of every size it went through.
class RequestArena final : public std::pmr::memory_resource {
 public:
  static constexpr size_t kLargeBytes = ArenaBlocks::kBlockBytes / 2;

  explicit RequestArena(ArenaBlocks& blocks);
  ~RequestArena() override;
  RequestArena(const RequestArena&) = delete;
  RequestArena& operator=(const RequestArena&) = delete;

  ArenaAllocator allocator() { return ArenaAllocator(this); }

 private:
  void* do_allocate(size_t bytes, size_t alignment) override;
  void do_deallocate(void* p, size_t bytes, size_t alignment) override;
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }

  ArenaBlocks& blocks_;
  std::unique_ptr<ArenaBlocks::Block> block_;
  std::pmr::monotonic_buffer_resource small_;
};

// Strings a worker reuses from request to request (a relay's upstream request head and body,
// the upstream response body): they keep their capacity, so a typical request allocates none.
class StringPool {
 public:
  // Strings kept, and the largest capacity kept (a rare large body is freed, not hoarded).
  static constexpr size_t kMaxIdle = 256;
  static constexpr size_t kMaxKeptCapacity = size_t{64} * 1024;

  // An empty string, with capacity left from an earlier request when there is one.
  std::string Take();
  void Give(std::string text);
  size_t idle() const { return free_.size(); }

 private:
  std::vector<std::string> free_;
};

// A string of a StringPool for as long as this lives.
class PooledString {
 public:
  explicit PooledString(StringPool& pool) : pool_(pool), text_(pool.Take()) {}
  ~PooledString() { pool_.Give(std::move(text_)); }
  PooledString(const PooledString&) = delete;
  PooledString& operator=(const PooledString&) = delete;

  std::string& operator*() { return text_; }
  std::string* operator->() { return &text_; }

 private:
  StringPool& pool_;
  std::string text_;
};

}  // namespace berry::server
