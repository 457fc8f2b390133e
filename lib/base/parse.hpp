// Parsing of user-supplied values (flags, config). Errors name the bad input.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace azote {

// "256M", "1G", "4096K", "1048576" (bytes). Suffixes K/M/G/T (powers of 1024),
// optional trailing "iB"/"B". Returns nullopt on junk or overflow.
std::optional<uint64_t> parse_size(std::string_view s);

// Decimal unsigned integer within [lo, hi]; nullopt otherwise.
std::optional<uint64_t> parse_uint(std::string_view s, uint64_t lo, uint64_t hi);

// "fd:N": a descriptor this process was given at start (N >= 3, the launcher's numbering);
// nullopt for anything else, including a path.
std::optional<int> parse_fd_ref(std::string_view s);

// A service's command line split into its flags, in order: "-h"/"--help" and "--version"
// end it (help or version set, the rest ignored); "--NAME=VALUE" and "--NAME VALUE" for
// the names in `with_value`. Anything else is refused with a sentence naming it:
// "unknown option --x (see --help)", "--x needs a value", or "unexpected argument "x"
// (HINT; see --help)" for a word that is not an option.
struct CommandLine {
  bool help = false, version = false;
  std::vector<std::pair<std::string, std::string>> flags;
  std::string error;  // empty: the split succeeded
};
CommandLine split_command_line(const std::vector<std::string>& args, const std::set<std::string>& with_value,
                               std::string_view stray_hint = "");

}  // namespace azote
