// Counts calls to the global operator new in this test binary (allocation_counter.cc replaces
// it), so a test can assert that a code path does not allocate.
#pragma once

#include <cstdint>

namespace berry::selection::testing {

// Allocations made by any thread since the program started.
uint64_t AllocationCount();

}  // namespace berry::selection::testing
