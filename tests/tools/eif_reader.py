#!/usr/bin/python3
"""Independent, strict reader of Enclave Image Files (EIF), the Nitro Enclaves image format.

Written only from /work/shared/ref/ENCLAVES.md (§2 PCRs, §4 EIF, §1.1 COSE_Sign1), RFC 9052 and
zlib's CRC-32; it shares no code with azote's EIF writer, so tests can use it as an oracle.

  eif_reader.py [--expect-signed | --expect-unsigned] FILE.eif

On success prints one JSON object (header fields, section list, cmdline, PCR0/1/2[/8], signature
state, metadata) and exits 0. On any malformation prints "eif_reader: <why>" on stderr, exits 1.

Decisions where §4 leaves room (all strict, this is a test oracle):
- versions 2, 3, 4 are accepted (§4: v2 added the CRC, v3 the signature section, v4 the metadata
  section), but a v2 file may not carry a signature or metadata section and a v3 file no metadata;
- header flags may only use bit 0 (aarch64); reserved/unused header fields and the unused slots of
  section_offsets/section_sizes (index >= num_sections) must be zero;
- the section table is walked in index order and must describe a gap-free, increasing layout that
  starts right after the 548-byte header and ends exactly at end of file (no trailing bytes), so
  "file order" for the CRC is table order and offset order at once;
- signature byte fields may be CBOR bstr or arrays of integers 0..255; the signature section must
  hold exactly one entry; COSE must be untagged, protected exactly {1: alg}, unprotected {};
- metadata must be UTF-8 JSON holding an object; cmdline must be UTF-8.
"""
import argparse
import hashlib
import io
import json
import struct
import sys
import zlib

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAGIC = b".eif"
HEADER_SIZE = 548          # §4 header: fields up to eif_crc32 at offset 544
SECTION_HEADER = 12        # type u16, flags u16, size u64
MAX_SECTIONS = 32
TYPES = {1: "kernel", 2: "cmdline", 3: "ramdisk", 4: "signature", 5: "metadata"}
MIN_VERSION_FOR = {"signature": 3, "metadata": 4}
Z = bytes(48)
# COSE alg -> (curve name, hash, coordinate size in bytes)
ALGS = {-7: ("secp256r1", hashes.SHA256, 32),
        -35: ("secp384r1", hashes.SHA384, 48),
        -36: ("secp521r1", hashes.SHA512, 66)}


class Malformed(Exception):
    pass


def need(cond, why):
    if not cond:
        raise Malformed(why)


def sha384(data):
    return hashlib.sha384(data).digest()


def pcr(measured):
    """A register extended once from zero with H(measured): H(Z || H(measured))."""
    return sha384(Z + sha384(measured)).hex()


def cbor_exact(data, what):
    """Decodes one CBOR item that must use up all of data."""
    try:
        fp = io.BytesIO(data)
        item = cbor2.CBORDecoder(fp).decode()
    except Exception as e:  # cbor2 raises a variety of errors on bad input
        raise Malformed(f"{what}: not valid CBOR ({e})")
    need(fp.tell() == len(data), f"{what}: {len(data) - fp.tell()} trailing bytes after the CBOR item")
    return item


def as_bytes(v, what):
    """A byte field written either as CBOR bstr or as an array of small integers."""
    if isinstance(v, bytes):
        return v
    need(isinstance(v, list), f"{what}: expected bstr or integer array, got {type(v).__name__}")
    for i, b in enumerate(v):
        need(type(b) is int and 0 <= b <= 255, f"{what}[{i}]: not an integer 0..255")
    return bytes(v)


def parse_header(data):
    need(len(data) >= HEADER_SIZE, f"file is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    need(data[0:4] == MAGIC, f"magic at offset 0 is {data[0:4].hex()}, expected {MAGIC.hex()}")
    version, flags, mem, cpus, reserved, num = struct.unpack_from(">HHQQHH", data, 4)
    offsets = struct.unpack_from(">32Q", data, 28)
    sizes = struct.unpack_from(">32Q", data, 284)
    unused, crc = struct.unpack_from(">II", data, 540)
    need(version in (2, 3, 4), f"version (offset 4) is {version}, only 2..4 are known")
    need(flags & ~1 == 0, f"header flags (offset 6) 0x{flags:04x} use bits other than bit 0")
    need(reserved == 0, f"reserved field (offset 24) is {reserved}, expected 0")
    need(unused == 0, f"unused field (offset 540) is {unused}, expected 0")
    need(1 <= num <= MAX_SECTIONS, f"num_sections (offset 26) is {num}, expected 1..{MAX_SECTIONS}")
    for i in range(num, MAX_SECTIONS):
        need(offsets[i] == 0 and sizes[i] == 0, f"unused section slot {i} has non-zero offset/size")
    return dict(version=version, flags=flags, mem=mem, cpus=cpus, num=num,
                offsets=offsets[:num], sizes=sizes[:num], crc=crc)


def parse_sections(data, hdr):
    """Walks the section table; returns [(type name, header offset, payload bytes)] in table order."""
    sections, pos = [], HEADER_SIZE
    for i, (off, size) in enumerate(zip(hdr["offsets"], hdr["sizes"])):
        where = f"section {i} (offset {off})"
        need(off >= HEADER_SIZE, f"{where}: overlaps the EIF header")
        need(i == 0 or off > hdr["offsets"][i - 1], f"{where}: section_offsets not increasing in the table")
        need(off + SECTION_HEADER + size <= len(data),
             f"{where}: header + {size}-byte payload runs past end of file ({len(data)} bytes)")
        need(off >= pos, f"{where}: overlaps the previous section, which ends at {pos}")
        need(off == pos, f"{where}: gap of {off - pos} bytes after the previous section")
        stype, sflags, ssize = struct.unpack_from(">HHQ", data, off)
        need(stype in TYPES, f"{where}: unknown section type {stype}")
        need(sflags == 0, f"{where}: section flags are 0x{sflags:04x}, expected 0")
        need(ssize == size, f"{where}: section header says size {ssize}, section_sizes[{i}] says {size}")
        name = TYPES[stype]
        need(hdr["version"] >= MIN_VERSION_FOR.get(name, 0),
             f"{where}: {name} section not allowed in an EIF of version {hdr['version']}")
        sections.append((name, off, data[off + SECTION_HEADER: off + SECTION_HEADER + size]))
        pos = off + SECTION_HEADER + size
    need(pos == len(data), f"{len(data) - pos} trailing bytes after the last section (offset {pos})")
    # CRC over header bytes 0..543, then each section header + payload in (table = file) order.
    crc = zlib.crc32(data[:544])
    for _, off, payload in sections:
        crc = zlib.crc32(data[off: off + SECTION_HEADER + len(payload)], crc)
    need(crc == hdr["crc"], f"eif_crc32 (offset 544) is 0x{hdr['crc']:08x}, computed 0x{crc:08x}")
    counts = {t: sum(1 for s in sections if s[0] == t) for t in TYPES.values()}
    for t in ("kernel", "cmdline", "ramdisk"):
        need(counts[t] >= 1, f"no {t} section")
    for t in ("kernel", "cmdline", "signature", "metadata"):
        need(counts[t] <= 1, f"{counts[t]} {t} sections, at most one allowed")
    return sections


def decode_signature(payload):
    """Decodes the signature section (§4) into its parts; raises Malformed if it cannot."""
    what = "signature section"
    entries = cbor_exact(payload, what)
    need(isinstance(entries, list) and len(entries) == 1, f"{what}: expected a CBOR array of one entry")
    entry = entries[0]
    need(isinstance(entry, dict) and set(entry) == {"signing_certificate", "signature"},
         f"{what}: entry must be a map with keys signing_certificate and signature")
    pem = as_bytes(entry["signing_certificate"], "signing_certificate")
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except Exception as e:
        raise Malformed(f"signing_certificate: not a PEM X.509 certificate ({e})")
    cose = cbor_exact(as_bytes(entry["signature"], "signature"), "COSE_Sign1")
    need(isinstance(cose, list) and len(cose) == 4, "COSE_Sign1: expected an untagged array of 4")
    protected, unprotected, body, sig = cose
    need(isinstance(protected, bytes), "COSE_Sign1 protected: not a bstr")
    prot = cbor_exact(protected, "COSE_Sign1 protected")
    need(isinstance(prot, dict) and set(prot) == {1} and prot[1] in ALGS,
         f"COSE_Sign1 protected: expected {{1: -7|-35|-36}}, got {prot!r}")
    need(unprotected == {}, "COSE_Sign1 unprotected: expected an empty map")
    need(isinstance(body, bytes), "COSE_Sign1 payload: not a bstr")
    need(isinstance(sig, bytes), "COSE_Sign1 signature: not a bstr")
    reg = cbor_exact(body, "COSE_Sign1 payload")
    need(isinstance(reg, dict) and set(reg) == {"register_index", "register_value"},
         "COSE_Sign1 payload: expected a map with keys register_index and register_value")
    need(type(reg["register_index"]) is int, "register_index: not an integer")
    value = as_bytes(reg["register_value"], "register_value")
    need(len(value) == 48, f"register_value: {len(value)} bytes, expected 48")
    return dict(cert=cert, alg=prot[1], protected=protected, body=body, sig=sig,
                index=reg["register_index"], value=value)


def check_signature(s, pcr0):
    """Returns None when the signature holds for pcr0 (bytes), else the reason it does not."""
    curve, hash_cls, n = ALGS[s["alg"]]
    key = s["cert"].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return "signing certificate does not hold an EC key"
    if key.curve.name != curve:
        return f"COSE alg {s['alg']} does not match the certificate's curve {key.curve.name}"
    if len(s["sig"]) != 2 * n:
        return f"COSE signature is {len(s['sig'])} bytes, expected {2 * n} (raw r||s)"
    der = encode_dss_signature(int.from_bytes(s["sig"][:n], "big"), int.from_bytes(s["sig"][n:], "big"))
    to_be_signed = cbor2.dumps(["Signature1", s["protected"], b"", s["body"]])
    try:
        key.verify(der, to_be_signed, ec.ECDSA(hash_cls()))
    except InvalidSignature:
        return "COSE signature does not verify with the certificate's key"
    if s["index"] != 0:
        return f"signature is for register {s['index']}, expected 0"
    if s["value"] != pcr0:
        return "signed register_value differs from the recomputed PCR0"
    return None


def read_eif(data, expect):
    hdr = parse_header(data)
    sections = parse_sections(data, hdr)
    by_type = lambda t: [p for name, _, p in sections if name == t]
    kernel, cmdline, ramdisks = by_type("kernel")[0], by_type("cmdline")[0], by_type("ramdisk")
    try:
        cmdline_text = cmdline.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Malformed(f"cmdline section: not UTF-8 ({e})")
    pcr0_raw = sha384(Z + sha384(kernel + cmdline + b"".join(ramdisks)))
    measurements = {"HashAlgorithm": "Sha384 { ... }", "PCR0": pcr0_raw.hex(),
                    "PCR1": pcr(kernel + cmdline + ramdisks[0]), "PCR2": pcr(b"".join(ramdisks[1:]))}
    out = {"EifVersion": hdr["version"], "Flags": hdr["flags"], "DefaultMemory": hdr["mem"],
           "DefaultCpus": hdr["cpus"], "CheckCRC": True,
           "Sections": [{"Type": n, "Offset": o, "Size": len(p)} for n, o, p in sections],
           "Cmdline": cmdline_text, "Measurements": measurements, "IsSigned": bool(by_type("signature"))}
    if out["IsSigned"]:
        need(expect != "unsigned", "EIF is signed but --expect-unsigned was given")
        s = decode_signature(by_type("signature")[0])
        cert_der = s["cert"].public_bytes(Encoding.DER)
        measurements["PCR8"] = pcr(cert_der)
        failure = check_signature(s, pcr0_raw)
        need(failure is None or expect != "signed", f"signature check failed: {failure}")
        out["SignatureCheck"] = failure is None
        out["SigningCertificateSha384"] = sha384(cert_der).hex()
    else:
        need(expect != "signed", "EIF is not signed but --expect-signed was given")
    out["Metadata"] = None
    for meta in by_type("metadata"):
        def no_constants(c):
            raise ValueError(f"{c} is not JSON")
        try:
            out["Metadata"] = json.loads(meta.decode("utf-8"), parse_constant=no_constants)
        except (UnicodeDecodeError, ValueError) as e:
            raise Malformed(f"metadata section: not UTF-8 JSON ({e})")
        need(isinstance(out["Metadata"], dict), "metadata section: JSON is not an object")
    return out


def main():
    ap = argparse.ArgumentParser(description="Strict, independent EIF reader (ENCLAVES.md §4).")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--expect-signed", dest="expect", action="store_const", const="signed")
    group.add_argument("--expect-unsigned", dest="expect", action="store_const", const="unsigned")
    ap.add_argument("eif")
    args = ap.parse_args()
    try:
        with open(args.eif, "rb") as f:
            data = f.read()
        result = read_eif(data, args.expect)
    except (Malformed, OSError) as e:
        print(f"eif_reader: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
