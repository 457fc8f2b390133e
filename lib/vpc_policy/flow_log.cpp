#include "vpc_policy/flow_log.hpp"

#include <utility>

#include "vpc_policy/security_group.hpp"

namespace azote::vpc {

VpcResult<void> validate(const FlowLogConfig& c) {
  if (!c.enabled) return {};
  if (!valid_id(c.account_id)) {
    return make_error(VpcErrc::kInvalid, "flow log account id must be printable, no spaces");
  }
  if (c.window < std::chrono::seconds(1) || c.window > std::chrono::hours(1)) {
    return make_error(VpcErrc::kInvalid, "flow log window must be 1 s .. 1 h");
  }
  if (c.max_records < 1 || c.max_records > (1u << 20)) {
    return make_error(VpcErrc::kInvalid, "flow log max_records must be 1..1048576");
  }
  return {};
}

FlowLog::FlowLog(FlowLogConfig config, std::string interface_id, Nanos start,
                 Nanos unix_offset)
    : config_(std::move(config)),
      interface_id_(std::move(interface_id)),
      unix_offset_(unix_offset),
      window_start_(start) {}

void FlowLog::record(const FlowKey& key, uint32_t bytes, Verdict verdict, Nanos now) {
  if (now >= window_start_ + config_.window) roll(now);
  const bool ports = key.protocol == kProtoTcp || key.protocol == kProtoUdp;
  const uint16_t sport = ports ? key.src_port : 0;
  const uint16_t dport = ports ? key.dst_port : 0;
  const uint64_t a = (uint64_t{key.src_ip} << 32) | key.dst_ip;
  const uint64_t b = (uint64_t{sport} << 32) | (uint64_t{dport} << 16) |
                     (uint64_t{key.protocol} << 8) | static_cast<uint64_t>(verdict);
  const uint64_t h = detail::mix64(detail::mix64(a) ^ b);
  uint32_t id = index_.find(h, [&](uint32_t i) {
    const Agg& g = aggs_[i];
    return g.src_ip == key.src_ip && g.dst_ip == key.dst_ip && g.src_port == sport &&
           g.dst_port == dport && g.protocol == key.protocol && g.verdict == verdict;
  });
  if (id == detail::HashIndex::kNone) {
    if (aggs_.size() >= config_.max_records) {
      ++skipped_;
      ++skipped_total_;
      return;
    }
    id = static_cast<uint32_t>(aggs_.size());
    aggs_.push_back(Agg{key.src_ip, key.dst_ip, sport, dport, key.protocol, verdict, 0, 0,
                        now.count(), now.count()});
    index_.insert(h, id);
  }
  Agg& g = aggs_[id];
  ++g.packets;
  g.bytes += bytes;
  g.last = now.count();
}

void FlowLog::flush(Nanos now, std::vector<std::string>& out) {
  roll(now);
  for (std::string& line : pending_) out.push_back(std::move(line));
  pending_.clear();
}

void FlowLog::close(Nanos now, std::vector<std::string>& out) {
  roll(now);
  if (now > window_start_) end_window(now);
  window_start_ = now;
  flush(now, out);
}

void FlowLog::roll(Nanos now) {
  while (now >= window_start_ + config_.window) {
    end_window(window_start_ + config_.window);
    window_start_ += config_.window;
  }
}

std::string FlowLog::head() const {
  return "2 " + config_.account_id + " " + interface_id_ + " ";
}

std::string FlowLog::unix_s(int64_t mono_ns) const {
  const auto t = std::chrono::floor<std::chrono::seconds>(Nanos(mono_ns) + unix_offset_);
  return std::to_string(t.count());
}

void FlowLog::end_window(Nanos end) {
  const std::string start_s = unix_s(window_start_.count());
  const std::string end_s = unix_s(end.count());
  if (aggs_.empty() && skipped_ == 0) {
    pending_.push_back(head() + "- - - - - - - " + start_s + " " + end_s + " - NODATA");
  }
  for (const Agg& g : aggs_) {
    std::string line = head();
    line += format_ipv4(g.src_ip);
    line += ' ';
    line += format_ipv4(g.dst_ip);
    line += ' ' + std::to_string(g.src_port) + ' ' + std::to_string(g.dst_port) + ' ' +
            std::to_string(g.protocol) + ' ' + std::to_string(g.packets) + ' ' +
            std::to_string(g.bytes) + ' ' + unix_s(g.first) + ' ' + unix_s(g.last) +
            (g.verdict == Verdict::kAccept ? " ACCEPT OK" : " REJECT OK");
    pending_.push_back(std::move(line));
  }
  if (skipped_ > 0) {
    pending_.push_back(head() + "- - - - - - - " + start_s + " " + end_s + " - SKIPDATA");
  }
  aggs_.clear();
  index_.clear();
  skipped_ = 0;
}

}  // namespace azote::vpc
