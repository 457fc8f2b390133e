#include "net/checksum.hpp"

namespace azote::net {
namespace {

uint16_t fold(uint64_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(acc);
}

}  // namespace

Checksum& Checksum::add(std::span<const uint8_t> bytes) {
  size_t i = 0;
  if (odd_ && !bytes.empty()) {
    acc_ += bytes[0];
    odd_ = false;
    i = 1;
  }
  // Whole words; the accumulator cannot overflow: 2^64 / 2^16 words is far beyond any buffer.
  for (; i + 1 < bytes.size(); i += 2) acc_ += static_cast<uint32_t>(bytes[i] << 8 | bytes[i + 1]);
  if (i < bytes.size()) {
    acc_ += static_cast<uint32_t>(bytes[i]) << 8;
    odd_ = true;
  }
  return *this;
}

Checksum& Checksum::add16(uint16_t word) {
  acc_ += word;
  return *this;
}

uint16_t Checksum::sum() const { return fold(acc_); }

uint16_t internet_checksum(std::span<const uint8_t> bytes) { return Checksum().add(bytes).finish(); }

bool checksum_ok(std::span<const uint8_t> bytes) { return Checksum().add(bytes).sum() == 0xffff; }

Checksum ipv4_pseudo_header(Ipv4Address src, Ipv4Address dst, uint8_t protocol, uint16_t length) {
  Checksum c;
  c.add(src).add(dst).add16(protocol).add16(length);
  return c;
}

uint16_t checksum_update16(uint16_t checksum, uint16_t old_word, uint16_t new_word) {
  const uint64_t acc = uint64_t{static_cast<uint16_t>(~checksum)} + static_cast<uint16_t>(~old_word) + new_word;
  return static_cast<uint16_t>(~fold(acc));
}

uint16_t checksum_update32(uint16_t checksum, uint32_t old_value, uint32_t new_value) {
  checksum = checksum_update16(checksum, static_cast<uint16_t>(old_value >> 16), static_cast<uint16_t>(new_value >> 16));
  return checksum_update16(checksum, static_cast<uint16_t>(old_value), static_cast<uint16_t>(new_value));
}

}  // namespace azote::net
