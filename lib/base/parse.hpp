// Parsing of user-supplied values (flags, config). Errors name the bad input.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace azote {

// "256M", "1G", "4096K", "1048576" (bytes). Suffixes K/M/G/T (powers of 1024),
// optional trailing "iB"/"B". Returns nullopt on junk or overflow.
std::optional<uint64_t> parse_size(std::string_view s);

// Decimal unsigned integer within [lo, hi]; nullopt otherwise.
std::optional<uint64_t> parse_uint(std::string_view s, uint64_t lo, uint64_t hi);

// "fd:N": a descriptor this process was given at start (N >= 3, the launcher's numbering);
// nullopt for anything else, including a path.
std::optional<int> parse_fd_ref(std::string_view s);

}  // namespace azote
