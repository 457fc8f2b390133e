// azote: the command line of azote-controller (see `azote --help`).
#include <grpc/support/log.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "cli/cli.hpp"

namespace {
// gRPC's own log lines (handshake failures and the like) would repeat, less clearly,
// what azote prints; they stay off unless GRPC_VERBOSITY or GRPC_TRACE asks for them.
void quiet_grpc_log(gpr_log_func_args* /*args*/) {}
}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("GRPC_VERBOSITY") == nullptr && std::getenv("GRPC_TRACE") == nullptr) {
    gpr_set_log_function(quiet_grpc_log);
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  azote::cli::Io io{std::cout, std::cerr, ::isatty(STDERR_FILENO) == 1};
  const int status = azote::cli::run_cli(args, azote::cli::process_env(), io);
  std::cout.flush();
  return status;
}
