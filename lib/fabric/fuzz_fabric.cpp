// libFuzzer target for the fabric's receive side. The first input byte picks a mode:
//   0..127: the rest is a datagram from the underlay: parse_geneve(), the options, and
//           Session::open() by a host that knows peer 1 with a cipher and peer 2 with
//           "none" (must never crash, never accept a sealed packet it did not seal);
//   128..255: the rest is an inner frame: sealed by peer 1, it must open to the same
//           bytes; then one byte of the sealed packet (position and mask from the
//           first two bytes of the frame) is altered, and open() must refuse it.
#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "fabric/geneve.hpp"
#include "fabric/session.hpp"

using namespace azote::fabric;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

struct World {
  azote::rate_limit::FakeClock clock{std::chrono::seconds(1)};
  uint64_t seq = 0;
  Session self{7, clock, cfg()};
  Session peer1{1, clock, cfg()};
  SessionConfig cfg() {
    SessionConfig c;
    c.initial_seq = [this] { return ++seq * 1000; };
    return c;
  }
  World() {
    Secret s{};
    for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<uint8_t>(i);
    check(self.set_peer(1, {1, Cipher::kAes256Gcm, s}).ok());
    check(self.set_peer(2, {1, Cipher::kNone, {}}).ok());
    check(peer1.set_peer(7, {1, Cipher::kAes256Gcm, s}).ok());
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World w;
  if (size < 1) return 0;
  const std::span<const uint8_t> in(data + 1, size - 1);
  static std::array<uint8_t, 4096> out, sealed;
  if (data[0] < 128) {
    auto v = parse_geneve(in);
    if (v) {
      check(v->header.size() + v->payload.size() == in.size());
      size_t at = 0, n = 0;
      while (auto o = next_option(v->options, &at)) {
        check(o->data.size() <= kMaxOptionDataLen);
        ++n;
      }
      check(at == v->options.size());
      (void)find_security_option(*v);
    }
    auto o = w.self.open(in, out);
    if (o) {
      // Only plaintext from the "none" peer can be forged without the key.
      check(o->from == 2);
      check(o->len + kFabricHeaderLen <= in.size());
    }
    return 0;
  }
  if (in.size() > 2000) return 0;
  auto n = w.peer1.seal(7, 0x10203, in, sealed);
  check(n.ok());
  auto o = w.self.open(std::span(sealed).subspan(0, *n), out);
  check(o.ok() && o->from == 1 && o->vni == 0x10203 && o->len == in.size());
  check(in.empty() || std::memcmp(out.data(), in.data(), in.size()) == 0);
  if (in.size() >= 2 && in[1] != 0) {
    // Reseal (the first copy is in the replay window now), alter one byte, refuse.
    auto m = w.peer1.seal(7, 0x10203, in, sealed);
    check(m.ok());
    sealed[in[0] % *m] ^= in[1];
    check(!w.self.open(std::span(sealed).subspan(0, *m), out).ok());
  }
  return 0;
}
