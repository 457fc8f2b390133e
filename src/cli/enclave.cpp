// azote enclave build-enclave / describe-eif / pcr: nitro-cli's image commands on
// lib/eif. Local: they read and write files and never talk to the controller. Their
// JSON follows nitro-cli's (ENCLAVES.md §5) so that scripts written for it read ours.
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "eif/eif.hpp"
#include "pki/files.hpp"

#ifndef AZOTE_VERSION
#define AZOTE_VERSION "dev"
#endif

namespace azote::cli {
namespace {

// Kernels and ramdisks are read whole: an enclave image lives in enclave memory anyway.
constexpr uint64_t kMaxPart = 2ull << 30;
constexpr uint64_t kMaxPem = 64 * 1024;
constexpr uint64_t kMaxMetadata = 1 << 20;

int fail(Io& io, const std::string& message, int status) {
  io.err << "azote: " << message << "\n" << std::flush;
  return status;
}

eif::Bytes to_bytes(const std::string& s) { return eif::Bytes(s.begin(), s.end()); }

nlohmann::json measurements_json(const eif::Measurements& m) {
  nlohmann::json j = {{"HashAlgorithm", "Sha384 { ... }"},
                      {"PCR0", eif::hex(m.pcr0)},
                      {"PCR1", eif::hex(m.pcr1)},
                      {"PCR2", eif::hex(m.pcr2)}};
  if (m.pcr8) j["PCR8"] = eif::hex(*m.pcr8);
  return j;
}

// The version string a bzImage carries (boot protocol: "HdrS" at 0x202, the string's
// offset - 0x200 at 0x20e), or "unknown" for anything else.
std::string kernel_version(const eif::Bytes& k) {
  if (k.size() < 0x210 || std::string_view(reinterpret_cast<const char*>(&k[0x202]), 4) != "HdrS") return "unknown";
  const size_t at = 0x200 + (static_cast<size_t>(k[0x20e]) | static_cast<size_t>(k[0x20f]) << 8);
  std::string v;
  for (size_t i = at; i < k.size() && i < at + 128 && k[i] != 0 && k[i] != ' '; ++i) v += static_cast<char>(k[i]);
  return v.empty() ? "unknown" : v;
}

// RFC 3339 UTC; SOURCE_DATE_EPOCH (reproducible builds) when set.
std::string build_time() {
  time_t t = std::time(nullptr);
  if (const char* sde = std::getenv("SOURCE_DATE_EPOCH")) {
    char* end = nullptr;
    const long long v = std::strtoll(sde, &end, 10);
    if (end != sde && *end == '\0' && v >= 0) t = static_cast<time_t>(v);
  }
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
  return buf;
}

std::string base_name(const std::string& path) {
  std::string b = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  const size_t dot = b.rfind('.');
  return dot == std::string::npos || dot == 0 ? b : b.substr(0, dot);
}

}  // namespace

int build_enclave(const std::string& command, const BuildEnclave& be, Io& io) {
  const std::string p = command + ": ";
  eif::BuildSpec spec;
  auto kernel = read_whole_file(be.kernel, kMaxPart);
  if (!kernel.ok()) return fail(io, p + "--kernel: " + kernel.error(), kExitUsage);
  spec.kernel = to_bytes(*kernel);
  for (const auto& r : be.initrds) {
    auto data = read_whole_file(r, kMaxPart);
    if (!data.ok()) return fail(io, p + "--initrd: " + data.error(), kExitUsage);
    spec.ramdisks.push_back(to_bytes(*data));
  }
  spec.cmdline = be.cmdline;
  nlohmann::json custom = nullptr;
  if (!be.metadata.empty()) {
    auto m = read_whole_file(be.metadata, kMaxMetadata);
    if (!m.ok()) return fail(io, p + "--metadata: " + m.error(), kExitUsage);
    custom = nlohmann::json::parse(*m, nullptr, false);
    if (custom.is_discarded()) return fail(io, p + "--metadata " + be.metadata + " is not JSON", kExitUsage);
  }
  const nlohmann::json metadata = {
      {"ImageName", be.name.empty() ? base_name(be.output) : be.name},
      {"ImageVersion", be.version.empty() ? "1.0" : be.version},
      {"BuildMetadata",
       {{"BuildTime", build_time()},
        {"BuildTool", "azote"},
        {"BuildToolVersion", AZOTE_VERSION},
        {"OperatingSystem", "Linux"},
        {"KernelVersion", kernel_version(spec.kernel)}}},
      {"DockerInfo", nullptr},
      {"CustomMetadata", custom}};
  spec.metadata_json = metadata.dump();
  if (!be.signing_certificate.empty()) {
    auto cert = read_whole_file(be.signing_certificate, kMaxPem);
    if (!cert.ok()) return fail(io, p + "--signing-certificate: " + cert.error(), kExitUsage);
    auto key = read_whole_file(be.private_key, kMaxPem);
    if (!key.ok()) return fail(io, p + "--private-key: " + key.error(), kExitUsage);
    spec.signer = eif::Signer{*cert, *key};
  }
  io.err << "Start building the Enclave Image...\n" << std::flush;
  auto image = eif::build(spec);
  if (!image.ok()) return fail(io, p + image.error().message(), kExitUsage);
  auto w = pki::write_file_atomic(be.output, std::string_view(reinterpret_cast<const char*>(image->data()), image->size()),
                                  0644);
  if (!w.ok()) return fail(io, p + "--output-file: " + w.error().message(), kExitUsage);
  io.err << "Enclave Image successfully created.\n" << std::flush;

  eif::Measurements m = eif::measure(spec);
  if (spec.signer) {
    auto pcr8 = eif::pcr8_of_certificate(spec.signer->certificate_pem);
    if (!pcr8.ok()) return fail(io, p + pcr8.error().message(), kExitUsage);
    m.pcr8 = *pcr8;
  }
  io.out << nlohmann::json{{"Measurements", measurements_json(m)}}.dump(2) << "\n";
  return kExitOk;
}

int describe_eif(const std::string& command, const DescribeEif& de, Io& io) {
  const std::string p = command + ": ";
  auto data = read_whole_file(de.path, 8 * kMaxPart);
  if (!data.ok()) return fail(io, p + "--eif-path: " + data.error(), kExitUsage);
  const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(data->data()), data->size());
  auto img = eif::parse(bytes);
  if (!img.ok()) return fail(io, p + de.path + ": " + img.error().message(), kExitVerifyFailed);

  nlohmann::json j;
  j["EifVersion"] = img->version;
  std::optional<eif::Signature> sig;
  std::string sig_error;
  if (img->signature) {
    auto s = eif::read_signature(*img->signature);
    if (s.ok()) {
      sig = std::move(*s);
    } else {
      sig_error = s.error().message();
    }
  }
  const eif::Measurements m = eif::measure(*img, sig ? &*sig : nullptr);
  j["Measurements"] = measurements_json(m);
  j["IsSigned"] = img->signature.has_value();
  if (sig) {
    auto info = eif::certificate_info(sig->certificate_der);
    if (info.ok()) {
      j["SigningCertificate"] = {{"IssuerName", info->issuer},
                                 {"Algorithm", info->algorithm},
                                 {"NotBefore", info->not_before},
                                 {"NotAfter", info->not_after},
                                 {"Signature", info->signature}};
    }
    auto v = eif::verify_signature(*sig, m.pcr0, std::time(nullptr));
    if (!v.ok()) sig_error = v.error().message();
  }
  j["CheckCRC"] = true;  // parse() refuses an image whose CRC does not match
  if (img->signature) {
    j["SignatureCheck"] = sig_error.empty();
    if (!sig_error.empty()) j["SignatureError"] = sig_error;
  }
  if (img->metadata) {
    const auto meta = nlohmann::json::parse(img->metadata->begin(), img->metadata->end(), nullptr, false);
    if (meta.is_object()) {
      j["ImageName"] = meta.value("ImageName", nlohmann::json());
      j["ImageVersion"] = meta.value("ImageVersion", nlohmann::json());
      nlohmann::json md = meta.value("BuildMetadata", nlohmann::json::object());
      if (md.is_object()) {
        md["DockerInfo"] = meta.value("DockerInfo", nlohmann::json());
        md["CustomMetadata"] = meta.value("CustomMetadata", nlohmann::json());
      }
      j["Metadata"] = md;
    }
  }
  io.out << j.dump(2) << "\n";
  return kExitOk;
}

int enclave_pcr(const std::string& command, const EnclavePcr& ep, Io& io) {
  const std::string p = command + ": ";
  if (!ep.signing_certificate.empty()) {
    auto cert = read_whole_file(ep.signing_certificate, kMaxPem);
    if (!cert.ok()) return fail(io, p + "--signing-certificate: " + cert.error(), kExitUsage);
    auto pcr8 = eif::pcr8_of_certificate(*cert);
    if (!pcr8.ok()) return fail(io, p + ep.signing_certificate + ": " + pcr8.error().message(), kExitUsage);
    io.out << nlohmann::json{{"PCR8", eif::hex(*pcr8)}}.dump(2) << "\n";
    return kExitOk;
  }
  auto data = read_whole_file(ep.input, 8 * kMaxPart);
  if (!data.ok()) return fail(io, p + "--input: " + data.error(), kExitUsage);
  const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(data->data()), data->size());
  io.out << nlohmann::json{{"PCR", eif::hex(attest::measure_digest_of(bytes))}}.dump(2) << "\n";
  return kExitOk;
}

}  // namespace azote::cli
