// The EC2 API's one error type: what the client sees in EC2's error document, an error
// code (EC2's own vocabulary: "InvalidParameterValue", "UnknownParameter", ...) and a
// message for people. The HTTP status follows from the code (http_status below), as EC2's.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "base/result.hpp"

namespace azote::ec2api {

// Codes this library itself returns (the region adds its own, e.g. "InvalidInstanceID.NotFound").
inline constexpr std::string_view kInvalidParameterValue = "InvalidParameterValue";
inline constexpr std::string_view kMissingParameter = "MissingParameter";
inline constexpr std::string_view kUnknownParameter = "UnknownParameter";
inline constexpr std::string_view kMalformedQueryString = "MalformedQueryString";
inline constexpr std::string_view kInvalidRequest = "InvalidRequest";
inline constexpr std::string_view kMissingAction = "MissingAction";
inline constexpr std::string_view kNoSuchVersion = "NoSuchVersion";

struct Ec2Error {
  std::string code;     // EC2's error code, the document's <Code>
  std::string message;  // the document's <Message>

  // The HTTP status EC2 answers this code with (see ec2api::http_status).
  int http_status() const;
};

// 400 for client errors; 403 for AuthFailure, UnauthorizedOperation, OptInRequired, Blocked,
// SignatureDoesNotMatch, InvalidClientTokenId and MissingAuthenticationToken; 412 for
// DryRunOperation (EC2's answer to a successful dry run); 503 for RequestLimitExceeded,
// Unavailable and ServiceUnavailable; 500 for InternalError, InternalFailure and the
// Insufficient*Capacity codes.
int http_status(std::string_view code);

inline Unexpected<Ec2Error> api_error(std::string_view code, std::string message) {
  return Unexpected{Ec2Error{std::string(code), std::move(message)}};
}

}  // namespace azote::ec2api
