#include "cards/net/metrics.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>

#include "base/log.hpp"

namespace azote::card_net {
namespace {

uint64_t get(const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); }

}  // namespace

std::string render_prometheus(const std::vector<MetricsSource>& sources, const imds::Counters* imds) {
  runtime::PromText out;
  auto header = [&](const char* name, const char* type, const char* help) { out.header(name, type, help); };
  auto labels = [](const MetricsSource& s) {
    return runtime::PromText::label("eni", s.port->id()) + "," +
           runtime::PromText::label("socket", s.port->spec().socket);
  };
  auto sample = [&](const char* name, const std::string& l, uint64_t v) { out.sample(name, l, v); };
  auto scalar = [&](const char* name, const char* type, const char* help, auto field) {
    header(name, type, help);
    for (const auto& s : sources) sample(name, labels(s), field(s));
  };
  scalar("azote_net_tx_packets_total", "counter", "Frames the guest transmitted (dropped ones included).",
         [](const MetricsSource& s) { return get(s.port->counters().tx_packets); });
  scalar("azote_net_tx_bytes_total", "counter", "Bytes of the frames the guest transmitted.",
         [](const MetricsSource& s) { return get(s.port->counters().tx_bytes); });
  scalar("azote_net_rx_packets_total", "counter", "Frames delivered into the guest's receive queue.",
         [](const MetricsSource& s) { return get(s.port->counters().rx_packets); });
  scalar("azote_net_rx_bytes_total", "counter", "Bytes of the frames delivered to the guest.",
         [](const MetricsSource& s) { return get(s.port->counters().rx_bytes); });
  scalar("azote_net_forwarded_total", "counter", "Frames routed from this ENI to another one.",
         [](const MetricsSource& s) { return get(s.port->counters().forwarded); });
  header("azote_net_drops_total", "counter", "Frames not delivered, by reason, counted where they died.");
  for (const auto& s : sources)
    for (size_t d = 0; d < kDropCount; ++d)
      sample("azote_net_drops_total", labels(s) + ",reason=\"" + to_string(static_cast<Drop>(d)) + "\"",
             get(s.port->counters().drops[d]));
  header("azote_net_parse_errors_total", "counter", "Frames lib/net refused, by error.");
  for (const auto& s : sources)
    for (size_t e = 1; e < net::kNetErrcCount; ++e)
      sample("azote_net_parse_errors_total", labels(s) + ",error=\"" + net::to_string(static_cast<net::NetErrc>(e)) + "\"",
             get(s.port->counters().parse_errors[e]));
  header("azote_net_service_replies_total", "counter", "Answers the card sent the guest, by service.");
  for (const auto& s : sources) {
    const PortCounters& c = s.port->counters();
    sample("azote_net_service_replies_total", labels(s) + ",service=\"arp\"", get(c.arp_replies));
    sample("azote_net_service_replies_total", labels(s) + ",service=\"dhcp\"", get(c.dhcp_replies));
    sample("azote_net_service_replies_total", labels(s) + ",service=\"dns\"", get(c.dns_replies));
    sample("azote_net_service_replies_total", labels(s) + ",service=\"icmp\"", get(c.icmp_replies));
  }
  scalar("azote_net_queue_errors_total", "counter", "Virtqueues the driver broke (the device then needs a reset).",
         [](const MetricsSource& s) { return get(s.port->counters().queue_errors); });
  scalar("azote_net_connected", "gauge", "1 while a hypervisor is connected to the ENI's socket.",
         [](const MetricsSource& s) { return uint64_t{s.backend != nullptr && s.backend->connected()}; });
  scalar("azote_net_connections_total", "counter", "Hypervisor connections accepted on the ENI's socket.",
         [](const MetricsSource& s) { return s.backend != nullptr ? s.backend->accepted() : 0; });
  scalar("azote_net_inbox_frames", "gauge", "Frames waiting for the guest's receive buffers.",
         [](const MetricsSource& s) { return static_cast<uint64_t>(s.port->inbox().size()); });
  // Rate limits (limits.hpp): per direction, tx = guest -> card, rx = card -> guest.
  scalar("azote_net_limit_bandwidth_mbps", "gauge", "The ENI's bandwidth limit per direction, Mbit/s (0: none).",
         [](const MetricsSource& s) { const auto l = s.port->limits().get(); return l ? l->bandwidth_mbps : 0; });
  scalar("azote_net_limit_pps", "gauge", "The ENI's packets-per-second limit per direction (0: none).",
         [](const MetricsSource& s) { const auto l = s.port->limits().get(); return l ? l->pps : 0; });
  auto per_direction = [&](const char* name, const char* type, const char* help, auto field) {
    header(name, type, help);
    for (const auto& s : sources) {
      sample(name, labels(s) + ",direction=\"tx\"", field(s.port->limits().tx()));
      sample(name, labels(s) + ",direction=\"rx\"", field(s.port->limits().rx()));
    }
  };
  per_direction("azote_net_limit_delayed_frames_total", "counter",
                "Frames the ENI's rate limit held back at least once (tx: left in the guest's ring, rx: in the inbox).",
                [](const DirectionLimiter& d) { return d.delayed_frames(); });
  per_direction("azote_net_limit_delayed_bytes_total", "counter", "Bytes of the frames the rate limit held back.",
                [](const DirectionLimiter& d) { return d.delayed_bytes(); });
  header("azote_net_limit_throttled_seconds_total", "counter",
         "Time the head of the direction waited for the rate limit (the current wait included).");
  for (const auto& s : sources)
    for (const auto& [dir, d] : {std::pair<const char*, const DirectionLimiter*>{"tx", &s.port->limits().tx()},
                                 std::pair<const char*, const DirectionLimiter*>{"rx", &s.port->limits().rx()}}) {
      out.seconds("azote_net_limit_throttled_seconds_total", labels(s) + ",direction=\"" + dir + "\"", d->throttled_ns());
    }
  header("azote_net_imds_packets_total", "counter",
         "Packets to 169.254.169.254 the metadata service took (in), its replies put in the inbox (out).");
  for (const auto& s : sources) {
    sample("azote_net_imds_packets_total", labels(s) + ",direction=\"in\"", get(s.port->counters().imds_in));
    sample("azote_net_imds_packets_total", labels(s) + ",direction=\"out\"", get(s.port->counters().imds_out));
  }
  // The metadata service as a whole (no per-ENI labels).
  auto plain = sample;
  header("azote_imds_up", "gauge", "1 while the instance metadata service runs.");
  plain("azote_imds_up", "", imds != nullptr ? 1 : 0);
  if (imds != nullptr) {
    header("azote_imds_responses_total", "counter", "HTTP responses of the metadata service, by status.");
    for (size_t i = 0; i < imds->responses.size(); ++i)
      plain("azote_imds_responses_total",
            "status=\"" + (i < imds::kCountedStatuses.size() ? std::to_string(imds::kCountedStatuses[i]) : "other") + "\"",
            imds->responses[i]);
    header("azote_imds_tokens_issued_total", "counter", "IMDSv2 session tokens issued.");
    plain("azote_imds_tokens_issued_total", "", imds->tokens_issued);
    header("azote_imds_refusals_total", "counter", "Requests the metadata service refused, by reason.");
    for (size_t i = 1; i < imds->refusals.size(); ++i)
      plain("azote_imds_refusals_total", "reason=\"" + std::string(imds::to_string(static_cast<imds::Refusal>(i))) + "\"",
            imds->refusals[i]);
    header("azote_imds_dropped_total", "counter", "Packets the metadata service dropped, by direction and reason.");
    for (size_t i = 0; i < imds->dropped_in.size(); ++i)
      plain("azote_imds_dropped_total",
            "direction=\"in\",reason=\"" + std::string(imds::to_string(static_cast<imds::Drop>(i))) + "\"",
            imds->dropped_in[i]);
    for (size_t i = 0; i < imds->dropped_out.size(); ++i)
      plain("azote_imds_dropped_total",
            "direction=\"out\",reason=\"" + std::string(imds::to_string(static_cast<imds::Drop>(i))) + "\"",
            imds->dropped_out[i]);
    header("azote_imds_ttl_rewritten_total", "counter", "Kernel segments whose TTL was not 1 (should stay 0).");
    plain("azote_imds_ttl_rewritten_total", "", imds->ttl_rewritten);
    header("azote_imds_connections_total", "counter", "TCP connections the metadata service accepted.");
    plain("azote_imds_connections_total", "", imds->connections);
  }
  return out.take();
}

Result<std::unique_ptr<MetricsServer>, MetricsError> MetricsServer::start(const std::string& path) {
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  auto e = runtime::TextEndpoint::start(path, [p = m.get()] {
    std::lock_guard lock(p->mu_);
    std::optional<imds::Counters> c;
    if (p->imds_ != nullptr) c = p->imds_->counters();
    return render_prometheus(p->sources_, c ? &*c : nullptr);
  });
  if (!e) return make_error(MetricsErrc::kSocket, e.error().message(), e.error().errnum);
  m->endpoint_ = std::move(e).value();
  return m;
}

void MetricsServer::set_sources(std::vector<MetricsSource> sources) {
  std::lock_guard lock(mu_);
  sources_ = std::move(sources);
}

void MetricsServer::set_imds(const imds::Service* service) {
  std::lock_guard lock(mu_);
  imds_ = service;
}

}  // namespace azote::card_net
