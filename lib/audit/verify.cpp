#include "audit/verify.hpp"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "audit/chain.hpp"
#include "base/unique_fd.hpp"

namespace azote::audit {

VerifyReport verify_file(const std::string& path, const VerifyKey& key,
                         const std::string& head_path) {
  VerifyReport rep;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    rep.reason = "cannot open " + path + ": " + std::strerror(errno);
    return rep;
  }
  detail::ScanOutcome scan = detail::scan_log(fd.get(), key);
  rep.records = scan.state.records;
  rep.last_seq = scan.state.last_seq;
  if (!scan.ok) {
    rep.bad_line = scan.bad_line;
    rep.reason = scan.reason;
    return rep;
  }
  rep.chain_ok = true;
  detail::HeadRead head = detail::read_head(head_path.empty() ? head_path_for(path) : head_path, key);
  if (head.status != detail::HeadRead::kOk) {
    rep.reason = head.reason;
    return rep;
  }
  if (auto why = detail::compare_head(head.head, scan.state, nullptr)) {
    rep.reason = *why;
    return rep;
  }
  rep.ok = true;
  return rep;
}

}  // namespace azote::audit
