#include "uart/uart16550.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace azote::uart {
namespace {

struct Rig {
  std::string out;
  std::vector<bool> irqs;
  Uart16550 u{[this](uint8_t b) { out.push_back(static_cast<char>(b)); }, [this](bool l) { irqs.push_back(l); }};
};

TEST(Uart, TransmitsAndAlwaysReady) {
  Rig r;
  EXPECT_EQ(r.u.read(5) & 0x60, 0x60);  // THRE | TEMT
  for (char c : std::string("hi\n")) r.u.write(0, static_cast<uint8_t>(c));
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_TRUE(r.irqs.empty());  // IER = 0: no interrupts
}

TEST(Uart, DivisorLatchDoesNotTransmit) {
  Rig r;
  r.u.write(3, 0x80);  // DLAB
  r.u.write(0, 0x01);
  r.u.write(1, 0x00);
  EXPECT_EQ(r.u.read(0), 0x01);
  r.u.write(3, 0x03);
  EXPECT_TRUE(r.out.empty());
}

TEST(Uart, ThreInterruptRaisedAndAcknowledgedByIir) {
  Rig r;
  r.u.write(1, 0x02);  // ETBEI
  ASSERT_EQ(r.irqs, std::vector<bool>{true});
  EXPECT_EQ(r.u.read(2) & 0x0f, 0x02);
  EXPECT_EQ(r.irqs, (std::vector<bool>{true, false}));
  EXPECT_EQ(r.u.read(2) & 0x0f, 0x01);  // no interrupt pending
  r.u.write(0, 'x');
  EXPECT_EQ(r.irqs.back(), true);
}

TEST(Uart, ReceiveFifoAndDataReady) {
  Rig r;
  r.u.write(1, 0x01);  // ERBFI
  const uint8_t in[] = {'a', 'b'};
  r.u.receive(in);
  EXPECT_EQ(r.irqs.back(), true);
  EXPECT_EQ(r.u.read(5) & 1, 1);
  EXPECT_EQ(r.u.read(2) & 0x0f, 0x04);
  EXPECT_EQ(r.u.read(0), 'a');
  EXPECT_EQ(r.u.read(0), 'b');
  EXPECT_EQ(r.u.read(5) & 1, 0);
  EXPECT_EQ(r.irqs.back(), false);
}

TEST(Uart, ReceiveOverflowIsDroppedAndCounted) {
  Rig r;
  std::vector<uint8_t> big(Uart16550::kFifoSize + 10, 'z');
  r.u.receive(big);
  EXPECT_EQ(r.u.rx_dropped(), 10u);
}

TEST(Uart, LoopbackAsLinuxProbesIt) {
  Rig r;
  r.u.write(4, 0x10 | 0x0a);  // loopback + RTS + OUT2
  EXPECT_EQ(r.u.read(6) & 0xf0, 0x90);  // CTS + DCD
  r.u.write(0, 'q');
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(r.u.read(0), 'q');
}

TEST(Uart, ScratchRegister) {
  Rig r;
  r.u.write(7, 0x5a);
  EXPECT_EQ(r.u.read(7), 0x5a);
}

}  // namespace
}  // namespace azote::uart
