#include "acpi/acpi.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace azote::acpi {
namespace {

uint32_t u32(const std::vector<uint8_t>& b, size_t at) {
  uint32_t v;
  std::memcpy(&v, &b[at], 4);
  return v;
}
uint64_t u64(const std::vector<uint8_t>& b, size_t at) {
  uint64_t v;
  std::memcpy(&v, &b[at], 8);
  return v;
}

TEST(Acpi, TablesChecksumAndMadtListsEveryCpu) {
  const uint64_t base = 0xe0000;
  Tables t = build(base, 3, 0xfee00000, 0xfec00000);
  ASSERT_GE(t.bytes.size(), 36u);
  EXPECT_EQ(std::memcmp(t.bytes.data(), "RSD PTR ", 8), 0);
  EXPECT_EQ(checksum(t.bytes.data(), 20), 0);
  EXPECT_EQ(checksum(t.bytes.data(), 36), 0);
  const size_t xsdt = static_cast<size_t>(u64(t.bytes, 24) - base);
  ASSERT_EQ(std::memcmp(&t.bytes[xsdt], "XSDT", 4), 0);
  const uint32_t xlen = u32(t.bytes, xsdt + 4);
  EXPECT_EQ(checksum(&t.bytes[xsdt], xlen), 0);
  ASSERT_EQ(xlen, 36u + 16u);
  int cpus = 0;
  bool saw_fadt = false;
  for (size_t e = 0; e < 2; ++e) {
    const size_t tab = static_cast<size_t>(u64(t.bytes, xsdt + 36 + e * 8) - base);
    const uint32_t len = u32(t.bytes, tab + 4);
    ASSERT_LE(tab + len, t.bytes.size());
    EXPECT_EQ(checksum(&t.bytes[tab], len), 0);
    if (std::memcmp(&t.bytes[tab], "FACP", 4) == 0) {
      saw_fadt = true;
      const size_t dsdt = static_cast<size_t>(u64(t.bytes, tab + 140) - base);
      EXPECT_EQ(std::memcmp(&t.bytes[dsdt], "DSDT", 4), 0);
      EXPECT_EQ(checksum(&t.bytes[dsdt], u32(t.bytes, dsdt + 4)), 0);
    }
    if (std::memcmp(&t.bytes[tab], "APIC", 4) == 0) {
      for (size_t p = tab + 44; p < tab + len; p += t.bytes[p + 1]) {
        ASSERT_GT(t.bytes[p + 1], 0);
        if (t.bytes[p] == 0 && (u32(t.bytes, p + 4) & 1) != 0) {
          EXPECT_EQ(t.bytes[p + 3], cpus);  // APIC IDs 0..n-1
          ++cpus;
        }
      }
    }
  }
  EXPECT_TRUE(saw_fadt);
  EXPECT_EQ(cpus, 3);
  EXPECT_LE(t.bytes.size(), 0x20000u);
}

TEST(Acpi, ATpmAddsATpm2TableNamingItsCrbControlArea) {
  const uint64_t base = 0xe0000;
  EXPECT_EQ(u32(build(base, 1, 0xfee00000, 0xfec00000).bytes, static_cast<size_t>(u64(build(base, 1, 0xfee00000, 0xfec00000).bytes, 24) - base) + 4),
            36u + 16u) << "no TPM, no TPM2 table";
  Tables t = build(base, 1, 0xfee00000, 0xfec00000, 0xfed40040);
  const size_t xsdt = static_cast<size_t>(u64(t.bytes, 24) - base);
  ASSERT_EQ(u32(t.bytes, xsdt + 4), 36u + 24u);
  const size_t tab = static_cast<size_t>(u64(t.bytes, xsdt + 36 + 16) - base);
  ASSERT_EQ(std::memcmp(&t.bytes[tab], "TPM2", 4), 0);
  const uint32_t len = u32(t.bytes, tab + 4);
  EXPECT_EQ(len, 64u);  // Linux's acpi_table_tpm2 (52 bytes) and 12 bytes of start-method parameters
  EXPECT_EQ(t.bytes[tab + 8], 4);
  EXPECT_EQ(checksum(&t.bytes[tab], len), 0);
  EXPECT_EQ(u64(t.bytes, tab + 40), 0xfed40040u);
  EXPECT_EQ(u32(t.bytes, tab + 48), 7u);  // start method: CRB
}

}  // namespace
}  // namespace azote::acpi
