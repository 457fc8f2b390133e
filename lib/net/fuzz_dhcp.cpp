// libFuzzer target for the DHCP codec and server: the input is the UDP payload a guest
// sends to port 67. What parses goes through the server's state machine (a fresh server,
// then the same message again); every reply it decides on must build, fit the client's
// maximum size and parse back as the reply it meant, alone and inside a frame.
#include <array>
#include <cstdint>
#include <span>

#include "net/dhcp.hpp"
#include "net/frame.hpp"

using namespace azote::net;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

DhcpConfig config() {
  DhcpConfig c;
  c.mac = MacAddress({0x02, 0x00, 0x0a, 0x00, 0x01, 0x05});
  c.address = Ipv4Address(10, 0, 1, 5);
  c.subnet = Ipv4Prefix::of(Ipv4Address(10, 0, 1, 0), 24);
  c.router = Ipv4Address(10, 0, 1, 1);
  c.router_mac = MacAddress({0x02, 0x00, 0x0a, 0x00, 0x01, 0x01});
  c.dns = {Ipv4Address(10, 0, 0, 2)};
  c.hostname = "ip-10-0-1-5";
  c.domain_name = "eu-west-1.compute.internal";
  return c;
}

std::array<uint8_t, 2048> g_out;

void serve(DhcpServer& server, const DhcpMessage& m) {
  const DhcpDecision d = server.handle(m);
  if (!d.reply) {
    check(!server.build_reply(g_out, m, d).ok());
    return;
  }
  auto n = server.build_reply(g_out, m, d);
  check(n.ok());
  const size_t limit = m.max_message_size ? *m.max_message_size - 28u : kDhcpDefaultMaxLen;
  check(*n >= kBootpMinLen && *n <= limit);
  auto r = parse_dhcp(std::span(g_out).first(*n), BootpOp::kReply);
  check(r.ok() && r->type == *d.reply && r->xid == m.xid && r->chaddr == m.chaddr);
  check(r->server_id == server.config().router);
  check(*d.reply == DhcpMessageType::kNak ? r->yiaddr.is_any() : r->yiaddr == d.yiaddr);
  auto len = server.build_reply_frame(g_out, m, d);
  check(len.ok());
  auto f = parse_frame(std::span(g_out).first(*len));
  check(f.ok() && f->ip && f->ip->dst == d.dst_ip && f->eth.dst == d.dst_mac);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  static const DhcpConfig cfg = config();
  if (auto m = parse_dhcp(in); m.ok()) {
    check(m->op == BootpOp::kRequest);
    for (int code = 0; code < 256; ++code) {
      if (auto o = m->find(static_cast<uint8_t>(code))) {
        check(o->data() >= data && o->data() + o->size() <= data + size);
      }
    }
    auto server = DhcpServer::create(cfg);
    check(server.ok());
    serve(*server, *m);
    serve(*server, *m);
  }
  if (auto r = parse_dhcp(in, BootpOp::kReply); r.ok()) (void)r->find(dhcp_option::kRouter);
  return 0;
}
