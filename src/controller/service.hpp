// The Nitro API over gRPC: every call is authenticated (the client certificate, checked
// again per call so a revocation applies at once), authorized by the role in that
// certificate, carried out by the Host, and written to the audit log — accepted or
// denied — before the answer leaves.
//
// Roles: control-plane may do everything; operator may only read (describe, console
// output, metrics); any other role is denied. There is no method that opens a shell or
// reads guest memory.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "api/azote.grpc.pb.h"
#include "audit/log.hpp"
#include "controller/host.hpp"
#include "controller/region_fence.hpp"
#include "controller/refusals.hpp"
#include "pki/pki.hpp"

namespace azote::controller {

// kRead: the host's own facts (descriptions, metrics), for operators too. kTenant: what
// a tenant's guest produced (its console): like a write, control-plane only, since an
// operator must not read a tenant's data. kWrite: changes.
enum class Access { kRead, kTenant, kWrite };

// The name of the control-plane certificate a host's operator issues for azote-region
// (`azote admin issue-cert --role control-plane --name region`): the only principal that
// may present region lease epochs and push the region's network (ApplyRegionNetwork).
inline constexpr std::string_view kRegionPrincipal = "region";

class Service final : public azote::v1::Ec2::Service {
 public:
  Service(Host& host, const pki::HostPki& pki, audit::AuditLog& audit) : host_(host), pki_(pki), audit_(audit) {}

  // Writes refused connections (the Gate's and the TLS verifier's, aggregated by the
  // RefusalAggregator) as "tls.handshake" records, outcome "denied", the reason as the
  // error and {"count", "peer", "first", "last"} as the detail.
  void audit_refusal(const Refusal& r);
  // An event of the host's own (not an API call): principal "controller", outcome
  // "failed", e.g. "process.seccomp".
  void audit_event(const std::string& method, const std::vector<std::string>& resources, const std::string& error);
  // "method outcome count" lines for the metrics text.
  std::string call_metrics();

  grpc::Status RunInstances(grpc::ServerContext*, const v1::RunInstancesRequest*, v1::RunInstancesResponse*) override;
  grpc::Status DescribeInstances(grpc::ServerContext*, const v1::DescribeInstancesRequest*,
                                 v1::DescribeInstancesResponse*) override;
  grpc::Status StopInstances(grpc::ServerContext*, const v1::InstanceIdsRequest*,
                             v1::InstanceStateChangesResponse*) override;
  grpc::Status StartInstances(grpc::ServerContext*, const v1::InstanceIdsRequest*,
                              v1::InstanceStateChangesResponse*) override;
  grpc::Status RebootInstances(grpc::ServerContext*, const v1::InstanceIdsRequest*,
                               v1::InstanceStateChangesResponse*) override;
  grpc::Status TerminateInstances(grpc::ServerContext*, const v1::InstanceIdsRequest*,
                                  v1::InstanceStateChangesResponse*) override;
  grpc::Status GetConsoleOutput(grpc::ServerContext*, const v1::GetConsoleOutputRequest*,
                                v1::GetConsoleOutputResponse*) override;
  grpc::Status RunEnclave(grpc::ServerContext*, const v1::RunEnclaveRequest*, v1::Enclave*) override;
  grpc::Status DescribeEnclaves(grpc::ServerContext*, const v1::DescribeEnclavesRequest*,
                                v1::DescribeEnclavesResponse*) override;
  grpc::Status TerminateEnclave(grpc::ServerContext*, const v1::TerminateEnclaveRequest*,
                                v1::TerminateEnclaveResponse*) override;
  grpc::Status GetEnclaveConsole(grpc::ServerContext*, const v1::GetEnclaveConsoleRequest*,
                                 v1::GetEnclaveConsoleResponse*) override;
  grpc::Status DescribeInstanceTypes(grpc::ServerContext*, const v1::DescribeInstanceTypesRequest*,
                                     v1::DescribeInstanceTypesResponse*) override;
  grpc::Status RegisterImage(grpc::ServerContext*, const v1::RegisterImageRequest*, v1::RegisterImageResponse*) override;
  grpc::Status DescribeImages(grpc::ServerContext*, const v1::DescribeImagesRequest*, v1::DescribeImagesResponse*) override;
  grpc::Status CreateVolume(grpc::ServerContext*, const v1::CreateVolumeRequest*, v1::Volume*) override;
  grpc::Status AttachVolume(grpc::ServerContext*, const v1::AttachVolumeRequest*, v1::VolumeAttachment*) override;
  grpc::Status DetachVolume(grpc::ServerContext*, const v1::DetachVolumeRequest*, v1::VolumeAttachment*) override;
  grpc::Status DeleteVolume(grpc::ServerContext*, const v1::DeleteVolumeRequest*, v1::DeleteVolumeResponse*) override;
  grpc::Status DescribeVolumes(grpc::ServerContext*, const v1::DescribeVolumesRequest*,
                               v1::DescribeVolumesResponse*) override;
  grpc::Status GetMetrics(grpc::ServerContext*, const v1::GetMetricsRequest*, v1::GetMetricsResponse*) override;
  grpc::Status DescribeHostAttestation(grpc::ServerContext*, const v1::DescribeHostAttestationRequest*,
                                      v1::DescribeHostAttestationResponse*) override;
  grpc::Status GetInstanceAttestation(grpc::ServerContext*, const v1::GetInstanceAttestationRequest*,
                                     v1::GetInstanceAttestationResponse*) override;
  grpc::Status DescribeVpcs(grpc::ServerContext*, const v1::DescribeVpcsRequest*, v1::DescribeVpcsResponse*) override;
  grpc::Status DescribeSubnets(grpc::ServerContext*, const v1::DescribeSubnetsRequest*, v1::DescribeSubnetsResponse*) override;
  grpc::Status CreateSecurityGroup(grpc::ServerContext*, const v1::CreateSecurityGroupRequest*,
                                   v1::CreateSecurityGroupResponse*) override;
  grpc::Status DeleteSecurityGroup(grpc::ServerContext*, const v1::DeleteSecurityGroupRequest*,
                                   v1::DeleteSecurityGroupResponse*) override;
  grpc::Status AuthorizeSecurityGroupIngress(grpc::ServerContext*, const v1::SecurityGroupRulesRequest*,
                                             v1::SecurityGroupRulesResponse*) override;
  grpc::Status AuthorizeSecurityGroupEgress(grpc::ServerContext*, const v1::SecurityGroupRulesRequest*,
                                            v1::SecurityGroupRulesResponse*) override;
  grpc::Status RevokeSecurityGroupIngress(grpc::ServerContext*, const v1::SecurityGroupRulesRequest*,
                                          v1::SecurityGroupRulesResponse*) override;
  grpc::Status RevokeSecurityGroupEgress(grpc::ServerContext*, const v1::SecurityGroupRulesRequest*,
                                         v1::SecurityGroupRulesResponse*) override;
  grpc::Status DescribeSecurityGroups(grpc::ServerContext*, const v1::DescribeSecurityGroupsRequest*,
                                      v1::DescribeSecurityGroupsResponse*) override;
  grpc::Status ApplyRegionNetwork(grpc::ServerContext*, const v1::RegionNetwork*, v1::ApplyRegionNetworkResponse*) override;

 private:
  // Authenticates and authorizes, runs `body` (which fills the response and the
  // resource ids), audits, and turns an ApiError into a gRPC status.
  template <class Body>
  grpc::Status call(grpc::ServerContext* ctx, const char* method, Access access, std::vector<std::string> resources,
                    Body&& body);
  grpc::Status rules_call(grpc::ServerContext* ctx, const char* method, bool ingress, bool authorize,
                          const v1::SecurityGroupRulesRequest* req, v1::SecurityGroupRulesResponse* resp);
  grpc::Status finish(grpc::ServerContext* ctx, const std::string& principal, const char* method,
                      const std::vector<std::string>& resources, const std::optional<ApiError>& err);

  Host& host_;
  const pki::HostPki& pki_;
  audit::AuditLog& audit_;
  RegionFence region_fence_;  // calls from azote-region carry its lease's epoch
  std::mutex stats_mu_;
  std::map<std::pair<std::string, std::string>, uint64_t> calls_;  // (method, outcome)
};

}  // namespace azote::controller
