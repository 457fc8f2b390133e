#include "cards/nsm/card.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "eif/eif.hpp"

namespace azote::card_nsm {
namespace {

std::string write_eif(const std::string& name) {
  eif::BuildSpec s;
  s.kernel = {'k', 'e', 'r', 'n'};
  s.cmdline = "azote.run=nsm-describe";
  s.ramdisks = {{'b', 'o', 'o', 't'}, {'a', 'p', 'p'}};
  s.metadata_json = "{}";
  auto b = eif::build(s);
  EXPECT_TRUE(b.ok());
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b->data()), static_cast<std::streamsize>(b->size()));
  return path;
}

std::string hex(const attest::Pcr& p) { return eif::hex(p); }

// The values AWS publishes for PCR3 and PCR4 (ENCLAVES.md §2).
TEST(NsmCard, PlatformPcrsMatchTheImageAndAwsTestVectors) {
  CardOptions o;
  o.eif = write_eif("pcr.eif");
  o.enclave_id = "i-1234567890abcdef0-enc0123456789abcdef";
  o.parent_role = "arn:aws:iam::123456789012:role/Webserver";
  auto pcrs = platform_pcrs(o);
  ASSERT_TRUE(pcrs.ok()) << pcrs.error().message();
  EXPECT_EQ(hex(pcrs->at(4)),
            "08f996b5d43e047a9eb51e7f548bfee7e164fd7dc8f65541f2ac09d6545ac812719327281c401a67a10fcba87ae79ce0");
  EXPECT_EQ(hex(pcrs->at(3)),
            "78fce75db17cd4e0a3fb8dad3ad128ca5e77edbb2b2c7f75329dccd99aa5f6ef4fc1f1a452e315b9e98f9e312e6921e6");
  std::ifstream f(o.eif, std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto img = eif::parse(bytes);
  ASSERT_TRUE(img.ok());
  const eif::Measurements m = eif::measure(*img, nullptr);
  EXPECT_EQ(pcrs->at(0), m.pcr0);
  EXPECT_EQ(pcrs->at(1), m.pcr1);
  EXPECT_EQ(pcrs->at(2), m.pcr2);
  EXPECT_EQ(pcrs->count(8), 0u) << "unsigned: PCR8 stays zero";
  o.parent_role.clear();
  pcrs = platform_pcrs(o);
  ASSERT_TRUE(pcrs.ok());
  EXPECT_EQ(pcrs->count(3), 0u) << "no role: PCR3 stays zero";
}

TEST(NsmCard, ABrokenImageIsRefused) {
  CardOptions o;
  o.eif = write_eif("broken.eif");
  o.enclave_id = "i-1234567890abcdef0-enc0123456789abcdef";
  {
    std::fstream f(o.eif, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(600);
    f.put('X');
  }
  auto pcrs = platform_pcrs(o);
  ASSERT_FALSE(pcrs.ok());
  EXPECT_EQ(pcrs.error().code, CardErrc::kImage);
  o.eif = "/nonexistent.eif";
  EXPECT_FALSE(platform_pcrs(o).ok());
}

TEST(NsmCard, OptionsNameWhatIsWrong) {
  auto p = parse_args({"--socket", "/tmp/x.sock", "--eif", "a.eif", "--enclave-id", "i-1234567890abcdef0-enc0123456789abcdef",
                       "--rot", "fd:5", "--parent-role", "arn:aws:iam::1:role/r"});
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(p->options.rot_fd, 5);
  const auto err = [](std::vector<std::string> a) {
    auto r = parse_args(a);
    return r.ok() ? std::string() : r.error().message();
  };
  EXPECT_NE(err({"--eif", "a", "--enclave-id", "i-1234567890abcdef0-enc0123456789abcdef"}).find("--socket"), std::string::npos);
  EXPECT_NE(err({"--socket", "s", "--eif", "a", "--enclave-id", "i-123-enc1"}).find("--enclave-id"), std::string::npos);
  EXPECT_NE(err({"--socket", "s", "--eif", "a", "--enclave-id", "i-1234567890abcdef0-encXYZ456789abcdef"}).find("--enclave-id"),
            std::string::npos);
  EXPECT_NE(err({"--rot", "/path"}).find("--rot"), std::string::npos);
  EXPECT_NE(err({"--bogus", "1"}).find("--bogus"), std::string::npos);
  EXPECT_TRUE(parse_args({"--help"})->help);
}

}  // namespace
}  // namespace azote::card_nsm
