// Test-only: the test binary replaces global operator new (alloc_counter.cpp) to count
// heap allocations, so a test can assert that a code path allocates nothing.
#pragma once

#include <cstdint>

namespace azote::vpc::test {

uint64_t allocation_count();

}  // namespace azote::vpc::test
