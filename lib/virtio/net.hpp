// The virtio-net ABI (virtio 1.2 §5.1) as azote speaks it: the device side in
// azote-card-net, the driver side in azote-tap-bridge. Only what they use.
#pragma once

#include <cstddef>
#include <cstdint>

#include "virtio/spec.hpp"

namespace azote::virtio {

// §5.1.3 Feature bits offered (besides VERSION_1, EVENT_IDX, INDIRECT_DESC).
inline constexpr unsigned kNetFMtu = 3;      // VIRTIO_NET_F_MTU: config.mtu is valid
inline constexpr unsigned kNetFMac = 5;      // VIRTIO_NET_F_MAC: config.mac is valid
inline constexpr unsigned kNetFStatus = 16;  // VIRTIO_NET_F_STATUS: config.status is valid
// Not offered in this slice: CSUM/GUEST_CSUM, TSO/UFO, MRG_RXBUF, CTRL_VQ, MQ.

// §5.1.2 Queues: receiveq1 (device -> driver) and transmitq1 (driver -> device).
inline constexpr uint32_t kRxQueue = 0;
inline constexpr uint32_t kTxQueue = 1;
inline constexpr uint32_t kNumQueues = 2;

// §5.1.4 Device configuration layout (the fields up to mtu).
inline constexpr uint16_t kNetSLinkUp = 1;  // VIRTIO_NET_S_LINK_UP
struct virtio_net_config {
  uint8_t mac[6];
  uint16_t status;
  uint16_t max_virtqueue_pairs;
  uint16_t mtu;
};
static_assert(sizeof(virtio_net_config) == 12);
static_assert(offsetof(virtio_net_config, status) == 6 && offsetof(virtio_net_config, mtu) == 10);
inline constexpr uint32_t kNetConfigMacOffset = offsetof(virtio_net_config, mac);
inline constexpr uint32_t kNetConfigStatusOffset = offsetof(virtio_net_config, status);
inline constexpr uint32_t kNetConfigMtuOffset = offsetof(virtio_net_config, mtu);
inline constexpr uint32_t kNetConfigBytes = sizeof(virtio_net_config);

// §5.1.6 The header in front of every packet, both directions. With VERSION_1 it is
// always 12 bytes (num_buffers included, even without MRG_RXBUF).
inline constexpr uint8_t kNetHdrFNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
inline constexpr uint8_t kNetHdrGsoNone = 0;     // VIRTIO_NET_HDR_GSO_NONE
struct virtio_net_hdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};
static_assert(sizeof(virtio_net_hdr) == 12);
inline constexpr uint32_t kNetHdrBytes = sizeof(virtio_net_hdr);

}  // namespace azote::virtio
