// The instance metadata service (IMDSv2) the VPC card serves at 169.254.169.254:80.
//
// start() moves one short-lived thread into a private network namespace (unshare
// CLONE_NEWNET, root/CAP_SYS_ADMIN) and creates there a TUN device "imds0" holding
// 169.254.169.254 (MTU 1500, route 100.64.0.0/10 through it) and a listening TCP socket on
// 169.254.169.254:80 with IP_TTL 1. The descriptors keep that namespace; the thread ends.
// A jailed card has no such privilege: the launcher prepares the namespace (it is the
// card's own) with prepare_namespace() and the card starts on its descriptors.
// libmicrohttpd serves the socket (its own polling thread); the kernel's TCP does TCP.
// A reader thread takes the kernel's segments from the TUN and hands them to the card.
//
//   card ── inject(slot, ipv4) ─▶ NAT (src := alias of slot) ─▶ TUN ─▶ kernel TCP ─▶ HTTP
//   card ◀─ output(slot, ipv4) ── NAT (dst := ENI, TTL 1)    ◀─ TUN ◀─ kernel TCP ◀─┘
//
// Every call is thread-safe. The output callback runs on the reader thread, one packet at a
// time, under the lock set_output() takes: it must not block for long, nor call set_output()
// or destroy the Service.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "base/result.hpp"
#include "base/unique_fd.hpp"
#include "imds/error.hpp"
#include "imds/handler.hpp"
#include "imds/metadata.hpp"
#include "imds/nat.hpp"
#include "imds/netns.hpp"
#include "imds/token.hpp"

namespace azote::imds {

struct Options {
  uint32_t max_slots = 1024;                   // 1..kMaxSlots
  unsigned max_connections = 512;              // over all slots
  unsigned max_connections_per_slot = 8;       // libmicrohttpd's per-address limit (one alias per slot)
  unsigned connection_timeout_seconds = 10;    // idle connections are closed
  size_t connection_memory = 16 * 1024;        // per connection: request line + headers must fit
  std::chrono::seconds slot_quarantine{120};   // a removed slot is not reused before this
  std::string tun_name = "imds0";              // inside the private namespace only
  std::function<TimePoint()> clock;            // token expiry and quarantine; null: steady_clock
};

// HTTP statuses counted one by one; anything else goes to the last bucket.
inline constexpr std::array<int, 6> kCountedStatuses = {200, 400, 401, 403, 404, 405};

struct Counters {
  std::array<uint64_t, kCountedStatuses.size() + 1> responses{};  // by kCountedStatuses, then "other"
  uint64_t tokens_issued = 0;
  std::array<uint64_t, kRefusalCount> refusals{};  // by Refusal (kNone unused)
  uint64_t packets_in = 0;                         // guest → kernel, written to the TUN
  uint64_t packets_out = 0;                        // kernel → guest, handed to the output
  std::array<uint64_t, kDropCount> dropped_in{};   // by Drop
  std::array<uint64_t, kDropCount> dropped_out{};  // by Drop
  uint64_t ttl_rewritten = 0;  // kernel segments whose TTL was not 1 (should stay 0)
  uint64_t connections = 0;    // TCP connections accepted

  uint64_t status(int code) const;
};

// The card's hook for the kernel's replies: the ENI's slot and a complete IPv4 packet
// (src 169.254.169.254:80, dst the ENI's address, TTL 1, checksums valid). The span is
// valid during the call only.
using Output = std::function<void(uint32_t slot, std::span<const uint8_t> ipv4)>;

class Service {
 public:
  // kBadOptions, kCrypto, kNamespace (not root, no CAP_SYS_ADMIN, no netns support), kTun
  // (no /dev/net/tun), kRoute, kSocket, kThread, kHttp. The card runs without IMDS then.
  static Result<std::unique_ptr<Service>, ImdsError> start(Options options = {});
  // A private network namespace made for this process (unshare in a short-lived
  // thread; root or CAP_SYS_ADMIN), prepared as prepare_namespace() does: what start()
  // does first. The card calls it before it installs its seccomp filter.
  static Result<NamespaceFds, ImdsError> private_namespace(const std::string& tun_name = "imds0");
  // The same on descriptors prepared by someone else (prepare_namespace(), in the
  // launcher): nothing privileged happens here.
  static Result<std::unique_ptr<Service>, ImdsError> start(Options options, NamespaceFds fds);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // A slot for an ENI (its alias: alias_of(slot)). kBadMetadata, kFull.
  Result<uint32_t, ImdsError> add(const InstanceMetadata& md);
  // New metadata for a slot; its tokens stay valid. kNoSlot, kBadMetadata.
  Result<void, ImdsError> update(uint32_t slot, const InstanceMetadata& md);
  // The slot's tokens die; segments still in flight for it are dropped. kNoSlot.
  Result<void, ImdsError> remove(uint32_t slot);

  // Set (or clear, with nullptr) where the kernel's replies go. Until set they are dropped.
  void set_output(Output out);

  // A packet the guest of `slot` sent to 169.254.169.254 (IPv4 header first; link padding
  // after the total length is ignored). Only TCP to port 80 from the ENI's own address is
  // taken; everything else is dropped and counted, the reason returned.
  Result<void, Drop> inject(uint32_t slot, std::span<const uint8_t> ipv4);

  Counters counters() const;

  struct Impl;

 private:
  explicit Service(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace azote::imds
