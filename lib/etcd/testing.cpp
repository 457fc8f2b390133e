#include "etcd/testing.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/unique_fd.hpp"

namespace azote::etcd::testing {
namespace {

using Steady = std::chrono::steady_clock;

// `n` distinct ports free on 127.0.0.1 right now (all bound at once, then released).
ClusterResult<std::vector<int>> free_ports(size_t n) {
  std::vector<UniqueFd> socks;
  std::vector<int> ports;
  for (size_t i = 0; i < n; ++i) {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) return errno_error(ClusterErrc::kPorts, "socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      return errno_error(ClusterErrc::kPorts, "bind 127.0.0.1:0");
    }
    socklen_t len = sizeof a;
    if (::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return errno_error(ClusterErrc::kPorts, "getsockname");
    }
    ports.push_back(ntohs(a.sin_port));
    socks.push_back(std::move(s));
  }
  return ports;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string tail_of(const std::string& text, size_t lines) {
  std::deque<std::string> last;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    last.push_back(line);
    if (last.size() > lines) last.pop_front();
  }
  std::string out;
  for (const auto& l : last) out += l + "\n";
  return out;
}

// fork + exec with stdout/stderr to `log`, in its own process group, killed if this thread
// goes. argv/envp are built before the fork: the child only makes system calls.
ClusterResult<pid_t> spawn_process(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  static const char* envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp", nullptr};
  const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return errno_error(ClusterErrc::kSpawn, "open " + log);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    ::close(log_fd);
    return errno_error(ClusterErrc::kSpawn, "open /dev/null");
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    ::close(null_fd);
    return errno_error(ClusterErrc::kSpawn, "fork");
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(null_fd, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    ::syscall(SYS_close_range, 3U, ~0U, 0U);
    ::execve(argv[0], argv.data(), const_cast<char* const*>(envp));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // both sides, whichever runs first
  ::close(log_fd);
  ::close(null_fd);
  return pid;
}

// Runs a short command to its end (openssl): its output goes to `log`.
ClusterResult<void> run_to_end(const std::vector<std::string>& args, const std::string& log) {
  AZOTE_TRY(pid, spawn_process(args, log));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return errno_error(ClusterErrc::kSpawn, "waitpid " + args[0]);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return make_error(ClusterErrc::kSpawn, args[0] + " " + args[1] + " failed:\n" + tail_of(read_file(log), 20));
  }
  return {};
}

std::atomic<int> g_clusters{0};

}  // namespace

EtcdCluster::EtcdCluster(ClusterOptions options) : options_(std::move(options)), dir_("azote-etcd") {
  token_ = "azote-test-" + std::to_string(::getpid()) + "-" + std::to_string(g_clusters.fetch_add(1));
}

EtcdCluster::~EtcdCluster() { kill_all(); }

void EtcdCluster::kill_all() {
  for (auto& m : members_) {
    if (m.pid <= 0) continue;
    ::kill(-m.pid, SIGKILL);
    ::kill(m.pid, SIGKILL);
    while (::waitpid(m.pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    m.pid = -1;
  }
}

const std::string& EtcdCluster::endpoint(int i) const { return members_.at(static_cast<size_t>(i)).endpoint; }

std::vector<std::string> EtcdCluster::endpoints() const {
  std::vector<std::string> out;
  for (const auto& m : members_) out.push_back(m.endpoint);
  return out;
}

int EtcdCluster::index_of(const std::string& endpoint) const {
  for (size_t i = 0; i < members_.size(); ++i) {
    if (members_[i].endpoint == endpoint) return static_cast<int>(i);
  }
  return -1;
}

Options EtcdCluster::client_options() const {
  Options o;
  o.call_timeout = std::chrono::milliseconds(10000);
  o.connect_timeout = std::chrono::milliseconds(500);
  o.reconnect_backoff_max = std::chrono::milliseconds(500);
  if (options_.tls) o.tls = TlsOptions{ca_pem_, client_cert_pem_, client_key_pem_, ""};
  return o;
}

EtcdResult<Client> EtcdCluster::client() const { return Client::connect(endpoints(), client_options()); }
EtcdResult<Client> EtcdCluster::client(const std::vector<std::string>& only) const {
  return Client::connect(only, client_options());
}

bool EtcdCluster::running(int i) const { return members_.at(static_cast<size_t>(i)).pid > 0; }
pid_t EtcdCluster::pid(int i) const { return members_.at(static_cast<size_t>(i)).pid; }

std::string EtcdCluster::log_path(int i) const { return dir_.file(members_.at(static_cast<size_t>(i)).name + ".log"); }

std::string EtcdCluster::log_tail(size_t lines) const {
  std::string out;
  for (size_t i = 0; i < members_.size(); ++i) {
    out += "---- " + members_[i].name + " (" + members_[i].endpoint + ", " +
           (members_[i].pid > 0 ? "running" : "stopped") + ") " + log_path(static_cast<int>(i)) + "\n";
    out += tail_of(read_file(log_path(static_cast<int>(i))), lines);
  }
  return out;
}

ClusterResult<void> EtcdCluster::make_tls() {
  const std::string log = dir_.file("openssl.log");
  const std::string d = dir_.path() + "/";
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"};
  auto req = [&](std::vector<std::string> head, std::vector<std::string> tail) {
    head.insert(head.end(), ec.begin(), ec.end());
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };
  std::ofstream(d + "member.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                     "extendedKeyUsage=serverAuth,clientAuth\n";
  std::ofstream(d + "client.ext") << "extendedKeyUsage=clientAuth\n";
  AZOTE_TRYV(run_to_end(req({"/usr/bin/openssl", "req", "-x509"},
                            {"-keyout", d + "ca.key", "-out", d + "ca.pem", "-days", "2", "-subj", "/CN=azote etcd test CA"}),
                        log));
  for (const char* who : {"member", "client"}) {
    const std::string w = who;
    AZOTE_TRYV(run_to_end(req({"/usr/bin/openssl", "req"},
                              {"-keyout", d + w + ".key", "-out", d + w + ".csr", "-subj", "/CN=azote-" + w}),
                          log));
    AZOTE_TRYV(run_to_end({"/usr/bin/openssl", "x509", "-req", "-in", d + w + ".csr", "-CA", d + "ca.pem", "-CAkey",
                           d + "ca.key", "-CAcreateserial", "-out", d + w + ".pem", "-days", "2", "-extfile",
                           d + w + ".ext"},
                          log));
  }
  ca_pem_ = read_file(d + "ca.pem");
  client_cert_pem_ = read_file(d + "client.pem");
  client_key_pem_ = read_file(d + "client.key");
  if (ca_pem_.empty() || client_cert_pem_.empty() || client_key_pem_.empty()) {
    return make_error(ClusterErrc::kSpawn, "openssl made no certificates in " + dir_.path());
  }
  return {};
}

ClusterResult<void> EtcdCluster::spawn(int i, bool new_cluster) {
  MemberProc& m = members_.at(static_cast<size_t>(i));
  const std::string scheme = options_.tls ? "https://" : "http://";
  const std::string client_url = scheme + m.endpoint;
  const std::string peer_url = "http://127.0.0.1:" + std::to_string(m.peer_port);
  std::string initial;
  for (const auto& o : members_) {
    initial += (initial.empty() ? "" : ",") + o.name + "=http://127.0.0.1:" + std::to_string(o.peer_port);
  }
  std::vector<std::string> args = {
      options_.etcd_binary,
      "--name=" + m.name,
      "--data-dir=" + m.data_dir,
      "--listen-client-urls=" + client_url,
      "--advertise-client-urls=" + client_url,
      "--listen-peer-urls=" + peer_url,
      "--initial-advertise-peer-urls=" + peer_url,
      "--initial-cluster=" + initial,
      "--initial-cluster-token=" + token_,
      std::string("--initial-cluster-state=") + (new_cluster ? "new" : "existing"),
      "--heartbeat-interval=50",
      "--election-timeout=500",
      "--logger=zap",
      "--log-outputs=stderr",
  };
  if (options_.tls) {
    const std::string d = dir_.path() + "/";
    args.push_back("--cert-file=" + d + "member.pem");
    args.push_back("--key-file=" + d + "member.key");
    args.push_back("--trusted-ca-file=" + d + "ca.pem");
    args.push_back("--client-cert-auth");
  }
  for (const auto& a : options_.extra_args) args.push_back(a);
  {
    std::ofstream(log_path(i), std::ios::app) << "==== azote EtcdCluster: starting " << m.name << "\n";
  }
  AZOTE_TRY(pid, spawn_process(args, log_path(i)));
  m.pid = pid;
  return {};
}

ClusterResult<void> EtcdCluster::wait_serving(const std::vector<int>& which) {
  const auto deadline = Steady::now() + options_.start_timeout;
  Options o = client_options();
  o.call_timeout = std::chrono::milliseconds(1000);
  std::string last;
  for (int i : which) {
    for (;;) {
      MemberProc& m = members_.at(static_cast<size_t>(i));
      int status = 0;
      if (::waitpid(m.pid, &status, WNOHANG) == m.pid) {
        m.pid = -1;
        const std::string log = read_file(log_path(i));
        const bool ports = log.find("address already in use") != std::string::npos;
        return make_error(ports ? ClusterErrc::kPorts : ClusterErrc::kSpawn,
                          m.name + " exited before serving:\n" + tail_of(log, 30));
      }
      auto c = Client::connect({m.endpoint}, o);
      if (c.ok()) {
        auto st = c->status(m.endpoint);
        if (st.ok() && st->leader != 0) {
          auto r = c->get("azote-etcd-cluster-health");
          if (r.ok()) break;
          last = r.error().describe();
        } else {
          last = st.ok() ? "no leader yet" : st.error().describe();
        }
      } else {
        last = c.error().describe();
      }
      if (Steady::now() >= deadline) {
        return make_error(ClusterErrc::kNotHealthy,
                          m.name + " not serving after " + std::to_string(options_.start_timeout.count()) +
                              " ms (" + last + "):\n" + log_tail(30));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return {};
}

ClusterResult<int> EtcdCluster::wait_leader() {
  const auto deadline = Steady::now() + options_.start_timeout;
  Options o = client_options();
  o.call_timeout = std::chrono::milliseconds(1000);
  std::string last = "no member running";
  for (;;) {
    std::vector<std::string> running_eps;
    for (const auto& m : members_) {
      if (m.pid > 0) running_eps.push_back(m.endpoint);
    }
    if (!running_eps.empty()) {
      auto c = Client::connect(running_eps, o);
      if (c.ok()) {
        uint64_t leader = 0;
        int leader_index = -1;
        bool agreed = true;
        for (size_t i = 0; i < members_.size() && agreed; ++i) {
          if (members_[i].pid <= 0) continue;
          auto st = c->status(members_[i].endpoint);
          if (!st.ok()) {
            last = st.error().describe();
            agreed = false;
          } else if (st->leader == 0 || (leader != 0 && st->leader != leader)) {
            last = members_[i].name + " knows no leader or another one";
            agreed = false;
          } else {
            leader = st->leader;
            if (st->member_id == leader) leader_index = static_cast<int>(i);
          }
        }
        if (agreed && leader_index >= 0) return leader_index;
        if (agreed) last = "the leader the members name is not running";
      } else {
        last = c.error().describe();
      }
    }
    if (Steady::now() >= deadline) {
      return make_error(ClusterErrc::kNotHealthy, "no agreed leader after " +
                                                      std::to_string(options_.start_timeout.count()) + " ms (" +
                                                      last + "):\n" + log_tail(30));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

ClusterResult<std::unique_ptr<EtcdCluster>> EtcdCluster::start(ClusterOptions options) {
  if (options.members < 1) return make_error(ClusterErrc::kBadMember, "a cluster needs a member");
  if (::access(options.etcd_binary.c_str(), X_OK) != 0) {
    return errno_error(ClusterErrc::kSpawn, options.etcd_binary + " (apt-get install etcd-server)");
  }
  std::unique_ptr<EtcdCluster> c(new EtcdCluster(options));
  if (options.tls) AZOTE_TRYV(c->make_tls());
  constexpr int kAttempts = 5;
  for (int attempt = 1;; ++attempt) {
    const auto n = static_cast<size_t>(options.members);
    AZOTE_TRY(ports, free_ports(2 * n));
    c->members_.clear();
    std::vector<int> all;
    for (size_t i = 0; i < n; ++i) {
      MemberProc m;
      m.name = "m";  // (not "m" + to_string: GCC 12's -Wrestrict false positive)
      m.name += std::to_string(i);
      m.client_port = ports[2 * i];
      m.peer_port = ports[2 * i + 1];
      m.endpoint = "127.0.0.1:" + std::to_string(m.client_port);
      m.data_dir = c->dir_.file(m.name + ".etcd");
      std::error_code ec;
      std::filesystem::remove_all(m.data_dir, ec);
      c->members_.push_back(m);
      all.push_back(static_cast<int>(i));
    }
    bool spawned = true;
    ClusterResult<void> r;
    for (size_t i = 0; i < n && spawned; ++i) {
      r = c->spawn(static_cast<int>(i), true);
      spawned = r.ok();
    }
    if (spawned) r = c->wait_serving(all);
    if (r.ok()) return c;
    c->kill_all();
    // Another process took a port between the probe and etcd's bind: new ports, again.
    // A member that exits for that reason is seen by wait_serving; one that could not
    // bind a peer port also leaves the others without a leader.
    const bool retry = r.error().code == ClusterErrc::kPorts ||
                       (r.error().code == ClusterErrc::kNotHealthy &&
                        r.error().context.find("address already in use") != std::string::npos);
    if (!retry || attempt >= kAttempts) return Unexpected{std::move(r).error()};
  }
}

ClusterResult<void> EtcdCluster::kill(int i) {
  if (i < 0 || i >= size()) return make_error(ClusterErrc::kBadMember, "no member " + std::to_string(i));
  MemberProc& m = members_[static_cast<size_t>(i)];
  if (m.pid <= 0) return make_error(ClusterErrc::kBadMember, m.name + " is not running");
  ::kill(-m.pid, SIGKILL);
  ::kill(m.pid, SIGKILL);
  while (::waitpid(m.pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  m.pid = -1;
  return {};
}

ClusterResult<void> EtcdCluster::restart(int i) {
  if (i < 0 || i >= size()) return make_error(ClusterErrc::kBadMember, "no member " + std::to_string(i));
  if (members_[static_cast<size_t>(i)].pid > 0) {
    return make_error(ClusterErrc::kBadMember, members_[static_cast<size_t>(i)].name + " is running");
  }
  AZOTE_TRYV(spawn(i, false));
  return wait_serving({i});
}

}  // namespace azote::etcd::testing
