// The azote CLI as a function: parse the command line, run the command (an API call,
// optionally waiting for instance states, or a local admin/audit job), print, and
// return the exit status. main() only wires it to argv, the environment and stdio.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "api/azote.grpc.pb.h"
#include "cli/args.hpp"

namespace azote::cli {

struct Io {
  std::ostream& out;
  std::ostream& err;
  bool err_is_tty = false;  // --wait progress rewrites one line in place on a terminal
};

// Everything: returns the exit status (see kExit* in args.hpp).
int run_cli(const std::vector<std::string>& args, const Env& env, Io& io);

// A parsed invocation. Remote commands load the credentials and open the channel.
int execute(const Invocation& inv, Io& io);

// A remote command over an existing stub (tests point it at an in-process server).
int run_remote(const Invocation& inv, const RemoteCall& call, v1::Ec2::StubInterface& stub, Io& io);

// The local commands.
int issue_cert(const std::string& command, const IssueCert& ic, OutputFormat format, Io& io);
int revoke_cert(const std::string& command, const RevokeCert& rc, OutputFormat format, Io& io);
int audit_verify(const std::string& command, const AuditVerify& av, OutputFormat format, Io& io);
// enclave.cpp: nitro-cli's image commands (JSON on stdout, as nitro-cli prints it).
int build_enclave(const std::string& command, const BuildEnclave& be, Io& io);
int describe_eif(const std::string& command, const DescribeEif& de, Io& io);  // 1: not a valid EIF
int enclave_pcr(const std::string& command, const EnclavePcr& ep, Io& io);

}  // namespace azote::cli
