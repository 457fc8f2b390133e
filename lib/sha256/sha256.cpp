#include "sha256/sha256.hpp"

namespace azote {

namespace {

constexpr std::uint32_t kRoundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

constexpr std::uint32_t kInitialState[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

constexpr std::uint32_t rotr(std::uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

inline std::uint32_t load_be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

inline void store_be32(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

// One round. The caller rotates the roles of the eight working variables instead
// of moving values: only d (gets d + T1) and h (gets T1 + T2) change.
[[gnu::always_inline]] inline void sha_round(std::uint32_t a, std::uint32_t b, std::uint32_t c, std::uint32_t& d,
                                             std::uint32_t e, std::uint32_t f, std::uint32_t g, std::uint32_t& h,
                                             std::uint32_t k_plus_w) {
  const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + (g ^ (e & (f ^ g))) + k_plus_w;
  const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) | (c & (a | b)));
  d += t1;
  h = t1 + t2;
}

void compress(std::uint32_t* state, const std::uint8_t* p, std::size_t nblocks) {
  for (; nblocks > 0; --nblocks, p += Sha256::kBlockBytes) {
    std::uint32_t w[64];
    for (unsigned i = 0; i < 16; ++i) w[i] = load_be32(p + 4 * i);
    for (unsigned i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    std::uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (unsigned i = 0; i < 64; i += 8) {
      sha_round(a, b, c, d, e, f, g, h, kRoundConstants[i + 0] + w[i + 0]);
      sha_round(h, a, b, c, d, e, f, g, kRoundConstants[i + 1] + w[i + 1]);
      sha_round(g, h, a, b, c, d, e, f, kRoundConstants[i + 2] + w[i + 2]);
      sha_round(f, g, h, a, b, c, d, e, kRoundConstants[i + 3] + w[i + 3]);
      sha_round(e, f, g, h, a, b, c, d, kRoundConstants[i + 4] + w[i + 4]);
      sha_round(d, e, f, g, h, a, b, c, kRoundConstants[i + 5] + w[i + 5]);
      sha_round(c, d, e, f, g, h, a, b, kRoundConstants[i + 6] + w[i + 6]);
      sha_round(b, c, d, e, f, g, h, a, kRoundConstants[i + 7] + w[i + 7]);
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
  }
}

}  // namespace

void Sha256::reset() {
  for (unsigned i = 0; i < 8; ++i) state_[i] = kInitialState[i];
  total_bytes_ = 0;
  block_len_ = 0;
}

void Sha256::update(const void* data, std::size_t len) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  total_bytes_ += len;
  if (block_len_ > 0) {
    const std::size_t room = kBlockBytes - block_len_;
    const std::size_t take = len < room ? len : room;
    for (std::size_t i = 0; i < take; ++i) block_[block_len_ + i] = p[i];
    block_len_ += take;
    p += take;
    len -= take;
    if (block_len_ < kBlockBytes) return;
    compress(state_, block_, 1);
    block_len_ = 0;
  }
  if (const std::size_t n = len / kBlockBytes; n > 0) {
    compress(state_, p, n);
    p += n * kBlockBytes;
    len -= n * kBlockBytes;
  }
  for (std::size_t i = 0; i < len; ++i) block_[i] = p[i];
  block_len_ = len;
}

void Sha256::finish(std::uint8_t* out) {
  const std::uint64_t bits = total_bytes_ * 8;
  block_[block_len_++] = 0x80;
  if (block_len_ > kBlockBytes - 8) {
    while (block_len_ < kBlockBytes) block_[block_len_++] = 0;
    compress(state_, block_, 1);
    block_len_ = 0;
  }
  while (block_len_ < kBlockBytes - 8) block_[block_len_++] = 0;
  store_be32(block_ + 56, static_cast<std::uint32_t>(bits >> 32));
  store_be32(block_ + 60, static_cast<std::uint32_t>(bits));
  compress(state_, block_, 1);
  for (unsigned i = 0; i < 8; ++i) store_be32(out + 4 * i, state_[i]);
  reset();
}

void Sha256::digest(const void* data, std::size_t len, std::uint8_t* out) {
  Sha256 h;
  h.update(data, len);
  h.finish(out);
}

}  // namespace azote
