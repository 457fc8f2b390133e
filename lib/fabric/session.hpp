// The fabric's crypto state of one host: its peers, their keys, sealing and opening.
//
// Keys. Each pair of hosts shares a 32-byte secret per key id, given to both cards by
// the controller. A card never encrypts with the secret itself: every direction has
// its own AES-256-GCM key and 4-byte nonce salt, HKDF-SHA256(secret, salt
// "azote-fabric-v1", info "azote fabric key" | sender host id | receiver host id |
// key id), so the two directions of a pair, and two key ids, never share a key.
// The 96-bit nonce is salt | sequence number (64 bits, big-endian). A sending key's
// sequence starts at SessionConfig::initial_seq() (by default CLOCK_REALTIME in ns, so a
// restarted card starts above every number it sent before) and only grows; after
// max_packets_per_key packets, seal() refuses (kSeqExhausted) until the key is
// rotated: a (key, nonce) pair is never used twice.
//
// Rotation. A peer holds its current key and, for `grace` after a rotation, the
// previous one. seal() uses the current key at once; open() accepts either key id
// (the previous one only until its grace ends, by the injected clock). Each key id has
// its own replay window (replay.hpp), updated only after the tag verifies.
//
// Cipher "none" exists only to measure what encryption costs: such a peer's packets
// carry the same header with a plaintext payload (option type 2), and open() accepts
// plaintext only for a key configured "none" — never from a peer with a cipher.
//
// Threads: seal() may run on many threads at once (each peer's sending state is under
// its own lock), open() on others; the peer table is read under a shared lock. One
// OpenSSL context per key and direction, keyed once; no allocation per packet.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "base/result.hpp"
#include "fabric/error.hpp"
#include "fabric/geneve.hpp"
#include "fabric/replay.hpp"
#include "rate_limit/clock.hpp"

namespace azote::fabric {

using HostId = uint32_t;  // 1 .. 0xfffffffe
inline constexpr size_t kSecretLen = 32;
using Secret = std::array<uint8_t, kSecretLen>;
inline constexpr size_t kKeyLen = 32;
inline constexpr size_t kSaltLen = 4;
// Bytes a sealed packet adds to the inner frame (before UDP and IP).
inline constexpr size_t kOverhead = kFabricHeaderLen + kTagLen;  // 44

enum class Cipher : uint8_t { kAes256Gcm, kNone };
const char* to_string(Cipher c);
std::optional<Cipher> parse_cipher(const std::string& s);  // "aes-256-gcm" | "none"

struct PeerKey {
  uint32_t key_id = 0;
  Cipher cipher = Cipher::kAes256Gcm;
  Secret secret{};  // unused for kNone
};

// One direction's AES key and nonce salt (exposed for tests).
struct DirectionKey {
  std::array<uint8_t, kKeyLen> key{};
  std::array<uint8_t, kSaltLen> salt{};
};
Result<DirectionKey, FabricError> derive_key(const Secret& secret, HostId sender, HostId receiver, uint32_t key_id);

uint64_t realtime_ns();

struct SessionConfig {
  std::chrono::nanoseconds grace = std::chrono::seconds(30);
  uint64_t max_packets_per_key = uint64_t{1} << 32;
  std::function<uint64_t()> initial_seq = realtime_ns;
};

struct PeerCounters {
  std::atomic<uint64_t> tx_packets{0}, tx_bytes{0}, rx_packets{0}, rx_bytes{0};
  std::array<std::atomic<uint64_t>, kFabricErrcCount> errors{};
  void count(FabricErrc c) { errors[static_cast<size_t>(c)].fetch_add(1, std::memory_order_relaxed); }
  uint64_t errors_of(FabricErrc c) const { return errors[static_cast<size_t>(c)].load(std::memory_order_relaxed); }
};

struct PeerStatus {
  HostId host = 0;
  Cipher cipher = Cipher::kAes256Gcm;
  uint32_t key_id = 0;
  std::optional<uint32_t> previous_key_id;
  std::chrono::nanoseconds previous_remaining{0};  // grace left
  uint64_t sealed = 0;     // packets sealed with the current key
  uint64_t remaining = 0;  // before the current key is exhausted
  uint64_t tx_packets = 0, tx_bytes = 0, rx_packets = 0, rx_bytes = 0;
  std::array<uint64_t, kFabricErrcCount> errors{};
};

struct Opened {
  HostId from = 0;
  uint32_t vni = 0;
  uint32_t key_id = 0;
  size_t len = 0;  // of the inner frame, at the start of the output buffer
};

class Session {
 public:
  // `clock` (monotonic, for the grace period) must outlive the session.
  Session(HostId self, const rate_limit::Clock& clock, SessionConfig config = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  HostId self() const { return self_; }

  // A new peer; or for a known one: the same key id and key changes nothing, a new key
  // id is a rotation (below), the same key id with another key or cipher is refused.
  Result<void, FabricError> set_peer(HostId host, const PeerKey& key);
  // The new key is current at once; the current one becomes the previous for `grace`
  // (a previous one still in grace is forgotten). The key id must differ from both.
  Result<void, FabricError> rotate(HostId host, const PeerKey& key);
  Result<void, FabricError> remove_peer(HostId host);
  bool has_peer(HostId host) const;
  // Forgets previous keys whose grace has ended (open() already refuses them).
  void expire();

  // Header + ciphertext + tag of `inner` for `to` into `out`; returns the length
  // (inner + kOverhead, or inner + kFabricHeaderLen in plaintext).
  Result<size_t, FabricError> seal(HostId to, uint32_t vni, std::span<const uint8_t> inner, std::span<uint8_t> out);
  // Parses, authenticates and decrypts a packet from the underlay into `out`. Every
  // refusal is counted: on the peer once it is known, else in unattributed().
  Result<Opened, FabricError> open(std::span<const uint8_t> packet, std::span<uint8_t> out);

  std::vector<PeerStatus> status() const;
  uint64_t unattributed(FabricErrc c) const { return unattributed_[static_cast<size_t>(c)].load(); }

 private:
  struct Slot;
  struct Peer;
  Result<std::unique_ptr<Slot>, FabricError> make_slot(HostId peer, const PeerKey& key) const;
  Unexpected<FabricError> refuse(Peer* p, FabricErrc c, const char* what);

  const HostId self_;
  const rate_limit::Clock& clock_;
  const SessionConfig config_;
  mutable std::shared_mutex mu_;
  std::map<HostId, std::unique_ptr<Peer>> peers_;
  std::array<std::atomic<uint64_t>, kFabricErrcCount> unattributed_{};
};

}  // namespace azote::fabric
