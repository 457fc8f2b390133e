// A polling, user-mode virtio-vsock driver (virtio 1.2 §5.10, device ID 19) over
// virtio-mmio version 2, and a small stream-socket layer on top of it: a handful of
// connections, listen/accept, connect, send/recv with the protocol's end-to-end credit
// flow control, shutdown and reset. Stream sockets only (no SEQPACKET, no datagrams).
//
// Transport, as Linux's virtio_transport.c lays it out: queue 0 (rx) holds receive
// buffers of one device-writable descriptor each (the 44-byte header, then up to 4 KiB
// of payload), posted before DRIVER_OK and refilled as they are consumed; queue 1 (tx)
// carries one packet per chain, the header in one device-readable descriptor and the
// payload (if any) in a second; queue 2 (event) holds 4-byte event buffers
// (TRANSPORT_RESET). The local CID is config space le64 guest_cid (offset 0). All of
// it polled: the rings carry VIRTQ_AVAIL_F_NO_INTERRUPT.
//
// The device -- and through it the peer, which may be any other VM the card routes
// to -- is untrusted: a used id that is not a posted buffer ends the driver (like the
// other drivers here); a used length under the header or over the buffer, a header len
// over what the device wrote, a packet not for our CID, an unknown op, a control packet
// with a payload are dropped and counted; a peer that sends more than the credit we
// advertised is reset. Each header is copied once out of the shared buffer before it
// is looked at, each payload copied once, straight into its connection's receive
// buffer (private memory). Nothing on the data path enters CPL0; the only MMIO
// accesses are QueueNotify writes and, every 100 ms while the driver polls, one
// Status read.
#pragma once

#include <cstddef>
#include <cstdint>

#include "rt.hpp"
#include "virtio.hpp"

namespace az::vsock {

// ------------------------------------------------------------------- protocol
inline constexpr uint32_t kHdrBytes = 44;      // struct virtio_vsock_hdr, packed, LE
inline constexpr uint32_t kPayloadMax = 4096;  // per packet (what a receive buffer holds)
inline constexpr uint32_t kBufAlloc = 64 * 1024;  // each connection's receive buffer
inline constexpr uint32_t kMaxConns = 8;
inline constexpr uint32_t kMaxListeners = 4;

inline constexpr uint64_t kCidHost = 2;
inline constexpr uint64_t kCidParent = 3;  // ENCLAVES.md §6: the parent, always
inline constexpr uint32_t kPortAny = 0xffffffffu;

inline constexpr uint16_t kTypeStream = 1;
inline constexpr uint16_t kOpRequest = 1, kOpResponse = 2, kOpRst = 3, kOpShutdown = 4, kOpRw = 5,
                          kOpCreditUpdate = 6, kOpCreditRequest = 7;
inline constexpr uint32_t kShutdownRcv = 1, kShutdownSend = 2, kShutdownBoth = 3;

struct [[gnu::packed]] Hdr {
  uint64_t src_cid;
  uint64_t dst_cid;
  uint32_t src_port;
  uint32_t dst_port;
  uint32_t len;
  uint16_t type;
  uint16_t op;
  uint32_t flags;
  uint32_t buf_alloc;
  uint32_t fwd_cnt;
};
static_assert(sizeof(Hdr) == kHdrBytes);

// ------------------------------------------------------------------- results
// Socket calls return a count or a handle (>= 0), or one of these. err_text() names
// them; for kErrReset, Device::why(c) says who reset the connection and why.
inline constexpr int64_t kErrTimeout = -1;   // the bounded wait ran out
inline constexpr int64_t kErrRefused = -2;   // connect: the peer (or the card) answered RST
inline constexpr int64_t kErrReset = -3;     // the connection was reset (see why())
inline constexpr int64_t kEof = -4;          // recv: the peer shut down sending, all read
inline constexpr int64_t kErrDevice = -5;    // the device failed (append_error() says how)
inline constexpr int64_t kErrNoSlot = -6;    // every connection slot is taken
inline constexpr int64_t kErrInUse = -7;     // listen: port already listened on (or table full)
inline constexpr int64_t kErrPipe = -8;      // send: the peer shut down receiving
inline constexpr int64_t kErrProtocol = -9;  // connect: the peer answered neither RESPONSE nor RST
inline constexpr int64_t kErrMisuse = -10;   // a bad handle or a call in the wrong state
const char* err_text(int64_t e);

inline constexpr uint64_t kForever = ~0ull;

class Device {
 public:
  enum class Open { kOk, kNoDevice, kFailed };
  // Finds the first usable virtio-vsock device among the command line's
  // virtio_mmio.device= windows (a legacy version 1 one is reported and skipped) and
  // brings it to DRIVER_OK with every receive and event buffer posted. kFailed: the
  // device refused the setup or reports a reserved CID (FAILED is set; append_error()
  // says why).
  Open open();

  uint64_t cid() const { return cid_; }
  bool dead() const { return dead_; }
  // "virtio-vsock at 0xBASE: WHAT[ 0xVALUE]" for the failure that stopped the driver.
  Line& append_error(Line& l) const;
  // "virtio-vsock at 0xBASE irq=N cid=C features=0x.. rx_buffers=R tx_slots=T".
  Line& append_description(Line& l) const;

  // Seconds -> TSC ticks (for the timeouts below); kForever stays kForever.
  uint64_t ticks(uint64_t seconds) const { return seconds == kForever ? kForever : seconds * tsc_hz_; }
  uint64_t tsc_hz() const { return tsc_hz_; }

  // Processes whatever the device completed: transmit completions, received packets
  // (answers queued: RESPONSE, RST, CREDIT_UPDATE), events, queued control packets,
  // lingering closes past their deadline, and every 100 ms the Status register. Never
  // waits. False once the driver is dead.
  bool poll();

  // ------------------------------------------------------------- the sockets
  // REQUESTs to `port` are answered with RESPONSE (a new connection for accept())
  // while a slot is free, with RST otherwise. kErrInUse: already listening or
  // kMaxListeners listeners.
  int64_t listen(uint32_t port);
  // The oldest connection not accepted yet: its handle, or kErrTimeout after `timeout`
  // ticks (0: just look; kForever: wait for good), or kErrDevice.
  int64_t accept(uint64_t timeout);
  // REQUEST to (cid, port) from a fresh local port; waits `timeout` ticks for the
  // answer: the handle on RESPONSE, kErrRefused on RST, kErrProtocol on anything else,
  // kErrTimeout (an RST is sent and the slot freed), kErrNoSlot, kErrDevice.
  int64_t connect(uint64_t cid, uint32_t port, uint64_t timeout);

  // Never waits: queues what the peer's credit and the free transmit slots allow
  // (packets of at most kPayloadMax) and returns that count (0: nothing now; out of
  // credit a CREDIT_REQUEST goes out, at most once a second), or kErrReset, kErrPipe,
  // kErrDevice, kErrMisuse.
  int64_t send(int64_t c, const uint8_t* p, size_t n);
  // Never waits: copies up to n buffered bytes out (a CREDIT_UPDATE goes out once the
  // application consumed half the buffer since the peer last heard our fwd_cnt); 0 when
  // nothing is buffered yet; kEof once the peer shut down sending (or closed) and
  // everything was read; kErrReset; kErrDevice; kErrMisuse.
  int64_t recv(int64_t c, uint8_t* p, size_t n);
  // Waiting forms: all n bytes within `timeout` ticks of no progress (n, or the error
  // with *done bytes sent); at least one byte within `timeout` (as recv()).
  int64_t send_all(int64_t c, const uint8_t* p, size_t n, uint64_t timeout);
  int64_t recv_wait(int64_t c, uint8_t* p, size_t n, uint64_t timeout);
  // Bytes buffered and not read yet; what the peer's credit allows us to send now.
  uint32_t buffered(int64_t c) const;
  uint32_t credit(int64_t c) const;

  // Ends the connection and gives the handle back (never waits): RST if it is not
  // established, was reset, or the peer already shut down both ways (as Linux does);
  // otherwise SHUTDOWN(RCV|SEND), and poll() frees the slot when the peer answers RST
  // or SHUTDOWN, or sends RST itself after `linger` ticks.
  void close(int64_t c, uint64_t linger);
  // RST now, slot freed.
  void abort(int64_t c);
  // Waits (at most `timeout` ticks) until every queued packet went out and the device
  // completed it, and lingering closes are over: call before exit.
  void drain(uint64_t timeout);

  uint64_t peer_cid(int64_t c) const { return valid(c) ? conns_[c].peer_cid : 0; }
  uint32_t peer_port(int64_t c) const { return valid(c) ? conns_[c].peer_port : 0; }
  uint32_t local_port(int64_t c) const { return valid(c) ? conns_[c].local_port : 0; }
  // Why connection c was reset ("connection reset by the peer (RST)", ...).
  const char* why(int64_t c) const { return valid(c) && conns_[c].why != nullptr ? conns_[c].why : "?"; }

  // Counters: packets the driver dropped (malformed, not for us, overrun), RSTs sent,
  // control packets lost because their queue was full, QueueNotify writes.
  uint64_t rx_packets() const { return rx_packets_; }
  uint64_t tx_packets() const { return tx_packets_; }
  uint64_t rx_dropped() const { return rx_dropped_; }
  uint64_t rst_sent() const { return rst_sent_; }
  uint64_t ctl_lost() const { return ctl_lost_; }
  uint64_t notifies() const { return rxq_.notifies() + txq_.notifies() + evq_.notifies(); }

  // A bounded wait: poll() until done() holds (0), the device dies (kErrDevice) or
  // `timeout` ticks pass (kErrTimeout).
  template <class F>
  int64_t wait(F done, uint64_t timeout) {
    const uint64_t start = rdtsc();
    for (;;) {
      if (!poll()) return kErrDevice;
      if (done()) return 0;
      if (timeout != kForever && rdtsc() - start > timeout) return kErrTimeout;
      for (int i = 0; i < 32; ++i) cpu_relax();
    }
  }

 private:
  enum State : uint8_t { kFree = 0, kConnecting, kEstablished, kClosing };
  struct Conn {
    State state;
    bool accepted;        // handed to the application (connect() or accept())
    bool reset;           // RST received or sent: no more traffic
    bool rst_sent;        // we answered the peer's full SHUTDOWN with RST already
    bool credit_due;      // a CREDIT_UPDATE should go out
    uint8_t peer_shutdown;  // kShutdownRcv | kShutdownSend the peer announced
    const char* why;
    uint64_t peer_cid;
    uint32_t peer_port, local_port;
    uint64_t seq;         // accept() order
    // receive side: a ring of kBufAlloc bytes in private memory
    uint8_t* rbuf;
    uint32_t rhead, rlen;
    uint32_t fwd_cnt, last_fwd_sent;
    // transmit side
    uint32_t tx_cnt, peer_buf_alloc, peer_fwd_cnt;
    uint64_t credit_req_at;
    uint64_t deadline;    // kClosing: RST and free at this TSC
  };
  // A control packet waiting for a transmit slot.
  struct Ctl {
    uint16_t op;
    uint32_t flags;
    uint32_t src_port;
    uint64_t dst_cid;
    uint32_t dst_port;
  };
  static constexpr uint32_t kCtlRing = 32;
  static constexpr uint32_t kMaxRx = 16, kMaxTxSlots = 16, kMaxEvents = 4;

  bool valid(int64_t c) const { return c >= 0 && c < static_cast<int64_t>(kMaxConns) && conns_[c].state != kFree; }
  bool setup();
  bool fail(const char* what, uint64_t value = ~0ull);
  bool setup_failed(const char* what, uint64_t value = ~0ull);
  void check_status(uint64_t now);
  void reclaim_tx();
  bool rx_one(uint16_t id, uint32_t used_len);
  void handle(const Hdr& h, uint64_t payload);
  void handle_event(uint32_t id);
  void transport_reset();
  Conn* find(uint32_t local_port, uint64_t peer_cid, uint32_t peer_port);
  bool port_in_use(uint32_t port) const;
  bool listening(uint32_t port) const;
  int64_t new_conn();
  void free_conn(Conn& c);
  void mark_reset(Conn& c, const char* why);
  // Queues a control packet (sent in order, before any later data); false if the
  // queue is full (counted in ctl_lost).
  bool queue_ctl(uint16_t op, uint32_t flags, uint32_t src_port, uint64_t dst_cid, uint32_t dst_port);
  bool queue_ctl(const Conn& c, uint16_t op, uint32_t flags = 0) {
    return queue_ctl(op, flags, c.local_port, c.peer_cid, c.peer_port);
  }
  void flush_ctl();
  // A free transmit slot (reclaiming completions first), or -1.
  int take_slot();
  // Writes a packet into slot s and pushes it (the caller publishes).
  void put_packet(int s, const Hdr& h, const uint8_t* payload);
  Hdr header(uint16_t op, uint32_t flags, uint32_t src_port, uint64_t dst_cid, uint32_t dst_port, uint32_t len);
  void copy_in(Conn& c, uint64_t src, uint32_t n);
  void consumed(Conn& c, uint32_t n);
  uint32_t credit_of(const Conn& c) const;

  // Everything starts zero, so a constinit Device lives in .bss.
  virtio::MmioDevice dev_;
  virtio::SplitQueue rxq_, txq_, evq_;
  uint64_t base_ = 0;
  uint32_t irq_ = 0;
  uint64_t features_ = 0;
  uint64_t cid_ = 0;
  uint64_t tsc_hz_ = 0;
  uint64_t next_check_ = 0;
  bool dead_ = false;
  const char* err_what_ = "";
  uint64_t err_value_ = ~0ull;

  uint16_t rx_n_ = 0, tx_slots_ = 0, ev_n_ = 0;
  uint64_t rx_bufs_ = 0, tx_bufs_ = 0, ev_bufs_ = 0;  // shared (alloc_io)
  bool rx_posted_[kMaxRx] = {};
  bool ev_posted_[kMaxEvents] = {};
  bool tx_busy_[kMaxTxSlots] = {};
  uint16_t tx_free_[kMaxTxSlots] = {};
  uint16_t tx_nfree_ = 0;

  Ctl ctl_[kCtlRing] = {};
  uint32_t ctl_head_ = 0, ctl_n_ = 0;

  Conn conns_[kMaxConns] = {};
  uint32_t listeners_[kMaxListeners] = {};
  uint32_t nlisteners_ = 0;
  uint64_t next_seq_ = 0;
  uint32_t next_port_ = 0;

  uint64_t rx_packets_ = 0, tx_packets_ = 0, rx_dropped_ = 0, rst_sent_ = 0, ctl_lost_ = 0;
};

// For programs: "PROG error: virtio-vsock at 0x...: WHAT", exit 1.
[[noreturn]] void exit_with_error(const Device& dev, const char* prog);
// Opens `dev` for program `prog`: "PROG no vsock device" and exit 2 without one;
// exit_with_error() if the device refuses.
void open_or_exit(Device& dev, const char* prog);

}  // namespace az::vsock
