#include "tpm.hpp"

#include "rt.hpp"

namespace az::tpm {

namespace {

// CRB registers (TCG PC Client Platform TPM Profile), offsets from the locality 0 page.
constexpr uint32_t kLocState = 0x00;
constexpr uint32_t kLocCtrl = 0x08;
constexpr uint32_t kIntfId = 0x30;
constexpr uint32_t kCtrlReq = 0x40;
constexpr uint32_t kCtrlSts = 0x44;
constexpr uint32_t kCtrlCancel = 0x48;
constexpr uint32_t kCtrlStart = 0x4c;
constexpr uint32_t kCtrlCmdSize = 0x58;
constexpr uint32_t kCtrlCmdLaddr = 0x5c;
constexpr uint32_t kCtrlCmdHaddr = 0x60;
constexpr uint32_t kCtrlRspSize = 0x64;
constexpr uint32_t kCtrlRspAddr = 0x68;  // 64-bit
constexpr uint32_t kDataBuffer = 0x80;   // buffers may not overlap the registers

constexpr uint32_t kLocStateAssigned = 1u << 1;
constexpr uint32_t kLocStateActive = 7u << 2;
constexpr uint32_t kLocStateRegValid = 1u << 7;
constexpr uint32_t kLocCtrlRequest = 1;
constexpr uint32_t kLocCtrlRelinquish = 2;
constexpr uint32_t kIntfTypeCrb = 1;
constexpr uint32_t kReqCmdReady = 1;
constexpr uint32_t kReqGoIdle = 2;
constexpr uint32_t kStsFatal = 1;
constexpr uint32_t kStartInvoke = 1;

inline uint32_t mmio_rd32(uint64_t a) {
  uint32_t v;
  asm volatile("movl (%1), %0" : "=r"(v) : "r"(a) : "memory");
  return v;
}
inline void mmio_wr32(uint64_t a, uint32_t v) { asm volatile("movl %0, (%1)" : : "r"(v), "r"(a) : "memory"); }

uint8_t* be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
  return p + 2;
}
uint8_t* be32(uint8_t* p, uint32_t v) { return be16(be16(p, static_cast<uint16_t>(v >> 16)), static_cast<uint16_t>(v)); }
uint32_t get32(const uint8_t* p) { return uint32_t{p[0]} << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

// A big-endian reader whose failures stick: reads past the end return 0 (bytes():
// nullptr) and mark it bad, so a parser may check ok() once after several reads.
class Reader {
 public:
  Reader(const uint8_t* p, uint32_t n) : p_(p), n_(n) {}
  [[gnu::noinline]] const uint8_t* bytes(uint32_t k) {
    if (bad_ || k > n_ - off_) {
      bad_ = true;
      return nullptr;
    }
    off_ += k;
    return p_ + off_ - k;
  }
  [[gnu::noinline]] uint32_t be(uint32_t k) {
    uint32_t v = 0;
    if (const uint8_t* b = bytes(k))
      for (uint32_t i = 0; i < k; ++i) v = v << 8 | b[i];
    return v;
  }
  uint8_t u8() { return static_cast<uint8_t>(be(1)); }
  uint16_t u16() { return static_cast<uint16_t>(be(2)); }
  uint32_t u32() { return be(4); }
  bool ok() const { return !bad_; }
  bool at_end() const { return !bad_ && off_ == n_; }

 private:
  const uint8_t* p_;
  uint32_t n_, off_ = 0;
  bool bad_ = false;
};

// The response header of a successful TPM2_ST_NO_SESSIONS command.
const char* header_ok(Reader& rd, uint32_t n) {
  const uint16_t tag = rd.u16();
  const uint32_t size = rd.u32(), rc = rd.u32();
  if (!rd.ok() || size != n) return "size field differs from the response length";
  if (tag != kStNoSessions) return "tag is not TPM_ST_NO_SESSIONS";
  if (rc != 0) return "response code is not 0";
  return nullptr;
}

// TPMS_PCR_SELECTION: hash, sizeofSelect (1-8), the bitmap; PCRs >= 32 show up
// as PCR 31 (never asked for, never printed).
const char* selection(Reader& rd, uint16_t* hash, uint32_t* pcrs) {
  *hash = rd.u16();
  const uint8_t size = rd.u8();
  if (rd.ok() && (size == 0 || size > 8)) return "sizeofSelect is not 1-8";
  const uint8_t* bits = rd.bytes(size);
  if (bits == nullptr) return "truncated TPMS_PCR_SELECTION";
  *pcrs = 0;
  for (uint32_t i = 0; i < size && i < 4; ++i) *pcrs |= uint32_t{bits[i]} << (8 * i);
  for (uint32_t i = 4; i < size; ++i)
    if (bits[i] != 0) *pcrs |= 1u << 31;
  return nullptr;
}

uint32_t popcount(uint32_t v) {
  uint32_t n = 0;
  for (; v != 0; v &= v - 1) ++n;
  return n;
}

}  // namespace

// ---------------------------------------------------------------------- Crb
uint32_t Crb::rd(uint32_t reg) const { return mmio_rd32(base_ + reg); }
void Crb::wr(uint32_t reg, uint32_t v) const { mmio_wr32(base_ + reg, v); }

bool Crb::wait(uint32_t reg, uint32_t mask, uint32_t want, uint64_t ms) const {
  const uint64_t start = rdtsc(), ticks = hz_ / 1000 * ms;
  for (;;) {
    const bool expired = rdtsc() - start > ticks;  // read before the register: one last look
    if ((rd(reg) & mask) == want) return true;
    if (expired) return false;
    cpu_relax();
  }
}

bool Crb::cmd_ready() {
  wr(kCtrlReq, kReqCmdReady);
  ready_ = wait(kCtrlReq, kReqCmdReady, 0, 1000);
  return ready_;
}

void Crb::go_idle() {
  wr(kCtrlReq, kReqGoIdle);
  (void)wait(kCtrlReq, kReqGoIdle, 0, 1000);
  ready_ = false;
}

Crb::Open Crb::open(uint64_t base, const char** why) {
  base_ = base;
  hz_ = tsc_hz();
  if (hz_ == 0) hz_ = 3000000000ull;  // unknown: timeouts only get longer
  intf_id_ = rd(kIntfId);
  if (intf_id_ == 0 || intf_id_ == ~0u || (intf_id_ & 0xf) != kIntfTypeCrb) {
    *why = "INTF_ID is not a CRB interface (InterfaceType != 1)";
    return Open::kNoDevice;
  }
  if (!wait(kLocState, kLocStateRegValid, kLocStateRegValid, 1000)) {
    *why = "LOC_STATE.tpmRegValidSts not set within 1 s";
    return Open::kNoDevice;
  }
  wr(kLocCtrl, kLocCtrlRequest);
  locality_ = true;
  constexpr uint32_t kMask = kLocStateAssigned | kLocStateActive | kLocStateRegValid;
  if (!wait(kLocState, kMask, kLocStateAssigned | kLocStateRegValid, 1000)) {
    *why = "locality 0 not granted within 1 s (LOC_STATE)";
    return Open::kBadDevice;
  }
  if (!cmd_ready()) {
    *why = "cmdReady not acknowledged within 1 s (CTRL_REQ)";
    return Open::kBadDevice;
  }
  // The buffers as the device describes them: in the data area of this window (above
  // the registers) or elsewhere in the device space below 4 GiB (the uncached top GiB,
  // never RAM here; azote-hv puts them in a memory page of their own so that the
  // guest's stores and loads do not trap), never over the registers, 4-byte aligned,
  // and either one buffer or not overlapping at all.
  const uint32_t cmd_lo = rd(kCtrlCmdLaddr), cmd_hi = rd(kCtrlCmdHaddr);
  const uint32_t rsp_lo = rd(kCtrlRspAddr), rsp_hi = rd(kCtrlRspAddr + 4);
  cmd_ = cmd_lo;
  rsp_ = rsp_lo;
  cmd_size_ = rd(kCtrlCmdSize);
  rsp_size_ = rd(kCtrlRspSize);
  auto inside = [&](uint32_t hi, uint64_t a, uint32_t size) {
    const bool over_registers = a < base + kDataBuffer && a + size > base;
    return hi == 0 && (a & 3) == 0 && size >= kHeaderBytes && a >= (3ull << 30) && a + size <= (1ull << 32) &&
           !over_registers;
  };
  const bool same = cmd_ == rsp_ && cmd_size_ == rsp_size_;
  const bool apart = cmd_ + cmd_size_ <= rsp_ || rsp_ + rsp_size_ <= cmd_;
  if (!inside(cmd_hi, cmd_, cmd_size_) || !inside(rsp_hi, rsp_, rsp_size_) || !(same || apart)) {
    *why = "command/response buffer outside the device space below 4 GiB, over the registers, unaligned, too small or overlapping";
    return Open::kBadDevice;
  }
  cmd_size_ &= ~3u;  // whole 32-bit words only
  rsp_size_ &= ~3u;
  return Open::kOk;
}

Crb::Err Crb::transact(const uint8_t* cmd, uint32_t cmd_len, uint8_t* rsp, uint32_t cap, uint32_t* rsp_len) {
  if (cmd_len < kHeaderBytes || cmd_len > cmd_size_ || cap < kHeaderBytes) return Err::kTooBig;
  if (!ready_ && !cmd_ready()) return Err::kNotReady;
  wr(kCtrlCancel, 0);
  for (uint32_t i = 0; i < cmd_len; i += 4) {
    uint32_t w = 0;  // the last word is padded with zeros
    __builtin_memcpy(&w, cmd + i, cmd_len - i < 4 ? cmd_len - i : 4);
    mmio_wr32(cmd_ + i, w);
  }
  wr(kCtrlStart, kStartInvoke);
  Err e = Err::kOk;
  if (!wait(kCtrlStart, kStartInvoke, 0, 10000)) {
    wr(kCtrlCancel, 1);
    e = Err::kTimeout;
  } else if ((rd(kCtrlSts) & kStsFatal) != 0) {
    e = Err::kFatal;
  } else {
    // The first 8 bytes hold the size; then the rest, each byte read once.
    const uint32_t head[2] = {mmio_rd32(rsp_), mmio_rd32(rsp_ + 4)};
    __builtin_memcpy(rsp, head, 8);
    const uint32_t size = get32(rsp + 2);
    if (size < kHeaderBytes || size > rsp_size_ || size > cap) {
      e = Err::kBadSize;
    } else {
      for (uint32_t i = 8; i < size; i += 4) {
        const uint32_t w = mmio_rd32(rsp_ + i);
        __builtin_memcpy(rsp + i, &w, size - i < 4 ? size - i : 4);
      }
      *rsp_len = size;
    }
  }
  go_idle();
  return e;
}

void Crb::close() {
  if (ready_) go_idle();
  if (locality_) {
    wr(kLocCtrl, kLocCtrlRelinquish);
    (void)wait(kLocState, kLocStateAssigned, 0, 1000);
    locality_ = false;
  }
}

const char* err_text(Crb::Err e) {
  switch (e) {
    case Crb::Err::kOk: return "ok";
    case Crb::Err::kTooBig: return "command larger than CTRL_CMD_SIZE";
    case Crb::Err::kNotReady: return "cmdReady not acknowledged within 1 s";
    case Crb::Err::kTimeout: return "no response within 10 s (CTRL_START stays 1; cancelled)";
    case Crb::Err::kFatal: return "TPM in fatal error (CTRL_STS.tpmSts)";
    case Crb::Err::kBadSize: return "response size field below 10 or above CTRL_RSP_SIZE";
  }
  return "?";
}

// ----------------------------------------------------------------- commands
uint32_t cmd_get_capability_pcrs(uint8_t* out) {
  uint8_t* p = be16(out, kStNoSessions);
  p = be32(p, 22);
  p = be32(p, kCcGetCapability);
  p = be32(p, kCapPcrs);
  p = be32(p, 0);  // property
  p = be32(p, 1);  // propertyCount
  return static_cast<uint32_t>(p - out);
}

uint32_t cmd_pcr_read(uint8_t* out, uint16_t hash, uint32_t pcrs) {
  uint8_t* p = be16(out, kStNoSessions);
  p = be32(p, 20);
  p = be32(p, kCcPcrRead);
  p = be32(p, 1);  // TPML_PCR_SELECTION.count
  p = be16(p, hash);
  *p++ = 3;  // sizeofSelect: PCRs 0-23
  for (int i = 0; i < 3; ++i) *p++ = static_cast<uint8_t>(pcrs >> (8 * i));
  return static_cast<uint32_t>(p - out);
}

uint32_t cmd_azote_attest(uint8_t* out, uint32_t offset, const uint8_t* nonce, uint32_t nonce_len,
                          const uint8_t* user_data, uint32_t user_data_len) {
  if (nonce_len > kAttestMaxNonce || user_data_len > kAttestMaxUserData) return 0;
  const uint32_t size = kHeaderBytes + 4 + 2 + nonce_len + 2 + user_data_len;
  uint8_t* p = be16(out, kStNoSessions);
  p = be32(p, size);
  p = be32(p, kCcAzoteAttest);
  p = be32(p, offset);
  p = be16(p, static_cast<uint16_t>(nonce_len));
  for (uint32_t i = 0; i < nonce_len; ++i) *p++ = nonce[i];
  p = be16(p, static_cast<uint16_t>(user_data_len));
  for (uint32_t i = 0; i < user_data_len; ++i) *p++ = user_data[i];
  return static_cast<uint32_t>(p - out);
}

uint32_t response_code(const uint8_t* rsp) { return get32(rsp + 6); }

uint32_t digest_bytes(uint16_t hash) {
  return hash == kAlgSha1 ? 20 : hash == kAlgSha256 ? 32 : hash == kAlgSha384 ? 48 : 0;
}
const char* alg_name(uint16_t hash) {
  return hash == kAlgSha1 ? "sha1" : hash == kAlgSha256 ? "sha256" : hash == kAlgSha384 ? "sha384" : "?";
}

const char* parse_cap_pcrs(const uint8_t* r, uint32_t n, Banks* out) {
  Reader rd(r, n);
  if (const char* bad = header_ok(rd, n)) return bad;
  const uint8_t more = rd.u8();
  const uint32_t cap = rd.u32(), count = rd.u32();
  if (!rd.ok()) return "truncated";
  if (more > 1) return "moreData is not 0 or 1";
  if (cap != kCapPcrs) return "capability is not TPM_CAP_PCRS";
  if (count > kMaxBanks) return "more than 16 PCR banks";
  out->count = 0;
  for (uint32_t i = 0; i < count; ++i) {
    uint16_t hash = 0;
    uint32_t pcrs = 0;
    if (const char* bad = selection(rd, &hash, &pcrs)) return bad;
    for (uint32_t j = 0; j < out->count; ++j)
      if (out->bank[j].hash == hash) return "a bank is listed twice";
    out->bank[out->count].hash = hash;
    out->bank[out->count].pcrs = pcrs;
    ++out->count;
  }
  return rd.at_end() ? nullptr : "bytes after the last selection";
}

const char* parse_pcr_read(const uint8_t* r, uint32_t n, uint16_t hash, uint32_t asked, PcrValues* out) {
  const uint32_t want = digest_bytes(hash);
  if (want == 0) return "not a sha1, sha256 or sha384 bank";
  Reader rd(r, n);
  if (const char* bad = header_ok(rd, n)) return bad;
  (void)rd.u32();  // pcrUpdateCounter
  const uint32_t nsel = rd.u32();
  if (!rd.ok()) return "truncated";
  if (nsel > 1) return "pcrSelectionOut has more than the one bank asked for";
  out->pcrs = 0;
  if (nsel == 1) {
    uint16_t got = 0;
    if (const char* bad = selection(rd, &got, &out->pcrs)) return bad;
    if (got != hash) return "pcrSelectionOut names another bank";
    if ((out->pcrs & ~asked) != 0) return "pcrSelectionOut has PCRs that were not asked for";
  }
  out->count = rd.u32();
  if (!rd.ok()) return "truncated";
  if (out->count > kMaxReadDigests) return "more than 8 digests";
  if (out->count != popcount(out->pcrs)) return "digest count differs from the PCRs in pcrSelectionOut";
  for (uint32_t i = 0; i < out->count; ++i) {
    const uint16_t size = rd.u16();
    const uint8_t* d = rd.bytes(want);
    if (!rd.ok()) return "truncated digest";
    if (size != want) return "digest size differs from the bank's";
    for (uint32_t k = 0; k < want; ++k) out->digest[i][k] = d[k];
  }
  return rd.at_end() ? nullptr : "bytes after the last digest";
}

const char* parse_attest_chunk(const uint8_t* r, uint32_t n, uint32_t offset, uint32_t want_total, AttestChunk* out) {
  Reader rd(r, n);
  if (const char* bad = header_ok(rd, n)) return bad;
  const uint32_t total = rd.u32();
  const uint16_t size = rd.u16();
  if (!rd.ok()) return "truncated (no total or chunk_size)";
  if (total > kAttestMaxDocument) return "total above 16384 bytes";
  if (want_total != kAttestAnyTotal && total != want_total) return "total differs from the first chunk's";
  if (offset > total) return "total below the offset already received";
  if (size > kAttestMaxChunk) return "chunk_size above 2048";
  if (size > total - offset) return "chunk_size past the end of the document (total - offset)";
  if (size == 0 && offset != total) return "chunk_size 0 before the end of the document";
  const uint8_t* data = rd.bytes(size);
  if (data == nullptr) return "response ends inside the chunk";
  if (!rd.at_end()) return "bytes after the chunk";
  out->total = total;
  out->size = size;
  out->data = data;
  return nullptr;
}

}  // namespace az::tpm
