// The metadata service's private network namespace, made ready in the calling thread's
// current network namespace: a TUN "imds0" holding 169.254.169.254 (MTU 1500, route
// 100.64.0.0/10 through it, IPv6 off, ip_default_ttl 1) and a listening TCP socket on
// 169.254.169.254:80 with IP_TTL 1. Needs CAP_NET_ADMIN there and /dev/net/tun.
//
// Its own target (azote_imds_netns) because the launcher, root, calls it in a jailed
// card's new namespace before dropping the card's privileges, and should link nothing of
// the HTTP side.
#pragma once

#include <string>

#include "base/result.hpp"
#include "base/unique_fd.hpp"
#include "imds/error.hpp"

namespace azote::imds {

struct NamespaceFds {
  UniqueFd tun;
  UniqueFd listen;
};

Result<NamespaceFds, ImdsError> prepare_namespace(const std::string& tun_name = "imds0");

}  // namespace azote::imds
