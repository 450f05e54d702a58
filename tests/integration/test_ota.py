"""kms OTA bundles end to end: keys in kmsd's HSM, a signing-key statement
signed by the root key, bundles sealed by `kmsctl ota seal` as ci, opened
and refused by the device tool build/kmsb."""

import hashlib
import itertools
import json
import os
import pathlib
import re
import time

import grpc
import pytest

from conftest import BUILD, openssl_verifies, pb, run

KMSB = BUILD / "kmsb"
APP = "com.example.it"
CHANNEL = "production"
ROOT = "ota/it/root"
SIGNERS = {"ED25519": "ota/it/ed25519", "EC_P256_SHA256": "ota/it/p256"}
# kmsd signs a manifest only when its sequence number is above the last one
# it signed for the app and channel: every seal takes the next one.
SEQ = itertools.count(100)


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
    seq = next(SEQ)
    bundle, p = seal(kmsd, ota, data, seq, alg=alg)
    info = json.loads(p.stdout)
    assert info["kind"] == "bundle" and info["seq"] == seq
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
    bundle, _ = seal(kmsd, ota, data, next(SEQ))
    out = ota / "from-stdin"
    r = kmsb("open", *open_args(ota), "-o", out, "-",
             input=bundle.read_bytes())
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    r = kmsb("verify", *open_args(ota), "-", input=bundle.read_bytes()[:-1])
    assert r.returncode == 1 and b"truncated" in r.stderr


def test_inspect(kmsd, ota):
    seq = next(SEQ)
    bundle, _ = seal(kmsd, ota, b"hello" * 1000, seq)
    r = kmsb("inspect", bundle, check=True)
    text = r.stdout.decode()
    assert text.startswith("UNVERIFIED")
    assert "app: %s" % APP in text and "seq: %d" % seq in text
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
    seq = next(SEQ)
    bundle, _ = seal(kmsd, ota, data, seq)
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
    refused(ota, bundle, *open_args(ota), "--last-seq", str(seq),
            why="rollback")
    # A bundle that lives a minute, checked ten minutes later; and one
    # checked before it was made.
    short, _ = seal(kmsd, ota, b"short", next(SEQ), name="short",
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
    s4, s5, s6 = next(SEQ), next(SEQ), next(SEQ)
    b4, _ = seal(kmsd, ota, b"four", s4, name="b4")
    b5, _ = seal(kmsd, ota, b"five", s5, name="b5")
    b6, _ = seal(kmsd, ota, b"six", s6, name="b6", alg="EC_P256_SHA256")
    r = kmsb("open", *open_args(ota), "--state", state, "-o", out, b5)
    assert r.returncode == 0, r.stderr
    assert state.read_text() == "kmsb-state 1 %d 1\n" % s5
    out.unlink()
    # The same bundle again, and an older one: refused, state unchanged.
    for b in (b5, b4):
        refused(ota, b, *open_args(ota), "--state", state, why="rollback")
        assert state.read_text() == "kmsb-state 1 %d 1\n" % s5
    r = kmsb("open", *open_args(ota), "--state", state, "-o", out, b6)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == b"six"
    assert state.read_text() == "kmsb-state 1 %d 1\n" % s6
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
    s_new = next(SEQ)
    new, _ = seal(kmsd, ota, b"new", s_new, alg="EC_P256_SHA256",
                  statement="statement-2", name="new")
    assert kmsb("verify", *open_args(ota), "--state", state,
                new).returncode == 0
    out = ota / "rot-out"
    r = kmsb("open", *open_args(ota), "--state", state, "-o", out, new)
    assert r.returncode == 0, r.stderr
    assert state.read_text() == "kmsb-state 1 %d 2\n" % s_new
    old, _ = seal(kmsd, ota, b"old", next(SEQ), alg="ED25519", name="old")
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


# The server-side guard: kmsd reads each manifest before it signs it.

def manifest_of(bundle):
    raw = bundle.read_bytes()
    assert raw[:4] == b"KMSB"
    return raw[:int.from_bytes(raw[6:10], "big")]


def guard_records(kmsd, seq_after):
    r = kmsd.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(
            after_seq=seq_after, limit=1000,
            filters=pb.AuditFilters(rpc="SignBundleManifest")), timeout=30)
    return [json.loads(x.json) for x in r.records]


def test_guard_sequence_and_audit(kmsd, ota):
    seq = next(SEQ)
    bundle, p = seal(kmsd, ota, b"guarded", seq, name="guarded")
    receipt = json.loads(p.stdout)["audit_seq"]
    manifest = manifest_of(bundle)
    # The record of the signature says which update was signed.
    recs = [r for r in guard_records(kmsd, receipt - 1)
            if r["seq"] == receipt]
    assert len(recs) == 1
    d = recs[0]["detail"]
    assert recs[0]["identity"] == "ci" and recs[0]["result"] == "ok"
    assert recs[0]["key"] == SIGNERS["ED25519"]
    assert (d["app"], d["channel"], d["version"], d["seq"]) == \
        (APP, CHANNEL, "1.0.%d" % seq, seq)
    assert d["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert d["payload_size"] == len(b"guarded")
    # The same number again, a lower one, or a leap: refused, no output.
    for n, code, why in ((seq, "FAILED_PRECONDITION", b"not above"),
                         (seq - 1, "FAILED_PRECONDITION", b"not above"),
                         (seq + (1 << 32) + 1, "INVALID_ARGUMENT",
                          b"more than")):
        _, p = seal(kmsd, ota, b"again", n, name="again", check=False)
        assert p.returncode == 4, p.stderr
        assert code.encode() in p.stderr and why in p.stderr, p.stderr
        assert not (ota / "again").exists()
    recs = guard_records(kmsd, receipt)
    assert any(r["result"] == "error" and r["detail"]["seq"] == seq
               for r in recs), recs
    # The next number is still free: the refusals consumed nothing.
    bundle, _ = seal(kmsd, ota, b"next", seq + 1, name="next")
    assert kmsb("verify", *open_args(ota), bundle).returncode == 0
    next(SEQ)


def test_guard_checks_the_manifest(kmsd, ota, keys, workdir):
    seq = next(SEQ)
    bundle, _ = seal(kmsd, ota, b"m", seq, name="for-rpc")
    manifest = manifest_of(bundle)
    ci = kmsd.client("ci").kms

    def sign(name, m):
        return ci.SignBundleManifest(pb.SignBundleManifestRequest(
            name=name, manifest=m), timeout=30)

    def refused(code, name, m, why):
        with pytest.raises(grpc.RpcError) as ei:
            sign(name, m)
        assert ei.value.code() == code, ei.value.details()
        assert why in ei.value.details(), ei.value.details()

    refused(grpc.StatusCode.INVALID_ARGUMENT, SIGNERS["ED25519"],
            b"not a manifest", "not a kms bundle manifest")
    refused(grpc.StatusCode.INVALID_ARGUMENT, SIGNERS["ED25519"],
            manifest[:-1], "not a kms bundle manifest")
    # The manifest names the Ed25519 key: another key will not sign it.
    refused(grpc.StatusCode.INVALID_ARGUMENT, SIGNERS["EC_P256_SHA256"],
            manifest, "another signing key")
    refused(grpc.StatusCode.FAILED_PRECONDITION,
            keys.get("RSA_PSS_2048_SHA256"), manifest, "ED25519 or")
    # Already signed (its number is used): refused, not signed twice.
    refused(grpc.StatusCode.FAILED_PRECONDITION, SIGNERS["ED25519"],
            manifest, "not above")
    # An expired manifest (created and expired 100 s ago: offsets 54 and
    # 62) is refused before its number is looked at.
    old = bytearray(manifest)
    past = (int(time.time()) - 100).to_bytes(8, "big")
    old[54:62] = past
    old[62:70] = past
    old[46:54] = next(SEQ).to_bytes(8, "big")
    refused(grpc.StatusCode.INVALID_ARGUMENT, SIGNERS["ED25519"],
            bytes(old), "expired")

    # A fresh manifest signed through the RPC verifies with OpenSSL over
    # the domain-separated message.
    seq = next(SEQ)
    src = ota / "raw.in"
    src.write_bytes(b"r")
    kmsd.kmsctl("ota", "seal", "--key", SIGNERS["EC_P256_SHA256"], "--app",
                APP, "--channel", "staging", "--version", "9", "--seq",
                str(seq), "--recipient", ota / "dev.pub", "--statement",
                ota / "statement-1", "-o", ota / "staging", src)
    staged = manifest_of(ota / "staging")
    # Same bytes, one more in the sequence: patch seq (offset 46) and sign.
    m2 = bytearray(staged)
    m2[46:54] = (seq + 1).to_bytes(8, "big")
    r = sign(SIGNERS["EC_P256_SHA256"], bytes(m2))
    assert (r.app_id, r.channel, r.sequence, r.previous_sequence) == \
        (APP, "staging", seq + 1, seq)
    assert r.manifest_sha256 == hashlib.sha256(bytes(m2)).digest()
    kmsd.kmsctl("pubkey", SIGNERS["EC_P256_SHA256"], "-o",
                workdir / "p256.pem")
    assert openssl_verifies(workdir / "p256.pem", r.signature,
                            b"kms-bundle-manifest-v1\0" + bytes(m2), workdir)


def test_guard_grants_apps_and_channels(kmsd, ota):
    """A role may sign manifests for one channel only."""
    path = kmsd.home / "policy.conf"
    original = path.read_text()
    path.write_text(original + (
        "\n# Added by the integration test.\n"
        "[role it-beta-publisher]\n"
        "members = officer\n"
        "allow = SignBundleManifest on ota/it/* bundles/%s/beta\n" % APP))

    def officer_seal(channel):
        src = ota / "officer.in"
        src.write_bytes(b"o")
        return kmsd.kmsctl(
            "ota", "seal", "--key", SIGNERS["ED25519"], "--app", APP,
            "--channel", channel, "--version", "1", "--seq",
            str(next(SEQ)), "--recipient", ota / "dev.pub", "--statement",
            ota / "statement-1", "-o", ota / "officer-out", src,
            identity="officer", check=False)

    try:
        kmsd.hup()
        deadline = time.monotonic() + 10
        while officer_seal("beta").returncode != 0:
            assert time.monotonic() < deadline, "policy not reloaded"
            time.sleep(0.2)
        p = officer_seal("production")
        assert p.returncode == 4 and b"PERMISSION_DENIED" in p.stderr
        assert ("bundles/%s/production" % APP).encode() in p.stderr
    finally:
        path.write_text(original)
        kmsd.hup()
        # The reload is asynchronous: later tests must not see the role.
        deadline = time.monotonic() + 20
        while "it-beta-publisher" in kmsd.client("officer").kms.WhoAmI(
                pb.WhoAmIRequest(), timeout=10).roles:
            assert time.monotonic() < deadline, "policy not restored"
            time.sleep(0.1)
