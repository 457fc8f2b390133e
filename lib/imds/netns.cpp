#include "imds/netns.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "base/log.hpp"
#include "imds/nat.hpp"

namespace azote::imds {
namespace {

sockaddr_in inet_sockaddr(net::Ipv4Address a, uint16_t port = 0) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(a.value());
  return sin;
}

void store_sockaddr(sockaddr* dst, net::Ipv4Address a) {
  const sockaddr_in sin = inet_sockaddr(a);
  std::memcpy(dst, &sin, sizeof sin);
}

// Best effort: a sysctl of the calling thread's (private) namespace.
void write_sysctl(const char* path, const char* value) {
  UniqueFd fd(::open(path, O_WRONLY | O_CLOEXEC));
  if (!fd || ::write(fd.get(), value, std::strlen(value)) < 0) {
    LOG_DEBUG("imds: %s: %s (ignored)", path, std::strerror(errno));
  }
}

Result<void, ImdsError> set_up(int ctl, const char* name) {
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (::ioctl(ctl, SIOCGIFFLAGS, &ifr) != 0) return errno_error(ImdsErrc::kTun, std::string("SIOCGIFFLAGS ") + name);
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(ctl, SIOCSIFFLAGS, &ifr) != 0) return errno_error(ImdsErrc::kTun, std::string("SIOCSIFFLAGS ") + name);
  return {};
}

}  // namespace

Result<NamespaceFds, ImdsError> prepare_namespace(const std::string& tun_name) {
  // Nothing but IPv4 on the TUN; anything the kernel sends without a socket gets TTL 1 too.
  write_sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
  write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
  write_sysctl("/proc/sys/net/ipv4/ip_default_ttl", "1");

  UniqueFd ctl(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!ctl) return errno_error(ImdsErrc::kNamespace, "socket(AF_INET) in the namespace");
  AZOTE_TRYV(set_up(ctl.get(), "lo"));

  NamespaceFds fds;
  fds.tun.reset(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fds.tun) return errno_error(ImdsErrc::kTun, "open /dev/net/tun");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, tun_name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (::ioctl(fds.tun.get(), TUNSETIFF, &ifr) != 0) return errno_error(ImdsErrc::kTun, "TUNSETIFF " + tun_name);
  const std::string dev(ifr.ifr_name);

  ifr = ifreq{};
  std::strncpy(ifr.ifr_name, dev.c_str(), IFNAMSIZ - 1);
  ifr.ifr_mtu = static_cast<int>(kMtu);
  if (::ioctl(ctl.get(), SIOCSIFMTU, &ifr) != 0) return errno_error(ImdsErrc::kTun, "SIOCSIFMTU " + dev);
  store_sockaddr(&ifr.ifr_addr, kImdsAddress);
  if (::ioctl(ctl.get(), SIOCSIFADDR, &ifr) != 0) return errno_error(ImdsErrc::kTun, "SIOCSIFADDR " + dev);
  store_sockaddr(&ifr.ifr_netmask, net::Ipv4Address::broadcast());  // /32
  if (::ioctl(ctl.get(), SIOCSIFNETMASK, &ifr) != 0) return errno_error(ImdsErrc::kTun, "SIOCSIFNETMASK " + dev);
  AZOTE_TRYV(set_up(ctl.get(), dev.c_str()));

  rtentry rt{};
  store_sockaddr(&rt.rt_dst, kAliasBase);
  store_sockaddr(&rt.rt_genmask, net::Ipv4Address::from_u32(~uint32_t{0} << (32 - kAliasPrefixLen)));
  rt.rt_flags = RTF_UP;
  std::vector<char> dev_name(dev.begin(), dev.end());
  dev_name.push_back('\0');
  rt.rt_dev = dev_name.data();
  if (::ioctl(ctl.get(), SIOCADDRT, &rt) != 0) return errno_error(ImdsErrc::kRoute, "SIOCADDRT 100.64.0.0/10 dev " + dev);

  fds.listen.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fds.listen) return errno_error(ImdsErrc::kSocket, "socket(SOCK_STREAM)");
  const int one = 1;
  if (::setsockopt(fds.listen.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    return errno_error(ImdsErrc::kSocket, "SO_REUSEADDR");
  }
  // The hop limit of IMDSv2: replies die at the first router (containers behind a
  // bridge on the instance do not get them). Accepted sockets inherit it.
  const int ttl = 1;
  if (::setsockopt(fds.listen.get(), IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) != 0) {
    return errno_error(ImdsErrc::kSocket, "IP_TTL 1");
  }
  const sockaddr_in sin = inet_sockaddr(kImdsAddress, kImdsPort);
  sockaddr sa{};
  std::memcpy(&sa, &sin, sizeof sin);
  if (::bind(fds.listen.get(), &sa, sizeof sin) != 0) return errno_error(ImdsErrc::kSocket, "bind 169.254.169.254:80");
  if (::listen(fds.listen.get(), 128) != 0) return errno_error(ImdsErrc::kSocket, "listen");
  return fds;
}


}  // namespace azote::imds
