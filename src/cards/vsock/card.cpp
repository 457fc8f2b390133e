#include "cards/vsock/card.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <optional>

#include "base/log.hpp"

namespace azote::card_vsock {
namespace {

using control::Json;

// r["cid"] as a number; the refusal's sentence (prefixed with `op`) names the value.
CardResult<uint64_t> json_cid(const std::string& op, const Json& r) {
  if (!r.contains("cid") || !r["cid"].is_number())
    return make_error(CardErrc::kUsage, op + " needs \"cid\" (a number: an enclave's CID, 4-4294967294)");
  const Json& v = r["cid"];
  if (!v.is_number_unsigned()) {
    // Negative, fractional, or past 64 bits (nlohmann makes those floating point).
    return make_error(CardErrc::kUsage, op + ": \"cid\" " + v.dump() + " is not a CID (enclaves are 4-4294967294)");
  }
  return v.get<uint64_t>();
}

// An enclave's CID, or the sentence saying why not (naming the field and the value).
CardResult<uint32_t> enclave_cid(const std::string& op, uint64_t n) {
  const std::string what = op + ": \"cid\" " + std::to_string(n);
  if (n > std::numeric_limits<uint32_t>::max())
    return make_error(CardErrc::kUsage, what + " does not fit in 32 bits (enclaves are 4-4294967294)");
  if (n == std::numeric_limits<uint32_t>::max())
    return make_error(CardErrc::kUsage, what + " (VMADDR_CID_ANY) is reserved (enclaves are 4-4294967294)");
  if (n == kCidParent) return make_error(CardErrc::kUsage, what + " is the parent's (enclaves are 4-4294967294)");
  if (n < kCidParent)
    return make_error(CardErrc::kUsage, what + " is reserved (0 hypervisor, 1 local, 2 host; enclaves are 4-4294967294)");
  return static_cast<uint32_t>(n);
}

// Only the fields an op knows: a misspelt one is refused rather than ignored.
std::optional<std::string> unknown_field(const std::string& op, const Json& r, std::initializer_list<const char*> known) {
  for (auto it = r.begin(); it != r.end(); ++it) {
    if (it.key() == "op") continue;
    if (std::none_of(known.begin(), known.end(), [&](const char* k) { return it.key() == k; })) {
      std::string list;
      for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      return op + ": unknown field \"" + it.key() + "\" (known: " + list + ")";
    }
  }
  return std::nullopt;
}

}  // namespace

CardResult<std::unique_ptr<Card>> Card::create(const CardOptions& o, Limits limits) {
  std::unique_ptr<Card> c(new Card());
  std::vector<uint32_t> cids;
  for (const DeviceSpec& d : o.devices) cids.push_back(d.cid);
  auto sw = Switch::start(cids, limits);
  if (!sw) return Unexpected{sw.error()};
  c->sw_ = std::move(sw).value();
  auto loop = runtime::Loop::create("azote-card-vsock");
  if (!loop) return make_error(CardErrc::kHost, loop.error().message());
  c->loop_ = std::move(loop).value();
  // Switch slot i is --device i (Switch::start).
  for (size_t i = 0; i < o.devices.size(); ++i) {
    if (auto s = c->serve(o.devices[i].cid, o.devices[i].socket, i, kOwnSocketMode); !s)
      return make_error(CardErrc::kHost, "--device cid=" + std::to_string(o.devices[i].cid) +
                                             ",socket=" + o.devices[i].socket + ": " + s.error().message());
  }
  for (const HostPortSpec& h : o.host_ports)
    if (auto r = c->sw_->add_host_port(h.port, h.path); !r)
      return make_error(CardErrc::kUsage, "--host-port " + std::to_string(h.port) + "=" + h.path + ": " +
                                              r.error().message());
  if (!o.control.empty()) {
    auto s = control::Server::listen(o.control);
    if (!s) return make_error(CardErrc::kHost, "--control " + o.control + ": " + s.error().message());
    c->control_ = std::move(s).value();
    c->control_path_ = o.control;
    if (auto w = c->loop_->watch(c->control_->poll_fd(), [p = c.get()] {
          p->control_->serve_ready([p](const Json& r) { return p->handle_control(r); });
        });
        !w)
      return make_error(CardErrc::kHost, w.error().message());
  }
  return c;
}

Card::~Card() { close_devices(); }

void Card::close_devices() {
  control_.reset();
  // Each backend's session stops its queues and takes its device down through the
  // switch; the Backend removes its socket.
  for (auto& s : served_) {
    if (loop_) loop_->unwatch(s->backend->poll_fd());
    s->backend.reset();
  }
  served_.clear();
}

CardResult<void> Card::serve(uint32_t cid, const std::string& socket, size_t port, mode_t mode) {
  auto s = std::make_unique<Served>();
  s->cid = cid;
  s->socket = socket;
  s->port = port;
  s->mode = mode;
  s->device = std::make_unique<VsockDevice>(*sw_, port, cid);
  auto b = vhost_user::Backend::listen(socket, *s->device);  // made 0600
  if (!b) return make_error(CardErrc::kHost, b.error().message());
  s->backend = std::move(b).value();
  // lib/vhost_user never makes a socket wider than 0660; the enclave's hv has neither the
  // card's uid nor its group, so the mode is set here, before anyone is told it listens.
  if (mode != kOwnSocketMode && ::chmod(socket.c_str(), mode) != 0)
    return errno_error(CardErrc::kHost, "chmod " + socket);
  vhost_user::Backend* backend = s->backend.get();
  if (auto w = loop_->watch(backend->poll_fd(), [backend] { (void)backend->run_once(std::chrono::milliseconds(0)); });
      !w)
    return make_error(CardErrc::kHost, w.error().message());
  LOG_INFO("azote-card-vsock: cid %u (%s) on %s (mode %04o)", cid, cid == kCidParent ? "parent" : "enclave",
           socket.c_str(), static_cast<unsigned>(mode));
  served_.push_back(std::move(s));
  return {};
}

std::string Card::cids(bool enclaves_only) const {
  std::vector<uint32_t> v;
  for (const auto& s : served_)
    if (!enclaves_only || s->cid != kCidParent) v.push_back(s->cid);
  std::sort(v.begin(), v.end());
  std::string out;
  for (uint32_t c : v) out += (out.empty() ? "" : ", ") + std::to_string(c);
  return out;
}

Json Card::add_device(const Json& r) {
  const std::string op = "add-device";
  if (auto u = unknown_field(op, r, {"cid", "socket"})) return control::refuse(*u);
  auto n = json_cid(op, r);
  if (!n) return control::refuse(n.error().message());
  auto cid = enclave_cid(op, *n);
  if (!cid) return control::refuse(cid.error().message());
  if (!r.contains("socket") || !r["socket"].is_string())
    return control::refuse(op + " needs \"socket\" (a string: an absolute path of 1-107 bytes)");
  const std::string socket = r["socket"].get<std::string>();
  const std::string quoted = Json(socket).dump();
  if (socket.empty() || socket.size() >= 108)
    return control::refuse(op + ": \"socket\" " + quoted + " is not a socket path of 1-107 bytes");
  if (socket.front() != '/') return control::refuse(op + ": \"socket\" " + quoted + " is not an absolute path");
  if (socket.find('\0') != std::string::npos)
    return control::refuse(op + ": \"socket\" " + quoted + " contains a NUL byte");
  size_t enclaves = 0;
  for (const auto& s : served_) {
    if (s->cid == *cid)
      return control::refuse(op + ": \"cid\" " + std::to_string(*cid) + " is already a device of this card (socket " +
                             s->socket + ")");
    if (s->socket == socket)
      return control::refuse(op + ": \"socket\" " + socket + " is already the socket of cid " + std::to_string(s->cid));
    enclaves += s->cid == kCidParent ? 0 : 1;
  }
  if (socket == control_path_)
    return control::refuse(op + ": \"socket\" " + socket + " is the card's control socket");
  if (enclaves >= kMaxEnclaves)
    return control::refuse(op + ": \"cid\" " + std::to_string(*cid) + ": the card already serves " +
                           std::to_string(enclaves) + " enclaves (cids " + cids(/*enclaves_only=*/true) +
                           "), the most a parent has");
  // The slot first (the switch thread routes to it once acknowledged), then the socket.
  auto port = sw_->attach(*cid);
  if (!port) return control::refuse(op + ": \"cid\" " + std::to_string(*cid) + ": " + port.error().message());
  if (auto s = serve(*cid, socket, *port, kAddedSocketMode); !s) {
    (void)sw_->detach(*port);
    LOG_WARN("azote-card-vsock: add-device cid %u on %s: %s", *cid, socket.c_str(), s.error().message().c_str());
    return control::refuse(op + ": \"socket\" " + socket + ": " + s.error().message());
  }
  return control::ok();
}

Json Card::remove_device(const Json& r) {
  const std::string op = "remove-device";
  if (auto u = unknown_field(op, r, {"cid"})) return control::refuse(*u);
  auto n = json_cid(op, r);
  if (!n) return control::refuse(n.error().message());
  if (*n == kCidParent)
    return control::refuse(op + ": \"cid\" 3 is the parent's device: it is never removed (it goes with the card)");
  const auto it =
      std::find_if(served_.begin(), served_.end(), [&](const auto& s) { return s->cid == *n; });
  if (it == served_.end())
    return control::refuse(op + ": \"cid\" " + std::to_string(*n) + " is not a device of this card (devices: cids " +
                           cids() + ")");
  std::unique_ptr<Served> s = std::move(*it);
  served_.erase(it);
  loop_->unwatch(s->backend->poll_fd());
  // Its session stops both rings (each acknowledged by the switch thread) and takes the
  // device down: what was queued for it is dropped, the parent gets an RST for each
  // connection it had. The Backend closes its connection and removes the socket file.
  s->backend.reset();
  (void)sw_->detach(s->port);
  const PortStats p = sw_->stats().ports[s->port];
  s.reset();
  LOG_INFO("azote-card-vsock: cid %u removed: it sent %llu packets (%llu bytes), received %llu packets "
           "(%llu bytes), %llu resets from the card",
           static_cast<unsigned>(*n), static_cast<unsigned long long>(p.tx_packets),
           static_cast<unsigned long long>(p.tx_bytes), static_cast<unsigned long long>(p.rx_packets),
           static_cast<unsigned long long>(p.rx_bytes), static_cast<unsigned long long>(p.rsts_received));
  return control::ok();
}

// r["port"]: a vsock port, 1-4294967295.
static CardResult<uint32_t> json_port(const std::string& op, const Json& r) {
  if (!r.contains("port") || !r["port"].is_number())
    return make_error(CardErrc::kUsage, op + " needs \"port\" (a number: a host vsock port, 1-4294967295)");
  const Json& v = r["port"];
  if (!v.is_number_unsigned() || v.get<uint64_t>() == 0 || v.get<uint64_t>() > std::numeric_limits<uint32_t>::max())
    return make_error(CardErrc::kUsage, op + ": \"port\" " + v.dump() + " is not a port (1-4294967295)");
  return static_cast<uint32_t>(v.get<uint64_t>());
}

Json Card::add_host_port(const Json& r) {
  const std::string op = "add-host-port";
  if (auto u = unknown_field(op, r, {"port", "socket"})) return control::refuse(*u);
  auto port = json_port(op, r);
  if (!port) return control::refuse(port.error().message());
  if (!r.contains("socket") || !r["socket"].is_string())
    return control::refuse(op + " needs \"socket\" (a string: an absolute path of 1-107 bytes)");
  const std::string socket = r["socket"].get<std::string>();
  if (socket.empty() || socket.front() != '/' || socket.size() >= 108 || socket.find('\0') != std::string::npos)
    return control::refuse(op + ": \"socket\" " + Json(socket).dump() +
                           " is not an absolute socket path of 1-107 bytes");
  if (auto a = sw_->add_host_port(*port, socket); !a) return control::refuse(op + ": " + a.error().message());
  return control::ok();
}

Json Card::remove_host_port(const Json& r) {
  const std::string op = "remove-host-port";
  if (auto u = unknown_field(op, r, {"port"})) return control::refuse(*u);
  auto port = json_port(op, r);
  if (!port) return control::refuse(port.error().message());
  if (!sw_->remove_host_port(*port))
    return control::refuse(op + ": \"port\" " + std::to_string(*port) + " is not a host port of this card");
  return control::ok();
}

Json Card::describe() const {
  const SwitchStats st = sw_->stats();
  uint64_t enclave_connections = 0;
  for (const auto& s : served_) enclave_connections += s->cid == kCidParent ? 0 : st.ports[s->port].connections;
  std::vector<const Served*> order;
  for (const auto& s : served_) order.push_back(s.get());
  std::sort(order.begin(), order.end(), [](const Served* a, const Served* b) { return a->cid < b->cid; });
  Json devices = Json::array();
  for (const Served* s : order) {
    const PortStats& p = st.ports[s->port];
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(s->mode));
    devices.push_back(Json{{"cid", s->cid},
                           {"role", s->cid == kCidParent ? "parent" : "enclave"},
                           {"socket", s->socket},
                           {"socket_mode", mode},
                           {"connected", s->backend->connected()},
                           {"frontend_connections", s->backend->accepted()},
                           {"running", p.up},
                           {"rx_running", p.rx_running},
                           {"tx_running", p.tx_running},
                           {"needs_reset", sw_->needs_reset(s->port)},
                           // Tracked enclave <-> parent connections: for the parent, all of them.
                           {"connections", s->cid == kCidParent ? enclave_connections : p.connections},
                           {"tx_packets", p.tx_packets},
                           {"tx_bytes", p.tx_bytes},
                           {"rx_packets", p.rx_packets},
                           {"rx_bytes", p.rx_bytes},
                           {"rx_buffers", p.rx_chains},
                           {"rx_buffers_too_small", p.rx_chains_too_small},
                           {"resets_received", p.rsts_received},
                           {"stalls", p.stalls}});
  }
  Json drops = Json::object();
  for (size_t i = 0; i < kDropCount; ++i) drops[to_string(static_cast<Drop>(i))] = st.drops[i];
  Json host_ports = Json::array();
  for (const auto& [port, path] : sw_->host_ports()) host_ports.push_back(Json{{"port", port}, {"socket", path}});
  const HostStats& h = st.host;
  return Json{{"ok", true},
              {"devices", devices},
              {"host_ports", host_ports},
              {"host_streams", Json{{"open", h.open},
                                    {"opened", h.opened},
                                    {"refused", h.refused},
                                    {"bytes_to_host", h.bytes_to_host},
                                    {"bytes_from_host", h.bytes_from_host},
                                    {"resets_sent", h.resets_sent},
                                    {"resets_received", h.resets_received}}},
              {"enclaves", served_.size() - 1},
              {"max_enclaves", kMaxEnclaves},
              {"resets_sent", st.rsts_sent},
              {"drops", drops}};
}

Json Card::handle_control(const Json& r) {
  const std::string op = r.contains("op") && r["op"].is_string() ? r["op"].get<std::string>() : "";
  if (op == "add-device") return add_device(r);
  if (op == "remove-device") return remove_device(r);
  if (op == "add-host-port") return add_host_port(r);
  if (op == "remove-host-port") return remove_host_port(r);
  if (op == "describe") return describe();
  if (op == "ping") return control::ok();
  return control::refuse("unknown op \"" + op + "\" (known: add-device, remove-device, add-host-port, remove-host-port, describe, ping)");
}

int Card::run() {
  LOG_INFO("azote-card-vsock: serving cids %s%s", cids().c_str(),
           control_ ? (", control socket " + control_->path()).c_str() : "");
  const int status = loop_->run();
  close_devices();
  sw_->log_stats();
  return status;
}

int run_card(const CardOptions& o) {
  auto c = Card::create(o);
  if (!c) {
    LOG_ERROR("azote-card-vsock: %s", c.error().message().c_str());
    return c.error().code == CardErrc::kUsage ? runtime::kExitUsage : runtime::kExitOsErr;
  }
  return (*c)->run();
}

}  // namespace azote::card_vsock
