#!/usr/bin/python3
"""Self-test of eif_reader.py: builds EIFs by hand from ENCLAVES.md §4 (its own tiny builder,
struct/zlib/cbor2/cryptography only), runs the reader on them as a subprocess and checks the
result: good images read back with independently computed PCRs, bad ones are refused (exit 1).

  /usr/bin/python3 tests/tools/eif_reader_selftest.py     -> "ok: N checks", exit 0
"""
import concurrent.futures
import datetime
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

READER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eif_reader.py")
KERNEL, CMDLINE = b"\x4d\x5a fake bzImage " * 50, b"reboot=k panic=30 pci=off console=ttyS0"
RD1, RD2 = b"070701 bootstrap cpio" * 20, b"070701 customer cpio" * 30
META = {"ImageName": "test", "ImageVersion": "1", "CustomMetadata": None}
KERNEL_T, CMDLINE_T, RAMDISK_T, SIGNATURE_T, METADATA_T = 1, 2, 3, 4, 5
H = lambda b: hashlib.sha384(b).digest()
PCR = lambda b: H(bytes(48) + H(b))


# ---- builder ------------------------------------------------------------------------------
def crc_of(eif):
    """CRC for a gap-free image: header bytes 0..543 then everything after the 548-byte header."""
    return zlib.crc32(eif[548:], zlib.crc32(eif[:544]))


def fix_crc(eif):
    return eif[:544] + struct.pack(">I", crc_of(eif)) + eif[548:]


def build(sections, version=4, flags=0, mem=1 << 30, cpus=2):
    """sections: list of (type, payload). Lays them out contiguously after the header."""
    body, offsets, sizes, pos = b"", [], [], 548
    for stype, payload in sections:
        offsets.append(pos)
        sizes.append(len(payload))
        body += struct.pack(">HHQ", stype, 0, len(payload)) + payload
        pos += 12 + len(payload)
    pad = lambda xs: xs + [0] * (32 - len(xs))
    hdr = b".eif" + struct.pack(">HHQQHH", version, flags, mem, cpus, 0, len(sections))
    hdr += struct.pack(">32Q", *pad(offsets)) + struct.pack(">32Q", *pad(sizes)) + struct.pack(">I", 0)
    return fix_crc(hdr + b"\0\0\0\0" + body)


def put(eif, off, fmt, value, recrc=True):
    out = eif[:off] + struct.pack(fmt, value) + eif[off + struct.calcsize(fmt):]
    return fix_crc(out) if recrc else out


def make_cert(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eif selftest")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA384()))


def signature_section(key, cert, pcr0, alg=-35, index=0, int_arrays=False, tag=False, flip=False,
                      claim_alg=None):
    """The §4 signature payload: [{signing_certificate: PEM, signature: COSE_Sign1}]."""
    hash_cls, n = {-7: (hashes.SHA256, 32), -35: (hashes.SHA384, 48), -36: (hashes.SHA512, 66)}[alg]
    arr = (lambda b: list(b)) if int_arrays else (lambda b: b)
    protected = cbor2.dumps({1: alg if claim_alg is None else claim_alg})
    payload = cbor2.dumps({"register_index": index, "register_value": arr(pcr0)})
    r, s = decode_dss_signature(key.sign(cbor2.dumps(["Signature1", protected, b"", payload]),
                                         ec.ECDSA(hash_cls())))
    sig = bytearray(r.to_bytes(n, "big") + s.to_bytes(n, "big"))
    if flip:
        sig[5] ^= 1
    cose = [protected, {}, payload, bytes(sig)]
    cose = cbor2.dumps(cbor2.CBORTag(18, cose) if tag else cose)
    return cbor2.dumps([{"signing_certificate": arr(cert.public_bytes(Encoding.PEM)), "signature": arr(cose)}])


# ---- fixtures -----------------------------------------------------------------------------
K384 = ec.generate_private_key(ec.SECP384R1())
C384 = make_cert(K384)
K256 = ec.generate_private_key(ec.SECP256R1())
C256 = make_cert(K256)
PCR0 = PCR(KERNEL + CMDLINE + RD1 + RD2)
BASE = [(KERNEL_T, KERNEL), (CMDLINE_T, CMDLINE), (METADATA_T, json.dumps(META).encode()),
        (RAMDISK_T, RD1), (RAMDISK_T, RD2)]
UNSIGNED = build(BASE)
signed = lambda **kw: build(BASE + [(SIGNATURE_T, signature_section(K384, C384, PCR0, **kw))])
SIGNED = signed()
OFF = lambda i: 28 + 8 * i      # section_offsets[i]
SIZE = lambda i: 284 + 8 * i    # section_sizes[i]
SEC = lambda i: struct.unpack_from(">Q", UNSIGNED, OFF(i))[0]   # header offset of section i


def flip_payload_bit(eif):
    b = bytearray(eif)
    b[SEC(3) + 12 + 7] ^= 0x10      # one bit inside ramdisk1's payload, CRC left as it was
    return bytes(b)


def swap_table(eif):
    """Swaps table entries 0 and 1 (so offsets are not increasing) with a matching CRC."""
    b = put(eif, OFF(0), ">Q", SEC(1), False)
    b = put(b, OFF(1), ">Q", SEC(0), False)
    b = put(b, SIZE(0), ">Q", len(CMDLINE), False)
    return put(b, SIZE(1), ">Q", len(KERNEL))


def with_gap(eif):
    """Moves sections 1.. by one byte (a zero byte inserted before section 1)."""
    b = eif[:SEC(1)] + b"\0" + eif[SEC(1):]
    for i in range(1, 5):
        b = put(b, OFF(i), ">Q", SEC(i) + 1, False)
    return fix_crc(b)


# Each malformation: (name, bytes, extra reader args). All must exit 1.
BAD = [
    ("bad magic", put(UNSIGNED, 0, ">I", 0x2E656967), []),
    ("unknown version 5", put(UNSIGNED, 4, ">H", 5), []),
    ("version 1 (no CRC)", put(UNSIGNED, 4, ">H", 1), []),
    ("metadata in a v3 EIF", put(UNSIGNED, 4, ">H", 3), []),
    ("signature in a v2 EIF", put(build(BASE[:2] + BASE[3:] + [(SIGNATURE_T, signature_section(
        K384, C384, PCR0))]), 4, ">H", 2), []),
    ("header flag bit 1", put(UNSIGNED, 6, ">H", 2), []),
    ("reserved field non-zero", put(UNSIGNED, 24, ">H", 1), []),
    ("unused field non-zero", put(UNSIGNED, 540, ">I", 1), []),
    ("CRC: one bit flipped in a payload", flip_payload_bit(UNSIGNED), []),
    ("CRC field off by one", put(UNSIGNED, 544, ">I", crc_of(UNSIGNED) ^ 1, False), []),
    ("truncated file", fix_crc(UNSIGNED[:-1]), []),
    ("shorter than the header", UNSIGNED[:300], []),
    ("trailing byte", fix_crc(UNSIGNED + b"\0"), []),
    ("section header size differs from section_sizes", put(UNSIGNED, SEC(1) + 4, ">Q", len(CMDLINE) + 1), []),
    ("section_sizes entry too large", put(UNSIGNED, SIZE(4), ">Q", len(RD2) + 1), []),
    ("overlapping sections", put(UNSIGNED, OFF(1), ">Q", SEC(0) + 4), []),
    ("section overlapping the header", put(UNSIGNED, OFF(0), ">Q", 500), []),
    ("section offset past end of file", put(UNSIGNED, OFF(4), ">Q", len(UNSIGNED) + 100), []),
    ("gap between sections", with_gap(UNSIGNED), []),
    ("offsets not increasing in the table", swap_table(UNSIGNED), []),
    ("num_sections 33", put(UNSIGNED, 26, ">H", 33), []),
    ("num_sections 0", put(UNSIGNED, 26, ">H", 0), []),
    ("unused table slot non-zero", put(UNSIGNED, OFF(7), ">Q", 548), []),
    ("unknown section type 6", put(UNSIGNED, SEC(2), ">H", 6), []),
    ("section type 0", put(UNSIGNED, SEC(2), ">H", 0), []),
    ("section flags non-zero", put(UNSIGNED, SEC(1) + 2, ">H", 1), []),
    ("duplicate kernel", build(BASE + [(KERNEL_T, KERNEL)]), []),
    ("duplicate cmdline", build(BASE + [(CMDLINE_T, CMDLINE)]), []),
    ("duplicate metadata", build(BASE + [(METADATA_T, b"{}")]), []),
    ("duplicate signature", build(BASE + 2 * [(SIGNATURE_T, signature_section(K384, C384, PCR0))]), []),
    ("missing ramdisk", build(BASE[:3]), []),
    ("missing kernel", build(BASE[1:]), []),
    ("missing cmdline", build(BASE[:1] + BASE[2:]), []),
    ("metadata not JSON", build(BASE[:2] + [(METADATA_T, b"{not json")] + BASE[3:]), []),
    ("metadata not UTF-8", build(BASE[:2] + [(METADATA_T, b'{"a": "\xff"}')] + BASE[3:]), []),
    ("signature section not CBOR", build(BASE + [(SIGNATURE_T, b"\x1c\x00")]), []),
    ("signature entry lacks signing_certificate", build(BASE + [(SIGNATURE_T, cbor2.dumps(
        [{"signature": b"x"}]))]), []),
    ("tagged COSE_Sign1", signed(tag=True), []),
    ("--expect-signed on an unsigned EIF", UNSIGNED, ["--expect-signed"]),
    ("--expect-unsigned on a signed EIF", SIGNED, ["--expect-unsigned"]),
    ("--expect-signed, signature over a different PCR0", build(BASE + [(SIGNATURE_T, signature_section(K384, C384, PCR(b"other")))]), ["--expect-signed"]),
    ("--expect-signed, corrupted COSE signature", signed(flip=True), ["--expect-signed"]),
]


# ---- runner -------------------------------------------------------------------------------
def run(tmp, name, eif, args):
    path = os.path.join(tmp, f"{abs(hash(name))}.eif")
    with open(path, "wb") as f:
        f.write(eif)
    p = subprocess.run(["/usr/bin/python3", READER, *args, path], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def main():
    failures, checks = [], 0

    def check(cond, what):
        nonlocal checks
        checks += 1
        if not cond:
            failures.append(what)

    hx = lambda b: b.hex()
    pcr8 = hx(PCR(C384.public_bytes(Encoding.DER)))
    good = {  # name -> (bytes, args)
        "unsigned": (UNSIGNED, ["--expect-unsigned"]),
        "signed": (SIGNED, ["--expect-signed"]),
        "signed, integer arrays": (signed(int_arrays=True), ["--expect-signed"]),
        "signed, other PCR0": (build(BASE + [(SIGNATURE_T, signature_section(K384, C384, PCR(b"x")))]), []),
        "signed, register_index 1": (signed(index=1), []),
        "signed, ES256": (build(BASE + [(SIGNATURE_T, signature_section(K256, C256, PCR0, alg=-7))]), []),
        "signed, alg/curve mismatch": (build(BASE + [(SIGNATURE_T, signature_section(
            K256, C256, PCR0, alg=-7, claim_alg=-35))]), []),
        "one ramdisk, no metadata, aarch64": (build(BASE[:2] + BASE[3:4], flags=1, mem=512 << 20, cpus=4), []),
    }
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = {n: pool.submit(run, tmp, n, e, a) for n, (e, a) in good.items()}
        bad_jobs = [(n, pool.submit(run, tmp, n, e, a)) for n, e, a in BAD]
        res = {}
        for n, job in jobs.items():
            rc, out, err = job.result()
            check(rc == 0, f"{n}: exit {rc}, stderr {err.strip()}")
            res[n] = json.loads(out) if rc == 0 else None
        for n, job in bad_jobs:
            rc, out, err = job.result()
            line_ok = err.startswith("eif_reader: ") and err.count("\n") == 1 and out == ""
            check(rc == 1 and line_ok, f"{n}: expected exit 1 with one error line, got {rc} {err!r}")

    if res.get("unsigned"):
        u = res["unsigned"]
        check(list(u) == ["EifVersion", "Flags", "DefaultMemory", "DefaultCpus", "CheckCRC", "Sections",
                          "Cmdline", "Measurements", "IsSigned", "Metadata"], f"unsigned: keys {list(u)}")
        check((u["EifVersion"], u["Flags"], u["DefaultMemory"], u["DefaultCpus"], u["CheckCRC"])
              == (4, 0, 1 << 30, 2, True), "unsigned: header fields")
        secs = [("kernel", KERNEL), ("cmdline", CMDLINE), ("metadata", json.dumps(META).encode()),
                ("ramdisk", RD1), ("ramdisk", RD2)]
        check(u["Sections"] == [{"Type": t, "Offset": SEC(i), "Size": len(p)} for i, (t, p) in enumerate(secs)],
              f"unsigned: sections {u['Sections']}")
        check(u["Cmdline"] == CMDLINE.decode(), "unsigned: cmdline")
        check(u["Measurements"] == {"HashAlgorithm": "Sha384 { ... }", "PCR0": hx(PCR0),
                                    "PCR1": hx(PCR(KERNEL + CMDLINE + RD1)), "PCR2": hx(PCR(RD2))},
              f"unsigned: measurements {u['Measurements']}")
        check(u["IsSigned"] is False and u["Metadata"] == META, "unsigned: IsSigned/Metadata")
    for n in ("signed", "signed, integer arrays"):
        if res.get(n):
            s = res[n]
            check(s["IsSigned"] and s["SignatureCheck"] is True, f"{n}: SignatureCheck")
            check(s["Measurements"].get("PCR8") == pcr8 and s["Measurements"]["PCR0"] == hx(PCR0), f"{n}: PCR8")
            check(s["SigningCertificateSha384"] == hx(H(C384.public_bytes(Encoding.DER))), f"{n}: cert hash")
            check(s["Sections"][-1]["Type"] == "signature", f"{n}: signature section listed")
    for n in ("signed, other PCR0", "signed, register_index 1", "signed, alg/curve mismatch"):
        if res.get(n):
            check(res[n]["IsSigned"] and res[n]["SignatureCheck"] is False, f"{n}: SignatureCheck must be false")
    if res.get("signed, ES256"):
        check(res["signed, ES256"]["SignatureCheck"] is True, "signed, ES256: SignatureCheck")
    one = res.get("one ramdisk, no metadata, aarch64")
    if one:
        check(one["Measurements"]["PCR2"] == hx(PCR(b"")) and one["Metadata"] is None, "one ramdisk: PCR2/Metadata")
        check((one["Flags"], one["DefaultMemory"], one["DefaultCpus"]) == (1, 512 << 20, 4), "one ramdisk: header")

    for f in failures:
        print(f"FAILED: {f}")
    if failures:
        return 1
    print(f"ok: {checks} checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
