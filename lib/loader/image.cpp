#include "loader/image.hpp"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/unique_fd.hpp"

namespace azote::loader {
namespace {

Unexpected<LoaderError> malformed(std::string why) { return make_error(LoaderErrc::kMalformed, std::move(why)); }

// Bounds-checked little-endian field read (x86 only, so host order == LE).
template <class T>
bool get(std::span<const uint8_t> b, uint64_t off, T* out) {
  if (off > b.size() || sizeof(T) > b.size() - off) return false;
  std::memcpy(out, b.data() + off, sizeof(T));
  return true;
}

bool add_ok(uint64_t a, uint64_t b, uint64_t* sum) { return !__builtin_add_overflow(a, b, sum); }

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return buf;
}

struct Phdr {
  uint32_t type;
  uint64_t offset, paddr, filesz, memsz;
};

// Walks one PT_NOTE segment's bytes; records the entry notes we understand.
LoaderResult<bool> parse_notes(std::span<const uint8_t> notes, ElfImage* img) {
  uint64_t off = 0;
  for (int guard = 0; off + 12 <= notes.size(); ++guard) {
    if (guard > 4096) return malformed("too many ELF notes");
    uint32_t namesz = 0, descsz = 0, type = 0;
    get(notes, off, &namesz);
    get(notes, off + 4, &descsz);
    get(notes, off + 8, &type);
    const uint64_t name_off = off + 12;
    const uint64_t name_len = (static_cast<uint64_t>(namesz) + 3) & ~3ull;
    const uint64_t desc_off = name_off + name_len;
    const uint64_t desc_len = (static_cast<uint64_t>(descsz) + 3) & ~3ull;
    if (name_len > notes.size() || desc_off > notes.size() || desc_len > notes.size() - desc_off)
      return malformed("ELF note at offset " + std::to_string(off) + " runs past its segment");
    const std::string_view name(reinterpret_cast<const char*>(notes.data() + name_off),  // NOLINT
                                namesz > 0 ? namesz - 1 : 0);
    auto desc = notes.subspan(desc_off, descsz);
    if (name == "Xen" && type == kXenElfNotePhys32Entry) {
      if (descsz == 4) {
        uint32_t e = 0;
        get(desc, 0, &e);
        img->pvh_entry = e;
      } else if (descsz == 8) {
        uint64_t e = 0;
        get(desc, 0, &e);
        if (e > 0xffffffffull) return malformed("PVH entry " + hex(e) + " is above 4 GiB");
        img->pvh_entry = static_cast<uint32_t>(e);
      } else {
        return malformed("PVH entry note has " + std::to_string(descsz) + "-byte descriptor");
      }
    } else if (name == "Azote" && type == kAzoteElfNoteEntry64) {
      if (descsz != 8) return malformed("Azote entry note has " + std::to_string(descsz) + "-byte descriptor");
      uint64_t e = 0;
      get(desc, 0, &e);
      img->azote_entry = e;
    } else if (name == "Azote" && type == kAzoteElfNoteIoWindow) {
      if (descsz != 4) return malformed("Azote I/O window note has " + std::to_string(descsz) + "-byte descriptor");
      uint32_t v = 0;
      get(desc, 0, &v);
      img->io_window = v == 1;
    }
    off = desc_off + desc_len;
  }
  return true;
}

}  // namespace

ImageKind detect(std::span<const uint8_t> file) {
  if (file.size() >= 4 && std::memcmp(file.data(), ELFMAG, SELFMAG) == 0) return ImageKind::kElf;
  uint32_t magic = 0;
  if (get(file, 0x202, &magic) && magic == 0x53726448) return ImageKind::kBzImage;  // "HdrS"
  return ImageKind::kUnknown;
}

LoaderResult<ElfImage> parse_elf(std::span<const uint8_t> file) {
  if (file.size() < EI_NIDENT) return malformed("ELF file is truncated (" + std::to_string(file.size()) + " bytes)");
  if (std::memcmp(file.data(), ELFMAG, SELFMAG) != 0) return make_error(LoaderErrc::kFormat, "not an ELF file");
  ElfImage img;
  const uint8_t cls = file[EI_CLASS];
  if (cls != ELFCLASS64 && cls != ELFCLASS32) return malformed("ELF class " + std::to_string(cls) + " is invalid");
  img.is64 = cls == ELFCLASS64;
  if (file[EI_DATA] != ELFDATA2LSB) return make_error(LoaderErrc::kUnsupported, "ELF is not little-endian");

  uint16_t type = 0, machine = 0, phentsize = 0, phnum = 0;
  uint64_t phoff = 0;
  if (img.is64) {
    Elf64_Ehdr eh;
    if (!get(file, 0, &eh)) return malformed("ELF header is truncated");
    type = eh.e_type; machine = eh.e_machine; img.e_entry = eh.e_entry;
    phoff = eh.e_phoff; phentsize = eh.e_phentsize; phnum = eh.e_phnum;
    if (phentsize != sizeof(Elf64_Phdr)) return malformed("ELF program header size " + std::to_string(phentsize) + " is wrong");
  } else {
    Elf32_Ehdr eh;
    if (!get(file, 0, &eh)) return malformed("ELF header is truncated");
    type = eh.e_type; machine = eh.e_machine; img.e_entry = eh.e_entry;
    phoff = eh.e_phoff; phentsize = eh.e_phentsize; phnum = eh.e_phnum;
    if (phentsize != sizeof(Elf32_Phdr)) return malformed("ELF program header size " + std::to_string(phentsize) + " is wrong");
  }
  if (type != ET_EXEC) return make_error(LoaderErrc::kUnsupported, "ELF type " + std::to_string(type) + " is not an executable (ET_EXEC)");
  if (machine != EM_X86_64 && machine != EM_386)
    return make_error(LoaderErrc::kUnsupported, "ELF machine " + std::to_string(machine) + " is not x86");
  if (phnum == 0) return malformed("ELF has no program headers");
  if (phnum > kMaxProgramHeaders) return malformed("ELF has " + std::to_string(phnum) + " program headers (limit " + std::to_string(kMaxProgramHeaders) + ")");
  uint64_t ph_end = 0;
  if (!add_ok(phoff, static_cast<uint64_t>(phnum) * phentsize, &ph_end) || ph_end > file.size())
    return malformed("ELF program headers run past the end of the file");

  for (uint16_t i = 0; i < phnum; ++i) {
    Phdr p{};
    const uint64_t at = phoff + static_cast<uint64_t>(i) * phentsize;
    if (img.is64) {
      Elf64_Phdr ph;
      get(file, at, &ph);
      p = {ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz};
    } else {
      Elf32_Phdr ph;
      get(file, at, &ph);
      p = {ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz};
    }
    uint64_t file_end = 0;
    if (p.type != PT_LOAD && p.type != PT_NOTE) continue;
    if (!add_ok(p.offset, p.filesz, &file_end) || file_end > file.size())
      return malformed("segment " + std::to_string(i) + " (offset " + hex(p.offset) + ", size " + hex(p.filesz) + ") runs past the end of the file");
    if (p.type == PT_NOTE) {
      AZOTE_TRYV(parse_notes(file.subspan(p.offset, p.filesz), &img));
      continue;
    }
    if (p.memsz == 0) continue;
    if (p.filesz > p.memsz) return malformed("segment " + std::to_string(i) + " has filesz > memsz");
    if (p.memsz > kMaxSegmentBytes) return malformed("segment " + std::to_string(i) + " memsz " + hex(p.memsz) + " is absurd");
    uint64_t mem_end = 0;
    if (!add_ok(p.paddr, p.memsz, &mem_end)) return malformed("segment " + std::to_string(i) + " wraps the address space");
    img.segments.push_back({p.paddr, p.offset, p.filesz, p.memsz});
  }
  if (img.segments.empty()) return malformed("ELF has no loadable segments");
  std::sort(img.segments.begin(), img.segments.end(), [](auto& a, auto& b) { return a.paddr < b.paddr; });
  for (size_t i = 1; i < img.segments.size(); ++i) {
    const auto& a = img.segments[i - 1];
    if (a.paddr + a.memsz > img.segments[i].paddr)
      return malformed("segments at " + hex(a.paddr) + " and " + hex(img.segments[i].paddr) + " overlap");
  }
  img.lowest = img.segments.front().paddr;
  img.highest = img.segments.back().paddr + img.segments.back().memsz;
  auto inside = [&](uint64_t e) { return e >= img.lowest && e < img.highest; };
  if (img.pvh_entry && !inside(*img.pvh_entry)) return malformed("PVH entry " + hex(*img.pvh_entry) + " is outside the loaded segments");
  if (img.azote_entry && !inside(*img.azote_entry)) return malformed("Azote entry " + hex(*img.azote_entry) + " is outside the loaded segments");
  return img;
}

LoaderResult<BzImage> parse_bzimage(std::span<const uint8_t> file) {
  BzImage bz;
  uint16_t boot_flag = 0;
  uint32_t magic = 0;
  uint8_t setup_sects = 0, jump_len = 0;
  if (!get(file, 0x1fe, &boot_flag) || !get(file, 0x202, &magic) || !get(file, 0x1f1, &setup_sects) ||
      !get(file, 0x201, &jump_len) || !get(file, 0x206, &bz.protocol))
    return malformed("bzImage is truncated before its setup header");
  if (magic != 0x53726448) return make_error(LoaderErrc::kFormat, "no bzImage setup header (HdrS)");
  if (boot_flag != 0xaa55) return malformed("bzImage boot flag is " + hex(boot_flag) + ", expected 0xaa55");
  if (bz.protocol < 0x020a)
    return make_error(LoaderErrc::kUnsupported, "boot protocol " + hex(bz.protocol) + " is older than 2.10");
  const uint64_t hdr_end = 0x202 + static_cast<uint64_t>(jump_len);
  if (hdr_end < 0x264 || hdr_end > file.size()) return malformed("bzImage setup header length " + std::to_string(jump_len) + " is invalid");
  get(file, 0x211, &bz.loadflags);
  get(file, 0x22c, &bz.initrd_addr_max);
  get(file, 0x230, &bz.kernel_alignment);
  get(file, 0x258, &bz.pref_address);
  get(file, 0x260, &bz.init_size);
  if (bz.protocol >= 0x0206) get(file, 0x238, &bz.cmdline_size); else bz.cmdline_size = 255;
  if (bz.protocol >= 0x020c) get(file, 0x236, &bz.xloadflags);
  if ((bz.loadflags & 0x01) == 0) return make_error(LoaderErrc::kUnsupported, "zImage (not LOADED_HIGH) is not supported");
  if (bz.protocol >= 0x020c && (bz.xloadflags & 0x1) == 0)
    return make_error(LoaderErrc::kUnsupported, "kernel has no 64-bit entry point (XLF_KERNEL_64)");
  const uint64_t sects = setup_sects == 0 ? 4 : setup_sects;
  bz.kernel_offset = (sects + 1) * 512;
  if (bz.kernel_offset >= file.size()) return malformed("bzImage has no protected-mode kernel after its " + std::to_string(sects) + " setup sectors");
  bz.kernel_size = file.size() - bz.kernel_offset;
  if (bz.init_size > kMaxSegmentBytes) return malformed("bzImage init_size " + hex(bz.init_size) + " is absurd");
  bz.setup_header.assign(file.begin() + 0x1f1, file.begin() + static_cast<long>(hdr_end));
  return bz;
}

namespace {

const char* file_kind(mode_t mode) {
  if (S_ISFIFO(mode)) return "a named pipe";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a file";
}

}  // namespace

LoaderResult<std::vector<uint8_t>> read_file(const std::string& path, size_t max) {
  // O_NONBLOCK: opening a named pipe for reading otherwise waits for a writer, for
  // ever; a terminal could become our controlling one without O_NOCTTY. Only a
  // regular file is read, and for those O_NONBLOCK means nothing; it is cleared anyway
  // so that the reads below never see EAGAIN.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd) return errno_error(LoaderErrc::kIo, "open " + path);
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return errno_error(LoaderErrc::kIo, "stat " + path);
  if (!S_ISREG(st.st_mode))
    return make_error(LoaderErrc::kIo, path + " is not a regular file (it is " + file_kind(st.st_mode) + ")");
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) return errno_error(LoaderErrc::kIo, "fcntl " + path);
  return read_fd(fd.get(), path, max);
}

LoaderResult<std::vector<uint8_t>> read_fd(int fd, const std::string& what, size_t max) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) return errno_error(LoaderErrc::kIo, "stat " + what);
  if (!S_ISREG(st.st_mode))
    return make_error(LoaderErrc::kIo, what + " is not a regular file (it is " + file_kind(st.st_mode) + ")");
  if (static_cast<uint64_t>(st.st_size) > max)
    return make_error(LoaderErrc::kMalformed, what + " is " + std::to_string(st.st_size) + " bytes (limit " + std::to_string(max) + ")");
  std::vector<uint8_t> buf(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(LoaderErrc::kIo, "read " + what);
    if (n == 0) return make_error(LoaderErrc::kIo, what + " shrank while being read");
    done += static_cast<size_t>(n);
  }
  return buf;
}

}  // namespace azote::loader
