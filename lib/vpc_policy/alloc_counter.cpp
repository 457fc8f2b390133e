#include "vpc_policy/alloc_counter.hpp"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<uint64_t> g_allocations{0};
}  // namespace

namespace azote::vpc::test {
uint64_t allocation_count() { return g_allocations.load(std::memory_order_relaxed); }
}  // namespace azote::vpc::test

// Replaceable global allocation functions ([new.delete.single]); the array forms call
// these by default.
void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
