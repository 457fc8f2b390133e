#include "cli/cli.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/client.hpp"
#include "audit/verify.hpp"
#include "cli/render.hpp"
#include "pki/files.hpp"
#include "pki/pki.hpp"
#include "release/release.hpp"

#ifndef AZOTE_VERSION
#define AZOTE_VERSION "dev"
#endif

namespace azote::cli {
namespace {

using Clock = std::chrono::steady_clock;
using Message = google::protobuf::Message;
using Stub = v1::Ec2::StubInterface;

int fail(Io& io, const std::string& message, int status) {
  io.err << "azote: " << message << "\n" << std::flush;
  return status;
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(seconds * 1000)));
}

// One unary call with the --timeout deadline; the API error on failure.
template <class Req, class Resp>
Result<std::unique_ptr<Message>, api::ApiError> invoke(
    Stub& stub, grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
    const Message& request, const GlobalOptions& g) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + to_ms(g.timeout_s));
  auto response = std::make_unique<Resp>();
  const grpc::Status status = (stub.*method)(&ctx, static_cast<const Req&>(request), response.get());
  if (!status.ok()) return Unexpected{api::describe_status(status, g.endpoint, &ctx)};
  return std::unique_ptr<Message>(std::move(response));
}

Result<std::unique_ptr<Message>, api::ApiError> call(Stub& s, Rpc rpc, const Message& req,
                                                     const GlobalOptions& g) {
  switch (rpc) {
    case Rpc::kRunInstances: return invoke(s, &Stub::RunInstances, req, g);
    case Rpc::kDescribeInstances: return invoke(s, &Stub::DescribeInstances, req, g);
    case Rpc::kStopInstances: return invoke(s, &Stub::StopInstances, req, g);
    case Rpc::kStartInstances: return invoke(s, &Stub::StartInstances, req, g);
    case Rpc::kRebootInstances: return invoke(s, &Stub::RebootInstances, req, g);
    case Rpc::kTerminateInstances: return invoke(s, &Stub::TerminateInstances, req, g);
    case Rpc::kGetConsoleOutput: return invoke(s, &Stub::GetConsoleOutput, req, g);
    case Rpc::kDescribeInstanceTypes: return invoke(s, &Stub::DescribeInstanceTypes, req, g);
    case Rpc::kRegisterImage: return invoke(s, &Stub::RegisterImage, req, g);
    case Rpc::kDescribeImages: return invoke(s, &Stub::DescribeImages, req, g);
    case Rpc::kCreateVolume: return invoke(s, &Stub::CreateVolume, req, g);
    case Rpc::kAttachVolume: return invoke(s, &Stub::AttachVolume, req, g);
    case Rpc::kDetachVolume: return invoke(s, &Stub::DetachVolume, req, g);
    case Rpc::kDeleteVolume: return invoke(s, &Stub::DeleteVolume, req, g);
    case Rpc::kDescribeVolumes: return invoke(s, &Stub::DescribeVolumes, req, g);
    case Rpc::kGetMetrics: return invoke(s, &Stub::GetMetrics, req, g);
    case Rpc::kDescribeHostAttestation: return invoke(s, &Stub::DescribeHostAttestation, req, g);
    case Rpc::kGetInstanceAttestation: return invoke(s, &Stub::GetInstanceAttestation, req, g);
    case Rpc::kDescribeVpcs: return invoke(s, &Stub::DescribeVpcs, req, g);
    case Rpc::kDescribeSubnets: return invoke(s, &Stub::DescribeSubnets, req, g);
    case Rpc::kCreateSecurityGroup: return invoke(s, &Stub::CreateSecurityGroup, req, g);
    case Rpc::kDeleteSecurityGroup: return invoke(s, &Stub::DeleteSecurityGroup, req, g);
    case Rpc::kAuthorizeSecurityGroupIngress: return invoke(s, &Stub::AuthorizeSecurityGroupIngress, req, g);
    case Rpc::kAuthorizeSecurityGroupEgress: return invoke(s, &Stub::AuthorizeSecurityGroupEgress, req, g);
    case Rpc::kRevokeSecurityGroupIngress: return invoke(s, &Stub::RevokeSecurityGroupIngress, req, g);
    case Rpc::kRevokeSecurityGroupEgress: return invoke(s, &Stub::RevokeSecurityGroupEgress, req, g);
    case Rpc::kDescribeSecurityGroups: return invoke(s, &Stub::DescribeSecurityGroups, req, g);
    case Rpc::kRunEnclave: return invoke(s, &Stub::RunEnclave, req, g);
    case Rpc::kDescribeEnclaves: return invoke(s, &Stub::DescribeEnclaves, req, g);
    case Rpc::kTerminateEnclave: return invoke(s, &Stub::TerminateEnclave, req, g);
    case Rpc::kGetEnclaveConsole: return invoke(s, &Stub::GetEnclaveConsole, req, g);
    case Rpc::kNone: break;
  }
  return Unexpected{api::ApiError{api::ApiError::Category::kApi, "Unsupported", "not an API command"}};
}

int api_failure(Io& io, const api::ApiError& e) {
  return fail(io, e.message,
              e.category == api::ApiError::Category::kApi ? kExitApi : kExitConnection);
}

// ----- --wait ---------------------------------------------------------------------

bool is_final(const std::string& state) {
  return state == "running" || state == "stopped" || state == "terminated";
}

struct Tracked {
  std::string id;
  std::string state;  // "" until known
  bool changed = false;
  bool gone = false;  // no longer listed by DescribeInstances
  v1::StateReason reason;
};

class Waiter {
 public:
  Waiter(const Invocation& inv, Stub& stub, Io& io, std::string target, Clock::time_point t0)
      : inv_(inv), stub_(stub), io_(io), target_(std::move(target)), t0_(t0) {}

  void track(const std::string& id, const std::string& state) {
    for (auto& t : tracked_) {
      if (t.id == id) return;
    }
    tracked_.push_back(Tracked{id, state, false, false, {}});
    if (!state.empty()) progress(tracked_.back(), "");
  }

  int run();

 private:
  double elapsed() const {
    return std::chrono::duration<double>(Clock::now() - t0_).count();
  }
  void progress(const Tracked& t, const std::string& from) {
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.1f", elapsed());
    std::string line = t.id + ": " + (from.empty() ? "" : from + " \u2192 ") + t.state + " (" + secs + " s)";
    if (io_.err_is_tty) {
      if (tracked_.size() > 1) {
        size_t done = 0;
        for (const auto& x : tracked_) done += x.state == target_ ? 1 : 0;
        line += " [" + std::to_string(done) + "/" + std::to_string(tracked_.size()) + " " + target_ + "]";
      }
      io_.err << "\r\x1b[K" << line << std::flush;
      open_line_ = true;
    } else {
      io_.err << line << "\n" << std::flush;
    }
  }
  void end_line() {
    if (open_line_) io_.err << "\n" << std::flush;
    open_line_ = false;
  }
  std::string prefix() const { return inv_.command + ": "; }

  // 0 when all reached the target, an exit status on failure, -1 to keep waiting.
  int check() const;
  int poll();

  const Invocation& inv_;
  Stub& stub_;
  Io& io_;
  const std::string target_;
  const Clock::time_point t0_;
  std::vector<Tracked> tracked_;
  bool open_line_ = false;
  mutable std::string failure_;
};

int Waiter::check() const {
  bool all = true;
  for (const auto& t : tracked_) {
    if (t.state == target_) continue;
    all = false;
    if (t.gone) {
      failure_ = prefix() + t.id + " no longer exists (waited for " + target_ + ")";
      return kExitApi;
    }
    // A final state other than the target, reached after the call (or terminated, which
    // nothing leaves): the instance will not get there.
    if (is_final(t.state) && (t.changed || t.state == "terminated")) {
      failure_ = prefix() + t.id + " is " + t.state + ", not " + target_;
      if (!t.reason.code().empty()) failure_ += ": " + t.reason.code();
      if (!t.reason.message().empty()) failure_ += ": " + t.reason.message();
      return kExitApi;
    }
  }
  return all ? kExitOk : -1;
}

int Waiter::poll() {
  v1::DescribeInstancesRequest req;
  for (const auto& t : tracked_) req.add_instance_ids(t.id);
  auto resp = call(stub_, Rpc::kDescribeInstances, req, inv_.globals);
  if (!resp.ok()) {
    end_line();
    return api_failure(io_, resp.error());
  }
  const auto& d = static_cast<const v1::DescribeInstancesResponse&>(**resp);
  for (auto& t : tracked_) {
    const v1::Instance* found = nullptr;
    for (const auto& i : d.instances()) {
      if (i.instance_id() == t.id) found = &i;
    }
    std::string state;
    if (found != nullptr) {
      state = found->state().name();
      t.reason = found->state_reason();
    } else if (target_ == "terminated") {
      state = "terminated";  // terminated and already forgotten
    } else {
      t.gone = true;
      continue;
    }
    if (state != t.state) {
      const std::string from = t.state;
      t.state = state;
      t.changed = true;
      progress(t, from);
    }
  }
  return -1;
}

int Waiter::run() {
  const auto deadline = t0_ + to_ms(inv_.globals.timeout_s);
  for (;;) {
    const int status = check();
    if (status >= 0) {
      end_line();
      return status == kExitOk ? kExitOk : fail(io_, failure_, status);
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      end_line();
      std::string late;
      for (const auto& t : tracked_) {
        if (t.state == target_) continue;
        late += (late.empty() ? "" : ", ") + t.id + " is " + (t.state.empty() ? "unknown" : t.state);
      }
      char secs[32];
      std::snprintf(secs, sizeof secs, "%g", inv_.globals.timeout_s);
      return fail(io_, prefix() + "gave up after " + secs + " s waiting for " + target_ + ": " + late +
                           " (raise --timeout to wait longer)",
                  kExitConnection);
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(std::chrono::milliseconds(100), deadline - now));
    if (const int s = poll(); s >= 0) return s;
  }
}

std::string wait_target(Rpc rpc) {
  switch (rpc) {
    case Rpc::kStopInstances: return "stopped";
    case Rpc::kTerminateInstances: return "terminated";
    default: return "running";
  }
}

// ----- local commands -------------------------------------------------------------

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

int pki_failure(Io& io, const std::string& what, const pki::PkiError& e) {
  return fail(io, what + e.message(), e.code == pki::PkiErrc::kInvalid ? kExitUsage : kExitConnection);
}

}  // namespace

int issue_cert(const std::string& command, const IssueCert& ic, OutputFormat format, Io& io) {
  const std::string p = command + ": ";
  if (!is_dir(ic.state_dir)) return fail(io, p + "--state-dir " + ic.state_dir + " is not a directory", kExitUsage);
  const std::string pki_dir = ic.state_dir + "/pki";
  const bool existed = is_dir(pki_dir);
  auto host = pki::HostPki::open_or_create(pki_dir);
  if (!host.ok()) return pki_failure(io, p + "host PKI in " + pki_dir + ": ", host.error());
  if (!existed) io.err << "azote: " << p << "created a new host CA in " << pki_dir << "\n";
  auto cert = host->issue_client(ic.role, ic.name, std::chrono::hours(24) * ic.days);
  if (!cert.ok()) return pki_failure(io, p, cert.error());

  if (::mkdir(ic.out_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(io, p + "cannot create --out " + ic.out_dir + ": " + std::strerror(errno), kExitUsage);
  }
  if (!is_dir(ic.out_dir)) return fail(io, p + "--out " + ic.out_dir + " is not a directory", kExitUsage);
  struct File {
    const char* name;
    const std::string& data;
    mode_t mode;
  };
  for (const File& f : {File{"ca.pem", host->ca_pem(), 0644}, File{"cert.pem", cert->cert_pem, 0644},
                        File{"key.pem", cert->key_pem, 0600}}) {
    auto w = pki::write_file_atomic(ic.out_dir + "/" + f.name, f.data, f.mode);
    if (!w.ok()) return fail(io, p + w.error().message(), kExitConnection);
  }
  if (format == OutputFormat::kJson) {
    nlohmann::json j = {{"serial", cert->serial_hex}, {"role", ic.role}, {"name", ic.name},
                        {"out", ic.out_dir}, {"days", ic.days}};
    io.out << j.dump(2) << "\n";
  } else {
    io.out << cert->serial_hex << "\n";
  }
  return kExitOk;
}

int revoke_cert(const std::string& command, const RevokeCert& rc, OutputFormat format, Io& io) {
  const std::string p = command + ": ";
  const std::string pki_dir = rc.state_dir + "/pki";
  if (!is_dir(pki_dir)) return fail(io, p + "no host PKI in " + pki_dir, kExitUsage);
  auto host = pki::HostPki::open_or_create(pki_dir);
  if (!host.ok()) return pki_failure(io, p + "host PKI in " + pki_dir + ": ", host.error());
  auto r = host->revoke(rc.serial, rc.unlisted ? pki::UnlistedSerial::kRevoke : pki::UnlistedSerial::kRefuse);
  if (!r.ok() && r.error().code == pki::PkiErrc::kNotIssued) {
    // A mistyped serial, or another host's: nothing to revoke. Said, never "revoked".
    return fail(io,
                p + r.error().message() +
                    "; a certificate issued before the CA kept that list can be revoked with --unlisted",
                kExitUsage);
  }
  if (!r.ok()) return pki_failure(io, p, r.error());
  if (format == OutputFormat::kJson) {
    io.out << nlohmann::json{{"revoked", r->serial_hex}, {"already_revoked", r->already}, {"listed", r->listed}}.dump(2)
           << "\n";
  } else if (r->already) {
    io.out << "already revoked " << r->serial_hex << "\n";
  } else {
    io.out << "revoked " << r->serial_hex << (r->listed ? "" : " (not in the CA's issued list)") << "\n";
  }
  return kExitOk;
}

int sign_release(const std::string& command, const SignRelease& sr, OutputFormat format, Io& io) {
  const std::string p = command + ": ";
  auto key = read_whole_file(sr.key, 64 * 1024);
  if (!key.ok()) return fail(io, p + "--key: " + key.error(), kExitUsage);
  release::Manifest m;
  m.release = sr.release;
  for (const auto& name : release::release_binaries()) {
    auto d = release::sha384_file(sr.bin_dir + "/" + name);
    if (!d.ok()) return fail(io, p + "--bin-dir: " + d.error().message(), kExitUsage);
    m.files[name] = *d;
  }
  auto text = release::sign(m, *key);
  if (!text.ok()) return fail(io, p + text.error().message(), kExitUsage);
  if (auto w = pki::write_file_atomic(sr.out, *text, 0644); !w.ok())
    return fail(io, p + "--out: " + w.error().message(), kExitUsage);
  if (format == OutputFormat::kJson) {
    io.out << nlohmann::json{{"release", m.release}, {"manifest", sr.out}, {"files", m.files}}.dump(2) << "\n";
  } else {
    io.out << "release " << m.release << ": " << m.files.size() << " binaries signed into " << sr.out << "\n";
  }
  return kExitOk;
}

int verify_release(const std::string& command, const VerifyRelease& vr, OutputFormat format, Io& io) {
  const std::string p = command + ": ";
  auto text = read_whole_file(vr.manifest, 1 << 20);
  if (!text.ok()) return fail(io, p + "--manifest: " + text.error(), kExitUsage);
  auto key = read_whole_file(vr.public_key, 64 * 1024);
  if (!key.ok()) return fail(io, p + "--public-key: " + key.error(), kExitUsage);
  auto m = release::verify(*text, *key);
  if (!m.ok()) return fail(io, p + vr.manifest + ": " + m.error().message(), 1);
  std::vector<std::string> bad;
  if (!vr.bin_dir.empty()) {
    for (const auto& [name, digest] : m->files) {
      auto d = release::sha384_file(vr.bin_dir + "/" + name);
      if (!d.ok()) bad.push_back(d.error().message());
      else if (*d != digest) bad.push_back(name + ": SHA-384 " + d->substr(0, 16) + "... is not the release's " + digest.substr(0, 16) + "...");
    }
  }
  if (format == OutputFormat::kJson) {
    io.out << nlohmann::json{{"release", m->release}, {"signature", "ok"}, {"files", m->files}, {"mismatches", bad}}.dump(2)
           << "\n";
  } else {
    io.out << "release " << m->release << ": signature ok, " << m->files.size() << " binaries";
    if (!vr.bin_dir.empty()) io.out << (bad.empty() ? ", all match " + vr.bin_dir : "");
    io.out << "\n";
    for (const auto& b : bad) io.out << "mismatch: " << b << "\n";
  }
  return bad.empty() ? kExitOk : 1;
}

int audit_verify(const std::string& command, const AuditVerify& av, OutputFormat format, Io& io) {
  const std::string p = command + ": ";
  auto pem = read_whole_file(av.public_key, 64 * 1024);
  if (!pem.ok()) return fail(io, p + "public key: " + pem.error() + " (see --public-key)", kExitUsage);
  auto key = audit::VerifyKey::from_pem(*pem);
  if (!key.ok()) return fail(io, p + "public key " + av.public_key + ": " + key.error().message(), kExitUsage);
  const audit::VerifyReport rep = audit::verify_file(av.file, *key, av.head);
  if (format == OutputFormat::kJson) {
    nlohmann::json j = {{"ok", rep.ok},         {"chain_ok", rep.chain_ok}, {"records", rep.records},
                        {"last_seq", rep.last_seq}, {"bad_line", rep.bad_line}, {"reason", rep.reason}};
    io.out << j.dump(2) << "\n";
  } else if (rep.ok) {
    io.out << "ok: " << rep.records << " records, last seq " << rep.last_seq << "\n";
  } else {
    io.out << "failed: " << rep.reason << "\n";
  }
  return rep.ok ? kExitOk : kExitVerifyFailed;
}

int run_remote(const Invocation& inv, const RemoteCall& rc, Stub& stub, Io& io) {
  const auto t0 = Clock::now();
  auto resp = call(stub, rc.rpc, *rc.request, inv.globals);
  if (!resp.ok()) return api_failure(io, resp.error());
  io.out << render_response(rc.rpc, **resp, inv.globals.output) << std::flush;
  if (!rc.wait) return kExitOk;

  Waiter waiter(inv, stub, io, wait_target(rc.rpc), t0);
  if (rc.rpc == Rpc::kRunInstances) {
    for (const auto& i : static_cast<const v1::RunInstancesResponse&>(**resp).instances()) {
      waiter.track(i.instance_id(), i.state().name());
    }
  } else {
    for (const auto& c : static_cast<const v1::InstanceStateChangesResponse&>(**resp).instances()) {
      waiter.track(c.instance_id(), c.current_state().name());
    }
    for (const auto& id : static_cast<const v1::InstanceIdsRequest&>(*rc.request).instance_ids()) {
      waiter.track(id, "");
    }
  }
  return waiter.run();
}

int execute(const Invocation& inv, Io& io) {
  if (const auto* h = std::get_if<ShowHelp>(&inv.action)) {
    io.out << h->text;
    return kExitOk;
  }
  if (std::holds_alternative<ShowVersion>(inv.action)) {
    io.out << "azote " << AZOTE_VERSION << "\n";
    return kExitOk;
  }
  if (const auto* ic = std::get_if<IssueCert>(&inv.action)) return issue_cert(inv.command, *ic, inv.globals.output, io);
  if (const auto* rc = std::get_if<RevokeCert>(&inv.action)) return revoke_cert(inv.command, *rc, inv.globals.output, io);
  if (const auto* sr = std::get_if<SignRelease>(&inv.action)) return sign_release(inv.command, *sr, inv.globals.output, io);
  if (const auto* vr = std::get_if<VerifyRelease>(&inv.action))
    return verify_release(inv.command, *vr, inv.globals.output, io);
  if (const auto* av = std::get_if<AuditVerify>(&inv.action)) return audit_verify(inv.command, *av, inv.globals.output, io);
  if (const auto* be = std::get_if<BuildEnclave>(&inv.action)) return build_enclave(inv.command, *be, io);
  if (const auto* de = std::get_if<DescribeEif>(&inv.action)) return describe_eif(inv.command, *de, io);
  if (const auto* ep = std::get_if<EnclavePcr>(&inv.action)) return enclave_pcr(inv.command, *ep, io);

  const auto& rc = std::get<RemoteCall>(inv.action);
  if (const std::string why = api::check_endpoint(inv.globals.endpoint); !why.empty()) {
    return fail(io, "--endpoint: " + why, kExitUsage);
  }
  auto creds = api::load_credentials(inv.globals.credentials_dir);
  if (!creds.ok()) {
    return fail(io, "credentials: " + creds.error().message() +
                        " (see --credentials; `azote admin issue-cert` writes them)",
                kExitConnection);
  }
  auto stub = v1::Ec2::NewStub(api::make_channel(inv.globals.endpoint, *creds));
  return run_remote(inv, rc, *stub, io);
}

int run_cli(const std::vector<std::string>& args, const Env& env, Io& io) {
  auto inv = parse_command_line(args, env);
  if (!inv.ok()) return fail(io, inv.error().message(), kExitUsage);
  return execute(*inv, io);
}

}  // namespace azote::cli
