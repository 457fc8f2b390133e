#include "controller/tls.hpp"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

namespace azote::controller {
namespace {

class ClientVerifier final : public grpc::experimental::ExternalCertificateVerifier {
 public:
  ClientVerifier(const pki::HostPki& pki, RefusalSink sink) : pki_(pki), sink_(std::move(sink)) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/, grpc::Status* sync_status) override {
    const std::string leaf(request->peer_cert().data(), request->peer_cert().size());
    std::string who, reason;
    if (leaf.empty()) {
      reason = "no client certificate";
    } else if (auto p = pki_.verify_client(leaf); !p) {
      reason = p.error().context.empty() ? p.error().message() : p.error().context;
      if (auto fp = pki::fingerprint_sha256(leaf)) who = "sha256:" + *fp;
    }
    if (reason.empty()) {
      *sync_status = grpc::Status::OK;
      return true;  // verified synchronously
    }
    sink_(who, reason);  // logged with its audit record (rate-bounded there)
    *sync_status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED, reason);
    return true;
  }
  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}

 private:
  const pki::HostPki& pki_;
  RefusalSink sink_;
};

}  // namespace

std::shared_ptr<grpc::ServerCredentials> server_credentials(const pki::HostPki& pki, RefusalSink on_refusal) {
  using namespace grpc::experimental;
  auto provider = std::make_shared<StaticDataCertificateProvider>(
      pki.ca_pem(), std::vector<IdentityKeyCertPair>{{pki.server_key_pem(), pki.server_cert_pem()}});
  TlsServerCredentialsOptions o(provider);
  o.watch_root_certs();
  o.watch_identity_key_cert_pairs();
  // Request a certificate but let ClientVerifier judge it: that is what lets a refusal
  // be audited (with REQUIRE_AND_VERIFY, OpenSSL drops the connection unseen).
  o.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
  o.set_certificate_verifier(ExternalCertificateVerifier::Create<ClientVerifier>(pki, std::move(on_refusal)));
  return grpc::experimental::TlsServerCredentials(o);
}

}  // namespace azote::controller
