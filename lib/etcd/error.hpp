// EtcdError: the one error type of lib/etcd. Every failed call says what it was doing, on
// which endpoint, what etcd (or gRPC, or this library before sending) answered, and a kind
// the caller can branch on without parsing messages.
#pragma once

#include <grpcpp/support/status_code_enum.h>

#include <string>

#include "base/result.hpp"

namespace azote::etcd {

enum class EtcdErrc {
  kInvalidArgument = 1,  // refused before sending (bad endpoint, empty key...) or by etcd
  kTooLarge,             // a value or request over the configured cap (refused locally), or etcd's
  kUnavailable,          // no endpoint reachable, no leader, member stopping
  kDeadline,             // the call's deadline passed
  kCompacted,            // the revision asked for has been compacted away
  kFutureRevision,       // the revision asked for is beyond the store's current revision
  kNotFound,             // a lease that does not exist (or expired), a member that does not
  kFailedPrecondition,   // etcd refused the call in this state (lease exists, not leader...)
  kNoSpace,              // NOSPACE alarm: the database is over its quota, the cluster is read-only
  kResourceExhausted,    // too many requests
  kPermissionDenied,     // auth: permission denied or bad token
  kCanceled,             // the call or the watch was canceled (the watch's reason in message)
  kInternal,             // anything else: a malformed answer, a gRPC internal error
};

const char* errc_name(EtcdErrc kind);

struct EtcdError {
  EtcdErrc kind = EtcdErrc::kInternal;
  grpc::StatusCode code = grpc::StatusCode::OK;  // OK when refused locally
  std::string message;   // etcd's (or gRPC's) message, or this library's reason
  std::string endpoint;  // the member that answered or could not be reached; "" if none
  std::string what;      // the operation: "put /regions/a", "watch /hosts/ (prefix)"

  // "etcd put /a at 127.0.0.1:2379: etcdserver: no leader (UNAVAILABLE, unavailable)"
  std::string describe() const;
};

template <class T>
using EtcdResult = Result<T, EtcdError>;

// A local refusal (never sent).
EtcdError local_error(EtcdErrc kind, std::string what, std::string message);

// The kind of a gRPC status from etcd: its code, refined by etcd's message where one code
// covers several cases (OUT_OF_RANGE: compacted or future revision; RESOURCE_EXHAUSTED:
// NOSPACE or too many requests; INVALID_ARGUMENT: request too large).
EtcdErrc classify(grpc::StatusCode code, const std::string& message);

const char* status_code_name(grpc::StatusCode code);

}  // namespace azote::etcd
