// Mutual TLS for the controller's gRPC server. The server asks every client for a
// certificate and checks it itself (lib/pki: this host's CA, validity, clientAuth,
// revocation, a role) inside the handshake, so a refused client never reaches HTTP/2
// and every refusal — no certificate, another CA, expired, revoked — goes to the sink
// with its reason (then to the audit log, through the RefusalAggregator). Connections
// that fail before this check (not TLS, no ALPN h2) are refused and reported by the
// Gate (gate.hpp) before gRPC sees them. gRPC 1.51 offers no TLS version floor through
// its API; both ends here negotiate TLS 1.3 (tests check that with openssl s_client).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <grpcpp/security/server_credentials.h>

#include "pki/pki.hpp"

namespace azote::controller {

using RefusalSink = std::function<void(const std::string& who, const std::string& reason)>;

std::shared_ptr<grpc::ServerCredentials> server_credentials(const pki::HostPki& pki, RefusalSink on_refusal);

}  // namespace azote::controller
