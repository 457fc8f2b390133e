// azote-kms's one error type: an AWS KMS exception name and one sentence, which the
// request socket answers as {"ok": false, "error": "<Code>: <sentence>"} and the audit
// log records as the decision's reason. No exceptions anywhere on the request path:
// every fallible step returns a KmsResult.
#pragma once

#include <string>
#include <utility>

#include "base/result.hpp"

namespace azote::kms {

// The exception names this service answers with (AWS KMS's, where one fits).
inline constexpr const char* kValidation = "ValidationException";
inline constexpr const char* kAccessDenied = "AccessDeniedException";
inline constexpr const char* kNotFound = "NotFoundException";
inline constexpr const char* kInvalidCiphertext = "InvalidCiphertextException";
inline constexpr const char* kIncorrectKey = "IncorrectKeyException";
inline constexpr const char* kMalformedPolicy = "MalformedPolicyDocumentException";
inline constexpr const char* kThrottling = "ThrottlingException";
inline constexpr const char* kUnsupported = "UnsupportedOperationException";
inline constexpr const char* kInternal = "KMSInternalException";
// Not an AWS name: the command line or the service's own files (start-up only).
inline constexpr const char* kUsage = "UsageError";
inline constexpr const char* kState = "StateError";
inline constexpr const char* kNoInput = "NoInput";  // --root or --policy cannot be read

struct KmsError {
  std::string code;
  std::string sentence;
  std::string message() const { return code + ": " + sentence; }
};
template <class T>
using KmsResult = Result<T, KmsError>;

inline Unexpected<KmsError> fail(const char* code, std::string sentence) {
  return Unexpected{KmsError{code, std::move(sentence)}};
}

}  // namespace azote::kms
