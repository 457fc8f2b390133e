#include "region/iam.hpp"

#include <sys/random.h>
#include <sys/stat.h>

#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

namespace azote::region {
namespace {

using Json = nlohmann::json;

// A string or a non-empty array of strings, each 1..2048 characters.
Result<std::vector<std::string>, std::string> patterns(const Json& v, const std::string& field) {
  std::vector<std::string> out;
  if (v.is_string()) {
    out.push_back(v.get<std::string>());
  } else if (v.is_array() && !v.empty() && v.size() <= kMaxPatterns) {
    for (const auto& e : v) {
      if (!e.is_string()) return Unexpected{field + " holds something that is not a string"};
      out.push_back(e.get<std::string>());
    }
  } else {
    return Unexpected{field + " must be a string or a list of 1 to " + std::to_string(kMaxPatterns) + " strings"};
  }
  for (const auto& s : out)
    if (s.empty() || s.size() > 2048) return Unexpected{field + " holds an empty or over-long pattern"};
  return out;
}

char fold(char c, bool f) { return f ? static_cast<char>(std::tolower(static_cast<unsigned char>(c))) : c; }

bool any_match(const std::vector<std::string>& pats, std::string_view text, bool fold_case) {
  for (const auto& p : pats)
    if (wildcard_match(p, text, fold_case)) return true;
  return false;
}

}  // namespace

bool wildcard_match(std::string_view pattern, std::string_view text, bool fold_case) {
  // Iterative, with one backtrack point for the last '*': linear in practice, never
  // exponential.
  size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || fold(pattern[p], fold_case) == fold(text[t], fold_case))) {
      ++p, ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

Result<Policy, std::string> parse_policy(const Json& doc) {
  if (!doc.is_object()) return Unexpected{std::string("a policy is a JSON object")};
  for (auto it = doc.begin(); it != doc.end(); ++it)
    if (it.key() != "Version" && it.key() != "Statement" && it.key() != "Id")
      return Unexpected{"unknown policy field \"" + it.key() + "\" (Version, Id, Statement)"};
  if (doc.contains("Version") && doc["Version"] != "2012-10-17")
    return Unexpected{std::string("Version must be \"2012-10-17\"")};
  if (!doc.contains("Statement")) return Unexpected{std::string("a policy needs a Statement")};
  Json stmts = doc["Statement"];
  if (stmts.is_object()) stmts = Json::array({stmts});
  if (!stmts.is_array() || stmts.empty() || stmts.size() > kMaxStatements)
    return Unexpected{"Statement must hold 1 to " + std::to_string(kMaxStatements) + " statements"};
  Policy out;
  for (size_t i = 0; i < stmts.size(); ++i) {
    const Json& s = stmts[i];
    const std::string where = "Statement " + std::to_string(i);
    if (!s.is_object()) return Unexpected{where + " is not an object"};
    Statement st;
    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& k = it.key();
      if (k == "Sid") {
        if (!it->is_string()) return Unexpected{where + ": Sid must be a string"};
        st.sid = it->get<std::string>();
      } else if (k == "Effect") {
        if (*it != "Allow" && *it != "Deny") return Unexpected{where + ": Effect must be Allow or Deny"};
        st.allow = *it == "Allow";
      } else if (k == "Action" || k == "NotAction") {
        if (!st.actions.empty()) return Unexpected{where + ": Action and NotAction exclude each other"};
        auto a = patterns(*it, where + " " + k);
        if (!a) return Unexpected{a.error()};
        st.actions = std::move(*a);
        st.not_action = k == "NotAction";
      } else if (k == "Resource") {
        auto r = patterns(*it, where + " Resource");
        if (!r) return Unexpected{r.error()};
        st.resources = std::move(*r);
      } else {
        // Condition, Principal, NotResource: not evaluated here, so refused.
        return Unexpected{where + ": \"" + k + "\" is not supported (Sid, Effect, Action, NotAction, Resource)"};
      }
    }
    if (!s.contains("Effect")) return Unexpected{where + " has no Effect"};
    if (st.actions.empty()) return Unexpected{where + " has no Action"};
    if (st.resources.empty()) return Unexpected{where + " has no Resource"};
    for (const auto& a : st.actions)
      if (a != "*" && a.rfind("ec2:", 0) != 0) return Unexpected{where + ": action \"" + a + "\" is not ec2:..."};
    out.statements.push_back(std::move(st));
  }
  return out;
}

Decision evaluate(const Policy& p, std::string_view action, const std::vector<std::string>& resources) {
  const std::vector<std::string> all = resources.empty() ? std::vector<std::string>{"*"} : resources;
  auto applies = [&](const Statement& s, std::string_view resource) {
    const bool action_hit = any_match(s.actions, action, true) != s.not_action;
    return action_hit && any_match(s.resources, resource, false);
  };
  // Any explicit Deny on any resource decides.
  for (const auto& r : all)
    for (const auto& s : p.statements)
      if (!s.allow && applies(s, r)) return {Effect::kExplicitDeny, s.sid};
  // Every resource needs an Allow.
  std::string sid;
  for (const auto& r : all) {
    bool allowed = false;
    for (const auto& s : p.statements) {
      if (s.allow && applies(s, r)) {
        allowed = true;
        sid = s.sid;
        break;
      }
    }
    if (!allowed) return {Effect::kImplicitDeny, ""};
  }
  return {Effect::kAllow, sid};
}

Result<std::vector<Principal>, std::string> load_principals(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return Unexpected{path + ": cannot be read"};
  if ((st.st_mode & 077) != 0) return Unexpected{path + ": holds secret keys but group or others may read it (chmod 600)"};
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  const Json doc = Json::parse(ss.str(), nullptr, false);
  if (!doc.is_object() || !doc.contains("principals") || !doc["principals"].is_array())
    return Unexpected{path + ": not {\"principals\": [...]}"};
  std::vector<Principal> out;
  std::set<std::string> keys, names;
  for (const auto& j : doc["principals"]) {
    Principal p;
    if (!j.is_object() || !j.contains("name") || !j["name"].is_string() || !j.contains("access_key_id") ||
        !j["access_key_id"].is_string() || !j.contains("secret_access_key") || !j["secret_access_key"].is_string() ||
        !j.contains("policy"))
      return Unexpected{path + ": a principal needs name, access_key_id, secret_access_key and policy"};
    p.name = j["name"];
    p.access_key_id = j["access_key_id"];
    p.secret_access_key = j["secret_access_key"];
    if (p.access_key_id.size() < 16 || p.access_key_id.size() > 128 || p.secret_access_key.size() < 16)
      return Unexpected{path + ": principal " + p.name + ": the access key id or secret is too short"};
    auto pol = parse_policy(j["policy"]);
    if (!pol) return Unexpected{path + ": principal " + p.name + "'s policy: " + pol.error()};
    p.policy = std::move(*pol);
    if (!keys.insert(p.access_key_id).second) return Unexpected{path + ": access key " + p.access_key_id + " appears twice"};
    if (!names.insert(p.name).second) return Unexpected{path + ": principal " + p.name + " appears twice"};
    out.push_back(std::move(p));
  }
  return out;
}

namespace {
std::string random_from(const char* alphabet, size_t n_alpha, size_t len) {
  std::string out;
  while (out.size() < len) {
    uint8_t b[64];
    if (::getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) continue;
    for (uint8_t c : b) {
      // Rejection sampling: no bias toward the first letters.
      if (c >= 256 - 256 % n_alpha) continue;
      out += alphabet[c % n_alpha];
      if (out.size() == len) break;
    }
  }
  return out;
}
}  // namespace

Principal new_principal(const std::string& name, Policy policy) {
  static const char kUpper[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  static const char kSecret[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  Principal p;
  p.name = name;
  p.access_key_id = "AKIA" + random_from(kUpper, 32, 16);
  p.secret_access_key = random_from(kSecret, 64, 40);
  p.policy = std::move(policy);
  return p;
}

Json policy_json(const Policy& p) {
  Json stmts = Json::array();
  for (const auto& s : p.statements) {
    Json j = {{"Effect", s.allow ? "Allow" : "Deny"}, {s.not_action ? "NotAction" : "Action", s.actions},
              {"Resource", s.resources}};
    if (!s.sid.empty()) j["Sid"] = s.sid;
    stmts.push_back(j);
  }
  return {{"Version", "2012-10-17"}, {"Statement", stmts}};
}

Json principal_json(const Principal& p) {
  return {{"name", p.name},
          {"access_key_id", p.access_key_id},
          {"secret_access_key", p.secret_access_key},
          {"policy", policy_json(p.policy)}};
}

}  // namespace azote::region
