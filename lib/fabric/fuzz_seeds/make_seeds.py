#!/usr/bin/env python3
# Seeds for fuzz_fabric (see fuzz_fabric.cpp for the modes): run in this directory.
import os, struct

def geneve(vni, opts, payload, c=None, oam=False):
    body = b"".join(struct.pack(">HBB", cls, typ, len(d) // 4) + d for cls, typ, d in opts)
    crit = any(t & 0x80 for _, t, _ in opts) if c is None else c
    return struct.pack(">BBHI", len(body) // 4, (0x80 if oam else 0) | (0x40 if crit else 0), 0x6558, vni << 8) + body + payload

def sec(sender, key_id, seq, typ=0x81):
    return (0xFF2A, typ, struct.pack(">IIQ", sender, key_id, seq))

frame = bytes.fromhex("02000000000b02a20a000100080045000054") + bytes(range(64))
seeds = {
    "plain-from-none-peer": geneve(100, [sec(2, 1, 5, 0x82)], frame),
    "sealed-from-peer1-bad-tag": geneve(100, [sec(1, 1, 5)], frame + bytes(16)),
    "unknown-peer": geneve(100, [sec(9, 1, 5)], frame + bytes(16)),
    "other-option-first": geneve(7, [(0x0102, 0x01, b"\1\2\3\4"), sec(2, 1, 6, 0x82)], frame),
    "unknown-critical": geneve(7, [(0x0102, 0x81, b"\1\2\3\4"), sec(2, 1, 7, 0x82)], frame),
    "c-bit-wrong": geneve(7, [sec(2, 1, 8, 0x82)], frame, c=False),
    "oam": geneve(7, [sec(2, 1, 9, 0x82)], frame, oam=True),
    "no-options": geneve(7, [], frame),
}
os.makedirs("fuzz_fabric", exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join("fuzz_fabric", name + ".bin"), "wb") as f:
        f.write(b"\x00" + data)
with open(os.path.join("fuzz_fabric", "seal-roundtrip.bin"), "wb") as f:
    f.write(b"\x80" + b"\x05\x10" + frame)
