#include "controller/enrol.hpp"

#include <curl/curl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <chrono>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "controller/service.hpp"
#include "pki/files.hpp"

namespace azote::controller {
namespace {

using Json = nlohmann::json;

Unexpected<EnrolError> fail(EnrolErrc c, std::string what) { return Unexpected{EnrolError{c, 0, std::move(what)}}; }

size_t collect(char* data, size_t size, size_t n, void* out) {
  auto* s = static_cast<std::string*>(out);
  if (s->size() + size * n > (1u << 20)) return 0;  // an answer over 1 MiB: refused
  s->append(data, size * n);
  return size * n;
}

}  // namespace

Result<std::string, EnrolError> enrol_once(const std::string& state_dir, const pki::HostPki& pki, const EnrolRequest& r) {
  const std::string saved = state_dir + "/region.json";
  if (std::ifstream in(saved); in) {
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  if (r.url.rfind("https://", 0) != 0) return fail(EnrolErrc::kLocal, "--join " + r.url + ": an https:// URL of azote-region");
  if (::access(r.region_ca.c_str(), R_OK) != 0)
    return fail(EnrolErrc::kLocal, "--region-ca " + r.region_ca + " cannot be read by uid " + std::to_string(::getuid()) +
                                       " (" + std::strerror(errno) + "): put a copy of the region's CA where it can");
  // The credential the region will call this host with: a year, revocable here
  // (`azote admin revoke-cert`) like any other.
  auto cert = pki.issue_client("control-plane", std::string(kRegionPrincipal), std::chrono::hours(24 * 365));
  if (!cert) return fail(EnrolErrc::kLocal, "issuing the region's certificate: " + cert.error().message());
  Json body = {{"token", r.token},
               {"host_id", r.host_id},
               {"zone", r.zone},
               {"endpoint", r.endpoint},
               {"vcpus", r.vcpus},
               {"memory_mib", r.memory_mib},
               {"ca_pem", pki.ca_pem()},
               {"cert_pem", cert->cert_pem},
               {"key_pem", cert->key_pem}};
  if (!r.underlay.empty()) body["underlay"] = r.underlay;
  const std::string text = body.dump();

  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> c(curl_easy_init(), &curl_easy_cleanup);
  if (!c) return fail(EnrolErrc::kLocal, "libcurl cannot start");
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(
      curl_slist_append(nullptr, "Content-Type: application/json"), &curl_slist_free_all);
  std::string answer;
  const std::string url = r.url + (r.url.back() == '/' ? "" : "/") + "azote/enrol";
  curl_easy_setopt(c.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(c.get(), CURLOPT_PROTOCOLS_STR, "https");
  curl_easy_setopt(c.get(), CURLOPT_CAINFO, r.region_ca.c_str());
  curl_easy_setopt(c.get(), CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c.get(), CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(c.get(), CURLOPT_POSTFIELDS, text.c_str());
  curl_easy_setopt(c.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(text.size()));
  curl_easy_setopt(c.get(), CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c.get(), CURLOPT_WRITEFUNCTION, &collect);
  curl_easy_setopt(c.get(), CURLOPT_WRITEDATA, &answer);
  curl_easy_setopt(c.get(), CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(c.get(), CURLOPT_NOSIGNAL, 1L);
  char err[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(c.get(), CURLOPT_ERRORBUFFER, err);
  const CURLcode rc = curl_easy_perform(c.get());
  // The private key handed over is forgotten here; the region keeps the only copy.
  if (rc != CURLE_OK)
    return fail(EnrolErrc::kTransport, url + ": " + (err[0] != '\0' ? std::string(err) : curl_easy_strerror(rc)));
  long status = 0;
  curl_easy_getinfo(c.get(), CURLINFO_RESPONSE_CODE, &status);
  const Json j = Json::parse(answer, nullptr, false);
  if (status != 200) {
    const std::string why = j.is_object() && j.contains("error") && j["error"].is_string() ? j["error"].get<std::string>()
                                                                                           : answer.substr(0, 200);
    return fail(EnrolErrc::kRefused, "azote-region refused the enrolment (HTTP " + std::to_string(status) + "): " + why);
  }
  if (!j.is_object()) return fail(EnrolErrc::kRefused, "azote-region's answer is not JSON");
  if (auto w = pki::write_file_atomic(saved, j.dump(2) + "\n", 0600); !w)
    return fail(EnrolErrc::kLocal, saved + ": " + w.error().message());
  return j.dump(2);
}

}  // namespace azote::controller
