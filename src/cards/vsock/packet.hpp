// The virtio-vsock packet as it crosses the card (virtio 1.2 §5.10.6): a 44-byte
// little-endian header, then `len` payload bytes. The card reads headers only from its
// own copy of a packet (never from guest memory) and writes them back byte by byte, so
// the layout is spelled out here instead of overlaying a packed struct.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace azote::card_vsock {

// struct virtio_vsock_hdr (§5.10.6): src_cid le64, dst_cid le64, src_port le32,
// dst_port le32, len le32, type le16, op le16, flags le32, buf_alloc le32, fwd_cnt le32.
inline constexpr size_t kHeaderBytes = 44;
inline constexpr size_t kOffSrcCid = 0;
inline constexpr size_t kOffDstCid = 8;
inline constexpr size_t kOffSrcPort = 16;
inline constexpr size_t kOffDstPort = 20;
inline constexpr size_t kOffLen = 24;
inline constexpr size_t kOffType = 28;
inline constexpr size_t kOffOp = 30;
inline constexpr size_t kOffFlags = 32;
inline constexpr size_t kOffBufAlloc = 36;
inline constexpr size_t kOffFwdCnt = 40;

// The largest payload one packet may carry: Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE, the
// most its transport puts in one packet.
inline constexpr uint32_t kMaxPayload = 64 * 1024;

inline constexpr uint16_t kTypeStream = 1;     // VIRTIO_VSOCK_TYPE_STREAM
inline constexpr uint16_t kTypeSeqpacket = 2;  // VIRTIO_VSOCK_TYPE_SEQPACKET (not offered)

enum Op : uint16_t {
  kOpInvalid = 0,
  kOpRequest = 1,
  kOpResponse = 2,
  kOpRst = 3,
  kOpShutdown = 4,
  kOpRw = 5,
  kOpCreditUpdate = 6,
  kOpCreditRequest = 7,
};
inline constexpr uint32_t kShutdownRcv = 1;   // VIRTIO_VSOCK_SHUTDOWN_RCV
inline constexpr uint32_t kShutdownSend = 2;  // VIRTIO_VSOCK_SHUTDOWN_SEND
inline constexpr uint32_t kShutdownBoth = kShutdownRcv | kShutdownSend;

// Well-known CIDs (ENCLAVES.md §6).
inline constexpr uint64_t kCidHypervisor = 0;
inline constexpr uint64_t kCidLocal = 1;
inline constexpr uint64_t kCidHost = 2;
inline constexpr uint64_t kCidParent = 3;

// The header, decoded from (or to be encoded into) 44 bytes.
struct Header {
  uint64_t src_cid = 0;
  uint64_t dst_cid = 0;
  uint32_t src_port = 0;
  uint32_t dst_port = 0;
  uint32_t len = 0;
  uint16_t type = 0;
  uint16_t op = 0;
  uint32_t flags = 0;
  uint32_t buf_alloc = 0;
  uint32_t fwd_cnt = 0;

  bool operator==(const Header&) const = default;
};

inline uint64_t load_le(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = n; i > 0; --i) v = (v << 8) | p[i - 1];
  return v;
}
inline void store_le(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// `bytes` must hold at least kHeaderBytes (the caller's private copy).
inline Header decode_header(std::span<const uint8_t> bytes) {
  const uint8_t* p = bytes.data();
  Header h;
  h.src_cid = load_le(p + kOffSrcCid, 8);
  h.dst_cid = load_le(p + kOffDstCid, 8);
  h.src_port = static_cast<uint32_t>(load_le(p + kOffSrcPort, 4));
  h.dst_port = static_cast<uint32_t>(load_le(p + kOffDstPort, 4));
  h.len = static_cast<uint32_t>(load_le(p + kOffLen, 4));
  h.type = static_cast<uint16_t>(load_le(p + kOffType, 2));
  h.op = static_cast<uint16_t>(load_le(p + kOffOp, 2));
  h.flags = static_cast<uint32_t>(load_le(p + kOffFlags, 4));
  h.buf_alloc = static_cast<uint32_t>(load_le(p + kOffBufAlloc, 4));
  h.fwd_cnt = static_cast<uint32_t>(load_le(p + kOffFwdCnt, 4));
  return h;
}

inline std::array<uint8_t, kHeaderBytes> encode_header(const Header& h) {
  std::array<uint8_t, kHeaderBytes> b{};
  store_le(b.data() + kOffSrcCid, h.src_cid, 8);
  store_le(b.data() + kOffDstCid, h.dst_cid, 8);
  store_le(b.data() + kOffSrcPort, h.src_port, 4);
  store_le(b.data() + kOffDstPort, h.dst_port, 4);
  store_le(b.data() + kOffLen, h.len, 4);
  store_le(b.data() + kOffType, h.type, 2);
  store_le(b.data() + kOffOp, h.op, 2);
  store_le(b.data() + kOffFlags, h.flags, 4);
  store_le(b.data() + kOffBufAlloc, h.buf_alloc, 4);
  store_le(b.data() + kOffFwdCnt, h.fwd_cnt, 4);
  return b;
}

// The RST the card sends in place of a peer: from (src_cid, src_port) to (dst_cid,
// dst_port), no payload, no credit (buf_alloc and fwd_cnt 0, as Linux's reply to a
// packet for no socket).
inline Header rst_header(uint64_t src_cid, uint32_t src_port, uint64_t dst_cid, uint32_t dst_port) {
  Header h;
  h.src_cid = src_cid;
  h.dst_cid = dst_cid;
  h.src_port = src_port;
  h.dst_port = dst_port;
  h.type = kTypeStream;
  h.op = kOpRst;
  return h;
}

}  // namespace azote::card_vsock
