// A process's seccomp allowlists as data: one ClassPolicy per thread class (the hv's
// "main" and "vcpu", a card's "main" and "queue", ...), each a list of system calls
// with optional argument checks. The tables are generated at build time from the
// process's seccomp.json (src/<process>/seccomp.json, compiled by azote-seccomp-gen),
// so the source of truth is a reviewed data file and a typo in a syscall name or a
// constant fails the build, never a launch.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace azote::sandbox {

enum class ArgOp : uint8_t { kEq, kNe, kLt, kLe, kGt, kGe, kMaskedEq };

// Argument `index` (0-5) compared with `value`; kMaskedEq compares (arg & mask) == value.
struct ArgCheck {
  uint8_t index = 0;
  ArgOp op = ArgOp::kEq;
  uint64_t value = 0;
  uint64_t mask = 0;
};

// One allowed form of a system call: every check must hold (AND). The same number may
// appear in several rules (OR), e.g. ioctl with each allowed request.
struct Rule {
  long nr = 0;
  std::span<const ArgCheck> args;
  // 0: allow. Otherwise the call fails with this errno instead of trapping: clone3,
  // whose flags sit in memory a filter cannot read, answers ENOSYS so that glibc
  // falls back to clone, whose flags a rule can check.
  int errno_value = 0;
};

struct ClassPolicy {
  std::string_view name;
  std::span<const Rule> rules;
};

struct ProcessPolicy {
  std::string_view process;
  std::span<const ClassPolicy> classes;

  const ClassPolicy* find(std::string_view cls) const {
    for (const auto& c : classes)
      if (c.name == cls) return &c;
    return nullptr;
  }
};

// x86-64 system call names by number, for reports ("execve" rather than 59); nullptr
// when unknown. Generated from libseccomp's table at build time.
const char* syscall_name(long nr);

}  // namespace azote::sandbox
