#include "launch/protocol.hpp"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "base/scm.hpp"

namespace azote::launch {
namespace {

Unexpected<LaunchError> bad(const std::string& what) { return make_error(LaunchErrc::kProtocol, what); }

Result<std::string, LaunchError> str(const Json& j, const char* key, bool required) {
  if (!j.contains(key)) {
    if (required) return bad(std::string("needs \"") + key + "\"");
    return std::string();
  }
  if (!j[key].is_string()) return bad(std::string("\"") + key + "\" must be a string");
  return j[key].get<std::string>();
}

}  // namespace

const char* to_string(Role r) {
  switch (r) {
    case Role::kHv: return "hv";
    case Role::kCardBlk: return "card-blk";
    case Role::kCardNet: return "card-net";
    case Role::kCardTpm: return "card-tpm";
    case Role::kCardNsm: return "card-nsm";
    case Role::kCardVsock: return "card-vsock";
    case Role::kCardFabric: return "card-fabric";
    case Role::kProbe: return "probe";
  }
  return "?";
}

std::optional<Role> parse_role(const std::string& s) {
  for (Role r : {Role::kHv, Role::kCardBlk, Role::kCardNet, Role::kCardTpm, Role::kCardNsm, Role::kCardVsock,
                 Role::kCardFabric, Role::kProbe})
    if (s == to_string(r)) return r;
  return std::nullopt;
}

Json to_json(const SpawnRequest& r) {
  Json files = Json::array(), listens = Json::array();
  for (const auto& f : r.files) files.push_back({{"name", f.name}, {"path", f.path}, {"access", f.access}});
  for (const auto& l : r.listens) listens.push_back({{"name", l.name}, {"path", l.path}});
  Json j = {{"op", "spawn"},       {"role", to_string(r.role)}, {"instance", r.instance}, {"slot", r.slot},
            {"args", r.args},      {"files", files},            {"listen", listens},      {"output", r.output},
            {"enis", r.enis},      {"probe_as", to_string(r.probe_as)}, {"enclave_debug", r.enclave_debug},
            {"limits", {{"memory_mib", r.limits.memory_mib}, {"pids", r.limits.pids},
                        {"cpu_percent", r.limits.cpu_percent}, {"cpus", r.limits.cpus}}}};
  if (!r.underlay.empty()) j["underlay"] = r.underlay;
  return j;
}

Result<SpawnRequest, LaunchError> spawn_request_from_json(const Json& j) {
  SpawnRequest r;
  AZOTE_TRY(role, str(j, "role", true));
  const auto parsed = parse_role(role);
  if (!parsed) return bad("unknown role \"" + role + "\"");
  r.role = *parsed;
  AZOTE_TRY(instance, str(j, "instance", false));
  r.instance = instance;
  if (j.contains("slot")) {
    if (!j["slot"].is_number_unsigned() || j["slot"].get<uint64_t>() >= kMaxSlots) return bad("\"slot\" out of range");
    r.slot = j["slot"].get<uint32_t>();
  }
  if (j.contains("args")) {
    if (!j["args"].is_array()) return bad("\"args\" must be an array of strings");
    for (const auto& a : j["args"]) {
      if (!a.is_string()) return bad("\"args\" must be an array of strings");
      r.args.push_back(a.get<std::string>());
    }
  }
  if (j.contains("files")) {
    if (!j["files"].is_array()) return bad("\"files\" must be an array");
    for (const auto& f : j["files"]) {
      if (!f.is_object()) return bad("\"files\" entries must be objects");
      FileSpec s;
      AZOTE_TRY(n, str(f, "name", true));
      AZOTE_TRY(p, str(f, "path", true));
      AZOTE_TRY(a, str(f, "access", true));
      s.name = n;
      s.path = p;
      s.access = a;
      r.files.push_back(s);
    }
  }
  if (j.contains("listen")) {
    if (!j["listen"].is_array()) return bad("\"listen\" must be an array");
    for (const auto& l : j["listen"]) {
      if (!l.is_object()) return bad("\"listen\" entries must be objects");
      AZOTE_TRY(n, str(l, "name", true));
      AZOTE_TRY(p, str(l, "path", true));
      r.listens.push_back({n, p});
    }
  }
  AZOTE_TRY(output, str(j, "output", false));
  r.output = output;
  if (j.contains("enis")) {
    if (!j["enis"].is_array()) return bad("\"enis\" must be an array of strings");
    for (const auto& e : j["enis"]) {
      if (!e.is_string()) return bad("\"enis\" must be an array of strings");
      r.enis.push_back(e.get<std::string>());
    }
  }
  if (r.role == Role::kCardFabric && !r.enis.empty())
    return bad("card-fabric serves no ENI (the instances' cards do): \"enis\" must be empty");
  if (j.contains("probe_as")) {
    AZOTE_TRY(as, str(j, "probe_as", true));
    const auto pa = parse_role(as);
    if (!pa || *pa == Role::kProbe)
      return bad("\"probe_as\" must be hv, card-blk, card-net, card-tpm, card-nsm, card-vsock or card-fabric");
    r.probe_as = *pa;
  }
  // The host's fabric process serves no instance: its "instance" is "fabric", which names
  // nothing else (a probe joins it by that name).
  const bool fabric = r.role == Role::kCardFabric || (r.role == Role::kProbe && r.probe_as == Role::kCardFabric);
  if (fabric && r.instance != kFabricInstance)
    return bad(std::string(r.role == Role::kProbe ? "a probe of card-fabric" : "card-fabric") +
               " needs \"instance\": \"fabric\" (the host's fabric process serves no instance), not \"" + r.instance + "\"");
  if (!fabric && r.instance == kFabricInstance)
    return bad(std::string("\"instance\": \"fabric\" is the host's fabric process (role card-fabric), not a ") +
               to_string(r.role == Role::kProbe ? r.probe_as : r.role) + "'s instance");
  if (j.contains("underlay")) {
    AZOTE_TRY(u, str(j, "underlay", true));
    r.underlay = u;
  }
  if (r.role == Role::kCardFabric) {
    if (r.underlay.empty()) return bad("card-fabric needs \"underlay\": \"IPV4:PORT\" (the address its fabric socket is bound to)");
    AZOTE_TRYV(parse_underlay(r.underlay));
  } else if (!r.underlay.empty()) {
    return bad(std::string("\"underlay\" is for card-fabric (the host's fabric process) only, not ") + to_string(r.role));
  }
  if (j.contains("enclave_debug")) {
    if (!j["enclave_debug"].is_boolean()) return bad("\"enclave_debug\" must be a boolean");
    r.enclave_debug = j["enclave_debug"].get<bool>();
  }
  if (j.contains("limits")) {
    const Json& l = j["limits"];
    if (!l.is_object()) return bad("\"limits\" must be an object");
    auto num = [&](const char* k, uint64_t* out) -> Result<void, LaunchError> {
      if (!l.contains(k)) return {};
      if (!l[k].is_number_unsigned()) return bad(std::string("limits.") + k + " must be a non-negative integer");
      *out = l[k].get<uint64_t>();
      return {};
    };
    uint64_t cpu = 0;
    AZOTE_TRYV(num("memory_mib", &r.limits.memory_mib));
    AZOTE_TRYV(num("pids", &r.limits.pids));
    AZOTE_TRYV(num("cpu_percent", &cpu));
    if (cpu > 100000) return bad("limits.cpu_percent out of range");
    r.limits.cpu_percent = static_cast<uint32_t>(cpu);
    AZOTE_TRY(cpus, str(l, "cpus", false));
    r.limits.cpus = cpus;
  }
  return r;
}

Result<sockaddr_in, LaunchError> parse_underlay(const std::string& text) {
  const std::string what = "\"underlay\" \"" + text + "\"";
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) return bad(what + " is not IPV4:PORT (e.g. 192.168.0.10:6081)");
  const std::string host = text.substr(0, colon), port = text.substr(colon + 1);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  if (::inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) return bad(what + ": \"" + host + "\" is not an IPv4 address");
  unsigned long p = 0;
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      (p = std::stoul(port)) == 0 || p > 65535)
    return bad(what + ": the port must be 1 to 65535");
  sa.sin_port = htons(static_cast<uint16_t>(p));
  return sa;
}

Result<void, LaunchError> send_message(int fd, const Json& body, const std::vector<int>& fds) {
  const std::string text = body.dump();
  if (text.size() > kMaxMessageBytes) return bad("message of " + std::to_string(text.size()) + " bytes is too large");
  if (fds.size() > kMaxFds) return bad("too many descriptors");
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  attach_fds(m, control, fds);
  for (;;) {
    const ssize_t n = ::sendmsg(fd, &m, MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(text.size())) return {};
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return make_error(LaunchErrc::kClosed, "the launcher's socket is closed");
    return errno_error(LaunchErrc::kSocket, "sendmsg");
  }
}

Result<Message, LaunchError> recv_message(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    const int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno_error(LaunchErrc::kSocket, "poll");
    if (r == 0) return make_error(LaunchErrc::kSocket, "no reply within " + std::to_string(timeout.count()) + " ms");
    break;
  }
  std::string buf(kMaxMessageBytes, '\0');
  iovec iov{buf.data(), buf.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return errno_error(LaunchErrc::kSocket, "recvmsg");
  Message out;
  (void)take_fds(m, out.fds);  // other ancillary data is ignored here, as before
  if (n == 0) return make_error(LaunchErrc::kClosed, "the launcher's socket is closed");
  if ((m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) return bad("message or descriptors truncated");
  out.body = Json::parse(buf.substr(0, static_cast<size_t>(n)), nullptr, false);
  if (out.body.is_discarded() || !out.body.is_object()) return bad("a message that is not a JSON object");
  return out;
}

Result<Message, LaunchError> Client::call(const Json& request, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  if (broken_) return Unexpected{*broken_};
  Json req = request;
  const uint64_t seq = ++seq_;
  req["seq"] = seq;
  AZOTE_TRYV(send_message(fd_.get(), req));
  waiting_.insert(seq);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::optional<Message> reply;
  // Calls overlap (the launcher answers a spawn when its child has exec'd, and other
  // requests meanwhile): one waiter at a time reads, and hands each reply to its caller.
  for (;;) {
    if (auto it = arrived_.find(seq); it != arrived_.end()) {
      reply = std::move(it->second);
      arrived_.erase(it);
      break;
    }
    if (broken_) break;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    if (reading_) {
      cv_.wait_until(lock, deadline);
      continue;
    }
    reading_ = true;
    lock.unlock();
    auto m = recv_message(fd_.get(), std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now));
    lock.lock();
    reading_ = false;
    if (m) {
      const uint64_t s = m->body.value("seq", uint64_t{0});
      if (waiting_.count(s) != 0) arrived_.emplace(s, std::move(m).value());  // else a late reply to a call that gave up
    } else if (m.error().code == LaunchErrc::kClosed || m.error().code == LaunchErrc::kProtocol) {
      broken_ = m.error();
    }
    cv_.notify_all();
  }
  waiting_.erase(seq);
  if (!reply) {
    if (broken_) return Unexpected{*broken_};
    return make_error(LaunchErrc::kSocket, "no reply within " + std::to_string(timeout.count()) + " ms");
  }
  if (!reply->body.value("ok", false)) {
    const std::string why = reply->body.value("error", std::string("refused without a reason"));
    return make_error(LaunchErrc::kRefused, why);
  }
  return std::move(reply).value();
}

}  // namespace azote::launch
