// An EC2-style API error: code (e.g. "InvalidParameterValue"), the gRPC category it
// maps to, and one sentence. Shared by the host, the network model and the service.
#pragma once

#include <string>
#include <utility>

#include "base/error.hpp"

namespace azote::controller {

struct ApiError {
  enum class Kind { kInvalid, kNotFound, kConflict, kCapacity, kUnsupported, kInternal, kDenied, kUnauthenticated };
  Kind kind = Kind::kInternal;
  std::string code;
  std::string sentence;
  std::string message() const { return code + ": " + sentence; }
};
template <class T>
using ApiResult = Result<T, ApiError>;
Unexpected<ApiError> api_error(ApiError::Kind kind, std::string code, std::string sentence);

}  // namespace azote::controller
