// The card's end of the fabric: one UDP socket on the underlay (--underlay, bound in
// the card's network namespace, or --underlay-fd, bound by the launcher in the host's),
// lib/fabric's Session (keys, sealing, replay windows),
// the peers' addresses and per-peer counters.
//
//   send:    ENI worker -> Switch::transmit() (egress groups passed) -> FabricLink::send():
//            seal each frame for its host into a per-thread buffer, one sendmmsg() per batch
//   receive: this link's thread: epoll -> recvmmsg() of up to 32 datagrams -> Session::open()
//            (parse, peer, key id, replay window, tag) -> Switch::receive_remote()
//            (VNI, local ENI, source mapped to the sender, ingress groups, inbox)
//
// Every datagram refused is counted: by the Session on its peer once the sender host id
// is known (auth failures, replays, unknown key ids, ...), globally otherwise (unknown
// peer, malformed); what the Switch did with an opened frame, per peer by verdict.
#pragma once

#include <netinet/in.h>

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <shared_mutex>
#include <span>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "cards/net/options.hpp"
#include "cards/net/switch.hpp"
#include "fabric/session.hpp"
#include "rate_limit/clock.hpp"

namespace azote::card_net {

class InboxBatch;

enum class LinkErrc {
  kConfig = 1,  // a peer or key the operator gave is unusable
  kHost,        // socket, bind, thread
};
using LinkError = Error<LinkErrc>;

// The largest IPv4 datagram the fabric sends: inner frame + Geneve/option + tag + UDP + IP.
inline constexpr size_t kUnderlayDatagram = kMaxFrame + fabric::kOverhead;  // 1558 (UDP payload)
inline constexpr size_t kUnderlayMtu = kUnderlayDatagram + 8 + 20;          // 1586

// Whether `fd` (--underlay-fd N: `what`) is an IPv4 UDP socket bound to exactly
// `underlay`; an error naming what it is instead.
Result<void, LinkError> check_underlay_socket(int fd, const Endpoint& underlay, const std::string& what);

class FabricLink final : public FabricSender {
 public:
  // Binds the socket (or takes `bound`, a UDP socket already bound to `underlay`:
  // check_underlay_socket) and starts the receive thread. `sw` and `clock` outlive the link.
  static Result<std::unique_ptr<FabricLink>, LinkError> start(Switch& sw, const rate_limit::Clock& clock,
                                                              fabric::HostId self, const Endpoint& underlay,
                                                              UniqueFd bound = UniqueFd());
  ~FabricLink() override;  // stops the receive thread
  FabricLink(const FabricLink&) = delete;
  FabricLink& operator=(const FabricLink&) = delete;

  void send(std::span<const RemoteFrame> frames) override;

  // The fabric process of a host whose instances each have their own card: bind the
  // relay inbox those cards send frames for other hosts to; this link's thread reads it
  // (Switch::relay_out: the sender's uid must serve the source address).
  Result<void, LinkError> serve_relay(const std::string& inbox);
  bool relaying() const { return relay_.get() >= 0; }

  // A new peer, or a known one's address (and key: see fabric::Session::set_peer).
  Result<void, LinkError> set_peer(const FabricPeerSpec& p);
  Result<void, LinkError> rotate(fabric::HostId host, const fabric::PeerKey& key);
  bool has_peer(fabric::HostId host) const;
  // Control thread timer: previous keys past their grace are forgotten.
  void tick();
  nlohmann::json describe() const;
  fabric::HostId self() const { return self_; }
  const Endpoint& underlay() const { return underlay_; }

 private:
  struct Peer {
    Endpoint address;
    sockaddr_in sa{};
    std::atomic<uint64_t> send_errors{0};
    std::array<std::atomic<uint64_t>, kRemoteVerdictCount> verdicts{};
  };
  FabricLink(Switch& sw, const rate_limit::Clock& clock, fabric::HostId self, const Endpoint& underlay);
  void run();
  void serve_relay_once();

  Switch& sw_;
  const fabric::HostId self_;
  const Endpoint underlay_;
  fabric::Session session_;
  UniqueFd socket_, stop_, epoll_;
  mutable std::shared_mutex mu_;  // peers_ (entries are never removed)
  std::map<fabric::HostId, std::unique_ptr<Peer>> peers_;
  std::atomic<uint64_t> truncated_{0};  // datagrams over the receive buffer
  std::atomic<uint64_t> send_unknown_peer_{0};
  UniqueFd relay_;  // the relay inbox (serve_relay), or none
  std::string relay_path_;
  uint64_t relay_dev_ = 0, relay_ino_ = 0;
  std::unique_ptr<InboxBatch> relay_batch_;  // the link thread's
  std::atomic<uint64_t> relay_no_credentials_{0};
  std::thread thread_;
  log::RateLimit log_limit_{10, std::chrono::seconds(10)};
};

}  // namespace azote::card_net
