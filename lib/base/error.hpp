// One error type per module: Error<Code> carries the module's enum code, the errno
// (0 if none) and a short context naming the bad input or the failed step.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "base/result.hpp"

namespace azote {

template <class Code>
struct Error {
  Code code{};
  int errnum = 0;
  std::string context;

  // "context: strerror" or just "context".
  std::string message() const {
    if (errnum == 0) return context;
    return context + ": " + std::strerror(errnum);
  }
};

// Build an Unexpected<Error<Code>> from the current errno.
template <class Code>
Unexpected<Error<Code>> errno_error(Code code, std::string context) {
  return Unexpected{Error<Code>{code, errno, std::move(context)}};
}
template <class Code>
Unexpected<Error<Code>> make_error(Code code, std::string context, int errnum = 0) {
  return Unexpected{Error<Code>{code, errnum, std::move(context)}};
}

}  // namespace azote
