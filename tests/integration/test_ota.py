"""kms OTA bundles end to end: keys in kmsd's HSM, a signing-key statement
signed by the root key, bundles sealed by `kmsctl ota seal` as ci, opened
and refused by the device tool build/kmsb."""

import json
import os
import pathlib
import re
import time

import grpc
import pytest

from conftest import BUILD, pb, run

KMSB = BUILD / "kmsb"
APP = "com.example.it"
CHANNEL = "production"
ROOT = "ota/it/root"
SIGNERS = {"ED25519": "ota/it/ed25519", "EC_P256_SHA256": "ota/it/p256"}


def create(kmsd, name, alg):
    try:
        kmsd.client("officer").kms.CreateKey(pb.CreateKeyRequest(
            name=name, algorithm=pb.Algorithm.Value(alg)), timeout=120)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.ALREADY_EXISTS


def kmsb(*args, check=False, **kw):
    if not KMSB.exists():
        pytest.fail("%s does not exist" % KMSB, pytrace=False)
    return run([KMSB] + [str(a) for a in args], check=check, **kw)


def leftovers(d):
    """Temporary files (NAME.XXXXXX) a failed write might have left."""
    return sorted(p.name for p in pathlib.Path(d).iterdir()
                  if re.search(r"\.[A-Za-z0-9]{6}$", p.name))


@pytest.fixture(scope="module")
def ota(kmsd, tmp_path_factory):
    d = tmp_path_factory.mktemp("ota")
    create(kmsd, ROOT, "ED25519")
    for alg, name in SIGNERS.items():
        create(kmsd, name, alg)
    kmsd.kmsctl("pubkey", ROOT, "-o", d / "root.pem")
    kmsd.kmsctl("ota", "keygen", "-o", d / "dev.key", "--pub",
                d / "dev.pub", identity=None)
    kmsd.kmsctl("ota", "keygen", "-o", d / "other.key", "--pub",
                d / "other.pub", identity=None)
    assert (d / "dev.key").stat().st_mode & 0o077 == 0
    p = kmsd.kmsctl("--json", "ota", "statement", "--root-key", ROOT,
                    "--app", APP, "--signing-key", SIGNERS["ED25519"],
                    "--signing-key", SIGNERS["EC_P256_SHA256"], "--seq", "1",
                    "--expires-in", "3600", "-o", d / "statement-1")
    info = json.loads(p.stdout)
    assert info["kind"] == "statement" and info["audit_seq"] > 0
    return d


def seal(kmsd, d, data, seq, alg="ED25519", statement="statement-1",
         name="bundle", check=True, extra=()):
    src = d / (name + ".in")
    src.write_bytes(data)
    out = d / name
    p = kmsd.kmsctl("--json", "ota", "seal", "--key", SIGNERS[alg],
                    "--app", APP, "--channel", CHANNEL, "--version",
                    "1.0.%d" % seq, "--seq", str(seq), "--recipient",
                    d / "dev.pub", "--statement", d / statement, "-o", out,
                    *extra, src, check=check)
    return out, p


def open_args(d, key="dev.key", app=APP, channel=CHANNEL):
    return ["--root", d / "root.pem", "--app", app, "--channel", channel,
            "--recipient-key", d / key]


@pytest.mark.parametrize("alg", sorted(SIGNERS))
@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 1 << 20])
def test_round_trip(kmsd, ota, alg, size):
    data = os.urandom(size)
    bundle, p = seal(kmsd, ota, data, 7, alg=alg)
    info = json.loads(p.stdout)
    assert info["kind"] == "bundle" and info["seq"] == 7
    assert info["key"] == SIGNERS[alg] and info["audit_seq"] > 0
    raw = bundle.read_bytes()
    assert raw[:4] == b"KMSB"
    if size >= 32:
        assert data[:32] not in raw
    out = ota / "out"
    r = kmsb("open", *open_args(ota), "-o", out, bundle)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    assert b"verified" in r.stderr
    r = kmsb("verify", *open_args(ota), bundle)
    assert r.returncode == 0, r.stderr
    out.unlink()


def test_open_from_stdin(kmsd, ota):
    data = os.urandom(100000)
    bundle, _ = seal(kmsd, ota, data, 8)
    out = ota / "from-stdin"
    r = kmsb("open", *open_args(ota), "-o", out, "-",
             input=bundle.read_bytes())
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    r = kmsb("verify", *open_args(ota), "-", input=bundle.read_bytes()[:-1])
    assert r.returncode == 1 and b"truncated" in r.stderr


def test_inspect(kmsd, ota):
    bundle, _ = seal(kmsd, ota, b"hello" * 1000, 3)
    r = kmsb("inspect", bundle, check=True)
    text = r.stdout.decode()
    assert text.startswith("UNVERIFIED")
    assert "app: %s" % APP in text and "seq: 3" in text
    assert "payload bytes: 5000" in text and "statement seq: 1" in text
    r = kmsb("inspect", ota / "dev.pub")
    assert r.returncode != 0 and b"not a kms bundle" in r.stderr


def refused(ota, bundle, *args, why):
    out = ota / "refused-out"
    r = kmsb("open", *args, "-o", out, bundle)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert why.encode() in r.stderr, r.stderr
    assert not out.exists()
    assert leftovers(ota) == []
    return r


def test_refusals(kmsd, ota):
    data = os.urandom(200000)
    bundle, _ = seal(kmsd, ota, data, 9)
    good = bundle.read_bytes()
    bad = ota / "tampered"
    # A flipped byte in the last chunk, in the manifest, and a cut.
    for pos, why in ((len(good) - 100, "chunk does not match"),
                     (60, "signature does not verify")):
        t = bytearray(good)
        t[pos] ^= 0x01
        bad.write_bytes(bytes(t))
        refused(ota, bad, *open_args(ota), why=why)
    bad.write_bytes(good[:-20])
    refused(ota, bad, *open_args(ota), why="truncated")
    refused(ota, bundle, *open_args(ota, app="com.example.other"),
            why="another app")
    refused(ota, bundle, *open_args(ota, channel="beta"),
            why="another channel")
    refused(ota, bundle, *open_args(ota, key="other.key"),
            why="no content key sealed")
    refused(ota, bundle, *open_args(ota), "--last-seq", "9", why="rollback")
    # A bundle that lives a minute, checked ten minutes later; and one
    # checked before it was made.
    short, _ = seal(kmsd, ota, b"short", 9, name="short",
                    extra=("--expires-in", "60"))
    refused(ota, short, *open_args(ota), "--now",
            str(int(time.time()) + 600), why="bundle expired")
    refused(ota, short, *open_args(ota), "--now",
            str(int(time.time()) - 600), why="not yet valid")
    # The untouched bundle still opens: the refusals changed nothing.
    out = ota / "out-good"
    assert kmsb("open", *open_args(ota), "-o", out, bundle).returncode == 0
    assert out.read_bytes() == data


def test_rollback_with_state(kmsd, ota):
    state = ota / "device.state"
    out = ota / "installed"
    b5, _ = seal(kmsd, ota, b"five", 5, name="b5")
    b4, _ = seal(kmsd, ota, b"four", 4, name="b4")
    b6, _ = seal(kmsd, ota, b"six", 6, name="b6", alg="EC_P256_SHA256")
    r = kmsb("open", *open_args(ota), "--state", state, "-o", out, b5)
    assert r.returncode == 0, r.stderr
    assert state.read_text() == "kmsb-state 1 5 1\n"
    out.unlink()
    # The same bundle again, and an older one: refused, state unchanged.
    for b in (b5, b4):
        refused(ota, b, *open_args(ota), "--state", state, why="rollback")
        assert state.read_text() == "kmsb-state 1 5 1\n"
    r = kmsb("open", *open_args(ota), "--state", state, "-o", out, b6)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == b"six"
    assert state.read_text() == "kmsb-state 1 6 1\n"
    # A broken state file is an error, not "no state".
    state.write_text("garbage\n")
    r = kmsb("verify", *open_args(ota), "--state", state, b6)
    assert r.returncode == 5 and b"not a kmsb state file" in r.stderr


def test_signing_key_revoked_by_new_statement(kmsd, ota):
    """Statement 2 names only the P-256 key: once a device accepted it, a
    bundle signed with the Ed25519 key (carrying statement 1) is refused."""
    kmsd.kmsctl("ota", "statement", "--root-key", ROOT, "--app", APP,
                "--signing-key", SIGNERS["EC_P256_SHA256"], "--seq", "2",
                "--expires-in", "3600", "-o", ota / "statement-2")
    state = ota / "rot.state"
    new, _ = seal(kmsd, ota, b"new", 20, alg="EC_P256_SHA256",
                  statement="statement-2", name="new")
    assert kmsb("verify", *open_args(ota), "--state", state,
                new).returncode == 0
    out = ota / "rot-out"
    r = kmsb("open", *open_args(ota), "--state", state, "-o", out, new)
    assert r.returncode == 0, r.stderr
    assert state.read_text() == "kmsb-state 1 20 2\n"
    old, _ = seal(kmsd, ota, b"old", 21, alg="ED25519", name="old")
    refused(ota, old, *open_args(ota), "--state", state,
            why="older than the last accepted")
    # The Ed25519 key cannot ride on statement 2: kmsctl refuses to seal.
    p = kmsd.kmsctl("ota", "seal", "--key", SIGNERS["ED25519"], "--app",
                    APP, "--channel", CHANNEL, "--version", "x", "--seq",
                    "22", "--recipient", ota / "dev.pub", "--statement",
                    ota / "statement-2", "-o", ota / "never", ota / "old.in",
                    check=False)
    assert p.returncode != 0
    assert b"does not name the signing key" in p.stderr
    assert not (ota / "never").exists()


def test_seal_refuses_bad_input(kmsd, ota, keys):
    (ota / "x.in").write_bytes(b"x")

    def args(recipient="dev.pub"):
        return ["ota", "seal", "--app", APP, "--channel", CHANNEL,
                "--version", "1", "--seq", "1", "--recipient",
                ota / recipient, "--statement", ota / "statement-1", "-o",
                ota / "never"]

    base = args()
    # An RSA key is no bundle signer.
    p = kmsd.kmsctl(*base, "--key", keys.get("RSA_PSS_2048_SHA256"),
                    ota / "x.in", check=False)
    assert p.returncode == 2 and b"not an ED25519" in p.stderr
    # No such key: the server's NOT_FOUND.
    p = kmsd.kmsctl(*base, "--key", "ota/it/missing", ota / "x.in",
                    check=False)
    assert p.returncode == 4 and b"NOT_FOUND" in p.stderr
    # A recipient that is not an X25519 key.
    p = kmsd.kmsctl(*args("root.pem"), "--key", SIGNERS["ED25519"],
                    ota / "x.in", check=False)
    assert p.returncode == 2 and b"not an X25519 public key" in p.stderr
    # Not a regular file.
    p = kmsd.kmsctl(*base, "--key", SIGNERS["ED25519"], "/dev/null",
                    check=False)
    assert p.returncode == 2 and b"not a regular file" in p.stderr
    # Missing options.
    p = kmsd.kmsctl("ota", "seal", "--key", SIGNERS["ED25519"],
                    ota / "x.in", check=False)
    assert p.returncode == 2
    assert not (ota / "never").exists()
    assert leftovers(ota) == []
