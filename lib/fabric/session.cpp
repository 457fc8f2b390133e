#include "fabric/session.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <time.h>

#include <cstring>

namespace azote::fabric {
namespace {

constexpr char kHkdfSalt[] = "azote-fabric-v1";
constexpr char kHkdfInfo[] = "azote fabric key";

void put32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// One direction's AEAD: an EVP context keyed once; each packet only sets the nonce.
class Aead {
 public:
  Aead() = default;
  ~Aead() { EVP_CIPHER_CTX_free(ctx_); }  // frees and cleanses the key schedule
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;

  bool init(const DirectionKey& k, bool encrypt) {
    ctx_ = EVP_CIPHER_CTX_new();
    if (ctx_ == nullptr) return false;
    std::memcpy(salt_.data(), k.salt.data(), kSaltLen);
    return (encrypt ? EVP_EncryptInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, k.key.data(), nullptr)
                    : EVP_DecryptInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, k.key.data(), nullptr)) == 1;
  }
  // out: ciphertext then tag (in.size() + 16 bytes).
  bool seal(uint64_t seq, std::span<const uint8_t> aad, std::span<const uint8_t> in, uint8_t* out) {
    std::array<uint8_t, 12> iv;
    nonce(seq, iv);
    int n = 0, m = 0;
    if (EVP_EncryptInit_ex(ctx_, nullptr, nullptr, nullptr, iv.data()) != 1) return false;
    if (EVP_EncryptUpdate(ctx_, nullptr, &n, aad.data(), static_cast<int>(aad.size())) != 1) return false;
    if (EVP_EncryptUpdate(ctx_, out, &n, in.data(), static_cast<int>(in.size())) != 1) return false;
    if (EVP_EncryptFinal_ex(ctx_, out + n, &m) != 1) return false;
    return EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagLen), out + in.size()) == 1;
  }
  // in: ciphertext then tag; out: in.size() - 16 bytes. false: the tag does not verify.
  bool open(uint64_t seq, std::span<const uint8_t> aad, std::span<const uint8_t> in, uint8_t* out) {
    std::array<uint8_t, 12> iv;
    nonce(seq, iv);
    const size_t len = in.size() - kTagLen;
    std::array<uint8_t, kTagLen> tag;
    std::memcpy(tag.data(), in.data() + len, kTagLen);
    int n = 0, m = 0;
    if (EVP_DecryptInit_ex(ctx_, nullptr, nullptr, nullptr, iv.data()) != 1) return false;
    if (EVP_DecryptUpdate(ctx_, nullptr, &n, aad.data(), static_cast<int>(aad.size())) != 1) return false;
    if (EVP_DecryptUpdate(ctx_, out, &n, in.data(), static_cast<int>(len)) != 1) return false;
    if (EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagLen), tag.data()) != 1) return false;
    return EVP_DecryptFinal_ex(ctx_, out + n, &m) == 1;
  }

 private:
  void nonce(uint64_t seq, std::array<uint8_t, 12>& iv) const {
    std::memcpy(iv.data(), salt_.data(), kSaltLen);
    put32(iv.data() + 4, static_cast<uint32_t>(seq >> 32));
    put32(iv.data() + 8, static_cast<uint32_t>(seq));
  }
  EVP_CIPHER_CTX* ctx_ = nullptr;
  std::array<uint8_t, kSaltLen> salt_{};
};

}  // namespace

const char* to_string(Cipher c) { return c == Cipher::kNone ? "none" : "aes-256-gcm"; }

std::optional<Cipher> parse_cipher(const std::string& s) {
  if (s == "aes-256-gcm") return Cipher::kAes256Gcm;
  if (s == "none") return Cipher::kNone;
  return std::nullopt;
}

uint64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  const uint64_t ns = static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
  return ns == 0 ? 1 : ns;
}

Result<DirectionKey, FabricError> derive_key(const Secret& secret, HostId sender, HostId receiver, uint32_t key_id) {
  std::array<uint8_t, sizeof kHkdfInfo - 1 + 12> info;
  std::memcpy(info.data(), kHkdfInfo, sizeof kHkdfInfo - 1);
  put32(info.data() + sizeof kHkdfInfo - 1, sender);
  put32(info.data() + sizeof kHkdfInfo + 3, receiver);
  put32(info.data() + sizeof kHkdfInfo + 7, key_id);
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) return make_error(FabricErrc::kCipher, "HKDF: EVP_KDF_fetch");
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (ctx == nullptr) return make_error(FabricErrc::kCipher, "HKDF: EVP_KDF_CTX_new");
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(kHkdfSalt), sizeof kHkdfSalt - 1),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end()};
  std::array<uint8_t, kKeyLen + kSaltLen> okm{};
  const int ok = EVP_KDF_derive(ctx, okm.data(), okm.size(), params);
  EVP_KDF_CTX_free(ctx);
  if (ok != 1) return make_error(FabricErrc::kCipher, "HKDF: EVP_KDF_derive");
  DirectionKey k;
  std::memcpy(k.key.data(), okm.data(), kKeyLen);
  std::memcpy(k.salt.data(), okm.data() + kKeyLen, kSaltLen);
  OPENSSL_cleanse(okm.data(), okm.size());
  return k;
}

// ---- Session

struct Session::Slot {
  uint32_t key_id = 0;
  Cipher cipher = Cipher::kAes256Gcm;
  Secret secret{};  // kept to recognise a repeated set_peer; wiped on destruction
  Aead tx, rx;
  // Sending: under Peer::tx_mu.
  uint64_t first_seq = 1, next_seq = 1;
  // Receiving: under Peer::rx_mu.
  ReplayWindow window;
  rate_limit::Nanos expires = rate_limit::Nanos::max();
  ~Slot() { OPENSSL_cleanse(secret.data(), secret.size()); }
};

struct Session::Peer {
  HostId host = 0;
  std::mutex tx_mu, rx_mu;  // taken in this order when both are needed
  std::unique_ptr<Slot> current, previous;
  PeerCounters counters;
};

Session::Session(HostId self, const rate_limit::Clock& clock, SessionConfig config)
    : self_(self), clock_(clock), config_(std::move(config)) {}

Session::~Session() = default;

Result<std::unique_ptr<Session::Slot>, FabricError> Session::make_slot(HostId peer, const PeerKey& key) const {
  auto s = std::make_unique<Slot>();
  s->key_id = key.key_id;
  s->cipher = key.cipher;
  s->secret = key.secret;
  if (key.cipher == Cipher::kAes256Gcm) {
    AZOTE_TRY(out, derive_key(key.secret, self_, peer, key.key_id));
    AZOTE_TRY(in, derive_key(key.secret, peer, self_, key.key_id));
    const bool ok = s->tx.init(out, true) && s->rx.init(in, false);
    OPENSSL_cleanse(out.key.data(), out.key.size());
    OPENSSL_cleanse(in.key.data(), in.key.size());
    if (!ok) return make_error(FabricErrc::kCipher, "AES-256-GCM: EVP_CIPHER_CTX setup");
  }
  const uint64_t first = config_.initial_seq ? config_.initial_seq() : realtime_ns();
  s->first_seq = s->next_seq = first == 0 ? 1 : first;
  return s;
}

Result<void, FabricError> Session::set_peer(HostId host, const PeerKey& key) {
  if (host == 0 || host == 0xffffffffu) return make_error(FabricErrc::kBadConfig, "host id 0 and 0xffffffff are reserved");
  if (host == self_) return make_error(FabricErrc::kBadConfig, "host " + std::to_string(host) + " is this host");
  {
    std::shared_lock lock(mu_);
    if (auto it = peers_.find(host); it != peers_.end()) {
      Peer& p = *it->second;
      std::lock_guard tl(p.tx_mu);
      const Slot& c = *p.current;
      if (c.key_id == key.key_id) {
        if (c.cipher == key.cipher && (key.cipher == Cipher::kNone || c.secret == key.secret)) return {};
        return make_error(FabricErrc::kBadConfig, "peer " + std::to_string(host) + ": key id " +
                                                      std::to_string(key.key_id) +
                                                      " is in use with another key or cipher (rotate to a new key id)");
      }
    }
  }
  if (has_peer(host)) return rotate(host, key);
  AZOTE_TRY(slot, make_slot(host, key));
  auto p = std::make_unique<Peer>();
  p->host = host;
  p->current = std::move(slot);
  std::unique_lock lock(mu_);
  if (peers_.count(host) != 0) return make_error(FabricErrc::kBadConfig, "peer " + std::to_string(host) + " was added meanwhile");
  peers_[host] = std::move(p);
  return {};
}

Result<void, FabricError> Session::rotate(HostId host, const PeerKey& key) {
  AZOTE_TRY(slot, make_slot(host, key));
  std::shared_lock lock(mu_);
  auto it = peers_.find(host);
  if (it == peers_.end()) return make_error(FabricErrc::kUnknownPeer, "no peer " + std::to_string(host));
  Peer& p = *it->second;
  std::lock_guard tl(p.tx_mu);
  std::lock_guard rl(p.rx_mu);
  if (p.current->key_id == key.key_id || (p.previous && p.previous->key_id == key.key_id))
    return make_error(FabricErrc::kBadConfig, "peer " + std::to_string(host) + ": key id " + std::to_string(key.key_id) +
                                                  " is the current or previous one; a rotation needs a new key id");
  p.previous = std::move(p.current);
  p.previous->expires = clock_.now() + config_.grace;
  p.current = std::move(slot);
  return {};
}

Result<void, FabricError> Session::remove_peer(HostId host) {
  std::unique_lock lock(mu_);
  if (peers_.erase(host) == 0) return make_error(FabricErrc::kUnknownPeer, "no peer " + std::to_string(host));
  return {};
}

bool Session::has_peer(HostId host) const {
  std::shared_lock lock(mu_);
  return peers_.count(host) != 0;
}

void Session::expire() {
  const auto now = clock_.now();
  std::shared_lock lock(mu_);
  for (auto& [h, p] : peers_) {
    std::lock_guard rl(p->rx_mu);
    if (p->previous && now >= p->previous->expires) p->previous.reset();
  }
}

Unexpected<FabricError> Session::refuse(Peer* p, FabricErrc c, const char* what) {
  if (p != nullptr) p->counters.count(c);
  else unattributed_[static_cast<size_t>(c)].fetch_add(1, std::memory_order_relaxed);
  return make_error(c, what);
}

Result<size_t, FabricError> Session::seal(HostId to, uint32_t vni, std::span<const uint8_t> inner,
                                          std::span<uint8_t> out) {
  std::shared_lock lock(mu_);
  auto it = peers_.find(to);
  if (it == peers_.end()) return refuse(nullptr, FabricErrc::kUnknownPeer, "seal: no such peer");
  Peer& p = *it->second;
  std::lock_guard tl(p.tx_mu);
  Slot& s = *p.current;
  const bool sealed = s.cipher == Cipher::kAes256Gcm;
  const size_t total = kFabricHeaderLen + inner.size() + (sealed ? kTagLen : 0);
  if (out.size() < total || inner.size() > (size_t{1} << 30)) return refuse(&p, FabricErrc::kNoSpace, "seal: output too small");
  if (s.next_seq - s.first_seq >= config_.max_packets_per_key || s.next_seq == UINT64_MAX)
    return refuse(&p, FabricErrc::kSeqExhausted, "seal: the key's packet quota is used up; rotate it");
  const uint64_t seq = s.next_seq;
  auto h = build_fabric_header(out, vni, SecurityOption{sealed, self_, s.key_id, seq});
  if (!h) return refuse(&p, h.error().code, "seal: header");
  if (sealed) {
    if (!s.tx.seal(seq, out.subspan(0, kFabricHeaderLen), inner, out.data() + kFabricHeaderLen))
      return refuse(&p, FabricErrc::kCipher, "seal: AES-256-GCM failed");
  } else {
    std::memmove(out.data() + kFabricHeaderLen, inner.data(), inner.size());
  }
  ++s.next_seq;  // consumed even if the datagram is never sent: never reused
  p.counters.tx_packets.fetch_add(1, std::memory_order_relaxed);
  p.counters.tx_bytes.fetch_add(inner.size(), std::memory_order_relaxed);
  return total;
}

Result<Opened, FabricError> Session::open(std::span<const uint8_t> packet, std::span<uint8_t> out) {
  auto v = parse_geneve(packet);
  if (!v) return refuse(nullptr, v.error().code, "open: geneve");
  if (v->oam) return refuse(nullptr, FabricErrc::kOam, "open: OAM packet");
  auto o = find_security_option(*v);
  if (!o) return refuse(nullptr, o.error().code, "open: security option");
  std::shared_lock lock(mu_);
  auto it = peers_.find(o->sender);
  if (it == peers_.end()) return refuse(nullptr, FabricErrc::kUnknownPeer, "open: unknown sender host id");
  Peer& p = *it->second;
  std::lock_guard rl(p.rx_mu);
  Slot* s = nullptr;
  if (p.current->key_id == o->key_id) s = p.current.get();
  else if (p.previous && p.previous->key_id == o->key_id && clock_.now() < p.previous->expires) s = p.previous.get();
  if (s == nullptr) return refuse(&p, FabricErrc::kUnknownKey, "open: key id neither current nor in grace");
  const bool want_sealed = s->cipher == Cipher::kAes256Gcm;
  if (o->sealed != want_sealed) return refuse(&p, FabricErrc::kPlaintextRefused, "open: cipher mismatch");
  if (want_sealed && v->payload.size() < kTagLen) return refuse(&p, FabricErrc::kTruncated, "open: no room for the tag");
  const size_t len = v->payload.size() - (want_sealed ? kTagLen : 0);
  if (out.size() < len) return refuse(&p, FabricErrc::kNoSpace, "open: output too small");
  if (const FabricErrc r = s->window.check(o->seq); r != FabricErrc{}) return refuse(&p, r, "open: replay window");
  if (want_sealed) {
    if (!s->rx.open(o->seq, v->header, v->payload, out.data())) return refuse(&p, FabricErrc::kAuth, "open: tag");
  } else {
    std::memmove(out.data(), v->payload.data(), len);
  }
  s->window.update(o->seq);
  p.counters.rx_packets.fetch_add(1, std::memory_order_relaxed);
  p.counters.rx_bytes.fetch_add(len, std::memory_order_relaxed);
  return Opened{o->sender, v->vni, o->key_id, len};
}

std::vector<PeerStatus> Session::status() const {
  const auto now = clock_.now();
  std::vector<PeerStatus> out;
  std::shared_lock lock(mu_);
  for (const auto& [h, p] : peers_) {
    std::lock_guard tl(p->tx_mu);
    std::lock_guard rl(p->rx_mu);
    PeerStatus s;
    s.host = h;
    s.cipher = p->current->cipher;
    s.key_id = p->current->key_id;
    if (p->previous && now < p->previous->expires) {
      s.previous_key_id = p->previous->key_id;
      s.previous_remaining = p->previous->expires - now;
    }
    s.sealed = p->current->next_seq - p->current->first_seq;
    s.remaining = config_.max_packets_per_key > s.sealed ? config_.max_packets_per_key - s.sealed : 0;
    s.tx_packets = p->counters.tx_packets.load();
    s.tx_bytes = p->counters.tx_bytes.load();
    s.rx_packets = p->counters.rx_packets.load();
    s.rx_bytes = p->counters.rx_bytes.load();
    for (size_t i = 0; i < kFabricErrcCount; ++i) s.errors[i] = p->counters.errors[i].load();
    out.push_back(s);
  }
  return out;
}

}  // namespace azote::fabric
