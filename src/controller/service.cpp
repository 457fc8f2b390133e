#include "controller/service.hpp"

#include "base/hex.hpp"
#include "base/parse.hpp"

#include "base/log.hpp"
#include "vpc_policy/flow.hpp"

namespace azote::controller {
namespace {

using K = ApiError::Kind;

grpc::StatusCode status_code(K k) {
  switch (k) {
    case K::kInvalid: return grpc::StatusCode::INVALID_ARGUMENT;
    case K::kNotFound: return grpc::StatusCode::NOT_FOUND;
    case K::kConflict: return grpc::StatusCode::FAILED_PRECONDITION;
    case K::kCapacity: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case K::kUnsupported: return grpc::StatusCode::UNIMPLEMENTED;
    case K::kDenied: return grpc::StatusCode::PERMISSION_DENIED;
    case K::kUnauthenticated: return grpc::StatusCode::UNAUTHENTICATED;
    case K::kInternal: break;
  }
  return grpc::StatusCode::INTERNAL;
}

void fill(v1::Instance* o, const InstanceRec& r, const std::vector<VolumeRec>& vols, const NetworkView& net) {
  o->set_instance_id(r.id);
  o->set_image_id(r.image_id);
  o->set_instance_type(r.type);
  o->mutable_state()->set_name(r.state);
  if (!r.reason_code.empty()) {
    o->mutable_state_reason()->set_code(r.reason_code);
    o->mutable_state_reason()->set_message(r.reason_message);
  }
  o->set_launch_time(r.launch_time);
  o->set_vcpus(r.vcpus);
  o->set_memory_mib(r.memory_mib);
  o->set_reservation_id(r.reservation_id);
  o->set_client_token(r.client_token);
  o->set_root_device_name("/dev/vda");
  o->set_hypervisor_pid(r.state == state::kRunning ? r.hv_pid : 0);
  for (const auto& [k, v] : r.tags) {
    auto* t = o->add_tags();
    t->set_key(k);
    t->set_value(v);
  }
  for (const auto& v : vols) {
    if (v.instance_id != r.id) continue;
    auto* m = o->add_block_device_mappings();
    m->set_device_name(v.device);
    m->set_volume_id(v.id);
    m->set_delete_on_termination(v.delete_on_termination);
    m->set_status(v.attach_state);
  }
  auto* md = o->mutable_metadata_options();
  md->set_http_tokens(r.http_tokens);
  md->set_http_endpoint("enabled");
  md->set_state("applied");
  o->mutable_enclave_options()->set_enabled(r.enclave_enabled);
  o->mutable_enclave_options()->set_memory_mib(r.enclave_pool_mib);
  o->mutable_enclave_options()->set_cpu_count(r.enclave_pool_cpus);
  const auto e = net.eni_of.find(r.id);
  if (e == net.eni_of.end()) return;  // none asked for, or terminated (the address is released)
  const EniRec& eni = e->second;
  const auto ip = vpc::parse_ipv4(eni.private_ip);
  const std::string dns = private_dns_name(ip ? *ip : 0, net.region);
  o->set_private_ip_address(eni.private_ip);
  o->set_private_dns_name(dns);
  o->set_mac_address(eni.mac);
  o->set_subnet_id(eni.subnet_id);
  o->set_vpc_id(eni.vpc_id);
  auto* n = o->add_network_interfaces();
  n->set_network_interface_id(eni.id);
  n->set_subnet_id(eni.subnet_id);
  n->set_vpc_id(eni.vpc_id);
  n->set_mac_address(eni.mac);
  n->set_private_ip_address(eni.private_ip);
  n->set_private_dns_name(dns);
  n->set_status("in-use");
  n->set_source_dest_check(true);
  n->mutable_attachment()->set_device_index(0);
  n->mutable_attachment()->set_status("attached");
  n->mutable_attachment()->set_delete_on_termination(true);
  for (const auto& g : eni.groups) {
    const auto name = net.group_names.find(g);
    for (auto* gi : {o->add_security_groups(), n->add_groups()}) {
      gi->set_group_id(g);
      gi->set_group_name(name == net.group_names.end() ? "" : name->second);
    }
  }
}

void fill(v1::IpPermission* o, const Permission& p) {
  o->set_ip_protocol(p.protocol);
  if (p.from_port) o->set_from_port(*p.from_port);
  if (p.to_port) o->set_to_port(*p.to_port);
  for (const auto& c : p.cidrs) o->add_cidr_ips(c);
  for (const auto& g : p.groups) o->add_source_group_ids(g);
}

void fill(v1::SecurityGroup* o, const SecurityGroupRec& g) {
  o->set_group_id(g.id);
  o->set_group_name(g.name);
  o->set_description(g.description);
  o->set_vpc_id(g.vpc_id);
  for (const auto& r : g.ingress) fill(o->add_ip_permissions(), permission_of(r));
  for (const auto& r : g.egress) fill(o->add_ip_permissions_egress(), permission_of(r));
}

std::vector<Permission> permissions_of(const google::protobuf::RepeatedPtrField<v1::IpPermission>& in) {
  std::vector<Permission> out;
  for (const auto& p : in) {
    Permission x;
    x.protocol = p.ip_protocol();
    if (p.has_from_port()) x.from_port = p.from_port();
    if (p.has_to_port()) x.to_port = p.to_port();
    x.cidrs.assign(p.cidr_ips().begin(), p.cidr_ips().end());
    x.groups.assign(p.source_group_ids().begin(), p.source_group_ids().end());
    out.push_back(std::move(x));
  }
  return out;
}

void fill(v1::Volume* o, const VolumeRec& v) {
  o->set_volume_id(v.id);
  o->set_size_gib(v.size_gib);
  o->set_volume_type(v.type);
  o->set_iops(v.iops);
  o->set_throughput_mbps(v.throughput_mbps);
  o->set_encrypted(v.encrypted);
  o->set_state(v.state);
  o->set_create_time(v.create_time);
  for (const auto& [k, val] : v.tags) {
    auto* t = o->add_tags();
    t->set_key(k);
    t->set_value(val);
  }
  if (!v.instance_id.empty()) {
    auto* a = o->add_attachments();
    a->set_volume_id(v.id);
    a->set_instance_id(v.instance_id);
    a->set_device(v.device);
    a->set_state(v.attach_state);
    a->set_delete_on_termination(v.delete_on_termination);
  }
}

void fill(v1::VolumeAttachment* a, const VolumeRec& v) {
  a->set_volume_id(v.id);
  a->set_instance_id(v.instance_id);
  a->set_device(v.device);
  a->set_state(v.attach_state);
  a->set_delete_on_termination(v.delete_on_termination);
}

void fill(v1::Image* o, const ImageRec& i) {
  o->set_image_id(i.id);
  o->set_name(i.name);
  o->set_description(i.description);
  o->set_state("available");
  o->set_kernel_sha256(i.kernel_sha256);
  o->set_initrd_sha256(i.initrd_sha256);
  o->set_cmdline(i.cmdline);
  o->set_root_volume_size_gib(i.root_size_gib);
  o->set_root_content_sha256(i.root_sha256);
  o->set_creation_date(i.creation_date);
  o->set_tpm_support(i.tpm_support);
}

void fill(v1::InstanceStateChangesResponse* resp, const std::vector<StateChange>& changes) {
  for (const auto& c : changes) {
    auto* s = resp->add_instances();
    s->set_instance_id(c.id);
    s->mutable_previous_state()->set_name(c.previous);
    s->mutable_current_state()->set_name(c.current);
  }
}

Tags tags_of(const google::protobuf::RepeatedPtrField<v1::Tag>& in) {
  Tags t;
  for (const auto& x : in) t.emplace_back(x.key(), x.value());
  return t;
}

std::vector<std::string> ids_of(const google::protobuf::RepeatedPtrField<std::string>& in) {
  return {in.begin(), in.end()};
}

}  // namespace

void Service::audit_refusal(const Refusal& r) {
  audit::Entry e;
  e.principal = r.principal;
  e.method = "tls.handshake";
  e.outcome = "denied";
  e.error = r.reason;
  e.detail = {{"count", r.count}};
  if (!r.peer.empty()) e.detail["peer"] = r.peer;
  if (r.count > 1) {
    e.detail["first"] = rfc3339(r.first);
    e.detail["last"] = rfc3339(r.last);
  }
  // One log line per record, not per refusal: the aggregator bounds both.
  LOG_WARN("controller: refused %llu connection(s)%s%s%s%s: %s", static_cast<unsigned long long>(r.count),
           r.peer.empty() ? "" : " from ", r.peer.c_str(), r.principal.empty() ? "" : " ", r.principal.c_str(),
           r.reason.c_str());
  if (auto a = audit_.append(e); !a) LOG_ERROR("audit: %s", a.error().message().c_str());
  std::lock_guard lock(stats_mu_);
  calls_[{"tls.handshake", "denied"}] += r.count;
}

void Service::audit_event(const std::string& method, const std::vector<std::string>& resources, const std::string& error) {
  audit::Entry e;
  e.principal = "controller";
  e.method = method;
  e.resources = resources;
  // host.write-denied: a change the write guard refused; other events: something failed.
  e.outcome = method == "host.write-denied" ? "denied" : "failed";
  e.error = error;
  if (auto a = audit_.append(e); !a) LOG_ERROR("audit: %s", a.error().message().c_str());
}

std::string Service::call_metrics() {
  std::lock_guard lock(stats_mu_);
  std::string out = "# HELP azote_api_calls_total API calls by method and outcome.\n# TYPE azote_api_calls_total counter\n";
  for (const auto& [k, n] : calls_)
    out += "azote_api_calls_total{method=\"" + k.first + "\",outcome=\"" + k.second + "\"} " + std::to_string(n) + "\n";
  return out;
}

grpc::Status Service::finish(grpc::ServerContext* ctx, const std::string& principal, const char* method,
                             const std::vector<std::string>& resources, const std::optional<ApiError>& err) {
  audit::Entry e;
  e.principal = principal;
  e.method = method;
  e.resources = resources;
  e.outcome = !err ? "allowed" : (err->kind == K::kDenied || err->kind == K::kUnauthenticated) ? "denied" : "failed";
  if (err) e.error = err->message();
  {
    std::lock_guard lock(stats_mu_);
    ++calls_[{method, e.outcome}];
  }
  // No record, no answer: a call whose audit record cannot be written fails.
  if (auto a = audit_.append(e); !a) {
    LOG_ERROR("audit: %s", a.error().message().c_str());
    return grpc::Status(grpc::StatusCode::INTERNAL, "InternalError: the audit log cannot be written");
  }
  if (!err) return grpc::Status::OK;
  ctx->AddTrailingMetadata("azote-error-code", err->code);
  return grpc::Status(status_code(err->kind), err->message());
}

template <class Body>
grpc::Status Service::call(grpc::ServerContext* ctx, const char* method, Access access,
                           std::vector<std::string> resources, Body&& body) {
  const auto certs = ctx->auth_context()->FindPropertyValues("x509_pem_cert");
  if (certs.empty())
    return finish(ctx, "", method, resources,
                  ApiError{K::kUnauthenticated, "AuthFailure", "no client certificate"});
  auto principal = pki_.verify_client(std::string(certs.front().data(), certs.front().size()));
  if (!principal) return finish(ctx, "", method, resources, ApiError{K::kUnauthenticated, "AuthFailure", principal.error().context});
  const std::string who = principal->role + "/" + principal->name;
  const bool allowed = principal->role == "control-plane" || (principal->role == "operator" && access == Access::kRead);
  if (!allowed)
    return finish(ctx, who, method, resources,
                  ApiError{K::kDenied, "UnauthorizedOperation",
                           "role \"" + principal->role + "\" may not call " + method});
  // A call of azote-region: admitted only under its current lease of this host, and only
  // from the region's own certificate (control-plane, named "region": the one the
  // operator issued for it), so that no other principal can move the fence.
  const auto& md = ctx->client_metadata();
  const bool region = principal->role == "control-plane" && principal->name == kRegionPrincipal;
  if (const auto e = md.find("azote-region-epoch"); e != md.end()) {
    if (!region)
      return finish(ctx, who, method, resources,
                    ApiError{K::kDenied, "UnauthorizedOperation",
                             "only the region's certificate (control-plane/" + std::string(kRegionPrincipal) +
                                 ") presents region lease epochs"});
    const auto l = md.find("azote-region-lease-ms");
    const std::string es(e->second.data(), e->second.size());
    const std::string ls = l == md.end() ? "" : std::string(l->second.data(), l->second.size());
    auto epoch = parse_uint(es, 1, UINT64_MAX);
    auto lease = parse_uint(ls, 1000, 3600 * 1000);
    if (!epoch || !lease)
      return finish(ctx, who, method, resources,
                    ApiError{K::kInvalid, "InvalidParameterValue", "azote-region-epoch and -lease-ms must be numbers"});
    if (auto why = region_fence_.admit(*epoch, std::chrono::milliseconds(*lease), RegionFence::Clock::now(), who))
      return finish(ctx, who, method, resources, ApiError{K::kConflict, "RegionLeaseLost", *why});
  } else if (auto why = region_fence_.admit_without_epoch(who)) {
    return finish(ctx, who, method, resources, ApiError{K::kConflict, "RegionLeaseLost", *why});
  } else if (std::string_view(method) == "ApplyRegionNetwork") {
    return finish(ctx, who, method, resources,
                  ApiError{K::kDenied, "UnauthorizedOperation",
                           "only azote-region pushes the region's network (a call under its lease of this host)"});
  }
  std::optional<ApiError> err;
  if (auto r = body(resources); !r) err = r.error();
  return finish(ctx, who, method, resources, err);
}

grpc::Status Service::RunInstances(grpc::ServerContext* ctx, const v1::RunInstancesRequest* req,
                                   v1::RunInstancesResponse* resp) {
  return call(ctx, "RunInstances", Access::kWrite, {req->image_id()}, [&](std::vector<std::string>& res) -> ApiResult<void> {
    RunRequest r;
    r.image_id = req->image_id();
    r.instance_type = req->instance_type();
    r.count = req->count();
    r.user_data = req->user_data();
    r.tags = tags_of(req->tags());
    r.client_token = req->client_token();
    r.root_volume_size_gib = req->root_volume_size_gib();
    r.root_volume_type = req->root_volume_type();
    r.security_group_ids = ids_of(req->security_group_ids());
    r.subnet_id = req->subnet_id();
    r.private_ip = req->private_ip_address();
    r.http_tokens = req->http_tokens();
    r.no_network = req->no_network_interface();
    r.enclave_enabled = req->enclave_enabled();
    r.enclave_cpu_count = req->enclave_cpu_count();
    r.enclave_memory_mib = req->enclave_memory_mib();
    AZOTE_TRY(out, host_.run_instances(r));
    AZOTE_TRY(vols, host_.describe_volumes({}));
    const NetworkView net = host_.network_view();
    resp->set_reservation_id(out.reservation_id);
    res.push_back(out.reservation_id);
    for (const auto& i : out.instances) {
      fill(resp->add_instances(), i, vols, net);
      res.push_back(i.id);
    }
    return {};
  });
}

grpc::Status Service::DescribeInstances(grpc::ServerContext* ctx, const v1::DescribeInstancesRequest* req,
                                        v1::DescribeInstancesResponse* resp) {
  return call(ctx, "DescribeInstances", Access::kRead, ids_of(req->instance_ids()),
              [&](std::vector<std::string>&) -> ApiResult<void> {
                AZOTE_TRY(is, host_.describe_instances(ids_of(req->instance_ids())));
                AZOTE_TRY(vols, host_.describe_volumes({}));
                const NetworkView net = host_.network_view();
                for (const auto& i : is) fill(resp->add_instances(), i, vols, net);
                return {};
              });
}

grpc::Status Service::StopInstances(grpc::ServerContext* ctx, const v1::InstanceIdsRequest* req,
                                    v1::InstanceStateChangesResponse* resp) {
  return call(ctx, "StopInstances", Access::kWrite, ids_of(req->instance_ids()),
              [&](std::vector<std::string>&) -> ApiResult<void> {
                AZOTE_TRY(c, host_.stop_instances(ids_of(req->instance_ids()), req->force()));
                fill(resp, c);
                return {};
              });
}

grpc::Status Service::StartInstances(grpc::ServerContext* ctx, const v1::InstanceIdsRequest* req,
                                     v1::InstanceStateChangesResponse* resp) {
  return call(ctx, "StartInstances", Access::kWrite, ids_of(req->instance_ids()),
              [&](std::vector<std::string>&) -> ApiResult<void> {
                AZOTE_TRY(c, host_.start_instances(ids_of(req->instance_ids())));
                fill(resp, c);
                return {};
              });
}

grpc::Status Service::RebootInstances(grpc::ServerContext* ctx, const v1::InstanceIdsRequest* req,
                                      v1::InstanceStateChangesResponse* resp) {
  return call(ctx, "RebootInstances", Access::kWrite, ids_of(req->instance_ids()),
              [&](std::vector<std::string>&) -> ApiResult<void> {
                AZOTE_TRY(c, host_.reboot_instances(ids_of(req->instance_ids())));
                fill(resp, c);
                return {};
              });
}

grpc::Status Service::TerminateInstances(grpc::ServerContext* ctx, const v1::InstanceIdsRequest* req,
                                         v1::InstanceStateChangesResponse* resp) {
  return call(ctx, "TerminateInstances", Access::kWrite, ids_of(req->instance_ids()),
              [&](std::vector<std::string>&) -> ApiResult<void> {
                AZOTE_TRY(c, host_.terminate_instances(ids_of(req->instance_ids())));
                fill(resp, c);
                return {};
              });
}

grpc::Status Service::GetConsoleOutput(grpc::ServerContext* ctx, const v1::GetConsoleOutputRequest* req,
                                       v1::GetConsoleOutputResponse* resp) {
  return call(ctx, "GetConsoleOutput", Access::kTenant, {req->instance_id()},
              [&](std::vector<std::string>&) -> ApiResult<void> {
                AZOTE_TRY(out, host_.console_output(req->instance_id()));
                resp->set_instance_id(req->instance_id());
                resp->set_output(out);
                resp->set_timestamp(now_rfc3339());
                return {};
              });
}

namespace {
void enclave_to_proto(const EnclaveView& e, v1::Enclave* o) {
  o->set_enclave_name(e.name);
  o->set_enclave_id(e.id);
  o->set_process_id(e.pid);
  o->set_enclave_cid(e.cid);
  o->set_number_of_cpus(e.cpus);
  o->set_memory_mib(static_cast<uint32_t>(e.memory_mib));
  o->set_state(e.state);
  o->set_flags(e.flags);
  o->set_instance_id(e.instance_id);
  o->set_image_name(e.image_name);
  o->set_image_version(e.image_version);
  for (const auto& [k, v] : e.measurements) (*o->mutable_measurements())[k] = v;
}
}  // namespace

grpc::Status Service::RunEnclave(grpc::ServerContext* ctx, const v1::RunEnclaveRequest* req, v1::Enclave* resp) {
  return call(ctx, "RunEnclave", Access::kWrite, {req->instance_id()}, [&](std::vector<std::string>& res) -> ApiResult<void> {
    EnclaveRequest r;
    r.instance_id = req->instance_id();
    r.eif = req->eif();
    r.name = req->enclave_name();
    r.cpu_count = req->cpu_count();
    r.memory_mib = req->memory_mib();
    r.cid = req->enclave_cid();
    r.debug = req->debug_mode();
    AZOTE_TRY(e, host_.run_enclave(r));
    res.push_back(e.id);
    enclave_to_proto(e, resp);
    return {};
  });
}

grpc::Status Service::DescribeEnclaves(grpc::ServerContext* ctx, const v1::DescribeEnclavesRequest* req,
                                       v1::DescribeEnclavesResponse* resp) {
  return call(ctx, "DescribeEnclaves", Access::kRead, {req->instance_id()}, [&](std::vector<std::string>&) -> ApiResult<void> {
    AZOTE_TRY(all, host_.describe_enclaves(req->instance_id()));
    for (const auto& e : all) enclave_to_proto(e, resp->add_enclaves());
    return {};
  });
}

grpc::Status Service::TerminateEnclave(grpc::ServerContext* ctx, const v1::TerminateEnclaveRequest* req,
                                       v1::TerminateEnclaveResponse* resp) {
  return call(ctx, "TerminateEnclave", Access::kWrite, {req->enclave_id()}, [&](std::vector<std::string>&) -> ApiResult<void> {
    AZOTE_TRY(e, host_.terminate_enclave(req->enclave_id()));
    resp->set_enclave_id(e.id);
    resp->set_enclave_name(e.name);
    resp->set_terminated(true);
    return {};
  });
}

grpc::Status Service::GetEnclaveConsole(grpc::ServerContext* ctx, const v1::GetEnclaveConsoleRequest* req,
                                        v1::GetEnclaveConsoleResponse* resp) {
  // A tenant's data, and only a debug-mode enclave's: the others' is read by nobody.
  return call(ctx, "GetEnclaveConsole", Access::kTenant, {req->enclave_id()}, [&](std::vector<std::string>&) -> ApiResult<void> {
    AZOTE_TRY(out, host_.enclave_console(req->enclave_id()));
    resp->set_enclave_id(req->enclave_id());
    resp->set_output(out);
    return {};
  });
}

grpc::Status Service::DescribeInstanceTypes(grpc::ServerContext* ctx, const v1::DescribeInstanceTypesRequest* req,
                                            v1::DescribeInstanceTypesResponse* resp) {
  return call(ctx, "DescribeInstanceTypes", Access::kRead, ids_of(req->instance_types()),
              [&](std::vector<std::string>&) -> ApiResult<void> {
                std::vector<const InstanceType*> want;
                for (const auto& n : req->instance_types()) {
                  const InstanceType* t = find_instance_type(n);
                  if (!t) return api_error(K::kInvalid, "InvalidInstanceType", "instance type \"" + n + "\" does not exist");
                  want.push_back(t);
                }
                if (want.empty())
                  for (const auto& t : instance_types()) want.push_back(&t);
                for (const InstanceType* t : want) {
                  auto* o = resp->add_instance_types();
                  o->set_instance_type(std::string(t->name));
                  o->set_vcpus(t->vcpus);
                  o->set_memory_mib(t->memory_mib);
                  o->set_network_mbps(t->network_mbps);
                  o->set_ebs_mbps(t->ebs_mbps);
                  o->set_ebs_iops(t->ebs_iops);
                  o->set_network_pps(t->network_pps);
                }
                return {};
              });
}

grpc::Status Service::RegisterImage(grpc::ServerContext* ctx, const v1::RegisterImageRequest* req,
                                    v1::RegisterImageResponse* resp) {
  return call(ctx, "RegisterImage", Access::kWrite, {req->name()}, [&](std::vector<std::string>& res) -> ApiResult<void> {
    ImageRequest r;
    r.name = req->name();
    r.description = req->description();
    r.kernel = req->kernel();
    r.initrd = req->initrd();
    r.cmdline = req->cmdline();
    r.root_content = req->root_content();
    r.root_volume_size_gib = req->root_volume_size_gib();
    r.tpm_support = req->tpm_support();
    AZOTE_TRY(img, host_.register_image(r));
    resp->set_image_id(img.id);
    res.push_back(img.id);
    return {};
  });
}

grpc::Status Service::DescribeImages(grpc::ServerContext* ctx, const v1::DescribeImagesRequest* req,
                                     v1::DescribeImagesResponse* resp) {
  return call(ctx, "DescribeImages", Access::kRead, ids_of(req->image_ids()), [&](std::vector<std::string>&) -> ApiResult<void> {
    AZOTE_TRY(is, host_.describe_images(ids_of(req->image_ids())));
    for (const auto& i : is) fill(resp->add_images(), i);
    return {};
  });
}

grpc::Status Service::CreateVolume(grpc::ServerContext* ctx, const v1::CreateVolumeRequest* req, v1::Volume* resp) {
  return call(ctx, "CreateVolume", Access::kWrite, {}, [&](std::vector<std::string>& res) -> ApiResult<void> {
    VolumeRequest r;
    r.spec.type = req->volume_type();
    r.spec.size_gib = req->size_gib();
    r.spec.iops = req->iops();
    r.spec.throughput_mbps = req->throughput_mbps();
    r.iops_given = req->iops() != 0;
    r.throughput_given = req->throughput_mbps() != 0;
    if (req->has_encrypted()) r.encrypted = req->encrypted();
    r.tags = tags_of(req->tags());
    r.client_token = req->client_token();
    AZOTE_TRY(v, host_.create_volume(r));
    fill(resp, v);
    res.push_back(v.id);
    return {};
  });
}

grpc::Status Service::AttachVolume(grpc::ServerContext* ctx, const v1::AttachVolumeRequest* req, v1::VolumeAttachment* resp) {
  return call(ctx, "AttachVolume", Access::kWrite, {req->volume_id(), req->instance_id()},
              [&](std::vector<std::string>&) -> ApiResult<void> {
                AZOTE_TRY(v, host_.attach_volume(req->volume_id(), req->instance_id(), req->device()));
                fill(resp, v);
                return {};
              });
}

grpc::Status Service::DetachVolume(grpc::ServerContext* ctx, const v1::DetachVolumeRequest* req, v1::VolumeAttachment* resp) {
  return call(ctx, "DetachVolume", Access::kWrite, {req->volume_id()}, [&](std::vector<std::string>&) -> ApiResult<void> {
    AZOTE_TRY(v, host_.detach_volume(req->volume_id(), req->force()));
    fill(resp, v);
    return {};
  });
}

grpc::Status Service::DeleteVolume(grpc::ServerContext* ctx, const v1::DeleteVolumeRequest* req, v1::DeleteVolumeResponse*) {
  return call(ctx, "DeleteVolume", Access::kWrite, {req->volume_id()},
              [&](std::vector<std::string>&) -> ApiResult<void> { return host_.delete_volume(req->volume_id()); });
}

grpc::Status Service::DescribeVolumes(grpc::ServerContext* ctx, const v1::DescribeVolumesRequest* req,
                                      v1::DescribeVolumesResponse* resp) {
  return call(ctx, "DescribeVolumes", Access::kRead, ids_of(req->volume_ids()), [&](std::vector<std::string>&) -> ApiResult<void> {
    AZOTE_TRY(vs, host_.describe_volumes(ids_of(req->volume_ids())));
    for (const auto& v : vs) fill(resp->add_volumes(), v);
    return {};
  });
}

grpc::Status Service::ApplyRegionNetwork(grpc::ServerContext* ctx, const v1::RegionNetwork* req,
                                         v1::ApplyRegionNetworkResponse* resp) {
  return call(ctx, "ApplyRegionNetwork", Access::kWrite, {"generation/" + std::to_string(req->generation())},
              [&](std::vector<std::string>&) -> ApiResult<void> {
                // Only azote-region pushes its network: call() admitted its certificate
                // and the lease epoch it presented, or refused the call.
                RegionNetworkRec n;
                n.generation = req->generation();
                n.fabric_host_id = req->fabric_host_id();
                for (const auto& p : req->peers()) {
                  const auto& k = p.key();
                  n.peers.push_back({p.host_id(), p.address(),
                                     k.size() == 32 ? to_hex({reinterpret_cast<const uint8_t*>(k.data()), k.size()}) : "",
                                     p.key_id()});
                }
                for (const auto& m : req->mappings()) n.mappings.push_back({m.vpc_id(), m.ip(), m.host_id()});
                for (const auto& v : req->vpcs()) n.vpcs.push_back({v.vpc_id(), v.cidr_block(), false});
                for (const auto& x : req->subnets())
                  n.subnets.push_back({x.subnet_id(), x.vpc_id(), x.cidr_block(), x.availability_zone(), false});
                std::set<std::string> group_vpc;
                for (const auto& g : req->security_groups()) group_vpc.insert(g.group_id() + "/" + g.vpc_id());
                for (const auto& g : req->security_groups()) {
                  SecurityGroupRec rec{g.group_id(), g.vpc_id(), g.group_name(), g.description(), {}, {}};
                  const auto exists = [&](const std::string& ref) { return group_vpc.count(ref + "/" + g.vpc_id()) != 0; };
                  for (int dir = 0; dir < 2; ++dir) {
                    const auto& perms = dir == 0 ? g.ip_permissions() : g.ip_permissions_egress();
                    if (perms.empty()) continue;
                    auto rules = rules_of(permissions_of(perms), exists);
                    if (!rules)
                      return api_error(K::kInvalid, rules.error().code, "security group " + g.group_id() + ": " + rules.error().sentence);
                    (dir == 0 ? rec.ingress : rec.egress) = std::move(rules).value();
                  }
                  n.groups.push_back(std::move(rec));
                }
                AZOTE_TRY(gen, host_.apply_region_network(std::move(n)));
                resp->set_generation(gen);
                return {};
              });
}

grpc::Status Service::DescribeVpcs(grpc::ServerContext* ctx, const v1::DescribeVpcsRequest* req,
                                   v1::DescribeVpcsResponse* resp) {
  return call(ctx, "DescribeVpcs", Access::kRead, ids_of(req->vpc_ids()), [&](std::vector<std::string>&) -> ApiResult<void> {
    AZOTE_TRY(vs, host_.describe_vpcs(ids_of(req->vpc_ids())));
    for (const auto& v : vs) {
      auto* o = resp->add_vpcs();
      o->set_vpc_id(v.id);
      o->set_cidr_block(v.cidr);
      o->set_state("available");
      o->set_is_default(v.is_default);
    }
    return {};
  });
}

grpc::Status Service::DescribeSubnets(grpc::ServerContext* ctx, const v1::DescribeSubnetsRequest* req,
                                      v1::DescribeSubnetsResponse* resp) {
  return call(ctx, "DescribeSubnets", Access::kRead, ids_of(req->subnet_ids()),
              [&](std::vector<std::string>&) -> ApiResult<void> {
                AZOTE_TRY(ss, host_.describe_subnets(ids_of(req->subnet_ids())));
                for (const auto& s : ss) {
                  auto* o = resp->add_subnets();
                  o->set_subnet_id(s.rec.id);
                  o->set_vpc_id(s.rec.vpc_id);
                  o->set_cidr_block(s.rec.cidr);
                  o->set_availability_zone(s.rec.availability_zone);
                  o->set_available_ip_address_count(s.available);
                  o->set_state("available");
                  o->set_default_for_az(s.rec.is_default);
                }
                return {};
              });
}

grpc::Status Service::CreateSecurityGroup(grpc::ServerContext* ctx, const v1::CreateSecurityGroupRequest* req,
                                          v1::CreateSecurityGroupResponse* resp) {
  return call(ctx, "CreateSecurityGroup", Access::kWrite, {req->group_name()},
              [&](std::vector<std::string>& res) -> ApiResult<void> {
                AZOTE_TRY(g, host_.create_security_group(req->group_name(), req->description(), req->vpc_id()));
                resp->set_group_id(g.id);
                res.push_back(g.id);
                return {};
              });
}

grpc::Status Service::DeleteSecurityGroup(grpc::ServerContext* ctx, const v1::DeleteSecurityGroupRequest* req,
                                          v1::DeleteSecurityGroupResponse*) {
  return call(ctx, "DeleteSecurityGroup", Access::kWrite, {req->group_id()},
              [&](std::vector<std::string>&) -> ApiResult<void> { return host_.delete_security_group(req->group_id()); });
}

grpc::Status Service::rules_call(grpc::ServerContext* ctx, const char* method, bool ingress, bool authorize,
                                 const v1::SecurityGroupRulesRequest* req, v1::SecurityGroupRulesResponse* resp) {
  return call(ctx, method, Access::kWrite, {req->group_id()}, [&](std::vector<std::string>&) -> ApiResult<void> {
    AZOTE_TRY(g, host_.change_rules(req->group_id(), ingress, authorize, permissions_of(req->ip_permissions())));
    fill(resp->mutable_security_group(), g);
    return {};
  });
}

grpc::Status Service::AuthorizeSecurityGroupIngress(grpc::ServerContext* ctx, const v1::SecurityGroupRulesRequest* req,
                                                    v1::SecurityGroupRulesResponse* resp) {
  return rules_call(ctx, "AuthorizeSecurityGroupIngress", true, true, req, resp);
}
grpc::Status Service::AuthorizeSecurityGroupEgress(grpc::ServerContext* ctx, const v1::SecurityGroupRulesRequest* req,
                                                   v1::SecurityGroupRulesResponse* resp) {
  return rules_call(ctx, "AuthorizeSecurityGroupEgress", false, true, req, resp);
}
grpc::Status Service::RevokeSecurityGroupIngress(grpc::ServerContext* ctx, const v1::SecurityGroupRulesRequest* req,
                                                 v1::SecurityGroupRulesResponse* resp) {
  return rules_call(ctx, "RevokeSecurityGroupIngress", true, false, req, resp);
}
grpc::Status Service::RevokeSecurityGroupEgress(grpc::ServerContext* ctx, const v1::SecurityGroupRulesRequest* req,
                                                v1::SecurityGroupRulesResponse* resp) {
  return rules_call(ctx, "RevokeSecurityGroupEgress", false, false, req, resp);
}

grpc::Status Service::DescribeSecurityGroups(grpc::ServerContext* ctx, const v1::DescribeSecurityGroupsRequest* req,
                                             v1::DescribeSecurityGroupsResponse* resp) {
  return call(ctx, "DescribeSecurityGroups", Access::kRead, ids_of(req->group_ids()),
              [&](std::vector<std::string>&) -> ApiResult<void> {
                AZOTE_TRY(gs, host_.describe_security_groups(ids_of(req->group_ids())));
                for (const auto& g : gs) fill(resp->add_security_groups(), g);
                return {};
              });
}

grpc::Status Service::GetMetrics(grpc::ServerContext* ctx, const v1::GetMetricsRequest*, v1::GetMetricsResponse* resp) {
  return call(ctx, "GetMetrics", Access::kRead, {}, [&](std::vector<std::string>&) -> ApiResult<void> {
    resp->set_text(host_.metrics_text() + call_metrics());
    return {};
  });
}

grpc::Status Service::DescribeHostAttestation(grpc::ServerContext* ctx, const v1::DescribeHostAttestationRequest*,
                                              v1::DescribeHostAttestationResponse* resp) {
  // A read: measurements and certificates are public; azote-rot has no operation that
  // returns a key or a secret, whoever asks.
  return call(ctx, "DescribeHostAttestation", Access::kRead, {}, [&](std::vector<std::string>&) -> ApiResult<void> {
    AZOTE_TRY(d, host_.describe_root_of_trust());
    bool development = false;
    for (const auto& l : d.value("layers", control::Json::array())) {
      auto* o = resp->add_layers();
      o->set_index(l.value("index", 0u));
      o->set_name(l.value("name", ""));
      o->set_mode(l.value("mode", ""));
      o->set_measurement(l.value("measurement", ""));
      o->set_public_key_sha256(l.value("public_key_sha256", ""));
      o->set_certificate_pem(l.value("certificate", ""));
      development = development || o->mode() == "development";
    }
    resp->set_mode(development ? "development" : "normal");
    resp->set_certificate_chain_pem(d.value("chain", ""));
    // What the launcher runs and enforces (its describe) and the write guard's state.
    const Host::HostView v = host_.launcher_view();
    const control::Json rel = v.launcher.value("release", control::Json());
    if (rel.is_object()) {
      resp->set_release(rel.value("name", ""));
      resp->set_release_key_sha384(rel.value("key_sha384", ""));
    }
    for (const auto& p : v.launcher.value("processes", control::Json::array())) {
      auto* c = resp->add_components();
      const std::string role = p.value("role", "");
      c->set_name("azote-" + std::string(role == "hv" ? "hv" : role));
      c->set_instance_id(p.value("instance", ""));
      c->set_pid(p.value("pid", 0u));
      c->set_sha384(p.value("binary_sha384", ""));
    }
    auto* g = resp->mutable_write_guard();
    g->set_active(v.guard.value("active", false));
    g->set_mechanism(v.guard.value("mechanism", ""));
    g->set_why(v.guard.value("why", ""));
    for (const auto& path : v.guard.value("protected", control::Json::array())) g->add_protected_paths(path.get<std::string>());
    g->set_denials_total(v.guard.value("denials_total", uint64_t{0}));
    g->set_rehash_mismatches_total(v.guard.value("mismatches_total", uint64_t{0}));
    return {};
  });
}

grpc::Status Service::GetInstanceAttestation(grpc::ServerContext* ctx, const v1::GetInstanceAttestationRequest* req,
                                             v1::GetInstanceAttestationResponse* resp) {
  // A read: the document holds measurements and what the caller gave, nothing of the
  // tenant's data.
  return call(ctx, "GetInstanceAttestation", Access::kRead, {req->instance_id()},
              [&](std::vector<std::string>&) -> ApiResult<void> {
                AZOTE_TRY(a, host_.instance_attestation(req->instance_id(), req->nonce(), req->user_data(),
                                                        req->public_key()));
                resp->set_instance_id(req->instance_id());
                resp->set_document(a.document);
                for (const auto& [i, v] : a.pcrs) (*resp->mutable_pcrs())[i] = v;
                resp->set_mode(a.mode);
                return {};
              });
}

}  // namespace azote::controller
