// User-mode (CPL3, IOPL=3) runtime of azote-guest: port I/O, the exit port, the
// console, CPU helpers, strings and number formatting. No libc.
#pragma once

#include <cstddef>
#include <cstdint>

#include "layout.h"

namespace az {

// ---------------------------------------------------------------- CPU helpers
inline void outb(uint16_t port, uint8_t v) { asm volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory"); }
inline uint8_t inb(uint16_t port) {
  uint8_t v;
  asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
  return v;
}
inline uint64_t rdtsc() {
  uint32_t lo, hi;
  asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return (uint64_t{hi} << 32) | lo;
}
inline void cpu_relax() { asm volatile("pause" ::: "memory"); }

struct Cpuid {
  uint32_t a, b, c, d;
};
inline Cpuid cpuid(uint32_t leaf, uint32_t sub = 0) {
  Cpuid r;
  asm volatile("cpuid" : "=a"(r.a), "=b"(r.b), "=c"(r.c), "=d"(r.d) : "a"(leaf), "c"(sub));
  return r;
}

// CPL0 services (boot.S): plain calls into user-mode stubs whose int3 the #BP
// handler recognises. The guest is built with -mno-red-zone, so `call` from inline
// asm cannot clobber live stack data.
extern "C" void azote_svc_rdmsr();
extern "C" void azote_svc_wrmsr();
extern "C" void azote_svc_park();
extern "C" void azote_svc_triple();

inline uint64_t rdmsr(uint32_t msr) {
  uint32_t lo, hi;
  asm volatile("call azote_svc_rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr) : "memory");
  return (uint64_t{hi} << 32) | lo;
}
inline void wrmsr(uint32_t msr, uint64_t v) {
  asm volatile("call azote_svc_wrmsr"
               :
               : "c"(msr), "a"(static_cast<uint32_t>(v)), "d"(static_cast<uint32_t>(v >> 32))
               : "memory");
}
// Stops this CPU for good (cli; hlt at CPL0).
[[noreturn]] inline void park() {
  for (;;) asm volatile("call azote_svc_park" ::: "memory");
}
// From CPL0: load a zero-limit IDT and raise #UD, i.e. a triple fault.
inline void triple_fault() { asm volatile("call azote_svc_triple" ::: "memory"); }

// A pointer to guest-physical memory (identity mapped). The empty asm hides the
// constant from the compiler, which otherwise warns about small fixed addresses.
template <class T>
inline T* phys(uint64_t addr) {
  asm("" : "+r"(addr));
  return reinterpret_cast<T*>(addr);
}
// Unaligned little-endian loads from guest-physical memory.
inline uint8_t rd8(uint64_t a) { return *phys<volatile const uint8_t>(a); }
inline uint16_t rd16(uint64_t a) { return static_cast<uint16_t>(rd8(a) | (rd8(a + 1) << 8)); }
inline uint32_t rd32(uint64_t a) { return rd16(a) | (uint32_t{rd16(a + 2)} << 16); }
inline uint64_t rd64(uint64_t a) { return rd32(a) | (uint64_t{rd32(a + 4)} << 32); }

// Ends the VM with `status` (port 0xf4); parks the CPU if nothing listens there.
[[noreturn]] void exit(int status);

// ------------------------------------------------------------------- strings
size_t strlen(const char* s);

struct Str {
  const char* p = nullptr;
  size_t n = 0;
  bool operator==(const char* s) const;
  bool empty() const { return n == 0; }
};

// Parses a decimal number in [0, max]; false if empty, not digits, or too big.
bool parse_u64(Str s, uint64_t max, uint64_t* out);
// Decodes hex digits (either case), two per byte, into out; false if a character is
// not a hex digit, the count is odd, or more than cap bytes would come out.
bool parse_hex(Str s, uint8_t* out, size_t cap, size_t* len);
// Standard base64 (RFC 4648: '+', '/', '=' padding, no line breaks) of in[0, n) into
// out, which must hold 4 * ((n + 2) / 3) characters; returns that count.
size_t base64(const uint8_t* in, size_t n, char* out);
// Its inverse, strict: only the canonical form of what base64() writes is accepted (a
// multiple of 4 characters, the alphabet above, '=' only as the last one or two
// characters, the unused bits of the last data character zero; no whitespace). Decodes s
// into out; false if anything else is found or more than cap bytes would come out. The
// empty string decodes to 0 bytes.
bool base64_decode(Str s, uint8_t* out, size_t cap, size_t* len);

// ------------------------------------------------------------------- console
// COM1 16550 with its FIFO enabled: one LSR poll for THRE, then up to 16 bytes
// (the FIFO), so a line costs 17 port exits per 16 bytes rather than 32.
// Serialised across CPUs by a spinlock.
void console_write(const char* s, size_t n);

// A line assembled in a fixed buffer, written with one console_write. What does not
// fit (239 characters) is dropped, unless flush() sent the part before it.
class Line {
 public:
  Line& s(const char* str);
  Line& s(Str str);
  Line& c(char ch);
  Line& u(uint64_t v);    // decimal
  Line& x(uint64_t v);    // hex, no prefix, no leading zeros
  Line& hex2(uint8_t v);  // two hex digits
  void print();           // appends '\n'
  // Writes what is assembled so far without ending the line and empties the buffer:
  // a longer console line goes out in pieces, the last one through print().
  void flush();
  size_t room() const { return sizeof buf_ - 1 - n_; }  // characters c() still keeps

 private:
  char buf_[240];
  size_t n_ = 0;
};

// The TSC frequency in Hz, from CPUID (hypervisor leaf 0x40000010, 0x15, 0x16) or
// KVM's paravirtual clock; 0 if none of them says. Computed once, then cached.
uint64_t tsc_hz();

}  // namespace az
