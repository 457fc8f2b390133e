#include "api/client.hpp"

#include <fcntl.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <vector>

#include "base/unique_fd.hpp"

namespace azote::api {
namespace {

constexpr size_t kMaxPemBytes = 1 << 20;

ClientResult<std::string> read_pem(const std::string& path, const char* what,
                                   const char* marker) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) {
      return make_error(ClientErrc::kMissing, std::string(what) + " " + path + " does not exist");
    }
    return errno_error(ClientErrc::kIo, "cannot open " + std::string(what) + " " + path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return errno_error(ClientErrc::kIo, "cannot stat " + std::string(what) + " " + path);
  }
  if (!S_ISREG(st.st_mode)) {
    return make_error(ClientErrc::kInvalid, std::string(what) + " " + path + " is not a regular file");
  }
  std::string data;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(ClientErrc::kIo, "cannot read " + std::string(what) + " " + path);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxPemBytes) {
      return make_error(ClientErrc::kInvalid, std::string(what) + " " + path + " is larger than 1 MiB");
    }
  }
  if (data.find(marker) == std::string::npos) {
    return make_error(ClientErrc::kInvalid, std::string(what) + " " + path +
                                                " is not PEM (no \"" + marker + "\" line)");
  }
  return data;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// "InvalidParameterValue: ..." -> "InvalidParameterValue". EC2 codes are CamelCase words,
// possibly dotted ("InvalidInstanceID.NotFound", "Server.InternalError"); gRPC's own
// messages ("UNAVAILABLE: ...", "failed to connect ...") do not look like that.
std::string api_code_of(const std::string& message) {
  const size_t colon = message.find(": ");
  if (colon == std::string::npos || colon == 0 || colon + 2 >= message.size()) return "";
  const std::string code = message.substr(0, colon);
  if (!std::isupper(static_cast<unsigned char>(code[0]))) return "";
  bool has_lower = false;
  for (char c : code) {
    const auto u = static_cast<unsigned char>(c);
    if (!std::isalnum(u) && c != '.') return "";
    if (std::islower(u)) has_lower = true;
  }
  return has_lower ? code : "";
}

bool looks_like_tls_refusal(const std::string& message) {
  const std::string m = lower(message);
  // A connection that was accepted and then closed during the handshake: with TLS 1.3 the
  // client may finish its side and write before the server's verdict on its certificate
  // arrives, and then sees the closed connection (EPIPE, ECONNRESET) instead of the alert.
  // (A socket nobody listens on gives "No such file" or "Connection refused" instead.)
  for (const char* needle : {"socket closed", "handshake", "ssl", "tls", "certificate", "tsi_", "broken pipe",
                             "connection reset"}) {
    if (m.find(needle) != std::string::npos) return true;
  }
  return false;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(),
                                    [](unsigned char c) { return std::isdigit(c) != 0; });
}

}  // namespace

ClientResult<Credentials> load_credentials(const std::string& dir) {
  if (dir.empty()) {
    return make_error(ClientErrc::kMissing,
                      "no credentials directory (set --credentials or AZOTE_CREDENTIALS)");
  }
  Credentials c;
  AZOTE_TRY(ca, read_pem(dir + "/ca.pem", "CA certificate", "-----BEGIN CERTIFICATE-----"));
  AZOTE_TRY(cert, read_pem(dir + "/cert.pem", "client certificate", "-----BEGIN CERTIFICATE-----"));
  AZOTE_TRY(key, read_pem(dir + "/key.pem", "client key", "PRIVATE KEY-----"));
  c.ca_pem = std::move(ca);
  c.cert_pem = std::move(cert);
  c.key_pem = std::move(key);
  return c;
}

std::string check_endpoint(const std::string& endpoint) {
  if (endpoint.empty()) return "the endpoint is empty";
  for (const char* scheme : {"unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:"}) {
    const std::string s(scheme);
    if (endpoint.rfind(s, 0) == 0) {
      return endpoint.size() > s.size() ? "" : "\"" + endpoint + "\" names no address";
    }
  }
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos) {
    return "\"" + endpoint + "\" is neither unix:PATH nor HOST:PORT";
  }
  const std::string host = endpoint.substr(0, colon);
  const std::string port = endpoint.substr(colon + 1);
  if (!all_digits(port) || port.size() > 5 || std::stoul(port) == 0 || std::stoul(port) > 65535) {
    return "\"" + endpoint + "\" has no port from 1 to 65535";
  }
  if (host.empty()) return "\"" + endpoint + "\" has no host";
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 3) return "\"" + endpoint + "\" has a malformed [IPv6] host";
  } else if (host.find(':') != std::string::npos) {
    return "\"" + endpoint + "\": write an IPv6 host in brackets, [::1]:PORT";
  }
  return "";
}

std::shared_ptr<grpc::Channel> make_channel(const std::string& endpoint, const Credentials& creds) {
  using grpc::experimental::IdentityKeyCertPair;
  using grpc::experimental::StaticDataCertificateProvider;
  auto provider = std::make_shared<StaticDataCertificateProvider>(
      creds.ca_pem, std::vector<IdentityKeyCertPair>{{creds.key_pem, creds.cert_pem}});
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  // A null result (bad options) makes CreateCustomChannel return a lame channel whose
  // calls fail: never an insecure one.
  std::shared_ptr<grpc::ChannelCredentials> channel_creds = grpc::experimental::TlsCredentials(options);
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(kServerName);
  return grpc::CreateCustomChannel(endpoint, channel_creds, args);
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
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    default: return "UNKNOWN";
  }
}

ApiError describe_status(const grpc::Status& status, const std::string& endpoint,
                         const grpc::ClientContext* ctx) {
  const std::string& msg = status.error_message();
  std::string code;
  if (ctx != nullptr) {
    const auto& trailers = ctx->GetServerTrailingMetadata();
    if (auto it = trailers.find("azote-error-code"); it != trailers.end()) {
      code.assign(it->second.data(), it->second.size());
    }
  }
  ApiError e;
  if (!code.empty()) {
    e.code = code;
    e.message = msg.rfind(code + ":", 0) == 0 ? msg : code + ": " + msg;
    return e;
  }
  code = api_code_of(msg);
  if (!code.empty()) {
    e.code = code;
    e.message = msg;
    return e;
  }
  const grpc::StatusCode sc = status.error_code();
  e.code = status_code_name(sc);
  if (sc == grpc::StatusCode::UNAVAILABLE || sc == grpc::StatusCode::DEADLINE_EXCEEDED) {
    e.category = ApiError::Category::kConnection;
    e.message = "cannot reach the controller at " + endpoint + ": " + msg;
    if (looks_like_tls_refusal(msg)) {
      e.message += " (the controller refused this client's certificate, or the CA does not match)";
    }
    return e;
  }
  e.message = "the controller at " + endpoint + " answered " + e.code + (msg.empty() ? "" : ": " + msg);
  return e;
}

}  // namespace azote::api
