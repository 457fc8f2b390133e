// Key policies: the subset of the AWS KMS key policy language azote-kms evaluates
// (src/kms/DESIGN.md, "Key policies", states it exactly). A policy is parsed once into
// a Policy, refusing anything outside the subset (an unknown operator, condition key,
// action or field): a condition this code did not understand must never be skipped,
// since skipping it would widen an Allow or narrow a Deny.
//
// Evaluation is AWS's: an explicit Deny that applies wins; otherwise an Allow that
// applies allows; otherwise the request is denied (no matching Allow). A statement
// applies when its Action names the operation and every condition holds; a condition
// on a key the request does not have (no verified attestation document, or a PCR the
// document does not carry) does not hold.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attest/attest.hpp"
#include "kms/errors.hpp"

namespace azote::kms {

enum class Action { kDecrypt, kGenerateDataKey };
const char* action_name(Action a);  // "kms:Decrypt", "kms:GenerateDataKey"

// What a verified attestation document says about its enclave (the condition keys'
// values): ImageSha384 is PCR0.
struct Attestation {
  std::string module_id;
  std::map<uint32_t, attest::Pcr> pcrs;
};

struct Condition {
  std::string op;         // "StringEquals" or "StringEqualsIgnoreCase", as written
  bool ignore_case = false;
  std::string key;        // the condition key as written in the policy
  uint32_t pcr = 0;       // the register it reads (ImageSha384: 0)
  std::vector<std::string> values;  // any of them matches
};

struct Statement {
  std::string sid;        // "" when absent
  bool allow = false;
  bool all_actions = false;  // "kms:*"
  bool decrypt = false, generate = false;
  std::vector<Condition> conditions;  // all must hold
};

struct Policy {
  std::vector<Statement> statements;
};

// The subset's largest policy: AWS allows 32 KiB of policy text; this many statements
// and values per condition are far beyond any real key's.
inline constexpr size_t kMaxStatements = 64;
inline constexpr size_t kMaxConditionValues = 64;

// kMalformedPolicy naming the first thing outside the subset.
KmsResult<Policy> parse_policy(const nlohmann::json& doc);

struct Decision {
  bool allowed = false;
  std::string reason;  // why, one sentence (which statement decided, or why none did)
};
// `attestation` null: the request carries no verified document.
Decision evaluate(const Policy& p, Action action, const Attestation* attestation);

}  // namespace azote::kms
