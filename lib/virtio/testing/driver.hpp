// A mock of the driver side of one split virtqueue, for unit tests and fuzzing of device
// code without a guest: it lays out a descriptor table, available and used rings and a
// data area in a GuestMemory, adds chains (direct or through an indirect table), publishes
// them and reads completions. It also exposes raw writes so tests can play a hostile
// driver (bad indices, loops, moving avail->idx...).
//
// Test code: it checks nothing about what it is asked to write, and never aborts; a write
// outside guest memory is dropped.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "guest_memory/guest_memory.hpp"
#include "virtio/spec.hpp"

namespace azote::virtio::testing {

// One buffer of a chain, as the driver sees it.
struct Seg {
  GuestAddress gpa;
  uint32_t len = 0;
  bool device_writable = false;
};

class MockDriver {
 public:
  // Rings start at `base` (16-aligned): descriptor table, then the available ring, then the
  // used ring (4-aligned); the rest of [base, base + span) is the data area for alloc().
  MockDriver(GuestMemory& mem, uint16_t size, GuestAddress base, uint64_t span)
      : mem_(&mem), size_(size), desc_(base) {
    avail_ = GuestAddress(desc_.raw + desc_table_size(size));
    used_ = GuestAddress(align_up(avail_.raw + avail_ring_size(size), 4));
    data_start_ = align_up(used_.raw + used_ring_size(size), 64);
    data_end_ = base.raw + span;
    data_next_ = data_start_;
    (void)mem_->fill(desc_, 0, data_start_ - desc_.raw);
    for (uint32_t i = size; i > 0; --i) free_.push_back(static_cast<uint16_t>(i - 1));
  }

  uint16_t size() const { return size_; }
  GuestAddress desc_addr() const { return desc_; }
  GuestAddress avail_addr() const { return avail_; }
  GuestAddress used_addr() const { return used_; }
  uint64_t data_start() const { return data_start_; }
  uint64_t data_end() const { return data_end_; }
  size_t free_descriptors() const { return free_.size(); }

  // Bump allocator over the data area; wraps to its start when exhausted.
  GuestAddress alloc(uint64_t len, uint64_t align = 16) {
    uint64_t at = align_up(data_next_, align);
    if (at + len > data_end_) at = align_up(data_start_, align);
    data_next_ = at + len;
    return GuestAddress(at);
  }
  // Allocates and fills a buffer.
  GuestAddress put(std::span<const uint8_t> bytes, uint64_t align = 16) {
    const GuestAddress a = alloc(bytes.size(), align);
    write(a, bytes);
    return a;
  }
  void write(GuestAddress gpa, std::span<const uint8_t> bytes) { (void)mem_->write(gpa, bytes); }
  template <class T>
  void write_obj(GuestAddress gpa, const T& v) {
    (void)mem_->write_obj(gpa, v);
  }
  template <class T>
  T read_obj(GuestAddress gpa) const {
    auto r = mem_->read_obj<T>(gpa);
    return r.ok() ? *r : T{};
  }

  // Puts `segs` in free descriptors, chained in order; returns the head, or nullopt when
  // there are not enough free descriptors (or segs is empty). Not yet visible: publish().
  std::optional<uint16_t> add_chain(const std::vector<Seg>& segs) {
    if (segs.empty() || segs.size() > free_.size()) return std::nullopt;
    std::vector<uint16_t> ids;
    for (size_t i = 0; i < segs.size(); ++i) {
      ids.push_back(free_.back());
      free_.pop_back();
    }
    for (size_t i = 0; i < segs.size(); ++i) {
      const bool last = i + 1 == segs.size();
      write_desc(ids[i], virtq_desc{segs[i].gpa.raw, segs[i].len,
                                    static_cast<uint16_t>((segs[i].device_writable ? kDescFWrite : 0) |
                                                          (last ? 0 : kDescFNext)),
                                    last ? uint16_t{0} : ids[i + 1]});
    }
    return queue_head(ids);
  }

  // One descriptor pointing at an indirect table (in the data area) holding `segs`.
  std::optional<uint16_t> add_indirect_chain(const std::vector<Seg>& segs) {
    if (segs.empty() || free_.empty()) return std::nullopt;
    std::vector<virtq_desc> table;
    for (size_t i = 0; i < segs.size(); ++i) {
      const bool last = i + 1 == segs.size();
      table.push_back(virtq_desc{segs[i].gpa.raw, segs[i].len,
                                 static_cast<uint16_t>((segs[i].device_writable ? kDescFWrite : 0) |
                                                       (last ? 0 : kDescFNext)),
                                 static_cast<uint16_t>(last ? 0 : i + 1)});
    }
    const auto bytes = std::span(reinterpret_cast<const uint8_t*>(table.data()),  // NOLINT
                                 table.size() * sizeof(virtq_desc));
    const GuestAddress t = put(bytes, 16);
    return add_raw_indirect(t, static_cast<uint32_t>(bytes.size()));
  }
  // One descriptor pointing at an indirect table the caller wrote.
  std::optional<uint16_t> add_raw_indirect(GuestAddress table, uint32_t len, uint16_t extra_flags = 0) {
    if (free_.empty()) return std::nullopt;
    const uint16_t id = free_.back();
    free_.pop_back();
    write_desc(id, virtq_desc{table.raw, len, static_cast<uint16_t>(kDescFIndirect | extra_flags), 0});
    return queue_head({id});
  }

  // Makes every chain added since the last publish() visible: avail->idx += count.
  void publish() {
    avail_idx_ = static_cast<uint16_t>(avail_idx_ + pending_);
    pending_ = 0;
    set_avail_idx(avail_idx_);
  }

  // Starts both indices at `idx` (e.g. near 65535 to test wrap-around). Call before adding
  // chains; the device side must use set_next_avail(idx) / set_next_used(idx).
  void start_at(uint16_t idx) {
    avail_idx_ = idx;
    used_seen_ = idx;
    pending_ = 0;
    set_avail_idx(idx);
    write_obj(used_ + used_idx_offset(), idx);
  }

  // Completions the device pushed since the last call; their descriptors become free.
  std::vector<virtq_used_elem> take_used() {
    std::vector<virtq_used_elem> out;
    const uint16_t idx = used_idx();
    while (used_seen_ != idx) {
      const auto e = read_obj<virtq_used_elem>(used_ + used_ring_offset(slot(used_seen_)));
      out.push_back(e);
      auto it = inflight_.find(static_cast<uint16_t>(e.id));
      if (it != inflight_.end()) {
        for (uint16_t d : it->second) free_.push_back(d);
        inflight_.erase(it);
      }
      ++used_seen_;
    }
    return out;
  }

  // ---- raw access (a hostile driver) ----
  void write_desc(uint16_t i, const virtq_desc& d) { write_obj(desc_ + 16 * uint64_t{i}, d); }
  virtq_desc read_desc(uint16_t i) const { return read_obj<virtq_desc>(desc_ + 16 * uint64_t{i}); }
  void set_avail_idx(uint16_t v) { write_obj(avail_ + avail_idx_offset(), v); }
  uint16_t avail_idx() const { return read_obj<uint16_t>(avail_ + avail_idx_offset()); }
  void set_avail_entry(uint16_t ring_index, uint16_t head) {
    write_obj(avail_ + avail_ring_offset(slot(ring_index)), head);
  }
  void set_avail_flags(uint16_t f) { write_obj(avail_ + avail_flags_offset(), f); }
  void set_used_event(uint16_t v) { write_obj(avail_ + used_event_offset(size_), v); }
  uint16_t used_idx() const { return read_obj<uint16_t>(used_ + used_idx_offset()); }
  uint16_t used_flags() const { return read_obj<uint16_t>(used_ + used_flags_offset()); }
  uint16_t avail_event() const { return read_obj<uint16_t>(used_ + avail_event_offset(size_)); }

 private:
  static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
  uint32_t slot(uint16_t i) const { return size_ == 0 ? 0 : i % size_; }

  uint16_t queue_head(const std::vector<uint16_t>& ids) {
    const uint16_t head = ids.front();
    inflight_[head] = ids;
    set_avail_entry(static_cast<uint16_t>(avail_idx_ + pending_), head);
    ++pending_;
    return head;
  }

  GuestMemory* mem_;
  uint16_t size_;
  GuestAddress desc_, avail_, used_;
  uint64_t data_start_ = 0, data_end_ = 0, data_next_ = 0;
  std::vector<uint16_t> free_;
  std::map<uint16_t, std::vector<uint16_t>> inflight_;
  uint16_t avail_idx_ = 0;  // value of avail->idx after the last publish()
  uint16_t pending_ = 0;    // chains added since
  uint16_t used_seen_ = 0;
};

}  // namespace azote::virtio::testing
