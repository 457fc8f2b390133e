// Client side of the controller's API: the credentials a client presents (a directory
// holding ca.pem, cert.pem and key.pem, as `azote admin issue-cert` writes it), a
// mutual-TLS channel to azote-controller, and the mapping of a failed call's status to
// one message for a person. Used by the azote CLI; a fleet agent can use it as well.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "base/error.hpp"
#include "base/result.hpp"

namespace azote::api {

enum class ClientErrc {
  kMissing = 1,  // a credentials file does not exist (context names it)
  kIo,           // a credentials file exists but cannot be read (errnum set)
  kInvalid,      // a credentials file is empty or not the PEM it should be
};
using ClientError = Error<ClientErrc>;
template <class T>
using ClientResult = Result<T, ClientError>;

struct Credentials {
  std::string ca_pem;    // the host CA: the only root the server certificate may chain to
  std::string cert_pem;  // this client's certificate (OU=role, CN=name)
  std::string key_pem;   // its private key
};

// Reads DIR/ca.pem, DIR/cert.pem and DIR/key.pem (each at most 1 MiB). Errors name the
// file that is missing, unreadable or not PEM. The contents are not parsed further: the
// TLS handshake is what judges them.
ClientResult<Credentials> load_credentials(const std::string& dir);

// "unix:/abs/path", "unix:///abs/path", "host:port", "[v6addr]:port"; the empty string
// when endpoint is usable, otherwise a sentence saying what is wrong with it.
std::string check_endpoint(const std::string& endpoint);

// The name the controller's certificate is issued to; the channel checks the server
// certificate against it whatever the endpoint's host is.
inline constexpr const char* kServerName = "azote-controller";

// A channel with mutual TLS: the server must present a certificate chaining to
// creds.ca_pem issued to kServerName, and the client presents creds.cert_pem. Never
// falls back to an insecure channel. Connecting is lazy: errors show up on the first call.
std::shared_ptr<grpc::Channel> make_channel(const std::string& endpoint, const Credentials& creds);

// A failed call, for a person.
struct ApiError {
  enum class Category {
    kApi,         // the controller answered with an error ("Code: sentence")
    kConnection,  // the controller could not be reached, or the TLS handshake failed
  };
  Category category = Category::kApi;
  std::string code;     // the EC2 error code ("InvalidParameterValue"), or the gRPC code name
  std::string message;  // one line to print as is
  const char* category_name() const { return category == Category::kApi ? "api" : "connection"; }
};

// The server's "Code: sentence" message is kept as is (category api). UNAVAILABLE and
// DEADLINE_EXCEEDED without one become "cannot reach the controller at EP: ..."
// (category connection), with a hint when the TLS handshake was refused. Any other
// status without the server's format is an api error "the controller at EP answered
// CODE: message". With ctx, the trailing metadata "azote-error-code" is read too.
ApiError describe_status(const grpc::Status& status, const std::string& endpoint,
                         const grpc::ClientContext* ctx = nullptr);

// The name of a gRPC status code: "UNAVAILABLE", "INVALID_ARGUMENT", ...
const char* status_code_name(grpc::StatusCode code);

}  // namespace azote::api
