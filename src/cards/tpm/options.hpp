// Command line of azote-card-tpm and the fields of its control requests. Pure parsing:
// nothing here opens a file or a socket. Errors are one sentence naming the option or
// the field and the value.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cards/tpm/error.hpp"
#include "cards/tpm/secret.hpp"

namespace azote::card_tpm {

struct CardOptions {
  std::string control_path;  // --control PATH|fd:N (required)
  std::string metrics_path;  // --metrics PATH|unix:PATH|fd:N; empty: no metrics endpoint
  std::string log_level = "info";
  std::string seccomp = "kill";  // --seccomp kill|log
  int rot_fd = -1;               // --rot fd:N: a connected stream socket to azote-rot; -1: none
};

struct ParsedArgs {
  CardOptions options;
  bool help = false;
  bool version = false;
};
TpmResult<ParsedArgs> parse_args(const std::vector<std::string>& args);

// {"op":"open","instance":"i-<hex>","state":"fd:N","key":"<64 hex>","socket":PATH}
struct OpenRequest {
  std::string instance;
  int state_fd = -1;
  std::string state_name;  // "state fd:N", for messages
  std::string socket;
};
// The request's fields, and its key in `key` (never in OpenRequest, which is logged).
TpmResult<OpenRequest> parse_open(const nlohmann::json& request, std::optional<StateKey>* key);

// "i-" followed by 1 to 32 lowercase hex digits (EC2 ids have 8 or 17).
bool valid_instance_id(const std::string& id);

const char* usage_text();

}  // namespace azote::card_tpm
