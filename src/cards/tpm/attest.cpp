#include "cards/tpm/attest.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <optional>

#include <nlohmann/json.hpp>

#include "base/hex.hpp"
#include "base/log.hpp"
#include "cards/tpm/engine.hpp"
#include "tpm/wire.hpp"

namespace azote::card_tpm {
namespace {

constexpr uint32_t kTpmCcPcrRead = 0x0000017E;
constexpr uint16_t kTpmAlgSha384 = 0x000C;
constexpr uint32_t kAllPcrs = (1u << kPcrCount) - 1;

// Failures are the guest's doing (or azote-rot's): a few lines, then silence.
log::RateLimit g_attest_log(10, std::chrono::seconds(10));

using tpm::be16;
using tpm::be32;
void put16(std::vector<uint8_t>& v, uint16_t x) {
  v.push_back(static_cast<uint8_t>(x >> 8));
  v.push_back(static_cast<uint8_t>(x));
}
void put32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}
void set_size(std::vector<uint8_t>& v) {
  const auto n = static_cast<uint32_t>(v.size());
  for (int i = 0; i < 4; ++i) v[2 + static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (24 - 8 * i));
}

// A cursor over a big-endian buffer; any read past the end sets `short_`.
struct Reader {
  std::span<const uint8_t> b;
  size_t at = 0;
  bool short_ = false;
  bool need(size_t n) {
    if (short_ || b.size() - at < n) short_ = true;
    return !short_;
  }
  uint8_t u8() { return need(1) ? b[at++] : 0; }
  uint16_t u16() {
    if (!need(2)) return 0;
    at += 2;
    return be16(b.data() + at - 2);
  }
  uint32_t u32() {
    if (!need(4)) return 0;
    at += 4;
    return be32(b.data() + at - 4);
  }
  std::span<const uint8_t> bytes(size_t n) {
    if (!need(n)) return {};
    at += n;
    return b.subspan(at - n, n);
  }
};

void wipe(std::vector<uint8_t>& v) {
  if (!v.empty()) OPENSSL_cleanse(v.data(), v.size());
  v.clear();
}

}  // namespace

bool is_attest_command(std::span<const uint8_t> command) {
  return command.size() >= kTpmHeaderBytes && be32(command.data() + 6) == kTpmCcAzoteAttest;
}

AttestParsed parse_attest_command(std::span<const uint8_t> command) {
  AttestParsed p;
  Reader r{command};
  const uint16_t tag = r.u16();
  const uint32_t size = r.u32();
  r.u32();  // commandCode
  if (r.short_) return {kTpmRcSize, {}};
  if (tag != kTpmStNoSessions) return {kTpmRcBadTag, {}};
  p.request.offset = r.u32();
  const uint16_t nonce_size = r.u16();
  if (nonce_size > kAttestMaxNonce) return {kTpmRcSize, {}};
  const auto nonce = r.bytes(nonce_size);
  const uint16_t user_data_size = r.u16();
  if (user_data_size > kAttestMaxUserData) return {kTpmRcSize, {}};
  const auto user_data = r.bytes(user_data_size);
  if (r.short_ || r.at != size || r.at != command.size()) return {kTpmRcSize, {}};
  p.request.nonce.assign(nonce.begin(), nonce.end());
  p.request.user_data.assign(user_data.begin(), user_data.end());
  return p;
}

std::vector<uint8_t> tpm_error_response(uint32_t rc) {
  std::vector<uint8_t> v;
  put16(v, kTpmStNoSessions);
  put32(v, kTpmHeaderBytes);
  put32(v, rc);
  return v;
}

std::vector<uint8_t> attest_chunk_response(std::span<const uint8_t> document, uint32_t offset) {
  if (offset > document.size()) return tpm_error_response(kTpmRcValue);
  const size_t chunk = std::min<size_t>(kAttestChunkBytes, document.size() - offset);
  std::vector<uint8_t> v;
  v.reserve(kTpmHeaderBytes + 6 + chunk);
  put16(v, kTpmStNoSessions);
  put32(v, 0);  // size, below
  put32(v, 0);  // TPM_RC_SUCCESS
  put32(v, static_cast<uint32_t>(document.size()));
  put16(v, static_cast<uint16_t>(chunk));
  v.insert(v.end(), document.begin() + offset, document.begin() + static_cast<std::ptrdiff_t>(offset + chunk));
  set_size(v);
  return v;
}

std::vector<uint8_t> pcr_read_sha384_command(uint32_t mask) {
  std::vector<uint8_t> v;
  put16(v, kTpmStNoSessions);
  put32(v, 0);
  put32(v, kTpmCcPcrRead);
  put32(v, 1);  // TPML_PCR_SELECTION.count
  put16(v, kTpmAlgSha384);
  v.push_back(3);  // sizeofSelect: PCRs 0-23
  for (int i = 0; i < 3; ++i) v.push_back(static_cast<uint8_t>(mask >> (8 * i)));
  set_size(v);
  return v;
}

uint32_t parse_pcr_read_sha384(std::span<const uint8_t> response, Sha384Pcrs* pcrs, uint32_t* got, std::string* why) {
  *got = 0;
  Reader r{response};
  r.u16();
  const uint32_t size = r.u32();
  const uint32_t rc = r.u32();
  if (r.short_ || size != response.size()) {
    *why = "a malformed TPM2_PCR_Read response (its size)";
    return kTpmRcFailure;
  }
  if (rc != 0) return rc;
  r.u32();  // pcrUpdateCounter
  const uint32_t selections = r.u32();
  if (selections > 16) {
    *why = "a malformed TPM2_PCR_Read response (" + std::to_string(selections) + " selections)";
    return kTpmRcFailure;
  }
  uint32_t mask = 0;
  for (uint32_t s = 0; s < selections && !r.short_; ++s) {
    const uint16_t hash = r.u16();
    const uint8_t n = r.u8();
    const auto bits = r.bytes(n);
    uint32_t m = 0;
    for (size_t i = 0; i < bits.size(); ++i) {
      if (i >= 3) {
        if (bits[i] != 0) m |= 0x80000000u;  // a PCR past 23: not asked for
      } else {
        m |= static_cast<uint32_t>(bits[i]) << (8 * i);
      }
    }
    if (m != 0 && hash != kTpmAlgSha384) {
      *why = "a TPM2_PCR_Read response with PCRs of another bank";
      return kTpmRcFailure;
    }
    mask |= m;
  }
  const uint32_t digests = r.u32();
  if (r.short_ || (mask & ~kAllPcrs) != 0 || digests != static_cast<uint32_t>(std::popcount(mask))) {
    *why = "a malformed TPM2_PCR_Read response (its selection and digests disagree)";
    return kTpmRcFailure;
  }
  for (uint32_t i = 0, pcr = 0; i < digests; ++i, ++pcr) {
    while ((mask >> pcr & 1) == 0) ++pcr;
    const uint16_t n = r.u16();
    const auto d = r.bytes(n);
    if (r.short_ || n != kSha384Bytes) {
      *why = "a malformed TPM2_PCR_Read response (a digest of " + std::to_string(n) + " bytes)";
      return kTpmRcFailure;
    }
    std::copy(d.begin(), d.end(), (*pcrs)[pcr].begin());
  }
  if (r.at != response.size()) {
    *why = "a malformed TPM2_PCR_Read response (bytes after its digests)";
    return kTpmRcFailure;
  }
  *got = mask;
  return 0;
}

uint32_t read_sha384_pcrs(const TpmProcess& process, Sha384Pcrs* pcrs, std::string* why) {
  uint32_t left = kAllPcrs;
  for (size_t round = 0; left != 0 && round < kPcrCount; ++round) {
    std::vector<uint8_t> cmd = pcr_read_sha384_command(left);
    uint32_t got = 0;
    const uint32_t rc = parse_pcr_read_sha384(process(cmd), pcrs, &got, why);
    if (rc != 0) {
      if (why->empty()) {
        char b[64];
        std::snprintf(b, sizeof b, "TPM2_PCR_Read answered response code 0x%x", rc);
        *why = b;
      }
      return rc;
    }
    if ((got & ~left) != 0) {
      *why = "TPM2_PCR_Read returned PCRs that were not asked for";
      return kTpmRcFailure;
    }
    if (got == 0) {
      if (left == kAllPcrs) {
        *why = "the TPM has no sha384 PCR bank allocated";
      } else {
        *why = "sha384 PCR " + std::to_string(std::countr_zero(left)) + " is missing from the TPM";
      }
      return kTpmRcFailure;
    }
    left &= ~got;
  }
  if (left != 0) {
    *why = "sha384 PCR " + std::to_string(std::countr_zero(left)) + " is missing from the TPM";
    return kTpmRcFailure;
  }
  return 0;
}

// --- Attestor ---

Attestor::~Attestor() {
  forget();
  wipe(response_);
}

void Attestor::forget() {
  cached_ = false;
  wipe(nonce_);
  wipe(user_data_);
  wipe(document_);
}

std::span<const uint8_t> Attestor::handle(std::span<const uint8_t> command) {
  metrics_.attestations.fetch_add(1, std::memory_order_relaxed);
  wipe(response_);
  try {
    response_ = answer(command);
  } catch (const std::exception& e) {  // memory: the JSON and the document are built here
    if (g_attest_log.allow()) LOG_ERROR("tpm: attestation: %s; answering TPM_RC_FAILURE", e.what());
    response_ = tpm_error_response(kTpmRcFailure);
  }
  if (TpmEngine::response_code(response_) != 0) metrics_.attestation_errors.fetch_add(1, std::memory_order_relaxed);
  return response_;
}

std::vector<uint8_t> Attestor::answer(std::span<const uint8_t> command) {
  const AttestParsed p = parse_attest_command(command);
  if (p.rc != 0) return tpm_error_response(p.rc);
  const AttestRequest& r = p.request;
  if (r.offset == 0) {
    forget();
    std::vector<uint8_t> doc = fresh_document(r);
    if (doc.empty()) return tpm_error_response(fresh_rc_);
    nonce_ = r.nonce;
    user_data_ = r.user_data;
    document_ = std::move(doc);
    cached_ = true;
  } else if (!cached_ || r.nonce != nonce_ || r.user_data != user_data_) {
    return tpm_error_response(kTpmRcValue);
  }
  return attest_chunk_response(document_, r.offset);
}

std::vector<uint8_t> Attestor::fresh_document(const AttestRequest& r) {
  fresh_rc_ = kTpmRcFailure;
  if (rot_ == nullptr) {
    if (g_attest_log.allow())
      LOG_WARN("tpm: attestation requested, but the card has no --rot connection to azote-rot; TPM_RC_FAILURE");
    return {};
  }
  Sha384Pcrs pcrs{};
  std::string why;
  const uint32_t rc = read_sha384_pcrs(process_, &pcrs, &why);
  if (rc != 0) {
    fresh_rc_ = rc == kTpmRcInitialize ? kTpmRcInitialize : kTpmRcFailure;
    if (g_attest_log.allow())
      LOG_WARN("tpm: attestation: the TPM's sha384 PCRs cannot be read: %s%s", why.c_str(),
               rc == kTpmRcInitialize ? " (no TPM2_Startup yet)" : "");
    return {};
  }
  nlohmann::json request = {{"op", "attest-tpm"}, {"nonce", to_hex(r.nonce)}, {"user_data", to_hex(r.user_data)}};
  nlohmann::json pcr_map = nlohmann::json::object();
  for (size_t i = 0; i < kPcrCount; ++i) pcr_map[std::to_string(i)] = to_hex(pcrs[i]);
  request["pcrs"] = std::move(pcr_map);
  metrics_.rot_requests.fetch_add(1, std::memory_order_relaxed);
  auto reply = rot_->call(request);
  metrics_.rot_connected.store(rot_->gone() ? 0 : 1, std::memory_order_relaxed);
  if (!reply) {
    if (g_attest_log.allow()) LOG_WARN("tpm: attestation failed: %s", reply.error().message().c_str());
    return {};
  }
  const nlohmann::json& j = *reply;
  if (!j.contains("ok") || !j["ok"].is_boolean() || !j["ok"].get<bool>()) {
    const std::string error = j.contains("error") && j["error"].is_string() ? j["error"].get<std::string>()
                                                                              : std::string("no reason given");
    if (g_attest_log.allow()) LOG_WARN("tpm: attestation refused by azote-rot: %s", error.c_str());
    return {};
  }
  std::optional<std::vector<uint8_t>> doc;
  if (j.contains("document") && j["document"].is_string()) doc = from_hex(j["document"].get<std::string>());
  if (!doc || doc->empty()) {
    if (g_attest_log.allow()) LOG_WARN("tpm: attestation failed: azote-rot's reply has no \"document\" in hex");
    return {};
  }
  return std::move(*doc);
}

}  // namespace azote::card_tpm
