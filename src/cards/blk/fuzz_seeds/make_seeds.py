#!/usr/bin/env python3
"""Writes the fuzz_blk_queue_fds seed inputs next to this script.

Input format: see ../fuzz_blk_queue_fds.cpp. Records: 0 message (u8 fds: count | kind << 4,
12-byte header, payload), 1 poke (u8 which kept fd, u64 value), 2 memory (u8 target,
u16 offset, u8 length, bytes), 3 start device B (u8 kick kind, u8 call kind, u8 size log2,
u16 desc, u16 avail, u16 used, u16 next avail), 4 stop device B. Run: python3 make_seeds.py
"""
import os
import struct

V, NEED = 0x1, 0x8
MEMFD, EVENTFD, SEMAPHORE, BLOCKING, PIPE, PIPE_EOF, SOCKET, SOCKET_EOF, FILE, DEVNULL, TIMERFD = range(11)
USER = 0x7F0000000000
ALL_PF = (1 << 0) | (1 << 3) | (1 << 9) | (1 << 12) | (1 << 13) | (1 << 16)  # what BlkDevice offers
FEATS = (1 << 32) | (1 << 28) | (1 << 29) | (1 << 30)  # VERSION_1, INDIRECT, EVENT_IDX, PROTOCOL_FEATURES


def msg(req, payload=b"", nfds=0, kind=MEMFD, flags=V):
    return bytes([0, (kind << 4) | nfds]) + struct.pack("<III", req, flags, len(payload)) + payload


def poke(which, value=1):
    return bytes([1, which]) + struct.pack("<Q", value)


def memory(target, offset, data):
    out = b""
    for i in range(0, len(data), 255):
        chunk = data[i:i + 255]
        out += bytes([2, target]) + struct.pack("<HB", offset + i, len(chunk)) + chunk
    return out


def start_b(kick, call, size_log2, desc, avail, used, nxt=0):
    return bytes([3, kick, call, size_log2]) + struct.pack("<HHHH", desc, avail, used, nxt)


STOP_B = bytes([4])


def u64(v):
    return struct.pack("<Q", v)


def state(i, n):
    return struct.pack("<II", i, n)


def region(gpa, size, user, off):
    return struct.pack("<QQQQ", gpa, size, user, off)


def addr(i, base):
    # desc = base, used = base + 0x1000, avail = base + 0x2000 (vhost_user::VringAddr order)
    return struct.pack("<IIQQQQ", i, 0, base, base + 0x1000, base + 0x2000, 0)


def desc(a, length, flags, nxt):
    return struct.pack("<QIHH", a, length, flags, nxt)


def write_request(target, base, sector=8):
    """A virtio-blk write of one sector: header at base + 0x3000, data at + 0x3200, status
    at + 0x3400; descriptors at base, avail at base + 0x2000 (one entry), used at + 0x1000."""
    table = (desc(base + 0x3000, 16, 1, 1) + desc(base + 0x3200, 512, 1, 2) + desc(base + 0x3400, 1, 2, 0))
    return (memory(target, base, table) + memory(target, base + 0x2000, struct.pack("<HHH", 0, 1, 0)) +
            memory(target, base + 0x3000, struct.pack("<IIQ", 1, 0, sector)) +
            memory(target, base + 0x3200, b"\xa5" * 512))


negotiate = msg(1) + msg(15) + msg(16, u64(ALL_PF)) + msg(17) + msg(2, u64(FEATS))
table = msg(5, struct.pack("<II", 1, 0) + region(0, 1 << 20, USER, 0), 1, MEMFD)


RING_A = 0x4000  # device A's ring: guest-physical (and memfd offset) 0x4000


def session_ring(kick_kind, call_kind=EVENTFD):
    # kept fds afterwards: [call's, kick's] (when the kind leaves the frontend an end)
    return (msg(8, state(0, 64)) + msg(10, state(0, 0)) + msg(9, addr(0, USER + RING_A)) +
            msg(13, u64(0), 1, call_kind) + msg(12, u64(0), 1, kick_kind) + msg(18, state(0, 1), flags=V | NEED))


seeds = {}
for kind, name in [(EVENTFD, "eventfd"), (SEMAPHORE, "semaphore"), (BLOCKING, "blocking"), (PIPE, "pipe"),
                   (PIPE_EOF, "pipe-eof"), (SOCKET, "socket"), (SOCKET_EOF, "socket-eof"), (FILE, "file"),
                   (DEVNULL, "devnull"), (TIMERFD, "timerfd")]:
    seeds["session-kick-%s.bin" % name] = negotiate + table + session_ring(kind) + poke(1) + msg(11, state(0, 0))

seeds["session-request.bin"] = (negotiate + table + write_request(0, RING_A) + session_ring(EVENTFD) + poke(1) +
                                poke(0, 0xFFFFFFFFFFFFFFFE) + poke(1) + msg(11, state(0, 0)))

for kind, name in [(SEMAPHORE, "semaphore"), (PIPE_EOF, "pipe-eof"), (SOCKET_EOF, "socket-eof"),
                   (BLOCKING, "blocking"), (TIMERFD, "timerfd")]:
    seeds["direct-kick-%s.bin" % name] = start_b(kind, EVENTFD, 6, 0, 0x2000, 0x1000) + poke(0) + STOP_B
# A request on device B, kicked, its call fd filled to the eventfd maximum, restarted.
seeds["direct-request.bin"] = (write_request(1, 0) + start_b(EVENTFD, EVENTFD, 6, 0, 0x2000, 0x1000) + poke(0) +
                               poke(1, 0xFFFFFFFFFFFFFFFE) + poke(0) + start_b(SEMAPHORE, SEMAPHORE, 6, 0, 0x2000,
                                                                                0x1000, 1) + poke(2) + STOP_B)

here = os.path.dirname(os.path.abspath(__file__))
for name, data in seeds.items():
    with open(os.path.join(here, name), "wb") as f:
        f.write(data)
