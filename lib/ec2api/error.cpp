#include "ec2api/error.hpp"

namespace azote::ec2api {

namespace {

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

}  // namespace

int http_status(std::string_view code) {
  if (code == "AuthFailure" || code == "UnauthorizedOperation" || code == "OptInRequired" || code == "Blocked" ||
      code == "SignatureDoesNotMatch" || code == "InvalidClientTokenId" || code == "MissingAuthenticationToken")
    return 403;
  if (code == "DryRunOperation") return 412;
  if (code == "RequestLimitExceeded" || code == "Unavailable" || code == "ServiceUnavailable") return 503;
  if (code == "InternalError" || code == "InternalFailure") return 500;
  if (starts_with(code, "Insufficient") && ends_with(code, "Capacity")) return 500;
  return 400;
}

int Ec2Error::http_status() const { return ec2api::http_status(code); }

}  // namespace azote::ec2api
