// A Store over a local regular file or block device, driven through io_uring.
//
// Opened with O_DIRECT when the file system accepts it for 512-byte sectors (checked
// with statx(STATX_DIOALIGN) and a probe read); otherwise through the page cache, and
// the log says so. The file is flock'ed (shared for read-only volumes, exclusive
// otherwise) so two cards, or two volumes of one card, never serve it at once.
#pragma once

#include <memory>
#include <string>

#include "base/unique_fd.hpp"
#include "cards/blk/store.hpp"

namespace azote::card_blk {

class FileStore final : public Store {
 public:
  // `allow_direct` false forces the page cache (tests of the buffered path).
  static Result<std::unique_ptr<FileStore>, StoreError> open(const std::string& path, bool read_only,
                                                             bool allow_direct = true);

  const StoreInfo& info() const override { return info_; }
  Result<std::unique_ptr<StoreQueue>, StoreError> open_queue(uint32_t depth) override;
  int fd() const { return fd_.get(); }

 private:
  FileStore() = default;
  UniqueFd fd_;
  StoreInfo info_;
};

}  // namespace azote::card_blk
