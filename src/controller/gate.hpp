// The controller's listening socket, in front of gRPC.
//
// gRPC judges a client's certificate through our verifier (tls.cpp), so those
// refusals are audited; but it drops other failed handshakes — bytes that are not
// TLS, a ClientHello without ALPN "h2", one OpenSSL refuses — before any hook of ours
// runs, and nobody would know. So the controller accepts connections itself: the Gate
// reads each connection's first flight and lets OpenSSL parse it as a TLS server would
// (a throw-away SSL object over memory BIOs, configured like gRPC's: TLS 1.2-1.3, the
// same certificate). A connection whose ClientHello OpenSSL accepts and that offers
// ALPN h2 is handed, with the bytes read so far, to gRPC's external-connection
// acceptor, which does the real handshake; every other one is closed and reported to
// the RefusalAggregator (so: audited, aggregated under a flood) with its reason:
//   not TLS (OpenSSL's reason)           the first bytes are not a TLS ClientHello
//   no ALPN h2 (...)                     no ALPN, or ALPN without h2
//   TLS handshake refused (reason)       OpenSSL refuses the ClientHello (versions,
//                                        ciphers, groups, signature algorithms)
//   closed before a ClientHello          the peer went away first
//   no complete ClientHello within 10 s  it took too long (or sent nothing)
//   ClientHello larger than 64 KiB
//   closed to make room: 256 connections were waiting for their ClientHello
//                                        (the one waiting longest makes room for a new one)
//   controller stopping                  still waiting when the controller stops
// The peer is "tcp:ADDRESS" or, on a unix socket, "unix:uid=N" (SO_PEERCRED).
//
// The Gate never completes a handshake, signs nothing and holds no session: it only
// decides whether gRPC gets to see the connection.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/server_builder.h>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "controller/refusals.hpp"
#include "pki/pki.hpp"

namespace azote::controller {

enum class GateErrc { kListen = 1, kTls };
using GateError = Error<GateErrc>;

struct GateLimits {
  // How long a connection may take to send its ClientHello (honest clients: at once).
  std::chrono::milliseconds hello_timeout{10'000};
  // Connections waiting for their ClientHello at one time; one more closes the oldest.
  size_t max_waiting = 256;
};

class Gate {
 public:
  // Binds and listens on `endpoint` (unix:PATH or HOST:PORT; every address HOST
  // resolves to). Nothing is accepted before start().
  static Result<std::unique_ptr<Gate>, GateError> listen(const std::string& endpoint, const pki::HostPki& pki,
                                                         RefusalAggregator& refusals, GateLimits limits = {});
  ~Gate();  // stop()
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  // Starts accepting; screened connections go to `acceptor` (the gRPC server must be
  // started: gRPC drops, and leaks, connections it gets before).
  void start(std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor);
  // Stops accepting (before the gRPC server shuts down); connections still waiting
  // for their ClientHello are closed and reported ("controller stopping").
  void stop();

  struct Impl;

 private:
  explicit Gate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace azote::controller
