// seccomp per thread class, in-process (the jail cannot do it: the filters depend on
// what each thread does after exec). A process names its policy once
// (init_process), then every thread it runs calls enter_thread(class) before it
// touches anything a guest or a client controls; std::thread inherits the creating
// thread's filter and adds its own, so the effective allowlist of a thread is the
// intersection along its creation chain (a main thread's class is therefore the
// broadest of a process: it must also allow what it needs to start its workers).
//
// A forbidden call traps (SIGSYS): the handler writes one line to stderr naming the
// process, the thread and the system call ("azote-hv: seccomp: thread vcpu0 (tid 12)
// made forbidden system call 59 (execve); killing the process"), then installs a
// kill-everything filter so that the very next system call ends the process with
// SIGSYS. (Raising SIGSYS would not do: a process that is PID 1 of its namespace, as
// every jailed azote process is, ignores its own default-action signals.) The line is
// what the controller reads to put the call and the thread in the instance's state
// reason and the audit log.
//
// Mode kLog turns "trap" into "allow and let the kernel log it" (audit, dmesg): for
// finding a missing rule while debugging, never in production (the controller refuses
// to launch anything with --seccomp=log).
#pragma once

#include <string>
#include <string_view>

#include "base/error.hpp"
#include "sandbox/policy.hpp"

namespace azote::sandbox {

enum class SandboxErrc { kSeccomp = 1, kNamespace, kMount, kCgroup, kCredentials, kExec, kUsage };
using SandboxError = Error<SandboxErrc>;

enum class SeccompMode { kKill, kLog };

// "kill" (the default) or "log"; anything else is a usage error naming the value.
Result<SeccompMode, SandboxError> parse_seccomp_mode(std::string_view s);
const char* to_string(SeccompMode m);

// Once per process, before any thread calls enter_thread(): the policy and mode, the
// SIGSYS reporter, no_new_privs, and the process made non-dumpable (no core, no
// ptrace or /proc/PID/mem from its own uid).
Result<void, SandboxError> init_process(const ProcessPolicy& policy, SeccompMode mode);

// Installs the filter of class `cls` on the calling thread (and names the thread
// `thread_name`, at most 15 bytes, if not empty). Fails if init_process() was not
// called, the class is not in the policy, or the kernel refuses the filter.
Result<void, SandboxError> enter_thread(std::string_view cls, std::string_view thread_name = {});

// Whether init_process() ran (tests, diagnostics).
bool active();

// "Seccomp: N" of /proc/self/task/TID/status for every thread of this process, as
// "tid:N" pairs; tests use it to show that no thread runs without a filter.
std::string thread_seccomp_modes();

}  // namespace azote::sandbox
