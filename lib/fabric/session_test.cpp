// Sealing and opening between two (three) hosts: round trips, every tampered byte
// refused, wrong keys and peers, replays and window edges, rotation with its grace
// period, sequence exhaustion, plaintext only between "none" peers.
#include "fabric/session.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

namespace azote::fabric {
namespace {

using namespace std::chrono_literals;

Secret secret(uint8_t seed) {
  Secret s;
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<uint8_t>(seed * 31 + i);
  return s;
}

std::vector<uint8_t> frame(size_t n = 98, uint8_t seed = 1) {
  std::vector<uint8_t> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = static_cast<uint8_t>(seed + i * 7);
  return f;
}

class SessionTest : public ::testing::Test {
 protected:
  SessionTest() : a_(1, clock_, config()), b_(2, clock_, config()) {}
  SessionConfig config() {
    SessionConfig c;
    c.initial_seq = [this] { return next_initial_ += 1'000'000; };
    return c;
  }
  void SetUp() override {
    ASSERT_TRUE(a_.set_peer(2, {1, Cipher::kAes256Gcm, secret(1)}));
    ASSERT_TRUE(b_.set_peer(1, {1, Cipher::kAes256Gcm, secret(1)}));
  }
  std::vector<uint8_t> seal(Session& s, HostId to, std::span<const uint8_t> f, uint32_t vni = 100) {
    std::vector<uint8_t> out(f.size() + kOverhead);
    auto n = s.seal(to, vni, f, out);
    EXPECT_TRUE(n) << n.error().message();
    out.resize(n ? *n : 0);
    return out;
  }
  FabricErrc open(Session& s, std::span<const uint8_t> p, std::vector<uint8_t>* inner = nullptr) {
    std::vector<uint8_t> out(2048);
    auto o = s.open(p, out);
    if (!o) return o.error().code;
    if (inner) inner->assign(out.begin(), out.begin() + static_cast<ptrdiff_t>(o->len));
    return FabricErrc{};
  }
  PeerStatus status(Session& s, HostId h) {
    for (const auto& p : s.status())
      if (p.host == h) return p;
    ADD_FAILURE() << "no peer " << h;
    return {};
  }
  uint64_t next_initial_ = 0;
  rate_limit::FakeClock clock_{1000s};
  Session a_, b_;
};

TEST_F(SessionTest, RoundTripBothWaysAndTheKeysDiffer) {
  const auto f = frame();
  auto p = seal(a_, 2, f, 0xabcdef);
  EXPECT_EQ(p.size(), f.size() + kOverhead);
  // The payload is not the frame.
  EXPECT_EQ(std::search(p.begin(), p.end(), f.begin() + 10, f.begin() + 30), p.end());
  std::vector<uint8_t> got;
  std::vector<uint8_t> out(2048);
  auto o = b_.open(p, out);
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->from, 1u);
  EXPECT_EQ(o->vni, 0xabcdefu);
  EXPECT_EQ(o->key_id, 1u);
  ASSERT_EQ(o->len, f.size());
  EXPECT_TRUE(std::equal(f.begin(), f.end(), out.begin()));
  auto back = seal(b_, 1, f);
  EXPECT_EQ(open(a_, back, &got), FabricErrc{});
  EXPECT_EQ(got, f);
  // The two directions have different keys and salts.
  auto k12 = derive_key(secret(1), 1, 2, 1), k21 = derive_key(secret(1), 2, 1, 1), k12b = derive_key(secret(1), 1, 2, 2);
  ASSERT_TRUE(k12 && k21 && k12b);
  EXPECT_NE(k12->key, k21->key);
  EXPECT_NE(k12->salt, k21->salt);
  EXPECT_NE(k12->key, k12b->key);
  EXPECT_EQ(k12->key, derive_key(secret(1), 1, 2, 1)->key);
  // The same frame sealed twice: different sequence numbers, different ciphertexts.
  auto p2 = seal(a_, 2, f, 0xabcdef);
  EXPECT_NE(p, p2);
  EXPECT_EQ(status(a_, 2).tx_packets, 2u);
  EXPECT_EQ(status(b_, 1).rx_packets, 1u);
}

TEST_F(SessionTest, EveryTamperedByteIsRefusedAndMovesNothing) {
  const auto f = frame(60);
  const auto p = seal(a_, 2, f);
  for (size_t i = 0; i < p.size(); ++i) {
    for (uint8_t bit : {uint8_t{0x01}, uint8_t{0x80}}) {
      auto t = p;
      t[i] ^= bit;
      EXPECT_NE(open(b_, t), FabricErrc{}) << "byte " << i << " bit " << int{bit};
    }
  }
  // Truncated and extended.
  EXPECT_NE(open(b_, std::span(p).subspan(0, p.size() - 1)), FabricErrc{});
  auto longer = p;
  longer.push_back(0);
  EXPECT_NE(open(b_, longer), FabricErrc{});
  // None of that moved the replay window: the genuine packet still opens, once.
  std::vector<uint8_t> got;
  EXPECT_EQ(open(b_, p, &got), FabricErrc{});
  EXPECT_EQ(got, f);
  EXPECT_EQ(open(b_, p), FabricErrc::kReplay);
  EXPECT_GT(status(b_, 1).errors[static_cast<size_t>(FabricErrc::kAuth)], 100u);
}

TEST_F(SessionTest, WrongKeyWrongPeerUnknownPeer) {
  // Host 3 knows host 1 with the same secret: the 1->2 key is not the 1->3 key.
  Session c(3, clock_, config());
  ASSERT_TRUE(c.set_peer(1, {1, Cipher::kAes256Gcm, secret(1)}));
  const auto p = seal(a_, 2, frame());
  EXPECT_EQ(open(c, p), FabricErrc::kAuth);
  // A host with another secret for the same key id.
  Session b2(2, clock_, config());
  ASSERT_TRUE(b2.set_peer(1, {1, Cipher::kAes256Gcm, secret(9)}));
  EXPECT_EQ(open(b2, p), FabricErrc::kAuth);
  EXPECT_EQ(status(b2, 1).errors[static_cast<size_t>(FabricErrc::kAuth)], 1u);
  // A host that does not know host 1 at all.
  Session d(4, clock_, config());
  EXPECT_EQ(open(d, p), FabricErrc::kUnknownPeer);
  EXPECT_EQ(d.unattributed(FabricErrc::kUnknownPeer), 1u);
  std::vector<uint8_t> out(200);
  EXPECT_EQ(d.seal(1, 1, frame(), out).error().code, FabricErrc::kUnknownPeer);
  // Another key id than the peer's.
  Session b3(2, clock_, config());
  ASSERT_TRUE(b3.set_peer(1, {2, Cipher::kAes256Gcm, secret(1)}));
  EXPECT_EQ(open(b3, p), FabricErrc::kUnknownKey);
  // Garbage is counted without a peer.
  const uint8_t junk[5] = {1, 2, 3, 4, 5};
  EXPECT_EQ(open(b_, junk), FabricErrc::kTruncated);
  EXPECT_EQ(b_.unattributed(FabricErrc::kTruncated), 1u);
}

TEST_F(SessionTest, ConfigurationIsValidated) {
  EXPECT_EQ(a_.set_peer(1, {1, Cipher::kAes256Gcm, secret(1)}).error().code, FabricErrc::kBadConfig);  // itself
  EXPECT_EQ(a_.set_peer(0, {1, Cipher::kAes256Gcm, secret(1)}).error().code, FabricErrc::kBadConfig);
  // The same key id with another key: refused; the same key again: nothing changes.
  EXPECT_EQ(a_.set_peer(2, {1, Cipher::kAes256Gcm, secret(2)}).error().code, FabricErrc::kBadConfig);
  EXPECT_EQ(a_.set_peer(2, {1, Cipher::kNone, {}}).error().code, FabricErrc::kBadConfig);
  EXPECT_TRUE(a_.set_peer(2, {1, Cipher::kAes256Gcm, secret(1)}));
  EXPECT_FALSE(status(a_, 2).previous_key_id);
  // A rotation must name a new key id.
  EXPECT_EQ(a_.rotate(2, {1, Cipher::kAes256Gcm, secret(3)}).error().code, FabricErrc::kBadConfig);
  EXPECT_EQ(a_.rotate(5, {2, Cipher::kAes256Gcm, secret(3)}).error().code, FabricErrc::kUnknownPeer);
  EXPECT_TRUE(a_.remove_peer(2));
  EXPECT_FALSE(a_.has_peer(2));
  EXPECT_FALSE(a_.remove_peer(2));
  EXPECT_EQ(parse_cipher("aes-256-gcm"), Cipher::kAes256Gcm);
  EXPECT_EQ(parse_cipher("none"), Cipher::kNone);
  EXPECT_FALSE(parse_cipher("aes-128-gcm"));
}

TEST_F(SessionTest, ReplayAndWindowEdges) {
  std::vector<std::vector<uint8_t>> ps;
  for (uint64_t i = 0; i < ReplayWindow::kWindow + 10; ++i) ps.push_back(seal(a_, 2, frame(40, static_cast<uint8_t>(i))));
  // Newest first: everything within the window is still accepted, out of order.
  EXPECT_EQ(open(b_, ps.back()), FabricErrc{});
  EXPECT_EQ(open(b_, ps.back()), FabricErrc::kReplay);
  const size_t oldest_inside = ps.size() - ReplayWindow::kWindow;
  EXPECT_EQ(open(b_, ps[oldest_inside]), FabricErrc{});
  EXPECT_EQ(open(b_, ps[oldest_inside - 1]), FabricErrc::kTooOld);
  EXPECT_EQ(open(b_, ps[0]), FabricErrc::kTooOld);
  for (size_t i = oldest_inside + 1; i + 1 < ps.size(); ++i) ASSERT_EQ(open(b_, ps[i]), FabricErrc{}) << i;
  for (size_t i = oldest_inside; i < ps.size(); ++i) ASSERT_EQ(open(b_, ps[i]), FabricErrc::kReplay) << i;
  const auto st = status(b_, 1);
  EXPECT_EQ(st.errors[static_cast<size_t>(FabricErrc::kReplay)], ReplayWindow::kWindow + 1);
  EXPECT_EQ(st.errors[static_cast<size_t>(FabricErrc::kTooOld)], 2u);
}

TEST_F(SessionTest, RotationWithGraceThenExpiry) {
  const auto old1 = seal(a_, 2, frame(50, 1));
  const auto old2 = seal(a_, 2, frame(50, 2));
  ASSERT_TRUE(a_.rotate(2, {2, Cipher::kAes256Gcm, secret(2)}));
  // A switched at once; B does not know key 2 yet.
  const auto new1 = seal(a_, 2, frame(50, 3));
  EXPECT_EQ(open(b_, new1), FabricErrc::kUnknownKey);
  ASSERT_TRUE(b_.rotate(1, {2, Cipher::kAes256Gcm, secret(2)}));
  const auto new2 = seal(a_, 2, frame(50, 4));
  EXPECT_EQ(open(b_, new2), FabricErrc{});
  EXPECT_EQ(open(b_, new1), FabricErrc{});  // its own window: the earlier one still opens
  // Packets of the previous key still open during the grace period, once.
  EXPECT_EQ(open(b_, old1), FabricErrc{});
  EXPECT_EQ(open(b_, old1), FabricErrc::kReplay);
  auto st = status(b_, 1);
  EXPECT_EQ(st.key_id, 2u);
  ASSERT_TRUE(st.previous_key_id);
  EXPECT_EQ(*st.previous_key_id, 1u);
  EXPECT_EQ(st.previous_remaining, 30s);
  // Grace ends: the previous key is refused, then forgotten.
  clock_.advance(29s);
  b_.expire();
  EXPECT_TRUE(status(b_, 1).previous_key_id);
  clock_.advance(1s);
  EXPECT_EQ(open(b_, old2), FabricErrc::kUnknownKey);
  b_.expire();
  EXPECT_FALSE(status(b_, 1).previous_key_id);
  EXPECT_EQ(open(b_, seal(a_, 2, frame())), FabricErrc{});
  // A second rotation inside the grace of the first forgets the oldest key.
  ASSERT_TRUE(a_.rotate(2, {3, Cipher::kAes256Gcm, secret(3)}));
  ASSERT_TRUE(a_.rotate(2, {4, Cipher::kAes256Gcm, secret(4)}));
  EXPECT_EQ(*status(a_, 2).previous_key_id, 3u);
  EXPECT_EQ(a_.rotate(2, {3, Cipher::kAes256Gcm, secret(3)}).error().code, FabricErrc::kBadConfig);
}

TEST_F(SessionTest, SequenceNumbersNeverRepeatAndRunOut) {
  SessionConfig c = config();
  c.max_packets_per_key = 3;
  Session a(1, clock_, c);
  ASSERT_TRUE(a.set_peer(2, {1, Cipher::kAes256Gcm, secret(1)}));
  std::set<uint64_t> seqs;
  std::vector<uint8_t> out(200);
  for (int i = 0; i < 3; ++i) {
    auto n = a.seal(2, 1, frame(40), out);
    ASSERT_TRUE(n);
    auto v = parse_geneve(std::span(out).subspan(0, *n));
    ASSERT_TRUE(v);
    EXPECT_TRUE(seqs.insert(find_security_option(*v)->seq).second);
    EXPECT_EQ(open(b_, std::span(out).subspan(0, *n)), FabricErrc{});
  }
  EXPECT_EQ(a.seal(2, 1, frame(40), out).error().code, FabricErrc::kSeqExhausted);
  EXPECT_EQ(status(a, 2).remaining, 0u);
  EXPECT_EQ(status(a, 2).errors[static_cast<size_t>(FabricErrc::kSeqExhausted)], 1u);
  // Rotation is the way out; the new key starts from a later initial number.
  ASSERT_TRUE(a.rotate(2, {2, Cipher::kAes256Gcm, secret(2)}));
  ASSERT_TRUE(b_.rotate(1, {2, Cipher::kAes256Gcm, secret(2)}));
  auto n = a.seal(2, 1, frame(40), out);
  ASSERT_TRUE(n);
  EXPECT_GT(find_security_option(*parse_geneve(std::span(out).subspan(0, *n)))->seq, *seqs.rbegin());
  EXPECT_EQ(open(b_, std::span(out).subspan(0, *n)), FabricErrc{});
  // Output too small.
  std::vector<uint8_t> tiny(40);
  EXPECT_EQ(a.seal(2, 1, frame(40), tiny).error().code, FabricErrc::kNoSpace);
}

TEST_F(SessionTest, PlaintextOnlyBetweenPeersConfiguredNone) {
  Session pa(1, clock_, config()), pb(2, clock_, config());
  ASSERT_TRUE(pa.set_peer(2, {7, Cipher::kNone, {}}));
  ASSERT_TRUE(pb.set_peer(1, {7, Cipher::kNone, {}}));
  const auto f = frame(80);
  std::vector<uint8_t> out(200);
  auto n = pa.seal(2, 9, f, out);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, f.size() + kFabricHeaderLen);
  const std::vector<uint8_t> plain(out.begin(), out.begin() + static_cast<ptrdiff_t>(*n));
  EXPECT_TRUE(std::equal(f.begin(), f.end(), plain.begin() + kFabricHeaderLen));
  std::vector<uint8_t> got;
  EXPECT_EQ(open(pb, plain, &got), FabricErrc{});
  EXPECT_EQ(got, f);
  EXPECT_EQ(open(pb, plain), FabricErrc::kReplay);
  // A receiver with a cipher refuses plaintext even under the right key id...
  Session eb(2, clock_, config());
  ASSERT_TRUE(eb.set_peer(1, {7, Cipher::kAes256Gcm, secret(1)}));
  EXPECT_EQ(open(eb, plain), FabricErrc::kPlaintextRefused);
  // ...and a "none" receiver refuses sealed packets.
  Session sa(1, clock_, config());
  ASSERT_TRUE(sa.set_peer(2, {7, Cipher::kAes256Gcm, secret(1)}));
  EXPECT_EQ(open(pb, seal(sa, 2, f)), FabricErrc::kPlaintextRefused);
  // Forging the option type of a sealed packet to "plaintext" to a cipher peer fails.
  auto forged = seal(a_, 2, f);
  forged[10] = 0x82;
  EXPECT_EQ(open(b_, forged), FabricErrc::kPlaintextRefused);
}

}  // namespace
}  // namespace azote::fabric
