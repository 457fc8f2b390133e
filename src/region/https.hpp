// The region's HTTPS front: libmicrohttpd (GnuTLS) on a TCP address, a pool of threads,
// each request handed whole to one handler: the method, the raw path and query as the
// client sent them (SigV4 signs those, not a decoded form), every header with repeats,
// the body (bounded). Keep-alive as HTTP/1.1 has it; requests larger than max_body get
// 413 without reaching the handler.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/result.hpp"

namespace azote::region {

struct HttpRequest {
  std::string method;
  std::string path;   // raw, percent-encoded as sent
  std::string query;  // raw, without '?'
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string peer;  // "127.0.0.1:50312"
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/xml;charset=UTF-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

using Handler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpsOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port (port() says which)
  std::string cert_pem, key_pem;
  size_t max_body = 1 << 20;
  unsigned threads = 8;
  unsigned connection_timeout_s = 60;
  unsigned max_connections = 512;
};

class HttpsServer {
 public:
  // A sentence naming the address or the TLS material when it cannot start.
  static Result<std::unique_ptr<HttpsServer>, std::string> start(const HttpsOptions& o, Handler handler);
  ~HttpsServer();  // stops accepting, finishes the requests in flight
  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;
  uint16_t port() const;

  struct Impl;

 private:
  explicit HttpsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace azote::region
