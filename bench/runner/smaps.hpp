// Splits a VMM's resident memory into guest RAM and everything else, from /proc/PID/smaps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace azote::bench {

struct Mapping {
  std::uint64_t start = 0;
  std::uint64_t end = 0;
  std::string perms;
  std::string path;  // empty for anonymous memory
  long rss_kib = 0;
  long pss_kib = 0;
  long anon_kib = 0;
  [[nodiscard]] std::uint64_t size_kib() const { return (end - start) / 1024; }
};

[[nodiscard]] std::vector<Mapping> parse_smaps(const std::string& text);

struct MemorySplit {
  long guest_rss_kib = 0;        // resident pages of the guest RAM mapping(s)
  long other_rss_kib = 0;        // everything else resident: the VMM's own cost
  long other_pss_kib = 0;        // same, with shared file pages divided among their users
  long other_anon_kib = 0;       // anonymous part of it (heap, stacks, private copies)
  long other_file_rss_kib = 0;   // file-backed part (binary, shared libraries, firmware files)
  std::vector<std::string> guest_mappings;  // "start-end path size" of what was counted as guest
};

// A mapping is guest RAM when it is a memfd ("/memfd:..."), which is how azote-hv holds guest
// memory, or a writable anonymous mapping at least as large as the guest's memory, which is how
// QEMU holds it without a memory backend object. Nothing else a VMM maps is that large.
[[nodiscard]] MemorySplit split_guest_memory(const std::vector<Mapping>& maps, long guest_mem_kib);

}  // namespace azote::bench
