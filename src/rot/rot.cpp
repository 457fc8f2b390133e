#include "rot/rot.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <openssl/evp.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <ctime>
#include <cstdio>
#include <cstring>

#include "attest/attest.hpp"
#include "base/hex.hpp"
#include "base/log.hpp"
#include "base/parse.hpp"
#include "base/unique_fd.hpp"

namespace azote::rot {
namespace {

constexpr const char* kUdsFile = "uds";
// The TPM cards' connections: one per instance with a TPM; a request line is small
// (24 PCRs, a nonce, user data, a public key in hex).
constexpr size_t kMaxTpmClients = 4096;
constexpr size_t kMaxTpmLine = 64 * 1024;

// --tpm-listen: fd:N, a listening socket the launcher made (root's, 0600), or a PATH
// made here (tests), 0600.
RotResult<UniqueFd> listen_tpm(const std::string& where) {
  if (const auto n = parse_fd_ref(where)) {
    int type = 0, listening = 0;
    socklen_t len = sizeof type;
    socklen_t len2 = sizeof listening;
    if (::getsockopt(*n, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM ||
        ::getsockopt(*n, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len2) != 0 || listening == 0)
      return make_error(RotErrc::kUsage, "--tpm-listen " + where + ": not a listening stream socket");
    UniqueFd fd(*n);
    ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
    return fd;
  }
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (where.size() >= sizeof a.sun_path) return make_error(RotErrc::kUsage, "--tpm-listen " + where + ": path too long");
  where.copy(a.sun_path, where.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  ::unlink(where.c_str());
  const mode_t old = ::umask(0177);
  const bool ok = fd && ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(fd.get(), 64) == 0;  // NOLINT
  ::umask(old);
  if (!ok) return make_error(RotErrc::kState, "--tpm-listen " + where, errno);
  return fd;
}
// Prefixed (with its NUL) to every payload "sign" signs.
constexpr char kSignContext[] = "azote-rot sign v1";

std::string sha256_hex(std::span<const uint8_t> b) {
  uint8_t d[32];
  unsigned int n = 0;
  EVP_Digest(b.data(), b.size(), d, &n, EVP_sha256(), nullptr);
  return to_hex(std::span<const uint8_t>(d, n));
}

const char* mode_name(dice::Mode m) {
  switch (m) {
    case dice::Mode::kNormal: return "normal";
    case dice::Mode::kDebug: return "development";
    case dice::Mode::kRecovery: return "recovery";
    case dice::Mode::kNotConfigured: break;
  }
  return "not-configured";
}

bool read_all(int fd, uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

}  // namespace

RotResult<Parsed> parse_args(const std::vector<std::string>& args) {
  Parsed p;
  Options& o = p.options;
  auto bad = [](const std::string& w) { return make_error(RotErrc::kUsage, w); };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      p.help = true;
      return p;
    }
    if (a == "--version") {
      p.version = true;
      return p;
    }
    std::string flag = a, value;
    if (const size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      flag = a.substr(0, eq);
      value = a.substr(eq + 1);
    } else {
      if (a.rfind("--", 0) != 0) return bad("unexpected argument \"" + a + "\" (see --help)");
      if (i + 1 >= args.size()) return bad(a + " needs a value (see --help)");
      value = args[++i];
    }
    if (flag == "--state-dir") {
      o.state_dir = value;
    } else if (flag == "--control") {
      o.control = value;
    } else if (flag == "--tpm-listen") {
      if (value.empty()) return bad("--tpm-listen needs fd:N or a socket path");
      o.tpm_listen = value;
    } else if (flag == "--log-level") {
      o.log_level = value;
    } else if (flag == "--seccomp") {
      auto m = sandbox::parse_seccomp_mode(value);
      if (!m) return bad("--seccomp: " + m.error().message());
      o.seccomp = *m;
    } else if (flag == "--mode") {
      if (value == "normal") o.mode = dice::Mode::kNormal;
      else if (value == "development") o.mode = dice::Mode::kDebug;
      else return bad("--mode \"" + value + "\": expected normal or development");
    } else if (flag == "--layer") {
      // NAME=PATH[,config=TEXT]
      const size_t eq = value.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == value.size())
        return bad("--layer \"" + value + "\": expected NAME=PATH[,config=TEXT]");
      LayerSpec l;
      l.name = value.substr(0, eq);
      l.path = value.substr(eq + 1);
      if (const size_t c = l.path.find(",config="); c != std::string::npos) {
        l.config = l.path.substr(c + 8);
        l.path = l.path.substr(0, c);
      }
      if (l.path.empty()) return bad("--layer \"" + value + "\": no PATH");
      o.layers.push_back(std::move(l));
    } else {
      return bad("unknown option \"" + flag + "\" (see --help)");
    }
  }
  if (o.state_dir.empty()) return bad("--state-dir is required");
  if (o.layers.empty()) return bad("at least one --layer NAME=PATH is required");
  return p;
}

const char* usage_text() {
  return R"(Usage: azote-rot --state-dir DIR --layer NAME=PATH[,config=TEXT]... [--mode normal|development]
                 [--control PATH] [--tpm-listen PATH] [--log-level LEVEL] [--seccomp kill|log]

azote's root of trust, standing in for a host security chip: the only holder of the
host's unique device secret (DIR/uds, 48 random bytes, created at first start, mode 0400;
refused if another uid owns it or group or others may read it). At start it measures
each --layer (SHA-384 of the file's bytes and of its config text, and the mode), derives
the DICE chain device -> layer 1 -> ... (a secret and a P-384 key per layer, each
layer's X.509 certificate signed by the layer below), prints one JSON line describing
it, and with --control serves:
  {"op": "describe"}               the layers and the certificate chain (leaf first)
  {"op": "sign", "payload": HEX}   the attestation key's ECDSA-SHA384 signature of
                                   "azote-rot sign v1", a NUL byte and the payload
  {"op": "attest", "module_id": ID, "pcrs": {"I": HEX}, ["nonce"|"user_data"|
   "public_key": HEX]}              an attestation document (COSE_Sign1, ES384, the
                                   AWS Nitro format) by the attestation key; in
                                   development mode every PCR in it is zero
It never reveals the device secret, a layer's secret or a private key. Only root and
its own uid may use a control socket it makes; one handed over (fd:N) is guarded by
its file's mode.

  --state-dir DIR     its state (0700, created if missing); fd:N: a directory
                      descriptor handed over (the launcher's <state>/rot)
  --layer NAME=PATH   a layer above the device, in order; NAME 1-64 of [A-Za-z0-9._-];
                      PATH may be fd:N (a descriptor handed over);
                      ",config=TEXT" adds the layer's configuration to its measurement
  --mode MODE         normal (default) or development (an unsigned build: every
                      certificate carries the DICE debug flag, and every layer's
                      measurement and identity differ from normal mode's)
  --control PATH      serve requests on a Unix socket at PATH (or the listening
                      socket fd:N) until SIGTERM/SIGINT;
                      without it, print the description and exit
  --tpm-listen PATH   with --control: serve the instances' TPM cards on a second
                      socket at PATH (0600; or the listening socket fd:N, the
                      launcher's): a connection's first line binds it to an
                      instance ({"op": "bind", "instance": "i-..."}, the
                      launcher's), then it may only ask {"op": "attest-tpm",
                      "pcrs": {"I": HEX}, ["nonce"|"user_data"|"public_key": HEX]}
                      for a NitroTPM document of that instance (module_id
                      "<instance>-tpm", PCRs under "nitrotpm_pcrs"); a bind with
                      "enclave": "<instance>-enc<16 hex>" [, "debug": true] serves
                      that enclave's NSM card instead: only {"op": "attest-nsm",
                      ...} for a document with module_id the enclave's id, PCRs
                      under "pcrs", all zeros for a debug-mode enclave
  --log-level LEVEL   error, warn, info (default), debug
  --seccomp MODE      kill (default): after setup a system call outside its
                      allowlist (src/rot/seccomp.json) kills it; log: allowed and
                      logged by the kernel (debugging only)
  -h, --help          this help;  --version  the version

Exit status: 0 done or stopped by SIGTERM/SIGINT; 64 usage; 66 a layer's file cannot be
measured; 71 the state directory or the device secret is unusable.
)";
}

RotResult<dice::Secret> open_or_create_uds(const std::string& dir, bool* created) {
  *created = false;
  UniqueFd d;
  if (const auto given = parse_fd_ref(dir)) {
    // The launcher's descriptor of <state>/rot: this process has no path to it.
    d.reset(::fcntl(*given, F_DUPFD_CLOEXEC, 3));
    ::close(*given);
  } else {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return errno_error(RotErrc::kState, "--state-dir " + dir);
    d.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  }
  if (!d) return errno_error(RotErrc::kState, "--state-dir " + dir);
  struct stat ds{};
  if (::fstat(d.get(), &ds) != 0 || ds.st_uid != ::geteuid() || (ds.st_mode & 077) != 0)
    return make_error(RotErrc::kState, "--state-dir " + dir + " must be a directory of uid " +
                                           std::to_string(::geteuid()) + " with no access for group or others");
  const std::string path = dir + "/" + kUdsFile;
  std::array<uint8_t, dice::kDigestBytes> bytes{};
  UniqueFd f(::openat(d.get(), kUdsFile, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!f && errno == ENOENT) {
    if (::getrandom(bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size()))
      return errno_error(RotErrc::kState, "getrandom for the device secret");
    // Written whole under another name, then renamed into place without replacing
    // anything: a crash leaves no half-made secret, and two first starts cannot both win.
    static constexpr char kTmp[] = "uds.new";
    ::unlinkat(d.get(), kTmp, 0);  // a crash's leftover
    UniqueFd w(::openat(d.get(), kTmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400));
    if (!w) return errno_error(RotErrc::kState, "create " + dir + "/" + kTmp);
    if (::write(w.get(), bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()) || ::fsync(w.get()) != 0 ||
        ::renameat2(d.get(), kTmp, d.get(), kUdsFile, RENAME_NOREPLACE) != 0) {
      const int e = errno;
      ::unlinkat(d.get(), kTmp, 0);
      OPENSSL_cleanse(bytes.data(), bytes.size());
      return make_error(RotErrc::kState, "create " + path, e);
    }
    ::fsync(d.get());
    *created = true;
    dice::Secret s(bytes);
    OPENSSL_cleanse(bytes.data(), bytes.size());
    return s;
  }
  if (!f) return errno_error(RotErrc::kState, "open " + path);
  struct stat st{};
  if (::fstat(f.get(), &st) != 0) return errno_error(RotErrc::kState, "stat " + path);
  if (!S_ISREG(st.st_mode)) return make_error(RotErrc::kState, path + " is not a regular file");
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
    return make_error(RotErrc::kState, path + " must be owned by uid " + std::to_string(::geteuid()) +
                                          " with no access for group or others (it is the device secret)");
  if (st.st_size != static_cast<off_t>(bytes.size()))
    return make_error(RotErrc::kState, path + " holds " + std::to_string(st.st_size) + " bytes, not " +
                                           std::to_string(bytes.size()) + ": not a device secret azote-rot made");
  if (!read_all(f.get(), bytes.data(), bytes.size())) return errno_error(RotErrc::kState, "read " + path);
  dice::Secret s(bytes);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return s;
}

RotResult<dice::Digest> measure_file(const std::string& path) {
  UniqueFd f;
  if (const auto given = parse_fd_ref(path)) f.reset(*given);  // handed over by the launcher
  else f.reset(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!f) return errno_error(RotErrc::kLayer, "measure " + path);
  struct stat st{};
  if (::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return make_error(RotErrc::kLayer, "measure " + path + ": not a regular file");
  auto d = dice::sha384_fd(f.get());
  if (!d) return make_error(RotErrc::kLayer, "measure " + path + ": " + d.error().message());
  return *d;
}

RotResult<std::unique_ptr<Rot>> Rot::start(const Options& o) {
  bool created = false;
  AZOTE_TRY(uds, open_or_create_uds(o.state_dir, &created));
  std::vector<dice::LayerInput> inputs;
  for (const auto& l : o.layers) {
    AZOTE_TRY(code, measure_file(l.path));
    const dice::Digest config =
        dice::sha384(std::span(reinterpret_cast<const uint8_t*>(l.config.data()), l.config.size()));
    inputs.push_back({l.name, code, config, o.mode});
  }
  auto chain = dice::Chain::build(uds, inputs, static_cast<int64_t>(::time(nullptr)) - 60);
  if (!chain) {
    const auto code = chain.error().code == dice::DiceErrc::kInvalid ? RotErrc::kUsage : RotErrc::kCrypto;
    return make_error(code, chain.error().message());
  }
  LOG_INFO("azote-rot: device secret %s %s/%s; %zu layer(s), mode %s", created ? "created in" : "read from",
           o.state_dir.c_str(), kUdsFile, inputs.size(), mode_name(o.mode));
  std::unique_ptr<Rot> r(new Rot(std::move(chain).value(), o.mode));
  if (!o.control.empty()) {
    auto loop = runtime::Loop::create("azote-rot");
    if (!loop) return make_error(RotErrc::kState, loop.error().message());
    r->loop_ = std::move(loop).value();
    auto server = control::Server::listen(o.control);
    if (!server) return make_error(RotErrc::kState, "--control: " + server.error().message());
    r->control_ = std::move(server).value();
    Rot* self = r.get();
    if (auto w = r->loop_->watch(r->control_->poll_fd(), [self] {
          self->control_->serve_ready([self](const control::Json& req) { return self->handle(req); });
        });
        !w)
      return make_error(RotErrc::kState, w.error().message());
    if (!o.tpm_listen.empty()) {
      AZOTE_TRY(l, listen_tpm(o.tpm_listen));
      r->tpm_listen_ = std::move(l);
      if (auto t = r->loop_->watch(r->tpm_listen_.get(), [self] { self->accept_tpm_clients(); }); !t)
        return make_error(RotErrc::kState, t.error().message());
    }
  }
  return r;
}

void Rot::accept_tpm_clients() {
  for (;;) {
    UniqueFd c(::accept4(tpm_listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!c) return;  // EAGAIN: all taken
    if (tpm_clients_.size() >= kMaxTpmClients) {
      LOG_WARN("azote-rot: a TPM card connection refused: %zu already", tpm_clients_.size());
      continue;
    }
    const int fd = c.get();
    tpm_clients_[fd] = TpmClient{std::move(c), {}, {}, {}, false};
    if (auto w = loop_->watch(fd, [this, fd] { serve_tpm_client(fd); }); !w) tpm_clients_.erase(fd);
  }
}

void Rot::serve_tpm_client(int fd) {
  auto it = tpm_clients_.find(fd);
  if (it == tpm_clients_.end()) return;
  TpmClient& c = it->second;
  char buf[16384];
  bool gone = false;
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      if (c.in.size() > kMaxTpmLine) {
        LOG_WARN("azote-rot: a TPM card (%s) sent a line over %zu bytes; dropped", c.instance.c_str(), kMaxTpmLine);
        gone = true;
        break;
      }
      continue;
    }
    gone = n == 0 || (errno != EAGAIN && errno != EINTR);
    break;
  }
  for (size_t nl; !gone && (nl = c.in.find('\n')) != std::string::npos;) {
    const std::string line = c.in.substr(0, nl);
    c.in.erase(0, nl + 1);
    const auto req = control::Json::parse(line, nullptr, false);
    const std::string reply =
        (req.is_object() ? tpm_request(c, req) : control::refuse("a request is one JSON object per line")).dump() + "\n";
    // Small replies to a client waiting for them: sent whole, or the client is dropped.
    for (size_t sent = 0; sent < reply.size();) {
      pollfd p{fd, POLLOUT, 0};
      const ssize_t n = ::poll(&p, 1, 1000) == 1 ? ::send(fd, reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL) : -1;
      if (n <= 0) {
        gone = true;
        break;
      }
      sent += static_cast<size_t>(n);
    }
  }
  if (gone) {
    loop_->unwatch(fd);
    tpm_clients_.erase(it);
  }
}

control::Json Rot::tpm_request(TpmClient& c, const control::Json& req) const {
  const std::string op = req.value("op", "");
  if (c.instance.empty()) {
    // The launcher's line, before the connection is handed to the card: an instance's
    // TPM card, or (with "enclave") the NSM card of one of its enclaves.
    const std::string id = req.value("instance", "");
    const bool valid = id.size() == 19 && id.rfind("i-", 0) == 0 &&
                       id.find_first_not_of("0123456789abcdef", 2) == std::string::npos;
    const auto enclave = req.find("enclave");
    const bool enclave_valid =
        enclave == req.end() ||
        (enclave->is_string() && enclave->get<std::string>().size() == 19 + 4 + 16 &&
         enclave->get<std::string>().rfind(id + "-enc", 0) == 0 &&
         enclave->get<std::string>().find_first_not_of("0123456789abcdef", 23) == std::string::npos);
    const auto debug = req.find("debug");
    if (op != "bind" || !valid || !enclave_valid || (debug != req.end() && !debug->is_boolean()))
      return control::refuse("the first request binds the connection: {\"op\": \"bind\", \"instance\": \"i-<17 hex>\"[, "
                             "\"enclave\": \"<instance>-enc<16 hex>\", \"debug\": BOOL]}");
    c.instance = id;
    if (enclave != req.end()) {
      c.enclave = enclave->get<std::string>();
      c.debug = debug != req.end() && debug->get<bool>();
      LOG_INFO("azote-rot: an NSM card connection for %s%s", c.enclave.c_str(), c.debug ? " (debug mode)" : "");
    } else {
      LOG_INFO("azote-rot: a TPM card connection for %s", id.c_str());
    }
    return control::ok();
  }
  control::Json a = req;
  a.erase("op");
  if (!c.enclave.empty()) {
    if (op != "attest-nsm") return control::refuse("this connection serves only \"attest-nsm\" (the NSM of " + c.enclave + ")");
    a["module_id"] = c.enclave;
    return attest(a, "pcrs", c.debug);
  }
  if (op != "attest-tpm") return control::refuse("this connection serves only \"attest-tpm\" (the TPM of " + c.instance + ")");
  a["module_id"] = c.instance + "-tpm";
  return attest(a, "nitrotpm_pcrs");
}

control::Json Rot::describe() const {
  control::Json layers = control::Json::array();
  for (size_t i = 0; i < chain_.layers().size(); ++i) {
    const dice::Layer& l = chain_.layers()[i];
    layers.push_back({{"index", i},
                      {"name", l.name},
                      {"mode", i == 0 ? "device" : mode_name(l.mode)},
                      {"measurement", i == 0 ? "" : to_hex(l.measurement)},
                      {"public_key_sha256", sha256_hex(l.key.public_der())},
                      {"certificate", l.cert_pem}});
  }
  return {{"layers", layers}, {"chain", chain_.chain_pem()}};
}

control::Json Rot::handle(const control::Json& req) const {
  const auto op = req.find("op");
  if (op == req.end() || !op->is_string()) return control::refuse("request has no string \"op\" (describe, sign, attest)");
  if (*op == "describe") {
    control::Json r = control::ok();
    r.update(describe());
    return r;
  }
  if (*op == "sign") {
    const auto p = req.find("payload");
    if (p == req.end() || !p->is_string()) return control::refuse("sign needs \"payload\" as a hex string");
    const auto bytes = from_hex(p->get<std::string>());
    if (!bytes) return control::refuse("sign: \"payload\" is not hex");
    if (bytes->size() > (1u << 20)) return control::refuse("sign: \"payload\" is over 1 MiB");
    // Domain separation: what this signs can never be mistaken for another format's
    // bytes (a certificate, a future attestation document or quote).
    std::vector<uint8_t> msg(kSignContext, kSignContext + sizeof kSignContext);
    msg.insert(msg.end(), bytes->begin(), bytes->end());
    auto sig = chain_.attestation_key().sign(msg);
    if (!sig) return control::refuse("sign: " + sig.error().message());
    control::Json r = control::ok();
    r["signature"] = to_hex(*sig);
    r["algorithm"] = "ECDSA-SHA384";
    return r;
  }
  if (*op == "attest") return attest(req);
  return control::refuse("unknown op \"" + op->get<std::string>() + "\" (describe, sign, attest)");
}

control::Json Rot::attest(const control::Json& req, const char* pcrs_key, bool zero_pcrs) const {
  const auto& layers = chain_.layers();
  if (layers.size() < 2)
    return control::refuse("attest: no measured layer: the device key certifies layers, it does not attest");
  attest::Document d;
  d.pcrs_key = pcrs_key;
  const auto module = req.find("module_id");
  if (module == req.end() || !module->is_string()) return control::refuse("attest needs \"module_id\" as a string");
  d.module_id = module->get<std::string>();
  const auto pcrs = req.find("pcrs");
  if (pcrs == req.end() || !pcrs->is_object()) return control::refuse("attest needs \"pcrs\": {\"INDEX\": HEX48, ...}");
  for (const auto& [key, value] : pcrs->items()) {
    uint32_t index = 0;
    const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), index);
    if (ec != std::errc() || end != key.data() + key.size() || key.empty() || index >= attest::kPcrCount)
      return control::refuse("attest: PCR index \"" + key + "\" is not 0..31");
    const auto bytes = value.is_string() ? from_hex(value.get<std::string>()) : std::nullopt;
    if (!bytes || bytes->size() != attest::kPcrBytes) return control::refuse("attest: PCR " + key + " is not 48 bytes of hex");
    attest::Pcr pcr{};
    // Development mode: every register reads zero, as a debug enclave's do, so that
    // no document from an unsigned build can satisfy a policy on measurements.
    // A debug-mode enclave's documents likewise carry zeros (ENCLAVES.md §2), whatever
    // its NSM card reports.
    if (mode_ != dice::Mode::kDebug && !zero_pcrs) std::copy(bytes->begin(), bytes->end(), pcr.begin());
    d.pcrs[index] = pcr;
  }
  for (const char* field : {"user_data", "nonce", "public_key"}) {
    const auto f = req.find(field);
    if (f == req.end() || f->is_null()) continue;
    const auto bytes = f->is_string() ? from_hex(f->get<std::string>()) : std::nullopt;
    if (!bytes) return control::refuse(std::string("attest: \"") + field + "\" is not hex");
    (std::string_view(field) == "user_data" ? d.user_data : std::string_view(field) == "nonce" ? d.nonce : d.public_key) =
        *bytes;
  }
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  d.timestamp_ms = static_cast<uint64_t>(now.tv_sec) * 1000 + static_cast<uint64_t>(now.tv_nsec) / 1000000;
  d.certificate = layers.back().cert_der;
  for (size_t i = 0; i + 1 < layers.size(); ++i) d.cabundle.push_back(layers[i].cert_der);
  auto payload = attest::encode_payload(d);
  if (!payload) return control::refuse("attest: " + payload.error().message());
  auto tbs = attest::to_be_signed(*payload);
  if (!tbs) return control::refuse("attest: " + tbs.error().message());
  // The COSE Sig_structure starts with the text "Signature1": it cannot be mistaken for
  // what "sign" signs (always "azote-rot sign v1" first).
  auto der = chain_.attestation_key().sign(*tbs);
  if (!der) return control::refuse("attest: " + der.error().message());
  auto raw = attest::der_to_raw_p384(*der);
  if (!raw) return control::refuse("attest: " + raw.error().message());
  auto doc = attest::sign1(*payload, *raw);
  if (!doc) return control::refuse("attest: " + doc.error().message());
  control::Json r = control::ok();
  r["document"] = to_hex(*doc);
  r["timestamp"] = d.timestamp_ms;
  r["mode"] = mode_name(mode_);
  return r;
}

int Rot::run() {
  if (!loop_) return runtime::kExitOk;
  return loop_->run();
}

}  // namespace azote::rot
