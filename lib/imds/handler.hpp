// The IMDSv2 request handler, as EC2 answers: a pure function of the request, the slot's
// metadata, the token service and the time. No sockets, no locks, no counters: the service
// (service.cpp) feeds it what libmicrohttpd parsed and counts what it returns.
//
//   PUT /latest/api/token  X-aws-ec2-metadata-token-ttl-seconds: 1..21600  → 200, the token
//       (missing or bad TTL → 400; X-Forwarded-For present → 403: a proxy is relaying)
//   GET <path>  X-aws-ec2-metadata-token: a valid token of this slot → 200 / 404
//       (token of another slot, revoked, expired or forged → 401; no token → 401 when the
//       instance requires tokens, served as IMDSv1 otherwise)
//   any other method → 405; PUT to another path, GET of the token path → 405
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "imds/metadata.hpp"
#include "imds/token.hpp"

namespace azote::imds {

inline constexpr std::string_view kTokenPath = "/latest/api/token";
inline constexpr std::string_view kTokenHeader = "X-aws-ec2-metadata-token";
inline constexpr std::string_view kTokenTtlHeader = "X-aws-ec2-metadata-token-ttl-seconds";

// Why a request was refused (counted by the service). Not-found is a status, not a refusal.
enum class Refusal : uint8_t {
  kNone = 0,
  kMissingTtl,       // token PUT without the TTL header → 400
  kBadTtl,           // TTL not a decimal integer in 1..21600 → 400
  kForwarded,        // token PUT carrying X-Forwarded-For → 403
  kDuplicateHeader,  // a token or TTL header given twice → 400
  kNoToken,          // GET without a token, tokens required → 401
  kBadToken,         // malformed or forged token → 401
  kOtherSlotToken,   // another slot's token → 401
  kRevokedToken,     // a token of this slot from before a remove() → 401
  kExpiredToken,     // → 401
  kBadMethod,        // → 405
  kBodyTooLarge,     // service: a request body over kMaxRequestBody → 400
  kUnknownClient,    // service: a connection whose address maps to no slot (closed)
};
inline constexpr size_t kRefusalCount = static_cast<size_t>(Refusal::kUnknownClient) + 1;
const char* to_string(Refusal r);

// Request bodies are ignored (EC2 takes none); the service refuses longer ones.
inline constexpr size_t kMaxRequestBody = 1024;

struct Request {
  std::string method;  // as sent ("GET", "PUT", ...): methods are case-sensitive
  std::string path;    // percent-decoded, without the query string
  std::vector<std::pair<std::string, std::string>> headers;  // names compared case-insensitively
};

struct Response {
  int status = 200;
  std::string content_type;  // "text/plain", "text/html", "application/octet-stream"
  std::vector<std::pair<std::string, std::string>> headers;  // besides Content-Type
  std::string body;
  Refusal refusal = Refusal::kNone;
  bool token_issued = false;
};

// The slot a request came from, as the service's table holds it.
struct SlotView {
  uint32_t slot = 0;
  uint64_t incarnation = 0;  // changes on every add(): tokens are bound to it
  const CheckedMetadata& meta;
};

Response handle(const Request& req, const SlotView& slot, const TokenService& tokens, TimePoint now);

}  // namespace azote::imds
