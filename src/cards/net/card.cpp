#include "cards/net/card.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <set>

#include "base/log.hpp"

namespace azote::card_net {
namespace {


Unexpected<CardError> model(const SwitchError& e) {
  return make_error(e.code == SwitchErrc::kHost ? CardErrc::kHost : CardErrc::kModel, e.message());
}

// The smallest prefix holding every one of `ps`.
net::Ipv4Prefix covering(const std::vector<net::Ipv4Prefix>& ps) {
  uint32_t len = ps.front().length();
  const uint32_t base = ps.front().network().value();
  for (const auto& p : ps) {
    const uint32_t diff = base ^ p.network().value();
    const uint32_t common = diff == 0 ? 32u : static_cast<uint32_t>(std::countl_zero(diff));
    len = std::min({len, common, static_cast<uint32_t>(p.length())});
  }
  return net::Ipv4Prefix::of(ps.front().network(), static_cast<uint8_t>(len));
}

const char* lease_name(uint8_t s) { return net::to_string(static_cast<net::DhcpLeaseState>(s)); }

// lib/imds's Service as the Switch's MetadataSink.
class ImdsSink final : public MetadataSink {
 public:
  explicit ImdsSink(imds::Service& s) : s_(s) {}
  bool inject(uint32_t slot, std::span<const uint8_t> ipv4) override { return s_.inject(slot, ipv4).ok(); }

 private:
  imds::Service& s_;
};

template <size_t N, typename Name>
nlohmann::json nonzero(const std::array<uint64_t, N>& a, Name name, size_t from = 0) {
  nlohmann::json out = nlohmann::json::object();
  for (size_t i = from; i < N; ++i)
    if (a[i] != 0) out[name(i)] = a[i];
  return out;
}

}  // namespace

Result<std::unique_ptr<Card>, CardError> Card::create(const CardOptions& o) {
  std::unique_ptr<Card> c(new Card());
  c->metrics_path_ = o.metrics_path;
  c->control_path_ = o.control_path;
  c->region_ = o.region;
  c->account_ = o.account;
  SwitchConfig sc;
  sc.region = o.region;
  sc.account = o.account;
  sc.flow_log = !o.flow_log_path.empty();
  sc.flow_log_window_s = o.flow_log_window_s;
  c->switch_ = std::make_unique<Switch>(c->clock_, sc);
  Switch& sw = *c->switch_;
  if (o.datagram_fd >= 0) sw.set_datagram_socket(UniqueFd(o.datagram_fd));

  // The model: declared VPCs, then implicit ones (the smallest CIDR holding the
  // subnets their ENIs name), subnets, groups (all created before any rule, so rules
  // may reference groups declared later), rules, ENIs.
  for (const auto& v : o.vpcs)
    if (auto r = sw.add_vpc(v); !r) return model(r.error());
  std::map<std::string, std::vector<net::Ipv4Prefix>> implicit;
  for (const auto& e : o.enis) {
    if (e.vpc.empty() || sw.has_vpc(e.vpc)) continue;
    auto p = net::Ipv4Prefix::parse(e.subnet);
    if (!p) return make_error(CardErrc::kModel, e.origin + ": subnet " + e.subnet + " is not declared");
    implicit[e.vpc].push_back(*p);
  }
  for (const auto& [id, subnets] : implicit) {
    const VpcSpec v{id, covering(subnets)};
    if (auto r = sw.add_vpc(v); !r) return model(r.error());
    LOG_INFO("vpc %s: not declared; CIDR %s from its ENIs' subnets", id.c_str(), v.cidr.to_string().c_str());
  }
  for (const auto& s : o.subnets)
    if (auto r = sw.add_subnet(s); !r) return model(r.error());
  std::set<std::string> declared;
  for (const auto& g : o.groups) {
    if (!declared.insert(g.id).second) return make_error(CardErrc::kModel, "security group " + g.id + " is declared twice");
    if (auto r = sw.set_group(GroupSpec{g.id, {}, {}}); !r) return model(r.error());
  }
  for (const auto& e : o.enis)
    for (const auto& g : e.groups)
      if (!sw.has_group(g)) {
        if (auto r = sw.set_group(GroupSpec{g, {}, {}}); !r) return model(r.error());
        LOG_INFO("security group %s: not declared; EC2 defaults (all outbound, no inbound)", g.c_str());
      }
  for (const auto& n : o.neighbours)
    for (const auto& g : n.groups)
      if (!sw.has_group(g))
        if (auto r = sw.set_group(GroupSpec{g, {}, {}}); !r) return model(r.error());
  for (const auto& g : o.groups)
    if (auto r = sw.set_group(g); !r) return model(r.error());

  auto loop = runtime::Loop::create("azote-card-net");
  if (!loop) return make_error(CardErrc::kHost, loop.error().message(), loop.error().errnum);
  c->loop_ = std::move(loop).value();
  if (auto t = c->loop_->every(std::chrono::seconds(1), [p = c.get()] { p->tick(); }); !t)
    return make_error(CardErrc::kHost, t.error().message(), t.error().errnum);
  if (!o.flow_log_path.empty()) {
    c->flow_log_ = UniqueFd(::open(o.flow_log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!c->flow_log_) return errno_error(CardErrc::kHost, "--flow-log " + o.flow_log_path);
  }
  if (o.underlay) {
    auto l = FabricLink::start(sw, c->clock_, o.host_id, *o.underlay,
                               o.underlay_fd >= 0 ? UniqueFd(o.underlay_fd) : UniqueFd());
    if (!l) return make_error(l.error().code == LinkErrc::kHost ? CardErrc::kHost : CardErrc::kModel, l.error().message());
    c->fabric_ = std::move(l).value();
    sw.set_fabric(c->fabric_.get(), o.host_id);
    for (const auto& p : o.peers)
      if (auto r = c->fabric_->set_peer(p); !r) return make_error(CardErrc::kModel, r.error().message());
    for (size_t i = 0; i < o.mappings.size(); ++i)
      if (auto r = c->add_mapping(o.mappings[i]); !r)
        return make_error(CardErrc::kModel, "fabric: mappings[" + std::to_string(i) + "]: " + r.error().message());
    if (!o.fabric_inbox.empty())
      if (auto r = c->fabric_->serve_relay(o.fabric_inbox); !r)
        return make_error(r.error().code == LinkErrc::kHost ? CardErrc::kHost : CardErrc::kModel, r.error().message());
    // Kept for the older two-host tests and the benchmark, run by hand; azote-controller
    // never configures it. Said at start so that nobody mistakes it for the split.
    if (o.fabric_inbox.empty())
      LOG_WARN("fabric: this card holds the fabric's keys and may serve ENIs (map guest memory): a development "
               "topology, not the VPC split (a fabric process with \"fabric\": {\"inbox\"} and relaying cards)");
  }
  if (!o.relay_inbox.empty())
    if (auto r = sw.set_relay(o.relay_inbox, o.relay_uid); !r) return model(r.error());
  // The metadata service: before the ENIs (their slots), after the Switch (its output).
  if (!o.imds) {
    c->imds_state_ = "off";
  } else if (auto s = o.imds_tun_fd >= 0 ? imds::Service::start({}, imds::NamespaceFds{UniqueFd(o.imds_tun_fd),
                                                                                       UniqueFd(o.imds_listen_fd)})
                                         : Unexpected{imds::ImdsError{imds::ImdsErrc::kNamespace, 0, o.imds_unavailable}};
             !s) {
    c->imds_state_ = "unavailable: " + s.error().message();
    LOG_WARN("imds: the instance metadata service cannot start (%s); the card runs without it and drops "
             "packets to 169.254.169.254 (imds_unavailable)",
             s.error().message().c_str());
  } else {
    c->imds_ = std::move(s).value();
    c->imds_sink_ = std::make_unique<ImdsSink>(*c->imds_);
    // On the service's reader thread: the Switch finds the slot's ENI under its lock.
    c->imds_->set_output([&sw](uint32_t slot, std::span<const uint8_t> ipv4) { (void)sw.deliver_metadata(slot, ipv4); });
    sw.set_metadata_sink(c->imds_sink_.get());
    c->imds_state_ = "running";
  }
  for (const auto& e : o.enis) AZOTE_TRYV(c->add_eni(e));
  for (const auto& n : o.neighbours)
    if (auto r = sw.add_neighbour(n); !r) return model(r.error());
  if (!o.metrics_path.empty()) {
    auto m = MetricsServer::start(o.metrics_path);
    if (!m) return make_error(CardErrc::kHost, m.error().message());
    c->metrics_ = std::move(m).value();
    c->metrics_->set_imds(c->imds_.get());
    c->update_metrics();
  }
  if (!o.control_path.empty()) {
    auto s = control::Server::listen(o.control_path);
    if (!s) return make_error(CardErrc::kHost, "--control " + o.control_path + ": " + s.error().message());
    c->control_ = std::move(s).value();
    if (auto w = c->loop_->watch(c->control_->poll_fd(), [p = c.get()] {
          p->control_->serve_ready([p](const control::Json& req) { return p->handle_control(req); });
        });
        !w)
      return make_error(CardErrc::kHost, w.error().message(), w.error().errnum);
  }
  return c;
}

Card::~Card() {
  control_.reset();
  metrics_.reset();
  for (auto& [id, s] : served_) s->backend.reset();
  served_.clear();
  // No worker is left to inject; the service's reader stops before the Switch goes.
  if (switch_) switch_->set_metadata_sink(nullptr);
  imds_.reset();
  imds_sink_.reset();
  // No worker is left to send; the link's receive thread stops before the Switch goes.
  if (switch_) switch_->set_fabric(nullptr, 0);
  fabric_.reset();
  if (switch_) write_flow_log(switch_->close_flow_logs());
}

Result<void, CardError> Card::add_eni(const EniSpec& e) {
  if (fabric_ && fabric_->relaying())
    return make_error(CardErrc::kModel, e.origin + ": this card is the fabric process (it holds the fabric's keys): it "
                                                   "serves no ENI, each instance's card does");
  if (e.socket == metrics_path_ || e.socket == control_path_)
    return make_error(CardErrc::kModel, e.origin + ": socket " + e.socket + " is the card's metrics or control socket");
  auto port = switch_->add_eni(e);
  if (!port) return model(port.error());
  auto s = std::make_unique<Served>();
  s->port = *port;
  s->metadata = e.metadata;
  auto undo = [&] {
    detach_imds(*s->port);
    (void)switch_->remove_eni(e.id);
  };
  if (e.metadata) {
    if (auto r = attach_imds(*s->port, *e.metadata); !r) {
      undo();
      return make_error(CardErrc::kModel, e.origin + ": metadata: " + r.error().message());
    }
  }
  s->device = std::make_unique<NetDevice>(s->port, *switch_);
  // 0660: the instance's hypervisor runs under this card's uid (one identity per
  // instance); other instances' cards see the directory (for its inbox), not this socket.
  vhost_user::BackendOptions bo;
  bo.socket_mode = 0660;
  auto b = vhost_user::Backend::listen(e.socket, *s->device, bo);
  if (!b) {
    undo();
    return make_error(CardErrc::kHost, e.origin + ": " + b.error().message());
  }
  s->backend = std::move(b).value();
  const uint64_t id = next_id_++;
  if (auto r = loop_->watch(s->backend->poll_fd(), [this, id] { serve_backend(id); }); !r) {
    undo();
    return make_error(CardErrc::kHost, r.error().message(), r.error().errnum);
  }
  const Port& p = *s->port;
  const auto slot = p.imds_slot();
  LOG_INFO("eni %s: %s %s in %s (%s), groups %zu, source-dest-check %s, imds %s, on %s", p.id().c_str(),
           p.mac().to_string().c_str(), p.ip().to_string().c_str(), p.subnet().to_string().c_str(),
           p.vpc().id.c_str(), p.spec().groups.size(), p.spec().source_dest_check ? "on" : "off",
           slot ? ("slot " + std::to_string(*slot)).c_str() : e.metadata ? "unavailable" : "none (no metadata)",
           p.spec().socket.c_str());
  served_.emplace(id, std::move(s));
  update_metrics();
  return {};
}

Result<void, CardError> Card::remove_eni(const std::string& eni, bool force) {
  for (auto it = served_.begin(); it != served_.end(); ++it) {
    Served& s = *it->second;
    if (s.port->id() != eni) continue;
    if (s.backend->connected() && !force)
      return make_error(CardErrc::kModel,
                        "ENI " + eni + " is in use by a connected hypervisor (\"force\": true detaches it anyway)");
    loop_->unwatch(s.backend->poll_fd());
    detach_imds(*s.port);
    (void)switch_->remove_eni(eni);
    auto owned = std::move(it->second);
    served_.erase(it);
    update_metrics();  // before the backend goes away
    owned->backend.reset();
    LOG_INFO("eni %s: removed", eni.c_str());
    return {};
  }
  return make_error(CardErrc::kModel, "no ENI " + eni);
}

imds::InstanceMetadata Card::imds_metadata(const Port& port, const InstanceMetadata& md) const {
  imds::InstanceMetadata m;
  m.instance_id = md.instance_id;
  m.instance_type = md.instance_type;
  m.ami_id = md.ami_id;
  m.local_ipv4 = port.ip().to_string();
  m.mac = port.mac().to_string();
  // EC2's hostname and local-hostname are both the private DNS name: the VPC zone's.
  m.hostname = md.hostname.empty() ? hostname_for(port.ip()) + "." + region_ + ".compute.internal" : md.hostname;
  m.local_hostname = m.hostname;
  m.availability_zone = md.availability_zone;
  m.region = region_;
  m.account_id = account_;
  m.security_groups = port.spec().groups;
  m.user_data.assign(md.user_data.begin(), md.user_data.end());
  m.http_tokens_required = md.http_tokens_required;
  return m;
}

Result<void, CardError> Card::attach_imds(const Port& port, const InstanceMetadata& md) {
  if (!imds_) return {};  // the ENI's packets to 169.254.169.254: imds_unavailable
  const imds::InstanceMetadata m = imds_metadata(port, md);
  if (const auto slot = port.imds_slot()) {
    if (auto r = imds_->update(*slot, m); !r) return make_error(CardErrc::kModel, "imds: " + r.error().message());
    return {};
  }
  auto slot = imds_->add(m);
  if (!slot) return make_error(CardErrc::kModel, "imds: " + slot.error().message());
  if (auto r = switch_->set_imds_slot(port.id(), *slot); !r) {
    (void)imds_->remove(*slot);
    return model(r.error());
  }
  return {};
}

void Card::detach_imds(const Port& port) {
  const auto slot = port.imds_slot();
  if (!slot) return;
  (void)switch_->set_imds_slot(port.id(), std::nullopt);  // no reply reaches the ENI from now on
  if (imds_) (void)imds_->remove(*slot);                   // its tokens die
}

Result<bool, CardError> Card::set_eni_metadata(const std::string& id, const std::optional<InstanceMetadata>& md) {
  for (auto& [serial, s] : served_) {
    if (s->port->id() != id) continue;
    if (md) {
      AZOTE_TRYV(attach_imds(*s->port, *md));
    } else {
      detach_imds(*s->port);
    }
    s->metadata = md;
    const auto slot = s->port->imds_slot();
    LOG_INFO("eni %s: metadata %s%s", id.c_str(), md ? "updated" : "removed",
             slot ? (", imds slot " + std::to_string(*slot)).c_str() : "");
    return slot.has_value();
  }
  return make_error(CardErrc::kModel, "no ENI " + id);
}

nlohmann::json Card::describe_imds() const {
  nlohmann::json out{{"state", imds_state_}};
  size_t slots = 0;
  for (const auto& [serial, s] : served_) slots += s->port->imds_slot().has_value() ? 1 : 0;
  out["slots"] = slots;
  if (!imds_) return out;
  const imds::Counters c = imds_->counters();
  nlohmann::json responses = nlohmann::json::object();
  for (size_t i = 0; i < c.responses.size(); ++i)
    responses[i < imds::kCountedStatuses.size() ? std::to_string(imds::kCountedStatuses[i]) : "other"] = c.responses[i];
  out["responses"] = std::move(responses);
  out["tokens_issued"] = c.tokens_issued;
  out["refusals"] = nonzero(c.refusals, [](size_t i) { return imds::to_string(static_cast<imds::Refusal>(i)); }, 1);
  out["packets_in"] = c.packets_in;
  out["packets_out"] = c.packets_out;
  out["dropped_in"] = nonzero(c.dropped_in, [](size_t i) { return imds::to_string(static_cast<imds::Drop>(i)); });
  out["dropped_out"] = nonzero(c.dropped_out, [](size_t i) { return imds::to_string(static_cast<imds::Drop>(i)); });
  out["ttl_rewritten"] = c.ttl_rewritten;
  out["connections"] = c.connections;
  return out;
}

void Card::update_metrics() {
  if (!metrics_) return;
  std::vector<MetricsSource> src;
  for (const auto& [id, s] : served_) src.push_back({s->port, s->backend.get()});
  metrics_->set_sources(std::move(src));
}

void Card::write_flow_log(const std::vector<std::string>& lines) {
  if (!flow_log_ || lines.empty()) return;
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(flow_log_.get(), text.data() + off, text.size() - off);
    if (n <= 0) {
      static log::RateLimit limit(4, std::chrono::seconds(60));
      if (limit.allow()) LOG_ERROR("flow log: write: %s", std::strerror(errno));
      return;
    }
    off += static_cast<size_t>(n);
  }
}

nlohmann::json Card::describe_enis() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [id, s] : served_) {
    const Port& p = *s->port;
    const PortCounters& c = p.counters();
    nlohmann::json drops = nlohmann::json::object();
    for (size_t d = 0; d < kDropCount; ++d)
      if (c.drops[d].load() != 0) drops[to_string(static_cast<Drop>(d))] = c.drops[d].load();
    out.push_back(nlohmann::json{{"id", p.id()},
                                 {"socket", p.spec().socket},
                                 {"mac", p.mac().to_string()},
                                 {"ip", p.ip().to_string()},
                                 {"subnet", p.subnet().to_string()},
                                 {"vpc", p.vpc().id},
                                 {"security_groups", p.spec().groups},
                                 {"source_dest_check", p.spec().source_dest_check},
                                 {"connected", s->backend->connected()},
                                 {"connections", s->backend->accepted()},
                                 {"lease", lease_name(p.lease_state.load())},
                                 {"tx_packets", c.tx_packets.load()},
                                 {"rx_packets", c.rx_packets.load()},
                                 {"inbox", p.spec().inbox},
                                 {"from_neighbours", c.neighbour_in.load()},
                                 {"drops", drops}});
    const auto slot = p.imds_slot();
    nlohmann::json imds{{"metadata", s->metadata.has_value()},
                        {"slot", slot ? nlohmann::json(*slot) : nlohmann::json(nullptr)},
                        {"packets_in", c.imds_in.load()},
                        {"packets_out", c.imds_out.load()},
                        {"drops", {{"unavailable", c.dropped(Drop::kImdsUnavailable)},
                                   {"no_metadata", c.dropped(Drop::kImdsNoMetadata)},
                                   {"refused", c.dropped(Drop::kImdsRefused)}}}};
    if (s->metadata) {
      imds["instance_id"] = s->metadata->instance_id;
      imds["http_tokens"] = s->metadata->http_tokens_required ? "required" : "optional";
    }
    out.back()["imds"] = std::move(imds);
    out.back()["rate_limits"] = p.limits().describe();  // limits.hpp: limits, per-direction throttling
  }
  return out;
}

control::Json Card::handle_control(const control::Json& r) {
  const std::string op = r["op"].get<std::string>();
  if (op == "list-enis") return {{"ok", true}, {"enis", describe_enis()}};
  if (op == "list-security-groups") return {{"ok", true}, {"security_groups", switch_->describe_groups()}};
  if (op == "describe-imds") return {{"ok", true}, {"imds", describe_imds()}};
  if (op == "set-eni-metadata") {
    if (!r.contains("id") || !r["id"].is_string() || !r.contains("metadata"))
      return control::refuse("set-eni-metadata needs \"id\" and \"metadata\": {...} (or null: no metadata)");
    std::optional<InstanceMetadata> md;
    if (!r["metadata"].is_null()) {
      auto m = parse_metadata_json("set-eni-metadata: metadata", r["metadata"]);
      if (!m) return control::refuse(m.error().message());
      md = std::move(m).value();
    }
    auto served = set_eni_metadata(r["id"].get<std::string>(), md);
    if (!served) return control::refuse("set-eni-metadata: " + served.error().message());
    return {{"ok", true}, {"served", *served}};
  }
  if (op == "add-vpc") {
    if (!r.contains("vpc")) return control::refuse("add-vpc needs \"vpc\": {\"id\", \"cidr\", \"vni\"?}");
    auto v = parse_vpc_json("add-vpc: vpc", r["vpc"]);
    if (!v) return control::refuse(v.error().message());
    if (auto a = switch_->add_vpc(*v); !a) return control::refuse(a.error().message());
    return control::ok();
  }
  if (op == "add-eni") {
    if (!r.contains("eni")) return control::refuse("add-eni needs \"eni\"");
    auto e = parse_eni_json("add-eni", r["eni"]);
    if (!e) return control::refuse(e.error().message());
    if (!e->vpc.empty() && !switch_->has_vpc(e->vpc))
      return control::refuse("add-eni: no VPC " + e->vpc + " (add it first with add-vpc)");
    for (const auto& g : e->groups)
      if (!switch_->has_group(g))
        return control::refuse("add-eni: no security group " + g + " (create it with set-security-group-rules)");
    if (auto a = add_eni(*e); !a) return control::refuse(a.error().message());
    return {{"ok", true}, {"socket", e->socket}};
  }
  if (op == "remove-eni") {
    if (!r.contains("id") || !r["id"].is_string()) return control::refuse("remove-eni needs \"id\"");
    const bool force = r.contains("force") && r["force"].is_boolean() && r["force"].get<bool>();
    if (auto d = remove_eni(r["id"].get<std::string>(), force); !d) return control::refuse(d.error().message());
    return control::ok();
  }
  if (op == "set-eni-limits") {  // {"id", "limits": {"bandwidth_mbps", "pps"} | null}: at once (limits.hpp)
    if (!r.contains("id") || !r["id"].is_string() || !r.contains("limits"))
      return control::refuse(
          "set-eni-limits needs \"id\" and \"limits\": {\"bandwidth_mbps\", \"pps\"} (or null: none)");
    auto l = parse_limits_json("set-eni-limits: limits", r["limits"]);
    if (!l) return control::refuse(l.error().message());
    auto port = switch_->find(r["id"].get<std::string>());
    if (!port || port->neighbour()) return control::refuse("set-eni-limits: no ENI " + r["id"].get<std::string>());
    port->limits().set(*l);
    port->inbox().notify();  // the worker asks again now, not after a wait computed at the old rate
    return control::ok();
  }
  if (op == "set-security-group-rules") {
    if (!r.contains("group") || !r["group"].is_string())
      return control::refuse("set-security-group-rules needs \"group\" (and \"ingress\" and/or \"egress\")");
    GroupSpec g{r["group"].get<std::string>(), {}, {}};
    for (const char* dir : {"ingress", "egress"}) {
      if (!r.contains(dir)) continue;
      auto rules = parse_rules_json(std::string("set-security-group-rules: ") + dir, r[dir]);
      if (!rules) return control::refuse(rules.error().message());
      (std::strcmp(dir, "ingress") == 0 ? g.ingress : g.egress) = std::move(rules).value();
    }
    if (auto s = switch_->set_group(g); !s) return control::refuse(s.error().message());
    return control::ok();
  }
  if (op == "add-neighbour") {  // {"eni": {id, mac, ip, subnet, vpc, security_groups, inbox, uid}}
    if (!r.contains("eni")) return control::refuse("add-neighbour needs \"eni\"");
    auto e = parse_neighbour_json("add-neighbour: eni", r["eni"]);
    if (!e) return control::refuse(e.error().message());
    if (!e->vpc.empty() && !switch_->has_vpc(e->vpc)) return control::refuse("add-neighbour: no VPC " + e->vpc);
    for (const auto& g : e->groups)
      if (!switch_->has_group(g)) return control::refuse("add-neighbour: no security group " + g);
    if (auto a = switch_->add_neighbour(*e); !a) return control::refuse(a.error().message());
    LOG_INFO("neighbour %s: %s, inbox %s (uid %u)", e->id.c_str(), e->ip.to_string().c_str(), e->inbox.c_str(), *e->uid);
    return control::ok();
  }
  if (op == "remove-neighbour") {
    if (!r.contains("id") || !r["id"].is_string()) return control::refuse("remove-neighbour needs \"id\"");
    if (auto d = switch_->remove_neighbour(r["id"].get<std::string>()); !d) return control::refuse(d.error().message());
    return control::ok();
  }
  if (op == "list-neighbours") {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& p : switch_->neighbours())
      out.push_back({{"id", p->id()}, {"ip", p->ip().to_string()}, {"mac", p->mac().to_string()}, {"vpc", p->vpc().id},
                     {"security_groups", p->spec().groups}, {"inbox", p->spec().inbox}, {"uid", *p->spec().uid}});
    return {{"ok", true}, {"neighbours", out}};
  }
  if (op == "set-fabric-relay") {  // {"inbox", "uid"} or {"inbox": null}: an instance's card
    if (fabric_) return control::refuse("set-fabric-relay: this card has a fabric of its own (--underlay)");
    if (!r.contains("inbox") || !(r["inbox"].is_null() || r["inbox"].is_string()))
      return control::refuse("set-fabric-relay needs \"inbox\": PATH (and \"uid\") or null");
    if (r["inbox"].is_null()) {
      (void)switch_->set_relay("", 0);
      return control::ok();
    }
    if (!r.contains("uid") || !r["uid"].is_number_unsigned() || r["uid"].get<uint64_t>() > 0xfffffffeu)
      return control::refuse("set-fabric-relay needs \"uid\": the fabric process's uid");
    if (auto s = switch_->set_relay(r["inbox"].get<std::string>(), r["uid"].get<uint32_t>()); !s)
      return control::refuse(s.error().message());
    return control::ok();
  }
  if (op == "describe-fabric-relay") return {{"ok", true}, {"relay", switch_->describe_relay()}};
  if (op.find("fabric") != std::string::npos) return handle_fabric_control(op, r);
  return control::refuse("unknown op \"" + op +
                         "\" (known: add-vpc, add-eni, remove-eni, list-enis, set-security-group-rules, "
                         "list-security-groups, set-eni-metadata, set-eni-limits, describe-imds, add-neighbour, "
                         "remove-neighbour, list-neighbours, set-fabric-relay, describe-fabric-relay, set-fabric-peer, "
                         "rotate-fabric-key, add-fabric-mapping, remove-fabric-mapping, list-fabric)");
}

Result<void, CardError> Card::add_mapping(const FabricMappingSpec& m) {
  if (!fabric_) return make_error(CardErrc::kModel, "the card has no fabric (--underlay and --host-id)");
  if (m.host != fabric_->self() && !fabric_->has_peer(m.host))
    return make_error(CardErrc::kModel, "mapping " + m.vpc + " " + m.ip.to_string() + ": host " +
                                            std::to_string(m.host) + " is not a fabric peer (set-fabric-peer first)");
  if (auto r = switch_->add_mapping(m); !r) return model(r.error());
  return {};
}

nlohmann::json Card::describe_fabric() const {
  nlohmann::json out = fabric_->describe();
  uint64_t no_route = 0, fabric_errors = 0;
  for (const auto& [id, s] : served_) {
    no_route += s->port->counters().dropped(Drop::kNoRoute);
    fabric_errors += s->port->counters().dropped(Drop::kFabricError);
  }
  out["no_mapping"] = no_route;  // frames for a VPC address neither here nor mapped
  out["fabric_errors"] = fabric_errors;
  nlohmann::json maps = nlohmann::json::array();
  for (const auto& m : switch_->mappings())
    maps.push_back({{"vpc", m.vpc}, {"ip", m.ip.to_string()}, {"host", m.host}});
  out["mappings"] = std::move(maps);
  if (fabric_->relaying()) out["relay"] = switch_->describe_relay();
  return out;
}

control::Json Card::handle_fabric_control(const std::string& op, const control::Json& r) {
  if (!fabric_) return control::refuse(op + ": the card has no fabric (start it with --underlay and --host-id)");
  if (op == "list-fabric") return {{"ok", true}, {"fabric", describe_fabric()}};
  if (op == "set-fabric-peer") {
    if (!r.contains("peer")) return control::refuse("set-fabric-peer needs \"peer\": {\"host\", \"address\", \"key\", \"key_id\", \"cipher\"}");
    auto p = parse_peer_json("set-fabric-peer: peer", r["peer"]);
    if (!p) return control::refuse(p.error().message());
    if (auto s = fabric_->set_peer(*p); !s) return control::refuse(s.error().message());
    return control::ok();
  }
  if (op == "rotate-fabric-key") {
    if (!r.contains("host")) return control::refuse("rotate-fabric-key needs \"host\", \"key\", \"key_id\" (and \"cipher\")");
    auto h = parse_host_id("rotate-fabric-key: host", r["host"]);
    if (!h) return control::refuse(h.error().message());
    nlohmann::json k = nlohmann::json::object();
    for (const char* key : {"key", "key_id", "cipher"})
      if (r.contains(key)) k[key] = r[key];
    auto key = parse_key_json("rotate-fabric-key", k);
    if (!key) return control::refuse(key.error().message());
    if (auto s = fabric_->rotate(*h, *key); !s) return control::refuse("rotate-fabric-key: " + s.error().message());
    return control::ok();
  }
  if (op == "add-fabric-mapping") {
    std::vector<nlohmann::json> items;
    if (r.contains("mapping")) items.push_back(r["mapping"]);
    if (r.contains("mappings") && r["mappings"].is_array())
      for (const auto& m : r["mappings"]) items.push_back(m);
    if (items.empty()) return control::refuse("add-fabric-mapping needs \"mapping\": {\"vpc\", \"ip\", \"host\"} or \"mappings\": [...]");
    std::vector<FabricMappingSpec> ms;
    for (size_t i = 0; i < items.size(); ++i) {
      auto m = parse_mapping_json("add-fabric-mapping[" + std::to_string(i) + "]", items[i]);
      if (!m) return control::refuse(m.error().message());
      ms.push_back(*m);
    }
    for (const auto& m : ms)
      if (auto a = add_mapping(m); !a) return control::refuse("add-fabric-mapping: " + a.error().message());
    return control::ok();
  }
  if (op == "remove-fabric-mapping") {
    if (!r.contains("vpc") || !r["vpc"].is_string() || !r.contains("ip") || !r["ip"].is_string())
      return control::refuse("remove-fabric-mapping needs \"vpc\" and \"ip\"");
    auto ip = net::Ipv4Address::parse(r["ip"].get<std::string>());
    if (!ip) return control::refuse("remove-fabric-mapping: \"" + r["ip"].get<std::string>() + "\" is not an IPv4 address");
    if (auto d = switch_->remove_mapping(r["vpc"].get<std::string>(), *ip); !d)
      return control::refuse("remove-fabric-mapping: " + d.error().message());
    return control::ok();
  }
  return control::refuse("unknown op \"" + op +
                         "\" (fabric ops: set-fabric-peer, rotate-fabric-key, add-fabric-mapping, remove-fabric-mapping, "
                         "list-fabric)");
}

void Card::request_stop() { loop_->request_stop(); }

void Card::tick() {
  write_flow_log(switch_->tick());
  if (fabric_) fabric_->tick();
}

void Card::serve_backend(uint64_t id) {
  const auto it = served_.find(id);
  if (it == served_.end()) return;
  if (auto r = it->second->backend->run_once(std::chrono::milliseconds(0)); !r)
    LOG_ERROR("eni %s: %s", it->second->port->id().c_str(), r.error().message().c_str());
}

int Card::run() {
  LOG_INFO("azote-card-net: serving %zu ENI(s)%s", served_.size(), control_ ? ", control socket open" : "");
  return loop_->run();
}

}  // namespace azote::card_net
