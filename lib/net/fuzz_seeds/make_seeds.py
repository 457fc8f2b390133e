#!/usr/bin/env python3
"""Writes the seed inputs of fuzz_net_frame, fuzz_dhcp and fuzz_dns into the directories
next to this script, one well-formed message per file, built from the RFC layouts.
Run: python3 make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST_MAC = bytes.fromhex("02000a000105")
ROUTER_MAC = bytes.fromhex("02000a000101")
GUEST = bytes([10, 0, 1, 5])


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(payload, etype=0x0800, dst=ROUTER_MAC, vlan=None):
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return dst + GUEST_MAC + tag + struct.pack("!H", etype) + payload


def ipv4(dst, proto, payload, src=GUEST, ttl=64, frag=0x4000, options=b""):
    ihl = 5 + len(options) // 4
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(payload), 0x1234, frag, ttl, proto, 0,
                    bytes(src), bytes(dst)) + options
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def l4_csum(src, dst, proto, seg, at):
    c = csum(bytes(src) + bytes(dst) + struct.pack("!BBH", 0, proto, len(seg)) + seg)
    if proto == 17 and c == 0:
        c = 0xFFFF
    return seg[:at] + struct.pack("!H", c) + seg[at + 2:]


def udp(dst, sport, dport, payload, src=GUEST):
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return l4_csum(src, dst, 17, seg, 6)


def tcp(dst, sport, dport, flags, options=b"", payload=b""):
    off = (20 + len(options)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, off << 4, flags, 64240, 0, 0) + options + payload
    return l4_csum(GUEST, dst, 6, seg, 16)


def icmp(type_, code, rest, body):
    m = struct.pack("!BBHI", type_, code, 0, rest) + body
    return m[:2] + struct.pack("!H", csum(m)) + m[4:]


def bootp(xid, options, ciaddr=b"\0" * 4, flags=0):
    b = struct.pack("!BBBBIHH", 1, 1, 6, 0, xid, 0, flags) + ciaddr + b"\0" * 12 + GUEST_MAC + b"\0" * 202
    b += bytes([99, 130, 83, 99]) + options + b"\xff"
    return b + b"\0" * max(0, 300 - len(b))


def name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".") if l) + b"\0"


def dns_query(qname, qtype, edns=True, qid=0x4242):
    q = struct.pack("!HHHHHH", qid, 0x0120, 1, 0, 0, 1 if edns else 0) + name(qname) + struct.pack("!HH", qtype, 1)
    if edns:
        q += b"\0" + struct.pack("!HHIH", 41, 1232, 0, 12) + struct.pack("!HH", 10, 8) + bytes(range(8))
    return q


DISCOVER = bootp(0x3903F326, bytes([53, 1, 1, 61, 7, 1]) + GUEST_MAC + bytes([57, 2, 2, 64, 55, 7, 1, 3, 6, 12, 15, 28, 42]))
REQUEST = bootp(0x5A1C0DE1, bytes([53, 1, 3, 54, 4, 10, 0, 1, 1, 50, 4, 10, 0, 1, 5, 12, 4]) + b"web1" +
                bytes([55, 4, 1, 3, 6, 15]))
RENEW = bootp(0x11111111, bytes([53, 1, 3]), ciaddr=GUEST)
RELEASE = bootp(0x22222222, bytes([53, 1, 7, 54, 4, 10, 0, 1, 1]), ciaddr=GUEST)
INFORM = bootp(0x33333333, bytes([53, 1, 8, 55, 3, 1, 3, 6]), ciaddr=GUEST)
DECLINE = bootp(0x44444444, bytes([53, 1, 4, 54, 4, 10, 0, 1, 1, 50, 4, 10, 0, 1, 5]))
NAK_ME = bootp(0x55555555, bytes([53, 1, 3, 50, 4, 192, 168, 0, 5]), flags=0x8000)

DNS_A = dns_query("ip-10-0-1-5.eu-west-1.compute.internal", 1)
DNS_PTR = dns_query("5.1.0.10.in-addr.arpa", 12, edns=False)
DNS_AAAA = dns_query("db.corp.internal", 28)
DNS_OUTSIDE = dns_query("example.com", 1, edns=False)
# "www" then a pointer back to the start of the same name: a loop, refused (kPointerLoop).
DNS_COMPRESSED = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x03www\xc0\x0c" + struct.pack("!HH", 1, 1)

ARP = bytes.fromhex("0001080006040001") + GUEST_MAC + GUEST + b"\0" * 6 + bytes([10, 0, 1, 1])
ROUTER = [10, 0, 1, 1]
SEEDS = {
    "fuzz_net_frame": {
        "arp-request": eth(ARP, 0x0806, dst=b"\xff" * 6),
        "arp-vlan": eth(ARP, 0x0806, dst=b"\xff" * 6, vlan=0xA07B),
        "icmp-echo": eth(ipv4(ROUTER, 1, icmp(8, 0, 0x1C2B0001, bytes(range(56))))),
        "icmp-unreachable": eth(ipv4(ROUTER, 1, icmp(3, 3, 0, ipv4([10, 0, 0, 2], 17, udp([10, 0, 0, 2], 1, 2, b"x"))))),
        "tcp-syn": eth(ipv4([10, 0, 2, 7], 6, tcp([10, 0, 2, 7], 40000, 443, 0x02,
                                                   bytes([2, 4, 5, 180, 4, 2, 8, 10]) + b"\0" * 8 + bytes([1, 3, 3, 7])))),
        "tcp-data": eth(ipv4([10, 0, 2, 7], 6, tcp([10, 0, 2, 7], 40000, 443, 0x18, payload=b"GET / HTTP/1.1\r\n\r\n"))),
        "udp-dns": eth(ipv4([10, 0, 0, 2], 17, udp([10, 0, 0, 2], 53000, 53, DNS_A))),
        "udp-dhcp": eth(ipv4([255] * 4, 17, udp([255] * 4, 68, 67, DISCOVER, src=[0] * 4), src=[0] * 4, frag=0),
                        dst=b"\xff" * 6),
        "ipv4-options": eth(ipv4(ROUTER, 1, icmp(8, 0, 1, b""), options=bytes([1, 1, 1, 0]))),
        "ipv4-fragment": eth(ipv4(ROUTER, 17, b"\0" * 16, frag=0x2000)),
    },
    "fuzz_dhcp": {
        "discover": DISCOVER, "request": REQUEST, "renew": RENEW, "release": RELEASE,
        "inform": INFORM, "decline": DECLINE, "request-other": NAK_ME,
    },
    "fuzz_dns": {
        "a-edns": DNS_A, "ptr": DNS_PTR, "aaaa": DNS_AAAA, "outside": DNS_OUTSIDE, "compressed": DNS_COMPRESSED,
    },
}

for target, seeds in SEEDS.items():
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    for seed_name, data in seeds.items():
        with open(os.path.join(d, seed_name + ".bin"), "wb") as f:
            f.write(data)
