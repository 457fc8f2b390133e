#include "rt.hpp"

namespace az {

namespace {

constexpr uint16_t kCom1 = 0x3f8;
constexpr uint16_t kExitPort = 0xf4;
constexpr uint8_t kLsrThre = 0x20;
constexpr size_t kFifoBytes = 16;

uint32_t g_console_lock;  // .bss: zeroed by azote_user_main before anything runs
bool g_fifo_enabled;

// A CPU that faults while holding the lock reports anyway after ~1 s rather than
// deadlocking against itself.
void console_lock() {
  const uint64_t start = rdtsc();
  while (__atomic_exchange_n(&g_console_lock, 1, __ATOMIC_ACQUIRE) != 0) {
    while (__atomic_load_n(&g_console_lock, __ATOMIC_RELAXED) != 0) {
      cpu_relax();
      if (rdtsc() - start > (1ull << 31)) return;
    }
  }
}
void console_unlock() { __atomic_store_n(&g_console_lock, 0, __ATOMIC_RELEASE); }

}  // namespace

[[noreturn]] void exit(int status) {
  outb(kExitPort, static_cast<uint8_t>(status));
  park();
}

size_t strlen(const char* s) {
  size_t n = 0;
  while (s[n] != 0) ++n;
  return n;
}

bool Str::operator==(const char* s) const {
  for (size_t i = 0; i < n; ++i)
    if (s[i] != p[i] || s[i] == 0) return false;
  return s[n] == 0;
}

bool parse_u64(Str s, uint64_t max, uint64_t* out) {
  if (s.n == 0 || s.n > 20) return false;
  uint64_t v = 0;
  for (size_t i = 0; i < s.n; ++i) {
    const char ch = s.p[i];
    if (ch < '0' || ch > '9') return false;
    const uint64_t d = static_cast<uint64_t>(ch - '0');
    if (v > (max - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

void console_write(const char* s, size_t n) {
  console_lock();
  if (!g_fifo_enabled) {
    outb(kCom1 + 2, 0x07);  // FCR: enable and clear the FIFOs
    g_fifo_enabled = true;
  }
  while (n > 0) {
    // Bounded: a UART that never reports THRE must not hang the guest.
    for (int i = 0; i < 100000 && (inb(kCom1 + 5) & kLsrThre) == 0; ++i) cpu_relax();
    const size_t chunk = n < kFifoBytes ? n : kFifoBytes;
    // Plain `out` per byte: under the PVM backend a user-mode `rep outsb` is
    // emulated byte by byte and measured ~1.5x slower per byte than `out`.
    for (size_t i = 0; i < chunk; ++i) outb(kCom1, static_cast<uint8_t>(s[i]));
    s += chunk;
    n -= chunk;
  }
  console_unlock();
}

Line& Line::c(char ch) {
  if (n_ < sizeof buf_ - 1) buf_[n_++] = ch;
  return *this;
}
Line& Line::s(const char* str) {
  while (*str != 0) c(*str++);
  return *this;
}
Line& Line::s(Str str) {
  for (size_t i = 0; i < str.n; ++i) c(str.p[i]);
  return *this;
}
Line& Line::u(uint64_t v) {
  char tmp[20];
  size_t k = 0;
  do {
    tmp[k++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (k > 0) c(tmp[--k]);
  return *this;
}
Line& Line::x(uint64_t v) {
  int shift = 60;
  while (shift > 0 && ((v >> shift) & 0xf) == 0) shift -= 4;
  for (; shift >= 0; shift -= 4) c("0123456789abcdef"[(v >> shift) & 0xf]);
  return *this;
}
Line& Line::hex2(uint8_t v) { return c("0123456789abcdef"[v >> 4]).c("0123456789abcdef"[v & 0xf]); }
void Line::flush() {
  console_write(buf_, n_);
  n_ = 0;
}
void Line::print() {
  buf_[n_++] = '\n';  // c() always leaves room for this
  console_write(buf_, n_);
  n_ = 0;
}

bool parse_hex(Str s, uint8_t* out, size_t cap, size_t* len) {
  if (s.n % 2 != 0 || s.n / 2 > cap) return false;
  auto nibble = [](char ch) -> int {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.n; i += 2) {
    const int hi = nibble(s.p[i]), lo = nibble(s.p[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i / 2] = static_cast<uint8_t>(hi << 4 | lo);
  }
  *len = s.n / 2;
  return true;
}

size_t base64(const uint8_t* in, size_t n, char* out) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t k = 0;
  for (size_t i = 0; i < n; i += 3) {
    const size_t left = n - i;
    const uint32_t v = uint32_t{in[i]} << 16 | (left > 1 ? uint32_t{in[i + 1]} << 8 : 0) | (left > 2 ? in[i + 2] : 0);
    out[k++] = kAlphabet[v >> 18 & 63];
    out[k++] = kAlphabet[v >> 12 & 63];
    out[k++] = left > 1 ? kAlphabet[v >> 6 & 63] : '=';
    out[k++] = left > 2 ? kAlphabet[v & 63] : '=';
  }
  return k;
}

bool base64_decode(Str s, uint8_t* out, size_t cap, size_t* len) {
  if (s.n % 4 != 0) return false;
  auto value = [](char ch) -> int {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
  };
  size_t k = 0;
  for (size_t i = 0; i < s.n; i += 4) {
    const bool last = i + 4 == s.n;
    uint32_t v = 0;
    size_t pad = 0;
    for (size_t j = 0; j < 4; ++j) {
      const char ch = s.p[i + j];
      if (ch == '=' && last && j >= 2) {
        ++pad;
        v <<= 6;
        continue;
      }
      const int d = value(ch);
      if (d < 0 || pad != 0) return false;  // not the alphabet, or data after '='
      v = v << 6 | static_cast<uint32_t>(d);
    }
    // Canonical: the bits the padding leaves unused are zero.
    if ((pad == 1 && (v & 0xff) != 0) || (pad == 2 && (v & 0xffff) != 0)) return false;
    const size_t bytes = 3 - pad;
    if (bytes > cap - k) return false;
    out[k++] = static_cast<uint8_t>(v >> 16);
    if (bytes > 1) out[k++] = static_cast<uint8_t>(v >> 8);
    if (bytes > 2) out[k++] = static_cast<uint8_t>(v);
  }
  *len = k;
  return true;
}

namespace {
uint64_t tsc_hz_uncached() {
  const Cpuid hv = cpuid(0x40000000);
  if ((hv.a & 0xffff0000) == 0x40000000 && hv.a >= 0x40000010) {
    const Cpuid t = cpuid(0x40000010);
    if (t.a != 0) return uint64_t{t.a} * 1000;
  }
  const uint32_t max = cpuid(0).a;
  if (max >= 0x15) {
    const Cpuid t = cpuid(0x15);
    if (t.a != 0 && t.b != 0 && t.c != 0) return uint64_t{t.c} * t.b / t.a;
  }
  if (max >= 0x16) {
    const Cpuid t = cpuid(0x16);
    if ((t.a & 0xffff) != 0) return uint64_t{t.a & 0xffff} * 1000000;
  }
  // KVM (azote-hv, QEMU) usually leaves all of those zero, but its paravirtual clock
  // publishes the TSC -> ns scale: enable it on a private page, read it, disable it.
  if (hv.b == 0x4b4d564b && hv.c == 0x564b4d56 && hv.d == 0x4d && hv.a >= 0x40000001 &&
      (cpuid(0x40000001).a & (1u << 3)) != 0) {  // "KVMKVMKVM", KVM_FEATURE_CLOCKSOURCE2
    constexpr uint32_t kMsrKvmSystemTimeNew = 0x4b564d01;
    alignas(64) static volatile uint32_t pvclock[8];  // struct pvclock_vcpu_time_info
    for (auto& w : pvclock) w = 0;
    wrmsr(kMsrKvmSystemTimeNew, reinterpret_cast<uint64_t>(&pvclock[0]) | 1);
    uint32_t mul = 0;
    int8_t shift = 0;
    for (int tries = 0; tries < 100; ++tries) {
      const uint32_t version = pvclock[0];
      mul = pvclock[6];
      shift = static_cast<int8_t>(pvclock[7] & 0xff);
      if ((version & 1) == 0 && version == pvclock[0]) break;
    }
    wrmsr(kMsrKvmSystemTimeNew, 0);
    if (mul != 0 && shift > -32 && shift < 32) {
      // ns = ((tsc << shift) * mul) >> 32, so Hz = 1e9 * 2^32 / mul / 2^shift.
      uint64_t hz = (1000000000ull << 32) / mul;
      return shift >= 0 ? hz >> shift : hz << -shift;
    }
  }
  return 0;
}
uint64_t g_tsc_hz_cache;  // .bss; 0 = not known yet
}  // namespace

uint64_t tsc_hz() {
  // The pvclock path costs two CPL0 services (wrmsr): do it once.
  uint64_t hz = __atomic_load_n(&g_tsc_hz_cache, __ATOMIC_RELAXED);
  if (hz == 0) {
    hz = tsc_hz_uncached();
    __atomic_store_n(&g_tsc_hz_cache, hz, __ATOMIC_RELAXED);
  }
  return hz;
}

}  // namespace az
