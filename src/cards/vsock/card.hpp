// azote-card-vsock: the vsock fabric of one parent instance and its enclaves
// (ENCLAVES.md §6). One virtio-vsock device (virtio 19) per VM over vhost-user; stream
// packets switched between them under the Nitro rules: the parent (CID 3) reaches its
// enclaves, each enclave (CID >= 4) reaches its parent only. See DESIGN.md.
//
// Threads: main runs every device's vhost-user control socket (runtime::Loop) and the
// signals; the "switch" thread (switch.hpp) owns every rx and tx ring.
#pragma once

#include "cards/vsock/device.hpp"
#include "cards/vsock/options.hpp"
#include "cards/vsock/switch.hpp"

namespace azote::card_vsock {

// Starts the switch, listens on every device's socket, serves until SIGTERM/SIGINT,
// then logs the counters.
int run_card(const CardOptions& o);

}  // namespace azote::card_vsock
