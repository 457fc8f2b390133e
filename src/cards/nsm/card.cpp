#include "cards/nsm/card.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

#include "base/eventfd.hpp"
#include "base/log.hpp"
#include "base/parse.hpp"
#include "eif/eif.hpp"
#include "loader/image.hpp"
#include "rot_link/rot_link.hpp"
#include "vhost_user/backend.hpp"
#include "virtio/queue.hpp"

namespace azote::card_nsm {
namespace {

Unexpected<CardError> usage(std::string what) { return make_error(CardErrc::kUsage, std::move(what)); }

bool is_hex(std::string_view s) { return s.find_first_not_of("0123456789abcdef") == std::string_view::npos; }

std::string hex(std::span<const uint8_t> b) { return eif::hex(b); }

std::optional<std::vector<uint8_t>> unhex(const std::string& h) {
  if (h.size() % 2 != 0) return std::nullopt;
  std::vector<uint8_t> out(h.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    unsigned v = 0;
    for (int k = 0; k < 2; ++k) {
      const char c = h[2 * i + k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else return std::nullopt;
    }
    out[i] = static_cast<uint8_t>(v);
  }
  return out;
}

// The engine's signer: the document from azote-rot over the bound connection. The
// module id and (debug mode) the zeroing of PCRs are the binding's, not the request's.
nsm::Signer rot_signer(rot_link::RotClient* rot) {
  return [rot](const nsm::AttestationRequest& r) -> Result<nsm::Bytes, std::string> {
    if (rot == nullptr) return Unexpected{std::string("no --rot connection: this card cannot attest")};
    nlohmann::json pcrs = nlohmann::json::object();
    for (const auto& [i, v] : r.pcrs) pcrs[std::to_string(i)] = hex(v);
    nlohmann::json req = {{"op", "attest-nsm"}, {"module_id", r.module_id}, {"pcrs", pcrs}};
    if (r.user_data) req["user_data"] = hex(*r.user_data);
    if (r.nonce) req["nonce"] = hex(*r.nonce);
    if (r.public_key) req["public_key"] = hex(*r.public_key);
    auto reply = rot->call(req);
    if (!reply.ok()) return Unexpected{reply.error().message()};
    if (!reply->value("ok", false)) return Unexpected{"azote-rot refused: " + reply->value("error", std::string("?"))};
    const auto doc = reply->find("document");
    auto bytes = doc != reply->end() && doc->is_string() ? unhex(doc->get<std::string>()) : std::nullopt;
    if (!bytes || bytes->empty()) return Unexpected{std::string("azote-rot's reply has no document")};
    return std::move(*bytes);
  };
}

}  // namespace

const char* usage_text() {
  return R"(usage: azote-card-nsm --socket PATH --eif PATH|fd:N --enclave-id ID [--parent-role ARN]
                      [--rot fd:N] [--log-level LEVEL] [--seccomp kill|log]

One enclave's Nitro Secure Module (virtio device 33) over vhost-user: the PCRs of
the enclave (0/1/2/8 from its image, 3 from --parent-role, 4 from the parent
instance), DescribePCR/ExtendPCR/LockPCR/LockPCRs/DescribeNSM/GetRandom, and
attestation documents signed by azote-rot (the card holds no key).

  --socket PATH       the vhost-user socket the enclave's azote-hv connects to (0600)
  --eif PATH|fd:N     the enclave's image (checked whole, signature included): PCR0,
                      PCR1, PCR2, and PCR8 if signed
  --enclave-id ID     i-<17 hex>-enc<16 hex>: DescribeNSM's module_id; its prefix is
                      the parent instance (PCR4)
  --parent-role ARN   the parent's IAM role (PCR3; zero without one)
  --rot fd:N          a connection to azote-rot the launcher bound to this enclave
                      (without it, Attestation answers InternalError)
  --log-level LEVEL   error, warn, info (default), debug
  --seccomp MODE      kill (default) or log (src/cards/nsm/seccomp.json)
  --help, --version
)";
}

CardResult<ParsedArgs> parse_args(const std::vector<std::string>& args) {
  ParsedArgs p;
  CardOptions& o = p.options;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "--help" || a == "-h") {
      p.help = true;
      continue;
    }
    if (a == "--version") {
      p.version = true;
      continue;
    }
    std::string value;
    if (const size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else {
      if (i + 1 >= args.size()) return usage(a + " needs a value (see --help)");
      value = args[++i];
    }
    if (a == "--socket") {
      if (value.empty() || value.size() >= 108) return usage("--socket: \"" + value + "\" is not a socket path of 1-107 bytes");
      o.socket = value;
    } else if (a == "--eif") {
      if (value.empty() || (value.rfind("fd:", 0) == 0 && !parse_fd_ref(value)))
        return usage("--eif: \"" + value + "\" is not a path or fd:N");
      o.eif = value;
    } else if (a == "--enclave-id") {
      const bool ok = value.size() == 39 && value.rfind("i-", 0) == 0 && value.compare(19, 4, "-enc") == 0 &&
                      is_hex(std::string_view(value).substr(2, 17)) && is_hex(std::string_view(value).substr(23));
      if (!ok) return usage("--enclave-id: \"" + value + "\" is not i-<17 hex>-enc<16 hex>");
      o.enclave_id = value;
    } else if (a == "--parent-role") {
      if (value.empty() || value.size() > 2048) return usage("--parent-role: an ARN of 1-2048 bytes");
      o.parent_role = value;
    } else if (a == "--rot") {
      const auto fd = parse_fd_ref(value);
      if (!fd) return usage("--rot: \"" + value + "\" is not fd:N");
      o.rot_fd = *fd;
    } else if (a == "--log-level") {
      o.log_level = value;
    } else if (a == "--seccomp") {
      if (value != "kill" && value != "log") return usage("--seccomp: \"" + value + "\" is not kill or log");
      o.seccomp = value;
    } else {
      return usage("unknown option \"" + a + "\" (see --help)");
    }
  }
  if (p.help || p.version) return p;
  if (o.socket.empty()) return usage("--socket is required");
  if (o.eif.empty()) return usage("--eif is required");
  if (o.enclave_id.empty()) return usage("--enclave-id is required");
  return p;
}

CardResult<std::map<uint32_t, attest::Pcr>> platform_pcrs(const CardOptions& o) {
  auto file = [&]() {
    if (const auto fd = parse_fd_ref(o.eif)) {
      UniqueFd owned(*fd);
      return loader::read_fd(owned.get(), o.eif, 4ull << 30);
    }
    return loader::read_file(o.eif, 4ull << 30);
  }();
  if (!file.ok()) return make_error(CardErrc::kImage, "--eif: " + file.error().message());
  auto img = eif::parse(*file);
  if (!img.ok()) return make_error(CardErrc::kImage, "--eif " + o.eif + ": " + img.error().message());
  std::optional<eif::Signature> sig;
  if (img->signature) {
    auto s = eif::read_signature(*img->signature);
    if (!s.ok()) return make_error(CardErrc::kImage, "--eif " + o.eif + ": " + s.error().message());
    sig = std::move(*s);
  }
  const eif::Measurements m = eif::measure(*img, sig ? &*sig : nullptr);
  if (sig) {
    if (auto v = eif::verify_signature(*sig, m.pcr0, ::time(nullptr)); !v.ok())
      return make_error(CardErrc::kImage, "--eif " + o.eif + ": " + v.error().message());
  }
  const auto text = [](const std::string& s) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  std::map<uint32_t, attest::Pcr> pcrs = {{0, m.pcr0}, {1, m.pcr1}, {2, m.pcr2}};
  if (!o.parent_role.empty()) pcrs[3] = attest::extend(attest::Pcr{}, text(o.parent_role));
  pcrs[4] = attest::extend(attest::Pcr{}, text(o.enclave_id.substr(0, 19)));
  if (m.pcr8) pcrs[8] = *m.pcr8;
  return pcrs;
}

// ----- the device -----------------------------------------------------------------

struct NsmDevice::Worker {
  explicit Worker(const vhost_user::VringInfo& v) : info(v), queue(*v.memory) {}
  vhost_user::VringInfo info;
  virtio::SplitQueue queue;
  UniqueFd stop;
  runtime::BoundedThread thread;
};

NsmDevice::NsmDevice(nsm::Engine& engine) : engine_(engine) {}
NsmDevice::~NsmDevice() { (void)queue_stopped(0); }

uint64_t NsmDevice::features() const { return uint64_t{1} << virtio::kFVersion1; }

uint64_t NsmDevice::protocol_features() const {
  using vhost_user::bit;
  return bit(vhost_user::kPfConfig) | bit(vhost_user::kPfReplyAck) | bit(vhost_user::kPfResetDevice) |
         bit(vhost_user::kPfStatus);
}

Result<std::vector<uint8_t>, vhost_user::VuError> NsmDevice::get_config(uint32_t offset, uint32_t size) {
  // No config space: zeros for whatever the transport asks (it reads none for id 33).
  (void)offset;
  return std::vector<uint8_t>(size, 0);
}

void NsmDevice::queue_started(const vhost_user::VringInfo& v) {
  if (v.index != 0) return;
  (void)queue_stopped(0);
  next_avail_ = v.next_avail;
  auto w = std::make_unique<Worker>(v);
  w->stop = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  auto c = w->queue.configure(v.size, v.desc, v.avail, v.used, false, false);
  if (!w->stop || !c.ok()) {
    needs_reset_.store(true);
    LOG_ERROR("nsm: cannot start the queue: %s", c.ok() ? "eventfd" : c.error().message().c_str());
    return;
  }
  w->queue.set_next_avail(v.next_avail);
  w->queue.set_next_used(v.next_avail);
  Worker* raw = w.get();
  worker_ = std::move(w);
  worker_->thread.start("nsm-queue", "queue", [this, raw] { serve(*raw); });
}

uint16_t NsmDevice::queue_stopped(uint32_t index) {
  if (index != 0 || !worker_) return next_avail_;
  const uint64_t one = 1;
  (void)::write(worker_->stop.get(), &one, sizeof one);
  worker_->thread.join_within(runtime::kWorkerStopDeadline, "the NSM queue worker");
  next_avail_ = worker_->queue.next_avail();
  worker_.reset();
  return next_avail_;
}

void NsmDevice::serve(Worker& w) {
  virtio::Chain chain;
  std::vector<uint8_t> request;
  request.reserve(nsm::kMaxRequestBytes + 1);
  // Linux's nsm.c and QEMU's virtio-nsm put a call on the queue as two chains: the
  // request (device-readable), then the response buffer (device-writable). One chain
  // holding both is taken too. Between the two, the request's head waits here.
  int request_head = -1;  // the waiting request's head, or -1
  const auto interrupt = [&w] {
    if (w.queue.needs_interrupt() && w.info.call_fd >= 0) {
      const uint64_t one = 1;
      (void)::write(w.info.call_fd, &one, sizeof one);
    }
  };
  for (;;) {
    pollfd p[2] = {{w.stop.get(), POLLIN, 0}, {w.info.kick_fd, POLLIN, 0}};
    const int n = ::poll(p, w.info.kick_fd >= 0 ? 2 : 1, 1000);
    if (n < 0 && errno != EINTR) {
      LOG_ERROR("nsm: poll: %s", std::strerror(errno));
      return;
    }
    if ((p[0].revents & POLLIN) != 0) return;
    if (w.info.kick_fd >= 0 && (p[1].revents & POLLIN) != 0) (void)drain_eventfd(w.info.kick_fd);
    if (w.queue.broken()) continue;  // until the driver resets the device
    for (;;) {
      auto got = w.queue.pop_into(chain);
      if (!got.ok()) {
        needs_reset_.store(true);
        LOG_WARN("nsm: the driver broke the queue: %s", got.error().message().c_str());
        break;
      }
      if (!*got) break;
      if (!chain.readable.empty()) {
        if (request_head >= 0) {
          // A second request before a response buffer: the driver broke the protocol.
          needs_reset_.store(true);
          LOG_WARN("nsm: a request chain while another waits for its response buffer");
          (void)w.queue.push_used(static_cast<uint16_t>(request_head), 0);
          request_head = -1;
        }
        // The request, copied once out of guest memory (at most one byte past the
        // limit: the engine then answers InputTooLarge without the rest being read).
        request.clear();
        for (const auto& b : chain.readable) {
          const size_t take = std::min<size_t>(b.len, nsm::kMaxRequestBytes + 1 - request.size());
          request.insert(request.end(), b.host, b.host + take);
          if (request.size() > nsm::kMaxRequestBytes) break;
        }
        if (chain.writable.empty()) {
          request_head = chain.head;  // its response buffer comes in the next chain
          continue;
        }
      } else if (request_head < 0) {
        // A response buffer without a request: given back empty.
        LOG_WARN("nsm: a response buffer without a request before it");
        (void)w.queue.push_used(chain.head, 0);
        interrupt();
        continue;
      }
      const size_t capacity = std::min<uint64_t>(chain.writable_bytes, 64 * 1024);
      const nsm::Bytes response = engine_.handle(request, capacity);
      if (!engine_.last_internal_error().empty() && response.size() < 32)
        LOG_WARN("nsm: %s", engine_.last_internal_error().c_str());
      size_t written = 0;
      for (const auto& b : chain.writable) {
        if (written == response.size()) break;
        const size_t put = std::min<size_t>(b.len, response.size() - written);
        std::memcpy(b.host, response.data() + written, put);
        written += put;
      }
      requests_.fetch_add(1, std::memory_order_relaxed);
      if (request_head >= 0) {
        (void)w.queue.push_used(static_cast<uint16_t>(request_head), 0);
        request_head = -1;
      }
      (void)w.queue.push_used(chain.head, static_cast<uint32_t>(written));
      interrupt();
    }
  }
}

// ----- the process ----------------------------------------------------------------

int run_card(const CardOptions& o, const std::map<uint32_t, attest::Pcr>& platform) {
  const std::map<uint32_t, attest::Pcr>* pcrs = &platform;
  // azote-rot signs in milliseconds: 4 s leaves a stopping queue (5 s) time to end.
  std::unique_ptr<rot_link::RotClient> rot;
  if (o.rot_fd >= 0) rot = std::make_unique<rot_link::RotClient>(UniqueFd(o.rot_fd), std::chrono::seconds(4));
  auto engine = nsm::Engine::create(o.enclave_id, *pcrs, rot_signer(rot.get()));
  if (!engine.ok()) {
    LOG_ERROR("azote-card-nsm: %s", engine.error().message().c_str());
    return runtime::kExitUsage;
  }
  NsmDevice device(*engine);
  auto backend = vhost_user::Backend::listen(o.socket, device);
  if (!backend.ok()) {
    LOG_ERROR("azote-card-nsm: --socket %s: %s", o.socket.c_str(), backend.error().message().c_str());
    return runtime::kExitOsErr;
  }
  auto loop = runtime::Loop::create("azote-card-nsm");
  if (!loop.ok()) {
    LOG_ERROR("azote-card-nsm: %s", loop.error().message().c_str());
    return runtime::kExitOsErr;
  }
  vhost_user::Backend* b = backend->get();
  if (auto w = (*loop)->watch(b->poll_fd(), [b] { (void)b->run_once(std::chrono::milliseconds(0)); }); !w.ok()) {
    LOG_ERROR("azote-card-nsm: %s", w.error().message().c_str());
    return runtime::kExitOsErr;
  }
  LOG_INFO("azote-card-nsm: %s on %s: PCR0 %s%s", o.enclave_id.c_str(), o.socket.c_str(), hex(pcrs->at(0)).c_str(),
           rot ? "" : " (no --rot: no attestation)");
  const int status = (*loop)->run();
  (void)device.queue_stopped(0);
  return status;
}

}  // namespace azote::card_nsm
