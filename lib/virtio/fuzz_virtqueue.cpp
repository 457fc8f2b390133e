// libFuzzer target for the split queue and the virtio-blk parser. The input drives a
// driver: queue parameters first, then a sequence of actions — well-formed or sloppy
// chains (direct and indirect, blk requests), raw bytes over the rings and descriptors,
// index moves — interleaved with device pops, completions, notification changes and
// resets. The device side must never crash, hang or hand out a buffer or iovec outside
// guest memory (checked here: a violation traps).
#include <cstdint>
#include <cstring>
#include <vector>

#include "virtio/blk.hpp"
#include "virtio/queue.hpp"
#include "virtio/testing/driver.hpp"

using namespace azote;
using namespace azote::virtio;

namespace {

constexpr uint64_t kMem = 1 << 20;
constexpr uint64_t kRingArea = 0x1000;   // rings live in [kRingArea, kRingArea + kSpan)
constexpr uint64_t kSpan = 0x40000;      // rings + mock driver data area

// Reads the input front to back; past the end every value is zero.
class Input {
 public:
  Input(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  bool empty() const { return n_ == 0; }
  template <class T>
  T get() {
    T v{};
    const size_t k = n_ < sizeof(T) ? n_ : sizeof(T);
    std::memcpy(&v, p_, k);
    p_ += k;
    n_ -= k;
    return v;
  }
  uint8_t u8() { return get<uint8_t>(); }
  uint16_t u16() { return get<uint16_t>(); }
  uint32_t u32() { return get<uint32_t>(); }
  uint64_t u64() { return get<uint64_t>(); }

 private:
  const uint8_t* p_;
  size_t n_;
};

void check(bool ok) {
  if (!ok) __builtin_trap();
}

struct Device {
  GuestMemory& mem;
  uint8_t* base;
  SplitQueue q;
  BlkConfig cfg;
  uint64_t negotiated;
  Chain chain;
  BlkRequest req;

  // Pops up to `n` chains, checks them, parses them as blk requests and completes them.
  void run(uint32_t n) {
    for (uint32_t i = 0; i < n; ++i) {
      auto r = q.pop_into(chain);
      if (!r.ok() || !*r) return;
      check(chain.head < q.size());
      check(chain.readable.size() + chain.writable.size() <= q.size());
      for (const auto* list : {&chain.readable, &chain.writable}) {
        for (const Buffer& b : *list) {
          check(b.gpa.raw <= kMem && b.len <= kMem - b.gpa.raw);
          check(b.host == base + b.gpa.raw);
        }
      }
      uint32_t written = 0;
      auto p = parse_blk(chain, cfg, negotiated, req);
      if (p.ok()) {
        for (const iovec& v : req.iov) {
          const auto* at = static_cast<const uint8_t*>(v.iov_base);
          check(at >= base && v.iov_len <= kMem && at + v.iov_len <= base + kMem);
        }
        check(req.status_ptr >= base && req.status_ptr < base + kMem);
        if (req.op == BlkOp::kGetId) (void)blk_write_id(req, "fuzz");
        written = req.complete(kBlkSOk, req.data_bytes);
      } else {
        written = p.error().complete();
      }
      check(q.push_used(chain.head, written).ok());
    }
  }
};

std::vector<testing::Seg> blk_segments(Input& in, testing::MockDriver& drv) {
  static constexpr uint32_t kTypes[] = {kBlkTIn, kBlkTOut, kBlkTFlush, kBlkTGetId, kBlkTDiscard, kBlkTWriteZeroes};
  const uint8_t shape = in.u8();
  const uint32_t type = (shape & 7) < 6 ? kTypes[shape & 7] : in.u32();
  const uint64_t sector = (shape & 8) ? in.u64() : in.u8();
  const bool writes_data = type == kBlkTIn || type == kBlkTGetId;
  std::vector<uint8_t> hdr(sizeof(virtio_blk_req_hdr));
  const virtio_blk_req_hdr h{type, 0, sector};
  std::memcpy(hdr.data(), &h, sizeof h);
  // Discard / write-zeroes payload right after the header, in the same buffer.
  if (type == kBlkTDiscard || type == kBlkTWriteZeroes) {
    const uint32_t nseg = in.u8() % 4;
    for (uint32_t i = 0; i < nseg; ++i) {
      const virtio_blk_discard_write_zeroes s{in.u8(), in.u8(), static_cast<uint32_t>(in.u8() & 3)};
      const auto* p = reinterpret_cast<const uint8_t*>(&s);
      hdr.insert(hdr.end(), p, p + sizeof s);
    }
  }
  std::vector<testing::Seg> segs;
  if (shape & 16) {  // header split in two buffers
    const uint32_t cut = in.u8() % hdr.size();
    segs.push_back({drv.put(std::span(hdr.data(), cut)), cut, false});
    segs.push_back({drv.put(std::span(hdr.data() + cut, hdr.size() - cut)), static_cast<uint32_t>(hdr.size() - cut),
                    false});
  } else {
    segs.push_back({drv.put(hdr), static_cast<uint32_t>(hdr.size()), false});
  }
  const uint32_t ndata = in.u8() % 4;
  for (uint32_t i = 0; i < ndata; ++i) {
    const uint32_t len = (shape & 32) ? in.u16() % 4097 : 512 * (1 + in.u8() % 8);
    segs.push_back({drv.alloc(len), len, writes_data});
  }
  if (!(shape & 64)) segs.push_back({drv.alloc(1), 1, true});  // status byte
  return segs;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto mem = GuestMemory::create({{GuestAddress(0), kMem}});
  if (!mem.ok()) return 0;
  uint8_t* const base = mem->range(GuestAddress(0), kMem);
  std::memset(base, 0, kRingArea + kSpan);

  Input in(data, size);
  const uint16_t qsize = static_cast<uint16_t>(1u << (in.u8() % 9));  // 1..256
  const uint8_t flags = in.u8();
  const bool event_idx = flags & 1, indirect = flags & 2;
  testing::MockDriver drv(*mem, qsize, GuestAddress(kRingArea), kSpan);

  BlkConfig cfg(in.u16());
  cfg.seg_max(in.u8()).read_only(flags & 4);
  if (flags & 8) cfg.discard(in.u8(), in.u8() % 4, 8);
  if (flags & 16) cfg.write_zeroes(in.u8(), in.u8() % 4, true);
  Device dev{*mem, base, SplitQueue(*mem), cfg, cfg.features() & ~(flags & 128 ? feature_bit(kBlkFDiscard) : 0),
             {}, {}};

  GuestAddress desc = drv.desc_addr(), avail = drv.avail_addr(), used = drv.used_addr();
  if (flags & 32) {  // arbitrary ring placement: configure() must sort it out
    desc = GuestAddress(in.u32() % (kMem + 0x1000));
    avail = GuestAddress(in.u32() % (kMem + 0x1000));
    used = GuestAddress(in.u32() % (kMem + 0x1000));
  }
  auto configure = [&] { return dev.q.configure(qsize, desc, avail, used, event_idx, indirect).ok(); };
  if (!configure()) return 0;
  const uint16_t start = in.u16();
  drv.start_at(start);
  dev.q.set_next_avail(start);
  dev.q.set_next_used(start);

  for (int ops = 0; ops < 512 && !in.empty(); ++ops) {
    switch (in.u8() % 9) {
      case 0: {  // a blk request, direct or indirect
        const bool ind = in.u8() & 1;
        const auto segs = blk_segments(in, drv);
        if (ind ? drv.add_indirect_chain(segs) : drv.add_chain(segs)) drv.publish();
        break;
      }
      case 1: {  // any chain of up to 6 buffers, anywhere (also outside memory)
        std::vector<testing::Seg> segs(1 + in.u8() % 6);
        for (auto& s : segs) s = {GuestAddress(in.u32() % (kMem + 0x2000)), in.u16(), (in.u8() & 1) != 0};
        const bool ind = in.u8() & 1;
        if (ind ? drv.add_indirect_chain(segs) : drv.add_chain(segs)) drv.publish();
        break;
      }
      case 2: {  // raw bytes over the rings
        const uint64_t at = kRingArea + in.u16() % (drv.data_start() - kRingArea + 64);
        uint8_t buf[16];
        const uint32_t n = in.u8() % 17;
        for (uint32_t i = 0; i < n; ++i) buf[i] = in.u8();
        drv.write(GuestAddress(at), std::span(buf, n));
        break;
      }
      case 3: {  // a raw descriptor (direct table)
        const uint16_t i = static_cast<uint16_t>(in.u16() % qsize);
        drv.write_desc(i, virtq_desc{in.u64() % (kMem + 0x1000), in.u32() % 0x10000, in.u16(), in.u16()});
        break;
      }
      case 4: {  // avail ring entry and idx moves
        drv.set_avail_entry(in.u16(), in.u16() % (qsize + 1));
        const uint8_t step = in.u8();
        drv.set_avail_idx(static_cast<uint16_t>(drv.avail_idx() + (step < 250 ? step % 3 : in.u16())));
        break;
      }
      case 5:
        dev.run(1 + in.u8() % 8);
        (void)drv.take_used();
        break;
      case 6:
        dev.q.set_notification(in.u8() & 1);
        drv.set_used_event(in.u16());
        drv.set_avail_flags(in.u8() & 1);
        (void)dev.q.needs_interrupt();
        break;
      case 7:
        (void)dev.q.push_used(in.u16(), in.u32());  // device bug path: bad heads refused
        break;
      case 8:  // device reset, then resume where the driver is
        dev.q.reset();
        if (!configure()) return 0;
        dev.q.set_next_avail(drv.avail_idx());
        dev.q.set_next_used(drv.used_idx());
        break;
    }
  }
  dev.run(qsize + 2u);
  return 0;
}
