#!/usr/bin/python3
"""What an attestation document costs azote-rot: N `attest` requests (16 PCRs, a nonce)
against N `sign` requests of the same payload size (one ECDSA-SHA384 signature, the
peer: the document's signature plus its CBOR), interleaved, over the control socket.

  bench/rot/attest.py BUILD_BIN_DIR [N]      prints one JSON object (milliseconds)
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    bin_dir = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    work = tempfile.mkdtemp(prefix="azote-rot-bench-")
    try:
        layer = os.path.join(work, "layer")
        with open(layer, "w") as f:
            f.write("a layer")
        ctl = os.path.join(work, "c.sock")
        rot = subprocess.Popen([os.path.join(bin_dir, "azote-rot"), "--state-dir", os.path.join(work, "s"),
                                "--layer", "a=" + layer, "--layer", "b=" + layer, "--control", ctl],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(ctl):
                break
            time.sleep(0.02)
        s = socket.socket(socket.AF_UNIX)
        s.connect(ctl)
        f = s.makefile("rw")

        def call(req):
            t0 = time.perf_counter()
            f.write(json.dumps(req) + "\n")
            f.flush()
            r = json.loads(f.readline())
            dt = (time.perf_counter() - t0) * 1000
            if not r.get("ok"):
                raise SystemExit("refused: %s" % r)
            return dt, r

        attest = {"op": "attest", "module_id": "i-0123456789abcdef0",
                  "pcrs": {str(i): "ab" * 48 for i in range(16)}, "nonce": "00" * 32}
        _, sample = call(attest)
        sign = {"op": "sign", "payload": "cd" * (len(sample["document"]) // 2)}
        a, g = [], []
        for _ in range(n):
            a.append(call(attest)[0])
            g.append(call(sign)[0])
        rot.terminate()
        rot.wait(10)

        def q(v, p):
            v = sorted(v)
            return v[min(len(v) - 1, int(p * len(v)))]

        print(json.dumps({"requests": n, "document_bytes": len(sample["document"]) // 2,
                          "attest_ms": {"p50": round(statistics.median(a), 3), "p99": round(q(a, 0.99), 3)},
                          "sign_ms": {"p50": round(statistics.median(g), 3), "p99": round(q(g, 0.99), 3)},
                          "ratio_p50": round(statistics.median(a) / statistics.median(g), 2)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
