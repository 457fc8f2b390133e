#!/usr/bin/env python3
"""Writes the fuzz_control seed inputs next to this script.

Each record: one byte, client (bits 0-4) | what (bits 5-7): 0 send (u16 n, n bytes),
3 repeat (u8 byte, u8 k: k * 1024 + 1 bytes), 4 read, 5 shutdown(SHUT_WR), 6 close,
7 serve (u8 count). Run: python3 make_seeds.py
"""
import json
import os
import struct

SEND, REPEAT, READ, SHUT, CLOSE, SERVE = 0, 3, 4, 5, 6, 7


def rec(client, what):
    return bytes([(what << 5) | client])


def send(client, data):
    if isinstance(data, str):
        data = data.encode()
    return rec(client, SEND) + struct.pack("<H", len(data)) + data


def line(obj):
    return json.dumps(obj, separators=(",", ":")) + "\n"


def repeat(client, byte, k):
    return rec(client, REPEAT) + bytes([byte, k])


def read(client):
    return rec(client, READ)


def serve(n):
    return rec(0, SERVE) + bytes([n])


SEEDS = {
    # One client, every kind of answer, read back.
    "ops.bin": send(0, line({"op": "echo", "x": 1}) + line({"op": "blob", "n": 300}) + line({"op": "throw"})
                    + line({"op": "array"}) + line({"op": "nok"}) + line({"op": "refuse"}))
    + read(0),
    # Malformed lines, then a good one.
    "malformed.bin": send(0, "not json\n[1,2]\n{\"op\":3}\n{}\n\n{\"op\":\"echo\"\n") + send(0, line({"op": "echo"}))
    + read(0),
    # A request split across sends, interleaved with another client's.
    "split.bin": send(0, '{"op":"ec') + send(1, '{"op":"blob",') + send(0, 'ho","a":[1,2,{"b":null}]}\n')
    + send(1, '"n":5000}\n') + read(1) + read(0),
    # Big answers nobody reads, then read late: the server's buffer and its bound.
    "pipeline.bin": send(0, line({"op": "blob", "n": 16384}) * 40) + serve(10) + read(0) + serve(10) + read(0),
    # A line without end past the limit (refused and closed), and a long blank one (refused).
    "overlong.bin": repeat(0, ord("x"), 64) + read(0) + repeat(1, ord(" "), 63) + send(1, "\n" + line({"op": "echo"}))
    + read(1),
    # More clients than slots: the refusal line.
    "full.bin": b"".join(send(c, line({"op": "echo", "c": c})) for c in range(19)) + serve(2)
    + b"".join(read(c) for c in range(19)),
    # Requests then EOF (answered, then closed); requests then close (EPIPE).
    "eof.bin": send(0, line({"op": "echo"}) * 3) + rec(0, SHUT) + serve(2) + read(0) + send(1, line({"op": "blob", "n": 16384}) * 30)
    + rec(1, CLOSE) + serve(2),
}

here = os.path.dirname(os.path.abspath(__file__))
for name, data in SEEDS.items():
    with open(os.path.join(here, name), "wb") as f:
        f.write(data)
