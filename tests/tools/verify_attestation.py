#!/usr/bin/python3
"""Verifies an attestation document the way AWS specifies for Nitro's (ENCLAVES.md §1.4),
written from that description on Python's cbor2 and cryptography only: nothing here shares
code with the C++ that makes the documents (lib/attest, azote-rot).

  verify_attestation.py --root ROOT.pem DOCUMENT [--nonce HEX] [--max-age S]
                        [--expect-pcr I=HEX]... [--allow-debug]

DOCUMENT is a file (or - for stdin) holding the document as hex or base64 text, or as raw
CBOR. The root is pinned: the bundle's first certificate must carry its subject and key. On success
prints the payload as JSON (PCRs in hex) and exits 0; otherwise prints why on stderr and
exits 1.
"""
import argparse
import base64
import binascii
import datetime
import json
import string
import sys

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


class Refused(Exception):
    pass


def need(cond, why):
    if not cond:
        raise Refused(why)


def read_document(path):
    raw = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    text = raw.strip()
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        return raw
    if s and all(c in string.hexdigits for c in s):
        return bytes.fromhex(s)
    try:
        return base64.b64decode(s, validate=True)
    except binascii.Error:
        return raw


def check_bytes(payload, key, lo, hi, optional):
    v = payload.get(key)
    if v is None:
        need(optional, f"payload: {key} is missing or null")
        return None
    need(isinstance(v, bytes), f"payload: {key} is not a byte string")
    need(lo <= len(v) <= hi, f"payload: {key} is {len(v)} bytes, not {lo}..{hi}")
    return v


def parse(doc):
    top = cbor2.loads(doc)
    if isinstance(top, cbor2.CBORTag):
        need(top.tag == 18, f"tag {top.tag} is not COSE_Sign1 (18)")
        top = top.value
    need(isinstance(top, list) and len(top) == 4, "not a COSE_Sign1 array of 4")
    protected, unprotected, payload_bytes, signature = top
    need(isinstance(protected, bytes) and cbor2.loads(protected) == {1: -35}, "protected header is not {1: -35} (ES384)")
    need(isinstance(unprotected, dict), "unprotected header is not a map")
    need(isinstance(payload_bytes, bytes) and 1 <= len(payload_bytes) <= 16384, "payload is not 1..16384 bytes")
    need(isinstance(signature, bytes) and len(signature) == 96, "signature is not 96 bytes (ES384 r || s)")
    p = cbor2.loads(payload_bytes)
    need(isinstance(p, dict), "payload is not a map")
    need(isinstance(p.get("module_id"), str) and p["module_id"], "payload: module_id is not non-empty text")
    need(p.get("digest") == "SHA384", "payload: digest is not SHA384")
    ts = p.get("timestamp")
    need(isinstance(ts, int) and 0 < ts < 2**64, "payload: timestamp is not a positive integer")
    # An enclave's (or an instance's) document names its PCR map "pcrs"; a NitroTPM
    # document "nitrotpm_pcrs" (the TPM's SHA-384 bank). Exactly one of them.
    need(("pcrs" in p) != ("nitrotpm_pcrs" in p), "payload: not exactly one of pcrs and nitrotpm_pcrs")
    p["pcrs_key"] = "pcrs" if "pcrs" in p else "nitrotpm_pcrs"
    pcrs = p[p["pcrs_key"]]
    p["pcrs"] = pcrs
    need(isinstance(pcrs, dict) and 1 <= len(pcrs) <= 32, "payload: pcrs is not a map of 1..32")
    for k, v in pcrs.items():
        need(isinstance(k, int) and 0 <= k < 32, f"payload: PCR index {k!r} is not 0..31")
        need(isinstance(v, bytes) and len(v) in (32, 48, 64), f"payload: PCR {k} is not 32/48/64 bytes")
    check_bytes(p, "certificate", 1, 1024, False)
    bundle = p.get("cabundle")
    need(isinstance(bundle, list) and len(bundle) >= 1, "payload: cabundle is not a non-empty array")
    for c in bundle:
        need(isinstance(c, bytes) and 1 <= len(c) <= 1024, "payload: a cabundle entry is not 1..1024 bytes")
    check_bytes(p, "public_key", 1, 1024, True)
    check_bytes(p, "user_data", 0, 1024, True)
    check_bytes(p, "nonce", 0, 1024, True)
    return protected, payload_bytes, signature, p


def check_path(p, root_der, now):
    # [leaf, cabundle[N-1], ..., cabundle[0]], anchored on the pinned root.
    # The pinned root is a trust anchor (RFC 5280 §6.1.1: a name and a public key), so
    # the bundle's root must carry the pinned root's subject and key; its signature and
    # dates are checked as the others' are.
    pinned = x509.load_der_x509_certificate(root_der)
    ders = [p["certificate"]] + list(reversed(p["cabundle"]))
    certs = [x509.load_der_x509_certificate(d) for d in ders]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    need(certs[-1].subject == pinned.subject and
         certs[-1].public_key().public_bytes(serialization.Encoding.DER, spki) ==
         pinned.public_key().public_bytes(serialization.Encoding.DER, spki),
         "cabundle[0] is not the pinned root (subject and key)")
    n = len(certs)
    for i, c in enumerate(certs):
        need(c.not_valid_before <= now <= c.not_valid_after, f"certificate {i} ({c.subject.rfc4514_string()}) is outside its validity")
        is_leaf = i == 0
        try:
            bc = c.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            bc = None
        try:
            ku = c.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            ku = None
        if is_leaf:
            need(bc is None or (not bc.value.ca and bc.value.path_length is None), "the leaf is a CA or has a path length")
            need(ku is not None and ku.digital_signature, "the leaf lacks digitalSignature")
        else:
            need(bc is not None and bc.critical and bc.value.ca, f"certificate {i} is not a CA with critical basicConstraints")
            # pathLen: the number of CAs below this one in the path must not exceed it.
            cas_below = i - 1
            need(bc.value.path_length is None or cas_below <= bc.value.path_length, f"certificate {i}'s path length is exceeded")
            need(ku is not None and ku.key_cert_sign, f"certificate {i} lacks keyCertSign")
        issuer = certs[i + 1] if i + 1 < n else pinned  # the root is signed by the pinned key
        need(c.issuer == issuer.subject, f"certificate {i}'s issuer is not the next certificate's subject")
        key = issuer.public_key()
        need(isinstance(key, ec.EllipticCurvePublicKey), f"certificate {i}'s issuer key is not EC")
        try:
            key.verify(c.signature, c.tbs_certificate_bytes, ec.ECDSA(c.signature_hash_algorithm))
        except InvalidSignature:
            raise Refused(f"certificate {i}'s signature does not verify")
    leaf_key = certs[0].public_key()
    need(isinstance(leaf_key, ec.EllipticCurvePublicKey) and leaf_key.curve.name == "secp384r1", "the leaf's key is not P-384")
    return leaf_key


def verify(doc, root_der, nonce=None, max_age=None, expect=None, allow_debug=False, now=None):
    now = now or datetime.datetime.utcnow()
    try:
        protected, payload_bytes, signature, p = parse(doc)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as e:
        raise Refused(f"not CBOR of the expected shape: {e}")
    leaf_key = check_path(p, root_der, now)
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload_bytes])
    r = int.from_bytes(signature[:48], "big")
    s = int.from_bytes(signature[48:], "big")
    try:
        leaf_key.verify(encode_dss_signature(r, s), sig_structure, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise Refused("the document's signature does not verify with the leaf's key")
    debug = all(v == bytes(len(v)) for v in p["pcrs"].values())
    need(allow_debug or not debug, "every PCR is zero: a debug or development document, not for attestation")
    if max_age is not None:
        age_ms = now.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000 - p["timestamp"]
        need(-60_000 <= age_ms <= max_age * 1000, f"the timestamp is {age_ms / 1000:.1f} s old, over {max_age} s (or in the future)")
    if nonce is not None:
        need(p.get("nonce") == nonce, "the nonce is not the one asked for")
    for index, value in (expect or {}).items():
        need(p["pcrs"].get(index) == value, f"PCR {index} is not the expected value")
    return {
        "module_id": p["module_id"],
        "timestamp": p["timestamp"],
        "pcrs": {str(k): v.hex() for k, v in sorted(p["pcrs"].items())},
        "pcrs_key": p["pcrs_key"],
        "nonce": None if p.get("nonce") is None else p["nonce"].hex(),
        "user_data": None if p.get("user_data") is None else p["user_data"].hex(),
        "public_key": None if p.get("public_key") is None else p["public_key"].hex(),
        "debug": debug,
        "chain_length": 1 + len(p["cabundle"]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("document")
    ap.add_argument("--root", required=True, help="the pinned root certificate (PEM)")
    ap.add_argument("--nonce", help="the nonce the document must carry (hex)")
    ap.add_argument("--max-age", type=float, help="seconds the timestamp may be old")
    ap.add_argument("--expect-pcr", action="append", default=[], help="I=HEX: PCR I must hold HEX")
    ap.add_argument("--allow-debug", action="store_true", help="accept all-zero PCRs (development documents)")
    a = ap.parse_args()
    root_der = x509.load_pem_x509_certificate(open(a.root, "rb").read()).public_bytes(serialization.Encoding.DER)
    expect = {}
    for e in a.expect_pcr:
        i, _, h = e.partition("=")
        expect[int(i)] = bytes.fromhex(h)
    try:
        out = verify(read_document(a.document), root_der, bytes.fromhex(a.nonce) if a.nonce is not None else None,
                     a.max_age, expect, a.allow_debug)
    except Refused as e:
        print(f"verify_attestation: refused: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
