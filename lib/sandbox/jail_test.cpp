// The jail, for real (root only: namespaces, mounts, credentials, cgroups): a shell
// started in it reports what it can see and who it is.
#include "sandbox/jail.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "sandbox/cgroup.hpp"

namespace azote::sandbox {
namespace {

struct Outcome {
  std::string out;
  int status = -1;
  std::string error;
};

std::string field(const std::string& status, const std::string& name) {
  std::smatch m;
  if (std::regex_search(status, m, std::regex(name + ":\\s*([^\\n]*)"))) return m[1];
  return "";
}

class Jail : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "SKIPPED: needs root (namespaces, mounts, credentials)";
    root_ = "/tmp/azote-jail-test-" + std::to_string(::getpid());
    std::filesystem::create_directories(root_ + "/root");
    std::filesystem::create_directories(root_ + "/share");
    std::ofstream(root_ + "/share/hello") << "shared\n";
    std::ofstream(root_ + "/secret") << "not for the jail\n";
  }
  void TearDown() override {
    if (!root_.empty()) std::filesystem::remove_all(root_);
  }
  Outcome run(const std::string& script, JailSpec spec = {}) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    spec.name = spec.name.empty() ? "jail-test" : spec.name;
    spec.root_dir = root_ + "/root";
    if (spec.uid == 0) spec.uid = 4242;
    if (spec.gid == 0) spec.gid = 4343;
    spec.output_fd = p[1];
    spec.binds.push_back({root_ + "/share", "/share", false});
    const int sh = ::open("/bin/sh", O_PATH | O_CLOEXEC);
    Outcome r;
    auto j = spawn_jailed(spec, sh, {"sh", "-c", script});
    ::close(sh);
    ::close(p[1]);
    if (!j) {
      ::close(p[0]);
      r.error = j.error().message();
      return r;
    }
    char buf[4096];
    ssize_t n;
    while ((n = ::read(p[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<size_t>(n));
    ::close(p[0]);
    siginfo_t si{};
    ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(j->pidfd.get()), &si, WEXITED);
    r.status = si.si_status;
    return r;
  }
  std::string root_;
};

TEST_F(Jail, UnprivilegedWithNoCapabilitiesAndNoNewPrivileges) {
  const Outcome r = run("cat /proc/self/status; echo uid=$(id -u) gid=$(id -g) groups=$(id -G)");
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(field(r.out, "Uid"), "4242\t4242\t4242\t4242");
  EXPECT_EQ(field(r.out, "Gid"), "4343\t4343\t4343\t4343");
  for (const char* cap : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"})
    EXPECT_EQ(field(r.out, cap), "0000000000000000") << cap;
  EXPECT_EQ(field(r.out, "NoNewPrivs"), "1");
  EXPECT_NE(r.out.find("groups=4343"), std::string::npos) << r.out;  // no supplementary groups
}

TEST_F(Jail, SeesOnlyItsOwnRootProcessesAndNetwork) {
  const Outcome r = run(
      "echo pid=$$; echo host=$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname 2>/dev/null || echo none); "
      "ls /; echo procs=$(ls /proc | grep -c '^[0-9]'); cat /share/hello; "
      "echo > /share/x 2>/dev/null && echo share-writable; echo > /usr/x 2>/dev/null && echo usr-writable; "
      "echo > /x 2>/dev/null && echo root-writable; ls /dev; cat /proc/net/dev 2>/dev/null | grep -c ':' ; "
      "test -e /tmp && echo has-tmp; test -e /dev/kvm && echo has-kvm; true");
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_NE(r.out.find("pid=1\n"), std::string::npos) << r.out;  // PID 1 of its own namespace
  EXPECT_NE(r.out.find("shared"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("writable"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("has-tmp"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("has-kvm"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("secret"), std::string::npos) << r.out;
  // /proc lists only this namespace's processes: the shell and its pipeline.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("procs=(\\d+)"))) << r.out;
  EXPECT_LE(std::stoi(m[1]), 4) << r.out;
  // /dev: null, random, urandom, zero and nothing else.
  EXPECT_NE(r.out.find("null\nrandom\nurandom\nzero\n"), std::string::npos) << r.out;
}

TEST_F(Jail, OnlyTheGivenDescriptorsAreInherited) {
  const int keep = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int leak = ::open("/dev/zero", O_RDONLY);  // not close-on-exec, not given
  JailSpec spec;
  spec.fds = {keep};
  const Outcome r = run("ls /proc/self/fd", spec);
  ::close(keep);
  ::close(leak);
  ASSERT_TRUE(r.error.empty()) << r.error;
  // 0-2, the given fd as 3, and the fd ls itself has open on the directory.
  EXPECT_EQ(r.out, "0\n1\n2\n3\n4\n") << r.out;
}

TEST_F(Jail, AFailingStepIsReportedAndRootIsRefused) {
  JailSpec spec;
  spec.binds.push_back({"/no/such/dir", "/x", false});
  const Outcome r = run("true", spec);
  EXPECT_NE(r.error.find("bind /no/such/dir on"), std::string::npos) << r.error;
  JailSpec as_root;
  as_root.uid = 0;
  as_root.gid = 0;
  // uid 0 would be replaced by the default in run(); call directly.
  as_root.root_dir = root_ + "/root";
  auto j = spawn_jailed(as_root, 0, {"x"});
  ASSERT_FALSE(j);
  EXPECT_NE(j.error().message().find("refusing uid or gid 0"), std::string::npos);
}

// A directory the launcher prepared and then found swapped for a symlink (the state
// directory belongs to the controller, which may be compromised) is never bound.
TEST_F(Jail, ASwappedDirectoryIsNotBound) {
  std::filesystem::create_directories(root_ + "/prepared");
  const int fd = ::open((root_ + "/prepared").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  JailSpec good;
  good.binds.push_back({root_ + "/prepared", "/run/x", true, fd});
  Outcome r = run("test -d /run/x && echo bound", good);
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_NE(r.out.find("bound"), std::string::npos);
  // Swapped for a symlink to somewhere else: refused, nothing bound.
  std::filesystem::rename(root_ + "/prepared", root_ + "/moved");
  std::filesystem::create_directory_symlink("/etc", root_ + "/prepared");
  JailSpec swapped;
  swapped.binds.push_back({root_ + "/prepared", "/run/x", true, fd});
  r = run("echo ran", swapped);
  EXPECT_NE(r.error.find("open (no symlinks) " + root_ + "/prepared"), std::string::npos) << r.error;
  // Swapped for another directory: not the one prepared.
  std::filesystem::remove(root_ + "/prepared");
  std::filesystem::create_directories(root_ + "/prepared");
  r = run("echo ran", swapped);
  EXPECT_NE(r.error.find("not the directory the launcher prepared"), std::string::npos) << r.error;
  ::close(fd);
}

TEST_F(Jail, JoinsItsCgroupsBeforeItRuns) {
  auto tree = CgroupTree::open("azote-jail-test-" + std::to_string(::getpid()));
  if (!tree) GTEST_SKIP() << "SKIPPED: no usable cgroup hierarchy: " << tree.error().message();
  CgroupLimits l;
  l.memory_bytes = 64ull << 20;
  l.pids = 16;
  l.cpu_percent = 50;
  l.cpus = "0";
  auto procs = tree->create("i-test/hv", l);
  ASSERT_TRUE(procs) << procs.error().message();
  JailSpec spec;
  spec.cgroup_procs = *procs;
  const Outcome r = run("cat /proc/self/cgroup; grep Cpus_allowed_list /proc/self/status", spec);
  ASSERT_TRUE(r.error.empty()) << r.error;
  // The cgroup namespace makes the leaf its root: every hierarchy reads "/".
  for (const auto& line : std::vector<std::string>{"memory:/", "pids:/", "cpuset:/"})
    if (tree->layout().rfind("v1", 0) == 0) {
      EXPECT_NE(r.out.find(line + "\n"), std::string::npos) << line << "\n" << r.out;
    }
  EXPECT_NE(r.out.find("Cpus_allowed_list:\t0\n"), std::string::npos) << r.out;
  const std::string limits = tree->read_limits("i-test/hv");
  EXPECT_NE(limits.find("memory=67108864"), std::string::npos) << limits;
  EXPECT_NE(limits.find("pids=16"), std::string::npos) << limits;
  EXPECT_NE(limits.find("cpu=50000 100000"), std::string::npos) << limits;
  EXPECT_NE(limits.find("cpus=0"), std::string::npos) << limits;
  EXPECT_TRUE(tree->procs("i-test").empty());
  EXPECT_TRUE(tree->remove("i-test"));
  EXPECT_TRUE(tree->remove(""));
}

// Seen from outside while it runs: the child is in the leaf in every hierarchy (the
// unified one joined at clone, CLONE_INTO_CGROUP; v1 ones written before it is released).
TEST_F(Jail, IsInItsLeafInEveryHierarchyWhileItRuns) {
  const std::string name = "azote-jail-test-" + std::to_string(::getpid());
  auto tree = CgroupTree::open(name);
  if (!tree) GTEST_SKIP() << "SKIPPED: no usable cgroup hierarchy: " << tree.error().message();
  auto procs = tree->create("i-run/hv", CgroupLimits{});
  ASSERT_TRUE(procs) << procs.error().message();
  const std::string fifo = root_ + "/share/go";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  JailSpec spec;
  spec.name = "jail-test";
  spec.root_dir = root_ + "/root";
  spec.uid = 4242;
  spec.gid = 4343;
  spec.output_fd = p[1];
  spec.binds.push_back({root_ + "/share", "/share", false});
  spec.cgroup_procs = *procs;
  const int sh = ::open("/bin/sh", O_PATH | O_CLOEXEC);
  auto j = spawn_jailed(spec, sh, {"sh", "-c", "echo ready; read x < /share/go; echo $x"});
  ::close(sh);
  ::close(p[1]);
  ASSERT_TRUE(j) << j.error().message();
  char buf[64] = {};
  ASSERT_GT(::read(p[0], buf, sizeof buf - 1), 0);
  EXPECT_EQ(std::string(buf), "ready\n");
  std::ifstream in("/proc/" + std::to_string(j->pid) + "/cgroup");
  std::string line;
  int hierarchies = 0;
  while (std::getline(in, line)) {
    // "N:controllers:/path"; only the hierarchies the tree uses.
    const std::string ctl = line.substr(line.find(':') + 1, line.rfind(':') - line.find(':') - 1);
    const bool used = ctl.empty() || ctl == "cpu" || ctl.rfind("cpu,", 0) == 0 || ctl == "cpuset" || ctl == "memory" || ctl == "pids";
    if (!used) continue;
    ++hierarchies;
    EXPECT_NE(line.find("/" + name + "/i-run/hv"), std::string::npos) << line;
  }
  EXPECT_GE(hierarchies, 1);
  const auto members = tree->procs("i-run/hv");
  EXPECT_NE(std::find(members.begin(), members.end(), j->pid), members.end());
  {
    std::ofstream go(fifo);
    go << "done\n";
  }
  std::string rest;
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) rest.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  EXPECT_EQ(rest, "done\n");
  siginfo_t si{};
  ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(j->pidfd.get()), &si, WEXITED);
  EXPECT_EQ(si.si_status, 0);
  EXPECT_TRUE(tree->remove("i-run"));
  EXPECT_TRUE(tree->remove(""));
}

// Reconfiguring the cgroup2 superblock sets every flag again (the kernel clears what a
// reconfiguration leaves out): the options kept are the mount's own, plus favordynmods.
TEST(Cgroup, FavordynmodsKeepsTheMountsOtherOptions) {
  using V = std::vector<std::string>;
  EXPECT_EQ(favordynmods_options("rw"), V{"favordynmods"});
  EXPECT_EQ(favordynmods_options("rw,nsdelegate,memory_recursiveprot"), (V{"nsdelegate", "memory_recursiveprot", "favordynmods"}));
  EXPECT_EQ(favordynmods_options("ro,nsdelegate"), (V{"nsdelegate", "favordynmods"}));
  EXPECT_TRUE(favordynmods_options("rw,favordynmods,nsdelegate").empty());
}

// The superblock options of the cgroup2 mount, from /proc/self/mountinfo.
std::string cgroup2_super() {
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    const size_t dash = line.find(" - cgroup2 ");
    if (dash == std::string::npos) continue;
    std::istringstream post(line.substr(dash + 3));
    std::string type, source, super;
    post >> type >> source >> super;
    return super;
  }
  return "";
}

// On a hybrid host, after favor_migrations() the cgroup2 mount has favordynmods and
// still every option it had. (A host-wide setting: once any launcher has set it,
// "before" already has it; the options are compared either way. What it saves is
// measured, not asserted: docs/benchmarks.md, bench/controller.)
TEST(Cgroup, FavorMigrationsSetsFavordynmodsOnHybridHosts) {
  if (::geteuid() != 0) GTEST_SKIP() << "SKIPPED: needs root (cgroups, reconfiguring a mount)";
  auto tree = CgroupTree::open("azote-fdm-test-" + std::to_string(::getpid()));
  if (!tree) GTEST_SKIP() << "SKIPPED: no usable cgroup hierarchy: " << tree.error().message();
  const std::string before = cgroup2_super();
  auto r = tree->favor_migrations();
  ASSERT_TRUE(r) << r.error().message();
  if (!tree->moves_processes()) {
    EXPECT_NE(r->find("not needed"), std::string::npos) << *r;
    EXPECT_EQ(cgroup2_super(), before);
    EXPECT_TRUE(tree->remove(""));
    GTEST_SKIP() << "SKIPPED: this host's controllers are in cgroup v2 (no moves to speed up): " << *r;
  }
  if (before.empty()) {
    EXPECT_TRUE(tree->remove(""));
    GTEST_SKIP() << "SKIPPED: no cgroup2 mount on this hybrid host: " << *r;
  }
  const std::string after = cgroup2_super();
  EXPECT_NE(("," + after + ",").find(",favordynmods,"), std::string::npos) << after << " (" << *r << ")";
  for (const auto& o : favordynmods_options(before))
    EXPECT_NE(("," + after + ",").find("," + o + ","), std::string::npos) << o << " lost: " << before << " -> " << after;
  EXPECT_TRUE(tree->remove(""));
}

}  // namespace
}  // namespace azote::sandbox
