// The azote-rot connection (replies, bad lines, a timeout, EOF, the cancel descriptor)
// against a peer played by the test over a socketpair.
#include "rot_link/testing.hpp"
#include "rot_link/rot_link.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <string>
#include <thread>

namespace azote::rot_link {
namespace {

using namespace std::chrono_literals;

using namespace azote::rot_link::testing;

TEST(RotClient, OneRequestOneReplyAndBadLinesFailOnlyTheirRequest) {
  Pair p;
  RotClient rot(std::move(p.card), 2s);
  std::string got;
  auto t = answer_once(p.rot.get(), "{\"ok\":true,\"document\":\"00ff\"}\n", &got);
  auto r = rot.call({{"op", "attest-tpm"}, {"nonce", "ab"}});
  t.join();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["document"], "00ff");
  EXPECT_EQ(nlohmann::json::parse(got)["nonce"], "ab");

  t = answer_once(p.rot.get(), "not json\n");
  r = rot.call({{"op", "attest-tpm"}});
  t.join();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, RotLinkErrc::kReply);
  EXPECT_NE(r.error().message().find("not a JSON object"), std::string::npos) << r.error().message();
  EXPECT_FALSE(rot.gone());

  // A line over 64 KiB (valid JSON, so only its length refuses it), then in sync again.
  t = answer_once(p.rot.get(), "{\"ok\":true,\"document\":\"" + std::string(70000, 'a') + "\"}\n");
  r = rot.call({{"op", "attest-tpm"}});
  t.join();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, RotLinkErrc::kReply);
  EXPECT_NE(r.error().message().find("64 KiB"), std::string::npos) << r.error().message();
  t = answer_once(p.rot.get(), "{\"ok\":true,\"document\":\"01\"}\n");
  r = rot.call({{"op", "attest-tpm"}});
  t.join();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["document"], "01");
  // Exactly 64 KiB is accepted.
  const std::string head = "{\"ok\":true,\"document\":\"", tail = "\"}";
  t = answer_once(p.rot.get(), head + std::string(RotClient::kMaxLineBytes - head.size() - tail.size(), 'b') + tail + "\n");
  r = rot.call({{"op", "attest-tpm"}});
  t.join();
  EXPECT_TRUE(r) << r.error().message();
}

TEST(RotClient, ATimeoutEndsTheConnectionForGood) {
  Pair p;
  RotClient rot(std::move(p.card), 200ms);
  const auto start = std::chrono::steady_clock::now();
  auto r = rot.call({{"op", "attest-tpm"}});
  ASSERT_FALSE(r);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms);
  EXPECT_EQ(r.error().code, RotLinkErrc::kGone);
  EXPECT_NE(r.error().message().find("no reply"), std::string::npos) << r.error().message();
  EXPECT_TRUE(rot.gone());
  // A late reply changes nothing: later requests fail at once.
  write_all(p.rot.get(), "{\"ok\":true,\"document\":\"01\"}\n");
  const auto again = std::chrono::steady_clock::now();
  r = rot.call({{"op", "attest-tpm"}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, RotLinkErrc::kGone);
  EXPECT_LT(std::chrono::steady_clock::now() - again, 100ms);
}

TEST(RotClient, EofEndsTheConnectionForGood) {
  Pair p;
  RotClient rot(std::move(p.card), 2s);
  // The peer takes the request, then closes without a reply.
  auto t = std::thread([fd = p.rot.get()] {
    read_line(fd);
    ::shutdown(fd, SHUT_RDWR);
  });
  auto r = rot.call({{"op", "attest-tpm"}});
  t.join();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, RotLinkErrc::kGone);
  EXPECT_NE(r.error().message().find("closed"), std::string::npos) << r.error().message();
  EXPECT_TRUE(rot.gone());
  EXPECT_FALSE(rot.call({{"op", "attest-tpm"}}));
}

TEST(RotClient, TheCancelDescriptorEndsAWait) {
  Pair p, stop;
  RotClient rot(std::move(p.card), 5s);
  rot.set_cancel_fd(stop.card.get());
  write_all(stop.rot.get(), "x");
  const auto start = std::chrono::steady_clock::now();
  auto r = rot.call({{"op", "attest-tpm"}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, RotLinkErrc::kGone);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_TRUE(rot.gone());
}

}  // namespace
}  // namespace azote::rot_link
