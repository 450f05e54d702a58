"""An independent transparency-log verifier for the tests, written from
RFC 9162 and the C2SP signed-note and tlog-checkpoint specifications,
sharing no code with kms: Merkle tree hashes, inclusion and consistency
proof verification, and Ed25519 signed notes (Python `cryptography`).
"""

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey, Ed25519PublicKey)
from cryptography.exceptions import InvalidSignature

DASH = "\u2014"


def leaf_hash(line):
    return hashlib.sha256(b"\x00" + line).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves):
    """RFC 9162 2.1.1: the root of a list of leaf hashes."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_root, second_root, proof):
    """RFC 9162 2.1.4.2 (equal sizes need an empty proof, equal roots)."""
    if first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


def key_id(name, raw_pub):
    return hashlib.sha256(name.encode() + b"\n\x01" + raw_pub).digest()[:4]


def raw_public(pub):
    return pub.public_bytes(serialization.Encoding.Raw,
                            serialization.PublicFormat.Raw)


def load_pem_public(pem):
    k = serialization.load_pem_public_key(
        pem.encode() if isinstance(pem, str) else pem)
    assert isinstance(k, Ed25519PublicKey), "not an Ed25519 key"
    return k


def split_note(note):
    """(text, [(name, key_id, sig)]) of a signed note; raises on bad form."""
    i = note.rindex("\n\n")
    text, sigs = note[:i + 1], note[i + 2:]
    assert sigs.endswith("\n") and text.endswith("\n"), note
    out = []
    for line in sigs[:-1].split("\n"):
        assert line.startswith(DASH + " "), line
        name, b64 = line[2:].rsplit(" ", 1)
        raw = base64.b64decode(b64, validate=True)
        out.append((name, raw[:4], raw[4:]))
    return text, out


def verify_note(note, name, pub):
    """The note's text when it carries a valid signature by (name, pub)."""
    text, sigs = split_note(note)
    kid = key_id(name, raw_public(pub))
    for n, k, sig in sigs:
        if n == name and k == kid:
            try:
                pub.verify(sig, text.encode())
                return text
            except InvalidSignature:
                pass
    raise AssertionError("no valid signature by %s in:\n%s" % (name, note))


def parse_checkpoint(text):
    """(origin, size, root) of a tlog-checkpoint body."""
    lines = text.split("\n")
    assert len(lines) >= 4 and lines[-1] == "", text
    size = int(lines[1])
    assert str(size) == lines[1], text
    root = base64.b64decode(lines[2], validate=True)
    assert len(root) == 32, text
    return lines[0], size, root


def checkpoint_text(origin, size, root):
    return "%s\n%d\n%s\n" % (origin, size, base64.b64encode(root).decode())


def sign_note(text, name, priv):
    sig = priv.sign(text.encode())
    kid = key_id(name, raw_public(priv.public_key()))
    return "%s\n%s %s %s\n" % (text, DASH, name,
                               base64.b64encode(kid + sig).decode())


def new_key():
    return Ed25519PrivateKey.generate()


def public_pem(priv):
    return priv.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo)


def public_der(priv):
    return priv.public_key().public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo)
