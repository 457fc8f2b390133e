// AWS Signature Version 4 (AWS4-HMAC-SHA256): verifying signed requests on the server side
// (azote-region's EC2 Query API, signed by the aws CLI, boto3 and the SDKs), and a client-side
// signer for our own tools and tests. See DESIGN.md for the rules and where they come from.
//
//   verify(request, lookup, now, options) -> Verified | Error
//
// Both forms of authentication are verified: the Authorization header, and presigned query
// parameters (X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires,
// X-Amz-SignedHeaders, X-Amz-Signature). Errors carry EC2's error codes (code_name()) and a
// message naming what was wrong; no message ever contains a secret, a signing key or the
// signature the server expected. Inputs are bounded (Limits): a request over a limit is
// refused before anything proportional to it is allocated.
//
// The canonicalization rules are those of non-S3 services: the path is normalized (dot
// segments and empty segments removed) and URI-encoded once more as received (so a path
// that arrived percent-encoded ends up encoded twice), the query is decoded and re-encoded.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/error.hpp"
#include "base/result.hpp"

namespace azote::sigv4 {

// EC2's error codes for authentication failures (docs.aws.amazon.com, "Error codes for the
// Amazon EC2 API"). code_name() gives the string EC2 puts in <Code>.
enum class Code {
  kMissingAuthenticationToken = 1,  // no Authorization header and no presigned query
  kIncompleteSignature,             // malformed Authorization / presigned parameters, no date,
                                    // a required header not signed, a request over the limits
  kAuthFailure,                     // unknown key, wrong signature, wrong scope, tampered request
  kRequestExpired,                  // timestamp outside the allowed skew, presigned URL expired
  kMalformedQueryString,            // query string that cannot be decoded (bad %-escapes, too big)
};
using SigV4Error = Error<Code>;
const char* code_name(Code c);
// The HTTP status EC2 answers with for this code (401 for AuthFailure and
// MissingAuthenticationToken, 400 otherwise).
int http_status(Code c);

// A request as the HTTP server received it.
struct Request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // raw path as sent (percent-encoded), without the query; "" means "/"
  std::string query;   // raw query string without '?'
  std::vector<std::pair<std::string, std::string>> headers;  // as received: any case, repeats
  std::string body;
};

// Bounds on what verify() (and the other functions here) accept.
struct Limits {
  size_t max_headers = 200;             // header lines
  size_t max_header_bytes = 64 * 1024;  // names + values, all headers together
  size_t max_signed_headers = 64;
  size_t max_path_bytes = 8 * 1024;
  size_t max_query_bytes = 256 * 1024;
  size_t max_query_params = 4096;
  size_t max_method_bytes = 32;
};

struct Options {
  std::string service = "ec2";       // the credential scope's service must be this one
  std::vector<std::string> regions;  // accepted credential-scope regions; empty: any region
  std::chrono::seconds max_skew{15 * 60};  // as AWS: 15 minutes either way
  bool allow_presigned = true;             // presigned query authentication
  // X-Amz-Content-Sha256: UNSIGNED-PAYLOAD on a presigned request (the body is then not
  // covered by the signature: Verified::payload_signed is false). Never for header auth.
  bool allow_unsigned_payload = false;
  std::chrono::seconds max_expires{7 * 24 * 3600};  // largest X-Amz-Expires accepted
  Limits limits;
};

// Returns the secret access key of `access_key_id` (with `session_token`, "" when the
// request carries none), or nullopt if the key is unknown or the token does not belong to it.
using SecretLookup =
    std::function<std::optional<std::string>(std::string_view access_key_id, std::string_view session_token)>;

struct Verified {
  std::string access_key_id;
  std::string session_token;  // "" if none
  std::string region;
  std::string service;
  std::string date;            // the credential scope's date, YYYYMMDD
  std::time_t timestamp = 0;   // the request's signing time
  bool presigned = false;
  bool payload_signed = true;  // false only for an accepted UNSIGNED-PAYLOAD
  std::vector<std::string> signed_headers;
};

// Checks run in this order, so that each refusal gets the code EC2 would give: limits,
// presence and form of the authentication (MissingAuthenticationToken, IncompleteSignature,
// MalformedQueryString), service and region, time window (RequestExpired), scope date, body
// hash, key lookup, signature (AuthFailure). The body is hashed whole: the caller bounds it.
Result<Verified, SigV4Error> verify(const Request& req, const SecretLookup& lookup, std::time_t now,
                                    const Options& options = {});

// ---- the pieces (exported for tests, tools and clients) ----------------------------------

inline constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";
inline constexpr std::string_view kUnsignedPayload = "UNSIGNED-PAYLOAD";

// "AKID/20150830/us-east-1/ec2/aws4_request"
struct Credential {
  std::string access_key_id;
  std::string date;  // YYYYMMDD
  std::string region;
  std::string service;
  std::string scope() const;  // "20150830/us-east-1/ec2/aws4_request"
};
Result<Credential, SigV4Error> parse_credential(std::string_view text);

// "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=a;b, Signature=<64 hex>"
struct Authorization {
  Credential credential;
  std::vector<std::string> signed_headers;  // lowercase, strictly ascending, 1..max_signed_headers
  std::string signature;                    // 64 lowercase hex digits
};
Result<Authorization, SigV4Error> parse_authorization(std::string_view value, const Limits& limits = {});
// "a;b;c": lowercase header names, strictly ascending.
Result<std::vector<std::string>, SigV4Error> parse_signed_headers(std::string_view text, const Limits& limits = {});

// ISO 8601 basic, "20150830T123600Z" (what X-Amz-Date carries); nullopt unless exactly that.
std::optional<std::time_t> parse_amz_date(std::string_view text);
// An HTTP Date header: "Sun, 30 Aug 2015 12:36:00 GMT" (also "UTC", "+0000", "-0000"), or
// the ISO 8601 basic form.
std::optional<std::time_t> parse_http_date(std::string_view text);
std::string format_amz_date(std::time_t t);

// RFC 3986 percent-encoding of everything but the unreserved set (A-Z a-z 0-9 - . _ ~),
// upper-case hex; '/' is kept when keep_slash.
std::string uri_encode(std::string_view in, bool keep_slash);
// Dot segments and empty segments removed; "" -> "/". Keeps a trailing '/' unless the result
// would be the root.
std::string normalize_path(std::string_view raw_path);
// uri_encode(normalize_path(raw_path), keep_slash=true)
std::string canonical_uri(std::string_view raw_path);
// Each name and value decoded ('+' and %20 are spaces) and re-encoded, sorted by name then
// value, joined with '&'; X-Amz-Signature is left out when `presigned`.
Result<std::string, SigV4Error> canonical_query(std::string_view raw_query, bool presigned = false,
                                                const Limits& limits = {});
// Leading and trailing whitespace removed, inner runs of whitespace collapsed to one space.
std::string trim_all(std::string_view value);
// The canonical request (method, URI, query, headers, signed headers, payload hash).
// Every name in `signed_headers` must be a header of `req` (kAuthFailure otherwise).
Result<std::string, SigV4Error> canonical_request(const Request& req, const std::vector<std::string>& signed_headers,
                                                  std::string_view payload_hash, bool presigned = false,
                                                  const Limits& limits = {});
std::string string_to_sign(std::string_view amz_date, std::string_view scope, std::string_view canonical_request);

using SigningKey = std::array<uint8_t, 32>;
// HMAC chain "AWS4"+secret -> date -> region -> service -> "aws4_request".
SigningKey signing_key(std::string_view secret, std::string_view date, std::string_view region,
                       std::string_view service);
// Hex HMAC-SHA-256 of the string to sign under the signing key.
std::string signature(const SigningKey& key, std::string_view string_to_sign);
std::string sha256_hex(std::string_view data);

// ---- client side -------------------------------------------------------------------------

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // "" if none
};

struct SignOptions {
  bool content_sha256_header = false;  // also send (and sign) X-Amz-Content-Sha256
  bool sign_session_token = true;      // X-Amz-Security-Token among the signed headers
};

// Header authentication: sets X-Amz-Date (replacing any), the session token header if any,
// and Authorization; signs every header present except Authorization, User-Agent, Expect and
// X-Amzn-Trace-Id. The payload hash is the body's SHA-256, or the X-Amz-Content-Sha256
// header's value when the caller set one. `req` must have a Host header and no presigned
// query parameters; on an error it may have been partly modified.
Result<void, SigV4Error> sign(Request& req, const Credentials& creds, std::string_view region,
                              std::string_view service, std::time_t now, const SignOptions& options = {});

// Query authentication: appends X-Amz-Algorithm, -Credential, -Date, -Expires, -SignedHeaders
// (every header present, as sign()), -Security-Token and -Signature to the query. The
// payload hash is the body's SHA-256 (as botocore's SigV4QueryAuth for EC2). `req` must
// have a Host header and no X-Amz-* query parameter yet.
Result<void, SigV4Error> presign(Request& req, const Credentials& creds, std::string_view region,
                                 std::string_view service, std::time_t now, std::chrono::seconds expires);

}  // namespace azote::sigv4
