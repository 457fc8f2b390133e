#include "etcd/error.hpp"

#include <utility>

namespace azote::etcd {

const char* errc_name(EtcdErrc kind) {
  switch (kind) {
    case EtcdErrc::kInvalidArgument: return "invalid_argument";
    case EtcdErrc::kTooLarge: return "too_large";
    case EtcdErrc::kUnavailable: return "unavailable";
    case EtcdErrc::kDeadline: return "deadline";
    case EtcdErrc::kCompacted: return "compacted";
    case EtcdErrc::kFutureRevision: return "future_revision";
    case EtcdErrc::kNotFound: return "not_found";
    case EtcdErrc::kFailedPrecondition: return "failed_precondition";
    case EtcdErrc::kNoSpace: return "no_space";
    case EtcdErrc::kResourceExhausted: return "resource_exhausted";
    case EtcdErrc::kPermissionDenied: return "permission_denied";
    case EtcdErrc::kCanceled: return "canceled";
    case EtcdErrc::kInternal: return "internal";
  }
  return "unknown";
}

const char* status_code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN_CODE";
  }
}

std::string EtcdError::describe() const {
  std::string s = "etcd";
  if (!what.empty()) s += " " + what;
  if (!endpoint.empty()) s += " at " + endpoint;
  s += ": " + message + " (";
  if (code != grpc::StatusCode::OK) s += std::string(status_code_name(code)) + ", ";
  s += errc_name(kind);
  s += ")";
  return s;
}

EtcdError local_error(EtcdErrc kind, std::string what, std::string message) {
  EtcdError e;
  e.kind = kind;
  e.what = std::move(what);
  e.message = std::move(message);
  return e;
}

EtcdErrc classify(grpc::StatusCode code, const std::string& message) {
  auto has = [&](const char* s) { return message.find(s) != std::string::npos; };
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE: return EtcdErrc::kUnavailable;
    case grpc::StatusCode::DEADLINE_EXCEEDED: return EtcdErrc::kDeadline;
    case grpc::StatusCode::OUT_OF_RANGE:
      if (has("compacted")) return EtcdErrc::kCompacted;
      if (has("future revision")) return EtcdErrc::kFutureRevision;
      return EtcdErrc::kInvalidArgument;  // "too large lease TTL"
    case grpc::StatusCode::NOT_FOUND: return EtcdErrc::kNotFound;
    case grpc::StatusCode::FAILED_PRECONDITION: return EtcdErrc::kFailedPrecondition;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      if (has("database space exceeded")) return EtcdErrc::kNoSpace;
      // gRPC's own "Received message larger than max" is a size problem too.
      if (has("larger than max")) return EtcdErrc::kTooLarge;
      return EtcdErrc::kResourceExhausted;
    case grpc::StatusCode::INVALID_ARGUMENT:
      if (has("request is too large")) return EtcdErrc::kTooLarge;
      return EtcdErrc::kInvalidArgument;
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED: return EtcdErrc::kPermissionDenied;
    case grpc::StatusCode::CANCELLED: return EtcdErrc::kCanceled;
    default: return EtcdErrc::kInternal;
  }
}

}  // namespace azote::etcd
