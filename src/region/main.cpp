// azote-region: the EC2 Query API of many azote hosts, its state in etcd.
//
//   azote-region serve --state-dir DIR --etcd HOST:PORT[,...] [--listen ADDR:PORT] [--name REGION]
//   azote-region add-principal --state-dir DIR --name NAME [--policy FILE.json | --read-only]
//   azote-region register-host --state-dir DIR --etcd ... --host-id ID --endpoint EP
//                              --credentials DIR --zone ZONE --vcpus N --memory-mib M
#include <arpa/inet.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "audit/log.hpp"
#include "audit/signing.hpp"
#include "base/log.hpp"
#include "base/parse.hpp"
#include "etcd/client.hpp"
#include "pki/files.hpp"
#include "pki/pki.hpp"
#include "region/enrol.hpp"
#include "region/https.hpp"
#include "region/iam.hpp"
#include "region/region.hpp"

namespace {

using namespace azote;
using Json = nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kUsage = R"(Usage:
  azote-region serve --state-dir DIR --etcd HOST:PORT[,HOST:PORT...] [--listen ADDR:PORT]
                     [--name REGION] [--account ID] [--host-lease-seconds N]
                     [--etcd-retain-revisions N] [--compact-interval-seconds S]
                     [--terminated-retention-seconds S]
      Serves the EC2 Query API (HTTPS, SigV4) on ADDR:PORT (default 127.0.0.1:8443; port 0:
      any free one). DIR holds the TLS certificate (pki/ca.crt is what clients trust: aws
      --ca-bundle), principals.json, the hosts' credentials and the signed audit log. Prints
      "azote-region: ready https://ADDR:PORT" once serving. Each host is probed every third
      of its lease (default 30 s) and holds an etcd lease while it answers; a host silent
      for a whole lease is lost (describe-hosts: under-assessment) and fences itself.
      etcd's history is compacted to the last N revisions (default 10000) every S seconds
      (default 300; 0: never). A terminated instance stays visible S seconds (default
      3600, as EC2's hour), then its record goes.
  azote-region add-principal --state-dir DIR --name NAME [--policy FILE.json | --read-only]
      Adds a principal with fresh access keys (default policy: ec2:* on *; --read-only:
      ec2:Describe* and ec2:GetConsoleOutput) and prints {"AccessKeyId", "SecretAccessKey"}.
      A running region reads principals.json when it starts.
  azote-region create-enrolment-token --etcd HOST:PORT[,...] [--ttl-seconds S]
      Prints {"Token", "ExpiresInSeconds"}: a one-time token (default 3600 s) with which a
      host joins by itself: azote-controller --join https://REGION --enrolment-token TOKEN
      --region-ca DIR/pki/ca.crt --zone ZONE [--host-id ID] [--underlay IPV4:PORT].
      etcd keeps only the token's SHA-256, under a lease that ends it.
  azote-region register-host --state-dir DIR --etcd HOST:PORT[,...] --host-id ID
                             --endpoint EP --credentials CREDS --zone ZONE --vcpus N --memory-mib M
                             [--underlay IPV4:PORT]
      Registers a host's azote-controller (EP: host:port or unix:PATH) with credentials
      CREDS (ca.pem, cert.pem, key.pem: `azote admin issue-cert --role control-plane
      --name region` on the host: the host lets only that name present the region's lease
      epochs and push its network), copied into DIR/hosts/ID; its capacity for placement.
      --underlay: the address its controller's --underlay names; the host then gets a
      fabric id, its peers' keys (derived from DIR/fabric.key) and where every VPC address
      lives.
)";

int usage(const std::string& why) {
  std::fprintf(stderr, "azote-region: %s\n%s", why.c_str(), kUsage);
  return 2;
}

struct Args {
  std::map<std::string, std::string> kv;
  std::set<std::string> flags;
  std::string get(const std::string& k, const std::string& d = "") const {
    auto it = kv.find(k);
    return it == kv.end() ? d : it->second;
  }
};

std::optional<Args> parse(int argc, char** argv, const std::set<std::string>& values, const std::set<std::string>& switches,
                          std::string* why) {
  Args a;
  for (int i = 2; i < argc; ++i) {
    const std::string f = argv[i];
    if (switches.count(f) != 0) {
      a.flags.insert(f);
    } else if (values.count(f) != 0) {
      if (i + 1 >= argc) {
        *why = f + " needs a value";
        return std::nullopt;
      }
      a.kv[f] = argv[++i];
    } else {
      *why = "unknown option " + f;
      return std::nullopt;
    }
  }
  return a;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, sep);)
    if (!part.empty()) out.push_back(part);
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Json default_policy(bool read_only) {
  if (read_only)
    return {{"Version", "2012-10-17"},
            {"Statement", {{{"Effect", "Allow"}, {"Action", {"ec2:Describe*", "ec2:GetConsoleOutput"}}, {"Resource", "*"}}}}};
  return {{"Version", "2012-10-17"}, {"Statement", {{{"Effect", "Allow"}, {"Action", "ec2:*"}, {"Resource", "*"}}}}};
}

int add_principal(int argc, char** argv) {
  std::string why;
  auto a = parse(argc, argv, {"--state-dir", "--name", "--policy"}, {"--read-only"}, &why);
  if (!a) return usage(why);
  const std::string dir = a->get("--state-dir"), name = a->get("--name");
  if (dir.empty() || name.empty()) return usage("add-principal needs --state-dir and --name");
  Json pol = default_policy(a->flags.count("--read-only") != 0);
  if (!a->get("--policy").empty()) {
    pol = Json::parse(slurp(a->get("--policy")), nullptr, false);
    if (pol.is_discarded()) return usage("--policy " + a->get("--policy") + " is not JSON");
  }
  auto parsed = region::parse_policy(pol);
  if (!parsed) return usage("the policy: " + parsed.error());
  std::error_code ec;
  fs::create_directories(dir, ec);
  ::chmod(dir.c_str(), 0700);
  const std::string path = dir + "/principals.json";
  Json doc = {{"principals", Json::array()}};
  if (fs::exists(path, ec)) {
    auto existing = region::load_principals(path);
    if (!existing) {
      std::fprintf(stderr, "azote-region: %s\n", existing.error().c_str());
      return 1;
    }
    for (const auto& p : *existing) {
      if (p.name == name) {
        std::fprintf(stderr, "azote-region: principal %s exists already\n", name.c_str());
        return 1;
      }
      doc["principals"].push_back(region::principal_json(p));
    }
  }
  const region::Principal p = region::new_principal(name, std::move(*parsed));
  doc["principals"].push_back(region::principal_json(p));
  if (auto w = pki::write_file_atomic(path, doc.dump(2) + "\n", 0600); !w) {
    std::fprintf(stderr, "azote-region: %s: %s\n", path.c_str(), w.error().message().c_str());
    return 1;
  }
  std::printf("%s\n", Json{{"Name", name}, {"AccessKeyId", p.access_key_id}, {"SecretAccessKey", p.secret_access_key}}
                          .dump(2)
                          .c_str());
  return 0;
}

int create_enrolment_token(int argc, char** argv) {
  std::string why;
  auto a = parse(argc, argv, {"--etcd", "--ttl-seconds"}, {}, &why);
  if (!a) return usage(why);
  if (a->get("--etcd").empty()) return usage("create-enrolment-token needs --etcd");
  const auto ttl = parse_uint(a->get("--ttl-seconds", "3600"), 10, 7 * 86400);
  if (!ttl) return usage("--ttl-seconds takes 10 to 604800");
  auto client = etcd::Client::connect(split(a->get("--etcd"), ','));
  if (!client) {
    std::fprintf(stderr, "azote-region: etcd %s: %s\n", a->get("--etcd").c_str(), client.error().describe().c_str());
    return 1;
  }
  const std::string token = region::new_enrolment_token();
  if (token.empty()) {
    std::fprintf(stderr, "azote-region: no randomness for a token\n");
    return 1;
  }
  // Kept under an etcd lease: gone when it expires, whether used or not; only its digest.
  auto lease = client->grant(static_cast<int64_t>(*ttl));
  if (!lease) {
    std::fprintf(stderr, "azote-region: a lease for the token: %s\n", lease.error().describe().c_str());
    return 1;
  }
  if (auto w = client->put("/azote/region/enrolment/" + region::enrolment_digest(token), "unused", lease->id); !w) {
    std::fprintf(stderr, "azote-region: storing the token: %s\n", w.error().describe().c_str());
    return 1;
  }
  std::printf("%s\n", Json{{"Token", token}, {"ExpiresInSeconds", *ttl}}.dump(2).c_str());
  return 0;
}

int register_host(int argc, char** argv) {
  std::string why;
  auto a = parse(argc, argv,
                 {"--state-dir", "--etcd", "--host-id", "--endpoint", "--credentials", "--zone", "--vcpus", "--memory-mib",
                  "--underlay"},
                 {}, &why);
  if (!a) return usage(why);
  for (const char* k : {"--state-dir", "--etcd", "--host-id", "--endpoint", "--credentials", "--zone", "--vcpus", "--memory-mib"})
    if (a->get(k).empty()) return usage(std::string("register-host needs ") + k);
  region::HostRec h;
  h.id = a->get("--host-id");
  for (char c : h.id)
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '-' && c != '_') return usage("--host-id: letters, digits, - and _");
  h.endpoint = a->get("--endpoint");
  h.zone = a->get("--zone");
  auto vcpus = parse_uint(a->get("--vcpus"), 1, 100000);
  auto mib = parse_uint(a->get("--memory-mib"), 1, uint64_t{1} << 40);
  if (!vcpus || !mib) return usage("--vcpus and --memory-mib are numbers");
  h.vcpus = static_cast<uint32_t>(*vcpus);
  h.memory_mib = *mib;
  h.underlay = a->get("--underlay");
  if (!h.underlay.empty()) {
    const size_t colon = h.underlay.rfind(':');
    in_addr ia{};
    if (colon == std::string::npos || !parse_uint(h.underlay.substr(colon + 1), 1, 65535) ||
        ::inet_pton(AF_INET, h.underlay.substr(0, colon).c_str(), &ia) != 1)
      return usage("--underlay " + h.underlay + " is not IPV4:PORT (the host's azote-controller --underlay)");
  }
  const std::string dest = a->get("--state-dir") + "/hosts/" + h.id;
  std::error_code ec;
  fs::create_directories(dest, ec);
  ::chmod(dest.c_str(), 0700);
  for (const char* f : {"ca.pem", "cert.pem", "key.pem"}) {
    const std::string src = a->get("--credentials") + "/" + f;
    if (!fs::exists(src, ec)) return usage("--credentials " + a->get("--credentials") + " has no " + f);
    if (auto w = pki::write_file_atomic(dest + "/" + f, slurp(src), 0600); !w) {
      std::fprintf(stderr, "azote-region: %s/%s: %s\n", dest.c_str(), f, w.error().message().c_str());
      return 1;
    }
  }
  auto client = etcd::Client::connect(split(a->get("--etcd"), ','));
  if (!client) {
    std::fprintf(stderr, "azote-region: etcd %s: %s\n", a->get("--etcd").c_str(), client.error().describe().c_str());
    return 1;
  }
  // A host on the fabric keeps its id when registered again; a new one takes the lowest
  // free id.
  if (!h.underlay.empty()) {
    auto id = region::Region::fabric_id_for(*client, "/azote/region/", h.id);
    if (!id) {
      std::fprintf(stderr, "azote-region: %s\n", id.error().c_str());
      return 1;
    }
    h.fabric_id = *id;
  }
  if (auto w = client->put("/azote/region/hosts/" + h.id, region::Region::host_json(h)); !w) {
    std::fprintf(stderr, "azote-region: registering %s: %s\n", h.id.c_str(), w.error().describe().c_str());
    return 1;
  }
  std::printf("%s\n", region::Region::host_json(h).c_str());
  return 0;
}

int serve(int argc, char** argv) {
  std::string why;
  auto a = parse(argc, argv,
                 {"--state-dir", "--etcd", "--listen", "--name", "--account", "--host-lease-seconds",
                  "--etcd-retain-revisions", "--compact-interval-seconds", "--terminated-retention-seconds"},
                 {}, &why);
  if (!a) return usage(why);
  const std::string dir = a->get("--state-dir");
  if (dir.empty() || a->get("--etcd").empty()) return usage("serve needs --state-dir and --etcd");
  std::error_code ec;
  fs::create_directories(dir, ec);
  ::chmod(dir.c_str(), 0700);
  // TLS: the state directory's own CA and server certificate (127.0.0.1, localhost).
  auto pki = pki::HostPki::open_or_create(dir + "/pki");
  if (!pki) {
    std::fprintf(stderr, "azote-region: %s/pki: %s\n", dir.c_str(), pki.error().message().c_str());
    return 1;
  }
  auto principals = region::load_principals(dir + "/principals.json");
  if (!principals) {
    std::fprintf(stderr, "azote-region: %s (azote-region add-principal makes one)\n", principals.error().c_str());
    return 1;
  }
  // The audit log and its signing key (made at first start; the public half beside it).
  fs::create_directories(dir + "/audit", ec);
  const std::string key_path = dir + "/audit-signing.key";
  const bool have_key = fs::exists(key_path, ec);
  auto key = have_key ? audit::SigningKey::load_pem_file(key_path) : audit::SigningKey::generate();
  if (!key || (!have_key && !key->save_pem_file(key_path))) {
    std::fprintf(stderr, "azote-region: the audit signing key %s cannot be made or read\n", key_path.c_str());
    return 1;
  }
  if (auto pub = key->public_pem(); !pub || !pki::write_file_atomic(dir + "/audit/signing.pub", *pub, 0644)) {
    std::fprintf(stderr, "azote-region: %s/audit/signing.pub cannot be written\n", dir.c_str());
    return 1;
  }
  auto log = audit::AuditLog::open(dir + "/audit/audit.log", *key);
  if (!log) {
    std::fprintf(stderr, "azote-region: the audit log: %s\n", log.error().message().c_str());
    return 1;
  }
  auto store = etcd::Client::connect(split(a->get("--etcd"), ','));
  if (!store) {
    std::fprintf(stderr, "azote-region: etcd %s: %s\n", a->get("--etcd").c_str(), store.error().describe().c_str());
    return 1;
  }
  region::HttpsOptions ho;
  const std::string listen = a->get("--listen", "127.0.0.1:8443");
  const size_t colon = listen.rfind(':');
  auto port = colon == std::string::npos ? std::nullopt : parse_uint(listen.substr(colon + 1), 0, 65535);
  if (!port) return usage("--listen " + listen + " is not ADDR:PORT");
  ho.address = listen.substr(0, colon);
  ho.port = static_cast<uint16_t>(*port);
  ho.cert_pem = pki->server_cert_pem();
  ho.key_pem = pki->server_key_pem();
  region::Options ro;
  ro.name = a->get("--name", ro.name);
  ro.account = a->get("--account", ro.account);
  ro.hosts_dir = dir + "/hosts";
  // The fabric secret: made once, kept in the state directory only (never in etcd).
  {
    const std::string path = dir + "/fabric.key";
    const bool exists = fs::exists(path, ec);
    std::string secret = exists ? slurp(path) : std::string();
    if (exists && secret.size() != 32) {
      // Never replaced: a new secret would change every pair's key under running hosts.
      std::fprintf(stderr, "azote-region: %s is not 32 bytes (%zu): restore it from a backup\n", path.c_str(), secret.size());
      return 1;
    }
    if (!exists) {
      secret.resize(32);
      if (::getrandom(secret.data(), secret.size(), 0) != 32 || !pki::write_file_atomic(path, secret, 0600)) {
        std::fprintf(stderr, "azote-region: %s cannot be made\n", path.c_str());
        return 1;
      }
    }
    ro.fabric_secret = secret;
  }
  const auto lease = parse_uint(a->get("--host-lease-seconds", "30"), 3, 3600);
  if (!lease) return usage("--host-lease-seconds takes 3 to 3600");
  ro.host_lease = std::chrono::seconds(*lease);
  const auto retain = parse_uint(a->get("--etcd-retain-revisions", "10000"), 10, uint64_t{1} << 40);
  const auto every = parse_uint(a->get("--compact-interval-seconds", "300"), 0, 86400);
  if (!retain || !every) return usage("--etcd-retain-revisions takes 10 or more, --compact-interval-seconds 0 to 86400");
  ro.retain_revisions = static_cast<int64_t>(*retain);
  ro.compact_every = std::chrono::seconds(*every);
  const auto keep = parse_uint(a->get("--terminated-retention-seconds", "3600"), 0, 30 * 86400);
  if (!keep) return usage("--terminated-retention-seconds takes 0 to 2592000");
  ro.terminated_retention = std::chrono::seconds(*keep);
  const std::size_t n = principals->size();
  auto region = std::make_shared<region::Region>(ro, std::move(*store), std::move(*principals), std::move(*log));
  if (auto st = region->start(); !st) {
    std::fprintf(stderr, "azote-region: %s\n", st.error().c_str());
    return 1;
  }
  auto server = region::HttpsServer::start(ho, [region](const region::HttpRequest& r) { return region->handle(r); });
  if (!server) {
    std::fprintf(stderr, "azote-region: %s\n", server.error().c_str());
    return 1;
  }
  std::printf("azote-region: ready https://%s:%u (%zu principals)\n", ho.address.c_str(), (*server)->port(), n);
  std::fflush(stdout);
  // SIGTERM and SIGINT are blocked in every thread (main() blocks them before any thread
  // exists): this thread alone takes them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  std::printf("azote-region: stopping (signal %d)\n", sig);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread: the threads gRPC, etcd's client and libmicrohttpd start inherit the
  // mask, so that `serve` takes SIGTERM/SIGINT in its main thread with sigwait.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  if (argc < 2) return usage("a command is needed");
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (cmd == "serve") return serve(argc, argv);
  if (cmd == "add-principal") return add_principal(argc, argv);
  if (cmd == "register-host") return register_host(argc, argv);
  if (cmd == "create-enrolment-token") return create_enrolment_token(argc, argv);
  return usage("unknown command " + cmd);
}
