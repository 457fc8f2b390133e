// libFuzzer target for lib/sigv4: the Authorization header parser and verify() on any
// request, then a round trip. Input: one flags byte, then a request in the test suites' text
// form (raw_request.hpp). Invariants, each an abort when broken:
//   - parse_authorization() and verify() never crash, leak or hit undefined behaviour;
//   - a refusal carries one of the five codes and a bounded message that never contains the
//     secret (unless the input itself does: messages quote bounded pieces of it);
//   - an accepted request is signed by the one known key, with host among its signed headers;
//   - the request with its authentication stripped, signed by sign() (or presign()), is
//     accepted by verify() whenever the signer took it.
// Seeds (fuzz_seeds/*.bin): AWS suite requests signed both ways, an EC2 query, malformed ones.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "sigv4/raw_request.hpp"
#include "sigv4/sigv4.hpp"

namespace {

using namespace azote::sigv4;

constexpr std::string_view kAkid = "AKIDEXAMPLE";
constexpr std::string_view kSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
constexpr std::time_t kNow = 1440938160;  // 20150830T123600Z, the suite's signing time

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_sigv4: invariant broken: %s\n", what);
    std::abort();
  }
}

std::optional<std::string> lookup(std::string_view akid, std::string_view) {
  if (akid == kAkid) return std::string(kSecret);
  return std::nullopt;
}

// `input`: the request's text; a message may echo (a bounded piece of) it, so the secret
// counts as leaked only when the input does not hold it.
void check_refusal(const SigV4Error& e, std::string_view input) {
  const int c = static_cast<int>(e.code);
  check(c >= static_cast<int>(Code::kMissingAuthenticationToken) && c <= static_cast<int>(Code::kMalformedQueryString),
        "unknown code");
  const std::string m = e.message();
  check(!m.empty() && m.size() < 1024, "message empty or unbounded");
  check(m.find(kSecret) == std::string::npos || input.find(kSecret) != std::string_view::npos, "secret in a message");
}

void strip_auth(Request& r) {
  std::erase_if(r.headers, [](const auto& h) {
    std::string l = h.first;
    for (char& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return l == "authorization" || l == "x-amz-date" || l == "x-amz-content-sha256" ||
           l == "x-amz-security-token";
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);

  if (auto a = parse_authorization(text); a.ok()) {
    check(a->signature.size() == 64, "signature length");
    check(!a->signed_headers.empty(), "no signed headers");
  } else {
    check_refusal(a.error(), text);
  }

  auto parsed = parse_raw_request(text);
  if (!parsed) return 0;
  const Request& req = *parsed;

  Options options;
  options.service = "service";
  if (flags & 1) options.regions = {"us-east-1"};
  options.allow_presigned = (flags & 2) == 0;
  options.allow_unsigned_payload = (flags & 4) != 0;
  options.max_skew = std::chrono::seconds((flags & 8) ? 60 : 900);
  const int step = flags >> 4;  // the clock: exact (0), or up to 13 minutes either way
  const std::time_t now = kNow + (step == 0 ? 0 : (step - 8) * 110);

  auto v = verify(req, lookup, now, options);
  if (v.ok()) {
    check(v->access_key_id == kAkid, "accepted another key");
    check(v->service == "service", "accepted another service");
    check(std::find(v->signed_headers.begin(), v->signed_headers.end(), "host") != v->signed_headers.end(),
          "host not signed");
    check(v->payload_signed || (v->presigned && options.allow_unsigned_payload), "unsigned payload accepted");
  } else {
    check_refusal(v.error(), text);
  }

  // Round trip through our own signer.
  const Credentials creds{std::string(kAkid), std::string(kSecret), (flags & 16) ? "token/+=" : ""};
  Request r = req;
  strip_auth(r);
  Options any = options;
  any.allow_presigned = true;
  any.allow_unsigned_payload = false;
  if (flags & 32) {
    if (presign(r, creds, "us-east-1", "service", now, std::chrono::seconds(300)).ok()) {
      auto back = verify(r, lookup, now, any);
      if (!back.ok()) std::fprintf(stderr, "presigned round trip refused: %s\n", back.error().message().c_str());
      check(back.ok() && back->presigned, "presigned round trip");
    }
  } else if (sign(r, creds, "us-east-1", "service", now).ok()) {
    auto back = verify(r, lookup, now, any);
    if (!back.ok()) std::fprintf(stderr, "signed round trip refused: %s\n", back.error().message().c_str());
    check(back.ok() && !back->presigned, "signed round trip");
  }
  return 0;
}
