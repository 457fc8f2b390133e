// Offline verification of an audit log (what `azote audit verify FILE` runs): every
// record's hash and signature, seq continuity, the prev links, and the head anchor that
// catches records cut off the end. See log.hpp for the format.
#pragma once

#include <cstdint>
#include <string>

#include "audit/signing.hpp"

namespace azote::audit {

struct VerifyReport {
  bool ok = false;        // chain intact and the head agrees
  bool chain_ok = false;  // every line verified and linked (true even if the head is bad)
  uint64_t records = 0;   // records verified (before the failure, if any)
  uint64_t last_seq = 0;  // seq of the last verified record
  uint64_t bad_line = 0;  // 1-based line of the failure; 0 if not about one line
  std::string reason;     // one sentence, empty when ok
};

// head_path "" means PATH.head. A missing head file is a failure ("truncation cannot be
// ruled out"), reported with chain_ok still telling whether the records themselves hold.
// A head exactly one record behind the log is accepted: that is a crash between the
// write of the last record and the head rewrite (the next open() rewrites it).
VerifyReport verify_file(const std::string& path, const VerifyKey& key,
                         const std::string& head_path = "");

}  // namespace azote::audit
