#include "kms/policy.hpp"

#include <algorithm>
#include <cctype>
#include <string_view>

#include "base/hex.hpp"

namespace azote::kms {
namespace {

using Json = nlohmann::json;

std::string lower(std::string_view s) {
  std::string o(s);
  for (char& c : o) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return o;
}
bool iequals(std::string_view a, std::string_view b) { return lower(a) == lower(b); }

constexpr std::string_view kKeyPrefix = "kms:recipientattestation:";

// "kms:RecipientAttestation:ImageSha384" -> 0, "...:PCR<n>" (n 0..31, no leading zero)
// -> n; condition key names are case-insensitive, as in IAM.
bool condition_register(const std::string& key, uint32_t* pcr) {
  const std::string k = lower(key);
  if (k.rfind(kKeyPrefix, 0) != 0) return false;
  const std::string rest = k.substr(kKeyPrefix.size());
  if (rest == "imagesha384") {
    *pcr = 0;
    return true;
  }
  if (rest.size() < 4 || rest.size() > 5 || rest.rfind("pcr", 0) != 0) return false;
  const std::string n = rest.substr(3);
  if (!std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  if (n.size() == 2 && n[0] == '0') return false;
  const uint32_t v = static_cast<uint32_t>(std::stoul(n));  // digits only, at most 2: cannot throw
  if (v >= attest::kPcrCount) return false;
  *pcr = v;
  return true;
}

Unexpected<KmsError> malformed(const std::string& where, const std::string& why) {
  return fail(kMalformedPolicy, where + ": " + why);
}

// A string or a non-empty array of strings.
bool strings_of(const Json& v, std::vector<std::string>* out) {
  if (v.is_string()) {
    out->push_back(v.get_ref<const std::string&>());
    return true;
  }
  if (!v.is_array() || v.empty()) return false;
  for (const Json& e : v) {
    if (!e.is_string()) return false;
    out->push_back(e.get_ref<const std::string&>());
  }
  return true;
}

bool is_wildcard_principal(const Json& p) {
  if (p.is_string()) return p.get_ref<const std::string&>() == "*";
  if (p.is_object() && p.size() == 1 && p.contains("AWS")) {
    const Json& a = p["AWS"];
    return a.is_string() && a.get_ref<const std::string&>() == "*";
  }
  return false;
}

KmsResult<Statement> parse_statement(const Json& s, const std::string& where) {
  if (!s.is_object()) return malformed(where, "not an object");
  Statement st;
  bool have_effect = false, have_action = false;
  for (auto it = s.begin(); it != s.end(); ++it) {
    const std::string& field = it.key();
    const Json& v = it.value();
    if (field == "Sid") {
      if (!v.is_string() || v.get_ref<const std::string&>().size() > 128) return malformed(where, "Sid is not a string of at most 128 characters");
      st.sid = v.get_ref<const std::string&>();
    } else if (field == "Effect") {
      if (!v.is_string() || (v != "Allow" && v != "Deny")) return malformed(where, "Effect is not \"Allow\" or \"Deny\"");
      st.allow = v == "Allow";
      have_effect = true;
    } else if (field == "Action") {
      std::vector<std::string> actions;
      if (!strings_of(v, &actions)) return malformed(where, "Action is not a string or a non-empty list of strings");
      for (const std::string& a : actions) {
        // Action names are case-insensitive, as in IAM.
        if (iequals(a, "kms:Decrypt")) st.decrypt = true;
        else if (iequals(a, "kms:GenerateDataKey")) st.generate = true;
        else if (a == "kms:*") st.all_actions = true;
        else return malformed(where, "action \"" + a + "\" is not one of kms:Decrypt, kms:GenerateDataKey, kms:*");
      }
      have_action = true;
    } else if (field == "Principal") {
      // No principals here: whoever reaches the socket asks, and the document decides.
      // A Principal other than everyone would be a restriction this service cannot
      // enforce, so it is refused rather than ignored.
      if (!is_wildcard_principal(v)) return malformed(where, "Principal must be \"*\" or {\"AWS\": \"*\"} (azote-kms has no principals)");
    } else if (field == "Resource") {
      if (!v.is_string() || v != "*") return malformed(where, "Resource must be \"*\" (the key the policy is attached to)");
    } else if (field == "Condition") {
      if (!v.is_object() || v.empty()) return malformed(where, "Condition is not a non-empty object");
      for (auto op = v.begin(); op != v.end(); ++op) {
        const bool ic = op.key() == "StringEqualsIgnoreCase";
        if (!ic && op.key() != "StringEquals")
          return malformed(where, "condition operator \"" + op.key() + "\" is not StringEquals or StringEqualsIgnoreCase");
        if (!op.value().is_object() || op.value().empty()) return malformed(where, op.key() + " is not a non-empty object");
        for (auto k = op.value().begin(); k != op.value().end(); ++k) {
          Condition c;
          c.op = op.key();
          c.ignore_case = ic;
          c.key = k.key();
          if (!condition_register(c.key, &c.pcr))
            return malformed(where, "condition key \"" + c.key +
                                        "\" is not kms:RecipientAttestation:ImageSha384 or kms:RecipientAttestation:PCR0..PCR31");
          if (!strings_of(k.value(), &c.values) || c.values.size() > kMaxConditionValues)
            return malformed(where, c.key + " is not a string or a list of 1.." + std::to_string(kMaxConditionValues) + " strings");
          for (const std::string& val : c.values)
            if (val.empty() || val.size() > 2 * 64 || !from_hex(val))
              return malformed(where, c.key + " value \"" + val.substr(0, 140) + "\" is not a hex string of at most 64 bytes");
            else if (!ic && !from_hex(val, /*lowercase_only=*/true))
              // The document's values are lowercase hex: this could never match, and a
              // Deny that never applies would be worse than a refused policy.
              return malformed(where, c.key + " value \"" + val + "\" under StringEquals has uppercase hex digits, "
                                      "which never match (values are lowercase hex; or use StringEqualsIgnoreCase)");
          st.conditions.push_back(std::move(c));
        }
      }
    } else {
      return malformed(where, "field \"" + field + "\" is not supported (Sid, Effect, Action, Principal, Resource, Condition)");
    }
  }
  if (!have_effect) return malformed(where, "no Effect");
  if (!have_action) return malformed(where, "no Action");
  return st;
}

bool applies_to(const Statement& s, Action a) {
  return s.all_actions || (a == Action::kDecrypt ? s.decrypt : s.generate);
}

// The first condition of `s` that does not hold, or nullptr.
const Condition* failing(const Statement& s, const Attestation* att) {
  for (const Condition& c : s.conditions) {
    if (att == nullptr) return &c;
    const auto it = att->pcrs.find(c.pcr);
    if (it == att->pcrs.end()) return &c;
    const std::string actual = to_hex(it->second);  // lowercase, as the NitroTPM page asks
    const bool any = std::any_of(c.values.begin(), c.values.end(), [&](const std::string& v) {
      return c.ignore_case ? iequals(v, actual) : v == actual;
    });
    if (!any) return &c;
  }
  return nullptr;
}

std::string name_of(const Statement& s, size_t i) {
  std::string n = "statement " + std::to_string(i);
  if (!s.sid.empty()) n += " (Sid \"" + s.sid + "\")";
  return n;
}

}  // namespace

const char* action_name(Action a) { return a == Action::kDecrypt ? "kms:Decrypt" : "kms:GenerateDataKey"; }

KmsResult<Policy> parse_policy(const Json& doc) {
  if (!doc.is_object()) return malformed("the policy", "not a JSON object");
  Policy p;
  bool have_statement = false;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (it.key() == "Version") {
      if (!it.value().is_string() || (it.value() != "2012-10-17" && it.value() != "2008-10-17"))
        return malformed("the policy", "Version is not \"2012-10-17\" or \"2008-10-17\"");
    } else if (it.key() == "Id") {
      if (!it.value().is_string()) return malformed("the policy", "Id is not a string");
    } else if (it.key() == "Statement") {
      have_statement = true;
      const Json& s = it.value();
      if (s.is_object()) {
        AZOTE_TRY(st, parse_statement(s, "statement 0"));
        p.statements.push_back(std::move(st));
      } else if (s.is_array() && !s.empty() && s.size() <= kMaxStatements) {
        for (size_t i = 0; i < s.size(); ++i) {
          AZOTE_TRY(st, parse_statement(s[i], "statement " + std::to_string(i)));
          p.statements.push_back(std::move(st));
        }
      } else {
        return malformed("the policy", "Statement is not an object or a list of 1.." + std::to_string(kMaxStatements) + " objects");
      }
    } else {
      return malformed("the policy", "field \"" + it.key() + "\" is not supported (Version, Id, Statement)");
    }
  }
  if (!have_statement) return malformed("the policy", "no Statement");
  return p;
}

Decision evaluate(const Policy& p, Action action, const Attestation* att) {
  // An explicit Deny that applies wins over any Allow.
  for (size_t i = 0; i < p.statements.size(); ++i) {
    const Statement& s = p.statements[i];
    if (!s.allow && applies_to(s, action) && failing(s, att) == nullptr)
      return {false, name_of(s, i) + " of the key policy explicitly denies " + action_name(action)};
  }
  std::string why_not;
  for (size_t i = 0; i < p.statements.size(); ++i) {
    const Statement& s = p.statements[i];
    if (!s.allow || !applies_to(s, action)) continue;
    const Condition* c = failing(s, att);
    if (c == nullptr) return {true, name_of(s, i) + " of the key policy allows " + action_name(action)};
    if (why_not.empty()) {
      why_not = " (" + name_of(s, i) + ": " + c->op + " " + c->key +
                (att == nullptr ? " needs a verified attestation document)"
                 : att->pcrs.count(c->pcr) == 0 ? ": the document has no PCR" + std::to_string(c->pcr) + ")"
                                                : " does not match the document's PCR" + std::to_string(c->pcr) + ")");
    }
  }
  return {false, std::string("no statement of the key policy allows ") + action_name(action) + " for this recipient" + why_not};
}

}  // namespace azote::kms
