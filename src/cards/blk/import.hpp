// Initial content for a new volume (an image's root-volume content): written into the
// backing file by the card itself, before the volume is served, so an encrypted volume
// gets it encrypted with its own key — the controller never handles ciphertext or
// writes next to the data.
#pragma once

#include <cstdint>
#include <string>

#include "base/error.hpp"
#include "cards/blk/crypto.hpp"

namespace azote::card_blk {

enum class ImportErrc { kSource = 1, kTarget, kTooBig, kCrypto };
using ImportError = Error<ImportErrc>;

// Copies `source` to the start of `target` (capacity_bytes long), sector by sector
// (the last one zero-padded), encrypting with `key` when given, then fdatasync.
// Returns the bytes copied.
Result<uint64_t, ImportError> import_content(const std::string& source, const std::string& target,
                                             uint64_t capacity_bytes, const XtsKey* key);

}  // namespace azote::card_blk
