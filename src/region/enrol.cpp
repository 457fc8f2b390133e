#include "region/enrol.hpp"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <sys/random.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "base/hex.hpp"

namespace azote::region {

std::string new_enrolment_token() {
  uint8_t b[32];
  if (::getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) return {};
  return to_hex(b);
}

std::string enrolment_digest(std::string_view token) {
  uint8_t md[32];
  unsigned int len = 0;
  if (EVP_Digest(token.data(), token.size(), md, &len, EVP_sha256(), nullptr) != 1 || len != sizeof md) return {};
  return to_hex(md);
}

Result<EnrolForm, std::string> parse_enrol(std::string_view body) {
  using Json = nlohmann::json;
  auto bad = [](std::string why) { return Unexpected{std::move(why)}; };
  if (body.size() > 64 * 1024) return bad("the enrolment is larger than 64 KiB");
  const Json j = Json::parse(body, nullptr, false);
  if (!j.is_object()) return bad("the enrolment is not a JSON object");
  auto text = [&](const char* k, bool required, size_t max, std::string* out) -> bool {
    if (!j.contains(k)) return !required;
    if (!j[k].is_string()) return false;
    *out = j[k].get<std::string>();
    return (!required || !out->empty()) && out->size() <= max;
  };
  EnrolForm f;
  for (const auto& [k, out, max, req] : std::initializer_list<std::tuple<const char*, std::string*, size_t, bool>>{
           {"token", &f.token, 128, true},        {"host_id", &f.host_id, 64, true},
           {"zone", &f.zone, 64, true},           {"endpoint", &f.endpoint, 200, true},
           {"underlay", &f.underlay, 32, false},  {"ca_pem", &f.ca_pem, 16384, true},
           {"cert_pem", &f.cert_pem, 16384, true}, {"key_pem", &f.key_pem, 16384, true}})
    if (!text(k, req, max, out)) return bad(std::string("\"") + k + "\": " + (req ? "required, " : "") + "a string of at most " + std::to_string(max) + " bytes");
  if (!std::all_of(f.host_id.begin(), f.host_id.end(),
                   [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_'; }))
    return bad("\"host_id\": letters, digits, - and _");
  if (!std::all_of(f.zone.begin(), f.zone.end(), [](char c) { return c > 0x20 && c < 0x7f; }))
    return bad("\"zone\": printable ASCII without spaces");
  const bool unix_ep = f.endpoint.rfind("unix:/", 0) == 0;
  if (!unix_ep && f.endpoint.find(':') == std::string::npos) return bad("\"endpoint\": unix:/PATH or HOST:PORT");
  if (!f.underlay.empty()) {
    const size_t colon = f.underlay.rfind(':');
    in_addr ia{};
    const std::string port = colon == std::string::npos ? "" : f.underlay.substr(colon + 1);
    if (colon == std::string::npos || ::inet_pton(AF_INET, f.underlay.substr(0, colon).c_str(), &ia) != 1 || port.empty() ||
        port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoul(port) == 0 || std::stoul(port) > 65535)
      return bad("\"underlay\": IPV4:PORT");
  }
  for (const auto& [k, pem] : {std::pair<const char*, const std::string*>{"ca_pem", &f.ca_pem}, {"cert_pem", &f.cert_pem},
                               {"key_pem", &f.key_pem}})
    if (pem->find("-----BEGIN ") == std::string::npos) return bad(std::string("\"") + k + "\": a PEM block");
  auto count = [&](const char* k, uint64_t max, uint64_t* out) -> bool {
    if (!j.contains(k) || !j[k].is_number_unsigned()) return false;
    *out = j[k].get<uint64_t>();
    return *out >= 1 && *out <= max;
  };
  uint64_t vcpus = 0;
  if (!count("vcpus", 100000, &vcpus) || !count("memory_mib", uint64_t{1} << 40, &f.memory_mib))
    return bad("\"vcpus\" (1-100000) and \"memory_mib\" (1 and up): the host's capacity");
  f.vcpus = static_cast<uint32_t>(vcpus);
  return f;
}

}  // namespace azote::region
