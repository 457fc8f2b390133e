// Small file helpers for key material: bounded reads, PEM reads with clear errors, and
// crash-safe replacement of a file (temp file in the same directory, fsync, rename,
// fsync of the directory), so a reader sees either the old or the new contents.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "pki/pki_error.hpp"

namespace azote::pki {

// The whole of a regular file of at most `max_bytes` bytes. kIo (errnum set; ENOENT if
// absent) or kInvalid when it is not a regular file or is larger than max_bytes.
PkiResult<std::string> read_file(const std::string& path, size_t max_bytes);

// A PEM file (at most 1 MiB): kIo naming the path when it cannot be read, kCorrupt
// when it is empty or has no "-----BEGIN " line. Contents are returned unparsed.
PkiResult<std::string> read_pem_file(const std::string& path);

// Replaces `path` with `data` atomically and durably, with permissions `mode` (set on
// the temp file before any byte is written, so secrets are never briefly readable).
PkiResult<void> write_file_atomic(const std::string& path, std::string_view data, mode_t mode);

}  // namespace azote::pki
