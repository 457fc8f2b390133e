#include "cards/vsock/switch.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/eventfd.hpp"
#include "virtio/spec.hpp"

namespace azote::card_vsock {

const char* to_string(Drop d) {
  switch (d) {
    case Drop::kShort: return "short";
    case Drop::kTooLarge: return "too_large";
    case Drop::kBadLen: return "bad_len";
    case Drop::kSpoofed: return "spoofed_src";
    case Drop::kBadType: return "bad_type";
    case Drop::kBadOp: return "bad_op";
    case Drop::kUnroutable: return "unroutable";
    case Drop::kTableFull: return "table_full";
    case Drop::kStuck: return "peer_stuck";
    case Drop::kDeviceDown: return "device_down";
    case Drop::kRstOverflow: return "rst_overflow";
    case Drop::kCount: break;
  }
  return "?";
}

// One packet in card memory: the copy taken out of the sender's tx chain (or an RST the
// card made). Delivered possibly in several pieces: `sent` payload bytes are already in
// the destination's rx buffers.
struct Switch::Packet {
  std::vector<uint8_t> bytes;  // header + payload
  uint32_t sent = 0;
  bool card = false;  // made by the card (an RST), not a guest's
  // A host stream's packet for the parent (the host bridge): its stream's id and key.
  uint64_t host_id = 0, host_key = 0;
  uint32_t payload() const { return static_cast<uint32_t>(bytes.size() - kHeaderBytes); }
};

// Packets from one source (or the card's answers) to one destination, in order.
struct Switch::Inbound {
  std::deque<Packet> q;
  size_t data_packets = 0;  // guests' packets
  size_t data_bytes = 0;
  size_t card_packets = 0;  // the card's RSTs (bounded apart: they must not wait behind data bounds)
};

struct Switch::Ring {
  explicit Ring(const vhost_user::VringInfo& v) : info(v), queue(*v.memory) {}
  vhost_user::VringInfo info;
  virtio::SplitQueue queue;
  bool pushed = false;  // used entries since the last interrupt check
};

// A connection between an enclave and the parent, as seen from its packets.
struct Switch::Conn {
  uint32_t shut_enclave = 0;  // SHUTDOWN flags each side sent
  uint32_t shut_parent = 0;
  bool established = false;  // a RESPONSE passed
  std::chrono::steady_clock::time_point since;  // its REQUEST
};

struct Switch::Port {
  uint32_t cid = 0;       // 0 while the slot is free
  bool attached = false;  // a device of the card; false: a free slot
  bool parent = false;
  bool up = false;  // a queue started since the last down()
  std::unique_ptr<Ring> rx, tx;
  std::array<Inbound, kMaxDevices> from;  // by source port
  Inbound answers;                        // the card's RSTs answering this VM's packets
  Inbound host;                           // the parent only: the host bridge's streams
  size_t rr = 0;                          // delivery cursor: 0 answers, 1 + s from[s], then host
  // As a source: a packet whose destination's queue was full; the tx ring waits.
  std::optional<Packet> held;
  size_t held_for = 0;
  Clock::time_point held_since;
  // As a destination.
  Clock::time_point last_rx_progress;
  bool stuck = false;
  // Enclaves only: key (enclave port << 32 | parent port).
  std::map<uint64_t, Conn> conns;

  std::atomic<bool> needs_reset{false};
  // For stats() and attach() (other threads): `cid`, `attached`, `up`, rx/tx held.
  std::atomic<uint32_t> cid_flag{0};
  std::atomic<bool> attached_flag{false};
  std::atomic<bool> up_flag{false};
  std::atomic<bool> rx_flag{false}, tx_flag{false};
  std::atomic<uint64_t> tx_packets{0}, tx_bytes{0}, rx_packets{0}, rx_bytes{0}, rx_chains{0},
      rx_chains_too_small{0}, rsts_received{0}, stalls{0}, connections{0};
};

// A stream between the parent and a host Unix socket, ended by the card (the host
// bridge): the card is the parent's peer, with its own credit both ways.
struct Switch::HostStream {
  uint64_t id = 0, key = 0;
  uint32_t guest_port = 0, host_port = 0;
  UniqueFd fd;  // the Unix stream socket, non-blocking
  // Parent -> host: what the parent sent and the Unix socket has not taken yet.
  std::vector<uint8_t> buf;
  size_t off = 0;  // buf[off..] is pending
  uint32_t rx_cnt = 0, fwd_cnt = 0, fwd_advertised = 0;
  // Host -> parent: the parent's credit.
  uint32_t peer_buf_alloc = 0, peer_fwd_cnt = 0, tx_cnt = 0;
  size_t queued = 0;  // payload bytes of ours in the parent's queue
  bool credit_queued = false;
  uint32_t peer_shut = 0;  // SHUTDOWN flags from the parent
  bool shut_wr = false;    // shutdown(SHUT_WR) done on the Unix side
  bool host_eof = false;   // EOF read from the Unix side (SHUTDOWN(SEND) queued)
  bool pending = true;     // I/O to try in the next host_pump()
  size_t pending_bytes() const { return buf.size() - off; }
  uint32_t credit() const { return peer_buf_alloc - (tx_cnt - peer_fwd_cnt); }
};

// A request from the vhost-user (or control) thread, on that thread's stack until `done`.
struct Switch::Command {
  enum class Kind { kStart, kStop, kDown, kAttach, kDetach } kind = Kind::kStart;
  size_t port = 0;
  uint32_t index = 0;
  uint32_t cid = 0;  // kAttach
  const vhost_user::VringInfo* info = nullptr;
  bool done = false;
  bool ok = true;
  uint16_t next_avail = 0;
};

namespace {

uint64_t conn_key(uint32_t enclave_port, uint32_t parent_port) {
  return (uint64_t{enclave_port} << 32) | parent_port;
}

// Copies `n` bytes into the chain's writable buffers from byte `at` of them on.
void scatter(const virtio::Chain& chain, uint64_t at, const uint8_t* src, size_t n) {
  for (const virtio::Buffer& b : chain.writable) {
    if (n == 0) return;
    if (at >= b.len) {
      at -= b.len;
      continue;
    }
    const size_t put = std::min<uint64_t>(b.len - at, n);
    std::memcpy(b.host + at, src, put);
    src += put;
    n -= put;
    at = 0;
  }
}

}  // namespace

CardResult<std::unique_ptr<Switch>> Switch::start(const std::vector<uint32_t>& cids, Limits limits) {
  size_t parents = 0;
  for (size_t i = 0; i < cids.size(); ++i) {
    parents += cids[i] == kCidParent ? 1 : 0;
    if (cids[i] < kCidParent || cids[i] == UINT32_MAX || std::count(cids.begin(), cids.begin() + i, cids[i]) > 0)
      return make_error(CardErrc::kUsage, "cid " + std::to_string(cids[i]) + " is reserved or given twice");
  }
  if (cids.empty() || cids.size() > kMaxDevices || parents != 1)
    return make_error(CardErrc::kUsage, "the switch needs one parent (cid 3) and at most 4 enclaves");
  UniqueFd ctl(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!ctl) return errno_error(CardErrc::kHost, "eventfd");
  std::unique_ptr<Switch> sw(new Switch(cids, limits, std::move(ctl)));
  Switch* raw = sw.get();
  sw->thread_.start("vsock-switch", "switch", [raw] { raw->run(); });
  // The thread runs only if it could enter its seccomp class (it logged why not).
  std::unique_lock l(sw->mu_);
  if (!sw->cv_.wait_for(l, runtime::kWorkerStopDeadline, [&] { return sw->alive_; }))
    return make_error(CardErrc::kHost, "the switch thread did not start");
  return sw;
}

Switch::Switch(const std::vector<uint32_t>& cids, Limits limits, UniqueFd ctl) : limits_(limits), ctl_(std::move(ctl)) {
  // Every slot exists from the start: ports_ never changes size (stats() reads it from
  // any thread), a slot's state changes on the switch thread only.
  for (size_t i = 0; i < kMaxDevices; ++i) {
    auto p = std::make_unique<Port>();
    if (i < cids.size()) {
      p->cid = cids[i];
      p->attached = true;
      p->parent = cids[i] == kCidParent;
      if (p->parent) parent_ = i;
      p->cid_flag.store(cids[i]);
      p->attached_flag.store(true);
    }
    ports_.push_back(std::move(p));
  }
}

Switch::~Switch() {
  {
    std::lock_guard l(mu_);
    quit_ = true;
  }
  const uint64_t one = 1;
  (void)::write(ctl_.get(), &one, sizeof one);
  thread_.join_within(runtime::kWorkerStopDeadline, "the vsock switch thread");
}

// ----- the vhost-user thread's side ---------------------------------------------------

void Switch::post(Command& c) {
  {
    std::lock_guard l(mu_);
    mailbox_.push_back(&c);
  }
  const uint64_t one = 1;
  (void)::write(ctl_.get(), &one, sizeof one);
  std::unique_lock l(mu_);
  if (!cv_.wait_for(l, runtime::kWorkerStopDeadline, [&] { return c.done; })) {
    // The command lives on this stack and the switch thread may still be using the
    // ring: neither can be given up safely. As a stuck worker (runtime::BoundedThread).
    LOG_ERROR("the vsock switch thread did not answer within %lld ms; the process exits with status %d for its "
              "supervisor to restart it",
              static_cast<long long>(runtime::kWorkerStopDeadline.count()), runtime::kExitStuckWorker);
    std::fflush(nullptr);
    ::_exit(runtime::kExitStuckWorker);
  }
}

bool Switch::queue_started(size_t port, const vhost_user::VringInfo& v) {
  if (port >= ports_.size() || (v.index != kRxQueue && v.index != kTxQueue) || v.memory == nullptr) return false;
  Command c;
  c.kind = Command::Kind::kStart;
  c.port = port;
  c.index = v.index;
  c.info = &v;
  post(c);
  return c.ok;
}

uint16_t Switch::queue_stopped(size_t port, uint32_t index) {
  if (port >= ports_.size() || (index != kRxQueue && index != kTxQueue)) return 0;
  Command c;
  c.kind = Command::Kind::kStop;
  c.port = port;
  c.index = index;
  post(c);
  return c.next_avail;
}

void Switch::device_down(size_t port) {
  if (port >= ports_.size()) return;
  Command c;
  c.kind = Command::Kind::kDown;
  c.port = port;
  post(c);
}

CardResult<size_t> Switch::attach(uint32_t cid) {
  if (cid <= kCidParent || cid == UINT32_MAX)
    return make_error(CardErrc::kUsage, "cid " + std::to_string(cid) + " is not an enclave's (4-4294967294)");
  std::lock_guard g(attach_mu_);
  std::optional<size_t> free;
  for (size_t i = 0; i < ports_.size(); ++i) {
    const Port& p = *ports_[i];
    if (!p.attached_flag.load()) {
      if (!free) free = i;
    } else if (p.cid_flag.load() == cid) {
      return make_error(CardErrc::kUsage, "cid " + std::to_string(cid) + " is already a device of this card");
    }
  }
  if (!free)
    return make_error(CardErrc::kUsage,
                      "the card already serves " + std::to_string(kMaxEnclaves) + " enclaves, the most a parent has");
  Command c;
  c.kind = Command::Kind::kAttach;
  c.port = *free;
  c.cid = cid;
  post(c);
  return *free;
}

bool Switch::detach(size_t port) {
  std::lock_guard g(attach_mu_);
  if (port >= ports_.size() || !ports_[port]->attached_flag.load() || ports_[port]->cid_flag.load() == kCidParent)
    return false;
  Command c;
  c.kind = Command::Kind::kDetach;
  c.port = port;
  post(c);
  return true;
}

CardResult<void> Switch::add_host_port(uint32_t port, const std::string& path) {
  const std::string what = "host port " + std::to_string(port);
  if (port == 0) return make_error(CardErrc::kUsage, what + " is not a port (1-4294967295)");
  if (path.empty() || path.front() != '/' || path.size() >= sizeof(sockaddr_un{}.sun_path) ||
      path.find('\0') != std::string::npos)
    return make_error(CardErrc::kUsage, what + ": \"" + path + "\" is not an absolute socket path of 1-107 bytes");
  std::lock_guard l(host_mu_);
  if (host_ports_.count(port) > 0)
    return make_error(CardErrc::kUsage, what + " is already mapped (to " + host_ports_[port] + ")");
  if (host_ports_.size() >= kMaxHostPorts)
    return make_error(CardErrc::kUsage,
                      what + ": the card already maps " + std::to_string(kMaxHostPorts) + " host ports, the most");
  host_ports_[port] = path;
  return {};
}

bool Switch::remove_host_port(uint32_t port) {
  std::lock_guard l(host_mu_);
  return host_ports_.erase(port) > 0;
}

std::map<uint32_t, std::string> Switch::host_ports() const {
  std::lock_guard l(host_mu_);
  return host_ports_;
}

bool Switch::needs_reset(size_t port) const {
  return port < ports_.size() && ports_[port]->needs_reset.load(std::memory_order_acquire);
}

SwitchStats Switch::stats() const {
  SwitchStats s;
  for (const auto& p : ports_) {
    PortStats ps;
    ps.cid = p->cid_flag.load();
    ps.attached = p->attached_flag.load();
    ps.up = p->up_flag.load();
    ps.rx_running = p->rx_flag.load();
    ps.tx_running = p->tx_flag.load();
    ps.tx_packets = p->tx_packets.load();
    ps.tx_bytes = p->tx_bytes.load();
    ps.rx_packets = p->rx_packets.load();
    ps.rx_bytes = p->rx_bytes.load();
    ps.rx_chains = p->rx_chains.load();
    ps.rx_chains_too_small = p->rx_chains_too_small.load();
    ps.rsts_received = p->rsts_received.load();
    ps.stalls = p->stalls.load();
    ps.connections = p->connections.load();
    s.ports.push_back(ps);
  }
  for (size_t i = 0; i < kDropCount; ++i) s.drops[i] = drops_[i].load();
  s.rsts_sent = rsts_sent_.load();
  s.host.opened = host_opened_.load();
  s.host.refused = host_refused_.load();
  s.host.bytes_to_host = host_to_.load();
  s.host.bytes_from_host = host_from_.load();
  s.host.resets_sent = host_rst_sent_.load();
  s.host.resets_received = host_rst_received_.load();
  s.host.open = host_open_.load();
  return s;
}

void Switch::log_stats() const {
  const SwitchStats s = stats();
  for (const PortStats& p : s.ports) {
    if (!p.attached) continue;
    LOG_INFO("vsock: cid %u: sent %llu packets (%llu bytes), received %llu packets (%llu bytes) in %llu buffers "
             "(%llu too small), %llu resets from the card, %llu stalls, %llu connections open",
             p.cid, static_cast<unsigned long long>(p.tx_packets), static_cast<unsigned long long>(p.tx_bytes),
             static_cast<unsigned long long>(p.rx_packets), static_cast<unsigned long long>(p.rx_bytes),
             static_cast<unsigned long long>(p.rx_chains), static_cast<unsigned long long>(p.rx_chains_too_small),
             static_cast<unsigned long long>(p.rsts_received), static_cast<unsigned long long>(p.stalls),
             static_cast<unsigned long long>(p.connections));
  }
  std::string drops;
  for (size_t i = 0; i < kDropCount; ++i) {
    if (s.drops[i] == 0) continue;
    if (!drops.empty()) drops += ", ";
    drops += std::string(to_string(static_cast<Drop>(i))) + " " + std::to_string(s.drops[i]);
  }
  LOG_INFO("vsock: %llu resets sent by the card; dropped: %s", static_cast<unsigned long long>(s.rsts_sent),
           drops.empty() ? "none" : drops.c_str());
  if (s.host.opened + s.host.refused > 0)
    LOG_INFO("vsock: host bridge: %llu streams opened, %llu refused, %llu bytes to the host, %llu from it, "
             "%llu reset by the card, %llu by the parent, %llu open",
             static_cast<unsigned long long>(s.host.opened), static_cast<unsigned long long>(s.host.refused),
             static_cast<unsigned long long>(s.host.bytes_to_host),
             static_cast<unsigned long long>(s.host.bytes_from_host),
             static_cast<unsigned long long>(s.host.resets_sent),
             static_cast<unsigned long long>(s.host.resets_received), static_cast<unsigned long long>(s.host.open));
}

// ----- the switch thread ----------------------------------------------------------------

void Switch::run() {
  {
    std::lock_guard l(mu_);
    alive_ = true;
  }
  cv_.notify_all();
  std::vector<pollfd> fds;
  std::vector<HostStream*> polled;  // host streams, fds[host_at + i]
  bool more = false;
  std::optional<Clock::time_point> deadline;  // the next stuck check
  for (;;) {
    fds.clear();
    fds.push_back({ctl_.get(), POLLIN, 0});
    bool unkicked = false;  // a ring without a kick fd: polled every 50 ms
    for (const auto& p : ports_) {
      if (p->rx) {
        if (p->rx->info.kick_fd >= 0) fds.push_back({p->rx->info.kick_fd, POLLIN, 0});
        else unkicked = true;
      }
      // A source waiting on a destination takes nothing from its tx ring: its kicks wait.
      if (p->tx && !p->held) {
        if (p->tx->info.kick_fd >= 0) fds.push_back({p->tx->info.kick_fd, POLLIN, 0});
        else unkicked = true;
      }
    }
    // Host streams: readable while the parent has credit and the queue room, writable
    // while bytes wait for the Unix socket; none of both: not polled (a hang-up is seen
    // at the next read or write).
    const size_t host_at = fds.size();
    polled.clear();
    const bool host_room = host_queued_ < limits_.host_queued;
    for (auto& [key, hs] : host_) {
      short ev = 0;
      if (!hs->host_eof && (hs->peer_shut & kShutdownRcv) == 0 && hs->credit() > 0 && host_room &&
          hs->queued < limits_.host_stream_queued)
        ev |= POLLIN;
      if (hs->pending_bytes() > 0) ev |= POLLOUT;
      if (ev == 0) continue;
      fds.push_back({hs->fd.get(), ev, 0});
      polled.push_back(hs.get());
    }
    int timeout = -1;
    if (more) {
      timeout = 0;
    } else {
      if (deadline) {
        const long long left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now()).count();
        timeout = static_cast<int>(std::clamp<long long>(left, 0, 60000));
      }
      if (unkicked) timeout = timeout < 0 ? 50 : std::min(timeout, 50);
    }
    const int n = ::poll(fds.data(), fds.size(), timeout);
    if (n < 0 && errno != EINTR) {
      if (log_limit_.allow()) LOG_ERROR("vsock switch: poll: %s", std::strerror(errno));
      ::usleep(10000);
    }
    if (n > 0) {
      // One read per readable kick (base/eventfd.hpp); the rings are looked at below
      // anyway. Before the commands: a ring they stop has its kick fd closed by the
      // session as soon as the command is acknowledged.
      for (size_t i = 1; i < host_at; ++i)
        if ((fds[i].revents & POLLIN) != 0) (void)drain_eventfd(fds[i].fd);
      // Before the commands too: one may close every host stream (the parent down).
      for (size_t i = 0; i < polled.size(); ++i)
        if (fds[host_at + i].revents != 0) polled[i]->pending = true;
      if ((fds[0].revents & POLLIN) != 0) {
        (void)drain_eventfd(ctl_.get());
        if (!handle_commands()) return;
      }
    }
    const auto now = Clock::now();
    more = round(now);
    bool released = false;
    deadline = check_stuck(now, released);
    more |= released;  // its tx ring and the RSTs it queued wait for no kick
    interrupts();
  }
}

bool Switch::handle_commands() {
  for (;;) {
    Command* c = nullptr;
    {
      std::lock_guard l(mu_);
      if (mailbox_.empty()) return !quit_;
      c = mailbox_.front();
      mailbox_.pop_front();
    }
    execute(*c);
    {
      std::lock_guard l(mu_);
      c->done = true;
    }
    cv_.notify_all();
  }
}

void Switch::execute(Command& c) {
  Port& p = *ports_[c.port];
  std::unique_ptr<Ring>& slot = c.index == kRxQueue ? p.rx : p.tx;
  switch (c.kind) {
    case Command::Kind::kStart: {
      if (!p.attached) {
        c.ok = false;
        return;
      }
      const vhost_user::VringInfo& v = *c.info;
      auto r = std::make_unique<Ring>(v);
      const bool event_idx = (v.features & virtio::feature_bit(virtio::kFRingEventIdx)) != 0;
      const bool indirect = (v.features & virtio::feature_bit(virtio::kFRingIndirectDesc)) != 0;
      auto cfg = r->queue.configure(v.size, v.desc, v.avail, v.used, event_idx, indirect);
      if (!cfg.ok()) {
        p.needs_reset.store(true, std::memory_order_release);
        if (log_limit_.allow())
          LOG_WARN("vsock: cid %u: queue %u cannot run: %s", p.cid, v.index, cfg.error().message().c_str());
        c.ok = false;
        return;
      }
      r->queue.set_next_avail(v.next_avail);
      r->queue.set_next_used(v.next_avail);
      slot = std::move(r);
      (c.index == kRxQueue ? p.rx_flag : p.tx_flag).store(true);
      if (!p.up) {
        p.up = true;
        p.up_flag.store(true);
        p.last_rx_progress = Clock::now();
      }
      return;
    }
    case Command::Kind::kStop:
      // Every chain taken from a ring was completed when it was taken (tx) or filled
      // (rx): the next avail index is exact, used idx equals it.
      if (slot) {
        c.next_avail = slot->queue.next_avail();
        slot.reset();
      }
      (c.index == kRxQueue ? p.rx_flag : p.tx_flag).store(false);
      return;
    case Command::Kind::kDown:
      down(c.port);
      return;
    case Command::Kind::kAttach:
      attach_port(c.port, c.cid);
      return;
    case Command::Kind::kDetach:
      detach_port(c.port);
      return;
  }
}

void Switch::attach_port(size_t x, uint32_t cid) {
  Port& p = *ports_[x];
  // A free slot: detach_port() left nothing in it. A slot starts from zero.
  p.rx.reset();
  p.tx.reset();
  p.cid = cid;
  p.attached = true;
  p.parent = false;
  p.up = p.stuck = false;
  p.rr = 0;
  p.held.reset();
  p.conns.clear();
  p.answers = Inbound{};
  p.host = Inbound{};
  for (Inbound& in : p.from) in = Inbound{};
  p.needs_reset.store(false);
  for (auto* n : {&p.tx_packets, &p.tx_bytes, &p.rx_packets, &p.rx_bytes, &p.rx_chains, &p.rx_chains_too_small,
                  &p.rsts_received, &p.stalls, &p.connections})
    n->store(0);
  p.up_flag.store(false);
  p.rx_flag.store(false);
  p.tx_flag.store(false);
  p.cid_flag.store(cid);
  p.attached_flag.store(true);
}

void Switch::detach_port(size_t x) {
  Port& p = *ports_[x];
  if (!p.attached || p.parent) return;
  if (p.rx || p.tx) {
    // Not the card's order (its Backend stops the queues first): forgotten here, so the
    // slot can be used again; the session's own stop then finds nothing.
    if (log_limit_.allow()) LOG_WARN("vsock: cid %u detached with a queue still running", p.cid);
    p.rx.reset();
    p.tx.reset();
  }
  // What is left for it, held by it or held for it goes, its connections are reset at
  // the parent (nothing, if its device already went down). What it sent before stays
  // queued for the parent (from[x] there), the RSTs after it: a slot used again later
  // queues its new VM's packets behind them, in order.
  down(x);
  p.attached = false;
  p.cid = 0;
  p.attached_flag.store(false);
  p.cid_flag.store(0);
  p.rx_flag.store(false);
  p.tx_flag.store(false);
}

bool Switch::round(Clock::time_point now) {
  // Deliveries first (they free room and release held packets), then the senders, then
  // deliveries again so what was just taken goes out in the same round. A sender
  // released by that last pass has chains no kick will announce again: another round.
  bool more = false;
  for (size_t d = 0; d < ports_.size(); ++d) (void)deliver(d, now);
  for (size_t s = 0; s < ports_.size(); ++s) more |= pump_tx(s, now);
  more |= host_pump();
  unstalled_ = false;
  for (size_t d = 0; d < ports_.size(); ++d) (void)deliver(d, now);
  return more || unstalled_;
}

void Switch::interrupts() {
  for (const auto& p : ports_) {
    for (Ring* r : {p->rx.get(), p->tx.get()}) {
      if (r == nullptr || !r->pushed) continue;
      r->pushed = false;
      if (r->queue.needs_interrupt() && r->info.call_fd >= 0) {
        const uint64_t one = 1;
        (void)::write(r->info.call_fd, &one, sizeof one);
      }
    }
  }
}

void Switch::break_ring(size_t port, Ring& r, const std::string& why) {
  Port& p = *ports_[port];
  p.needs_reset.store(true, std::memory_order_release);
  if (log_limit_.allow()) LOG_WARN("vsock: cid %u: the driver broke queue %u: %s", p.cid, r.info.index, why.c_str());
}

void Switch::count(Drop d, uint64_t n) { drops_[static_cast<size_t>(d)].fetch_add(n, std::memory_order_relaxed); }

// ----- from a tx ring -------------------------------------------------------------------

std::optional<Drop> Switch::read_packet(const Port& sp, const virtio::Chain& chain, Packet& p) {
  if (chain.readable_bytes < kHeaderBytes) return Drop::kShort;
  if (chain.readable_bytes > kHeaderBytes + limits_.max_payload) return Drop::kTooLarge;
  // The one copy out of guest memory; everything below reads the copy.
  // Sized exactly (the queues' byte bounds count what is allocated).
  p.bytes.resize(chain.readable_bytes);
  size_t at = 0;
  for (const virtio::Buffer& b : chain.readable) {
    std::memcpy(p.bytes.data() + at, b.host, b.len);
    at += b.len;
  }
  const Header h = decode_header(p.bytes);
  if (h.len != chain.readable_bytes - kHeaderBytes) return Drop::kBadLen;
  if (h.src_cid != sp.cid) return Drop::kSpoofed;
  if (h.type != kTypeStream) return Drop::kBadType;
  if (h.op < kOpRequest || h.op > kOpCreditRequest) return Drop::kBadOp;
  if (h.op != kOpRw && h.len != 0) return Drop::kBadLen;
  return std::nullopt;
}

bool Switch::pump_tx(size_t s, Clock::time_point now) {
  Port& sp = *ports_[s];
  if (!sp.tx || sp.held || sp.tx->queue.broken()) return false;
  Ring& r = *sp.tx;
  uint32_t taken = 0;
  while (taken < limits_.tx_batch && !sp.held) {
    auto got = r.queue.pop_into(chain_);
    if (!got.ok()) {
      break_ring(s, r, got.error().message());
      return false;
    }
    if (!*got) return false;
    ++taken;
    Packet p;
    const std::optional<Drop> bad = read_packet(sp, chain_, p);
    // The chain goes back at once: its bytes are in p now.
    (void)r.queue.push_used(chain_.head, 0);
    r.pushed = true;
    if (bad) {
      count(*bad);
      if (log_limit_.allow())
        LOG_WARN("vsock: cid %u sent a malformed packet (%s, %llu bytes): dropped", sp.cid, to_string(*bad),
                 static_cast<unsigned long long>(chain_.readable_bytes));
      continue;
    }
    const Header h = decode_header(p.bytes);
    handle_packet(s, std::move(p), h, now);
  }
  return taken == limits_.tx_batch && !sp.held;
}

std::optional<size_t> Switch::route(size_t s, const Header& h) const {
  // Nitro: the parent reaches its enclaves; an enclave reaches its parent only.
  if (ports_[s]->parent) {
    for (size_t d = 0; d < ports_.size(); ++d)
      if (d != s && ports_[d]->attached && !ports_[d]->parent && ports_[d]->cid == h.dst_cid) return d;
    return std::nullopt;
  }
  if (h.dst_cid == kCidParent) return parent_;
  return std::nullopt;
}

void Switch::handle_packet(size_t s, Packet&& p, const Header& h, Clock::time_point now) {
  Port& sp = *ports_[s];
  if (sp.parent && h.dst_cid == kCidHost) {
    host_packet(std::move(p), h);  // the host bridge; an enclave's are refused below
    return;
  }
  const auto d = route(s, h);
  if (!d || !ports_[*d]->up) {
    refuse(s, h, Drop::kUnroutable,
           !d ? (sp.parent ? "no enclave has that CID" : "an enclave talks only to its parent (CID 3)")
              : "that VM is not running");
    return;
  }
  Port& dp = *ports_[*d];
  if (dp.stuck) {
    // Its connections cannot make progress: reset this one at both ends.
    if (forget(s, *d, h)) {
      Header to_d = rst_header(h.src_cid, h.src_port, h.dst_cid, h.dst_port);
      card_rst(*d, dp.from[s], limits_.connections_per_enclave + limits_.answer_rsts, to_d);
    }
    refuse(s, h, Drop::kStuck, "that VM takes no packets");
    return;
  }
  if (!track(s, *d, h, now)) {
    refuse(s, h, Drop::kTableFull, "the enclave has too many connections");
    return;
  }
  if (!enqueue(*d, s, std::move(p))) {
    // The destination's queue from us is full: this packet waits here, and so does our
    // tx ring, until the destination takes some (or turns out stuck).
    sp.held = std::move(p);
    sp.held_for = *d;
    sp.held_since = now;
    sp.stalls.fetch_add(1, std::memory_order_relaxed);
  }
}

void Switch::refuse(size_t s, const Header& h, Drop why, const char* what) {
  count(why);
  Port& sp = *ports_[s];
  if (log_limit_.allow())
    LOG_WARN("vsock: cid %u port %u -> cid %llu port %u (op %u) refused: %s%s", sp.cid, h.src_port,
             static_cast<unsigned long long>(h.dst_cid), h.dst_port, h.op, what,
             h.op == kOpRst ? "" : "; answered with RST");
  // Never answer an RST (two refusing ends would bounce RSTs for ever).
  if (h.op == kOpRst) return;
  card_rst(s, sp.answers, limits_.answer_rsts, rst_header(h.dst_cid, h.dst_port, h.src_cid, h.src_port));
}

void Switch::card_rst(size_t d, Inbound& in, size_t bound, const Header& h) {
  Port& dp = *ports_[d];
  if (!dp.up) return;  // nobody to tell
  if (in.card_packets >= bound) {
    count(Drop::kRstOverflow);
    return;
  }
  Packet p;
  const auto b = encode_header(h);
  p.bytes.assign(b.begin(), b.end());
  p.card = true;
  in.q.push_back(std::move(p));
  ++in.card_packets;
  rsts_sent_.fetch_add(1, std::memory_order_relaxed);
}

bool Switch::enqueue(size_t d, size_t s, Packet&& p) {
  Inbound& in = ports_[d]->from[s];
  const size_t size = p.bytes.size();
  if (in.data_packets >= limits_.pair_packets || (in.data_packets > 0 && in.data_bytes + size > limits_.pair_bytes))
    return false;
  Port& sp = *ports_[s];
  sp.tx_packets.fetch_add(1, std::memory_order_relaxed);
  sp.tx_bytes.fetch_add(p.payload(), std::memory_order_relaxed);
  in.q.push_back(std::move(p));
  ++in.data_packets;
  in.data_bytes += size;
  return true;
}

void Switch::release_stall(size_t s, size_t d) {
  Port& sp = *ports_[s];
  if (!sp.held || sp.held_for != d) return;
  if (enqueue(d, s, std::move(*sp.held))) {
    sp.held.reset();
    unstalled_ = true;
  }
}

// ----- connections ------------------------------------------------------------------

bool Switch::track(size_t s, size_t d, const Header& h, Clock::time_point now) {
  const bool from_parent = ports_[s]->parent;
  Port& e = *ports_[from_parent ? d : s];
  const uint64_t key = from_parent ? conn_key(h.dst_port, h.src_port) : conn_key(h.src_port, h.dst_port);
  auto it = e.conns.find(key);
  const auto make_room = [&]() {
    if (e.conns.size() < limits_.connections_per_enclave) return true;
    // Full: the oldest REQUEST nobody answered, if it is old enough, makes way (its
    // connect() has timed out; a late RESPONSE tracks it again).
    auto oldest = e.conns.end();
    for (auto i = e.conns.begin(); i != e.conns.end(); ++i)
      if (!i->second.established && (oldest == e.conns.end() || i->second.since < oldest->second.since)) oldest = i;
    if (oldest == e.conns.end() || now - oldest->second.since < limits_.half_open_after) return false;
    e.conns.erase(oldest);
    return true;
  };
  switch (h.op) {
    case kOpRequest:
      if (it == e.conns.end()) {
        if (!make_room()) return false;
        it = e.conns.emplace(key, Conn{}).first;
      }
      it->second = Conn{};
      it->second.since = now;
      break;
    case kOpResponse:
      if (it == e.conns.end()) {
        if (!make_room()) break;  // forwarded untracked: refusing an answer helps nobody
        it = e.conns.emplace(key, Conn{}).first;
        it->second.since = now;
      }
      it->second.established = true;
      break;
    case kOpRst:
      if (it != e.conns.end()) e.conns.erase(it);
      break;
    case kOpShutdown:
      if (it != e.conns.end()) {
        (from_parent ? it->second.shut_parent : it->second.shut_enclave) |= h.flags & kShutdownBoth;
        if (it->second.shut_parent == kShutdownBoth && it->second.shut_enclave == kShutdownBoth) e.conns.erase(it);
      }
      break;
    default:
      break;
  }
  e.connections.store(e.conns.size(), std::memory_order_relaxed);
  return true;
}

bool Switch::forget(size_t s, size_t d, const Header& h) {
  const bool from_parent = ports_[s]->parent;
  Port& e = *ports_[from_parent ? d : s];
  const uint64_t key = from_parent ? conn_key(h.dst_port, h.src_port) : conn_key(h.src_port, h.dst_port);
  const bool had = e.conns.erase(key) > 0;
  e.connections.store(e.conns.size(), std::memory_order_relaxed);
  return had;
}

// ----- into an rx ring ----------------------------------------------------------------

bool Switch::deliver(size_t d, Clock::time_point now) {
  Port& dp = *ports_[d];
  if (!dp.rx || dp.rx->queue.broken()) return false;
  Ring& r = *dp.rx;
  const size_t slots = 2 + ports_.size();
  bool progress = false;
  size_t idle = 0;  // slots found empty in a row
  while (idle < slots) {
    const size_t slot = dp.rr % slots;
    Inbound& in = slot == 0 ? dp.answers : slot == slots - 1 ? dp.host : dp.from[slot - 1];
    if (in.q.empty()) {
      dp.rr = (slot + 1) % slots;
      ++idle;
      continue;
    }
    auto got = r.queue.pop_into(chain_);
    if (!got.ok()) {
      break_ring(d, r, got.error().message());
      return progress;
    }
    if (!*got) return progress;  // no buffer: the driver's next kick brings us back
    progress = true;
    dp.last_rx_progress = now;
    dp.stuck = false;
    Packet& p = in.q.front();
    // A piece: the header with len = the bytes of this piece, then that much payload.
    // What does not fit waits for the next buffer (as vhost-vsock splits a packet over
    // a guest's small rx buffers).
    const uint64_t room = chain_.writable_bytes;
    const uint32_t left = p.payload() - p.sent;
    const uint32_t piece =
        room < kHeaderBytes ? 0 : static_cast<uint32_t>(std::min<uint64_t>(left, room - kHeaderBytes));
    if (room < kHeaderBytes || (left > 0 && piece == 0)) {
      (void)r.queue.push_used(chain_.head, 0);  // too small for anything: given back empty
      r.pushed = true;
      dp.rx_chains_too_small.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    std::array<uint8_t, kHeaderBytes> hdr;
    std::memcpy(hdr.data(), p.bytes.data(), kHeaderBytes);
    store_le(hdr.data() + kOffLen, piece, 4);
    scatter(chain_, 0, hdr.data(), kHeaderBytes);
    scatter(chain_, kHeaderBytes, p.bytes.data() + kHeaderBytes + p.sent, piece);
    p.sent += piece;
    (void)r.queue.push_used(chain_.head, static_cast<uint32_t>(kHeaderBytes + piece));
    r.pushed = true;
    dp.rx_chains.fetch_add(1, std::memory_order_relaxed);
    if (p.sent < p.payload()) continue;
    // Delivered whole.
    if (p.card) {
      dp.rsts_received.fetch_add(1, std::memory_order_relaxed);
      --in.card_packets;
    } else {
      dp.rx_packets.fetch_add(1, std::memory_order_relaxed);
      dp.rx_bytes.fetch_add(p.payload(), std::memory_order_relaxed);
      --in.data_packets;
      in.data_bytes -= p.bytes.size();
    }
    if (p.host_id != 0) host_delivered(p);
    in.q.pop_front();
    if (slot > 0 && slot < slots - 1) release_stall(slot - 1, d);
    dp.rr = (slot + 1) % slots;
    idle = 0;
  }
  return progress;
}

// ----- a VM going away, a VM not taking packets ---------------------------------------

void Switch::down(size_t x) {
  Port& xp = *ports_[x];
  const auto drop_all = [&](Inbound& in) {
    count(Drop::kDeviceDown, in.data_packets);
    in.q.clear();
    in.data_packets = in.data_bytes = in.card_packets = 0;
  };
  if (xp.held) {
    count(Drop::kDeviceDown);
    xp.held.reset();
  }
  drop_all(xp.answers);
  for (Inbound& in : xp.from) drop_all(in);
  drop_all(xp.host);
  if (xp.parent) host_down();
  for (size_t s = 0; s < ports_.size(); ++s) {
    Port& sp = *ports_[s];
    if (s != x && sp.held && sp.held_for == x) {
      count(Drop::kDeviceDown);
      sp.held.reset();
    }
  }
  // Every connection the VM had: its peer gets an RST in its name, after whatever the
  // VM sent before it went (the same queue, so in order).
  const size_t bound = limits_.connections_per_enclave + limits_.answer_rsts;
  if (xp.parent) {
    for (size_t e = 0; e < ports_.size(); ++e) {
      Port& ep = *ports_[e];
      if (e == x) continue;
      for (const auto& [key, conn] : ep.conns)
        card_rst(e, ep.from[x], bound,
                 rst_header(kCidParent, static_cast<uint32_t>(key), ep.cid, static_cast<uint32_t>(key >> 32)));
      ep.conns.clear();
      ep.connections.store(0);
    }
  } else {
    Port& pp = *ports_[parent_];
    for (const auto& [key, conn] : xp.conns)
      card_rst(parent_, pp.from[x], bound,
               rst_header(xp.cid, static_cast<uint32_t>(key >> 32), kCidParent, static_cast<uint32_t>(key)));
    xp.conns.clear();
    xp.connections.store(0);
  }
  xp.up = false;
  xp.up_flag.store(false);
  xp.stuck = false;
  xp.rr = 0;
  xp.needs_reset.store(false, std::memory_order_release);
}

std::optional<Switch::Clock::time_point> Switch::check_stuck(Clock::time_point now, bool& released) {
  std::optional<Clock::time_point> next;
  for (size_t s = 0; s < ports_.size(); ++s) {
    Port& sp = *ports_[s];
    if (!sp.held) continue;
    const size_t d = sp.held_for;
    Port& dp = *ports_[d];
    const Clock::time_point deadline = std::max(sp.held_since, dp.last_rx_progress) + limits_.stuck_after;
    if (now < deadline) {
      if (!next || deadline < *next) next = deadline;
      continue;
    }
    // The destination took no rx buffer for stuck_after while we waited on it: it is
    // stuck (or hostile). Rather than hold our whole tx ring (and every other
    // connection of this VM) behind it, its connection is reset at both ends.
    if (!dp.stuck && log_limit_.allow())
      LOG_WARN("vsock: cid %u took no packet for %lld ms: its connections with cid %u are reset as they send",
               dp.cid, static_cast<long long>(limits_.stuck_after.count()), sp.cid);
    dp.stuck = true;
    Packet p = std::move(*sp.held);
    sp.held.reset();
    released = true;
    const Header h = decode_header(p.bytes);
    if (forget(s, d, h))
      card_rst(d, dp.from[s], limits_.connections_per_enclave + limits_.answer_rsts,
               rst_header(h.src_cid, h.src_port, h.dst_cid, h.dst_port));
    refuse(s, h, Drop::kStuck, "that VM takes no packets");
  }
  return next;
}

// ----- the host bridge ----------------------------------------------------------------
// The parent's streams to (2, P), P mapped to a Unix socket: the card is their peer
// (DESIGN.md "The host bridge"). All on the switch thread, its sockets non-blocking.

namespace {
constexpr size_t kHostChunksPerCall = 16;  // reads per stream per round (fairness)
// Packets without payload the bridge may have queued for the parent from REQUESTs
// (RESPONSEs; closed streams' leftovers): past it a REQUEST is refused. Each open
// stream adds at most 3 more (SHUTDOWN, one CREDIT_UPDATE at a time, RST).
constexpr size_t kHostCtlQueued = 256;
}  // namespace

void Switch::host_packet(Packet&& p, const Header& h) {
  if (h.op == kOpRequest) {
    host_request(h);
    return;
  }
  const uint64_t key = (uint64_t{h.src_port} << 32) | h.dst_port;
  const auto it = host_.find(key);
  if (it == host_.end()) {
    // No such stream (any more): as Linux answers a packet for no socket.
    refuse(parent_, h, Drop::kUnroutable, "no host stream");
    return;
  }
  HostStream& hs = *it->second;
  hs.peer_buf_alloc = h.buf_alloc;
  hs.peer_fwd_cnt = h.fwd_cnt;
  hs.pending = true;
  switch (h.op) {
    case kOpRst:
      host_close(key, /*rst=*/false, /*by_parent=*/true);
      return;
    case kOpRw: {
      if (hs.pending_bytes() + h.len > limits_.host_buf_alloc) {
        if (log_limit_.allow())
          LOG_WARN("vsock: host stream %u -> %u: the parent sent %u bytes past the %u it was given: reset",
                   hs.guest_port, hs.host_port, h.len, limits_.host_buf_alloc);
        host_close(key, /*rst=*/true, /*by_parent=*/false);
        return;
      }
      if (hs.off > 0 && hs.off * 2 >= hs.buf.size()) {
        hs.buf.erase(hs.buf.begin(), hs.buf.begin() + static_cast<std::ptrdiff_t>(hs.off));
        hs.off = 0;
      }
      hs.buf.insert(hs.buf.end(), p.bytes.begin() + kHeaderBytes, p.bytes.end());
      hs.rx_cnt += h.len;
      Port& pp = *ports_[parent_];
      pp.tx_packets.fetch_add(1, std::memory_order_relaxed);
      pp.tx_bytes.fetch_add(h.len, std::memory_order_relaxed);
      return;
    }
    case kOpShutdown:
      hs.peer_shut |= h.flags & kShutdownBoth;
      return;
    case kOpCreditRequest:
      host_credit_update(hs, /*force=*/true);
      return;
    case kOpCreditUpdate:
      return;  // the credit above
    default:  // a RESPONSE: the card never asked
      host_close(key, /*rst=*/true, /*by_parent=*/false);
      return;
  }
}

void Switch::host_request(const Header& h) {
  const uint64_t key = (uint64_t{h.src_port} << 32) | h.dst_port;
  // A REQUEST on a stream still open: the parent forgot it; the old one goes quietly.
  if (host_.count(key) > 0) host_close(key, /*rst=*/false, /*by_parent=*/false);
  std::string path;
  {
    std::lock_guard l(host_mu_);
    const auto it = host_ports_.find(h.dst_port);
    if (it != host_ports_.end()) path = it->second;
  }
  const auto refuse_host = [&](Drop why, const char* what) {
    host_refused_.fetch_add(1, std::memory_order_relaxed);
    refuse(parent_, h, why, what);
  };
  if (path.empty()) return refuse_host(Drop::kUnroutable, "no host port mapped (--host-port)");
  if (host_.size() >= limits_.host_streams || host_ctl_ >= kHostCtlQueued)
    return refuse_host(Drop::kTableFull, "too many host streams");
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return refuse_host(Drop::kUnroutable, "socket(AF_UNIX) failed");
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  // A Unix stream connect completes at once or fails (EAGAIN: the listener's backlog
  // is full, refused too).
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    const int e = errno;
    if (log_limit_.allow())
      LOG_WARN("vsock: host port %u: connect %s: %s", h.dst_port, path.c_str(), std::strerror(e));
    return refuse_host(Drop::kUnroutable, "the host socket refused the connection");
  }
  auto hs = std::make_unique<HostStream>();
  hs->id = host_next_id_++;
  hs->key = key;
  hs->guest_port = h.src_port;
  hs->host_port = h.dst_port;
  hs->fd = std::move(fd);
  hs->peer_buf_alloc = h.buf_alloc;
  hs->peer_fwd_cnt = h.fwd_cnt;
  HostStream& ref = *hs;
  host_.emplace(key, std::move(hs));
  host_open_.store(host_.size(), std::memory_order_relaxed);
  host_opened_.fetch_add(1, std::memory_order_relaxed);
  host_queue(ref, kOpResponse);
}

void Switch::host_queue(HostStream& hs, uint16_t op, uint32_t flags, const uint8_t* data, uint32_t n) {
  Header h;
  h.src_cid = kCidHost;
  h.src_port = hs.host_port;
  h.dst_cid = kCidParent;
  h.dst_port = hs.guest_port;
  h.len = n;
  h.type = kTypeStream;
  h.op = op;
  h.flags = flags;
  h.buf_alloc = limits_.host_buf_alloc;
  h.fwd_cnt = hs.fwd_cnt;
  hs.fwd_advertised = hs.fwd_cnt;
  Packet p;
  const auto b = encode_header(h);
  p.bytes.reserve(kHeaderBytes + n);
  p.bytes.assign(b.begin(), b.end());
  if (n > 0) p.bytes.insert(p.bytes.end(), data, data + n);
  p.host_id = hs.id;
  p.host_key = hs.key;
  if (n > 0) {
    hs.queued += n;
    host_queued_ += n;
    hs.tx_cnt += n;
    host_from_.fetch_add(n, std::memory_order_relaxed);
  } else {
    ++host_ctl_;
  }
  if (op == kOpCreditUpdate) hs.credit_queued = true;
  Inbound& in = ports_[parent_]->host;
  in.data_bytes += p.bytes.size();
  ++in.data_packets;
  in.q.push_back(std::move(p));
}

void Switch::host_delivered(const Packet& p) {
  const uint32_t n = p.payload();
  if (n > 0) host_queued_ -= n;
  else if (host_ctl_ > 0) --host_ctl_;
  const auto it = host_.find(p.host_key);
  if (it == host_.end() || it->second->id != p.host_id) return;
  HostStream& hs = *it->second;
  hs.queued -= n;
  if (decode_header(p.bytes).op == kOpCreditUpdate) hs.credit_queued = false;
  hs.pending = true;  // room again: maybe more to read, a credit update to send
}

void Switch::host_credit_update(HostStream& hs, bool force) {
  if (hs.credit_queued) return;  // one at a time; the next goes once it is delivered
  const uint32_t unadvertised = hs.fwd_cnt - hs.fwd_advertised;
  // The free space the parent knows of: below half the buffer, tell it of what drained.
  const uint32_t known_free = limits_.host_buf_alloc - (hs.rx_cnt - hs.fwd_advertised);
  if (force || (unadvertised > 0 && known_free < limits_.host_buf_alloc / 2)) host_queue(hs, kOpCreditUpdate);
}

void Switch::host_close(uint64_t key, bool rst, bool by_parent) {
  const auto it = host_.find(key);
  if (it == host_.end()) return;
  HostStream& hs = *it->second;
  if (rst) {
    host_queue(hs, kOpRst);
    // The answer to the parent's full shutdown is an ordinary close, not a reset.
    if (hs.peer_shut != kShutdownBoth || hs.pending_bytes() > 0) host_rst_sent_.fetch_add(1, std::memory_order_relaxed);
  } else if (by_parent) {
    host_rst_received_.fetch_add(1, std::memory_order_relaxed);
  }
  host_.erase(it);  // closes the Unix socket
  host_open_.store(host_.size(), std::memory_order_relaxed);
}

void Switch::host_io(HostStream& hs, short) {
  const uint64_t key = hs.key;
  // Parent -> host.
  while (hs.pending_bytes() > 0) {
    const ssize_t n = ::send(hs.fd.get(), hs.buf.data() + hs.off, hs.pending_bytes(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
    if (n <= 0) {
      host_close(key, /*rst=*/true, /*by_parent=*/false);
      return;
    }
    hs.off += static_cast<size_t>(n);
    hs.fwd_cnt += static_cast<uint32_t>(n);
    host_to_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  }
  if (hs.pending_bytes() == 0) {
    hs.buf.clear();
    hs.off = 0;
    if ((hs.peer_shut & kShutdownSend) != 0 && !hs.shut_wr) {
      (void)::shutdown(hs.fd.get(), SHUT_WR);
      hs.shut_wr = true;
    }
    // The parent shut both ways and everything it sent is out: the stream is done (as
    // Linux answers a peer's full shutdown with an RST).
    if (hs.peer_shut == kShutdownBoth) {
      host_close(key, /*rst=*/true, /*by_parent=*/false);
      return;
    }
  }
  host_credit_update(hs, /*force=*/false);
  // Host -> parent, within the parent's credit and the queue's bounds.
  if (host_chunk_.size() < limits_.host_read_chunk) host_chunk_.resize(limits_.host_read_chunk);
  uint8_t* chunk = host_chunk_.data();
  for (size_t i = 0; i < kHostChunksPerCall; ++i) {
    if (hs.host_eof || (hs.peer_shut & kShutdownRcv) != 0) return;
    const uint64_t room = std::min<uint64_t>(
        limits_.host_stream_queued - std::min(hs.queued, limits_.host_stream_queued),
        limits_.host_queued - std::min(host_queued_, limits_.host_queued));
    const uint32_t want = static_cast<uint32_t>(
        std::min<uint64_t>({hs.credit(), room, limits_.host_read_chunk}));
    if (want == 0) return;
    const ssize_t n = ::read(hs.fd.get(), chunk, want);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n < 0) {
      host_close(key, /*rst=*/true, /*by_parent=*/false);
      return;
    }
    if (n == 0) {
      hs.host_eof = true;
      host_queue(hs, kOpShutdown, kShutdownSend);
      return;
    }
    host_queue(hs, kOpRw, 0, chunk, static_cast<uint32_t>(n));
  }
  hs.pending = true;  // more to read: the next round
}

bool Switch::host_pump() {
  if (host_.empty()) return false;
  bool more = false;
  // host_io may close (erase) its own stream only: iterate over the keys first.
  std::vector<uint64_t> keys;
  for (const auto& [key, hs] : host_)
    if (hs->pending) keys.push_back(key);
  for (uint64_t key : keys) {
    const auto it = host_.find(key);
    if (it == host_.end()) continue;
    it->second->pending = false;
    host_io(*it->second, 0);
    const auto again = host_.find(key);
    if (again != host_.end() && again->second->pending) more = true;
  }
  return more;
}

void Switch::host_down() {
  // The parent's queue was emptied (down()): its host streams end, their Unix sockets
  // closed (their peers read EOF/ECONNRESET).
  host_rst_sent_.fetch_add(host_.size(), std::memory_order_relaxed);
  host_.clear();
  host_queued_ = 0;
  host_ctl_ = 0;
  host_open_.store(0, std::memory_order_relaxed);
}

}  // namespace azote::card_vsock
