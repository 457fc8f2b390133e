// Per-ENI counters as Prometheus text (exposition format 0.0.4), served on a Unix
// socket by a thread of its own: one connection, the whole text, EOF (an HTTP GET
// gets an HTTP/1.0 header first). The counters are the Ports' relaxed atomics; the
// data path never waits for a reader.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "cards/net/switch.hpp"
#include "imds/service.hpp"
#include "vhost_user/backend.hpp"

namespace azote::card_net {

struct MetricsSource {
  std::shared_ptr<const Port> port;
  const vhost_user::Backend* backend = nullptr;  // connection counters; may be null
};

// `imds`: the metadata service's counters (null: it does not run; azote_imds_up 0).
std::string render_prometheus(const std::vector<MetricsSource>& sources, const imds::Counters* imds = nullptr);

enum class MetricsErrc { kSocket = 1 };
using MetricsError = Error<MetricsErrc>;

class MetricsServer {
 public:
  static Result<std::unique_ptr<MetricsServer>, MetricsError> start(const std::string& path);
  ~MetricsServer();  // stops the thread, removes the socket
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Once this returns, no rendering uses a source that is not in `sources`.
  void set_sources(std::vector<MetricsSource> sources);
  // The metadata service whose counters are rendered (null: none). It must outlive this
  // server or be replaced first.
  void set_imds(const imds::Service* service);

 private:
  MetricsServer() = default;
  void run();
  void serve(int client);

  std::string path_;
  std::mutex mu_;
  std::vector<MetricsSource> sources_;  // guarded by mu_
  const imds::Service* imds_ = nullptr;  // guarded by mu_
  UniqueFd listen_, stop_;
  std::thread thread_;
};

}  // namespace azote::card_net
