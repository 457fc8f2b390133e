#include "cards/tpm/state_file.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <random>

#include "base/temp_dir.hpp"

namespace azote::card_tpm {
namespace {

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

StateKey key_of(uint8_t fill) {
  std::vector<uint8_t> k(kStateKeyBytes, fill);
  k[0] = 0x42;
  return std::move(StateKey::from_bytes(k)).value();
}

std::vector<uint8_t> to_vec(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }

class StateFileTest : public ::testing::Test {
 protected:
  TempDir dir_{"azote-tpm-state"};
  std::string path_ = dir_ / "tpm.state";
  StateKey key_ = key_of(1);

  // A fresh descriptor and StateFile, as a new card process would have.
  std::unique_ptr<StateFile> open(const std::string& instance = "i-0123abcd", int flags = O_RDWR) {
    UniqueFd fd(::open(path_.c_str(), flags | O_CREAT | O_CLOEXEC, 0600));
    EXPECT_TRUE(fd.valid());
    auto f = StateFile::adopt(std::move(fd), "state fd:7", instance);
    EXPECT_TRUE(f) << f.error().message();
    return f ? std::move(f).value() : nullptr;
  }

  std::string file_bytes() {
    std::ifstream f(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }

  void flip(uint64_t offset) {
    UniqueFd fd(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
    uint8_t b = 0;
    ASSERT_EQ(::pread(fd.get(), &b, 1, static_cast<off_t>(offset)), 1);
    b ^= 0x01;
    ASSERT_EQ(::pwrite(fd.get(), &b, 1, static_cast<off_t>(offset)), 1);
  }

  // Stores `blobs` in order, each through its own StateFile (a card run per store).
  void store_all(const std::vector<std::vector<uint8_t>>& blobs) {
    for (const auto& b : blobs) {
      auto f = open();
      ASSERT_TRUE(f->load(key_));
      ASSERT_TRUE(f->store(key_, b));
    }
  }
};

TEST_F(StateFileTest, EmptyFileIsANewTpm) {
  auto f = open();
  auto l = f->load(key_);
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_TRUE(l->empty);
  EXPECT_EQ(l->generation, 0u);
  EXPECT_EQ(f->slot(), -1);
}

TEST_F(StateFileTest, StoreLoadRoundTripAlternatesSlots) {
  const auto a = pattern(12000, 1), b = pattern(15000, 2), c = pattern(9000, 3);
  {
    auto f = open();
    ASSERT_TRUE(f->load(key_));
    auto s = f->store(key_, a);
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(f->generation(), 1u);
    EXPECT_EQ(f->slot(), 0);
    ASSERT_TRUE(f->store(key_, b));
    EXPECT_EQ(f->generation(), 2u);
    EXPECT_EQ(f->slot(), 1);
  }
  {
    auto f = open();
    auto l = f->load(key_);
    ASSERT_TRUE(l) << l.error().message();
    EXPECT_FALSE(l->empty);
    EXPECT_EQ(l->generation, 2u);
    EXPECT_EQ(l->slot, 1);
    EXPECT_EQ(l->ignored_slot, -1);
    EXPECT_EQ(to_vec(l->state.bytes()), b);
    ASSERT_TRUE(f->store(key_, c));
    EXPECT_EQ(f->generation(), 3u);
    EXPECT_EQ(f->slot(), 0);  // the slot not holding generation 2
  }
  auto f = open();
  auto l = f->load(key_);
  ASSERT_TRUE(l);
  EXPECT_EQ(l->generation, 3u);
  EXPECT_EQ(to_vec(l->state.bytes()), c);
}

TEST_F(StateFileTest, TornSlotFallsBackToTheOtherGeneration) {
  const auto a = pattern(12000, 1), b = pattern(12000, 2);
  store_all({a, b});  // generation 1 in slot 0, generation 2 in slot 1
  flip(kSlotBytes + kSlotHeaderBytes + 500);  // generation 2's write was torn
  {
    auto f = open();
    auto l = f->load(key_);
    ASSERT_TRUE(l) << l.error().message();
    EXPECT_EQ(l->generation, 1u);
    EXPECT_EQ(l->slot, 0);
    EXPECT_EQ(l->ignored_slot, 1);
    EXPECT_EQ(to_vec(l->state.bytes()), a);
    // The next store goes to the torn slot, never over generation 1.
    const auto c = pattern(8000, 3);
    ASSERT_TRUE(f->store(key_, c));
    EXPECT_EQ(f->slot(), 1);
    EXPECT_EQ(f->generation(), 2u);
  }
  auto f = open();
  auto l = f->load(key_);
  ASSERT_TRUE(l);
  EXPECT_EQ(l->generation, 2u);
  EXPECT_EQ(l->ignored_slot, -1);
}

TEST_F(StateFileTest, TruncatedSecondSlotFallsBack) {
  const auto a = pattern(12000, 1), b = pattern(12000, 2);
  store_all({a, b});
  ASSERT_EQ(::truncate(path_.c_str(), static_cast<off_t>(kSlotBytes + 100)), 0);  // the write stopped early
  auto f = open();
  auto l = f->load(key_);
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(l->generation, 1u);
  EXPECT_EQ(to_vec(l->state.bytes()), a);
}

TEST_F(StateFileTest, WrongKeyIsRefusedNamingTheFile) {
  store_all({pattern(12000, 1), pattern(12000, 2)});
  StateKey other = key_of(2);
  auto f = open();
  auto l = f->load(other);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, TpmErrc::kAuth);
  EXPECT_NE(l.error().message().find("state fd:7"), std::string::npos) << l.error().message();
  EXPECT_NE(l.error().message().find("authentication failed"), std::string::npos) << l.error().message();
  // Nothing may be written over it.
  EXPECT_FALSE(f->store(other, pattern(100, 9)));
}

TEST_F(StateFileTest, AnotherInstancesStateIsRefused) {
  store_all({pattern(12000, 1)});
  auto f = open("i-99");
  auto l = f->load(key_);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, TpmErrc::kAuth);
}

TEST_F(StateFileTest, TamperedByteIsRefused) {
  store_all({pattern(12000, 1)});  // one slot only: nothing to fall back to
  flip(kSlotHeaderBytes + 4000);
  auto f = open();
  auto l = f->load(key_);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, TpmErrc::kAuth);
  EXPECT_NE(l.error().message().find("authentication failed"), std::string::npos);
}

TEST_F(StateFileTest, TamperedBothSlotsAreRefused) {
  store_all({pattern(12000, 1), pattern(12000, 2)});
  flip(kSlotHeaderBytes + 20);
  flip(kSlotBytes + kSlotHeaderBytes + 20);
  auto f = open();
  auto l = f->load(key_);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, TpmErrc::kAuth);
}

TEST_F(StateFileTest, ChangedGenerationIsRefused) {
  store_all({pattern(12000, 1)});
  flip(8);  // generation 1 -> 0: the AAD no longer matches
  auto f = open();
  auto l = f->load(key_);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, TpmErrc::kAuth);
}

TEST_F(StateFileTest, BlobTooLargeIsRefusedAndNothingWritten) {
  const auto a = pattern(12000, 1);
  store_all({a});
  const std::string before = file_bytes();
  auto f = open();
  ASSERT_TRUE(f->load(key_));
  auto s = f->store(key_, pattern(kMaxStateBytes + 1, 2));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, TpmErrc::kState);
  EXPECT_NE(s.error().message().find("more than a slot holds"), std::string::npos) << s.error().message();
  EXPECT_EQ(file_bytes(), before);
  EXPECT_EQ(f->generation(), 1u);
  // The largest state that fits does.
  const auto biggest = pattern(kMaxStateBytes, 3);
  ASSERT_TRUE(f->store(key_, biggest));
  f.reset();  // the next card
  auto g = open();
  auto l = g->load(key_);
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(to_vec(l->state.bytes()), biggest);
}

TEST_F(StateFileTest, FileHoldsNoPlaintext) {
  std::vector<uint8_t> blob(20000);
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<uint8_t>("PLAINTEXT-TPM-STATE"[i % 19]);
  store_all({blob, blob});
  const std::string bytes = file_bytes();
  EXPECT_EQ(bytes.find("PLAINTEXT-TPM"), std::string::npos);
  EXPECT_EQ(bytes.compare(0, 8, "AZTPMST1"), 0);
  EXPECT_EQ(bytes.compare(kSlotBytes, 8, "AZTPMST1"), 0);
}

TEST_F(StateFileTest, ZeroFileIsNewButGarbageIsRefused) {
  {
    std::ofstream(path_, std::ios::binary) << std::string(1000, '\0');
    auto f = open();
    auto l = f->load(key_);
    ASSERT_TRUE(l) << l.error().message();
    EXPECT_TRUE(l->empty);
  }
  std::ofstream(path_, std::ios::binary) << "not a TPM state";
  auto f = open();
  auto l = f->load(key_);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, TpmErrc::kState);
}

// The first write cut short (its pending magic on disk, the final one not): never a
// served TPM, so a new one, not a refusal forever; a completed first write is never read
// so (the final magic is written last, once the slot is on disk).
TEST_F(StateFileTest, AFirstWriteCutShortIsANewTpmNotARefusal) {
  {
    std::string torn(kSlotHeaderBytes, '\0');
    std::memcpy(torn.data(), kPendingMagic, sizeof kPendingMagic);
    torn[8] = 1;  // generation 1
    torn += std::string(3000, '\x5a');  // part of its ciphertext
    std::ofstream(path_, std::ios::binary) << torn;
  }
  auto f = open();
  auto l = f->load(key_);
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_TRUE(l->empty);
  ASSERT_TRUE(f->store(key_, pattern(12000, 1)));
  EXPECT_EQ(file_bytes().substr(0, 8), std::string(kSlotMagic, 8)) << "the final magic once complete";
  f.reset();  // its card ends (the lock goes with it)
  auto g = open();
  auto again = g->load(key_);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_FALSE(again->empty);
  EXPECT_EQ(to_vec(again->state.bytes()), pattern(12000, 1));
}

TEST_F(StateFileTest, ReadOnlyDescriptorAndSecondCardAreRefused) {
  {
    UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0600));
    auto f = StateFile::adopt(std::move(fd), "state fd:7", "i-1");
    ASSERT_FALSE(f);
    EXPECT_NE(f.error().message().find("reading and writing"), std::string::npos);
  }
  auto first = open();
  UniqueFd fd(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
  auto second = StateFile::adopt(std::move(fd), "state fd:8", "i-0123abcd");
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("in use"), std::string::npos);
}

TEST_F(StateFileTest, StoreBeforeLoadIsRefused) {
  auto f = open();
  EXPECT_FALSE(f->store(key_, pattern(10, 1)));
}

TEST(StateKeyTest, HexKeys) {
  EXPECT_TRUE(StateKey::from_hex(std::string(64, 'a'), "key"));
  EXPECT_FALSE(StateKey::from_hex(std::string(63, 'a'), "key"));
  EXPECT_FALSE(StateKey::from_hex(std::string(62, 'a') + "zz", "key"));
  auto k = StateKey::from_hex("00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF", "key");
  ASSERT_TRUE(k);
  EXPECT_EQ(k->bytes()[1], 0x11);
  EXPECT_EQ(k->bytes()[31], 0xff);
}

}  // namespace
}  // namespace azote::card_tpm
