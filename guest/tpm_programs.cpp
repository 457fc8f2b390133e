// `tpm-pcrs`: the allocated PCR banks (TPM2_GetCapability(TPM_CAP_PCRS)), then PCRs
// 0-23 of each sha1/sha256/sha384 bank (TPM2_PCR_Read, at most 8 per call), one line
// each, over the user-mode CRB driver (tpm.hpp). No TPM2_Startup: the hypervisor
// sent it before the guest ran (measured boot).
#include "platform.hpp"
#include "programs.hpp"
#include "rt.hpp"
#include "tpm.hpp"

namespace az {
namespace {

using tpm::Crb;

constinit Crb g_crb;
alignas(4) constinit uint8_t g_rsp[4096];

[[noreturn]] void tpm_error(const char* what, const char* detail, const uint32_t* rc) {
  Line l;
  l.s(kPrefix).s("tpm-pcrs error: ").s(what);
  if (detail != nullptr) l.s(": ").s(detail);
  if (rc != nullptr) l.s(" rc=0x").x(*rc);
  l.print();
  g_crb.close();
  exit(1);
}

// One command whose response code must be 0 (TPM_RC_RETRY and TPM_RC_TESTING are
// retried for up to 2 s, as Linux does); returns the response length in g_rsp.
// Commands sent and the TSC ticks spent in them (the summary line's us_per_command).
uint64_t g_commands = 0, g_ticks = 0;

uint32_t run(const char* what, const uint8_t* cmd, uint32_t len) {
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
    const char* detail = nullptr;
    if (rc == tpm::kRcInitialize) detail = "TPM not started (TPM_RC_INITIALIZE: no TPM2_Startup before the guest)";
    tpm_error(what, detail, &rc);
  }
}

}  // namespace

[[noreturn]] void prog_tpm_pcrs(const Args&) {
  uint64_t base = tpm::kCrbDefaultBase;
  const char* source = "default";
  // An ACPI TPM2 table (start method CRB) names the control area, 0x40 into the
  // locality 0 page; anything else falls back to 0xfed40000.
  if (const uint64_t ca = platform::acpi_tpm2_crb(); ca != 0) {
    if ((ca & 0xfff) == 0x40 && ca >= (3ull << 30) && ca < (1ull << 32)) {
      base = ca - 0x40;
      source = "acpi";
    } else {
      Line().s(kPrefix).s("tpm-pcrs: ACPI TPM2 control area 0x").x(ca)
          .s(" is not 0x40 into an uncached page, using 0xfed40000").print();
    }
  }
  const char* why = "";
  const Crb::Open o = g_crb.open(base, &why);
  if (o == Crb::Open::kNoDevice) {
    Line().s(kPrefix).s("tpm-crb at 0x").x(base).s(" intf_id=0x").x(g_crb.intf_id()).s(": ").s(why).print();
    Line().s(kPrefix).s("tpm-pcrs no TPM at 0x").x(base).print();
    exit(2);
  }
  if (o != Crb::Open::kOk) tpm_error("tpm-crb", why, nullptr);
  Line()
      .s(kPrefix)
      .s("tpm-crb at 0x").x(base).s(" (").s(source).s(") intf_id=0x").x(g_crb.intf_id())
      .s(" cmd=0x").x(g_crb.cmd_addr()).c('/').u(g_crb.cmd_size())
      .s(" rsp=0x").x(g_crb.rsp_addr()).c('/').u(g_crb.rsp_size())
      .print();

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

}  // namespace az
