#!/usr/bin/env python3
"""Writes the fuzz_vhost_user seed inputs next to this script.

Each record: u8 fd control (bits 0-3 count, bits 4-5 kind: 0 sealed 1 MiB memfd,
1 eventfd, 2 unsealed memfd, 3 sealed 8 KiB memfd), then a 12-byte header
(request, flags, size) and the payload. Run: python3 make_seeds.py
"""
import os
import struct

V, NEED = 0x1, 0x8
MEMFD, EVENTFD = 0x00, 0x10
USER = 0x7F0000000000
ALL_PF = (1 << 0) | (1 << 3) | (1 << 9) | (1 << 12) | (1 << 15)
FEATS = (1 << 32) | (1 << 28) | (1 << 29) | (1 << 1) | (1 << 30)


def msg(req, payload=b"", nfds=0, kind=MEMFD, flags=V):
    return bytes([kind | nfds]) + struct.pack("<III", req, flags, len(payload)) + payload


def u64(v):
    return struct.pack("<Q", v)


def state(i, n):
    return struct.pack("<II", i, n)


def region(gpa, size, user, off):
    return struct.pack("<QQQQ", gpa, size, user, off)


def addr(i, base):
    return struct.pack("<IIQQQQ", i, 0, base, base + 0x2000, base + 0x1000, 0)


def inflight(size, off, nq, qs):
    return struct.pack("<QQHHI", size, off, nq, qs, 0)


def config(off, size, body=b""):
    return struct.pack("<III", off, size, 0) + body


negotiate = msg(1) + msg(15) + msg(16, u64(ALL_PF)) + msg(17) + msg(2, u64(FEATS))
table = msg(5, struct.pack("<II", 1, 0) + region(0, 1 << 20, USER, 0), 1)
ring0 = (msg(8, state(0, 256)) + msg(10, state(0, 3)) + msg(9, addr(0, USER + 0x10000)) +
         msg(13, u64(0), 1, EVENTFD) + msg(12, u64(0), 1, EVENTFD) + msg(18, state(0, 1), flags=V | NEED))

# Device status: STATUS and RESET_DEVICE negotiated too.
STATUS_PF = ALL_PF | (1 << 13) | (1 << 16)
negotiate_status = msg(1) + msg(15) + msg(16, u64(STATUS_PF)) + msg(17) + msg(2, u64(FEATS))

seeds = {
    "handshake.bin": negotiate,
    "ring.bin": negotiate + table + ring0 + msg(11, state(0, 0)),
    "config.bin": negotiate + msg(24, config(0, 8)) + msg(25, config(4, 2, b"\x01\x02"), flags=V | NEED),
    "inflight.bin": negotiate + table + msg(31, inflight(0, 0, 2, 256)) + ring0 +
                    msg(32, inflight(2 * 4160, 0, 2, 256), 1) + msg(11, state(0, 0)),
    "memslots.bin": negotiate + msg(36) + msg(37, u64(0) + region(0, 1 << 20, USER, 0), 1) +
                    msg(37, u64(0) + region(1 << 32, 4096, USER + (1 << 21), 0), 1, 0x30) +
                    ring0 + msg(38, u64(0) + region(0, 1 << 20, USER, 0)),
    "hot-table.bin": negotiate + table + ring0 + msg(13, u64(0), 1, EVENTFD) + table +
                     msg(18, state(0, 0)) + msg(18, state(0, 1)),
    "status.bin": negotiate_status + msg(39, u64(0x0b), flags=V | NEED) + table + ring0 + msg(40) +
                  msg(39, u64(0x0f)) + msg(40) + msg(11, state(0, 0)) + msg(39, u64(0)) + msg(40) +
                  ring0 + msg(34, flags=V | NEED) + msg(40),
}

here = os.path.dirname(os.path.abspath(__file__))
for name, data in seeds.items():
    with open(os.path.join(here, name), "wb") as f:
        f.write(data)
