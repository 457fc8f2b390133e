#include "imds/handler.hpp"

#include <nlohmann/json.hpp>

#include <optional>

namespace azote::imds {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

struct Found {
  const std::string* value = nullptr;
  int count = 0;
};

Found find_header(const Request& req, std::string_view name) {
  Found f;
  for (const auto& [k, v] : req.headers) {
    if (iequals(k, name)) {
      if (f.count == 0) f.value = &v;
      ++f.count;
    }
  }
  return f;
}

const char* reason(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
  }
  return "Error";
}

// EC2 answers errors with a small XHTML page naming the status.
Response error(int status, Refusal why) {
  Response r;
  r.status = status;
  r.refusal = why;
  r.content_type = "text/html";
  const std::string title = std::to_string(status) + " - " + reason(status);
  r.body = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n"
           "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n"
           "\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n"
           "<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n"
           " <head>\n  <title>" + title + "</title>\n </head>\n"
           " <body>\n  <h1>" + title + "</h1>\n </body>\n</html>\n";
  return r;
}

Response method_not_allowed(const char* allow) {
  Response r = error(405, Refusal::kBadMethod);
  r.headers.emplace_back("Allow", allow);
  return r;
}

// "1".."21600", decimal digits only (no sign, no spaces).
std::optional<uint32_t> parse_ttl(std::string_view s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v < kMinTokenTtl || v > kMaxTokenTtl) return std::nullopt;
  return static_cast<uint32_t>(v);
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out.push_back('\n');
    out += s;
  }
  return out;
}

std::string identity_document(const CheckedMetadata& m) {
  const InstanceMetadata& md = m.md;
  nlohmann::ordered_json doc;
  doc["accountId"] = md.account_id;
  doc["architecture"] = "x86_64";
  doc["availabilityZone"] = md.availability_zone;
  doc["billingProducts"] = nullptr;
  doc["devpayProductCodes"] = nullptr;
  doc["marketplaceProductCodes"] = nullptr;
  doc["imageId"] = md.ami_id;
  doc["instanceId"] = md.instance_id;
  doc["instanceType"] = md.instance_type;
  doc["kernelId"] = nullptr;
  if (md.pending_time.empty()) {
    doc["pendingTime"] = nullptr;
  } else {
    doc["pendingTime"] = md.pending_time;
  }
  doc["privateIp"] = md.local_ipv4;
  doc["ramdiskId"] = nullptr;
  doc["region"] = md.region;
  doc["version"] = "2017-09-30";
  // Metadata text is checked to hold no control characters; invalid UTF-8 is replaced
  // rather than thrown about.
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct Content {
  std::string content_type;
  std::string body;
};

Content text(std::string body) { return {"text/plain", std::move(body)}; }

std::optional<Content> resolve(std::string_view path, const CheckedMetadata& m) {
  const InstanceMetadata& md = m.md;
  const bool slash = path.size() > 1 && path.back() == '/';
  const std::string_view dir = slash ? path.substr(0, path.size() - 1) : path;
  const std::string mac_dir = "/latest/meta-data/network/interfaces/macs/" + m.mac;

  // Directories: listed with or without the trailing slash; sub-directories end in '/'.
  if (path == "/") return text("latest");
  if (dir == "/latest") {
    return text(md.user_data.empty() ? "dynamic\nmeta-data" : "dynamic\nmeta-data\nuser-data");
  }
  if (dir == "/latest/meta-data") {
    return text(join({"ami-id", "hostname", "instance-id", "instance-type", "local-hostname", "local-ipv4", "mac",
                      "network/", "placement/", "security-groups"}));
  }
  if (dir == "/latest/meta-data/placement") return text("availability-zone\nregion");
  if (dir == "/latest/meta-data/network") return text("interfaces/");
  if (dir == "/latest/meta-data/network/interfaces") return text("macs/");
  if (dir == "/latest/meta-data/network/interfaces/macs") return text(m.mac + "/");
  if (dir == mac_dir) {
    return text(join({"device-number", "local-hostname", "local-ipv4s", "mac", "owner-id", "security-groups"}));
  }
  if (dir == "/latest/dynamic") return text("instance-identity/");
  if (dir == "/latest/dynamic/instance-identity") return text("document");
  if (slash) return std::nullopt;  // a leaf with a trailing slash

  // Leaves.
  if (path == "/latest/user-data") {
    if (md.user_data.empty()) return std::nullopt;
    return Content{"application/octet-stream", std::string(md.user_data.begin(), md.user_data.end())};
  }
  if (path == "/latest/dynamic/instance-identity/document") return text(identity_document(m));
  const std::string_view kMd = "/latest/meta-data/";
  if (path.starts_with(mac_dir + "/")) {
    const std::string_view leaf = path.substr(mac_dir.size() + 1);
    if (leaf == "device-number") return text("0");
    if (leaf == "local-hostname") return text(md.local_hostname);
    if (leaf == "local-ipv4s") return text(md.local_ipv4);
    if (leaf == "mac") return text(m.mac);
    if (leaf == "owner-id") return text(md.account_id);
    if (leaf == "security-groups") return text(join(md.security_groups));
    return std::nullopt;
  }
  if (!path.starts_with(kMd)) return std::nullopt;
  const std::string_view leaf = path.substr(kMd.size());
  if (leaf == "ami-id") return text(md.ami_id);
  if (leaf == "hostname") return text(md.hostname);
  if (leaf == "instance-id") return text(md.instance_id);
  if (leaf == "instance-type") return text(md.instance_type);
  if (leaf == "local-hostname") return text(md.local_hostname);
  if (leaf == "local-ipv4") return text(md.local_ipv4);
  if (leaf == "mac") return text(m.mac);
  if (leaf == "placement/availability-zone") return text(md.availability_zone);
  if (leaf == "placement/region") return text(md.region);
  if (leaf == "security-groups") return text(join(md.security_groups));
  return std::nullopt;
}

Response put_token(const Request& req, const SlotView& slot, const TokenService& tokens, TimePoint now) {
  if (find_header(req, "X-Forwarded-For").count > 0) return error(403, Refusal::kForwarded);
  const Found ttl_header = find_header(req, kTokenTtlHeader);
  if (ttl_header.count == 0) return error(400, Refusal::kMissingTtl);
  if (ttl_header.count > 1) return error(400, Refusal::kDuplicateHeader);
  const auto ttl = parse_ttl(*ttl_header.value);
  if (!ttl) return error(400, Refusal::kBadTtl);
  Response r;
  r.status = 200;
  r.content_type = "text/plain";
  r.body = tokens.issue(slot.slot, slot.incarnation, now, *ttl);
  r.headers.emplace_back("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", std::to_string(*ttl));
  r.token_issued = true;
  return r;
}

Response get(const Request& req, const SlotView& slot, const TokenService& tokens, TimePoint now) {
  const Found token = find_header(req, kTokenHeader);
  if (token.count > 1) return error(400, Refusal::kDuplicateHeader);
  std::optional<uint32_t> remaining;
  if (token.count == 1) {
    const TokenVerdict v = tokens.verify(*token.value, slot.slot, slot.incarnation, now);
    switch (v.check) {
      case TokenCheck::kValid: remaining = v.remaining_seconds; break;
      case TokenCheck::kMalformed:
      case TokenCheck::kBadMac: return error(401, Refusal::kBadToken);
      case TokenCheck::kOtherSlot: return error(401, Refusal::kOtherSlotToken);
      case TokenCheck::kRevoked: return error(401, Refusal::kRevokedToken);
      case TokenCheck::kExpired: return error(401, Refusal::kExpiredToken);
    }
  } else if (slot.meta.md.http_tokens_required) {
    return error(401, Refusal::kNoToken);
  }
  auto content = resolve(req.path, slot.meta);
  if (!content) return error(404, Refusal::kNone);
  Response r;
  r.status = 200;
  r.content_type = std::move(content->content_type);
  r.body = std::move(content->body);
  if (remaining) r.headers.emplace_back("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", std::to_string(*remaining));
  return r;
}

}  // namespace

const char* to_string(Refusal r) {
  switch (r) {
    case Refusal::kNone: return "none";
    case Refusal::kMissingTtl: return "missing_ttl";
    case Refusal::kBadTtl: return "bad_ttl";
    case Refusal::kForwarded: return "forwarded";
    case Refusal::kDuplicateHeader: return "duplicate_header";
    case Refusal::kNoToken: return "no_token";
    case Refusal::kBadToken: return "bad_token";
    case Refusal::kOtherSlotToken: return "other_slot_token";
    case Refusal::kRevokedToken: return "revoked_token";
    case Refusal::kExpiredToken: return "expired_token";
    case Refusal::kBadMethod: return "bad_method";
    case Refusal::kBodyTooLarge: return "body_too_large";
    case Refusal::kUnknownClient: return "unknown_client";
  }
  return "?";
}

Response handle(const Request& req, const SlotView& slot, const TokenService& tokens, TimePoint now) {
  if (req.method == "PUT") {
    if (req.path != kTokenPath) return method_not_allowed("GET");
    return put_token(req, slot, tokens, now);
  }
  if (req.method == "GET") {
    if (req.path == kTokenPath) return method_not_allowed("PUT");
    return get(req, slot, tokens, now);
  }
  return method_not_allowed("GET, PUT");
}

}  // namespace azote::imds
