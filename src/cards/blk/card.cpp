#include "cards/blk/card.hpp"

#include <unistd.h>

#include <cstring>

#include <openssl/crypto.h>

#include "base/log.hpp"
#include "cards/blk/import.hpp"

namespace azote::card_blk {

Result<std::unique_ptr<Card>, CardError> Card::create(const CardOptions& options) {
  std::unique_ptr<Card> c(new Card());
  c->metrics_path_ = options.metrics_path;
  c->control_path_ = options.control_path;
  auto loop = runtime::Loop::create("azote-card-blk");
  if (!loop) return make_error(CardErrc::kHost, loop.error().message(), loop.error().errnum);
  c->loop_ = std::move(loop).value();

  for (const VolumeOptions& vo : options.volumes) AZOTE_TRYV(c->add_volume(vo));
  if (!options.metrics_path.empty()) {
    auto m = MetricsServer::start(options.metrics_path, {});
    if (!m) return make_error(CardErrc::kHost, m.error().message());
    c->metrics_ = std::move(m).value();
    c->update_metrics();
  }
  if (!options.control_path.empty()) {
    auto s = control::Server::listen(options.control_path);
    if (!s) return make_error(CardErrc::kHost, "--control " + options.control_path + ": " + s.error().message());
    c->control_ = std::move(s).value();
    if (auto w = c->loop_->watch(c->control_->poll_fd(), [p = c.get()] {
          p->control_->serve_ready([p](const control::Json& r) { return p->handle_control(r); });
        });
        !w)
      return make_error(CardErrc::kHost, w.error().message(), w.error().errnum);
  }
  return c;
}

Card::~Card() {
  control_.reset();
  metrics_.reset();
  // Backends first (each stops its queues and removes its socket), then devices, then volumes.
  for (auto& [id, s] : served_) s->backend.reset();
  served_.clear();
}

Result<void, CardError> Card::check_new(const VolumeOptions& o) const {
  if (served_.size() >= kMaxVolumes)
    return make_error(CardErrc::kVolume, o.origin + ": the card already serves " + std::to_string(kMaxVolumes) +
                                             " volumes");
  if (o.socket == metrics_path_ || o.socket == control_path_)
    return make_error(CardErrc::kVolume, o.origin + ": socket " + o.socket + " is the card's own metrics or control socket");
  for (const auto& [id, s] : served_) {
    if (s->options.socket == o.socket)
      return make_error(CardErrc::kVolume, o.origin + ": socket " + o.socket + " is used by another volume");
  }
  return {};
}

Result<uint64_t, CardError> Card::add_volume(VolumeOptions o, const std::string& import_from) {
  struct Wipe {  // the key lives on only inside the Volume
    std::vector<uint8_t>& k;
    ~Wipe() {
      OPENSSL_cleanse(k.data(), k.size());
      k.clear();
    }
  } wipe{o.key_bytes};
  AZOTE_TRYV(check_new(o));
  auto s = std::make_unique<Served>();
  auto v = Volume::open(o, clock_);
  if (!v) return make_error(v.error().code == VolumeErrc::kHost ? CardErrc::kHost : CardErrc::kVolume,
                            v.error().message());
  s->volume = std::move(v).value();
  uint64_t imported = 0;
  if (!import_from.empty()) {
    if (s->volume->params().read_only)
      return make_error(CardErrc::kVolume, o.origin + ": cannot import into a read-only volume");
    auto n = import_content(import_from, o.file, s->volume->blk().capacity() * 512, s->volume->key());
    if (!n) return make_error(CardErrc::kVolume, o.origin + ": " + n.error().message());
    imported = *n;
  }
  s->device = std::make_unique<BlkDevice>(*s->volume);
  auto b = vhost_user::Backend::listen(s->volume->params().socket, *s->device);
  if (!b) return make_error(CardErrc::kHost, "socket=" + s->volume->params().socket + ": " + b.error().message());
  s->backend = std::move(b).value();
  s->options = std::move(o);
  const uint64_t id = next_id_++;
  if (auto w = loop_->watch(s->backend->poll_fd(), [this, id] { serve_backend(id); }); !w)
    return make_error(CardErrc::kHost, w.error().message(), w.error().errnum);
  LOG_INFO("volume %s: serving %s on %s%s%s", s->volume->params().name.c_str(), s->options.file.c_str(),
           s->options.socket.c_str(), s->volume->params().read_only ? " (read-only)" : "",
           s->volume->params().encrypted ? " (encrypted)" : "");
  served_.emplace(id, std::move(s));
  update_metrics();
  return imported;
}

Result<void, CardError> Card::remove_volume(const std::string& socket, bool force) {
  for (auto it = served_.begin(); it != served_.end(); ++it) {
    Served& s = *it->second;
    if (s.options.socket != socket) continue;
    if (s.backend->connected() && !force)
      return make_error(CardErrc::kVolume, "volume on " + socket +
                                               " is in use by a connected hypervisor (\"force\": true detaches it anyway)");
    loop_->unwatch(s.backend->poll_fd());
    const std::string name = s.volume->params().name;
    auto owned = std::move(it->second);
    served_.erase(it);
    update_metrics();  // before the counters go away
    owned->backend.reset();
    owned.reset();
    LOG_INFO("volume %s: removed (socket %s)", name.c_str(), socket.c_str());
    return {};
  }
  return make_error(CardErrc::kVolume, "no volume is served on socket " + socket);
}

void Card::update_metrics() {
  if (!metrics_) return;
  std::vector<MetricsSource> src;
  for (const auto& [id, s] : served_) src.push_back({s->volume->params().name, s->options.socket, &s->volume->metrics()});
  metrics_->set_sources(std::move(src));
}

nlohmann::json Card::describe_volumes() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [id, s] : served_) {
    const VolumeParams& p = s->volume->params();
    const VolumeMetrics& m = s->volume->metrics();
    out.push_back(nlohmann::json{{"serial", p.name},
                   {"socket", s->options.socket},
                   {"file", s->options.file},
                   {"read_only", p.read_only},
                   {"encrypted", p.encrypted},
                   {"queues", p.queues},
                   {"iops", s->options.iops},
                   {"mbps", s->options.mbps},
                   {"sectors", s->volume->blk().capacity()},
                   {"connected", s->backend->connected()},
                   {"connections", s->backend->accepted()},
                   {"reads", m.op[static_cast<size_t>(OpKind::kRead)].ops.load(std::memory_order_relaxed)},
                   {"writes", m.op[static_cast<size_t>(OpKind::kWrite)].ops.load(std::memory_order_relaxed)}});
  }
  return out;
}

control::Json Card::handle_control(const control::Json& r) {
  const std::string op = r["op"].get<std::string>();
  if (op == "list-volumes") return {{"ok", true}, {"volumes", describe_volumes()}};
  if (op == "add-volume") {
    if (!r.contains("volume")) return control::refuse("add-volume needs \"volume\"");
    auto o = parse_volume_json("add-volume", r["volume"], /*allow_key=*/true);
    if (!o) return control::refuse(o.error().message());
    const std::string socket = o->socket;
    std::string import_from;
    if (r.contains("import")) {
      if (!r["import"].is_string() || r["import"].get<std::string>().empty())
        return control::refuse("\"import\" must be the path of a file");
      import_from = r["import"].get<std::string>();
    }
    auto a = add_volume(std::move(o).value(), import_from);
    if (!a) return control::refuse(a.error().message());
    return {{"ok", true}, {"socket", socket}, {"imported_bytes", *a}};
  }
  if (op == "remove-volume") {
    if (!r.contains("socket") || !r["socket"].is_string()) return control::refuse("remove-volume needs \"socket\"");
    const bool force = r.contains("force") && r["force"].is_boolean() && r["force"].get<bool>();
    if (auto d = remove_volume(r["socket"].get<std::string>(), force); !d) return control::refuse(d.error().message());
    return control::ok();
  }
  return control::refuse("unknown op \"" + op + "\" (known: add-volume, remove-volume, list-volumes)");
}

void Card::request_stop() { loop_->request_stop(); }

void Card::serve_backend(uint64_t id) {
  const auto it = served_.find(id);
  if (it == served_.end()) return;
  Served& s = *it->second;
  if (auto r = s.backend->run_once(std::chrono::milliseconds(0)); !r)
    LOG_ERROR("volume %s: %s", s.volume->params().name.c_str(), r.error().message().c_str());
}

int Card::run() {
  LOG_INFO("azote-card-blk: serving %zu volume(s)%s", served_.size(), control_ ? ", control socket open" : "");
  return loop_->run();
}

}  // namespace azote::card_blk
