#include "fabric/error.hpp"

namespace azote::fabric {

const char* to_string(FabricErrc c) {
  switch (c) {
    case FabricErrc::kTruncated: return "truncated";
    case FabricErrc::kBadVersion: return "bad_version";
    case FabricErrc::kBadProtocol: return "bad_protocol";
    case FabricErrc::kBadLength: return "bad_length";
    case FabricErrc::kBadCriticalBit: return "bad_critical_bit";
    case FabricErrc::kOam: return "oam";
    case FabricErrc::kCriticalOption: return "critical_option";
    case FabricErrc::kBadOption: return "bad_option";
    case FabricErrc::kUnknownPeer: return "unknown_peer";
    case FabricErrc::kUnknownKey: return "unknown_key";
    case FabricErrc::kPlaintextRefused: return "plaintext_refused";
    case FabricErrc::kAuth: return "auth_failure";
    case FabricErrc::kReplay: return "replay";
    case FabricErrc::kTooOld: return "too_old";
    case FabricErrc::kSeqExhausted: return "sequence_exhausted";
    case FabricErrc::kNoSpace: return "no_space";
    case FabricErrc::kBadConfig: return "bad_config";
    case FabricErrc::kCipher: return "cipher";
  }
  return "?";
}

}  // namespace azote::fabric
