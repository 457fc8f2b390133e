// azote-cpu-host MIB: SHA-256 over MIB MiB of the cpu-benchmark stream, on the host.
// Prints "host: cpu mib=N sha256=<hex> cycles=<rdtsc delta> ns=<wall ns>"; the
// guest's `azote.run=cpu MIB` prints the same digest.
#include <x86intrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "sha256/cpu_stream.hpp"
#include "sha256/sha256.hpp"

int main(int argc, char** argv) {
  constexpr uint64_t kMaxMib = 1ull << 20;
  char* end = nullptr;
  if (argc != 2 || argv[1][0] < '0' || argv[1][0] > '9') {
    std::fprintf(stderr, "usage: azote-cpu-host MIB   (0-%llu)\n", static_cast<unsigned long long>(kMaxMib));
    return 2;
  }
  const unsigned long long mib = std::strtoull(argv[1], &end, 10);
  if (*end != '\0' || mib > kMaxMib) {
    std::fprintf(stderr, "azote-cpu-host: bad MiB count '%s' (want 0-%llu)\n", argv[1],
                 static_cast<unsigned long long>(kMaxMib));
    return 2;
  }
  // Page-aligned like the guest's buffer, and filled (touched) before timing.
  auto* raw = static_cast<uint8_t*>(std::aligned_alloc(4096, azote::cpu_stream::kBufferBytes));
  if (raw == nullptr) {
    std::fprintf(stderr, "azote-cpu-host: out of memory\n");
    return 1;
  }
  std::unique_ptr<uint8_t, decltype(&std::free)> buf(raw, &std::free);
  azote::cpu_stream::fill(buf.get());

  uint8_t digest[azote::Sha256::kDigestBytes];
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t c0 = __rdtsc();
  azote::cpu_stream::hash(buf.get(), mib, digest);
  const uint64_t cycles = __rdtsc() - c0;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();

  char hex[2 * sizeof digest + 1];
  for (size_t i = 0; i < sizeof digest; ++i) std::snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  std::printf("host: cpu mib=%llu sha256=%s cycles=%llu ns=%lld\n", mib, hex, static_cast<unsigned long long>(cycles),
              static_cast<long long>(ns));
  return 0;
}
