#!/usr/bin/env python3
"""Writes the fuzz_imds seeds into fuzz_imds/ (run in this directory): one well-formed input
per file. Mode byte 0: requests (token PUT, GETs with a valid, foreign, revoked token or none,
a forwarded PUT, other methods); 1: guest segments to 169.254.169.254:80 (SYN with options,
data); 2: the kernel's replies to an alias (SYN-ACK, data with TTL 64)."""
import os
import struct


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def segment(src, dst, sport, dport, flags, payload=b"", options=b"", ttl=64):
    off = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIHHHH", sport, dport, 1000, 2000 if flags & 0x10 else 0,
                      off << 12 | flags, 64240, 0, 0) + options + payload
    pseudo = ip(src) + ip(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    c = csum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0x1234, 0x4000, ttl, 6, 0, ip(src), ip(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + tcp


seeds = {
    "put_token": b"\0\0PUT /latest/api/token\nX-aws-ec2-metadata-token-ttl-seconds: 21600",
    "put_forwarded": b"\0\0PUT /latest/api/token\nX-aws-ec2-metadata-token-ttl-seconds: 60\nX-Forwarded-For: 1.2.3.4",
    "get_token": b"\0\x0aGET /latest/meta-data/instance-id\nX-aws-ec2-metadata-token: @tok",
    "get_expired": b"\0\x50GET /latest/meta-data/\nX-aws-ec2-metadata-token: @tok",
    "get_other": b"\0\0GET /latest/user-data\nX-aws-ec2-metadata-token: @other",
    "get_old": b"\0\0GET /latest/dynamic/instance-identity/document\nX-aws-ec2-metadata-token: @old",
    "get_v1": b"\0\0GET /latest/meta-data/network/interfaces/macs/02:00:0a:00:01:05/local-ipv4s",
    "post": b"\0\0POST /latest/meta-data/\nContent-Length: 3",
    "in_syn": b"\1" + segment("10.0.1.5", "169.254.169.254", 40000, 80, 0x002,
                              options=bytes([2, 4, 5, 0xB4, 1, 3, 3, 7])),
    "in_data": b"\1" + segment("10.0.1.5", "169.254.169.254", 40000, 80, 0x018,
                               payload=b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"),
    "out_synack": b"\2" + segment("169.254.169.254", "100.64.0.6", 80, 40000, 0x012, ttl=1),
    "out_data": b"\2" + segment("169.254.169.254", "100.64.0.6", 80, 40000, 0x018, payload=b"i-0123", ttl=64),
}

os.makedirs("fuzz_imds", exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join("fuzz_imds", name + ".bin"), "wb") as f:
        f.write(data)
