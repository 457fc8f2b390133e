// Anti-replay window for one (peer, key id): RFC 6479's ring of 64-bit blocks. The
// highest accepted sequence number and the kWindow numbers below it are tracked;
// anything older is refused as too old, anything seen as a replay. check() never
// changes state; update() is called only once the packet's tag has verified, so a
// forged packet cannot move the window. O(1), no allocation.
#pragma once

#include <array>
#include <cstdint>

#include "fabric/error.hpp"

namespace azote::fabric {

class ReplayWindow {
 public:
  static constexpr uint64_t kBlocks = 32;  // a power of two
  static constexpr uint64_t kWindow = (kBlocks - 1) * 64;  // 1984 packets

  // 0: acceptable; otherwise kReplay or kTooOld. Sequence 0 is never sent: kTooOld.
  FabricErrc check(uint64_t seq) const;
  // Marks `seq` seen (the caller checked it); slides the window forward if needed.
  void update(uint64_t seq);
  uint64_t top() const { return top_; }

 private:
  uint64_t top_ = 0;  // highest accepted; 0: none yet
  std::array<uint64_t, kBlocks> bits_{};
};

}  // namespace azote::fabric
