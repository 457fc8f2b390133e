// VPC flow logs of one network interface, in the AWS version-2 default format:
//
//   version account-id interface-id srcaddr dstaddr srcport dstport protocol packets
//   bytes start end action log-status
//
// Packets are aggregated per (5-tuple as seen on the wire, action) over a capture
// window (default 60 s; AWS offers 60 s or 600 s). A record's start and end are the
// Unix seconds of its first and last packet in the window; ports are 0 for protocols
// other than TCP and UDP (as AWS writes ICMP). A window ends with one record per flow
// (log-status OK, in order of first packet), or "NODATA" when no packet was seen, and
// "SKIPDATA" (start/end = the window's) after the records when flows beyond
// max_records could not be recorded: a guest cannot grow the log's memory past
// max_records entries per window.
//
// Time: windows follow the monotonic clock the engine reads; timestamps printed are
// monotonic + unix_offset (the card sets it to CLOCK_REALTIME - CLOCK_MONOTONIC).
// Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rate_limit/clock.hpp"
#include "vpc_policy/error.hpp"
#include "vpc_policy/flow.hpp"
#include "vpc_policy/hash_index.hpp"

namespace azote::vpc {

using rate_limit::Nanos;

struct FlowLogConfig {
  bool enabled = false;
  std::string account_id;  // printable, no spaces (AWS: 12 digits)
  Nanos window = std::chrono::seconds(60);  // 1 s .. 1 h
  uint32_t max_records = 10000;             // per window, 1 .. 1 << 20
};

VpcResult<void> validate(const FlowLogConfig& config);

class FlowLog {
 public:
  // The first window starts at `start` (monotonic).
  FlowLog(FlowLogConfig config, std::string interface_id, Nanos start, Nanos unix_offset);

  // Counts one packet of `bytes` bytes decided `verdict` at `now` (monotonic, not before
  // the previous call's). Allocates only when the window's table grows and when a
  // window ends (its lines are formatted then).
  void record(const FlowKey& key, uint32_t bytes, Verdict verdict, Nanos now);
  // Appends the lines of every window that ended at or before `now`, oldest first.
  void flush(Nanos now, std::vector<std::string>& out);
  // Ends the current window at `now` (the interface is going away) and appends all lines.
  void close(Nanos now, std::vector<std::string>& out);

  uint64_t skipped_packets() const { return skipped_total_; }

 private:
  struct Agg {
    uint32_t src_ip, dst_ip;
    uint16_t src_port, dst_port;
    uint8_t protocol;
    Verdict verdict;
    uint64_t packets, bytes;
    int64_t first, last;  // monotonic ns
  };

  void roll(Nanos now);  // ends every window that ended at or before `now`
  void end_window(Nanos end);
  std::string head() const;
  std::string unix_s(int64_t mono_ns) const;

  FlowLogConfig config_;
  std::string interface_id_;
  Nanos unix_offset_;
  Nanos window_start_;
  std::vector<Agg> aggs_;
  detail::HashIndex index_;
  uint64_t skipped_ = 0;  // packets of unrecorded flows in this window
  uint64_t skipped_total_ = 0;
  std::vector<std::string> pending_;  // lines of ended windows not yet flushed
};

}  // namespace azote::vpc
