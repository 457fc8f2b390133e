// Minimal ACPI tables so guests find their CPUs and interrupt controllers:
// RSDP (rev 2) -> XSDT -> { FADT (hardware-reduced, reset via i8042) -> DSDT, MADT }.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace azote::acpi {

struct Tables {
  uint64_t base = 0;           // guest-physical address of bytes[0] (the RSDP)
  std::vector<uint8_t> bytes;  // all tables, laid out from `base`
  uint64_t rsdp_addr() const { return base; }
};

// Builds the tables for `nvcpus` vCPUs (APIC IDs 0..n-1) at `base` (16-byte aligned).
// A non-zero `tpm_crb_control` adds a TPM2 table (TCG ACPI Specification, revision 4)
// naming a CRB interface whose control area is at that address.
Tables build(uint64_t base, uint32_t nvcpus, uint64_t lapic_addr, uint64_t ioapic_addr, uint64_t tpm_crb_control = 0);

// Sum of bytes mod 256 (a valid table sums to 0).
uint8_t checksum(const uint8_t* p, size_t n);

}  // namespace azote::acpi
