#include "tpm/measured_boot.hpp"

#include <openssl/evp.h>
#include <tss2/tss2_sys.h>

#include <cstdio>
#include <cstring>
#include <memory>

namespace azote::tpm {

namespace {

const EVP_MD* md_of(uint16_t alg) {
  switch (alg) {
    case kAlgSha1: return EVP_sha1();
    case kAlgSha256: return EVP_sha256();
    case kAlgSha384: return EVP_sha384();
    case kAlgSha512: return EVP_sha512();
    default: return nullptr;
  }
}

std::string rc_text(TSS2_RC rc) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%x", rc);
  return b;
}

// A TCTI (tpm2-tss's transport interface) over a Link: transmit sends the command and
// reads the whole response, receive hands it over. Synchronous, one command at a time.
struct LinkTcti {
  TSS2_TCTI_CONTEXT_COMMON_V2 common{};
  Link* link = nullptr;
  std::chrono::steady_clock::time_point deadline{};  // for the whole boot, not per command
  const std::atomic<bool>* cancel = nullptr;
  std::vector<uint8_t> response = std::vector<uint8_t>(kMaxMessageBytes);
  size_t length = 0;
  std::string error;  // why the last transmit failed

  static LinkTcti* of(TSS2_TCTI_CONTEXT* c) { return reinterpret_cast<LinkTcti*>(c); }  // NOLINT: common is first
  static TSS2_RC transmit(TSS2_TCTI_CONTEXT* c, size_t size, const uint8_t* command) {
    LinkTcti* t = of(c);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(t->deadline - std::chrono::steady_clock::now());
    auto r = t->link->transact(std::span(command, size), t->response, std::max(left, std::chrono::milliseconds(1)), t->cancel);
    if (!r) {
      t->error = r.error().message();
      t->length = 0;
      return TSS2_TCTI_RC_IO_ERROR;
    }
    t->length = *r;
    return TSS2_RC_SUCCESS;
  }
  static TSS2_RC receive(TSS2_TCTI_CONTEXT* c, size_t* size, uint8_t* response, int32_t) {
    LinkTcti* t = of(c);
    if (t->length == 0) return TSS2_TCTI_RC_BAD_SEQUENCE;
    if (response == nullptr) {
      *size = t->length;
      return TSS2_RC_SUCCESS;
    }
    if (*size < t->length) return TSS2_TCTI_RC_INSUFFICIENT_BUFFER;
    std::memcpy(response, t->response.data(), t->length);
    *size = t->length;
    t->length = 0;
    return TSS2_RC_SUCCESS;
  }
  static void finalize(TSS2_TCTI_CONTEXT*) {}
};

struct SysDeleter {
  void operator()(TSS2_SYS_CONTEXT* c) const {
    Tss2_Sys_Finalize(c);
    std::free(c);  // NOLINT: allocated with calloc for tss2-sys
  }
};

}  // namespace

const char* bank_name(uint16_t alg) {
  switch (alg) {
    case kAlgSha1: return "sha1";
    case kAlgSha256: return "sha256";
    case kAlgSha384: return "sha384";
    case kAlgSha512: return "sha512";
    default: return "";
  }
}

TpmResult<Event> measure(uint32_t pcr, std::string what, std::span<const uint8_t> data) {
  Event e;
  e.pcr = pcr;
  e.what = std::move(what);
  for (uint16_t alg : {kAlgSha1, kAlgSha256, kAlgSha384, kAlgSha512}) {
    std::vector<uint8_t> d(EVP_MAX_MD_SIZE);
    unsigned len = 0;
    if (EVP_Digest(data.data(), data.size(), d.data(), &len, md_of(alg), nullptr) != 1)
      return make_error(TpmErrc::kCrypto, std::string("digest (") + bank_name(alg) + ") of the " + e.what);
    d.resize(len);
    e.digests[alg] = std::move(d);
  }
  return e;
}

TpmResult<std::vector<uint8_t>> extend(uint16_t alg, std::span<const uint8_t> pcr, std::span<const uint8_t> digest) {
  const EVP_MD* md = md_of(alg);
  if (md == nullptr) return make_error(TpmErrc::kCrypto, "no digest for TPM algorithm " + std::to_string(alg));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1 || EVP_DigestUpdate(ctx.get(), pcr.data(), pcr.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), digest.data(), digest.size()) != 1 || EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1)
    return make_error(TpmErrc::kCrypto, std::string("PCR extend arithmetic (") + bank_name(alg) + ")");
  out.resize(len);
  return out;
}

TpmResult<Booted> measure_boot(Link& link, std::span<const Event> events, std::chrono::milliseconds timeout,
                               const std::atomic<bool>* cancel) {
  LinkTcti tcti;
  tcti.common.v1.magic = 0x617a6f7465747063ull;  // "azotetpc"
  tcti.common.v1.version = 2;
  tcti.common.v1.transmit = &LinkTcti::transmit;
  tcti.common.v1.receive = &LinkTcti::receive;
  tcti.common.v1.finalize = &LinkTcti::finalize;
  tcti.link = &link;
  tcti.deadline = std::chrono::steady_clock::now() + timeout;
  tcti.cancel = cancel;
  auto* tctx = reinterpret_cast<TSS2_TCTI_CONTEXT*>(&tcti);  // NOLINT: the common header is the TCTI's context

  const size_t size = Tss2_Sys_GetContextSize(kMaxMessageBytes);
  std::unique_ptr<TSS2_SYS_CONTEXT, SysDeleter> sys(static_cast<TSS2_SYS_CONTEXT*>(std::calloc(1, size)));  // NOLINT
  TSS2_ABI_VERSION abi = TSS2_ABI_VERSION_CURRENT;
  if (!sys) return make_error(TpmErrc::kIo, "no memory for a TPM context");
  if (TSS2_RC rc = Tss2_Sys_Initialize(sys.get(), size, tctx, &abi); rc != TSS2_RC_SUCCESS) {
    sys.release();  // NOLINT: not initialized, nothing to finalize
    return make_error(TpmErrc::kIo, "tss2-sys initialization failed (" + rc_text(rc) + ")");
  }
  auto failed = [&](const char* step, TSS2_RC rc) {
    if (!tcti.error.empty()) return make_error(TpmErrc::kIo, std::string(step) + ": " + tcti.error);
    return make_error(TpmErrc::kTpm, std::string(step) + ": the TPM answered " + rc_text(rc));
  };

  if (TSS2_RC rc = Tss2_Sys_Startup(sys.get(), TPM2_SU_CLEAR); rc != TSS2_RC_SUCCESS)
    return failed(rc == TPM2_RC_INITIALIZE ? "TPM2_Startup (the TPM was started already: its PCRs are not fresh)" : "TPM2_Startup", rc);

  TPMI_YES_NO more = 0;
  TPMS_CAPABILITY_DATA cap{};
  if (TSS2_RC rc = Tss2_Sys_GetCapability(sys.get(), nullptr, TPM2_CAP_PCRS, 0, 1, &more, &cap, nullptr); rc != TSS2_RC_SUCCESS)
    return failed("TPM2_GetCapability(PCRS)", rc);
  Booted booted;
  const TPML_PCR_SELECTION& sel = cap.data.assignedPCR;
  for (uint32_t i = 0; i < sel.count && i < TPM2_NUM_PCR_BANKS; ++i) {
    bool any = false;
    for (uint8_t b = 0; b < sel.pcrSelections[i].sizeofSelect && b < sizeof sel.pcrSelections[i].pcrSelect; ++b)
      any = any || sel.pcrSelections[i].pcrSelect[b] != 0;
    if (!any) continue;
    const uint16_t alg = sel.pcrSelections[i].hash;
    if (md_of(alg) == nullptr)
      return make_error(TpmErrc::kTpm, "the TPM has a PCR bank of algorithm " + rc_text(alg) + " this platform cannot measure into");
    booted.banks.push_back(alg);
  }
  if (booted.banks.empty()) return make_error(TpmErrc::kTpm, "the TPM has no PCR bank allocated");

  TSS2L_SYS_AUTH_COMMAND auth{};
  auth.count = 1;
  auth.auths[0].sessionHandle = TPM2_RH_PW;  // the empty password of the platform's PCRs
  for (const Event& e : events) {
    TPML_DIGEST_VALUES values{};
    for (uint16_t alg : booted.banks) {
      const auto it = e.digests.find(alg);
      if (it == e.digests.end() || values.count >= TPM2_NUM_PCR_BANKS)
        return make_error(TpmErrc::kTpm, std::string("no ") + bank_name(alg) + " digest of the " + e.what);
      TPMT_HA& ha = values.digests[values.count++];
      ha.hashAlg = alg;
      std::memcpy(&ha.digest, it->second.data(), std::min(it->second.size(), sizeof ha.digest));
    }
    if (TSS2_RC rc = Tss2_Sys_PCR_Extend(sys.get(), e.pcr, &auth, &values, nullptr); rc != TSS2_RC_SUCCESS)
      return failed(("TPM2_PCR_Extend of PCR " + std::to_string(e.pcr) + " (" + e.what + ")").c_str(), rc);
  }
  // The platform hierarchy is the firmware's: TPM2_Startup(CLEAR) enabled it with an
  // empty password, and the OS must not inherit it (PCR_Allocate, ChangePPS, Clear,
  // platform NV indices). Firmware disables it before the OS runs; so does this.
  if (TSS2_RC rc = Tss2_Sys_HierarchyControl(sys.get(), TPM2_RH_PLATFORM, &auth, TPM2_RH_PLATFORM, TPM2_NO, nullptr);
      rc != TSS2_RC_SUCCESS)
    return failed("TPM2_HierarchyControl (disabling the platform hierarchy)", rc);
  return booted;
}

}  // namespace azote::tpm
