// Per-ENI counters as Prometheus text (exposition format 0.0.4), served on a Unix
// socket by a thread of its own: one connection, the whole text, EOF (an HTTP GET
// gets an HTTP/1.0 header first, a request within 100 ms decides). The counters are the Ports' relaxed atomics; the
// data path never waits for a reader.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "runtime/runtime.hpp"
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

// The text on `--metrics unix:PATH` (lib/runtime TextEndpoint: a thread of its own, a
// plain-text or HTTP/1.0 answer, a slow reader given 1 s).
class MetricsServer {
 public:
  static Result<std::unique_ptr<MetricsServer>, MetricsError> start(const std::string& path);

  // Once this returns, no rendering uses a source that is not in `sources`.
  void set_sources(std::vector<MetricsSource> sources);
  // The metadata service whose counters are rendered (null: none). It must outlive this
  // server or be replaced first.
  void set_imds(const imds::Service* service);

 private:
  MetricsServer() = default;
  std::mutex mu_;
  std::vector<MetricsSource> sources_;  // guarded by mu_
  const imds::Service* imds_ = nullptr;  // guarded by mu_
  std::unique_ptr<runtime::TextEndpoint> endpoint_;  // declared last: stopped first
};

}  // namespace azote::card_net
