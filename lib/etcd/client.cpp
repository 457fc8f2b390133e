#include "etcd/client.hpp"

#include <utility>

#include "etcd/transport.hpp"

namespace azote::etcd {

using detail::Endpoint;
using detail::Retry;
using detail::Transport;

namespace {

std::string quoted(std::string_view key) {
  constexpr size_t kMax = 80;
  std::string s(key.substr(0, kMax));
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return key.size() > kMax ? s + "..." : s;
}

EtcdResult<void> check_key(const std::string& what, std::string_view key) {
  if (key.empty()) return Unexpected{local_error(EtcdErrc::kInvalidArgument, what, "the key is empty")};
  return {};
}

EtcdResult<void> check_value(const Options& o, const std::string& what, std::string_view key,
                             std::string_view value) {
  if (value.size() > o.max_value_bytes) {
    return Unexpected{local_error(
        EtcdErrc::kTooLarge, what,
        "the value of " + quoted(key) + " is " + std::to_string(value.size()) + " bytes, over the " +
            std::to_string(o.max_value_bytes) + "-byte cap (etcd refuses requests over 1.5 MiB; "
            "keep large data out of etcd); not sent")};
  }
  return {};
}

template <class Msg>
EtcdResult<void> check_request_size(const Options& o, const std::string& what, const Msg& req) {
  const size_t n = req.ByteSizeLong();
  if (n > o.max_request_bytes) {
    return Unexpected{local_error(EtcdErrc::kTooLarge, what,
                                  "the request is " + std::to_string(n) + " bytes, over the " +
                                      std::to_string(o.max_request_bytes) +
                                      "-byte cap (etcd's --max-request-bytes is 1.5 MiB); not sent")};
  }
  return {};
}

void fill(etcdserverpb::RequestOp* out, const Op& op) {
  switch (op.type) {
    case Op::Type::kGet: {
      auto* r = out->mutable_request_range();
      r->set_key(op.key);
      r->set_range_end(op.range_end);
      r->set_limit(op.limit);
      break;
    }
    case Op::Type::kPut: {
      auto* r = out->mutable_request_put();
      r->set_key(op.key);
      r->set_value(op.value);
      r->set_lease(op.lease);
      break;
    }
    case Op::Type::kDelete: {
      auto* r = out->mutable_request_delete_range();
      r->set_key(op.key);
      r->set_range_end(op.range_end);
      break;
    }
  }
}

void fill(etcdserverpb::Compare* out, const Compare& c) {
  using P = etcdserverpb::Compare;
  out->set_key(c.key);
  out->set_range_end(c.range_end);
  switch (c.cmp) {
    case Compare::Cmp::kEqual: out->set_result(P::EQUAL); break;
    case Compare::Cmp::kNotEqual: out->set_result(P::NOT_EQUAL); break;
    case Compare::Cmp::kGreater: out->set_result(P::GREATER); break;
    case Compare::Cmp::kLess: out->set_result(P::LESS); break;
  }
  switch (c.target) {
    case Compare::Target::kVersion:
      out->set_target(P::VERSION);
      out->set_version(c.number);
      break;
    case Compare::Target::kCreateRevision:
      out->set_target(P::CREATE);
      out->set_create_revision(c.number);
      break;
    case Compare::Target::kModRevision:
      out->set_target(P::MOD);
      out->set_mod_revision(c.number);
      break;
    case Compare::Target::kValue:
      out->set_target(P::VALUE);
      out->set_value(c.value);
      break;
    case Compare::Target::kLease:
      out->set_target(P::LEASE);
      out->set_lease(c.number);
      break;
  }
}

Page page_of(const etcdserverpb::RangeResponse& r) {
  Page p;
  p.kvs.reserve(static_cast<size_t>(r.kvs_size()));
  for (const auto& kv : r.kvs()) p.kvs.push_back(detail::from_pb(kv));
  p.more = r.more();
  p.count = r.count();
  p.revision = r.header().revision();
  return p;
}

}  // namespace

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key from `prefix` on
}

Compare Compare::version(std::string key, Cmp cmp, int64_t v) {
  return Compare{std::move(key), Target::kVersion, cmp, v, {}, {}};
}
Compare Compare::create_revision(std::string key, Cmp cmp, int64_t rev) {
  return Compare{std::move(key), Target::kCreateRevision, cmp, rev, {}, {}};
}
Compare Compare::mod_revision(std::string key, Cmp cmp, int64_t rev) {
  return Compare{std::move(key), Target::kModRevision, cmp, rev, {}, {}};
}
Compare Compare::value_of(std::string key, Cmp cmp, std::string value) {
  return Compare{std::move(key), Target::kValue, cmp, 0, std::move(value), {}};
}
Compare Compare::lease(std::string key, Cmp cmp, int64_t lease_id) {
  return Compare{std::move(key), Target::kLease, cmp, lease_id, {}, {}};
}

Op Op::get(std::string key) { return Op{Type::kGet, std::move(key), {}, {}, 0, 0}; }
Op Op::get_prefix(std::string prefix, int64_t limit) {
  std::string end = prefix_end(prefix);
  return Op{Type::kGet, std::move(prefix), std::move(end), {}, 0, limit};
}
Op Op::put(std::string key, std::string value, int64_t lease) {
  return Op{Type::kPut, std::move(key), {}, std::move(value), lease, 0};
}
Op Op::del(std::string key) { return Op{Type::kDelete, std::move(key), {}, {}, 0, 0}; }
Op Op::del_prefix(std::string prefix) {
  std::string end = prefix_end(prefix);
  return Op{Type::kDelete, std::move(prefix), std::move(end), {}, 0, 0};
}

Client::Client(std::shared_ptr<Transport> t) : t_(std::move(t)) {}
Client::Client(const Client&) = default;
Client& Client::operator=(const Client&) = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

EtcdResult<Client> Client::connect(const std::vector<std::string>& endpoints, Options options) {
  if (endpoints.empty()) {
    return Unexpected{local_error(EtcdErrc::kInvalidArgument, "connect", "no endpoints given")};
  }
  for (const auto& ep : endpoints) {
    if (auto why = detail::check_endpoint(ep); !why.empty()) {
      return Unexpected{local_error(EtcdErrc::kInvalidArgument, "connect", why)};
    }
  }
  if (options.tls && (options.tls->ca_pem.empty() || options.tls->cert_pem.empty() != options.tls->key_pem.empty())) {
    return Unexpected{local_error(EtcdErrc::kInvalidArgument, "connect",
                                  "TLS needs a CA, and a client certificate comes with its key")};
  }
  auto t = std::make_shared<Transport>(endpoints, std::move(options));
  std::string all;
  for (const auto& ep : endpoints) all += (all.empty() ? "" : ",") + ep;
  AZOTE_TRY(first, t->pick(0, t->deadline(), "connect to " + all));
  (void)first;
  return Client(std::move(t));
}

const std::vector<std::string>& Client::endpoints() const { return t_->addresses(); }
const Options& Client::options() const { return t_->options(); }

EtcdResult<std::optional<KeyValue>> Client::get(std::string_view key, int64_t revision) {
  const std::string what = "get " + quoted(key);
  AZOTE_TRYV(check_key(what, key));
  etcdserverpb::RangeRequest req;
  req.set_key(std::string(key));
  req.set_revision(revision);
  etcdserverpb::RangeResponse resp;
  AZOTE_TRYV(t_->call(what, Retry::kIdempotent, [&](Endpoint& e, grpc::ClientContext& ctx) {
    return e.kv->Range(&ctx, req, &resp);
  }));
  if (resp.kvs_size() == 0) return std::optional<KeyValue>{};
  return std::optional<KeyValue>{detail::from_pb(resp.kvs(0))};
}

EtcdResult<Page> Client::get_prefix(std::string_view prefix, int64_t limit, int64_t revision,
                                    std::string_view from_key) {
  const std::string what = "get prefix " + quoted(prefix);
  if (limit < 0) return Unexpected{local_error(EtcdErrc::kInvalidArgument, what, "negative limit")};
  if (!from_key.empty() && from_key.substr(0, prefix.size()) != prefix) {
    return Unexpected{local_error(EtcdErrc::kInvalidArgument, what, "from_key is not under the prefix")};
  }
  etcdserverpb::RangeRequest req;
  req.set_key(std::string(from_key.empty() ? prefix : from_key));
  if (req.key().empty()) req.set_key(std::string(1, '\0'));  // "" prefix: the whole keyspace
  req.set_range_end(prefix_end(prefix));
  req.set_limit(limit);
  req.set_revision(revision);
  etcdserverpb::RangeResponse resp;
  AZOTE_TRYV(t_->call(what, Retry::kIdempotent, [&](Endpoint& e, grpc::ClientContext& ctx) {
    return e.kv->Range(&ctx, req, &resp);
  }));
  Page page = page_of(resp);
  if (revision != 0) page.revision = revision;  // the header has the store's current one
  return page;
}

EtcdResult<Snapshot> Client::list_prefix(std::string_view prefix, int64_t page_size) {
  if (page_size <= 0) {
    return Unexpected{local_error(EtcdErrc::kInvalidArgument, "list " + quoted(prefix), "page size must be positive")};
  }
  // A compaction between two pages makes the pinned revision unreadable: start over.
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    Snapshot snap;
    std::string from;
    bool restart = false;
    for (;;) {
      auto page = get_prefix(prefix, page_size, snap.revision, from);
      if (!page.ok()) {
        if (page.error().kind == EtcdErrc::kCompacted && snap.revision != 0 && attempt < kAttempts) {
          restart = true;
          break;
        }
        return Unexpected{std::move(page).error()};
      }
      if (snap.revision == 0) snap.revision = page->revision;
      for (auto& kv : page->kvs) snap.kvs.push_back(std::move(kv));
      if (!page->more || snap.kvs.empty()) break;
      from = snap.kvs.back().key + '\0';
    }
    if (!restart) return snap;
  }
}

EtcdResult<int64_t> Client::put(std::string_view key, std::string_view value, int64_t lease) {
  const std::string what = "put " + quoted(key);
  AZOTE_TRYV(check_key(what, key));
  AZOTE_TRYV(check_value(t_->options(), what, key, value));
  etcdserverpb::PutRequest req;
  req.set_key(std::string(key));
  req.set_value(std::string(value));
  req.set_lease(lease);
  AZOTE_TRYV(check_request_size(t_->options(), what, req));
  etcdserverpb::PutResponse resp;
  AZOTE_TRYV(t_->call(what, Retry::kIfNotSent, [&](Endpoint& e, grpc::ClientContext& ctx) {
    return e.kv->Put(&ctx, req, &resp);
  }));
  return resp.header().revision();
}

namespace {

EtcdResult<DeleteResult> delete_range(Transport& t, const std::string& what, std::string key, std::string end) {
  etcdserverpb::DeleteRangeRequest req;
  req.set_key(std::move(key));
  req.set_range_end(std::move(end));
  etcdserverpb::DeleteRangeResponse resp;
  AZOTE_TRYV(t.call(what, Retry::kIfNotSent, [&](Endpoint& e, grpc::ClientContext& ctx) {
    return e.kv->DeleteRange(&ctx, req, &resp);
  }));
  return DeleteResult{resp.deleted(), resp.header().revision()};
}

}  // namespace

EtcdResult<DeleteResult> Client::del(std::string_view key) {
  const std::string what = "delete " + quoted(key);
  AZOTE_TRYV(check_key(what, key));
  return delete_range(*t_, what, std::string(key), "");
}

EtcdResult<DeleteResult> Client::del_prefix(std::string_view prefix) {
  const std::string what = "delete prefix " + quoted(prefix);
  // An empty prefix would delete the whole keyspace: refused, say so explicitly instead.
  if (prefix.empty()) {
    return Unexpected{local_error(EtcdErrc::kInvalidArgument, what, "an empty prefix would delete every key")};
  }
  return delete_range(*t_, what, std::string(prefix), prefix_end(prefix));
}

EtcdResult<TxnResult> Client::txn(const std::vector<Compare>& compares, const std::vector<Op>& success,
                                  const std::vector<Op>& failure) {
  std::string what = "txn";
  if (!compares.empty()) what += " on " + quoted(compares.front().key);
  const Options& o = t_->options();
  if (success.size() > o.max_txn_ops || failure.size() > o.max_txn_ops) {
    return Unexpected{local_error(EtcdErrc::kTooLarge, what,
                                  "more than " + std::to_string(o.max_txn_ops) +
                                      " operations in one branch (etcd's --max-txn-ops); not sent")};
  }
  etcdserverpb::TxnRequest req;
  for (const auto& c : compares) {
    AZOTE_TRYV(check_key(what, c.key));
    fill(req.add_compare(), c);
  }
  for (const auto* ops : {&success, &failure}) {
    for (const auto& op : *ops) {
      AZOTE_TRYV(check_key(what, op.key));
      if (op.type == Op::Type::kPut) AZOTE_TRYV(check_value(o, what, op.key, op.value));
      fill(ops == &success ? req.add_success() : req.add_failure(), op);
    }
  }
  AZOTE_TRYV(check_request_size(o, what, req));
  // A txn of reads alone may be sent again; one that writes only if it cannot have applied.
  bool writes = false;
  for (const auto* ops : {&success, &failure}) {
    for (const auto& op : *ops) writes = writes || op.type != Op::Type::kGet;
  }
  etcdserverpb::TxnResponse resp;
  AZOTE_TRYV(t_->call(what, writes ? Retry::kIfNotSent : Retry::kIdempotent,
                      [&](Endpoint& e, grpc::ClientContext& ctx) { return e.kv->Txn(&ctx, req, &resp); }));
  TxnResult r;
  r.succeeded = resp.succeeded();
  r.revision = resp.header().revision();
  for (const auto& rop : resp.responses()) {
    OpResult out;
    switch (rop.response_case()) {
      case etcdserverpb::ResponseOp::kResponseRange:
        out.type = Op::Type::kGet;
        out.page = page_of(rop.response_range());
        out.page.revision = r.revision;
        break;
      case etcdserverpb::ResponseOp::kResponsePut: out.type = Op::Type::kPut; break;
      case etcdserverpb::ResponseOp::kResponseDeleteRange:
        out.type = Op::Type::kDelete;
        out.deleted = rop.response_delete_range().deleted();
        break;
      default:
        return Unexpected{local_error(EtcdErrc::kInternal, what, "etcd answered with an unexpected response kind")};
    }
    r.responses.push_back(std::move(out));
  }
  return r;
}

EtcdResult<CreateResult> Client::create_if_absent(std::string_view key, std::string_view value, int64_t lease) {
  std::string k(key);
  AZOTE_TRY(r, txn({Compare::create_revision(k, Compare::Cmp::kEqual, 0)}, {Op::put(k, std::string(value), lease)},
                   {Op::get(k)}));
  CreateResult out;
  out.created = r.succeeded;
  out.revision = r.revision;
  if (!r.succeeded && !r.responses.empty() && !r.responses[0].page.kvs.empty()) {
    out.existing = std::move(r.responses[0].page.kvs[0]);
  }
  return out;
}

EtcdResult<CasResult> Client::compare_and_swap(std::string_view key, int64_t expected_mod_revision,
                                               std::string_view value, int64_t lease) {
  std::string k(key);
  AZOTE_TRY(r, txn({Compare::mod_revision(k, Compare::Cmp::kEqual, expected_mod_revision)},
                   {Op::put(k, std::string(value), lease)}, {Op::get(k)}));
  CasResult out;
  out.swapped = r.succeeded;
  out.revision = r.revision;
  if (!r.succeeded && !r.responses.empty() && !r.responses[0].page.kvs.empty()) {
    out.current = std::move(r.responses[0].page.kvs[0]);
  }
  return out;
}

EtcdResult<Lease> Client::grant(int64_t ttl_s) {
  const std::string what = "lease grant " + std::to_string(ttl_s) + "s";
  if (ttl_s <= 0) return Unexpected{local_error(EtcdErrc::kInvalidArgument, what, "the TTL must be positive")};
  etcdserverpb::LeaseGrantRequest req;
  req.set_ttl(ttl_s);
  etcdserverpb::LeaseGrantResponse resp;
  // Sent again, a grant makes a second lease that expires unused: harmless, but not retried
  // past a member that may have applied it, so no lease is left behind unseen.
  AZOTE_TRYV(t_->call(what, Retry::kIfNotSent, [&](Endpoint& e, grpc::ClientContext& ctx) {
    return e.lease->LeaseGrant(&ctx, req, &resp);
  }));
  if (!resp.error().empty()) return Unexpected{local_error(EtcdErrc::kInternal, what, resp.error())};
  return Lease{resp.id(), resp.ttl()};
}

EtcdResult<int64_t> Client::keep_alive_once(int64_t id) {
  return detail::keep_alive_once(*t_, id, t_->deadline());
}

EtcdResult<void> Client::revoke(int64_t id) {
  const std::string what = "lease revoke " + std::to_string(id);
  etcdserverpb::LeaseRevokeRequest req;
  req.set_id(id);
  etcdserverpb::LeaseRevokeResponse resp;
  // Sent twice, the second answers "not found": reported as such, so the caller knows.
  return t_->call(what, Retry::kIdempotent, [&](Endpoint& e, grpc::ClientContext& ctx) {
    return e.lease->LeaseRevoke(&ctx, req, &resp);
  });
}

EtcdResult<LeaseInfo> Client::time_to_live(int64_t id, bool with_keys) {
  const std::string what = "lease time-to-live " + std::to_string(id);
  etcdserverpb::LeaseTimeToLiveRequest req;
  req.set_id(id);
  req.set_keys(with_keys);
  etcdserverpb::LeaseTimeToLiveResponse resp;
  AZOTE_TRYV(t_->call(what, Retry::kIdempotent, [&](Endpoint& e, grpc::ClientContext& ctx) {
    return e.lease->LeaseTimeToLive(&ctx, req, &resp);
  }));
  if (resp.ttl() < 0) {
    EtcdError err = local_error(EtcdErrc::kNotFound, what, "etcdserver: requested lease not found (expired or revoked)");
    err.code = grpc::StatusCode::NOT_FOUND;
    return Unexpected{std::move(err)};
  }
  LeaseInfo info;
  info.id = resp.id();
  info.ttl = resp.ttl();
  info.granted_ttl = resp.grantedttl();
  for (const auto& k : resp.keys()) info.keys.push_back(k);
  return info;
}

EtcdResult<void> Client::compact(int64_t revision, bool physical) {
  const std::string what = "compact to " + std::to_string(revision);
  if (revision <= 0) return Unexpected{local_error(EtcdErrc::kInvalidArgument, what, "the revision must be positive")};
  etcdserverpb::CompactionRequest req;
  req.set_revision(revision);
  req.set_physical(physical);
  etcdserverpb::CompactionResponse resp;
  // Idempotent: a second compaction to the same revision answers kCompacted.
  return t_->call(what, Retry::kIdempotent, [&](Endpoint& e, grpc::ClientContext& ctx) {
    return e.kv->Compact(&ctx, req, &resp);
  });
}

namespace {

// `address` among the transport's endpoints, or a channel made for it (kept in `own`).
EtcdResult<Endpoint*> endpoint_for(Transport& t, std::string_view address, const std::string& what,
                                   std::unique_ptr<Endpoint>& own) {
  for (size_t i = 0; i < t.size(); ++i) {
    if (t.endpoint(i).address == address) return &t.endpoint(i);
  }
  if (auto why = detail::check_endpoint(address); !why.empty()) {
    return Unexpected{local_error(EtcdErrc::kInvalidArgument, what, why)};
  }
  own = t.make_endpoint(std::string(address));
  return own.get();
}

}  // namespace

EtcdResult<MemberStatus> Client::status(std::string_view endpoint) {
  const std::string what = "status";
  std::unique_ptr<Endpoint> own;
  AZOTE_TRY(e, endpoint_for(*t_, endpoint, what, own));
  etcdserverpb::StatusRequest req;
  etcdserverpb::StatusResponse resp;
  AZOTE_TRYV(t_->call_one(*e, what, [&](Endpoint& ep, grpc::ClientContext& ctx) {
    return ep.maintenance->Status(&ctx, req, &resp);
  }));
  MemberStatus s;
  s.endpoint = std::string(endpoint);
  s.version = resp.version();
  s.db_size = resp.dbsize();
  s.db_size_in_use = resp.dbsizeinuse();
  s.member_id = resp.header().member_id();
  s.leader = resp.leader();
  s.raft_index = resp.raftindex();
  s.raft_term = resp.raftterm();
  s.raft_applied_index = resp.raftappliedindex();
  s.is_learner = resp.islearner();
  for (const auto& err : resp.errors()) s.errors.push_back(err);
  return s;
}

EtcdResult<void> Client::defragment(std::string_view endpoint) {
  const std::string what = "defragment";
  std::unique_ptr<Endpoint> own;
  AZOTE_TRY(e, endpoint_for(*t_, endpoint, what, own));
  etcdserverpb::DefragmentRequest req;
  etcdserverpb::DefragmentResponse resp;
  return t_->call_one(*e, what, [&](Endpoint& ep, grpc::ClientContext& ctx) {
    return ep.maintenance->Defragment(&ctx, req, &resp);
  });
}

EtcdResult<std::vector<Member>> Client::member_list() {
  etcdserverpb::MemberListRequest req;
  etcdserverpb::MemberListResponse resp;
  AZOTE_TRYV(t_->call("member list", Retry::kIdempotent, [&](Endpoint& e, grpc::ClientContext& ctx) {
    return e.cluster->MemberList(&ctx, req, &resp);
  }));
  std::vector<Member> out;
  for (const auto& m : resp.members()) {
    Member mm;
    mm.id = m.id();
    mm.name = m.name();
    for (const auto& u : m.peerurls()) mm.peer_urls.push_back(u);
    for (const auto& u : m.clienturls()) mm.client_urls.push_back(u);
    mm.is_learner = m.islearner();
    out.push_back(std::move(mm));
  }
  return out;
}

}  // namespace azote::etcd
