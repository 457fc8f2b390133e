// The TPM programs, over the user-mode CRB driver (tpm.hpp). No TPM2_Startup: the
// hypervisor sent it before the guest ran (measured boot).
// `tpm-pcrs`: the allocated PCR banks (TPM2_GetCapability(TPM_CAP_PCRS)), then PCRs
// 0-23 of each sha1/sha256/sha384 bank (TPM2_PCR_Read, at most 8 per call), one line
// each. `attest`: the instance's attestation document, chunk by chunk through azote's
// vendor command TPM_CC_AZOTE_ATTEST, printed as one base64 line.
#include "platform.hpp"
#include "programs.hpp"
#include "rt.hpp"
#include "tpm.hpp"

namespace az {
namespace {

using tpm::Crb;

// What the TPM programs share: the interface, the response buffer, the running
// program's name (in every line the helpers below print), and the commands sent and
// the TSC ticks spent in them (tpm-pcrs's us_per_command).
constinit Crb g_crb;
alignas(4) constinit uint8_t g_rsp[4096];
const char* g_prog = "tpm";
uint64_t g_commands = 0, g_ticks = 0;

// "PROG error: WHAT[: DETAIL][ rc=0x...]", locality 0 given back, exit 1.
[[noreturn]] void tpm_error(const char* what, const char* detail, const uint32_t* rc) {
  Line l;
  l.s(kPrefix).s(g_prog).s(" error: ").s(what);
  if (detail != nullptr) l.s(": ").s(detail);
  if (rc != nullptr) l.s(" rc=0x").x(*rc);
  l.print();
  g_crb.close();
  exit(1);
}

// Finds and opens the CRB interface for program `prog`. An ACPI TPM2 table (start
// method CRB) names the control area, 0x40 into the locality 0 page; anything else
// falls back to 0xfed40000. No TPM there: the reason and "PROG no TPM at 0x...", exit
// 2; an interface that refuses: "PROG error: tpm-crb: ...", exit 1. `announce` prints
// the interface line.
void tpm_open(const char* prog, bool announce) {
  g_prog = prog;
  uint64_t base = tpm::kCrbDefaultBase;
  const char* source = "default";
  if (const uint64_t ca = platform::acpi_tpm2_crb(); ca != 0) {
    if ((ca & 0xfff) == 0x40 && ca >= (3ull << 30) && ca < (1ull << 32)) {
      base = ca - 0x40;
      source = "acpi";
    } else {
      Line().s(kPrefix).s(prog).s(": ACPI TPM2 control area 0x").x(ca)
          .s(" is not 0x40 into an uncached page, using 0xfed40000").print();
    }
  }
  const char* why = "";
  const Crb::Open o = g_crb.open(base, &why);
  if (o == Crb::Open::kNoDevice) {
    Line().s(kPrefix).s("tpm-crb at 0x").x(base).s(" intf_id=0x").x(g_crb.intf_id()).s(": ").s(why).print();
    Line().s(kPrefix).s(prog).s(" no TPM at 0x").x(base).print();
    exit(2);
  }
  if (o != Crb::Open::kOk) tpm_error("tpm-crb", why, nullptr);
  if (!announce) return;
  Line()
      .s(kPrefix)
      .s("tpm-crb at 0x").x(base).s(" (").s(source).s(") intf_id=0x").x(g_crb.intf_id())
      .s(" cmd=0x").x(g_crb.cmd_addr()).c('/').u(g_crb.cmd_size())
      .s(" rsp=0x").x(g_crb.rsp_addr()).c('/').u(g_crb.rsp_size())
      .print();
}

// One command whose response code must be 0 (TPM_RC_RETRY and TPM_RC_TESTING are
// retried for up to 2 s, as Linux does); returns the response length in g_rsp. Any
// other code ends the program with tpm_error: DETAIL is rc_text(rc) when the program
// gives one that knows the code, else the shared explanation (TPM_RC_INITIALIZE).
uint32_t run(const char* what, const uint8_t* cmd, uint32_t len, const char* (*rc_text)(uint32_t) = nullptr) {
  const uint64_t hz = tsc_hz() != 0 ? tsc_hz() : 3000000000ull;
  for (int tries = 0;; ++tries) {
    uint32_t n = 0;
    const uint64_t t0 = rdtsc();
    const Crb::Err e = g_crb.transact(cmd, len, g_rsp, sizeof g_rsp, &n);
    g_ticks += rdtsc() - t0;
    ++g_commands;
    if (e != Crb::Err::kOk) tpm_error(what, tpm::err_text(e), nullptr);
    const uint32_t rc = tpm::response_code(g_rsp);
    if (rc == 0) return n;
    if ((rc == tpm::kRcRetry || rc == tpm::kRcTesting) && tries < 20) {
      for (const uint64_t w0 = rdtsc(); rdtsc() - w0 < hz / 10;) cpu_relax();
      continue;
    }
    const char* detail = rc_text != nullptr ? rc_text(rc) : nullptr;
    if (detail == nullptr && rc == tpm::kRcInitialize)
      detail = "TPM not started (TPM_RC_INITIALIZE: no TPM2_Startup before the guest)";
    tpm_error(what, detail, &rc);
  }
}

}  // namespace

[[noreturn]] void prog_tpm_pcrs(const Args&) {
  tpm_open("tpm-pcrs", true);

  uint8_t cmd[32];
  tpm::Banks banks;
  uint32_t n = run("GetCapability(TPM_CAP_PCRS)", cmd, tpm::cmd_get_capability_pcrs(cmd));
  if (const char* bad = tpm::parse_cap_pcrs(g_rsp, n, &banks)) tpm_error("GetCapability(TPM_CAP_PCRS)", bad, nullptr);

  Line summary;
  summary.s(kPrefix).s("tpm-pcrs ok banks=");
  uint64_t total = 0;
  static constexpr struct {
    uint16_t alg;
    const char* what;
  } kBanks[] = {
      {tpm::kAlgSha1, "PCR_Read sha1"}, {tpm::kAlgSha256, "PCR_Read sha256"}, {tpm::kAlgSha384, "PCR_Read sha384"}};
  for (const auto& bank : kBanks) {
    const uint16_t alg = bank.alg;
    uint32_t todo = 0;
    for (uint32_t i = 0; i < banks.count; ++i)
      if (banks.bank[i].hash == alg) todo = banks.bank[i].pcrs & 0xffffff;
    if (todo == 0) continue;
    const char* name = tpm::alg_name(alg);
    if (total != 0) summary.c(',');
    while (todo != 0) {
      n = run(bank.what, cmd, tpm::cmd_pcr_read(cmd, alg, todo));
      tpm::PcrValues v;
      if (const char* bad = tpm::parse_pcr_read(g_rsp, n, alg, todo, &v)) tpm_error(bank.what, bad, nullptr);
      if (v.count == 0) tpm_error(bank.what, "no digest returned for PCRs GetCapability lists as allocated", nullptr);
      uint32_t k = 0;
      for (uint32_t pcr = 0; pcr < 24; ++pcr) {
        if ((v.pcrs >> pcr & 1) == 0) continue;
        Line l;
        l.s(kPrefix).s("tpm-pcr ").s(name).c(' ').u(pcr).c(' ');
        for (uint32_t b = 0; b < tpm::digest_bytes(alg); ++b) l.hex2(v.digest[k][b]);
        l.print();
        ++k;
        ++total;
      }
      todo &= ~v.pcrs;
    }
    summary.s(name);
  }
  if (total == 0) summary.c('-');
  const uint64_t hz = tsc_hz() != 0 ? tsc_hz() : 3000000000ull;
  summary.s(" pcrs=").u(total).s(" commands=").u(g_commands).s(" us_per_command=").u(g_ticks / g_commands * 1000000 / hz).print();
  g_crb.close();
  exit(0);
}

namespace {

// attest's buffers: static, as the user stack is small.
alignas(4) constinit uint8_t g_attest_cmd[tpm::kAttestCmdMax];
constinit uint8_t g_document[tpm::kAttestMaxDocument];
constinit uint8_t g_nonce[tpm::kAttestMaxNonce], g_user_data[tpm::kAttestMaxUserData];

// The codes azote's TPM card answers TPM_CC_AZOTE_ATTEST with (and an ordinary TPM's).
const char* attest_rc_text(uint32_t rc) {
  switch (rc) {
    case tpm::kRcFailure: return "no attestation service (TPM_RC_FAILURE)";
    case tpm::kRcSize: return "command refused (TPM_RC_SIZE)";
    case tpm::kRcValue: return "offset or request refused (TPM_RC_VALUE)";
    case tpm::kRcCommandCode: return "the TPM does not know TPM_CC_AZOTE_ATTEST (TPM_RC_COMMAND_CODE: not an azote TPM card)";
    default: return nullptr;
  }
}

// "attest: WHAT['ARG']", exit 1 (nothing sent).
[[noreturn]] void attest_usage(const char* name, const char* what, Str arg) {
  Line l;
  l.s(kPrefix).s("attest: ").s(name).s(what);
  if (!arg.empty()) l.s(" '").s(arg).s("'");
  l.print();
  exit(1);
}

// NONCE_HEX / USER_DATA_HEX: hex digits, two a byte, at most `cap` bytes; "-" is empty.
uint32_t attest_hex(Str arg, const char* name, uint8_t* out, size_t cap) {
  if (arg == "-") return 0;
  if (arg.n > 2 * cap) {
    Line().s(kPrefix).s("attest: ").s(name).s(" has ").u(arg.n).s(" hex digits, more than ").u(2 * cap)
        .s(" (").u(cap).s(" bytes)").print();
    exit(1);
  }
  if (arg.n % 2 != 0) attest_usage(name, " has an odd number of hex digits:", arg);
  size_t len = 0;
  if (!parse_hex(arg, out, cap, &len)) attest_usage(name, " is not hex digits:", arg);
  return static_cast<uint32_t>(len);
}

// "TPM_CC_AZOTE_ATTEST offset=N", the WHAT of attest's error lines.
const char* attest_what(uint32_t offset) {
  static char what[48];
  constexpr char kName[] = "TPM_CC_AZOTE_ATTEST offset=";
  size_t n = 0;
  for (; kName[n] != 0; ++n) what[n] = kName[n];
  char digits[10];
  size_t k = 0;
  do {
    digits[k++] = static_cast<char>('0' + offset % 10);
    offset /= 10;
  } while (offset != 0);
  while (k > 0) what[n++] = digits[--k];
  what[n] = 0;
  return what;
}

}  // namespace

[[noreturn]] void prog_attest(const Args& a) {
  if (a.argc > 2) attest_usage("", "too many arguments (want NONCE_HEX [USER_DATA_HEX]):", a.argv[2]);
  const uint32_t nonce_len = a.argc > 0 ? attest_hex(a.argv[0], "NONCE_HEX", g_nonce, sizeof g_nonce) : 0;
  const uint32_t user_len = a.argc > 1 ? attest_hex(a.argv[1], "USER_DATA_HEX", g_user_data, sizeof g_user_data) : 0;

  tpm_open("attest", false);
  // Offset 0 makes the card fetch a fresh document; each later offset (same nonce and
  // user data) is served from it. Each response is validated in g_rsp (the driver's
  // copy) and only then its chunk copied out.
  uint32_t offset = 0, total = tpm::kAttestAnyTotal;
  do {
    const char* what = attest_what(offset);
    const uint32_t len = tpm::cmd_azote_attest(g_attest_cmd, offset, g_nonce, nonce_len, g_user_data, user_len);
    const uint32_t n = run(what, g_attest_cmd, len, attest_rc_text);
    tpm::AttestChunk chunk;
    if (const char* bad = tpm::parse_attest_chunk(g_rsp, n, offset, total, &chunk)) tpm_error(what, bad, nullptr);
    if (chunk.total == 0) tpm_error(what, "empty document (total 0)", nullptr);
    total = chunk.total;
    for (uint32_t i = 0; i < chunk.size; ++i) g_document[offset + i] = chunk.data[i];
    offset += chunk.size;
  } while (offset < total);
  g_crb.close();

  // One console line of up to ~22 KB while Line holds 239 characters: the base64 goes
  // out 200 characters (150 bytes) at a time, print() ends the line.
  Line l;
  l.s(kPrefix).s("attestation-document ");
  char b64[200];
  for (uint32_t i = 0; i < total; i += 150) {
    const size_t k = base64(g_document + i, total - i < 150 ? total - i : 150, b64);
    if (l.room() < k) l.flush();
    l.s(Str{b64, k});
  }
  l.print();
  exit(0);
}

}  // namespace az
