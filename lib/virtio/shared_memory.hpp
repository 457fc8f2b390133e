// Access to guest-shared bytes for the virtio code: every read of a field the guest can
// rewrite concurrently is a single load into a private copy, and the compiler is not
// allowed to fetch it again later (which would reopen a check-then-use race).
//
//  - ring indices and ring entries: std::atomic_ref loads/stores on naturally aligned
//    host addresses (configure() checks the guest and host alignment of each ring);
//  - descriptors, indirect tables, request headers: memcpy into a private object followed
//    by a compiler barrier, so every later use reads the copy, never guest memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>

namespace azote::virtio::shared {

// A compiler-only barrier: memory may have changed behind the compiler's back, so a value
// copied before it cannot be "re-materialised" from guest memory after it.
inline void compiler_barrier() { asm volatile("" ::: "memory"); }

// SAFETY: `src` points at `n` bytes inside one mapped guest region (validated by the caller
// through GuestMemoryView::range); `dst` is private memory. The guest may change `src`
// while we copy: we may see a mix of old and new bytes, which the caller validates as a
// whole after the copy.
inline void copy_in(void* dst, const uint8_t* src, size_t n) {
  std::memcpy(dst, src, n);
  compiler_barrier();
}

// Writes into a guest buffer the device owns for this request (device-writable).
inline void copy_out(uint8_t* dst, const void* src, size_t n) {
  std::memcpy(dst, src, n);
  compiler_barrier();
}

// SAFETY (all below): `p` is aligned to sizeof(T) and inside a ring validated by
// SplitQueue::configure(); guest memory is mapped shared for the queue's lifetime.
template <class T>
inline T load(uint8_t* p, std::memory_order order) {
  return std::atomic_ref<T>(*reinterpret_cast<T*>(p)).load(order);  // NOLINT(reinterpret-cast)
}
template <class T>
inline void store(uint8_t* p, T v, std::memory_order order) {
  std::atomic_ref<T>(*reinterpret_cast<T*>(p)).store(v, order);  // NOLINT(reinterpret-cast)
}

}  // namespace azote::virtio::shared
