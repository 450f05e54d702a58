"""Capgo-compatible encrypted bundles: `kmsctl bundle encrypt|decrypt|verify
--format capgo` on a real kmsd key, checked with OpenSSL and with Capgo's own
CLI (@capgo/cli, pinned, installed from npm into build/npm-cache/capgo)."""

import hashlib
import json
import os
import pathlib
import random
import shutil
import subprocess
import zipfile

import pytest

from conftest import BUILD, KMSCTL, TOP, pb, run

RAW = "RSA_RAW_PKCS1_2048"
CAPGO_CLI = "8.68.1"
# The updater version tells Capgo's CLI which checksum scheme the app
# runs: 8.x devices check the V3 (RSA over the raw 32 bytes) checksum.
CAPGO_UPDATER = "8.51.23"
NPM_CACHE = pathlib.Path(os.environ.get("KMS_TEST_NPM_CACHE",
                                        TOP / "build" / "npm-cache" / "capgo"))
ASAN = "asan" in str(BUILD)
MIB = 1024 * 1024


def make_zip(path, size, seed=1):
    """A real zip holding about size bytes: random text and zero runs."""
    rnd = random.Random(seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("index.html", "<html>%d</html>\n" % seed)
        if size > 0:
            with z.open("assets/app.bin", "w") as f:
                left = size
                while left > 0:
                    n = min(left, MIB)
                    # Sparse-ish: a random head, then zeros.
                    head = rnd.randbytes(min(n, 4096))
                    f.write(head + bytes(n - len(head)))
                    left -= n
    return path


def encrypt(kmsd, key, src, out, check=True):
    p = kmsd.kmsctl("--json", "bundle", "encrypt", "--format", "capgo",
                    "--key", key, "-o", out, src, check=check)
    return p, (json.loads(p.stdout) if p.returncode == 0 else None)


def offline(*args, check=False):
    """kmsctl with no server and no credentials at all."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KMS_HOME", "KMS_ADDR")}
    env["KMS_HOME"] = "/nonexistent"
    return run([KMSCTL] + list(args), check=check, env=env)


def verify(pub, sealed, path, *extra):
    return offline("bundle", "verify", "--format", "capgo", "--pubkey", pub,
                   "--iv-session-key", sealed["ivSessionKey"],
                   "--checksum", sealed["checksum"], *extra, path)


def pubkey(kmsd, key, path, *extra):
    kmsd.kmsctl("pubkey", key, "--format", "pkcs1", "-o", path, *extra)
    return path


def flip_byte(src, dst, offset):
    data = bytearray(pathlib.Path(src).read_bytes())
    data[offset] ^= 0x20
    pathlib.Path(dst).write_bytes(bytes(data))
    return dst


def listing(d):
    return sorted(p.name for p in pathlib.Path(d).iterdir())


@pytest.fixture(scope="module")
def raw_key(keys):
    return keys.get(RAW)


def test_round_trip(kmsd, raw_key, workdir):
    src = make_zip(workdir / "app.zip", 300000)
    out = workdir / "app.enc.zip"
    out.write_bytes(b"an older bundle, replaced on success")
    p, sealed = encrypt(kmsd, raw_key, src, out)
    assert set(sealed) >= {"ivSessionKey", "checksum", "version",
                           "audit_seq"}
    assert sealed["version"] == 1
    iv, block = sealed["ivSessionKey"].split(":")
    assert len(iv) == 24 and len(block) == 344
    assert len(sealed["checksum"]) == 512
    assert sealed["checksum"] == sealed["checksum"].lower()
    receipts = sealed["audit_seq"]
    assert receipts["session_key"] > 0
    assert receipts["checksum"] > receipts["session_key"]
    # AES-CBC with PKCS#7: 1 to 16 bytes of padding, no header.
    plain = src.read_bytes()
    enc = out.read_bytes()
    assert len(enc) == (len(plain) // 16 + 1) * 16
    assert sealed["size"] == len(plain)
    assert sealed["encrypted_size"] == len(enc)
    assert plain[:64] not in enc

    pub = pubkey(kmsd, raw_key, workdir / "pub.pem")
    v = verify(pub, sealed, out)
    assert v.returncode == 0, v.stderr
    dec = workdir / "app.dec.zip"
    d = offline("bundle", "decrypt", "--format", "capgo", "--pubkey", pub,
                "--iv-session-key", sealed["ivSessionKey"],
                "--checksum", sealed["checksum"], "-o", dec, out)
    assert d.returncode == 0, d.stderr
    assert dec.read_bytes() == plain
    # The key may come from kms instead of a file.
    k = kmsd.kmsctl("bundle", "verify", "--format", "capgo", "--key", raw_key,
                    "--iv-session-key", sealed["ivSessionKey"],
                    "--checksum", sealed["checksum"], out)
    assert b"checksum matches" in k.stdout
    # Human output names the version used.
    h = kmsd.kmsctl("bundle", "encrypt", "--format", "capgo", "--key",
                    raw_key, "-o", workdir / "h.zip", src)
    text = h.stdout.decode()
    assert "version: 1\n" in text
    assert "ivSessionKey: " in text and "checksum: " in text
    # Two encryptions never share a session key or IV.
    assert sealed["ivSessionKey"] not in text
    # Both Sign calls are in the audit log under those receipts.
    log = kmsd.kmsctl("--json", "audit", "list", "--key-name", raw_key,
                      "--rpc", "Sign", identity="auditor").stdout.decode()
    seqs = {json.loads(line)["seq"] for line in log.splitlines() if line}
    assert {receipts["session_key"], receipts["checksum"]} <= seqs


def test_openssl_recovers_what_devices_check(kmsd, raw_key, workdir):
    """Independently of our own verifier: the PKCS#1 PEM kms gives is what
    Capgo embeds, and OpenSSL alone decrypts and checks the bundle."""
    src = make_zip(workdir / "a.zip", 70000, seed=7)
    out = workdir / "a.enc"
    _, sealed = encrypt(kmsd, raw_key, src, out)
    pub = pubkey(kmsd, raw_key, workdir / "pub.pem")
    text = pub.read_text()
    assert text.startswith("-----BEGIN RSA PUBLIC KEY-----\n")
    info = run(["openssl", "rsa", "-RSAPublicKey_in", "-in", pub, "-noout",
                "-text"]).stdout.decode()
    assert "Public-Key: (2048 bit)" in info and "65537" in info
    # The same key as the SPKI form.
    spki = workdir / "spki.pem"
    kmsd.kmsctl("pubkey", raw_key, "-o", spki)
    conv = run(["openssl", "rsa", "-pubin", "-in", spki, "-RSAPublicKey_out"])
    assert conv.stdout.decode() == text

    iv_b64, block_b64 = sealed["ivSessionKey"].split(":")
    import base64
    (workdir / "k.bin").write_bytes(base64.b64decode(block_b64))
    (workdir / "s.bin").write_bytes(bytes.fromhex(sealed["checksum"]))

    def recover(path):
        return run(["openssl", "pkeyutl", "-verifyrecover", "-pubin",
                    "-inkey", spki, "-in", path,
                    "-pkeyopt", "rsa_padding_mode:pkcs1"]).stdout

    key = recover(workdir / "k.bin")
    checksum = recover(workdir / "s.bin")
    assert len(key) == 16 and len(checksum) == 32
    dec = run(["openssl", "enc", "-d", "-aes-128-cbc", "-K", key.hex(),
               "-iv", base64.b64decode(iv_b64).hex(), "-in", out]).stdout
    assert dec == src.read_bytes()
    assert hashlib.sha256(dec).digest() == checksum
    # Our verifier takes the SPKI form as well.
    assert verify(spki, sealed, out).returncode == 0


def test_wrong_algorithm_refused(kmsd, keys, raw_key, workdir):
    src = make_zip(workdir / "a.zip", 1000)
    out = workdir / "out.zip"
    for alg in ("EC_P256_SHA256", "RSA_PKCS1_2048_SHA256"):
        p, _ = encrypt(kmsd, keys.get(alg), src, out, check=False)
        assert p.returncode == 2, p.stderr
        assert b"RSA_RAW_PKCS1_2048" in p.stderr
        assert alg.encode() in p.stderr
        assert listing(workdir) == ["a.zip"]
    # An existing output stays as it was.
    out.write_bytes(b"old")
    p, _ = encrypt(kmsd, keys.get("EC_P256_SHA256"), src, out, check=False)
    assert p.returncode == 2 and out.read_bytes() == b"old"
    # An unknown key is the server's refusal.
    p, _ = encrypt(kmsd, "release/it/no-such-key", src, out, check=False)
    assert p.returncode == 4 and b"NOT_FOUND" in p.stderr
    assert listing(workdir) == ["a.zip", "out.zip"]


def test_not_a_zip_refused(kmsd, raw_key, workdir):
    for name, data in (("text.zip", b"hello, not a zip\n"), ("empty.zip", b""),
                       ("pk.zip", b"PK\x05\x06" + bytes(18))):
        src = workdir / name
        src.write_bytes(data)
        p, _ = encrypt(kmsd, raw_key, src, workdir / "out.zip", check=False)
        assert p.returncode == 2, p.stderr
        assert b"not a zip" in p.stderr
        assert not (workdir / "out.zip").exists()
    assert listing(workdir) == ["empty.zip", "pk.zip", "text.zip"]
    # Nor is a directory, nor a missing file.
    p, _ = encrypt(kmsd, raw_key, workdir, workdir / "out.zip", check=False)
    assert p.returncode == 5
    p, _ = encrypt(kmsd, raw_key, workdir / "missing.zip",
                   workdir / "out.zip", check=False)
    assert p.returncode == 5
    assert listing(workdir) == ["empty.zip", "pk.zip", "text.zip"]


def test_refused_by_policy_leaves_nothing(kmsd, raw_key, workdir):
    src = make_zip(workdir / "a.zip", 100000)
    out = workdir / "out.zip"
    # The auditor may not even read the key; the unwrapper may read it
    # and its public key but not sign: it fails after the output was begun.
    for who, rpc in (("auditor", b"GetKey"), ("unwrapper", b"Sign")):
        p = kmsd.kmsctl("bundle", "encrypt", "--format", "capgo", "--key",
                        raw_key, "-o", out, src, identity=who, check=False)
        assert p.returncode == 4, p.stderr
        assert b"PERMISSION_DENIED" in p.stderr and rpc in p.stderr
        assert listing(workdir) == ["a.zip"]


def test_usage_errors(kmsd, raw_key, workdir):
    src = make_zip(workdir / "a.zip", 100)
    cases = [
        ["bundle", "encrypt", "--key", raw_key, "-o", "x.zip", src],
        ["bundle", "encrypt", "--format", "kms", "--key", raw_key, "-o",
         "x.zip", src],
        ["bundle", "encrypt", "--format", "capgo", "--key", raw_key, src],
        ["bundle", "encrypt", "--format", "capgo", "-o", "x.zip", src],
        ["bundle", "verify", "--format", "capgo", "--pubkey", "p.pem", src],
        ["bundle", "sign", "--format", "capgo", src],
        ["bundle"],
    ]
    cases.append(["bundle", "encrypt", "--format", "capgo", "--key", raw_key,
                  "-o", "-", src])
    for argv in cases:
        p = kmsd.kmsctl(*argv, check=False, cwd=workdir)
        assert p.returncode == 2, (argv, p.stderr)
    assert listing(workdir) == ["a.zip"]


@pytest.fixture(scope="module")
def sealed_bundle(kmsd, raw_key, tmp_path_factory):
    d = tmp_path_factory.mktemp("capgo-sealed")
    src = make_zip(d / "app.zip", 200000, seed=3)
    out = d / "app.enc.zip"
    _, sealed = encrypt(kmsd, raw_key, src, out)
    pub = pubkey(kmsd, raw_key, d / "pub.pem")
    return {"src": src, "out": out, "sealed": sealed, "pub": pub, "dir": d}


def test_tampering_refused(sealed_bundle, workdir):
    b = sealed_bundle
    size = b["out"].stat().st_size
    # One byte anywhere: the first block (garbles one plaintext block), the
    # middle, the padding block (bad padding, or a wrong checksum).
    for off in (0, size // 2, size - 1):
        bad = flip_byte(b["out"], workdir / "bad.zip", off)
        p = verify(b["pub"], b["sealed"], bad)
        assert p.returncode == 1, (off, p.stderr)
        assert b"FAILED" in p.stderr
        dec = workdir / "dec.zip"
        p = offline("bundle", "decrypt", "--format", "capgo", "--pubkey",
                    b["pub"], "--iv-session-key", b["sealed"]["ivSessionKey"],
                    "--checksum", b["sealed"]["checksum"], "-o", dec, bad)
        assert p.returncode == 1
        assert listing(workdir) == ["bad.zip"], "decrypt left a file"
    # Truncated by one block.
    data = b["out"].read_bytes()
    (workdir / "bad.zip").write_bytes(data[:-16])
    assert verify(b["pub"], b["sealed"], workdir / "bad.zip").returncode == 1
    # Extended by one block.
    (workdir / "bad.zip").write_bytes(data + data[-16:])
    assert verify(b["pub"], b["sealed"], workdir / "bad.zip").returncode == 1
    # The genuine one still passes.
    assert verify(b["pub"], b["sealed"], b["out"]).returncode == 0


def test_wrong_checksum_and_session_key_refused(kmsd, raw_key, sealed_bundle,
                                                workdir):
    b = sealed_bundle
    other_src = make_zip(workdir / "other.zip", 5000, seed=9)
    _, other = encrypt(kmsd, raw_key, other_src, workdir / "other.enc")
    # A genuine checksum of another bundle.
    mixed = dict(b["sealed"], checksum=other["checksum"])
    p = verify(b["pub"], mixed, b["out"])
    assert p.returncode == 1 and b"does not match" in p.stderr
    # A genuine session key of another bundle: does not decrypt.
    mixed = dict(b["sealed"], ivSessionKey=other["ivSessionKey"])
    assert verify(b["pub"], mixed, b["out"]).returncode == 1
    # A checksum block altered: its padding no longer verifies.
    c = b["sealed"]["checksum"]
    bad = c[:100] + ("0" if c[100] != "0" else "1") + c[101:]
    assert verify(b["pub"], dict(b["sealed"], checksum=bad),
                  b["out"]).returncode == 1
    # Malformed strings are usage errors.
    for field, value in (("checksum", c[:-2]), ("checksum", "zz" + c[2:]),
                         ("ivSessionKey", b["sealed"]["ivSessionKey"][1:]),
                         ("ivSessionKey", "abc"),
                         ("ivSessionKey", b["sealed"]["ivSessionKey"] + ":x")):
        p = verify(b["pub"], dict(b["sealed"], **{field: value}), b["out"])
        assert p.returncode == 2, (field, value, p.stderr)


def test_wrong_public_key_refused(sealed_bundle, workdir):
    b = sealed_bundle
    priv = workdir / "other.key"
    run(["openssl", "genrsa", "-out", priv, "2048"])
    other = workdir / "other.pem"
    run(["openssl", "rsa", "-in", priv, "-RSAPublicKey_out", "-out", other])
    p = verify(other, b["sealed"], b["out"])
    assert p.returncode == 1 and b"does not verify" in p.stderr
    # A private key is not taken for a public key, nor a 3072-bit key.
    assert verify(priv, b["sealed"], b["out"]).returncode == 2
    big = workdir / "big.key"
    run(["openssl", "genrsa", "-out", big, "3072"])
    run(["openssl", "rsa", "-in", big, "-pubout", "-out", workdir / "big.pem"])
    p = verify(workdir / "big.pem", b["sealed"], b["out"])
    assert p.returncode == 2 and b"RSA-2048" in p.stderr


def _max_rss_kib(argv, env):
    """kmsctl's peak RSS: the only child of a fresh Python process."""
    code = ("import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
            "print(r.returncode, resource.getrusage("
            "resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    p = run(["/usr/bin/python3", "-c", code] + argv, env=env, timeout=600)
    rc, rss = p.stdout.split()
    assert int(rc) == 0, p.stderr
    return int(rss)


def test_large_bundle_constant_memory(kmsd, raw_key, workdir):
    small = make_zip(workdir / "small.zip", 1000)
    big = make_zip(workdir / "big.zip", 50 * MIB, seed=5)
    base = [str(KMSCTL), "--addr", kmsd.addr, "--as", "ci", "bundle",
            "encrypt", "--format", "capgo", "--key", raw_key, "--json"]
    rss_small = _max_rss_kib(base + ["-o", str(workdir / "s.enc"),
                                     str(small)], kmsd.env())
    rss_big = _max_rss_kib(base + ["-o", str(workdir / "b.enc"), str(big)],
                           kmsd.env())
    # Memory does not grow with the input (50 MB more input, at most 4 MiB
    # more memory), and without sanitizers it stays small.
    assert rss_big - rss_small < 4 * 1024, (rss_small, rss_big)
    if not ASAN:
        assert rss_big < 20 * 1024, rss_big
    assert (workdir / "b.enc").stat().st_size == \
        (big.stat().st_size // 16 + 1) * 16
    # And it verifies, in constant memory too.
    p = kmsd.kmsctl("--json", "bundle", "encrypt", "--format", "capgo",
                    "--key", raw_key, "-o", workdir / "b.enc", big)
    sealed = json.loads(p.stdout)
    pub = pubkey(kmsd, raw_key, workdir / "pub.pem")
    argv = [str(KMSCTL), "bundle", "verify", "--format", "capgo", "--pubkey",
            str(pub), "--iv-session-key", sealed["ivSessionKey"],
            "--checksum", sealed["checksum"], str(workdir / "b.enc")]
    rss_verify = _max_rss_kib(argv, kmsd.env())
    print("kmsctl max RSS (KiB): encrypt 1 kB %d, encrypt 50 MB %d, "
          "verify 50 MB %d" % (rss_small, rss_big, rss_verify))
    assert rss_verify - rss_small < 4 * 1024, (rss_small, rss_verify)


def test_rotation_keeps_old_bundles_verifying(kmsd, workdir):
    """Needs RotateKey.  A bundle made before a rotation verifies with the
    old version's public key, the new one with the new key only."""
    name = "release/it/capgo-rotation"
    officer = kmsd.client("officer").kms
    officer.CreateKey(pb.CreateKeyRequest(
        name=name, algorithm=pb.Algorithm.Value(RAW)), timeout=120)
    src = make_zip(workdir / "app.zip", 20000)
    _, old = encrypt(kmsd, name, src, workdir / "v1.enc")
    assert old["version"] == 1
    rotated = officer.RotateKey(pb.RotateKeyRequest(name=name), timeout=120)
    assert rotated.primary_version == 2
    _, new = encrypt(kmsd, name, src, workdir / "v2.enc")
    assert new["version"] == 2
    pub1 = pubkey(kmsd, name, workdir / "v1.pem", "--version", "1")
    pub2 = pubkey(kmsd, name, workdir / "v2.pem", "--version", "2")
    assert pub1.read_bytes() != pub2.read_bytes()
    assert verify(pub1, old, workdir / "v1.enc").returncode == 0
    assert verify(pub2, new, workdir / "v2.enc").returncode == 0
    assert verify(pub1, new, workdir / "v2.enc").returncode == 1
    assert verify(pub2, old, workdir / "v1.enc").returncode == 1
    # --key fetches the primary version unless told otherwise.
    p = kmsd.kmsctl("bundle", "verify", "--format", "capgo", "--key", name,
                    "--version", "1", "--iv-session-key", old["ivSessionKey"],
                    "--checksum", old["checksum"], workdir / "v1.enc")
    assert p.returncode == 0
    # Encrypting with an explicit older version still works while enabled.
    p = kmsd.kmsctl("--json", "bundle", "encrypt", "--format", "capgo",
                    "--key", name, "--version", "1", "-o", workdir / "o.enc",
                    src)
    assert json.loads(p.stdout)["version"] == 1


# Capgo's own CLI, from npm.

NPM_PING_SECONDS = 25


def npm_reachable(npm):
    """Fails in well under 30 s, saying why, when the npm registry cannot
    be reached (npm itself would retry for many minutes)."""
    msg = ("the npm registry cannot be reached, so Capgo's CLI cannot be "
           "installed for the Capgo interoperability tests; run "
           "`make test OFFLINE=1` to skip them")
    try:
        p = run([npm, "ping", "--fetch-timeout=15000", "--fetch-retries=0"],
                check=False, timeout=NPM_PING_SECONDS,
                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("%s (npm ping gave no answer in %d s)" % (
            msg, NPM_PING_SECONDS), pytrace=False)
    if p.returncode != 0:
        pytest.fail("%s (npm ping exited %d: %s)" % (
            msg, p.returncode, p.stderr.decode(errors="replace")[-500:]),
            pytrace=False)


@pytest.fixture(scope="session")
def capgo_cli():
    """The pinned @capgo/cli (and the updater whose version selects the
    checksum scheme) in build/npm-cache/capgo, installed when missing."""
    mods = NPM_CACHE / "node_modules"

    def version(pkg):
        try:
            return json.loads((mods / pkg / "package.json").read_text())[
                "version"]
        except (OSError, ValueError, KeyError):
            return None

    if os.environ.get("KMS_TEST_OFFLINE", "0") not in ("", "0"):
        pytest.skip("OFFLINE=1: the Capgo interoperability tests need "
                    "Capgo's CLI from npm; skipped")
    if version("@capgo/cli") != CAPGO_CLI or \
            version("@capgo/capacitor-updater") != CAPGO_UPDATER:
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            pytest.fail("node and npm are needed for the Capgo interoperability "
                        "tests: run `make deps` (hsm-config/deps.sh installs "
                        "nodejs and npm)", pytrace=False)
        npm_reachable(npm)
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        p = run([npm, "install", "--prefix", NPM_CACHE, "--no-audit",
                 "--no-fund", "--no-save", "@capgo/cli@" + CAPGO_CLI,
                 "@capgo/capacitor-updater@" + CAPGO_UPDATER],
                check=False, timeout=900)
        if p.returncode != 0 or version("@capgo/cli") != CAPGO_CLI:
            pytest.fail("cannot install @capgo/cli@%s from npm into %s "
                        "(npm exited %d):\n%s" % (
                            CAPGO_CLI, NPM_CACHE, p.returncode,
                            p.stderr.decode(errors="replace")[-3000:]),
                        pytrace=False)
    return mods / "@capgo" / "cli" / "dist" / "index.js"


def capgo_project(d, public_pem):
    """A directory that Capgo's CLI takes for an app shipping public_pem."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "capacitor.config.json").write_text(json.dumps({
        "appId": "com.example.kms", "appName": "kms", "webDir": "dist",
        "plugins": {"CapacitorUpdater": {"publicKey": public_pem}}}))
    (d / "package.json").write_text(json.dumps({
        "name": "kms-capgo-check", "version": "1.0.0", "private": True,
        "dependencies": {"@capgo/capacitor-updater": CAPGO_UPDATER}}))
    if not (d / "node_modules").exists():
        (d / "node_modules").symlink_to(NPM_CACHE / "node_modules")
    return d


def capgo(cli, project, *args):
    env = dict(os.environ, CI="1", NO_COLOR="1")
    return run(["node", cli] + list(args), check=False, cwd=project, env=env,
               timeout=300, stdin=subprocess.DEVNULL)


def test_capgo_cli_decrypts_our_bundle(kmsd, raw_key, capgo_cli, workdir):
    src = make_zip(workdir / "app.zip", 150000, seed=11)
    enc = workdir / "proj" / "app.enc.zip"
    enc.parent.mkdir()
    _, sealed = encrypt(kmsd, raw_key, src, enc)
    pem = pubkey(kmsd, raw_key, workdir / "pub.pem").read_text()
    proj = capgo_project(workdir / "proj", pem)
    p = capgo(capgo_cli, proj, "bundle", "decrypt", enc.name,
              sealed["ivSessionKey"], "--checksum", sealed["checksum"])
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 0, out
    assert "V3" in out and "Checksum matches" in out, out
    assert (proj / "app.enc.zip_decrypted.zip").read_bytes() == src.read_bytes()

    # Tampered: Capgo's CLI refuses it too (trust its exit code only).
    bad = flip_byte(enc, proj / "bad.zip", enc.stat().st_size // 2)
    p = capgo(capgo_cli, proj, "bundle", "decrypt", bad.name,
              sealed["ivSessionKey"], "--checksum", sealed["checksum"])
    assert p.returncode != 0, (p.stdout + p.stderr).decode(errors="replace")
    # A checksum that does not belong to the bundle: its last hex digit
    # changed (reversing its tail, as before, left a palindrome as it was).
    c = sealed["checksum"]
    other = c[:-1] + ("1" if c[-1] == "0" else "0")
    assert other != c
    p = capgo(capgo_cli, proj, "bundle", "decrypt", enc.name,
              sealed["ivSessionKey"], "--checksum", other)
    assert p.returncode != 0, (p.stdout + p.stderr).decode(errors="replace")


def test_our_verify_accepts_capgo_cli_bundle(capgo_cli, workdir):
    """The other direction: a bundle made by Capgo's CLI with a local key
    verifies with our offline verifier."""
    priv = workdir / "capgo.key"
    run(["openssl", "genrsa", "-traditional", "-out", priv, "2048"])
    pub = workdir / "capgo.pub"
    run(["openssl", "rsa", "-in", priv, "-RSAPublicKey_out", "-out", pub])
    proj = capgo_project(workdir / "proj", pub.read_text())
    src = make_zip(proj / "app.zip", 40000, seed=13)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    p = capgo(capgo_cli, proj, "bundle", "encrypt", "app.zip", digest,
              "--key", str(priv), "--json")
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out + p.stderr.decode(errors="replace")
    sealed = json.loads(out[out.index("{"):])
    enc = proj / "app.zip_encrypted.zip"
    assert verify(pub, sealed, enc).returncode == 0
    dec = workdir / "dec.zip"
    p = offline("bundle", "decrypt", "--format", "capgo", "--pubkey", pub,
                "--iv-session-key", sealed["ivSessionKey"],
                "--checksum", sealed["checksum"], "-o", dec, enc)
    assert p.returncode == 0, p.stderr
    assert dec.read_bytes() == src.read_bytes()
