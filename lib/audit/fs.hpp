// Internal: small durable-file helpers shared by key files and the head sidecar.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "audit/error.hpp"
#include "base/unique_fd.hpp"

namespace azote::audit::detail {

// The directory holding path ("." for a bare name).
std::string dir_of(const std::string& path);
// An O_RDONLY|O_DIRECTORY fd of path's directory, for fsyncing renames into it.
AuditResult<UniqueFd> open_dir_of(const std::string& path);
// Writes data to PATH.tmp (created with mode, truncated), fsyncs it, renames it over
// path and fsyncs the directory (dirfd if valid, else path's directory), so path holds
// either the old or the new content after a crash, never a mix.
AuditResult<void> write_file_atomic(const std::string& path, std::string_view data, mode_t mode,
                                    int dirfd = -1);
// Writes all of data at the file's current position (retrying only EINTR/short writes).
bool write_all(int fd, const char* data, size_t n);
// Reads the whole of a (small) file; errnum ENOENT when it does not exist.
AuditResult<std::string> read_small_file(const std::string& path, size_t max_bytes);

}  // namespace azote::audit::detail
