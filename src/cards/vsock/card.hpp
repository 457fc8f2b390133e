// azote-card-vsock: the vsock fabric of one parent instance and its enclaves
// (ENCLAVES.md §6). One virtio-vsock device (virtio 19) per VM over vhost-user; stream
// packets switched between them under the Nitro rules: the parent (CID 3) reaches its
// enclaves, each enclave (CID >= 4) reaches its parent only. See DESIGN.md.
//
// Threads: main runs every device's vhost-user control socket and the card's control
// socket (runtime::Loop) and the signals; the "switch" thread (switch.hpp) owns every rx
// and tx ring.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "cards/vsock/device.hpp"
#include "cards/vsock/options.hpp"
#include "cards/vsock/switch.hpp"
#include "control/control.hpp"
#include "runtime/runtime.hpp"
#include "vhost_user/backend.hpp"

namespace azote::card_vsock {

// The mode of an enclave's socket made through add-device: its hypervisor runs under
// another uid than the card; the socket's directory (0711, the card's, bound into that
// enclave's jail and the card's only) is what limits who reaches it (DESIGN.md).
inline constexpr mode_t kAddedSocketMode = 0666;
// The parent's socket, and any given with --device: the card's uid (or root) only.
inline constexpr mode_t kOwnSocketMode = 0600;

class Card {
 public:
  // Starts the switch, listens on every --device socket and on --control (if given).
  static CardResult<std::unique_ptr<Card>> create(const CardOptions& o, Limits limits = {});
  ~Card();
  Card(const Card&) = delete;
  Card& operator=(const Card&) = delete;

  // Serves until SIGTERM/SIGINT or request_stop(), then closes every device (their
  // sockets removed) and logs the counters.
  int run();
  void request_stop() { loop_->request_stop(); }

  // One control request, on the loop thread (public for tests):
  //   {"op":"add-device","cid":N,"socket":"/abs/path"} -> {"ok":true} once it listens
  //   {"op":"remove-device","cid":N}                     -> {"ok":true} once it is gone
  //   {"op":"add-host-port","port":N,"socket":"/abs/path"} -> {"ok":true} (the host bridge)
  //   {"op":"remove-host-port","port":N}                    -> {"ok":true}
  //   {"op":"describe"}  -> {"ok":true,"devices":[...],"enclaves":N,"drops":{...},"host_ports":[...],...}
  //   {"op":"ping"}      -> {"ok":true}
  // Anything else, or a bad field, is refused with a sentence naming it.
  control::Json handle_control(const control::Json& request);

  Switch& fabric() { return *sw_; }

 private:
  struct Served {
    uint32_t cid = 0;
    std::string socket;
    size_t port = 0;
    mode_t mode = kOwnSocketMode;
    // Destroyed backend first (its session stops the queues and takes the device down).
    std::unique_ptr<VsockDevice> device;
    std::unique_ptr<vhost_user::Backend> backend;
  };
  Card() = default;
  // A device of `cid` in switch slot `port`, listening on `socket` with `mode`, watched by
  // the loop. On failure nothing of it is left (the slot is the caller's to free).
  CardResult<void> serve(uint32_t cid, const std::string& socket, size_t port, mode_t mode);
  control::Json add_device(const control::Json& r);
  control::Json remove_device(const control::Json& r);
  control::Json add_host_port(const control::Json& r);
  control::Json remove_host_port(const control::Json& r);
  control::Json describe() const;
  std::string cids(bool enclaves_only = false) const;  // "3, 5, 9"
  void close_devices();

  std::unique_ptr<Switch> sw_;  // declared first: destroyed last
  std::unique_ptr<runtime::Loop> loop_;
  std::unique_ptr<control::Server> control_;
  std::string control_path_;
  std::vector<std::unique_ptr<Served>> served_;
};

// create() then run(): the process's exit status.
int run_card(const CardOptions& o);

}  // namespace azote::card_vsock
