// The four functions GCC may call even in a freestanding program. String
// instructions in inline asm, so the compiler cannot turn them back into calls to
// themselves. User mode, DF = 0 (RFLAGS = 0x3002).
#include <cstddef>
#include <cstdint>

extern "C" {

void* memcpy(void* dst, const void* src, size_t n) {
  void* ret = dst;
  asm volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
  return ret;
}

void* memmove(void* dst, const void* src, size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  if (d <= s || d >= s + n) return memcpy(dst, src, n);
  // Overlapping with dst above src: copy backwards.
  d += n - 1;
  s += n - 1;
  asm volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
  return dst;
}

void* memset(void* dst, int c, size_t n) {
  void* ret = dst;
  asm volatile("rep stosb" : "+D"(dst), "+c"(n) : "a"(c) : "memory");
  return ret;
}

int memcmp(const void* a, const void* b, size_t n) {
  const auto* x = static_cast<const unsigned char*>(a);
  const auto* y = static_cast<const unsigned char*>(b);
  for (size_t i = 0; i < n; ++i)
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  return 0;
}

}  // extern "C"
