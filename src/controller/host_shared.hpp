// What host.cpp and host_enclaves.cpp share: limits of the processes they start, and
// small helpers over their files and control sockets.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace azote::controller::host_shared {

using namespace std::chrono_literals;

inline constexpr auto kControlTimeout = 10s;
inline constexpr int kStopGraceMs = 10'000;
inline constexpr size_t kConsoleBytes = 64 * 1024;
// azote-hv beyond guest memory: its code, KVM's per-vCPU structures, the vhost-user
// frontend; and threads beyond one per vCPU.
inline constexpr uint64_t kHvOverheadMib = 96;
inline constexpr uint64_t kHvExtraPids = 16;

// The last `max` bytes of a file ("" if it cannot be read).
std::string read_tail(const std::string& path, size_t max);
// Whether the process behind a control socket answers at all (a refusal of the
// unknown "ping" is an answer): it is alive and its control loop turns.
bool answers(const std::string& ctl, std::chrono::milliseconds timeout);
// A sentence for an azote-hv exit status.
std::string exit_reason(int status);

}  // namespace azote::controller::host_shared
