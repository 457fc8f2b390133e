// libtpms in-process. Each test is its own process under ctest (gtest_discover_tests);
// run together they also work: engines are started and terminated one after the other.
#include "cards/tpm/engine.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace azote::card_tpm {
namespace {

// TPM2_Startup(TPM_SU_CLEAR) and TPM2_GetRandom(8), raw.
std::vector<uint8_t> startup_clear() { return {0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0x00, 0x00}; }
std::vector<uint8_t> get_random8() { return {0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0x00, 0x08}; }
// TPM2_PCR_Read of sha256 PCR 0 and TPM2_PCR_Extend of PCR 0 with a sha256 digest (password session).
std::vector<uint8_t> pcr_read_sha256_0() {
  return {0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7e, 0, 0, 0, 1, 0x00, 0x0b, 3, 0x01, 0x00, 0x00};
}
std::vector<uint8_t> pcr_extend_0(uint8_t fill) {
  std::vector<uint8_t> c = {0x80, 0x02, 0, 0, 0, 0, 0, 0, 0x01, 0x82, 0, 0, 0, 0,  // PCR 0
                            0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0x01, 0, 0,     // TPM_RS_PW, empty auth
                            0, 0, 0, 1, 0x00, 0x0b};                         // one sha256 digest
  c.insert(c.end(), 32, fill);
  c[5] = static_cast<uint8_t>(c.size());
  return c;
}
// The digest of a PCR_Read response of one sha256 PCR: its last 32 bytes.
std::vector<uint8_t> digest_of(TpmEngine& e) {
  auto cmd = pcr_read_sha256_0();
  const auto r = e.process(cmd);
  if (r.size() != 62 || TpmEngine::response_code(r) != 0) return {};
  return {r.end() - 32, r.end()};
}

struct Kept {
  std::vector<uint8_t> last;
  int writes = 0;
};

TpmEngine::Persist keep_in(Kept* k) {
  return [k](std::span<const uint8_t> s) {
    k->last.assign(s.begin(), s.end());
    ++k->writes;
    return true;
  };
}

uint32_t run(TpmEngine& e, std::vector<uint8_t> cmd, size_t* size = nullptr) {
  const auto r = e.process(cmd);
  if (size != nullptr) *size = r.size();
  return TpmEngine::response_code(r);
}

TEST(Engine, ManufacturesANewTpmAndKeepsItsState) {
  Kept kept;
  auto e = TpmEngine::start(SecretBytes(), keep_in(&kept));
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_TRUE((*e)->manufactured());
  EXPECT_GE(kept.writes, 1);  // the seeds are kept before anyone sees a key
  EXPECT_GT(kept.last.size(), 1000u);
  EXPECT_EQ((*e)->state_bytes(), kept.last.size());
  EXPECT_EQ((*e)->max_command_bytes(), 4096u);
  EXPECT_EQ(run(**e, get_random8()), 0x100u);  // TPM_RC_INITIALIZE: nobody sent TPM2_Startup
  EXPECT_EQ(run(**e, startup_clear()), 0u);
  size_t size = 0;
  EXPECT_EQ(run(**e, get_random8(), &size), 0u);
  EXPECT_EQ(size, 10u + 2u + 8u);
  // Its PCR banks are allocated (the state libtpms powered on from is the one it made).
  EXPECT_EQ(digest_of(**e), std::vector<uint8_t>(32, 0));
  EXPECT_EQ(run(**e, pcr_extend_0(0xab)), 0u);
  const auto extended = digest_of(**e);
  ASSERT_EQ(extended.size(), 32u);
  EXPECT_NE(extended, std::vector<uint8_t>(32, 0));
}

TEST(Engine, LoadsAKeptStateInsteadOfManufacturing) {
  Kept kept;
  {
    auto e = TpmEngine::start(SecretBytes(), keep_in(&kept));
    ASSERT_TRUE(e) << e.error().message();
    ASSERT_EQ(run(**e, startup_clear()), 0u);
  }
  Kept again;
  auto e = TpmEngine::start(SecretBytes(std::span<const uint8_t>(kept.last)), keep_in(&again));
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_FALSE((*e)->manufactured());
  EXPECT_EQ(run(**e, startup_clear()), 0u);
  EXPECT_EQ(digest_of(**e), std::vector<uint8_t>(32, 0));  // PCRs are reset by a new power cycle
}

TEST(Engine, AStateLibtpmsCannotLoadIsRefusedNotReplaced) {
  Kept kept;
  std::vector<uint8_t> garbage(5000, 0x5a);
  auto e = TpmEngine::start(SecretBytes(std::span<const uint8_t>(garbage)), keep_in(&kept));
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, TpmErrc::kTpm);
  EXPECT_EQ(kept.writes, 0);  // no new TPM was written over it
  // libtpms can still start another TPM afterwards.
  auto fresh = TpmEngine::start(SecretBytes(), keep_in(&kept));
  ASSERT_TRUE(fresh) << fresh.error().message();
}

TEST(Engine, OneEngineAtATime) {
  Kept kept;
  auto a = TpmEngine::start(SecretBytes(), keep_in(&kept));
  ASSERT_TRUE(a);
  auto b = TpmEngine::start(SecretBytes(), keep_in(&kept));
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, TpmErrc::kBusy);
}

TEST(Engine, ResponseCode) {
  const std::vector<uint8_t> ok = {0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0};
  const std::vector<uint8_t> bad = {0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x8e};
  EXPECT_EQ(TpmEngine::response_code(ok), 0u);
  EXPECT_EQ(TpmEngine::response_code(bad), 0x98eu);
  EXPECT_EQ(TpmEngine::response_code(std::span<const uint8_t>(ok.data(), 4)), kTpmRcFailure);
}

}  // namespace
}  // namespace azote::card_tpm
