#include "cards/tpm/engine.hpp"

#include <libtpms/tpm_error.h>
#include <libtpms/tpm_library.h>
#include <libtpms/tpm_nvfilename.h>
#include <openssl/crypto.h>

#include <cstdlib>
#include <cstring>

#include "base/log.hpp"
#include "tpm/wire.hpp"

namespace azote::card_tpm {
namespace {

// The live engine, for libtpms's callbacks, which carry no user pointer. libtpms holds
// one TPM per process, so there is one engine at most: set by TpmEngine::start before
// TPMLIB_MainInit, cleared by the destructor after TPMLIB_Terminate. Only the thread
// that runs libtpms at the time reads it.
TpmEngine* g_engine = nullptr;

TPM_RESULT cb_nvram_init() { return TPM_SUCCESS; }

TPM_RESULT cb_nvram_loaddata(unsigned char** data, uint32_t* length, uint32_t /*tpm_number*/, const char* name) {
  return g_engine != nullptr ? g_engine->load(data, length, name) : TPM_FAIL;
}

TPM_RESULT cb_nvram_storedata(const unsigned char* data, uint32_t length, uint32_t /*tpm_number*/, const char* name) {
  return g_engine != nullptr ? g_engine->store(data, length, name) : TPM_FAIL;
}

TPM_RESULT cb_nvram_deletename(uint32_t /*tpm_number*/, const char* name, TPM_BOOL /*must_exist*/) {
  return g_engine != nullptr ? g_engine->remove(name) : TPM_FAIL;
}

TPM_RESULT cb_io_init() { return TPM_SUCCESS; }

// Every command comes from locality 0 (what the hypervisor's TIS/CRB frontends and
// tools use); there is no physical presence.
TPM_RESULT cb_io_getlocality(TPM_MODIFIER_INDICATOR* locality, uint32_t /*tpm_number*/) {
  *locality = 0;
  return TPM_SUCCESS;
}

TPM_RESULT cb_io_getphysicalpresence(TPM_BOOL* present, uint32_t /*tpm_number*/) {
  *present = 0;
  return TPM_SUCCESS;
}

// A malloc'ed copy of `bytes`, for libtpms to free().
unsigned char* copy_for_libtpms(std::span<const uint8_t> bytes) {
  auto* p = static_cast<unsigned char*>(std::malloc(bytes.empty() ? 1 : bytes.size()));
  if (p != nullptr && !bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
  return p;
}

}  // namespace

TpmResult<std::unique_ptr<TpmEngine>> TpmEngine::start(SecretBytes permall, Persist persist) {
  if (g_engine != nullptr) return make_error(TpmErrc::kBusy, "libtpms already runs a TPM in this process");
  std::unique_ptr<TpmEngine> e(new TpmEngine());
  e->initial_ = std::move(permall);
  e->state_bytes_ = e->initial_.size();
  e->persist_ = std::move(persist);
  if (TPMLIB_ChooseTPMVersion(TPMLIB_TPM_VERSION_2) != TPM_SUCCESS)
    return make_error(TpmErrc::kTpm, "libtpms refuses to run a TPM 2.0 (TPMLIB_ChooseTPMVersion)");
  libtpms_callbacks cbs{};
  cbs.sizeOfStruct = sizeof cbs;
  cbs.tpm_nvram_init = cb_nvram_init;
  cbs.tpm_nvram_loaddata = cb_nvram_loaddata;
  cbs.tpm_nvram_storedata = cb_nvram_storedata;
  cbs.tpm_nvram_deletename = cb_nvram_deletename;
  cbs.tpm_io_init = cb_io_init;
  cbs.tpm_io_getlocality = cb_io_getlocality;
  cbs.tpm_io_getphysicalpresence = cb_io_getphysicalpresence;
  if (TPMLIB_RegisterCallbacks(&cbs) != TPM_SUCCESS)
    return make_error(TpmErrc::kTpm, "libtpms refused its callbacks (TPMLIB_RegisterCallbacks)");
  e->buffer_bytes_ = TPMLIB_SetBufferSize(0, nullptr, nullptr);
  g_engine = e.get();  // from here on the destructor terminates libtpms
  e->initialising_ = true;
  const uint64_t stores_before = e->stores_;
  const TPM_RESULT r = TPMLIB_MainInit();
  e->initialising_ = false;
  e->initial_.clear();
  if (r != TPM_SUCCESS) {
    char code[16];
    std::snprintf(code, sizeof code, "0x%x", r);
    return make_error(TpmErrc::kTpm, std::string("libtpms could not start the TPM from its state (TPMLIB_MainInit: ") +
                                         code + ")");
  }
  // A new TPM's seeds must be on disk before anyone sees its keys: libtpms commits them
  // while manufacturing; should it not, the state is taken and kept here.
  if (e->manufactured_ && e->stores_ == stores_before) AZOTE_TRYV(e->persist_current());
  return e;
}

TpmResult<void> TpmEngine::persist_current() {
  unsigned char* buf = nullptr;
  uint32_t len = 0;
  if (TPMLIB_GetState(TPMLIB_STATE_PERMANENT, &buf, &len) != TPM_SUCCESS || buf == nullptr)
    return make_error(TpmErrc::kTpm, "libtpms did not give its new permanent state (TPMLIB_GetState)");
  const TPM_RESULT r = store(buf, len, TPM_PERMANENT_ALL_NAME);
  OPENSSL_cleanse(buf, len);
  std::free(buf);
  if (r != TPM_SUCCESS) return make_error(TpmErrc::kState, "the new TPM's state could not be kept");
  return {};
}

TpmEngine::~TpmEngine() {
  if (g_engine == this) {
    TPMLIB_Terminate();
    g_engine = nullptr;
  }
  if (response_ != nullptr) {
    OPENSSL_cleanse(response_, response_capacity_);
    std::free(response_);
  }
}

uint32_t TpmEngine::response_code(std::span<const uint8_t> response) {
  if (response.size() < kTpmHeaderBytes) return kTpmRcFailure;
  return tpm::response_code(response);
}

std::span<const uint8_t> TpmEngine::process(std::span<uint8_t> command) {
  uint32_t size = 0;
  const TPM_RESULT r = TPMLIB_Process(&response_, &size, &response_capacity_, command.data(),
                                      static_cast<uint32_t>(command.size()));
  if (r == TPM_SUCCESS && response_ != nullptr && size >= kTpmHeaderBytes && size <= response_capacity_)
    return {response_, size};
  LOG_ERROR("tpm: libtpms failed a command (TPMLIB_Process 0x%x, %u response bytes); answering TPM_RC_FAILURE", r, size);
  // TPM_ST_NO_SESSIONS, responseSize 10, TPM_RC_FAILURE.
  const uint8_t failure[kTpmHeaderBytes] = {0x80, 0x01, 0, 0, 0, kTpmHeaderBytes, 0, 0, 0x01, 0x01};
  std::memcpy(failure_, failure, sizeof failure);
  return {failure_, sizeof failure_};
}

uint32_t TpmEngine::load(unsigned char** data, uint32_t* length, const char* name) {
  *data = nullptr;
  *length = 0;
  std::span<const uint8_t> bytes;
  if (std::strcmp(name, TPM_PERMANENT_ALL_NAME) == 0) {
    if (!initialising_) {
      LOG_ERROR("tpm: libtpms asked for its permanent state after it started; refused");
      return TPM_FAIL;
    }
    if (initial_.empty()) {
      manufactured_ = true;  // no state: libtpms manufactures a new TPM
      return TPM_RETRY;
    }
    // libtpms reads it more than once while it starts (to see whether it exists, then to
    // load it): a fresh copy each time, which it frees.
    bytes = initial_.bytes();
  } else {
    const auto it = volatile_blobs_.find(name);
    if (it == volatile_blobs_.end()) return TPM_RETRY;  // absent
    bytes = it->second.bytes();
  }
  *data = copy_for_libtpms(bytes);
  if (*data == nullptr) return TPM_FAIL;
  *length = static_cast<uint32_t>(bytes.size());
  return TPM_SUCCESS;
}

uint32_t TpmEngine::store(const unsigned char* data, uint32_t length, const char* name) {
  const std::span<const uint8_t> bytes(data, length);
  if (std::strcmp(name, TPM_PERMANENT_ALL_NAME) != 0) {
    volatile_blobs_[name] = SecretBytes(bytes);  // kept in memory only
    return TPM_SUCCESS;
  }
  if (!persist_ || !persist_(bytes)) return TPM_FAIL;
  ++stores_;
  state_bytes_ = length;
  // While TPMLIB_MainInit runs, libtpms reads back what it has just written (it
  // manufactures, commits, then powers on from NV): it must get the new state, not the
  // absence it was told of first.
  if (initialising_) initial_ = SecretBytes(bytes);
  return TPM_SUCCESS;
}

uint32_t TpmEngine::remove(const char* name) {
  if (const auto it = volatile_blobs_.find(name); it != volatile_blobs_.end()) volatile_blobs_.erase(it);
  return TPM_SUCCESS;
}

}  // namespace azote::card_tpm
