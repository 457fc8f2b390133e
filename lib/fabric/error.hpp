// The fabric's one error type. Every refusal of the wire format or of the crypto names
// its reason (FabricErrc); the card counts them per peer (or globally when the peer is
// not known yet) and logs the context sparingly: the underlay is reachable by anyone
// on it, and a packet flood must cost a counter increment, not a log line.
#pragma once

#include <cstddef>

#include "base/error.hpp"

namespace azote::fabric {

enum class FabricErrc {
  kTruncated = 1,    // shorter than the Geneve header, an option, or the AEAD tag
  kBadVersion,       // Geneve version != 0
  kBadProtocol,      // protocol type != 0x6558 (Transparent Ethernet Bridging)
  kBadLength,        // option lengths that do not tile the options area exactly
  kBadCriticalBit,   // the C bit disagrees with the options' critical bits
  kOam,              // the O bit: control packets are not part of this fabric
  kCriticalOption,   // a critical option this implementation does not know
  kBadOption,        // the azote security option missing, repeated or of the wrong length
  kUnknownPeer,      // the sender host id is not a configured peer
  kUnknownKey,       // the key id is neither the peer's current key nor its previous one in grace
  kPlaintextRefused, // a plaintext packet from a peer configured with a cipher (or the reverse)
  kAuth,             // the AES-256-GCM tag does not verify
  kReplay,           // sequence number already accepted for this key
  kTooOld,           // sequence number left of the replay window
  kSeqExhausted,     // the sending key has sealed its quota: rotation required
  kNoSpace,          // an output buffer is too small
  kBadConfig,        // a host id, key, key id or cipher the operator gave is unusable
  kCipher,           // OpenSSL failed (a host problem, not a packet problem)
};
inline constexpr size_t kFabricErrcCount = static_cast<size_t>(FabricErrc::kCipher) + 1;
using FabricError = Error<FabricErrc>;
const char* to_string(FabricErrc c);

}  // namespace azote::fabric
