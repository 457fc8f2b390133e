// azote-seccomp-gen: compiles seccomp allowlists kept as JSON (one file per process,
// plus lib/sandbox/common.json) into C++ tables (sandbox/policy.hpp), at build time.
//
//   azote-seccomp-gen --out FILE.cpp --function NS::NAME POLICY.json [MORE.json ...]
//       defines `const azote::sandbox::ProcessPolicy& NS::NAME()` for the process named
//       by the last file; earlier files only lend classes to "inherits".
//   azote-seccomp-gen --out FILE.cpp --names
//       defines azote::sandbox::syscall_name() from libseccomp's table.
//
// A file: {"process": "azote-hv", "includes": ["linux/kvm.h"], "classes": {"main":
//   {"comment": "...", "inherits": ["common"], "syscalls": [{"name": "ioctl",
//   "args": [{"index": 1, "op": "eq", "value": "KVM_RUN"}], "why": "..."}]}}}
// Every syscall name is checked against libseccomp (an unknown name fails the build);
// values are integers or C identifiers (constants from the listed headers, checked by
// the compiler). Every rule must say why it is there.
#include <seccomp.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

using Json = nlohmann::json;

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "azote-seccomp-gen: error: %s\n", msg.c_str());
  std::exit(1);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  if (!f) die("cannot read " + path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool is_identifier(const std::string& s) {
  if (s.empty() || (std::isalpha(static_cast<unsigned char>(s[0])) == 0 && s[0] != '_')) return false;
  for (char c : s)
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_') return false;
  return true;
}

// A value as C++: an unsigned integer literal or a constant's name.
std::string value_expr(const std::string& where, const Json& v) {
  if (v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0))
    return std::to_string(v.get<uint64_t>()) + "ull";
  if (v.is_string() && is_identifier(v.get<std::string>()))
    return "static_cast<uint64_t>(" + v.get<std::string>() + ")";
  die(where + ": a value must be a non-negative integer or a constant's name, not " + v.dump());
}

struct Arg {
  int index;
  std::string op, value, mask;
};
struct RuleSpec {
  std::string name;
  std::vector<Arg> args;
  std::string errno_name;  // empty: allow
};
struct ClassSpec {
  std::vector<std::string> inherits;
  std::vector<RuleSpec> rules;
};

const std::map<std::string, std::string> kOps = {{"eq", "kEq"}, {"ne", "kNe"}, {"lt", "kLt"}, {"le", "kLe"},
                                                 {"gt", "kGt"}, {"ge", "kGe"}, {"masked_eq", "kMaskedEq"}};

void check_keys(const std::string& where, const Json& j, const std::set<std::string>& allowed) {
  if (!j.is_object()) die(where + ": must be an object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!allowed.count(it.key())) die(where + ": unknown key \"" + it.key() + "\"");
}

ClassSpec parse_class(const std::string& where, const Json& j) {
  check_keys(where, j, {"comment", "inherits", "syscalls"});
  if (!j.contains("comment") || !j["comment"].is_string()) die(where + ": needs a \"comment\" saying what runs there");
  ClassSpec c;
  if (j.contains("inherits"))
    for (const auto& i : j["inherits"]) c.inherits.push_back(i.get<std::string>());
  if (!j.contains("syscalls") || !j["syscalls"].is_array()) die(where + ": needs \"syscalls\"");
  for (size_t n = 0; n < j["syscalls"].size(); ++n) {
    const Json& r = j["syscalls"][n];
    const std::string rw = where + ".syscalls[" + std::to_string(n) + "]";
    check_keys(rw, r, {"name", "args", "why", "errno"});
    if (!r.contains("name") || !r["name"].is_string()) die(rw + ": needs \"name\"");
    if (!r.contains("why") || !r["why"].is_string() || r["why"].get<std::string>().empty())
      die(rw + " (" + r["name"].get<std::string>() + "): needs \"why\"");
    RuleSpec rule;
    rule.name = r["name"].get<std::string>();
    if (seccomp_syscall_resolve_name(rule.name.c_str()) == __NR_SCMP_ERROR)
      die(rw + ": unknown system call \"" + rule.name + "\"");
    if (r.contains("errno")) {
      if (!r["errno"].is_string() || !is_identifier(r["errno"].get<std::string>()) || r["errno"].get<std::string>()[0] != 'E')
        die(rw + ": \"errno\" must be an errno name such as ENOSYS");
      rule.errno_name = r["errno"].get<std::string>();
    }
    if (r.contains("args")) {
      for (size_t a = 0; a < r["args"].size(); ++a) {
        const Json& aj = r["args"][a];
        const std::string aw = rw + ".args[" + std::to_string(a) + "]";
        check_keys(aw, aj, {"index", "op", "value", "mask"});
        Arg arg;
        arg.index = aj.value("index", -1);
        if (arg.index < 0 || arg.index > 5) die(aw + ": \"index\" must be 0..5");
        const std::string op = aj.value("op", "");
        if (!kOps.count(op)) die(aw + ": unknown op \"" + op + "\"");
        arg.op = kOps.at(op);
        if (!aj.contains("value")) die(aw + ": needs \"value\"");
        arg.value = value_expr(aw, aj["value"]);
        if (op == "masked_eq") {
          if (!aj.contains("mask")) die(aw + ": masked_eq needs \"mask\"");
          arg.mask = value_expr(aw, aj["mask"]);
        } else {
          if (aj.contains("mask")) die(aw + ": \"mask\" only goes with masked_eq");
          arg.mask = "0";
        }
        rule.args.push_back(arg);
      }
    }
    c.rules.push_back(std::move(rule));
  }
  return c;
}

void gen_names(const std::string& out) {
  std::ofstream f(out);
  f << "// Generated by azote-seccomp-gen --names (libseccomp's x86-64 table). Do not edit.\n"
       "#include \"sandbox/policy.hpp\"\n\nnamespace azote::sandbox {\nnamespace {\nconstexpr const char* kNames[] = {\n";
  int last = 0;
  for (int nr = 0; nr < 1024; ++nr) {
    char* n = seccomp_syscall_resolve_num_arch(SCMP_ARCH_X86_64, nr);
    f << "    " << (n ? "\"" + std::string(n) + "\"" : std::string("nullptr")) << ",\n";
    if (n) last = nr;
    std::free(n);
  }
  f << "};\n}  // namespace\n\nconst char* syscall_name(long nr) {\n"
       "  if (nr < 0 || nr > " << last << ") return nullptr;\n"
       "  return kNames[nr];\n}\n\n}  // namespace azote::sandbox\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string out, function;
  bool names = false;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--out" && i + 1 < argc) out = argv[++i];
    else if (a == "--function" && i + 1 < argc) function = argv[++i];
    else if (a == "--names") names = true;
    else if (!a.empty() && a[0] == '-') die("unknown option " + a);
    else inputs.push_back(a);
  }
  if (out.empty()) die("--out FILE is required");
  if (names) {
    gen_names(out);
    return 0;
  }
  if (inputs.empty() || function.find("::") == std::string::npos) die("usage: --out FILE --function NS::NAME POLICY.json...");

  std::map<std::string, ClassSpec> classes;  // every file's classes
  std::vector<std::string> own;               // the last file's, in order
  std::vector<std::string> includes;
  std::string process;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Json j = Json::parse(slurp(inputs[k]), nullptr, false);
    if (j.is_discarded()) die(inputs[k] + ": not valid JSON");
    check_keys(inputs[k], j, {"process", "comment", "includes", "classes"});
    if (j.contains("includes"))
      for (const auto& h : j["includes"]) includes.push_back(h.get<std::string>());
    for (auto it = j["classes"].begin(); it != j["classes"].end(); ++it) {
      if (classes.count(it.key())) die(inputs[k] + ": class \"" + it.key() + "\" is defined twice");
      classes[it.key()] = parse_class(inputs[k] + ": classes." + it.key(), it.value());
      if (k + 1 == inputs.size()) own.push_back(it.key());
    }
    if (k + 1 == inputs.size()) {
      if (!j.contains("process") || !j["process"].is_string()) die(inputs[k] + ": needs \"process\"");
      process = j["process"].get<std::string>();
    }
  }
  // Flatten inheritance (no cycles, no unknown parents).
  std::map<std::string, std::vector<RuleSpec>> flat;
  std::function<const std::vector<RuleSpec>&(const std::string&, std::set<std::string>&)> resolve =
      [&](const std::string& name, std::set<std::string>& seen) -> const std::vector<RuleSpec>& {
    if (auto f = flat.find(name); f != flat.end()) return f->second;
    if (!classes.count(name)) die("class \"" + name + "\" is inherited but not defined");
    if (!seen.insert(name).second) die("class \"" + name + "\" inherits itself");
    std::vector<RuleSpec> rules;
    for (const auto& parent : classes[name].inherits) {
      const auto& pr = resolve(parent, seen);
      rules.insert(rules.end(), pr.begin(), pr.end());
    }
    rules.insert(rules.end(), classes[name].rules.begin(), classes[name].rules.end());
    return flat[name] = std::move(rules);
  };

  std::ofstream f(out);
  f << "// Generated by azote-seccomp-gen from";
  for (const auto& in : inputs) f << " " << in.substr(in.find_last_of('/') + 1);
  f << ". Do not edit: change the JSON.\n#include <errno.h>\n#include <sys/syscall.h>\n\n#include \"sandbox/policy.hpp\"\n";
  for (const auto& h : includes) f << "#include <" << h << ">\n";
  f << "\nnamespace {\nusing namespace azote::sandbox;\n";
  int n = 0;
  for (const auto& cls : own) {
    std::set<std::string> seen;
    const auto& rules = resolve(cls, seen);
    std::vector<std::string> rule_lines;
    for (const auto& r : rules) {
      std::string args = "{}";
      if (!r.args.empty()) {
        const std::string an = "kArgs" + std::to_string(n++);
        f << "constexpr ArgCheck " << an << "[] = {";
        for (const auto& a : r.args)
          f << "{" << a.index << ", ArgOp::" << a.op << ", " << a.value << ", " << a.mask << "}, ";
        f << "};\n";
        args = an;
      }
      rule_lines.push_back("    {__NR_" + r.name + ", " + args + (r.errno_name.empty() ? "" : ", " + r.errno_name) + "},");
    }
    std::string id = cls;
    for (char& c : id)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    f << "constexpr Rule kRules_" << id << "[] = {\n";
    for (const auto& l : rule_lines) f << l << "\n";
    f << "};\n";
  }
  f << "constexpr ClassPolicy kClasses[] = {\n";
  for (const auto& cls : own) {
    std::string id = cls;
    for (char& c : id)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    f << "    {\"" << cls << "\", kRules_" << id << "},\n";
  }
  f << "};\n}  // namespace\n\n";
  const size_t sep = function.rfind("::");
  f << "namespace " << function.substr(0, sep) << " {\nconst azote::sandbox::ProcessPolicy& "
    << function.substr(sep + 2) << "() {\n  static constexpr azote::sandbox::ProcessPolicy kPolicy{\"" << process
    << "\", kClasses};\n  return kPolicy;\n}\n}  // namespace " << function.substr(0, sep) << "\n";
  return 0;
}
