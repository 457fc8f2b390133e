#include "cards/vsock/card.hpp"

#include <memory>
#include <vector>

#include "base/log.hpp"
#include "vhost_user/backend.hpp"

namespace azote::card_vsock {

int run_card(const CardOptions& o) {
  std::vector<uint32_t> cids;
  for (const DeviceSpec& d : o.devices) cids.push_back(d.cid);
  auto sw = Switch::start(cids);
  if (!sw.ok()) {
    LOG_ERROR("azote-card-vsock: %s", sw.error().message().c_str());
    return runtime::kExitOsErr;
  }
  // Destroyed in reverse order: the backends (whose sessions stop the queues and take
  // the devices down through the switch) before the devices, both before the switch.
  std::vector<std::unique_ptr<VsockDevice>> devices;
  std::vector<std::unique_ptr<vhost_user::Backend>> backends;
  for (size_t i = 0; i < o.devices.size(); ++i) {
    devices.push_back(std::make_unique<VsockDevice>(**sw, i, o.devices[i].cid));
    auto b = vhost_user::Backend::listen(o.devices[i].socket, *devices.back());
    if (!b.ok()) {
      LOG_ERROR("azote-card-vsock: --device cid=%u,socket=%s: %s", o.devices[i].cid, o.devices[i].socket.c_str(),
                b.error().message().c_str());
      return runtime::kExitOsErr;
    }
    backends.push_back(std::move(b).value());
  }
  auto loop = runtime::Loop::create("azote-card-vsock");
  if (!loop.ok()) {
    LOG_ERROR("azote-card-vsock: %s", loop.error().message().c_str());
    return runtime::kExitOsErr;
  }
  for (const auto& backend : backends) {
    vhost_user::Backend* b = backend.get();
    if (auto w = (*loop)->watch(b->poll_fd(), [b] { (void)b->run_once(std::chrono::milliseconds(0)); }); !w.ok()) {
      LOG_ERROR("azote-card-vsock: %s", w.error().message().c_str());
      return runtime::kExitOsErr;
    }
  }
  for (const DeviceSpec& d : o.devices)
    LOG_INFO("azote-card-vsock: cid %u (%s) on %s", d.cid, d.cid == kCidParent ? "parent" : "enclave",
             d.socket.c_str());
  const int status = (*loop)->run();
  backends.clear();
  (*sw)->log_stats();
  return status;
}

}  // namespace azote::card_vsock
