// Who may call the region: principals with access keys (the SigV4 secrets) and an
// IAM-like identity policy each. The subset of IAM's policy language the region
// evaluates, parsed strictly (anything outside it is refused when the file is loaded,
// never skipped: a skipped Deny would widen what a principal may do):
//
//   {"Version": "2012-10-17",
//    "Statement": [{"Sid": "...", "Effect": "Allow"|"Deny",
//                   "Action": "ec2:Describe*" | [...],      (or "NotAction")
//                   "Resource": "*" | "arn:aws:ec2:*:*:instance/*" | [...]}]}
//
// Evaluation is IAM's: an explicit Deny that matches wins; otherwise a matching Allow
// allows; otherwise the request is denied (implicitly). Actions match case-insensitively
// ("ec2:describeinstances" is "ec2:DescribeInstances"), resources case-sensitively; '*'
// matches any run of characters and '?' any one, in both.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.hpp"

namespace azote::region {

struct Statement {
  std::string sid;
  bool allow = false;
  bool not_action = false;             // NotAction: matches every action but these
  std::vector<std::string> actions;    // patterns
  std::vector<std::string> resources;  // patterns
};

struct Policy {
  std::vector<Statement> statements;
};

// The largest policy the region takes (IAM's own limits are of the same order).
inline constexpr size_t kMaxStatements = 100;
inline constexpr size_t kMaxPatterns = 100;

// A sentence naming the first thing outside the subset.
Result<Policy, std::string> parse_policy(const nlohmann::json& doc);

enum class Effect { kAllow, kImplicitDeny, kExplicitDeny };
struct Decision {
  Effect effect = Effect::kImplicitDeny;
  std::string sid;  // the statement that decided ("" for an implicit deny or no Sid)
  bool allowed() const { return effect == Effect::kAllow; }
};
// `action` as "ec2:RunInstances"; `resources` every ARN the call touches (or "*"): the
// call is allowed only if every one of them is.
Decision evaluate(const Policy& p, std::string_view action, const std::vector<std::string>& resources);

// '*' and '?' wildcards; `fold_case` for actions.
bool wildcard_match(std::string_view pattern, std::string_view text, bool fold_case);

struct Principal {
  std::string name;
  std::string access_key_id;      // AKIA + 16 upper-case letters/digits, as AWS's
  std::string secret_access_key;  // 40 characters
  Policy policy;
};

// The principals file (JSON, readable by its owner only):
//   {"principals": [{"name": "admin", "access_key_id": "AKIA...", "secret_access_key": "...",
//                    "policy": {...}}]}
// A sentence naming the file and what is wrong with it (never a secret).
Result<std::vector<Principal>, std::string> load_principals(const std::string& path);

// A new principal with fresh random keys (for `azote-region add-principal` and the demo).
Principal new_principal(const std::string& name, Policy policy);
nlohmann::json principal_json(const Principal& p);  // with its policy's source kept as given
nlohmann::json policy_json(const Policy& p);

}  // namespace azote::region
