// The metadata service's one error type (lib/base style): what failed while starting the
// service or changing its table. Packets and requests are not errors: they are dropped or
// answered, and counted (see nat.hpp, handler.hpp, Service::counters()).
#pragma once

#include <cstddef>

#include "base/error.hpp"

namespace azote::imds {

enum class ImdsErrc {
  kBadOptions = 1,  // an Options field out of range
  kNamespace,       // unshare(CLONE_NEWNET) or a step inside the private namespace
  kTun,             // /dev/net/tun, TUNSETIFF, the interface's address, MTU or flags
  kRoute,           // the route for the alias range
  kSocket,          // the listening socket (socket, IP_TTL, bind, listen)
  kHttp,            // libmicrohttpd refused to start
  kThread,          // a thread or eventfd could not be created
  kCrypto,          // RAND_bytes failed (no entropy for the token key)
  kBadMetadata,     // InstanceMetadata that cannot be served (bad address/MAC, user data too large)
  kFull,            // every slot is taken (or still in quarantine)
  kNoSlot,          // update/remove of a slot that is not in use
};
inline constexpr size_t kImdsErrcCount = static_cast<size_t>(ImdsErrc::kNoSlot) + 1;
using ImdsError = Error<ImdsErrc>;
const char* to_string(ImdsErrc c);

}  // namespace azote::imds
