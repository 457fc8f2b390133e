#include "cli/render.hpp"

#include <google/protobuf/util/json_util.h>
#include <openssl/evp.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace azote::cli {
namespace {

size_t display_width(const std::string& s) {
  size_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

std::string or_dash(const std::string& s) { return s.empty() ? "-" : s; }

// One cell of a text row: never empty (aws prints None), never a tab or a newline.
std::string text_cell(std::string s) {
  if (s.empty()) return "None";
  std::replace_if(s.begin(), s.end(), [](char c) { return c == '\t' || c == '\n' || c == '\r'; }, ' ');
  return s;
}

void text_row(std::string& out, std::initializer_list<std::string> cells) {
  bool first = true;
  for (const auto& c : cells) {
    if (!first) out += '\t';
    out += text_cell(c);
    first = false;
  }
  out += '\n';
}

std::string gib(uint64_t n) { return std::to_string(n) + " GiB"; }

std::string mib(uint64_t n) {
  if (n != 0 && n % 1024 == 0) return gib(n / 1024);
  return std::to_string(n) + " MiB";
}

std::string num_or_dash(uint64_t n) { return n == 0 ? "-" : std::to_string(n); }

std::string reason_of(const v1::StateReason& r) {
  if (r.code().empty()) return r.message();
  if (r.message().empty()) return r.code();
  return r.code() + ": " + r.message();
}

std::string attached_to(const v1::Volume& v) {
  std::string s;
  for (const auto& a : v.attachments()) {
    if (!s.empty()) s += ", ";
    s += a.instance_id();
    std::string detail = a.device();
    if (!a.state().empty() && a.state() != "attached") {
      detail += (detail.empty() ? "" : ", ") + a.state();
    }
    if (!detail.empty()) s += " (" + detail + ")";
  }
  return or_dash(s);
}

void text_tags(std::string& out, const google::protobuf::RepeatedPtrField<v1::Tag>& tags) {
  for (const auto& t : tags) text_row(out, {"TAGS", t.key(), t.value()});
}

void text_instances(std::string& out, const google::protobuf::RepeatedPtrField<v1::Instance>& list) {
  for (const auto& i : list) {
    text_row(out, {"INSTANCES", i.instance_id(), i.state().name(), i.instance_type(), i.image_id(),
                   i.launch_time(), i.state_reason().code(), i.state_reason().message()});
    for (const auto& n : i.network_interfaces()) {
      text_row(out, {"NETWORKINTERFACES", n.network_interface_id(), n.mac_address(), n.private_ip_address(),
                     n.private_dns_name(), n.subnet_id(), n.vpc_id(), n.status()});
      for (const auto& g : n.groups()) text_row(out, {"GROUPS", g.group_id(), g.group_name()});
    }
    text_tags(out, i.tags());
  }
}

std::string ports_of(const v1::IpPermission& p) {
  const int from = p.has_from_port() ? p.from_port() : -1, to = p.has_to_port() ? p.to_port() : -1;
  if (p.ip_protocol() == "tcp" || p.ip_protocol() == "udp") {
    if (from == 0 && to == 65535) return "all";
    return from == to ? std::to_string(from) : std::to_string(from) + "-" + std::to_string(to);
  }
  if (p.ip_protocol() == "icmp") {
    return "type " + (from < 0 ? std::string("any") : std::to_string(from)) + " code " +
           (to < 0 ? std::string("any") : std::to_string(to));
  }
  return "all";
}

std::string peer_of(const v1::IpPermission& p) {
  std::string s;
  for (const auto& c : p.cidr_ips()) s += (s.empty() ? "" : ", ") + c;
  for (const auto& g : p.source_group_ids()) s += (s.empty() ? "" : ", ") + g;
  return or_dash(s);
}

void text_group(std::string& out, const v1::SecurityGroup& g) {
  text_row(out, {"SECURITYGROUPS", g.description(), g.group_id(), g.group_name(), g.vpc_id()});
  for (const auto* list : {&g.ip_permissions(), &g.ip_permissions_egress()}) {
    const char* head = list == &g.ip_permissions() ? "IPPERMISSIONS" : "IPPERMISSIONSEGRESS";
    for (const auto& p : *list) {
      text_row(out, {head, p.has_from_port() ? std::to_string(p.from_port()) : "", p.ip_protocol(),
                     p.has_to_port() ? std::to_string(p.to_port()) : ""});
      for (const auto& c : p.cidr_ips()) text_row(out, {"IPRANGES", c});
      for (const auto& sg : p.source_group_ids()) text_row(out, {"USERIDGROUPPAIRS", sg});
    }
  }
}

void text_volume(std::string& out, const v1::Volume& v) {
  text_row(out, {"VOLUMES", v.volume_id(), v.state(), std::to_string(v.size_gib()), v.volume_type(),
                 std::to_string(v.iops()), std::to_string(v.throughput_mbps()),
                 v.encrypted() ? "true" : "false", v.create_time()});
  for (const auto& a : v.attachments()) {
    text_row(out, {"ATTACHMENTS", a.volume_id(), a.instance_id(), a.device(), a.state()});
  }
  text_tags(out, v.tags());
}

Table volume_row_table(const v1::Volume& v) {
  google::protobuf::RepeatedPtrField<v1::Volume> one;
  *one.Add() = v;
  return volumes_table(one);
}

const char* state_change_prefix(Rpc rpc) {
  switch (rpc) {
    case Rpc::kStopInstances: return "STOPPINGINSTANCES";
    case Rpc::kStartInstances: return "STARTINGINSTANCES";
    case Rpc::kRebootInstances: return "REBOOTINGINSTANCES";
    default: return "TERMINATINGINSTANCES";
  }
}

}  // namespace

std::string render_table(const Table& table) {
  const size_t cols = table.header.size();
  std::vector<size_t> width(cols, 0);
  for (size_t c = 0; c < cols; ++c) width[c] = display_width(table.header[c]);
  for (const auto& row : table.rows) {
    for (size_t c = 0; c < cols && c < row.size(); ++c) width[c] = std::max(width[c], display_width(row[c]));
  }
  std::string out;
  const auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t c = 0; c < cols; ++c) {
      const std::string cell = c < cells.size() ? cells[c] : "";
      l += cell;
      if (c + 1 < cols) l += std::string(width[c] - display_width(cell) + 2, ' ');
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(table.header);
  for (const auto& row : table.rows) line(row);
  return out;
}

std::string to_json(const google::protobuf::Message& msg) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string out;
  const auto status = google::protobuf::util::MessageToJsonString(msg, &out, opts);
  if (!status.ok()) return "{\"error\": \"cannot print the response as JSON\"}\n";
  if (out.empty() || out.back() != '\n') out += '\n';
  return out;
}

Table instances_table(const google::protobuf::RepeatedPtrField<v1::Instance>& instances) {
  // The address column only when some instance has a network interface.
  const bool net = std::any_of(instances.begin(), instances.end(),
                               [](const v1::Instance& i) { return !i.private_ip_address().empty(); });
  Table t{{"INSTANCE ID", "STATE", "TYPE", "IMAGE", "LAUNCH TIME", "REASON"}, {}};
  if (net) t.header.insert(t.header.begin() + 2, "PRIVATE IP");
  for (const auto& i : instances) {
    t.rows.push_back({i.instance_id(), or_dash(i.state().name()), or_dash(i.instance_type()),
                      or_dash(i.image_id()), or_dash(i.launch_time()), or_dash(reason_of(i.state_reason()))});
    if (net) t.rows.back().insert(t.rows.back().begin() + 2, or_dash(i.private_ip_address()));
  }
  return t;
}

Table security_groups_table(const google::protobuf::RepeatedPtrField<v1::SecurityGroup>& groups) {
  Table t{{"GROUP ID", "NAME", "VPC", "DIRECTION", "PROTOCOL", "PORTS", "PEER"}, {}};
  for (const auto& g : groups) {
    const size_t before = t.rows.size();
    for (const auto* list : {&g.ip_permissions(), &g.ip_permissions_egress()}) {
      for (const auto& p : *list) {
        t.rows.push_back({g.group_id(), or_dash(g.group_name()), or_dash(g.vpc_id()),
                          list == &g.ip_permissions() ? "inbound" : "outbound",
                          p.ip_protocol() == "-1" ? "all" : or_dash(p.ip_protocol()), ports_of(p), peer_of(p)});
      }
    }
    if (t.rows.size() == before) {
      t.rows.push_back({g.group_id(), or_dash(g.group_name()), or_dash(g.vpc_id()), "-", "-", "-", "-"});
    }
  }
  return t;
}

Table volumes_table(const google::protobuf::RepeatedPtrField<v1::Volume>& volumes) {
  Table t{{"VOLUME ID", "STATE", "SIZE", "TYPE", "IOPS", "ENCRYPTED", "ATTACHED TO"}, {}};
  for (const auto& v : volumes) {
    t.rows.push_back({v.volume_id(), or_dash(v.state()), gib(v.size_gib()), or_dash(v.volume_type()),
                      num_or_dash(v.iops()), v.encrypted() ? "yes" : "no", attached_to(v)});
  }
  return t;
}

namespace {
// An enclave as nitro-cli prints it (ENCLAVES.md §5), PascalCase keys; describe adds
// State, Flags, Measurements and the image's name and version.
nlohmann::ordered_json nitro_enclave(const v1::Enclave& e, bool describe) {
  nlohmann::ordered_json j;
  j["EnclaveName"] = e.enclave_name();
  j["EnclaveID"] = e.enclave_id();
  j["ProcessID"] = e.process_id();
  j["EnclaveCID"] = e.enclave_cid();
  j["NumberOfCPUs"] = e.number_of_cpus();
  j["CPUIDs"] = nlohmann::ordered_json::array();
  for (uint32_t c : e.cpu_ids()) j["CPUIDs"].push_back(c);
  j["MemoryMiB"] = e.memory_mib();
  if (describe) {
    j["State"] = e.state();
    j["Flags"] = e.flags();
    nlohmann::ordered_json m;
    for (const char* k : {"HashAlgorithm", "PCR0", "PCR1", "PCR2", "PCR8"})
      if (const auto it = e.measurements().find(k); it != e.measurements().end()) m[k] = it->second;
    j["Measurements"] = m;
    j["ImageName"] = e.image_name();
    j["ImageVersion"] = e.image_version();
    j["InstanceID"] = e.instance_id();
  }
  return j;
}
}  // namespace

std::string render_response(Rpc rpc, const google::protobuf::Message& response, OutputFormat format) {
  // The enclave commands print nitro-cli's JSON, whatever --output says.
  switch (rpc) {
    case Rpc::kRunEnclave: return nitro_enclave(static_cast<const v1::Enclave&>(response), false).dump(2) + "\n";
    case Rpc::kDescribeEnclaves: {
      nlohmann::ordered_json a = nlohmann::ordered_json::array();
      for (const auto& e : static_cast<const v1::DescribeEnclavesResponse&>(response).enclaves())
        a.push_back(nitro_enclave(e, true));
      return a.dump(2) + "\n";
    }
    case Rpc::kTerminateEnclave: {
      const auto& t = static_cast<const v1::TerminateEnclaveResponse&>(response);
      nlohmann::ordered_json j;
      j["EnclaveName"] = t.enclave_name();
      j["EnclaveID"] = t.enclave_id();
      j["Terminated"] = t.terminated();
      return j.dump(2) + "\n";
    }
    case Rpc::kGetEnclaveConsole: return static_cast<const v1::GetEnclaveConsoleResponse&>(response).output();
    default: break;
  }
  if (format == OutputFormat::kJson) return to_json(response);
  const bool table = format == OutputFormat::kTable;
  std::string out;
  switch (rpc) {
    case Rpc::kRunInstances: {
      const auto& r = static_cast<const v1::RunInstancesResponse&>(response);
      if (table) return render_table(instances_table(r.instances()));
      text_row(out, {"RESERVATIONS", r.reservation_id()});
      text_instances(out, r.instances());
      return out;
    }
    case Rpc::kDescribeInstances: {
      const auto& r = static_cast<const v1::DescribeInstancesResponse&>(response);
      if (table) return render_table(instances_table(r.instances()));
      text_instances(out, r.instances());
      return out;
    }
    case Rpc::kStopInstances:
    case Rpc::kStartInstances:
    case Rpc::kRebootInstances:
    case Rpc::kTerminateInstances: {
      const auto& r = static_cast<const v1::InstanceStateChangesResponse&>(response);
      Table t{{"INSTANCE ID", "PREVIOUS STATE", "CURRENT STATE"}, {}};
      for (const auto& c : r.instances()) {
        if (table) {
          t.rows.push_back({c.instance_id(), or_dash(c.previous_state().name()),
                            or_dash(c.current_state().name())});
        } else {
          text_row(out, {state_change_prefix(rpc), c.instance_id(), c.previous_state().name(),
                         c.current_state().name()});
        }
      }
      return table ? render_table(t) : out;
    }
    case Rpc::kGetConsoleOutput:
      return static_cast<const v1::GetConsoleOutputResponse&>(response).output();
    case Rpc::kDescribeInstanceTypes: {
      const auto& r = static_cast<const v1::DescribeInstanceTypesResponse&>(response);
      Table t{{"TYPE", "VCPUS", "MEMORY", "NETWORK", "EBS BANDWIDTH", "EBS IOPS"}, {}};
      for (const auto& it : r.instance_types()) {
        if (table) {
          t.rows.push_back({it.instance_type(), std::to_string(it.vcpus()), mib(it.memory_mib()),
                            std::to_string(it.network_mbps()) + " Mbit/s",
                            std::to_string(it.ebs_mbps()) + " Mbit/s", std::to_string(it.ebs_iops())});
        } else {
          text_row(out, {"INSTANCETYPES", it.instance_type(), std::to_string(it.vcpus()),
                         std::to_string(it.memory_mib()), std::to_string(it.network_mbps()),
                         std::to_string(it.ebs_mbps()), std::to_string(it.ebs_iops())});
        }
      }
      return table ? render_table(t) : out;
    }
    case Rpc::kRegisterImage: {
      const auto& r = static_cast<const v1::RegisterImageResponse&>(response);
      if (table) return render_table(Table{{"IMAGE ID"}, {{r.image_id()}}});
      return text_cell(r.image_id()) + "\n";
    }
    case Rpc::kDescribeImages: {
      const auto& r = static_cast<const v1::DescribeImagesResponse&>(response);
      Table t{{"IMAGE ID", "NAME", "STATE", "ROOT SIZE", "TPM", "CREATED", "DESCRIPTION"}, {}};
      for (const auto& im : r.images()) {
        if (table) {
          t.rows.push_back({im.image_id(), or_dash(im.name()), or_dash(im.state()),
                            gib(im.root_volume_size_gib()), or_dash(im.tpm_support()), or_dash(im.creation_date()),
                            or_dash(im.description())});
        } else {
          text_row(out, {"IMAGES", im.image_id(), im.name(), im.state(),
                         std::to_string(im.root_volume_size_gib()), im.tpm_support(), im.creation_date(), im.description()});
        }
      }
      return table ? render_table(t) : out;
    }
    case Rpc::kCreateVolume: {
      const auto& v = static_cast<const v1::Volume&>(response);
      if (table) return render_table(volume_row_table(v));
      text_volume(out, v);
      return out;
    }
    case Rpc::kAttachVolume:
    case Rpc::kDetachVolume: {
      const auto& a = static_cast<const v1::VolumeAttachment&>(response);
      if (table) {
        return render_table(Table{{"VOLUME ID", "INSTANCE ID", "DEVICE", "STATE"},
                                  {{a.volume_id(), or_dash(a.instance_id()), or_dash(a.device()),
                                    or_dash(a.state())}}});
      }
      text_row(out, {"ATTACHMENTS", a.volume_id(), a.instance_id(), a.device(), a.state()});
      return out;
    }
    case Rpc::kDeleteVolume:
      return "";
    case Rpc::kDescribeVolumes: {
      const auto& r = static_cast<const v1::DescribeVolumesResponse&>(response);
      if (table) return render_table(volumes_table(r.volumes()));
      for (const auto& v : r.volumes()) text_volume(out, v);
      return out;
    }
    case Rpc::kGetMetrics:
      return static_cast<const v1::GetMetricsResponse&>(response).text();
    case Rpc::kGetInstanceAttestation: {
      // One line of base64, as a guest prints its document on the console.
      const std::string& d = static_cast<const v1::GetInstanceAttestationResponse&>(response).document();
      std::string b64(4 * ((d.size() + 2) / 3) + 1, '\0');
      const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                                    reinterpret_cast<const unsigned char*>(d.data()), static_cast<int>(d.size()));
      b64.resize(n > 0 ? static_cast<size_t>(n) : 0);
      return b64 + "\n";
    }
    case Rpc::kDescribeHostAttestation: {
      const auto& r = static_cast<const v1::DescribeHostAttestationResponse&>(response);
      Table t{{"LAYER", "NAME", "MODE", "MEASUREMENT (SHA-384)", "KEY (SHA-256)"}, {}};
      for (const auto& l : r.layers()) {
        if (table) {
          t.rows.push_back({std::to_string(l.index()), l.name(), l.mode(), or_dash(l.measurement()), l.public_key_sha256()});
        } else {
          text_row(out, {"LAYERS", std::to_string(l.index()), l.name(), l.mode(), l.measurement(), l.public_key_sha256()});
        }
      }
      if (!table) return out;
      std::string tail = "mode: " + r.mode() + "\n";
      if (!r.release().empty()) tail += "release: " + r.release() + " (key SHA-384 " + r.release_key_sha384() + ")\n";
      const auto& g = r.write_guard();
      tail += g.active() ? "write guard: " + g.mechanism() + ", " + std::to_string(g.protected_paths_size()) +
                               " protected path(s), " + std::to_string(g.denials_total()) + " refusal(s)\n"
                         : "write guard: off" + (g.why().empty() ? std::string() : " (" + g.why() + ")") + "\n";
      return render_table(t) + tail;
    }
    case Rpc::kDescribeVpcs: {
      const auto& r = static_cast<const v1::DescribeVpcsResponse&>(response);
      Table t{{"VPC ID", "CIDR", "STATE", "DEFAULT"}, {}};
      for (const auto& v : r.vpcs()) {
        if (table) {
          t.rows.push_back({v.vpc_id(), or_dash(v.cidr_block()), or_dash(v.state()), v.is_default() ? "yes" : "no"});
        } else {
          text_row(out, {"VPCS", v.cidr_block(), v.is_default() ? "True" : "False", v.state(), v.vpc_id()});
        }
      }
      return table ? render_table(t) : out;
    }
    case Rpc::kDescribeSubnets: {
      const auto& r = static_cast<const v1::DescribeSubnetsResponse&>(response);
      Table t{{"SUBNET ID", "VPC ID", "CIDR", "ZONE", "FREE ADDRESSES", "DEFAULT"}, {}};
      for (const auto& sn : r.subnets()) {
        if (table) {
          t.rows.push_back({sn.subnet_id(), or_dash(sn.vpc_id()), or_dash(sn.cidr_block()),
                            or_dash(sn.availability_zone()), std::to_string(sn.available_ip_address_count()),
                            sn.default_for_az() ? "yes" : "no"});
        } else {
          text_row(out, {"SUBNETS", sn.availability_zone(), std::to_string(sn.available_ip_address_count()),
                         sn.cidr_block(), sn.default_for_az() ? "True" : "False", sn.state(), sn.subnet_id(),
                         sn.vpc_id()});
        }
      }
      return table ? render_table(t) : out;
    }
    case Rpc::kCreateSecurityGroup: {
      const auto& r = static_cast<const v1::CreateSecurityGroupResponse&>(response);
      if (table) return render_table(Table{{"GROUP ID"}, {{r.group_id()}}});
      return text_cell(r.group_id()) + "\n";
    }
    case Rpc::kDeleteSecurityGroup:
      return "";
    case Rpc::kAuthorizeSecurityGroupIngress:
    case Rpc::kAuthorizeSecurityGroupEgress:
    case Rpc::kRevokeSecurityGroupIngress:
    case Rpc::kRevokeSecurityGroupEgress: {
      const auto& r = static_cast<const v1::SecurityGroupRulesResponse&>(response);
      google::protobuf::RepeatedPtrField<v1::SecurityGroup> one;
      *one.Add() = r.security_group();
      if (table) return render_table(security_groups_table(one));
      text_group(out, r.security_group());
      return out;
    }
    case Rpc::kDescribeSecurityGroups: {
      const auto& r = static_cast<const v1::DescribeSecurityGroupsResponse&>(response);
      if (table) return render_table(security_groups_table(r.security_groups()));
      for (const auto& g : r.security_groups()) text_group(out, g);
      return out;
    }
    case Rpc::kRunEnclave:
    case Rpc::kDescribeEnclaves:
    case Rpc::kTerminateEnclave:
    case Rpc::kGetEnclaveConsole:
    case Rpc::kNone:
      break;
  }
  return out;
}

}  // namespace azote::cli
