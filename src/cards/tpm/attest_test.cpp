// The attestation vendor command: its parser and chunks, the sha384 PCRs read through
// libtpms (compared with an extend computed here with OpenSSL), and the attestor against
// an azote-rot played by the test (the connection itself: lib/rot_link/rot_link_test.cpp).
#include "rot_link/testing.hpp"
#include "cards/tpm/attest.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/socket.h>

#include <string>
#include <thread>
#include <vector>

#include "base/hex.hpp"
#include "cards/tpm/engine.hpp"

namespace azote::card_tpm {
namespace {

using Bytes = std::vector<uint8_t>;
using namespace std::chrono_literals;

void put16(Bytes& v, uint16_t x) {
  v.push_back(static_cast<uint8_t>(x >> 8));
  v.push_back(static_cast<uint8_t>(x));
}
void put32(Bytes& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}
uint32_t get32(const Bytes& v, size_t at) {
  return static_cast<uint32_t>(v[at]) << 24 | static_cast<uint32_t>(v[at + 1]) << 16 |
         static_cast<uint32_t>(v[at + 2]) << 8 | v[at + 3];
}
uint32_t rc_of(const Bytes& r) { return r.size() < 10 ? 0xffffffff : get32(r, 6); }

// A command as the guest builds it; `size` overrides the header's commandSize.
Bytes attest_command(uint32_t offset, const Bytes& nonce, const Bytes& user_data, long size = -1) {
  Bytes c;
  put16(c, 0x8001);
  put32(c, 0);
  put32(c, 0x20000A01);
  put32(c, offset);
  put16(c, static_cast<uint16_t>(nonce.size()));
  c.insert(c.end(), nonce.begin(), nonce.end());
  put16(c, static_cast<uint16_t>(user_data.size()));
  c.insert(c.end(), user_data.begin(), user_data.end());
  const auto n = static_cast<uint32_t>(size < 0 ? static_cast<long>(c.size()) : size);
  for (int i = 0; i < 4; ++i) c[2 + static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (24 - 8 * i));
  return c;
}

TEST(AttestCommand, ParsesAGoodCommand) {
  const Bytes nonce(64, 0x11), ud(512, 0x22);
  const Bytes c = attest_command(4096, nonce, ud);
  EXPECT_TRUE(is_attest_command(c));
  const AttestParsed p = parse_attest_command(c);
  ASSERT_EQ(p.rc, 0u);
  EXPECT_EQ(p.request.offset, 4096u);
  EXPECT_EQ(p.request.nonce, nonce);
  EXPECT_EQ(p.request.user_data, ud);
  const AttestParsed empty = parse_attest_command(attest_command(0, {}, {}));
  ASSERT_EQ(empty.rc, 0u);
  EXPECT_TRUE(empty.request.nonce.empty());
  EXPECT_TRUE(empty.request.user_data.empty());
  // Another command code is not ours.
  Bytes startup = {0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0x00, 0x00};
  EXPECT_FALSE(is_attest_command(startup));
  EXPECT_FALSE(is_attest_command(Bytes(9, 0)));
}

TEST(AttestCommand, SizeLimits) {
  EXPECT_EQ(parse_attest_command(attest_command(0, Bytes(65, 1), {})).rc, kTpmRcSize);
  EXPECT_EQ(parse_attest_command(attest_command(0, Bytes(64, 1), {})).rc, 0u);
  EXPECT_EQ(parse_attest_command(attest_command(0, {}, Bytes(513, 1))).rc, kTpmRcSize);
  EXPECT_EQ(parse_attest_command(attest_command(0, {}, Bytes(512, 1))).rc, 0u);
  EXPECT_EQ(parse_attest_command(attest_command(0, Bytes(0xffff, 1), {})).rc, kTpmRcSize);
}

TEST(AttestCommand, LengthMismatchAndTruncation) {
  const Bytes nonce(16, 3), ud(8, 4);
  const Bytes good = attest_command(0, nonce, ud);
  // commandSize one more or one less than the bytes parsed.
  EXPECT_EQ(parse_attest_command(attest_command(0, nonce, ud, static_cast<long>(good.size()) + 1)).rc, kTpmRcSize);
  EXPECT_EQ(parse_attest_command(attest_command(0, nonce, ud, static_cast<long>(good.size()) - 1)).rc, kTpmRcSize);
  // A byte after the fields (commandSize counting it).
  Bytes extra = good;
  extra.push_back(0);
  extra[5] = static_cast<uint8_t>(extra.size());
  EXPECT_EQ(parse_attest_command(extra).rc, kTpmRcSize);
  // Truncated anywhere: commandSize equal to the bytes there are, fields cut short.
  for (size_t n = 10; n < good.size(); ++n) {
    Bytes cut(good.begin(), good.begin() + static_cast<long>(n));
    cut[5] = static_cast<uint8_t>(n);
    EXPECT_EQ(parse_attest_command(cut).rc, kTpmRcSize) << n;
  }
  EXPECT_EQ(parse_attest_command(Bytes(good.begin(), good.begin() + 6)).rc, kTpmRcSize);
  // A session tag is refused.
  Bytes sessions = good;
  sessions[1] = 0x02;
  EXPECT_EQ(parse_attest_command(sessions).rc, kTpmRcBadTag);
}

TEST(AttestCommand, ErrorResponsesAreBareHeaders) {
  EXPECT_EQ(tpm_error_response(0x101), (Bytes{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x01}));
}

TEST(AttestChunks, ReassembleTheDocument) {
  Bytes doc(5000);
  for (size_t i = 0; i < doc.size(); ++i) doc[i] = static_cast<uint8_t>(i * 7 + 3);
  Bytes back;
  for (const uint32_t offset : {0u, 2048u, 4096u}) {
    const Bytes r = attest_chunk_response(doc, offset);
    ASSERT_EQ(rc_of(r), 0u);
    ASSERT_EQ(get32(r, 2), r.size());
    EXPECT_EQ(get32(r, 10), 5000u);
    const size_t chunk = static_cast<size_t>(r[14]) << 8 | r[15];
    EXPECT_EQ(chunk, offset == 4096 ? 904u : 2048u);
    ASSERT_EQ(r.size(), 16 + chunk);
    back.insert(back.end(), r.begin() + 16, r.end());
  }
  EXPECT_EQ(back, doc);
  const Bytes end = attest_chunk_response(doc, 5000);  // at the end: an empty chunk
  ASSERT_EQ(rc_of(end), 0u);
  EXPECT_EQ(end.size(), 16u);
  EXPECT_EQ(rc_of(attest_chunk_response(doc, 5001)), kTpmRcValue);
  EXPECT_EQ(rc_of(attest_chunk_response(Bytes(10, 1), 0)), 0u);
}

// --- PCRs through libtpms ---

Bytes startup_clear() { return {0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0x00, 0x00}; }
// TPM2_PCR_Extend of `pcr` with one sha384 digest (password session, empty auth).
Bytes pcr_extend_sha384(uint32_t pcr, const Bytes& digest) {
  Bytes c;
  put16(c, 0x8002);
  put32(c, 0);
  put32(c, 0x182);
  put32(c, pcr);
  put32(c, 9);
  put32(c, 0x40000009);
  put16(c, 0);
  c.push_back(1);
  put16(c, 0);
  put32(c, 1);
  put16(c, 0x000c);
  c.insert(c.end(), digest.begin(), digest.end());
  for (int i = 0; i < 4; ++i) c[2 + static_cast<size_t>(i)] = static_cast<uint8_t>(c.size() >> (24 - 8 * i));
  return c;
}

TEST(AttestPcrs, ReadsAllSha384PcrsThroughLibtpms) {
  auto e = TpmEngine::start(SecretBytes(), [](std::span<const uint8_t>) { return true; });
  ASSERT_TRUE(e) << e.error().message();
  TpmEngine& tpm = **e;
  int calls = 0;
  const TpmProcess process = [&tpm, &calls](std::span<uint8_t> c) {
    ++calls;
    return tpm.process(c);
  };
  Sha384Pcrs pcrs{};
  std::string why;
  EXPECT_EQ(read_sha384_pcrs(process, &pcrs, &why), kTpmRcInitialize);  // no TPM2_Startup yet
  Bytes s = startup_clear();
  ASSERT_EQ(TpmEngine::response_code(tpm.process(s)), 0u);
  Bytes digest(48);
  for (size_t i = 0; i < digest.size(); ++i) digest[i] = static_cast<uint8_t>(0xa0 + i);
  Bytes ext = pcr_extend_sha384(4, digest);
  ASSERT_EQ(TpmEngine::response_code(tpm.process(ext)), 0u);

  calls = 0;
  why.clear();
  ASSERT_EQ(read_sha384_pcrs(process, &pcrs, &why), 0u) << why;
  EXPECT_EQ(calls, 3);  // at most 8 digests a call
  Bytes input(48, 0);
  input.insert(input.end(), digest.begin(), digest.end());
  Bytes expected(48);
  unsigned int n = 0;
  ASSERT_EQ(EVP_Digest(input.data(), input.size(), expected.data(), &n, EVP_sha384(), nullptr), 1);
  EXPECT_EQ(Bytes(pcrs[4].begin(), pcrs[4].end()), expected);
  EXPECT_EQ(Bytes(pcrs[0].begin(), pcrs[0].end()), Bytes(48, 0));
  EXPECT_EQ(Bytes(pcrs[23].begin(), pcrs[23].end()), Bytes(48, 0));
}

// A fake TPM answering PCR_Read with the digests of `have` only (bit i: PCR i).
struct FakePcrTpm {
  explicit FakePcrTpm(uint32_t h) : have(h) {}
  uint32_t have;
  Bytes out;
  std::span<const uint8_t> operator()(std::span<uint8_t> cmd) {
    const uint32_t asked = cmd[17] | static_cast<uint32_t>(cmd[18]) << 8 | static_cast<uint32_t>(cmd[19]) << 16;
    uint32_t give = 0;
    for (uint32_t i = 0, k = 0; i < 24 && k < 8; ++i) {
      if ((asked & have) >> i & 1) {
        give |= 1u << i;
        ++k;
      }
    }
    out.clear();
    put16(out, 0x8001);
    put32(out, 0);
    put32(out, 0);
    put32(out, 7);  // pcrUpdateCounter
    put32(out, 1);
    put16(out, 0x000c);
    out.push_back(3);
    for (int i = 0; i < 3; ++i) out.push_back(static_cast<uint8_t>(give >> (8 * i)));
    put32(out, static_cast<uint32_t>(__builtin_popcount(give)));
    for (uint32_t i = 0; i < 24; ++i) {
      if (give >> i & 1) {
        put16(out, 48);
        out.insert(out.end(), 48, static_cast<uint8_t>(i));
      }
    }
    for (int i = 0; i < 4; ++i) out[2 + static_cast<size_t>(i)] = static_cast<uint8_t>(out.size() >> (24 - 8 * i));
    return out;
  }
};

TEST(AttestPcrs, AMissingBankOrPcrIsAFailureSaidClearly) {
  Sha384Pcrs pcrs{};
  std::string why;
  FakePcrTpm none{0};
  EXPECT_EQ(read_sha384_pcrs(std::ref(none), &pcrs, &why), kTpmRcFailure);
  EXPECT_NE(why.find("no sha384 PCR bank"), std::string::npos) << why;
  FakePcrTpm some{0xffffff & ~(1u << 13)};
  why.clear();
  EXPECT_EQ(read_sha384_pcrs(std::ref(some), &pcrs, &why), kTpmRcFailure);
  EXPECT_NE(why.find("PCR 13 is missing"), std::string::npos) << why;
  FakePcrTpm all{0xffffff};
  why.clear();
  EXPECT_EQ(read_sha384_pcrs(std::ref(all), &pcrs, &why), 0u) << why;
  EXPECT_EQ(pcrs[13][0], 13);
  EXPECT_EQ(pcrs[23][47], 23);
}

// --- an azote-rot played by the test ---

using namespace azote::rot_link::testing;

// --- the attestor ---

TEST(Attestor, WithoutRotOrCacheItAnswersFailureAndValue) {
  TpmMetrics m;
  FakePcrTpm all{0xffffff};
  Attestor a(std::ref(all), nullptr, m);
  auto r = a.handle(attest_command(0, Bytes(8, 1), {}));
  EXPECT_EQ(rc_of(Bytes(r.begin(), r.end())), kTpmRcFailure);
  r = a.handle(attest_command(2048, Bytes(8, 1), {}));
  EXPECT_EQ(rc_of(Bytes(r.begin(), r.end())), kTpmRcValue);
  r = a.handle(attest_command(0, Bytes(65, 1), {}));
  EXPECT_EQ(rc_of(Bytes(r.begin(), r.end())), kTpmRcSize);
  EXPECT_EQ(m.attestations.load(), 3u);
  EXPECT_EQ(m.attestation_errors.load(), 3u);
}

TEST(Attestor, ServesChunksOfTheDocumentForItsNonceOnly) {
  TpmMetrics m;
  FakePcrTpm all{0xffffff};
  Pair p;
  rot_link::RotClient rot(std::move(p.card), 2s);
  Attestor a(std::ref(all), &rot, m);
  Bytes doc(3000);
  for (size_t i = 0; i < doc.size(); ++i) doc[i] = static_cast<uint8_t>(i);
  std::string got;
  auto t = answer_once(p.rot.get(), nlohmann::json{{"ok", true}, {"document", to_hex(doc)}}.dump() + "\n", &got);
  auto r = a.handle(attest_command(0, Bytes(8, 1), Bytes(3, 2)));
  t.join();
  Bytes r0(r.begin(), r.end());
  ASSERT_EQ(rc_of(r0), 0u);
  const auto req = nlohmann::json::parse(got);
  EXPECT_EQ(req["op"], "attest-tpm");
  EXPECT_EQ(req["nonce"], "0101010101010101");
  EXPECT_EQ(req["user_data"], "020202");
  ASSERT_EQ(req["pcrs"].size(), 24u);
  EXPECT_EQ(req["pcrs"]["13"], to_hex(Bytes(48, 13)));  // what the fake TPM holds in PCR 13
  r = a.handle(attest_command(2048, Bytes(8, 1), Bytes(3, 2)));
  Bytes r1(r.begin(), r.end());
  ASSERT_EQ(rc_of(r1), 0u);
  Bytes back(r0.begin() + 16, r0.end());
  back.insert(back.end(), r1.begin() + 16, r1.end());
  EXPECT_EQ(back, doc);
  r = a.handle(attest_command(2048, Bytes(8, 9), Bytes(3, 2)));  // another nonce
  EXPECT_EQ(rc_of(Bytes(r.begin(), r.end())), kTpmRcValue);
  r = a.handle(attest_command(2048, Bytes(8, 1), Bytes(3, 3)));  // other user data
  EXPECT_EQ(rc_of(Bytes(r.begin(), r.end())), kTpmRcValue);
  r = a.handle(attest_command(3001, Bytes(8, 1), Bytes(3, 2)));  // past the end
  EXPECT_EQ(rc_of(Bytes(r.begin(), r.end())), kTpmRcValue);
  // azote-rot refuses: TPM_RC_FAILURE, and the old document is no longer served.
  t = answer_once(p.rot.get(), "{\"ok\":false,\"error\":\"no such instance\"}\n");
  r = a.handle(attest_command(0, Bytes(8, 1), Bytes(3, 2)));
  t.join();
  EXPECT_EQ(rc_of(Bytes(r.begin(), r.end())), kTpmRcFailure);
  r = a.handle(attest_command(2048, Bytes(8, 1), Bytes(3, 2)));
  EXPECT_EQ(rc_of(Bytes(r.begin(), r.end())), kTpmRcValue);
  EXPECT_EQ(m.rot_requests.load(), 2u);
}

}  // namespace
}  // namespace azote::card_tpm
