// The vsock fabric's data path: ONE thread (the "switch") that owns every rx and tx ring
// of every device of the card, takes stream packets from each VM's tx ring, checks them,
// and delivers the allowed ones into the destination VM's rx ring (DESIGN.md).
//
//   tx ring of VM s --pop, copy once, validate--> route by dst_cid (Nitro rules)
//       --> inbound queue (s -> d), bounded --> rx ring of VM d (split to fit its buffers)
//
// Nothing here terminates a connection: headers and payloads pass unchanged (credit
// fields included), except the len of a packet split over several rx buffers. The card
// speaks only to refuse (an RST in the peer's name) and to reset the connections of a VM
// that went away.
//
// Threads: the vhost-user control thread calls queue_started / queue_stopped /
// device_down, and the card's control socket attach / detach; each hands a command to
// the switch thread (mailbox + eventfd) and waits for its acknowledgement, at most
// runtime::kWorkerStopDeadline (past it the process ends with kExitStuckWorker, as a
// stuck queue worker would: the ring may still be in use). So when queue_stopped
// returns, the switch thread no longer touches that ring; when attach returns, packets
// are routed to the new CID; when detach returns, nothing of that VM is left but the
// RSTs already queued for the parent in its name.
//
// Ports: kMaxDevices slots, fixed for the switch's life (a port index is a slot); the
// ones given to start() are attached at once, the others free until attach().
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "cards/vsock/options.hpp"
#include "cards/vsock/packet.hpp"
#include "runtime/runtime.hpp"
#include "vhost_user/device.hpp"
#include "virtio/queue.hpp"

namespace azote::card_vsock {

// Queue indices of a virtio-vsock device (§5.10.2).
inline constexpr uint32_t kRxQueue = 0;
inline constexpr uint32_t kTxQueue = 1;
inline constexpr uint32_t kEventQueue = 2;

// Why a packet taken from a tx ring (or queued for a VM) was not delivered.
enum class Drop : size_t {
  kShort = 0,   // fewer readable bytes than a header
  kTooLarge,    // payload over Limits::max_payload
  kBadLen,      // header.len is not the payload present (or a payload on a non-RW op)
  kSpoofed,     // src_cid is not the sending VM's CID (never answered)
  kBadType,     // not VIRTIO_VSOCK_TYPE_STREAM
  kBadOp,       // op outside REQUEST..CREDIT_REQUEST
  kUnroutable,  // forbidden or unknown destination (answered with RST)
  kTableFull,   // a REQUEST over the connection bound (answered with RST)
  kStuck,       // for a VM that took no rx buffer for Limits::stuck_after (both ends reset)
  kDeviceDown,  // queued for, held for, or from a VM whose device went away
  kRstOverflow, // an RST the card wanted to send found its queue full
  kCount,
};
inline constexpr size_t kDropCount = static_cast<size_t>(Drop::kCount);
const char* to_string(Drop d);

struct Limits {
  uint32_t max_payload = kMaxPayload;
  // Per (source, destination) pair: packets waiting for the destination's rx buffers.
  // A packet over either bound is held at its source, whose tx ring then waits.
  size_t pair_packets = 256;
  size_t pair_bytes = 1u << 20;
  // RSTs the card queues for one VM in answer to its own packets.
  size_t answer_rsts = 256;
  // Connections tracked per enclave (each is between that enclave and the parent).
  size_t connections_per_enclave = 1024;
  // A REQUEST never answered may be evicted from a full table after this long.
  std::chrono::milliseconds half_open_after{10000};
  // A VM whose rx ring has taken nothing for this long while a source waits on it is
  // "stuck": the waiting packet is dropped and its connection reset at both ends, and
  // packets for it are refused until it takes an rx buffer again.
  std::chrono::milliseconds stuck_after{10000};
  // tx chains taken from one VM per round, so one VM cannot starve the others.
  uint32_t tx_batch = 64;
  // The host bridge (DESIGN.md "The host bridge"): streams the card ends for the parent.
  size_t host_streams = 64;             // open at once; a REQUEST past it gets RST
  uint32_t host_buf_alloc = 64 * 1024;  // the card's receive buffer per stream (advertised)
  uint32_t host_read_chunk = 4096;      // bytes per RW packet read from a Unix socket
  size_t host_stream_queued = 64 * 1024;  // payload bytes one stream may have queued for the parent
  size_t host_queued = 1u << 20;          // payload bytes all host streams may have queued
};

// The host bridge's ports: a parent's REQUEST to (2, port) reaches the Unix socket path.
inline constexpr size_t kMaxHostPorts = kMaxHostPortSpecs;

struct HostStats {
  uint64_t opened = 0;          // REQUESTs answered with RESPONSE (connected)
  uint64_t refused = 0;         // REQUESTs answered with RST (unmapped port, connect failed, table full)
  uint64_t bytes_to_host = 0;   // written to Unix sockets
  uint64_t bytes_from_host = 0; // read from Unix sockets (queued for the parent)
  uint64_t resets_sent = 0;     // open streams the card reset (Unix error, credit overrun, parent gone...)
  uint64_t resets_received = 0; // open streams the parent reset
  uint64_t open = 0;            // open now
};

struct PortStats {
  uint32_t cid = 0;        // 0: a free slot
  bool attached = false;   // a device of the card (given to start() or attach())
  bool up = false;
  bool rx_running = false, tx_running = false;  // the switch holds the ring
  uint64_t tx_packets = 0, tx_bytes = 0;  // taken from this VM and forwarded (payload bytes)
  uint64_t rx_packets = 0, rx_bytes = 0;  // delivered to this VM (guest packets; payload bytes)
  uint64_t rx_chains = 0;                 // rx buffers used (a packet may take several)
  uint64_t rx_chains_too_small = 0;       // rx buffers given back empty (< header + 1 byte)
  uint64_t rsts_received = 0;             // card-made RSTs delivered to this VM
  uint64_t stalls = 0;                    // times its tx ring waited for a destination
  uint64_t connections = 0;               // tracked now (enclaves)
};
struct SwitchStats {
  std::vector<PortStats> ports;
  std::array<uint64_t, kDropCount> drops{};
  uint64_t rsts_sent = 0;  // RSTs the card queued
  HostStats host;
  uint64_t drops_of(Drop d) const { return drops[static_cast<size_t>(d)]; }
};

class Switch {
 public:
  // `cids`: one per device (port index = position); exactly one is 3 (the parent), at
  // most kMaxEnclaves others. The remaining slots up to kMaxDevices are free for
  // attach(). Starts the switch thread (seccomp class "switch").
  static CardResult<std::unique_ptr<Switch>> start(const std::vector<uint32_t>& cids, Limits limits = {});
  ~Switch();  // stops the thread (every device must be down or gone)
  Switch(const Switch&) = delete;
  Switch& operator=(const Switch&) = delete;

  // From the vhost-user thread (Device calls). queue_started takes rx (0) and tx (1)
  // only; false: the ring could not be used (the device then reports NEEDS_RESET).
  bool queue_started(size_t port, const vhost_user::VringInfo& v);
  uint16_t queue_stopped(size_t port, uint32_t index);
  // The VM's device was reset or its frontend went away (all its queues stopped):
  // packets queued for it are dropped and each connection it had gets an RST at its peer.
  void device_down(size_t port);

  // From the card's control thread: an enclave's device enters a free slot (its port,
  // the index its VsockDevice is made with), not running until a queue starts. Refused
  // (kUsage, the sentence names the CID) for a CID outside 4..4294967294, one in use, or
  // with no slot free.
  CardResult<size_t> attach(uint32_t cid);
  // The enclave's slot freed. Call it once its vhost-user Backend is gone (queues
  // stopped, device down: what was queued for it dropped, its connections reset at the
  // parent); anything still held is dropped here the same way. The RSTs queued for the
  // parent stay queued and are delivered after what the VM sent before. Never the
  // parent; false if `port` is not an attached enclave.
  bool detach(size_t port);

  // The host bridge's map (any thread): the parent's REQUESTs to (2, port) are connected
  // to the Unix stream socket `path` from then on. Refused (kUsage) for port 0, a path
  // that is not absolute or over 107 bytes, a port already mapped, or a ninth port.
  CardResult<void> add_host_port(uint32_t port, const std::string& path);
  // false: not mapped. Streams already open on it go on; new REQUESTs get RST.
  bool remove_host_port(uint32_t port);
  std::map<uint32_t, std::string> host_ports() const;

  bool needs_reset(size_t port) const;
  size_t ports() const { return ports_.size(); }  // slots, attached or free
  SwitchStats stats() const;
  void log_stats() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Packet;
  struct Inbound;
  struct Ring;
  struct Conn;
  struct Port;
  struct Command;
  struct HostStream;

  Switch(const std::vector<uint32_t>& cids, Limits limits, UniqueFd ctl);
  void post(Command& c);
  void run();
  // Switch thread only, below.
  bool handle_commands();  // false: quit
  void execute(Command& c);
  bool round(Clock::time_point now);  // true: work is left for another round
  bool pump_tx(size_t s, Clock::time_point now);
  bool deliver(size_t d, Clock::time_point now);
  std::optional<Drop> read_packet(const Port& sp, const virtio::Chain& chain, Packet& p);
  void handle_packet(size_t s, Packet&& p, const Header& h, Clock::time_point now);
  std::optional<size_t> route(size_t s, const Header& h) const;
  bool track(size_t s, size_t d, const Header& h, Clock::time_point now);
  // The tracked connection of packet h (s -> d) forgotten; true if it was tracked.
  bool forget(size_t s, size_t d, const Header& h);
  void refuse(size_t s, const Header& h, Drop why, const char* what);
  void card_rst(size_t d, Inbound& in, size_t bound, const Header& h);
  bool enqueue(size_t d, size_t s, Packet&& p);
  void release_stall(size_t s, size_t d);
  void down(size_t x);
  void attach_port(size_t x, uint32_t cid);
  void detach_port(size_t x);
  // The earliest moment a held packet's destination may turn out stuck; `released`: a
  // source was released (its held packet dropped) now.
  std::optional<Clock::time_point> check_stuck(Clock::time_point now, bool& released);
  void interrupts();
  void break_ring(size_t port, Ring& r, const std::string& why);
  void count(Drop d, uint64_t n = 1);
  // The host bridge (switch thread).
  void host_packet(Packet&& p, const Header& h);
  void host_request(const Header& h);
  void host_io(HostStream& hs, short revents);
  bool host_pump();  // every stream's pending I/O; true: more to do at once
  void host_queue(HostStream& hs, uint16_t op, uint32_t flags = 0, const uint8_t* data = nullptr, uint32_t n = 0);
  void host_credit_update(HostStream& hs, bool force);
  void host_close(uint64_t key, bool rst, bool by_parent);
  void host_delivered(const Packet& p);
  void host_down();

  Limits limits_;
  size_t parent_ = 0;
  std::vector<std::unique_ptr<Port>> ports_;
  std::array<std::atomic<uint64_t>, kDropCount> drops_{};
  std::atomic<uint64_t> rsts_sent_{0};
  virtio::Chain chain_;
  bool unstalled_ = false;  // release_stall() let a source go
  // The host bridge: streams by (parent port << 32 | host port), switch thread only.
  std::map<uint64_t, std::unique_ptr<HostStream>> host_;
  uint64_t host_next_id_ = 1;
  size_t host_queued_ = 0;  // payload bytes of host streams in the parent's queue
  std::vector<uint8_t> host_chunk_;  // one read from a Unix socket
  size_t host_ctl_ = 0;     // their packets without payload there (RESPONSE, CREDIT_UPDATE, ...)
  mutable std::mutex host_mu_;
  std::map<uint32_t, std::string> host_ports_;  // under host_mu_
  std::atomic<uint64_t> host_opened_{0}, host_refused_{0}, host_to_{0}, host_from_{0}, host_rst_sent_{0},
      host_rst_received_{0}, host_open_{0};

  UniqueFd ctl_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Command*> mailbox_;
  std::mutex attach_mu_;  // one attach/detach at a time (the slots they look at settle under it)
  bool quit_ = false;
  bool alive_ = false;
  runtime::BoundedThread thread_;
  log::RateLimit log_limit_{10, std::chrono::seconds(10)};
};

}  // namespace azote::card_vsock
