#include "sandbox/cgroup.hpp"

#include <dirent.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "base/unique_fd.hpp"

namespace azote::sandbox {
namespace {

constexpr const char* kControllers[] = {"cpu", "cpuset", "memory", "pids"};
constexpr long kCgroup2Magic = 0x63677270;

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  std::string out = s.str();
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

bool write_file(const std::string& path, const std::string& value) {
  UniqueFd f(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  return f && ::write(f.get(), value.data(), value.size()) == static_cast<ssize_t>(value.size());
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  return out;
}

struct Mount {
  std::string root, point, fstype, super;
};

std::vector<Mount> cgroup_mounts() {
  std::vector<Mount> out;
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    const auto pre = split(line.substr(0, dash), ' ');
    const auto post = split(line.substr(dash + 3), ' ');
    if (pre.size() < 5 || post.size() < 3) continue;
    if (post[0] != "cgroup" && post[0] != "cgroup2") continue;
    out.push_back({pre[3], pre[4], post[0], post[2]});
  }
  return out;
}

// The caller's cgroup per hierarchy: "" key for the unified one, else each controller.
std::map<std::string, std::string> own_cgroups() {
  std::map<std::string, std::string> out;
  std::ifstream f("/proc/self/cgroup");
  std::string line;
  while (std::getline(f, line)) {
    const size_t a = line.find(':');
    const size_t b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string ctrls = line.substr(a + 1, b - a - 1);
    const std::string path = line.substr(b + 1);
    if (ctrls.empty()) out[""] = path;
    for (const auto& c : split(ctrls, ',')) out[c] = path;
  }
  return out;
}

// `own` relative to the mount's root (a mount of a sub-tree shows only what is below it).
std::string under(const Mount& m, const std::string& own) {
  std::string rel = own;
  if (m.root != "/" && rel.rfind(m.root, 0) == 0) rel = rel.substr(m.root.size());
  if (rel == "/") rel.clear();
  return m.point + rel;
}

bool is_dir(const std::string& p) {
  struct stat st{};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void collect_procs(const std::string& dir, std::vector<pid_t>* out) {
  std::istringstream in(read_file(dir + "/cgroup.procs"));
  pid_t p;
  while (in >> p) out->push_back(p);
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_type == DT_DIR && e->d_name[0] != '.') collect_procs(dir + "/" + e->d_name, out);
  }
  ::closedir(d);
}

bool remove_tree(const std::string& dir) {
  bool ok = true;
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> subs;
    while (const dirent* e = ::readdir(d))
      if (e->d_type == DT_DIR && e->d_name[0] != '.') subs.push_back(dir + "/" + e->d_name);
    ::closedir(d);
    for (const auto& s : subs) ok = remove_tree(s) && ok;
  }
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) ok = false;
  return ok;
}

}  // namespace

std::optional<std::set<int>> parse_cpu_list(const std::string& s) {
  std::set<int> out;
  if (s.empty()) return std::nullopt;
  for (const auto& part : split(s, ',')) {
    const size_t dash = part.find('-');
    const std::string a = part.substr(0, dash), b = dash == std::string::npos ? a : part.substr(dash + 1);
    auto num = [](const std::string& x) -> int {
      if (x.empty() || x.size() > 5 || !std::all_of(x.begin(), x.end(), [](char c) { return c >= '0' && c <= '9'; })) return -1;
      return std::stoi(x);
    };
    const int lo = num(a), hi = num(b);
    if (lo < 0 || hi < lo || hi > 4095) return std::nullopt;
    for (int c = lo; c <= hi; ++c) out.insert(c);
  }
  return out;
}

std::string format_cpu_list(const std::set<int>& cpus) {
  std::string out;
  for (auto it = cpus.begin(); it != cpus.end();) {
    const int lo = *it;
    int hi = lo;
    while (++it != cpus.end() && *it == hi + 1) hi = *it;
    if (!out.empty()) out += ',';
    out += std::to_string(lo);
    if (hi != lo) out += "-" + std::to_string(hi);
  }
  return out;
}

std::set<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::set<int> out;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.insert(c);
  return out;
}

bool cgroup_v2_only(const std::string& mount_root) {
  struct statfs fs{};
  return ::statfs(mount_root.c_str(), &fs) == 0 && fs.f_type == kCgroup2Magic;
}

Result<CgroupTree, SandboxError> CgroupTree::open(const std::string& name, const std::string& mount_root) {
  CgroupTree t;
  const auto mounts = cgroup_mounts();
  const auto own = own_cgroups();
  const Mount* unified = nullptr;
  for (const auto& m : mounts)
    if (m.fstype == "cgroup2" && m.point.rfind(mount_root, 0) == 0) unified = &m;
  std::set<std::string> v2_has;
  if (unified != nullptr)
    for (const auto& c : split(read_file(unified->point + "/cgroup.controllers"), ' ')) v2_has.insert(c);
  t.v2_controllers_ = unified != nullptr &&
                      std::all_of(std::begin(kControllers), std::end(kControllers), [&](const char* c) { return v2_has.count(c) > 0; });
  if (unified != nullptr && own.count(""))
    t.h_.push_back({"", under(*unified, own.at("")) + "/" + name, true});
  if (unified != nullptr) {
    t.unified_point_ = unified->point;
    t.unified_super_ = unified->super;
  }
  if (!t.v2_controllers_) {
    for (const char* c : kControllers) {
      const Mount* found = nullptr;
      for (const auto& m : mounts)
        if (m.fstype == "cgroup" && m.point.rfind(mount_root, 0) == 0)
          for (const auto& o : split(m.super, ','))
            if (o == c) found = &m;
      if (found == nullptr || !own.count(c))
        return make_error(SandboxErrc::kCgroup, std::string("cgroups: no hierarchy offers the \"") + c +
                                                    "\" controller (neither cgroup v2 nor a v1 mount under " + mount_root + ")");
      t.h_.push_back({c, under(*found, own.at(c)) + "/" + name, false});
    }
  } else {
    // Controllers reach a child only if its parent has no process of its own: the
    // launcher moves itself into a leaf of its cgroup, then delegates them.
    const std::string own_dir = under(*unified, own.at(""));
    ::mkdir((own_dir + "/launcher").c_str(), 0755);
    if (!write_file(own_dir + "/launcher/cgroup.procs", "0"))
      return errno_error(SandboxErrc::kCgroup, "cgroups: moving the launcher into " + own_dir + "/launcher");
    if (!write_file(own_dir + "/cgroup.subtree_control", "+cpu +cpuset +memory +pids"))
      return errno_error(SandboxErrc::kCgroup, "cgroups: enabling controllers in " + own_dir);
  }
  if (t.h_.empty()) return make_error(SandboxErrc::kCgroup, "cgroups: no cgroup hierarchy is mounted under " + mount_root);
  for (const auto& h : t.h_) {
    if (::mkdir(h.base.c_str(), 0755) != 0 && errno != EEXIST)
      return errno_error(SandboxErrc::kCgroup, "cgroups: mkdir " + h.base);
    if (h.controller == "cpuset") {  // a v1 cpuset is unusable until it has CPUs and nodes
      const std::string parent = h.base.substr(0, h.base.rfind('/'));
      if (read_file(h.base + "/cpuset.cpus").empty()) write_file(h.base + "/cpuset.cpus", read_file(parent + "/cpuset.cpus"));
      if (read_file(h.base + "/cpuset.mems").empty()) write_file(h.base + "/cpuset.mems", read_file(parent + "/cpuset.mems"));
    }
    if (h.v2 && t.v2_controllers_) write_file(h.base + "/cgroup.subtree_control", "+cpu +cpuset +memory +pids");
  }
  return t;
}

Result<std::vector<std::string>, SandboxError> CgroupTree::create(const std::string& rel, const CgroupLimits& l) {
  std::vector<std::string> procs;
  const auto parts = split(rel, '/');
  for (const auto& h : h_) {
    std::string dir = h.base;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (parts[i].empty() || parts[i] == "." || parts[i] == "..")
        return make_error(SandboxErrc::kCgroup, "cgroups: bad leaf name \"" + rel + "\"");
      const std::string parent = dir;
      dir += "/" + parts[i];
      if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return errno_error(SandboxErrc::kCgroup, "cgroups: mkdir " + dir);
      if (h.controller == "cpuset") {
        if (read_file(dir + "/cpuset.mems").empty()) write_file(dir + "/cpuset.mems", read_file(parent + "/cpuset.mems"));
        if (read_file(dir + "/cpuset.cpus").empty()) write_file(dir + "/cpuset.cpus", read_file(parent + "/cpuset.cpus"));
      }
      if (h.v2 && v2_controllers_ && i + 1 < parts.size())
        write_file(dir + "/cgroup.subtree_control", "+cpu +cpuset +memory +pids");
    }
    auto set = [&](const char* file, const std::string& v) -> Result<void, SandboxError> {
      if (!write_file(dir + "/" + file, v))
        return errno_error(SandboxErrc::kCgroup, "cgroups: " + dir + "/" + file + " = " + v);
      return {};
    };
    const bool all = h.v2 && v2_controllers_;
    if ((all || h.controller == "memory") && l.memory_bytes > 0)
      AZOTE_TRYV(set(h.v2 ? "memory.max" : "memory.limit_in_bytes", std::to_string(l.memory_bytes)));
    if ((all || h.controller == "pids") && l.pids > 0) AZOTE_TRYV(set("pids.max", std::to_string(l.pids)));
    if ((all || h.controller == "cpu") && l.cpu_percent > 0) {
      if (h.v2) {
        AZOTE_TRYV(set("cpu.max", std::to_string(l.cpu_percent * 1000ull) + " 100000"));
      } else {
        AZOTE_TRYV(set("cpu.cfs_period_us", "100000"));
        AZOTE_TRYV(set("cpu.cfs_quota_us", std::to_string(l.cpu_percent * 1000ull)));
      }
    }
    if ((all || h.controller == "cpuset") && !l.cpus.empty()) AZOTE_TRYV(set("cpuset.cpus", l.cpus));
    procs.push_back(dir + "/cgroup.procs");
  }
  return procs;
}

std::vector<std::string> favordynmods_options(const std::string& super) {
  std::vector<std::string> out;
  for (const auto& o : split(super, ',')) {
    if (o == "favordynmods") return {};
    if (!o.empty() && o != "rw" && o != "ro") out.push_back(o);
  }
  out.emplace_back("favordynmods");
  return out;
}

Result<std::string, SandboxError> CgroupTree::favor_migrations() {
  if (!moves_processes()) return std::string("not needed: every process is born in its cgroup v2 leaf");
  if (unified_point_.empty()) return std::string("not set: no cgroup2 mount to carry favordynmods");
  const auto opts = favordynmods_options(unified_super_);
  if (opts.empty()) return std::string("favordynmods already set on " + unified_point_);
  UniqueFd fs(static_cast<int>(::syscall(SYS_fspick, AT_FDCWD, unified_point_.c_str(), FSPICK_CLOEXEC | FSPICK_NO_AUTOMOUNT)));
  if (!fs) return errno_error(SandboxErrc::kCgroup, "cgroups: fspick " + unified_point_);
  for (const auto& o : opts) {
    const size_t eq = o.find('=');
    const long r = eq == std::string::npos
                       ? ::syscall(SYS_fsconfig, fs.get(), FSCONFIG_SET_FLAG, o.c_str(), nullptr, 0)
                       : ::syscall(SYS_fsconfig, fs.get(), FSCONFIG_SET_STRING, o.substr(0, eq).c_str(),
                                   o.substr(eq + 1).c_str(), 0);
    if (r != 0) return errno_error(SandboxErrc::kCgroup, "cgroups: " + unified_point_ + ": option " + o);
  }
  if (::syscall(SYS_fsconfig, fs.get(), FSCONFIG_CMD_RECONFIGURE, nullptr, nullptr, 0) != 0)
    return errno_error(SandboxErrc::kCgroup, "cgroups: reconfigure " + unified_point_ + " with favordynmods");
  unified_super_ += ",favordynmods";
  return std::string("favordynmods set on " + unified_point_ +
                     " (moves into the v1 hierarchies no longer wait for an RCU grace period)");
}

std::string CgroupTree::membership_dir(const std::string& rel) const { return h_.front().base + "/" + rel; }

std::vector<pid_t> CgroupTree::procs(const std::string& rel) const {
  std::vector<pid_t> out;
  if (is_dir(membership_dir(rel))) collect_procs(membership_dir(rel), &out);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void CgroupTree::kill(const std::string& rel) const {
  const std::string dir = membership_dir(rel);
  if (h_.front().v2 && write_file(dir + "/cgroup.kill", "1")) return;
  for (pid_t p : procs(rel)) ::kill(p, SIGKILL);
}

bool CgroupTree::remove(const std::string& rel) const {
  bool ok = true;
  for (const auto& h : h_) ok = remove_tree(h.base + "/" + rel) && ok;
  return ok;
}

std::string CgroupTree::read_limits(const std::string& rel) const {
  std::string memory, pids, cpu, cpus;
  for (const auto& h : h_) {
    const std::string dir = h.base + "/" + rel;
    const bool all = h.v2 && v2_controllers_;
    if (all || h.controller == "memory") memory = read_file(dir + (h.v2 ? "/memory.max" : "/memory.limit_in_bytes"));
    if (all || h.controller == "pids") pids = read_file(dir + "/pids.max");
    if (all || h.controller == "cpu") {
      if (h.v2) {
        cpu = read_file(dir + "/cpu.max");
      } else {
        const std::string q = read_file(dir + "/cpu.cfs_quota_us");
        cpu = q == "-1" ? "max" : q + " " + read_file(dir + "/cpu.cfs_period_us");
      }
    }
    if (all || h.controller == "cpuset") cpus = read_file(dir + "/cpuset.cpus");
  }
  return "memory=" + memory + " pids=" + pids + " cpu=" + cpu + " cpus=" + cpus;
}

std::string CgroupTree::layout() const {
  if (v2_controllers_) return "v2: cpu cpuset memory pids";
  std::string s = "v1: cpu cpuset memory pids";
  if (!h_.empty() && h_.front().v2) s += "; v2: membership";
  return s;
}

}  // namespace azote::sandbox
