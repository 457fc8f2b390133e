// Parsing of kernel images a user hands to azote-hv: ELF (PVH / Azote entry notes)
// and Linux bzImage. Pure functions over bytes: every offset, size and count read
// from the file is checked before use, so a malformed image yields a clear error,
// never a crash. Loading into guest memory is a separate step (load.hpp).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace azote::loader {

enum class LoaderErrc {
  kIo = 1,         // cannot read the file
  kFormat,         // not a format we know
  kMalformed,      // structurally broken (truncated, overlapping, absurd sizes)
  kUnsupported,    // valid but not bootable here (no entry we can use, old protocol)
  kNoRoom,         // does not fit the guest memory layout
};
using LoaderError = Error<LoaderErrc>;
template <class T>
using LoaderResult = Result<T, LoaderError>;

// Limits that keep parsing bounded whatever the file claims.
inline constexpr size_t kMaxImageBytes = 512ull << 20;
inline constexpr size_t kMaxProgramHeaders = 128;
inline constexpr uint64_t kMaxSegmentBytes = 1ull << 30;

// Xen PVH entry: ELF note name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY.
inline constexpr uint32_t kXenElfNotePhys32Entry = 18;
// Azote 64-bit entry: note name "Azote", desc = 8-byte physical entry address. The
// guest is entered in long mode with the hypervisor's identity map and GDT.
inline constexpr uint32_t kAzoteElfNoteEntry64 = 0x415a0001;
// Azote I/O window: note name "Azote", 4-byte descriptor (1). The kernel places every
// virtqueue and I/O buffer inside the window the hypervisor announces on its command
// line (azote.iowin=START,SIZE), so cards need to map only that window.
inline constexpr uint32_t kAzoteElfNoteIoWindow = 0x415a0002;

struct LoadSegment {
  uint64_t paddr = 0;
  uint64_t file_offset = 0;
  uint64_t filesz = 0;
  uint64_t memsz = 0;
};

struct ElfImage {
  bool is64 = true;
  uint64_t e_entry = 0;
  std::vector<LoadSegment> segments;   // sorted by paddr, non-overlapping
  std::optional<uint32_t> pvh_entry;   // 32-bit PVH entry
  std::optional<uint64_t> azote_entry; // 64-bit entry
  bool io_window = false;              // kAzoteElfNoteIoWindow present
  uint64_t lowest = 0, highest = 0;    // [lowest, highest) covers every segment
};

struct BzImage {
  uint16_t protocol = 0;
  uint8_t loadflags = 0;
  uint16_t xloadflags = 0;
  uint32_t cmdline_size = 0;   // max command line length, without the NUL
  uint32_t initrd_addr_max = 0;
  uint32_t kernel_alignment = 0;
  uint64_t pref_address = 0;
  uint32_t init_size = 0;      // memory the kernel needs from its load address
  uint64_t kernel_offset = 0;  // file offset of the protected-mode kernel
  uint64_t kernel_size = 0;
  // Bytes [0x1f1, header end) of the file, copied into the zero page.
  std::vector<uint8_t> setup_header;
};

enum class ImageKind { kElf, kBzImage, kUnknown };
ImageKind detect(std::span<const uint8_t> file);

LoaderResult<ElfImage> parse_elf(std::span<const uint8_t> file);
LoaderResult<BzImage> parse_bzimage(std::span<const uint8_t> file);

// Reads a whole regular file (bounded by kMaxImageBytes); errors name the path. Anything
// else (a named pipe, a device, a directory) is refused without blocking (kIo).
LoaderResult<std::vector<uint8_t>> read_file(const std::string& path, size_t max = kMaxImageBytes);
// The same from a descriptor handed over by the launcher (read with pread from offset 0;
// the descriptor stays open); `what` names it in errors.
LoaderResult<std::vector<uint8_t>> read_fd(int fd, const std::string& what, size_t max = kMaxImageBytes);

}  // namespace azote::loader
