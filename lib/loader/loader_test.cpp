// Parsing and loading of ELF/PVH and bzImage files, including malformed ones: each
// must produce a clear error, never a crash.
#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "loader/load.hpp"

namespace azote::loader {
namespace {

struct Seg {
  uint64_t paddr, filesz, memsz;
};

// A small ELF64 executable: PT_NOTE (optional PVH/Azote notes) + PT_LOADs.
std::vector<uint8_t> make_elf(const std::vector<Seg>& segs, std::optional<uint32_t> pvh,
                              std::optional<uint64_t> azote = std::nullopt, uint16_t machine = EM_X86_64) {
  std::vector<uint8_t> notes;
  auto note = [&](const char* name, uint32_t type, const void* desc, uint32_t dsz) {
    const uint32_t nsz = static_cast<uint32_t>(std::strlen(name) + 1);
    auto put = [&](const void* p, size_t n) {
      const auto* c = static_cast<const uint8_t*>(p);
      notes.insert(notes.end(), c, c + n);
      notes.resize((notes.size() + 3) & ~size_t{3}, 0);
    };
    uint32_t hdr[3] = {nsz, dsz, type};
    notes.insert(notes.end(), reinterpret_cast<uint8_t*>(hdr), reinterpret_cast<uint8_t*>(hdr) + 12);
    put(name, nsz);
    put(desc, dsz);
  };
  if (pvh) note("Xen", kXenElfNotePhys32Entry, &*pvh, 4);
  if (azote) note("Azote", kAzoteElfNoteEntry64, &*azote, 8);

  const size_t nph = segs.size() + 1;
  const size_t ph_off = sizeof(Elf64_Ehdr);
  size_t data_off = ph_off + nph * sizeof(Elf64_Phdr);
  std::vector<uint8_t> out(data_off);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = machine;
  eh.e_version = EV_CURRENT;
  eh.e_entry = segs.empty() ? 0 : segs[0].paddr;
  eh.e_phoff = ph_off;
  eh.e_ehsize = sizeof eh;
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = static_cast<uint16_t>(nph);
  std::memcpy(out.data(), &eh, sizeof eh);
  std::vector<Elf64_Phdr> phs;
  Elf64_Phdr n{};
  n.p_type = PT_NOTE;
  n.p_offset = out.size();
  n.p_filesz = notes.size();
  out.insert(out.end(), notes.begin(), notes.end());
  phs.push_back(n);
  for (const auto& s : segs) {
    Elf64_Phdr p{};
    p.p_type = PT_LOAD;
    p.p_offset = out.size();
    p.p_paddr = p.p_vaddr = s.paddr;
    p.p_filesz = s.filesz;
    p.p_memsz = s.memsz;
    for (uint64_t i = 0; i < s.filesz; ++i) out.push_back(static_cast<uint8_t>(0xa0 + i));
    phs.push_back(p);
  }
  std::memcpy(out.data() + ph_off, phs.data(), phs.size() * sizeof(Elf64_Phdr));
  return out;
}

std::string err(const LoaderResult<ElfImage>& r) { return r.ok() ? "" : r.error().message(); }

TEST(Elf, ParsesPvhAndAzoteNotes) {
  auto f = make_elf({{0x100000, 64, 128}, {0x200000, 16, 16}}, 0x100010, 0x100020);
  auto r = parse_elf(f);
  ASSERT_TRUE(r.ok()) << err(r);
  EXPECT_EQ(r->segments.size(), 2u);
  EXPECT_EQ(r->pvh_entry, 0x100010u);
  EXPECT_EQ(r->azote_entry, 0x100020u);
  EXPECT_EQ(r->lowest, 0x100000u);
  EXPECT_EQ(r->highest, 0x200010u);
}

TEST(Elf, MalformedInputsGiveClearErrors) {
  const auto good = make_elf({{0x100000, 64, 128}}, 0x100000);
  struct Case {
    std::vector<uint8_t> file;
    const char* needle;
  };
  std::vector<Case> cases;
  cases.push_back({std::vector<uint8_t>(good.begin(), good.begin() + 10), "truncated"});
  cases.push_back({std::vector<uint8_t>(good.begin(), good.begin() + 70), "past the end"});
  cases.push_back({std::vector<uint8_t>(good.begin(), good.end() - 10), "past the end"});
  {
    auto f = good;  // phnum absurd
    reinterpret_cast<Elf64_Ehdr*>(f.data())->e_phnum = 60000;
    cases.push_back({f, "program headers"});
  }
  {
    auto f = good;  // program headers beyond the file
    reinterpret_cast<Elf64_Ehdr*>(f.data())->e_phoff = 1u << 30;
    cases.push_back({f, "past the end"});
  }
  {
    auto f = good;  // offset overflow
    auto* ph = reinterpret_cast<Elf64_Phdr*>(f.data() + sizeof(Elf64_Ehdr)) + 1;
    ph->p_offset = ~0ull - 4;
    cases.push_back({f, "past the end"});
  }
  {
    auto f = good;  // filesz > memsz
    auto* ph = reinterpret_cast<Elf64_Phdr*>(f.data() + sizeof(Elf64_Ehdr)) + 1;
    ph->p_memsz = 1;
    cases.push_back({f, "filesz > memsz"});
  }
  {
    auto f = good;  // absurd memsz
    auto* ph = reinterpret_cast<Elf64_Phdr*>(f.data() + sizeof(Elf64_Ehdr)) + 1;
    ph->p_memsz = 1ull << 40;
    cases.push_back({f, "absurd"});
  }
  {
    auto f = good;  // wraps
    auto* ph = reinterpret_cast<Elf64_Phdr*>(f.data() + sizeof(Elf64_Ehdr)) + 1;
    ph->p_paddr = ~0ull - 16;
    cases.push_back({f, "wraps"});
  }
  {
    auto f = good;  // note claims a huge descriptor
    auto* ph = reinterpret_cast<Elf64_Phdr*>(f.data() + sizeof(Elf64_Ehdr));
    reinterpret_cast<uint32_t*>(f.data() + ph->p_offset)[1] = 0xfffffff0;
    cases.push_back({f, "note"});
  }
  cases.push_back({make_elf({{0x100000, 64, 128}, {0x100040, 8, 8}}, 0x100000), "overlap"});
  cases.push_back({make_elf({{0x100000, 64, 128}}, 0x900000), "outside the loaded segments"});
  cases.push_back({make_elf({{0x100000, 64, 128}}, 0x100000, std::nullopt, EM_AARCH64), "not x86"});
  cases.push_back({make_elf({}, 0x100000), "no loadable segments"});
  for (const auto& c : cases) {
    auto r = parse_elf(c.file);
    ASSERT_FALSE(r.ok()) << "expected an error mentioning: " << c.needle;
    EXPECT_NE(r.error().message().find(c.needle), std::string::npos) << c.needle << " vs " << r.error().message();
  }
}

class LoadTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kMem = 32ull << 20;
  void SetUp() override {
    auto m = GuestMemory::create(x86::ram_regions(kMem));
    ASSERT_TRUE(m.ok());
    mem_.emplace(std::move(m).value());
  }
  BootSpec spec(std::span<const uint8_t> k) {
    BootSpec s;
    s.kernel = k;
    s.cmdline = "console=ttyS0 azote.run=hello";
    s.mem_size = kMem;
    s.e820 = x86::e820_map(kMem);
    s.rsdp_addr = x86::kAcpiAddr;
    return s;
  }
  std::optional<GuestMemory> mem_;
};

TEST_F(LoadTest, PvhWritesStartInfoMemmapAndSegments) {
  auto f = make_elf({{0x100000, 64, 4096}}, 0x100004);
  auto plan = load(*mem_, spec(f));
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  EXPECT_EQ(plan->mode, x86::EntryMode::kProtected32);
  EXPECT_EQ(plan->entry, 0x100004u);
  auto si = mem_->read_obj<HvmStartInfo>(GuestAddress(plan->boot_info));
  ASSERT_TRUE(si.ok());
  EXPECT_EQ(si->magic, kHvmStartMagic);
  EXPECT_EQ(si->version, 1u);
  EXPECT_EQ(si->rsdp_paddr, x86::kAcpiAddr);
  EXPECT_EQ(si->nr_modules, 0u);
  ASSERT_EQ(si->memmap_entries, 3u);
  uint64_t ram = 0;
  for (uint32_t i = 0; i < si->memmap_entries; ++i) {
    auto e = mem_->read_obj<HvmMemmapEntry>(GuestAddress(si->memmap_paddr + i * sizeof(HvmMemmapEntry)));
    ASSERT_TRUE(e.ok());
    if (e->type == 1) ram += e->size;
  }
  // RAM below 640 KiB + from 1 MiB: within 1 MiB of the configured size, so a guest
  // rounding up to whole MiB reports exactly the configured amount.
  EXPECT_EQ((ram + (1 << 20) - 1) >> 20, kMem >> 20);
  std::array<char, 32> cmd{};
  ASSERT_TRUE(mem_->read(GuestAddress(si->cmdline_paddr), std::span(reinterpret_cast<uint8_t*>(cmd.data()), cmd.size())).ok());
  EXPECT_STREQ(cmd.data(), "console=ttyS0 azote.run=hello");
  auto b0 = mem_->read_obj<uint8_t>(GuestAddress(0x100000));
  auto bss = mem_->read_obj<uint8_t>(GuestAddress(0x100000 + 100));
  EXPECT_EQ(*b0, 0xa0);
  EXPECT_EQ(*bss, 0);
}

TEST_F(LoadTest, AzoteNoteSelectsLongMode) {
  auto f = make_elf({{0x100000, 64, 64}}, 0x100000, 0x100008);
  auto plan = load(*mem_, spec(f));
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  EXPECT_EQ(plan->mode, x86::EntryMode::kLong64);
  EXPECT_EQ(plan->entry, 0x100008u);
}

TEST_F(LoadTest, InitrdBecomesModuleZero) {
  auto f = make_elf({{0x100000, 64, 64}}, 0x100000);
  std::vector<uint8_t> initrd(10000, 0x5a);
  auto s = spec(f);
  s.initrd = std::span<const uint8_t>(initrd);
  auto plan = load(*mem_, s);
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  auto si = mem_->read_obj<HvmStartInfo>(GuestAddress(plan->boot_info));
  ASSERT_EQ(si->nr_modules, 1u);
  auto mod = mem_->read_obj<HvmModlistEntry>(GuestAddress(si->modlist_paddr));
  EXPECT_EQ(mod->size, 10000u);
  EXPECT_EQ(mod->paddr % 4096, 0u);
  EXPECT_LE(mod->paddr + mod->size, kMem);
  EXPECT_EQ(*mem_->read_obj<uint8_t>(GuestAddress(mod->paddr + 9999)), 0x5a);
}

TEST_F(LoadTest, RejectsSegmentsOutsideRamOrInLowMemory) {
  auto beyond = make_elf({{kMem - 16, 64, 64}}, kMem - 16);
  auto r = load(*mem_, spec(beyond));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("not inside guest RAM"), std::string::npos) << r.error().message();
  auto low = make_elf({{0x1000, 64, 64}}, 0x1000);  // would overwrite the boot tables
  EXPECT_FALSE(load(*mem_, spec(low)).ok());
  auto no_note = make_elf({{0x100000, 64, 64}}, std::nullopt);
  auto n = load(*mem_, spec(no_note));
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.error().message().find("PVH"), std::string::npos);
}

TEST_F(LoadTest, RejectsHugeCommandLineAndHugeInitrd) {
  auto f = make_elf({{0x100000, 64, 64}}, 0x100000);
  auto s = spec(f);
  s.cmdline.assign(x86::kCmdlineMax + 5, 'x');
  EXPECT_FALSE(load(*mem_, s).ok());
  std::vector<uint8_t> initrd(kMem, 1);
  auto s2 = spec(f);
  s2.initrd = std::span<const uint8_t>(initrd);
  auto r = load(*mem_, s2);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("initrd"), std::string::npos);
}

std::vector<uint8_t> make_bzimage(uint16_t version = 0x020f, uint32_t init_size = 4 << 20) {
  std::vector<uint8_t> f(5 * 512 + 4096, 0);
  f[0x1f1] = 4;  // setup_sects
  f[0x1fe] = 0x55;
  f[0x1ff] = 0xaa;
  f[0x201] = 0x6a;  // header length: up to 0x26c
  std::memcpy(&f[0x202], "HdrS", 4);
  std::memcpy(&f[0x206], &version, 2);
  f[0x211] = 0x01;  // LOADED_HIGH
  uint32_t v32 = 0x7fffffff;
  std::memcpy(&f[0x22c], &v32, 4);  // initrd_addr_max
  v32 = 2048;
  std::memcpy(&f[0x238], &v32, 4);  // cmdline_size
  uint16_t xl = 1;
  std::memcpy(&f[0x236], &xl, 2);   // XLF_KERNEL_64
  std::memcpy(&f[0x260], &init_size, 4);
  f[5 * 512] = 0xcc;
  return f;
}

TEST_F(LoadTest, BzImageZeroPage) {
  auto f = make_bzimage();
  auto r = parse_bzimage(f);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->kernel_offset, 5u * 512);
  std::vector<uint8_t> initrd(5000, 7);
  auto s = spec(f);
  s.initrd = std::span<const uint8_t>(initrd);
  auto plan = load(*mem_, s);
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  EXPECT_EQ(plan->entry, 0x100200u);
  EXPECT_EQ(plan->boot_info, x86::kZeroPageAddr);
  std::array<uint8_t, 4096> zp{};
  ASSERT_TRUE(mem_->read(GuestAddress(x86::kZeroPageAddr), zp).ok());
  uint32_t cmd = 0, rd = 0, rdsz = 0;
  std::memcpy(&cmd, &zp[0x228], 4);
  std::memcpy(&rd, &zp[0x218], 4);
  std::memcpy(&rdsz, &zp[0x21c], 4);
  EXPECT_EQ(cmd, x86::kCmdlineAddr);
  EXPECT_EQ(rdsz, 5000u);
  EXPECT_GE(rd, 0x100000u + (4u << 20));
  EXPECT_EQ(zp[0x1e8], 3);  // e820 entries
  EXPECT_EQ(zp[0x210], 0xff);
  EXPECT_EQ(*mem_->read_obj<uint8_t>(GuestAddress(0x100000)), 0xcc);
}

TEST_F(LoadTest, BzImageMalformed) {
  auto short_file = make_bzimage();
  short_file.resize(0x210);
  EXPECT_FALSE(parse_bzimage(short_file).ok());
  auto old = make_bzimage(0x0204);
  auto r = parse_bzimage(old);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("older"), std::string::npos);
  auto flag = make_bzimage();
  flag[0x1fe] = 0;
  EXPECT_FALSE(parse_bzimage(flag).ok());
  auto no_kernel = make_bzimage();
  no_kernel.resize(5 * 512);
  EXPECT_FALSE(parse_bzimage(no_kernel).ok());
  auto huge = make_bzimage(0x020f, 64u << 20);  // needs more than the 32 MiB guest
  auto l = load(*mem_, spec(huge));
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.error().message().find("init_size"), std::string::npos);
  std::vector<uint8_t> junk(4096, 0x42);
  auto j = load(*mem_, spec(junk));
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.error().message().find("neither"), std::string::npos);
}

TEST(PlaceInitrd, Bounds) {
  EXPECT_EQ(place_initrd(4096, 0x200000, 0x400000), 0x3ff000u);
  EXPECT_EQ(place_initrd(5000, 0x200000, 0x400000), 0x3fe000u);
  EXPECT_FALSE(place_initrd(0x300000, 0x200000, 0x400000));
  EXPECT_FALSE(place_initrd(0, 0, 0x400000));
  EXPECT_FALSE(place_initrd(~0ull, 0, 0x400000));
}

}  // namespace
}  // namespace azote::loader
