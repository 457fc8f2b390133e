#include "region/https.hpp"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "base/log.hpp"

namespace azote::region {

struct HttpsServer::Impl {
  HttpsOptions opt;
  Handler handler;
  MHD_Daemon* daemon = nullptr;
  uint16_t port = 0;

  // One per request, from the URI callback (which sees the raw request target) until
  // MHD says the request is done.
  struct Pending {
    HttpRequest req;
    bool too_large = false;
  };

  static void* on_uri(void*, const char* uri, MHD_Connection*) {
    auto* p = new Pending;
    const std::string target = uri != nullptr ? uri : "/";
    const size_t q = target.find('?');
    p->req.path = target.substr(0, q);
    if (q != std::string::npos) p->req.query = target.substr(q + 1);
    return p;
  }

  static MHD_Result queue(MHD_Connection* c, const HttpResponse& r) {
    MHD_Response* resp =
        MHD_create_response_from_buffer(r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
    if (resp == nullptr) return MHD_NO;
    bool ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type.c_str()) == MHD_YES;
    for (const auto& [k, v] : r.headers) ok = ok && MHD_add_response_header(resp, k.c_str(), v.c_str()) == MHD_YES;
    ok = ok && MHD_add_response_header(resp, MHD_HTTP_HEADER_SERVER, "AmazonEC2") == MHD_YES;
    const MHD_Result res = ok ? MHD_queue_response(c, static_cast<unsigned>(r.status), resp) : MHD_NO;
    MHD_destroy_response(resp);
    return res;
  }

  static MHD_Result on_access(void* cls, MHD_Connection* c, const char*, const char* method, const char*,
                              const char* upload, size_t* upload_size, void** req_cls) {
    auto* self = static_cast<Impl*>(cls);
    auto* p = static_cast<Pending*>(*req_cls);
    if (p == nullptr) return MHD_NO;
    if (p->req.method.empty()) {  // the first call: headers only
      p->req.method = method;
      MHD_get_connection_values(
          c, MHD_HEADER_KIND,
          [](void* h, MHD_ValueKind, const char* k, const char* v) -> MHD_Result {
            static_cast<HttpRequest*>(h)->headers.emplace_back(k, v != nullptr ? v : "");
            return MHD_YES;
          },
          &p->req);
      if (const auto* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
          info != nullptr && info->client_addr != nullptr && info->client_addr->sa_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(info->client_addr);
        char buf[INET_ADDRSTRLEN] = {};
        ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
        p->req.peer = std::string(buf) + ":" + std::to_string(ntohs(in->sin_port));
      }
      return MHD_YES;
    }
    if (*upload_size != 0) {  // body bytes
      if (p->req.body.size() + *upload_size > self->opt.max_body) {
        p->too_large = true;
      } else {
        p->req.body.append(upload, *upload_size);
      }
      *upload_size = 0;
      return MHD_YES;
    }
    if (p->too_large) {
      HttpResponse r;
      r.status = 413;
      r.content_type = "text/plain";
      r.body = "request body larger than " + std::to_string(self->opt.max_body) + " bytes\n";
      return queue(c, r);
    }
    return queue(c, self->handler(p->req));
  }

  static void on_completed(void*, MHD_Connection*, void** req_cls, MHD_RequestTerminationCode) {
    delete static_cast<Pending*>(*req_cls);
    *req_cls = nullptr;
  }

  static void on_log(void*, const char* fmt, va_list ap) {
    char buf[512];
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = std::strlen(buf);
    while (n > 0 && buf[n - 1] == '\n') buf[--n] = 0;
    LOG_WARN("https: %s", buf);
  }
};

HttpsServer::HttpsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpsServer::~HttpsServer() {
  if (impl_ && impl_->daemon != nullptr) MHD_stop_daemon(impl_->daemon);
}
uint16_t HttpsServer::port() const { return impl_->port; }

Result<std::unique_ptr<HttpsServer>, std::string> HttpsServer::start(const HttpsOptions& o, Handler handler) {
  if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
    return Unexpected{std::string("this libmicrohttpd has no TLS support")};
  auto impl = std::make_unique<Impl>();
  impl->opt = o;
  impl->handler = std::move(handler);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(o.port);
  if (::inet_pton(AF_INET, o.address.c_str(), &sa.sin_addr) != 1)
    return Unexpected{"listen address " + o.address + " is not an IPv4 address"};
  impl->daemon = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TLS | MHD_USE_ERROR_LOG, o.port, nullptr, nullptr,
      &Impl::on_access, impl.get(), MHD_OPTION_EXTERNAL_LOGGER, &Impl::on_log, impl.get(), MHD_OPTION_SOCK_ADDR, &sa,
      MHD_OPTION_HTTPS_MEM_CERT, o.cert_pem.c_str(), MHD_OPTION_HTTPS_MEM_KEY, o.key_pem.c_str(),
      MHD_OPTION_THREAD_POOL_SIZE, o.threads, MHD_OPTION_CONNECTION_LIMIT, o.max_connections,
      MHD_OPTION_CONNECTION_TIMEOUT, o.connection_timeout_s, MHD_OPTION_URI_LOG_CALLBACK, &Impl::on_uri, impl.get(),
      MHD_OPTION_NOTIFY_COMPLETED, &Impl::on_completed, impl.get(), MHD_OPTION_END);
  if (impl->daemon == nullptr)
    return Unexpected{"cannot serve HTTPS on " + o.address + ":" + std::to_string(o.port) +
                      " (address in use, or the certificate and key do not load)"};
  const MHD_DaemonInfo* info = MHD_get_daemon_info(impl->daemon, MHD_DAEMON_INFO_BIND_PORT);
  impl->port = info != nullptr ? info->port : o.port;
  return std::unique_ptr<HttpsServer>(new HttpsServer(std::move(impl)));
}

}  // namespace azote::region
