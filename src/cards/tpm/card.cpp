#include "cards/tpm/card.hpp"

#include <fcntl.h>
#include <sys/socket.h>

#include "base/log.hpp"

namespace azote::card_tpm {

TpmResult<std::unique_ptr<Card>> Card::create(const CardOptions& options) {
  std::unique_ptr<Card> c(new Card());
  auto loop = runtime::Loop::create("azote-card-tpm");
  if (!loop) return make_error(TpmErrc::kHost, loop.error().message(), loop.error().errnum);
  c->loop_ = std::move(loop).value();
  if (!options.metrics_path.empty()) {
    auto m = runtime::TextEndpoint::start(options.metrics_path, [p = c.get()] { return render_prometheus(p->metrics_); });
    if (!m) return make_error(TpmErrc::kHost, m.error().message(), m.error().errnum);
    c->metrics_endpoint_ = std::move(m).value();
  }
  if (options.rot_fd >= 0) {
    const std::string name = "--rot fd:" + std::to_string(options.rot_fd);
    int type = 0;
    socklen_t len = sizeof type;
    if (::fcntl(options.rot_fd, F_SETFD, FD_CLOEXEC) != 0) return errno_error(TpmErrc::kUsage, name);
    if (::getsockopt(options.rot_fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
      return make_error(TpmErrc::kUsage, name + ": not a stream socket (a connection to azote-rot was expected)");
    c->rot_ = std::make_unique<rot_link::RotClient>(UniqueFd(options.rot_fd));
    c->metrics_.rot_connected.store(1, std::memory_order_relaxed);
  }
  auto s = control::Server::listen(options.control_path);
  if (!s) return make_error(TpmErrc::kHost, "--control " + options.control_path + ": " + s.error().message());
  c->control_ = std::move(s).value();
  if (auto w = c->loop_->watch(c->control_->poll_fd(), [p = c.get()] {
        p->control_->serve_ready([p](const control::Json& r) { return p->handle_control(r); });
      });
      !w)
    return make_error(TpmErrc::kHost, w.error().message(), w.error().errnum);
  return c;
}

Card::~Card() {
  control_.reset();
  metrics_endpoint_.reset();
  close_tpm();
}

void Card::close_tpm() {
  data_.reset();    // joins the TPM thread: nothing runs libtpms any more
  if (rot_) rot_->set_cancel_fd(-1);
  attestor_.reset();
  engine_.reset();  // TPMLIB_Terminate
  state_.reset();
  key_.reset();     // wiped
  metrics_.open.store(0, std::memory_order_relaxed);
}

TpmResult<Card::Opened> Card::open(const OpenRequest& r, StateKey key) {
  if (open_)
    return make_error(TpmErrc::kBusy, "this card already serves the TPM of " + instance_ + " on " + socket_ +
                                          "; a card serves one TPM (start another card for another instance)");
  // A duplicate: the launcher's descriptor stays, so that a refused open may be retried.
  UniqueFd fd(::fcntl(r.state_fd, F_DUPFD_CLOEXEC, 3));
  if (!fd) return errno_error(TpmErrc::kState, r.state_name);
  AZOTE_TRY(state, StateFile::adopt(std::move(fd), r.state_name, r.instance));
  AZOTE_TRY(loaded, state->load(key));  // a torn slot is logged there
  state_ = std::move(state);
  key_.emplace(std::move(key));
  generation_.store(state_->generation(), std::memory_order_relaxed);
  auto engine = TpmEngine::start(std::move(loaded.state), [this](std::span<const uint8_t> s) { return persist(s); });
  if (!engine) {
    close_tpm();
    auto e = std::move(engine).error();
    e.context = r.state_name + ": " + e.context;
    return Unexpected{std::move(e)};
  }
  engine_ = std::move(engine).value();
  attestor_ = std::make_unique<Attestor>([e = engine_.get()](std::span<uint8_t> cmd) { return e->process(cmd); },
                                         rot_.get(), metrics_);
  // The vendor command never reaches libtpms (it would refuse an unknown command code).
  auto data = DataServer::listen(
      r.socket, engine_->max_command_bytes(),
      [e = engine_.get(), a = attestor_.get()](std::span<uint8_t> cmd) {
        return is_attest_command(cmd) ? a->handle(cmd) : e->process(cmd);
      },
      metrics_);
  if (!data) {
    close_tpm();
    auto e = std::move(data).error();
    e.context = "socket " + r.socket + ": " + e.context;
    return Unexpected{std::move(e)};
  }
  data_ = std::move(data).value();
  if (rot_) rot_->set_cancel_fd(data_->stop_fd());  // a stopping card does not wait for azote-rot
  data_->start([this] {
    tpm_failed_.store(true);
    request_stop();
  });
  open_ = true;
  manufactured_ = engine_->manufactured();
  instance_ = r.instance;
  socket_ = r.socket;
  metrics_.open.store(1, std::memory_order_relaxed);
  LOG_INFO("tpm %s: %s (%s, generation %llu, %llu bytes); serving on %s", instance_.c_str(),
           manufactured_ ? "manufactured a new TPM" : "loaded its TPM", r.state_name.c_str(),
           static_cast<unsigned long long>(generation_.load()),
           static_cast<unsigned long long>(engine_->state_bytes()), socket_.c_str());
  return Opened{manufactured_, engine_->state_bytes()};
}

bool Card::persist(std::span<const uint8_t> permall) {
  if (auto s = state_->store(*key_, permall); !s) {
    metrics_.state_write_errors.fetch_add(1, std::memory_order_relaxed);
    LOG_ERROR("tpm: the TPM state was not kept: %s", s.error().message().c_str());
    return false;
  }
  metrics_.state_writes.fetch_add(1, std::memory_order_relaxed);
  generation_.store(state_->generation(), std::memory_order_relaxed);
  return true;
}

control::Json Card::describe() const {
  auto get = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };
  control::Json j = {{"ok", true},
                     {"open", open_},
                     {"manufactured", manufactured_},
                     {"commands_total", get(metrics_.commands)},
                     {"command_errors_total", get(metrics_.command_errors)},
                     {"state_writes_total", get(metrics_.state_writes)},
                     {"state_generation", generation_.load(std::memory_order_relaxed)},
                     {"clients", get(metrics_.clients)},
                     {"attestations_total", get(metrics_.attestations)},
                     {"attestation_errors_total", get(metrics_.attestation_errors)},
                     {"rot_requests_total", get(metrics_.rot_requests)},
                     {"rot", rot_ != nullptr && !rot_->gone()}};
  j["instance"] = open_ ? control::Json(instance_) : control::Json(nullptr);
  j["socket"] = open_ ? control::Json(socket_) : control::Json(nullptr);
  return j;
}

control::Json Card::handle_open(const control::Json& request) {
  std::optional<StateKey> key;
  auto r = parse_open(request, &key);
  if (!r) return control::refuse(r.error().message());
  auto o = open(*r, std::move(*key));
  if (!o) {
    LOG_WARN("open %s refused: %s", r->instance.c_str(), o.error().message().c_str());
    return control::refuse(o.error().message());
  }
  return {{"ok", true}, {"manufactured", o->manufactured}, {"state_bytes", o->state_bytes}};
}

control::Json Card::handle_control(const control::Json& r) {
  const std::string op = r["op"].get<std::string>();
  if (op == "open") return handle_open(r);
  if (op == "describe") return describe();
  return control::refuse("unknown op \"" + op + "\" (known: open, describe)");
}

void Card::request_stop() { loop_->request_stop(); }

int Card::run() {
  LOG_INFO("azote-card-tpm: waiting for the controller (control socket %s)", control_->path().c_str());
  const int status = loop_->run();
  return tpm_failed_.load() ? kExitOsErr : status;
}

}  // namespace azote::card_tpm
