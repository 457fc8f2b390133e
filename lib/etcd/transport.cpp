#include "etcd/transport.hpp"

#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <cctype>

namespace azote::etcd::detail {
namespace {

int ms(std::chrono::milliseconds d) {
  return static_cast<int>(std::clamp<int64_t>(d.count(), 1, INT32_MAX));
}

// The host part of "host:port" / "[v6]:port".
std::string host_of(const std::string& address) {
  if (!address.empty() && address[0] == '[') return address.substr(1, address.find(']') - 1);
  return address.substr(0, address.rfind(':'));
}

}  // namespace

std::string check_endpoint(std::string_view endpoint) {
  if (endpoint.empty()) return "an endpoint is empty";
  const std::string ep(endpoint);
  if (ep.find("://") != std::string::npos) {
    return "endpoint \"" + ep + "\" has a scheme: give host:port (TLS is Options::tls)";
  }
  const size_t colon = ep.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == ep.size()) {
    return "endpoint \"" + ep + "\" is not host:port";
  }
  if (ep[0] == '[' && ep[colon - 1] != ']') return "endpoint \"" + ep + "\" is not [v6addr]:port";
  if (ep[0] != '[' && ep.find(':') != colon) {
    return "endpoint \"" + ep + "\" is not host:port (an IPv6 address goes in brackets)";
  }
  const std::string port = ep.substr(colon + 1);
  if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); }) ||
      std::stoi(port) < 1 || std::stoi(port) > 65535) {
    return "endpoint \"" + ep + "\" has no port in 1..65535";
  }
  for (char c : ep) {
    if (std::isspace(static_cast<unsigned char>(c)) || c == '/' || c == ',') {
      return "endpoint \"" + ep + "\" has a character not allowed in host:port";
    }
  }
  return "";
}

Transport::Transport(std::vector<std::string> addresses, Options options)
    : options_(std::move(options)), addresses_(std::move(addresses)) {
  for (const auto& a : addresses_) endpoints_.push_back(make_endpoint(a));
}

std::unique_ptr<Endpoint> Transport::make_endpoint(const std::string& address) const {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, ms(options_.keepalive_time));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(options_.keepalive_timeout));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // a quiet watch still gets pinged
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, ms(options_.reconnect_backoff_max));
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // this client's connections are its own
  args.SetMaxReceiveMessageSize(options_.max_receive_bytes);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options_.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options_.tls->ca_pem;
    ssl.pem_cert_chain = options_.tls->cert_pem;
    ssl.pem_private_key = options_.tls->key_pem;
    creds = grpc::SslCredentials(ssl);
    args.SetSslTargetNameOverride(options_.tls->server_name.empty() ? host_of(address)
                                                                     : options_.tls->server_name);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  auto e = std::make_unique<Endpoint>();
  e->address = address;
  e->channel = grpc::CreateCustomChannel(address, creds, args);
  e->kv = etcdserverpb::KV::NewStub(e->channel);
  e->watch = etcdserverpb::Watch::NewStub(e->channel);
  e->lease = etcdserverpb::Lease::NewStub(e->channel);
  e->maintenance = etcdserverpb::Maintenance::NewStub(e->channel);
  e->cluster = etcdserverpb::Cluster::NewStub(e->channel);
  return e;
}

bool Transport::connected(Endpoint& e, Clock::time_point deadline) {
  grpc_connectivity_state s = e.channel->GetState(true);
  while (s != GRPC_CHANNEL_READY) {
    if (s == GRPC_CHANNEL_TRANSIENT_FAILURE || s == GRPC_CHANNEL_SHUTDOWN) return false;
    if (!e.channel->WaitForStateChange(s, deadline)) return false;
    s = e.channel->GetState(true);
  }
  return true;
}

EtcdResult<size_t> Transport::pick(size_t from, Clock::time_point deadline, const std::string& what) {
  const size_t n = endpoints_.size();
  for (size_t attempt = 0;; ++attempt) {
    if (attempt > 0 && attempt % n == 0) pause_before_next_round(deadline);
    if (Clock::now() >= deadline) break;
    const size_t i = (from + attempt) % n;
    if (connected(*endpoints_[i], std::min(deadline, Clock::now() + options_.connect_timeout))) return i;
  }
  EtcdError err = local_error(EtcdErrc::kUnavailable, what, "no endpoint could be connected to before the deadline");
  err.code = grpc::StatusCode::UNAVAILABLE;
  return Unexpected{std::move(err)};
}

void Transport::prepare(grpc::ClientContext& ctx, Clock::time_point deadline) {
  ctx.set_deadline(deadline);
  ctx.AddMetadata("hasleader", "true");
}

EtcdError Transport::error(const grpc::Status& st, const std::string& endpoint, const std::string& what) const {
  EtcdError e;
  e.code = st.error_code();
  e.message = st.error_message();
  e.kind = classify(e.code, e.message);
  e.endpoint = endpoint;
  e.what = what;
  return e;
}

bool Transport::retryable(const EtcdError& err, Retry retry) {
  if (err.kind != EtcdErrc::kUnavailable) return false;
  if (retry == Retry::kIdempotent) return true;
  // Refused before any proposal: safe to send again.
  return err.message == "etcdserver: no leader" || err.message == "etcdserver: not capable" ||
         err.message == "etcdserver: rpc not supported for learner" || err.message == "cannot connect";
}

void Transport::pause_before_next_round(Clock::time_point deadline) const {
  const auto left = deadline - Clock::now();
  const auto pause = std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(100));
  if (left > Clock::duration::zero()) std::this_thread::sleep_for(std::min(left, pause));
}

EtcdError Transport::give_up(EtcdError last) {
  last.message = "no member answered before the deadline (last: " + last.message + ")";
  return last;
}

KeyValue from_pb(const mvccpb::KeyValue& kv) {
  KeyValue r;
  r.key = kv.key();
  r.value = kv.value();
  r.create_revision = kv.create_revision();
  r.mod_revision = kv.mod_revision();
  r.version = kv.version();
  r.lease = kv.lease();
  return r;
}

}  // namespace azote::etcd::detail
