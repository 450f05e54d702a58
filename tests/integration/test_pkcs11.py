"""The PKCS#11 module (build/libkms-pkcs11.so) against a real kmsd, through
the signing tools themselves, each result checked by the tool's own
verifier or by OpenSSL against the public key kmsctl hands out.

The tools run from a directory of their own, with KMS_HOME, KMS_ADDR and
KMS_IDENTITY unset: only the configuration file named by KMS_PKCS11_CONFIG
points the module at kmsd.  tests/p11drive.c shows what the tools do not:
exact return values, multi-part, the fork rule, and a version disabled
while a signer holds its key.
"""

import hashlib
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import BUILD, Kmsd, free_port, make_home, pb, run

MODULE = BUILD / "libkms-pkcs11.so"
P11DRIVE = BUILD / "p11drive"
PIN = "123456"

# Every key under p11/; libp11 0.4.12 (OpenSSL's engine) gives up listing
# private keys at the first Ed25519 key, so that key lives apart and the
# engine's configuration takes the prefix p11/x/.
KEYS = {
    "ec256": ("p11/x/ec-p256", "EC_P256_SHA256"),
    "ec384": ("p11/x/ec-p384", "EC_P384_SHA384"),
    "rsa": ("p11/x/rsa-pkcs1", "RSA_PKCS1_2048_SHA256"),
    "pss": ("p11/x/rsa-pss", "RSA_PSS_2048_SHA256"),
    "raw": ("p11/x/rsa-raw", "RSA_RAW_PKCS1_2048"),
    "ed": ("p11/ed/ed25519", "ED25519"),
}

SHA256_DI = bytes.fromhex("3031300d060960864801650304020105000420")
SHA512_DI = bytes.fromhex("3051300d060960864801650304020305000440")


def tool_env(extra=None):
    """The environment of a signing tool: no kms variables, and, on the
    sanitizer build, the sanitizer runtimes preloaded (the tools are not
    built with them)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KMS_HOME", "KMS_ADDR", "KMS_IDENTITY")}
    if "asan" in str(BUILD):
        libs = []
        for lib in ("libasan.so", "libubsan.so"):
            p = subprocess.run(["gcc", "-print-file-name=" + lib],
                               stdout=subprocess.PIPE).stdout.decode().strip()
            libs.append(p)
        env["LD_PRELOAD"] = " ".join(libs)
        # The tools' own leaks are not the module's; setgid ssh-agent
        # drops LD_PRELOAD, so its helper loads the runtime with the
        # module, late.
        env["ASAN_OPTIONS"] = ("detect_leaks=0:handle_segv=0:"
                               "verify_asan_link_order=0")
    env.update(extra or {})
    return env


class P11:
    """The module's configuration for one identity, in a directory of its
    own with relative paths, as a CI machine would have it."""

    def __init__(self, kmsd, root, identity="ci", prefix=None, addr=None):
        self.kmsd = kmsd
        self.dir = root / ("conf-" + identity + (prefix or "").replace(
            "/", "_"))
        self.cwd = root / "elsewhere"
        self.cwd.mkdir(exist_ok=True)
        pki = self.dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        src = kmsd.home / "pki"
        shutil.copy(src / "ca.pem", pki / "ca.pem")
        shutil.copy(src / "clients" / (identity + ".pem"), pki / "me.pem")
        shutil.copy(src / "clients" / (identity + ".key"), pki / "me.key")
        text = ("[client]\naddr = %s\nca = pki/ca.pem\ncert = pki/me.pem\n"
                "key = pki/me.key\n" % (addr or kmsd.addr))
        if prefix:
            text += "prefix = %s\n" % prefix
        self.conf = self.dir / "kms-pkcs11.conf"
        self.conf.write_text(text)

    def env(self, extra=None):
        e = {"KMS_PKCS11_CONFIG": str(self.conf)}
        e.update(extra or {})
        return tool_env(e)

    def run(self, argv, check=True, **kw):
        kw.setdefault("env", self.env())
        kw.setdefault("cwd", str(self.cwd))
        return run(argv, check=check, **kw)

    def drive(self, *args, check=True, **kw):
        return self.run([P11DRIVE, MODULE] + list(args), check=check, **kw)

    def tool(self, *args, check=True, **kw):
        return self.run(["pkcs11-tool", "--module", MODULE] + list(args),
                        check=check, **kw)


@pytest.fixture(scope="module")
def p11(kmsd, tmp_root):
    for f in (MODULE, P11DRIVE):
        if not f.exists():
            pytest.fail("%s does not exist: build it first" % f,
                        pytrace=False)
    officer = kmsd.client("officer").kms
    for name, alg in KEYS.values():
        try:
            officer.CreateKey(pb.CreateKeyRequest(
                name=name, algorithm=pb.Algorithm.Value(alg)), timeout=120)
        except Exception as e:  # made by an earlier run of this module
            if "ALREADY_EXISTS" not in str(e):
                raise
    root = tmp_root / "pkcs11"
    root.mkdir(exist_ok=True)
    return P11(kmsd, root)


@pytest.fixture()
def w(p11, workdir):
    return workdir


def pubkey(kmsd, name, path):
    pem = kmsd.kmsctl("pubkey", name).stdout
    path.write_bytes(pem)
    return path


def objects(p11):
    """label -> (ID hex) of the private keys pkcs11-tool -O lists."""
    out = p11.tool("-O").stdout.decode()
    ids, label = {}, None
    for line in out.splitlines():
        m = re.match(r"\s+label:\s+(.*)$", line)
        if m:
            label = m.group(1).strip()
        m = re.match(r"\s+ID:\s+([0-9a-f]+)$", line)
        if m and label:
            ids[label] = m.group(1)
    return ids, out


def audit_signs(kmsd, name):
    """The Sign records of key name, as (identity, result)."""
    recs, after = [], 0
    while True:
        r = kmsd.client("auditor").kms.ListAuditRecords(
            pb.ListAuditRecordsRequest(
                after_seq=after, limit=1000,
                filters=pb.AuditFilters(key=name, rpc="Sign")), timeout=30)
        recs += [(x.identity, x.result) for x in r.records]
        if r.next_after_seq <= after or r.next_after_seq >= r.last_seq:
            return recs
        after = r.next_after_seq


def test_token_and_objects(p11):
    out = p11.tool("-L").stdout.decode()
    assert re.search(r"token label\s+:\s+kms\b", out), out
    # No login required: the client certificate is the identity.
    assert "login required" not in out
    ids, out = objects(p11)
    for name, alg in KEYS.values():
        assert name in ids, out
    assert "sensitive, always sensitive, never extractable" in out
    # The EC point is a DER OCTET STRING (04 41 04 ...), as OpenSSL and
    # OpenSSH read it.
    assert re.search(r"EC_POINT:\s+044104", out), out
    listing = p11.drive("list").stdout.decode()
    for line in listing.splitlines():
        if line.startswith("private "):
            assert line.endswith("sensitive=1 extractable=0 "
                                 "value=CKR_ATTRIBUTE_SENSITIVE"), line
    # Private and public objects of one key share label and ID.
    pub = [l for l in listing.splitlines() if l.startswith("public ")]
    prv = [l for l in listing.splitlines() if l.startswith("private ")]
    assert sorted(l.split()[1:3] for l in pub) == \
        sorted(l.split()[1:3] for l in prv)
    # C_Login with any PIN succeeds, for tools that always log in.
    p11.tool("--login", "--pin", PIN, "-O")


SIGN_CASES = {
    # mechanism, key, what the tool signs, how OpenSSL checks it
    "ECDSA": ("ec256", "digest256", "ec"),
    "ECDSA-SHA256": ("ec256", "msg", "ec"),
    "ECDSA-SHA384": ("ec384", "msg", "ec384"),
    "EDDSA": ("ed", "msg", "ed"),
    "RSA-PKCS": ("rsa", "digestinfo", "rsa"),
    "RSA-PKCS-raw": ("raw", "msg32", "raw"),
    "SHA256-RSA-PKCS": ("rsa", "msg", "rsa"),
    "RSA-PKCS-PSS": ("pss", "digest256", "pss"),
    "SHA256-RSA-PKCS-PSS": ("pss", "msg", "pss"),
}


@pytest.mark.parametrize("mech", list(SIGN_CASES))
def test_pkcs11_tool_signs(p11, w, mech):
    key, what, check = SIGN_CASES[mech]
    name = KEYS[key][0]
    ids, _ = objects(p11)
    msg = b"signed through the kms PKCS#11 module " + os.urandom(16)
    if what == "msg32":
        msg = os.urandom(32)
    (w / "msg").write_bytes(msg)
    data = {
        "msg": msg, "msg32": msg,
        "digest256": hashlib.sha256(msg).digest(),
        "digestinfo": SHA256_DI + hashlib.sha256(msg).digest(),
    }[what]
    (w / "in").write_bytes(data)
    argv = ["--sign", "--id", ids[name], "-m", mech.replace("-raw", ""),
            "-i", w / "in", "-o", w / "sig"]
    if check.startswith("ec"):
        argv += ["--signature-format", "openssl"]
    if "PSS" in mech:
        argv += ["--mgf", "MGF1-SHA256", "--salt-len", "32"]
        if mech == "RSA-PKCS-PSS":
            argv += ["--hash-algorithm", "SHA256"]
    p11.tool(*argv)
    pub = pubkey(p11.kmsd, name, w / "pub.pem")
    if check in ("ec", "rsa"):
        p = run(["openssl", "dgst", "-sha256", "-verify", pub, "-signature",
                 w / "sig", w / "msg"], check=False)
    elif check == "ec384":
        p = run(["openssl", "dgst", "-sha384", "-verify", pub, "-signature",
                 w / "sig", w / "msg"], check=False)
    elif check == "pss":
        p = run(["openssl", "dgst", "-sha256", "-verify", pub, "-sigopt",
                 "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
                 "-signature", w / "sig", w / "msg"], check=False)
    elif check == "ed":
        p = run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub,
                 "-rawin", "-in", w / "msg", "-sigfile", w / "sig"],
                check=False)
    else:
        p = run(["openssl", "pkeyutl", "-verifyrecover", "-pubin", "-inkey",
                 pub, "-in", w / "sig", "-pkeyopt",
                 "rsa_padding_mode:pkcs1"], check=False)
        assert p.stdout == msg
    assert p.returncode == 0, p.stdout + p.stderr
    # The same signature over another message fails the check.
    if check != "raw":
        (w / "msg").write_bytes(msg + b"!")
        p = run(["openssl", "dgst", "-sha256", "-verify", pub, "-signature",
                 w / "sig", w / "msg"], check=False)
        assert p.returncode != 0


@pytest.mark.parametrize("key,mech,data,rv", [
    ("rsa", "ECDSA", "digest256", "C_SignInit: CKR_KEY_TYPE_INCONSISTENT"),
    ("ec384", "ECDSA_SHA256", "msg", "C_SignInit: CKR_KEY_TYPE_INCONSISTENT"),
    ("pss", "RSA_PKCS", "digestinfo",
     "C_SignInit: CKR_KEY_TYPE_INCONSISTENT"),
    ("rsa", "RSA_PKCS_PSS", "digest256",
     "C_SignInit: CKR_KEY_TYPE_INCONSISTENT"),
    ("ed", "ECDSA", "digest256", "C_SignInit: CKR_KEY_TYPE_INCONSISTENT"),
    ("pss", "RSA_PKCS_PSS_SALT20", "digest256",
     "C_SignInit: CKR_MECHANISM_PARAM_INVALID"),
    # OpenSSH signs RSA with SHA-512: a *_SHA256 key refuses it.
    ("rsa", "RSA_PKCS", "digestinfo512", "C_Sign: CKR_DATA_INVALID"),
    ("ec256", "ECDSA", "digest512", "C_Sign: CKR_DATA_LEN_RANGE"),
])
def test_mismatch_is_refused(p11, w, key, mech, data, rv):
    msg = b"never signed"
    (w / "in").write_bytes({
        "msg": msg,
        "digest256": hashlib.sha256(msg).digest(),
        "digest512": hashlib.sha512(msg).digest(),
        "digestinfo": SHA256_DI + hashlib.sha256(msg).digest(),
        "digestinfo512": SHA512_DI + hashlib.sha512(msg).digest(),
    }[data])
    p = p11.drive("sign", KEYS[key][0], mech, w / "in", w / "sig",
                  check=False)
    assert p.returncode == 3 and p.stdout.decode().strip() == rv, p.stdout
    assert not (w / "sig").exists()


@pytest.mark.parametrize("key,mech", [
    ("ec256", "ECDSA_SHA256"), ("ec384", "ECDSA_SHA384"), ("ed", "EDDSA"),
    ("rsa", "SHA256_RSA_PKCS"), ("pss", "SHA256_RSA_PKCS_PSS"),
    ("raw", "SHA256_RSA_PKCS"),
])
def test_multipart_and_local_verify(p11, w, key, mech):
    name = KEYS[key][0]
    msg = b"multi-part input, hashed by the module " * 20
    (w / "msg").write_bytes(msg)
    p11.drive("sign", name, mech, w / "msg", w / "sig", "multi")
    # C_Verify runs in the module, single- and multi-part.
    assert p11.drive("verify", name, mech, w / "msg", w / "sig").stdout == \
        b"verified\n"
    p11.drive("verify", name, mech, w / "msg", w / "sig", "multi")
    sig = (w / "sig").read_bytes()
    (w / "bad").write_bytes(sig[:-1] + bytes([sig[-1] ^ 1]))
    p = p11.drive("verify", name, mech, w / "msg", w / "bad", check=False)
    assert p.stdout == b"C_Verify: CKR_SIGNATURE_INVALID\n"
    # And OpenSSL agrees with the multi-part signature.
    pub = pubkey(p11.kmsd, name, w / "pub.pem")
    if key == "ed":
        p = run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub,
                 "-rawin", "-in", w / "msg", "-sigfile", w / "sig"],
                check=False)
    elif key == "ec256" or key == "ec384":
        # The module's ECDSA signatures are r || s: OpenSSL wants DER.
        half = len(sig) // 2
        r, s = (int.from_bytes(sig[:half], "big"),
                int.from_bytes(sig[half:], "big"))
        (w / "sig.der").write_bytes(der_ecdsa(r, s))
        p = run(["openssl", "dgst", "-sha256" if key == "ec256" else
                 "-sha384", "-verify", pub, "-signature", w / "sig.der",
                 w / "msg"], check=False)
    elif key == "pss":
        p = run(["openssl", "dgst", "-sha256", "-verify", pub, "-sigopt",
                 "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
                 "-signature", w / "sig", w / "msg"], check=False)
    else:
        p = run(["openssl", "dgst", "-sha256", "-verify", pub, "-signature",
                 w / "sig", w / "msg"], check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def der_ecdsa(r, s):
    def integer(v):
        b = v.to_bytes((v.bit_length() + 8) // 8, "big")
        return b"\x02" + bytes([len(b)]) + b
    body = integer(r) + integer(s)
    return b"\x30" + bytes([len(body)]) + body


def engine_conf(p11, w, prefix):
    """An OpenSSL configuration and module configuration for the engine."""
    conf = P11(p11.kmsd, p11.dir.parent, prefix=prefix)
    return conf.env({"PKCS11_MODULE_PATH": str(MODULE)})


def test_openssl_engine_signs(p11, w):
    env = engine_conf(p11, w, "p11/x/")
    msg = b"OpenSSL through libengine-pkcs11-openssl " + os.urandom(8)
    (w / "msg").write_bytes(msg)
    (w / "dg").write_bytes(hashlib.sha256(msg).digest())
    uri = "pkcs11:token=kms;object=%s;type=private"
    ec = pubkey(p11.kmsd, KEYS["ec256"][0], w / "ec.pem")
    p11.run(["openssl", "pkeyutl", "-engine", "pkcs11", "-keyform", "engine",
             "-sign", "-inkey", uri % "p11%2Fx%2Fec-p256", "-in", w / "dg",
             "-out", w / "sig"], env=env)
    run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", ec, "-in",
         w / "dg", "-sigfile", w / "sig"])
    rsa = pubkey(p11.kmsd, KEYS["rsa"][0], w / "rsa.pem")
    p11.run(["openssl", "dgst", "-engine", "pkcs11", "-keyform", "engine",
             "-sha256", "-sign", uri % "p11%2Fx%2Frsa-pkcs1", "-out",
             w / "sig", w / "msg"], env=env)
    run(["openssl", "dgst", "-sha256", "-verify", rsa, "-signature",
         w / "sig", w / "msg"])
    pss = pubkey(p11.kmsd, KEYS["pss"][0], w / "pss.pem")
    p11.run(["openssl", "dgst", "-engine", "pkcs11", "-keyform", "engine",
             "-sha256", "-sign", uri % "p11%2Fx%2Frsa-pss", "-sigopt",
             "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
             "-out", w / "sig", w / "msg"], env=env)
    run(["openssl", "dgst", "-sha256", "-verify", pss, "-sigopt",
         "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
         "-signature", w / "sig", w / "msg"])


def test_p11tool_lists_objects(p11):
    out = p11.run(["p11tool", "--provider", MODULE, "--list-all",
                   "pkcs11:token=kms"]).stdout.decode()
    for name, _ in KEYS.values():
        assert "Label: %s" % name in out, out
    assert "Private key (EC/ECDSA-SECP256R1)" in out
    assert "CKA_SENSITIVE" in out


def ssh_pub(kmsd, name, w):
    pem = pubkey(kmsd, name, w / "k.pem")
    return run(["ssh-keygen", "-i", "-m", "PKCS8", "-f", pem]).stdout \
        .decode().split()[1]


def test_ssh_keygen_lists_keys(p11, w):
    out = p11.run(["ssh-keygen", "-D", MODULE]).stdout.decode()
    assert ssh_pub(p11.kmsd, KEYS["ec256"][0], w) in out
    assert ssh_pub(p11.kmsd, KEYS["rsa"][0], w) in out


def test_ssh_agent_and_git_signing(p11, w):
    """ssh-add -s loads the module into ssh-agent; ssh-keygen -Y sign signs
    with the EC key through the agent (git's SSH signing)."""
    sock = w / "agent.sock"
    askpass = w / "askpass"
    askpass.write_text("#!/bin/sh\necho %s\n" % PIN)
    askpass.chmod(0o700)
    env = p11.env({"SSH_AUTH_SOCK": str(sock), "SSH_ASKPASS": str(askpass),
                   "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"})
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock), "-P",
                              str(MODULE)], env=env, cwd=str(p11.cwd),
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        p11.run(["ssh-add", "-s", MODULE], env=env,
                stdin=subprocess.DEVNULL)
        listed = p11.run(["ssh-add", "-L"], env=env).stdout.decode()
        ec = ssh_pub(p11.kmsd, KEYS["ec256"][0], w)
        assert ec in listed
        (w / "ec.pub").write_text("ecdsa-sha2-nistp256 %s\n" % ec)
        (w / "commit").write_bytes(b"tree 0\nauthor ci\n\nrelease\n")
        p11.run(["ssh-keygen", "-Y", "sign", "-f", w / "ec.pub", "-n", "git",
                 w / "commit"], env=env)
        (w / "allowed").write_text("ci@kms ecdsa-sha2-nistp256 %s\n" % ec)
        with open(w / "commit", "rb") as f:
            out = run(["ssh-keygen", "-Y", "verify", "-f", w / "allowed",
                       "-I", "ci@kms", "-n", "git", "-s",
                       w / "commit.sig"], stdin=f).stdout.decode()
        assert "Good \"git\" signature for ci@kms" in out
        (w / "commit").write_bytes(b"tree 0\nauthor mallory\n\nrelease\n")
        with open(w / "commit", "rb") as f:
            p = run(["ssh-keygen", "-Y", "verify", "-f", w / "allowed",
                     "-I", "ci@kms", "-n", "git", "-s", w / "commit.sig"],
                    stdin=f, check=False)
        assert p.returncode != 0
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)


def test_one_audited_sign_per_signature(p11, w):
    name = KEYS["ec384"][0]
    ids, _ = objects(p11)
    before = audit_signs(p11.kmsd, name)
    (w / "msg").write_bytes(b"counted")
    for _ in range(3):
        p11.tool("--sign", "--id", ids[name], "-m", "ECDSA-SHA384", "-i",
                 w / "msg", "-o", w / "sig")
    p11.drive("sign", name, "ECDSA_SHA384", w / "msg", w / "sig", "multi")
    after = audit_signs(p11.kmsd, name)
    assert after[:len(before)] == before
    assert after[len(before):] == [("ci", "ok")] * 4


def test_identity_without_grant(p11, w):
    # The auditor holds no grant on keys: the token shows no objects.
    auditor = P11(p11.kmsd, p11.dir.parent, identity="auditor")
    assert auditor.drive("list").stdout == b""
    # The unwrapper may read keys but not sign: kmsd refuses, the module
    # says CKR_FUNCTION_REJECTED.
    unwrapper = P11(p11.kmsd, p11.dir.parent, identity="unwrapper")
    (w / "msg").write_bytes(b"not mine to sign")
    p = unwrapper.drive("sign", KEYS["ec256"][0], "ECDSA_SHA256", w / "msg",
                        w / "sig", check=False)
    assert p.stdout == b"C_Sign: CKR_FUNCTION_REJECTED\n", p.stdout
    assert b"PERMISSION_DENIED" in p.stderr or b"grant" in p.stderr
    assert ("unwrapper", "denied") in audit_signs(p11.kmsd, KEYS["ec256"][0])


def holding(conf, name, mech, msg):
    """p11drive hold: a signer that has signed once with name and signs
    again when a line arrives on its stdin."""
    p = subprocess.Popen([str(P11DRIVE), str(MODULE), "hold", name, mech,
                          str(msg)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=conf.env(), cwd=str(conf.cwd))
    assert p.stdout.readline() == b"signed\n"
    return p


def test_disabled_version(p11, w):
    """A signer holding version 1 after the officer rotated the key and
    disabled version 1 gets CKR_KEY_FUNCTION_NOT_PERMITTED."""
    name = "p11/x/rotated"
    officer = p11.kmsd.client("officer").kms
    officer.CreateKey(pb.CreateKeyRequest(name=name,
                                          algorithm=pb.EC_P256_SHA256),
                      timeout=60)
    (w / "msg").write_bytes(b"held")
    hold = holding(p11, name, "ECDSA_SHA256", w / "msg")
    try:
        officer.RotateKey(pb.RotateKeyRequest(name=name), timeout=60)
        officer.SetVersionState(pb.SetVersionStateRequest(
            name=name, version=1, state=pb.DISABLED), timeout=60)
        out, err = hold.communicate(b"go\n", timeout=60)
    finally:
        if hold.poll() is None:
            hold.kill()
            hold.wait()
    assert out == b"C_Sign: CKR_KEY_FUNCTION_NOT_PERMITTED\n", out + err
    # A fresh listing shows version 2, which signs.
    p11.drive("sign", name, "ECDSA_SHA256", w / "msg", w / "sig")


def test_fork_rule(p11, w):
    (w / "dg").write_bytes(hashlib.sha256(b"fork").digest())
    out = p11.drive("fork", KEYS["ec256"][0], "ECDSA",
                    w / "dg").stdout.decode()
    assert out.splitlines() == ["child: CKR_CRYPTOKI_NOT_INITIALIZED",
                                "child: signed", "parent: signed"], out


def test_stopped_kmsd_is_device_error(p11, tmp_root, w):
    """A kmsd that stops under a signer: the next signature fails with
    CKR_DEVICE_ERROR, quickly; none listening at all, the same.  (A kmsd
    of its own, whose audit chain the other tests do not read.)"""
    work = tmp_root / "p11-stop-work"
    work.mkdir(exist_ok=True)
    other = Kmsd(make_home(tmp_root, "p11-stop-home"), work)
    other.start()
    name = "p11/stop/ec"
    other.client("officer").kms.CreateKey(
        pb.CreateKeyRequest(name=name, algorithm=pb.EC_P256_SHA256),
        timeout=60)
    conf = P11(other, p11.dir.parent, prefix="p11/stop/")
    (w / "msg").write_bytes(b"to a stopped kmsd")
    hold = holding(conf, name, "ECDSA_SHA256", w / "msg")
    try:
        for c in other.clients.values():
            c.close()
        assert other.stop() == 0
        t0 = time.monotonic()
        out, err = hold.communicate(b"go\n", timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if hold.poll() is None:
            hold.kill()
            hold.wait()
        if other.proc is not None:
            other.stop()
    assert out == b"C_Sign: CKR_DEVICE_ERROR\n", out + err
    assert elapsed < 10
    nobody = P11(p11.kmsd, p11.dir.parent, identity="ci", prefix="none",
                 addr="127.0.0.1:%d" % free_port())
    t0 = time.monotonic()
    p = nobody.drive("list", check=False)
    assert p.stdout == b"C_FindObjectsInit: CKR_DEVICE_ERROR\n"
    assert time.monotonic() - t0 < 10


def test_configuration(p11, w):
    # A broken file: C_Initialize fails, naming the file and line.
    bad = w / "bad.conf"
    bad.write_text("[client]\naddr = 127.0.0.1:1\ncert = c.pem\nport = 7\n")
    p = p11.drive("list", check=False,
                  env=tool_env({"KMS_PKCS11_CONFIG": str(bad)}))
    assert p.stdout == b"C_Initialize: CKR_GENERAL_ERROR\n"
    assert ("%s:4: unknown key port" % bad).encode() in p.stderr, p.stderr
    p = p11.drive("list", check=False,
                  env=tool_env({"KMS_PKCS11_CONFIG": str(w / "none.conf")}))
    assert p.stdout == b"C_Initialize: CKR_GENERAL_ERROR\n"
    assert str(w / "none.conf").encode() in p.stderr
    incomplete = w / "incomplete.conf"
    incomplete.write_text("[client]\naddr = 127.0.0.1:1\n")
    p = p11.drive("list", check=False,
                  env=tool_env({"KMS_PKCS11_CONFIG": str(incomplete)}))
    assert b"needs addr, ca, cert and key" in p.stderr
    # Without a file: kmsctl's defaults, KMS_ADDR and KMS_IDENTITY's
    # files under KMS_HOME.
    env = tool_env({"KMS_HOME": str(p11.kmsd.home),
                    "KMS_ADDR": p11.kmsd.addr, "KMS_IDENTITY": "ci"})
    env.pop("KMS_PKCS11_CONFIG", None)
    out = p11.drive("list", env=env).stdout.decode()
    assert "private p11/x/ec-p256 " in out


@pytest.fixture(scope="module")
def certs(p11):
    """A CA, and a certificate chain from it attached (by the officer) to
    the P-256 and RSA keys: what Java's key store and osslsigncode need."""
    d = p11.dir.parent / "ca"
    d.mkdir(exist_ok=True)
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", d / "ca.key", "-out", d / "ca.pem", "-subj",
         "/CN=kms test CA", "-days", "2"])
    chains = {}
    for key in ("ec256", "rsa"):
        name = KEYS[key][0]
        pub = pubkey(p11.kmsd, name, d / (key + ".pub"))
        run(["openssl", "x509", "-new", "-subj", "/CN=" + key,
             "-force_pubkey", pub, "-CA", d / "ca.pem", "-CAkey",
             d / "ca.key", "-days", "2", "-out", d / (key + ".pem")])
        chain = d / (key + "-chain.pem")
        chain.write_bytes((d / (key + ".pem")).read_bytes() +
                          (d / "ca.pem").read_bytes())
        p11.kmsd.kmsctl("key", "cert", "set", name, chain,
                        identity="officer")
        chains[key] = chain
    return d, chains


def test_certificate_chain_attach(p11, certs, w):
    d, chains = certs
    name = KEYS["ec256"][0]
    # GetPublicKey and GetKey return the chain as it was attached.
    pk = p11.kmsd.client("ci").kms.GetPublicKey(
        pb.GetPublicKeyRequest(name=name), timeout=30)
    assert pk.cert_chain_pem == chains["ec256"].read_text()
    key = p11.kmsd.client("ci").kms.GetKey(pb.GetKeyRequest(name=name),
                                           timeout=30)
    assert key.versions[0].cert_chain_pem == chains["ec256"].read_text()
    # A leaf for another key is refused and changes nothing.
    p = p11.kmsd.kmsctl("key", "cert", "set", KEYS["ec384"][0],
                        chains["ec256"], identity="officer", check=False)
    assert p.returncode != 0 and b"public key differs" in p.stderr
    (w / "junk.pem").write_text("not a certificate\n")
    p = p11.kmsd.kmsctl("key", "cert", "set", KEYS["ec384"][0],
                        w / "junk.pem", identity="officer", check=False)
    assert p.returncode != 0 and b"not a PEM certificate chain" in p.stderr
    # Officer only: the signer may not attach one.
    p = p11.kmsd.kmsctl("key", "cert", "set", name, chains["ec256"],
                        identity="ci", check=False)
    assert p.returncode != 0 and b"PERMISSION_DENIED" in p.stderr
    # The module shows the leaf beside the key, with its ID and label.
    ids, out = objects(p11)
    assert "Certificate Object; type = X.509 cert" in out
    assert re.search(r"Certificate Object.*\n\s+label:\s+%s\n(.*\n)*?\s+ID:"
                     r"\s+%s" % (re.escape(name), ids[name]), out), out
    # Each attach, allowed or refused, is in the audit log.
    r = p11.kmsd.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(limit=1000, filters=pb.AuditFilters(
            rpc="SetCertificateChain")), timeout=30)
    results = [(x.identity, x.key, x.result) for x in r.records]
    assert ("officer", name, "ok") in results
    assert ("ci", name, "denied") in results


def test_jarsigner(p11, certs, w):
    """jarsigner signs a jar through SunPKCS11; jarsigner -verify accepts
    it."""
    cfg = w / "java.cfg"
    cfg.write_text("name = kms\nlibrary = %s\nslot = 0\n" % MODULE)
    (w / "a.txt").write_text("release artefact\n")
    p11.run(["jar", "cf", w / "app.jar", "-C", w, "a.txt"])
    name = KEYS["ec256"][0]
    p11.run(["jarsigner", "-keystore", "NONE", "-storetype", "PKCS11",
             "-providerClass", "sun.security.pkcs11.SunPKCS11",
             "-providerArg", cfg, "-storepass", PIN, "-sigalg",
             "SHA256withECDSA", w / "app.jar", name], timeout=300)
    out = p11.run(["jarsigner", "-verify", "-verbose", "-certs",
                   w / "app.jar"], timeout=300).stdout.decode()
    assert "jar verified." in out, out
    assert "CN=ec256" in out
    # A changed entry fails verification.
    (w / "a.txt").write_text("tampered\n")
    p11.run(["jar", "uf", w / "app.jar", "-C", w, "a.txt"])
    p = p11.run(["jarsigner", "-verify", w / "app.jar"], check=False,
                timeout=300)
    assert "jar verified." not in p.stdout.decode()


def test_osslsigncode_cab(p11, certs, w):
    """osslsigncode signs a CAB (made with gcab) through OpenSSL's pkcs11
    engine; osslsigncode verify accepts it against the chain's CA."""
    d, chains = certs
    env = engine_conf(p11, w, "p11/x/")
    (w / "setup.txt").write_text("payload\n")
    p11.run(["gcab", "-c", w / "app.cab", w / "setup.txt"])
    p11.run(["osslsigncode", "sign", "-pkcs11module", MODULE, "-key",
             "pkcs11:token=kms;object=p11%2Fx%2Frsa-pkcs1;type=private",
             "-pass", PIN, "-certs", chains["rsa"], "-h", "sha256",
             "-in", w / "app.cab", "-out", w / "signed.cab"], env=env)
    out = run(["osslsigncode", "verify", "-CAfile", d / "ca.pem", "-in",
               w / "signed.cab"]).stdout.decode()
    assert "Signature verification: ok" in out, out
    # Another CA does not vouch for it.
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", w / "other.key", "-out", w / "other.pem", "-subj",
         "/CN=other", "-days", "1"])
    p = run(["osslsigncode", "verify", "-CAfile", w / "other.pem", "-in",
             w / "signed.cab"], check=False)
    assert p.returncode != 0


def test_apksigner(p11, certs, w):
    """apksigner signs an APK through SunPKCS11 and apksigner verify accepts
    it; every signature is one Sign record under identity ci.  The binary
    AndroidManifest.xml comes from Debian's aapt.  aapt has no android.jar
    to resolve android: attributes with, so the manifest declares no
    minSdkVersion and both sides are told --min-sdk-version 24 (ECDSA in the
    v1 JAR signature needs 18 or above)."""
    name = KEYS["ec256"][0]
    cfg = w / "java.cfg"
    cfg.write_text("name = kms\nlibrary = %s\nslot = 0\n" % MODULE)
    (w / "AndroidManifest.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<manifest xmlns:android='
        '"http://schemas.android.com/apk/res/android" package='
        '"org.example.kms"/>\n')
    p11.run(["aapt", "package", "-M", w / "AndroidManifest.xml", "-F",
             w / "app.apk"])
    # JDK 17 keeps SunPKCS11's classes to itself unless told.
    java = "-J-add-exports=jdk.crypto.cryptoki/sun.security.pkcs11=ALL-UNNAMED"
    before = audit_signs(p11.kmsd, name)
    p11.run(["apksigner", java, "sign", "--ks", "NONE", "--ks-type",
             "PKCS11", "--provider-class", "sun.security.pkcs11.SunPKCS11",
             "--provider-arg", cfg, "--ks-pass", "pass:" + PIN,
             "--ks-key-alias", name, "--min-sdk-version", "24",
             "--in", w / "app.apk", "--out", w / "signed.apk"], timeout=300)
    out = run(["apksigner", "verify", "--verbose", "--print-certs",
               "--min-sdk-version", "24", w / "signed.apk"],
              timeout=300).stdout.decode()
    assert "Verifies" in out, out
    assert "Verified using v2 scheme (APK Signature Scheme v2): true" in out
    assert "CN=ec256" in out, out
    after = audit_signs(p11.kmsd, name)
    new = after[len(before):]
    # The v1 (JAR), v2 and v3 signature blocks, each one Sign.
    assert len(new) >= 3 and all(r == ("ci", "ok") for r in new), new
    # An APK changed after signing is refused.
    with open(w / "signed.apk", "r+b") as f:
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 1]))
    p = run(["apksigner", "verify", "--min-sdk-version", "24",
             w / "signed.apk"], check=False, timeout=300)
    assert p.returncode != 0


def self_sign(p11, key, path, *extra, identity="ci", check=True):
    return p11.kmsd.kmsctl("key", "cert", "self-sign", KEYS[key][0],
                           "-o", path, *extra, identity=identity,
                           check=check)


def test_self_signed_certificates(p11, certs, w):
    """kmsctl key cert self-sign makes a certificate for each kind of key,
    signed by the key itself through Sign: OpenSSL verifies it with the
    key's public key, the officer attaches it, key get shows it, and
    jarsigner signs with it."""
    import json
    for key in ("ec256", "ec384", "rsa", "pss", "raw", "ed"):
        name = KEYS[key][0]
        before = audit_signs(p11.kmsd, name)
        cert = w / (key + "-self.pem")
        self_sign(p11, key, cert, "--subject", "CN=self %s,O=kms" % key,
                  "--days", "30")
        # One Sign, by ci, made it.
        assert audit_signs(p11.kmsd, name)[len(before):] == [("ci", "ok")]
        # Its key is the kms key's, and that key's signature verifies.
        pub = pubkey(p11.kmsd, name, w / (key + ".pub"))
        got = run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"])
        assert got.stdout == pub.read_bytes()
        out = run(["openssl", "verify", "-CAfile", cert, cert])
        assert out.stdout.decode().strip() == "%s: OK" % cert
        text = run(["openssl", "x509", "-in", cert, "-noout", "-text"]
                   ).stdout.decode()
        assert "Subject: CN = self %s, O = kms" % key in text, text
        assert "Issuer: CN = self %s, O = kms" % key in text
        assert "Code Signing" in text
        if key == "pss":
            assert "rsassaPss" in text and "Salt Length: 0x20" in text
        # A different key's signature does not verify: tamper with the
        # signature's last byte.
        der = run(["openssl", "x509", "-in", cert, "-outform", "DER"]
                  ).stdout
        (w / "bad.der").write_bytes(der[:-1] + bytes([der[-1] ^ 1]))
        p = run(["openssl", "verify", "-CAfile", cert, w / "bad.der"],
                check=False)
        assert p.returncode != 0

    # The key store takes them (these keys carry no other chain here).
    for key in ("ec384", "pss", "raw", "ed"):
        name = KEYS[key][0]
        p11.kmsd.kmsctl("key", "cert", "set", name, w / (key + "-self.pem"),
                        identity="officer")
        got = json.loads(p11.kmsd.kmsctl("--json", "key", "get", name,
                                         identity="officer").stdout)
        v = [x for x in got["versions"]
             if x["version"] == got["primary_version"]][0]
        assert v["cert_chain_pem"] == (w / (key + "-self.pem")).read_text()
        assert v["certificates"][0]["subject"] == "/CN=self %s/O=kms" % key
        assert v["certificates"][0]["issuer"] == "/CN=self %s/O=kms" % key
        text = p11.kmsd.kmsctl("key", "get", name,
                               identity="officer").stdout.decode()
        assert "    cert /CN=self %s/O=kms (issuer /CN=self %s/O=kms, " \
            "until " % (key, key) in text, text

    # jarsigner signs through the module with the self-signed P-384 key.
    cfg = w / "java.cfg"
    cfg.write_text("name = kms\nlibrary = %s\nslot = 0\n" % MODULE)
    (w / "a.txt").write_text("release artefact\n")
    p11.run(["jar", "cf", w / "app.jar", "-C", w, "a.txt"])
    p11.run(["jarsigner", "-keystore", "NONE", "-storetype", "PKCS11",
             "-providerClass", "sun.security.pkcs11.SunPKCS11",
             "-providerArg", cfg, "-storepass", PIN, "-sigalg",
             "SHA384withECDSA", w / "app.jar", KEYS["ec384"][0]],
            timeout=300)
    out = p11.run(["jarsigner", "-verify", "-verbose", "-certs",
                   w / "app.jar"], timeout=300).stdout.decode()
    assert "jar verified." in out, out
    assert "CN=self ec384" in out, out

    # Without --subject the certificate names the key; without -o it is
    # printed.
    pem = p11.kmsd.kmsctl("key", "cert", "self-sign", KEYS["ec256"][0]).stdout
    (w / "default.pem").write_bytes(pem)
    text = run(["openssl", "x509", "-in", w / "default.pem", "-noout",
                "-subject", "-enddate"]).stdout.decode()
    assert "subject=CN = %s\n" % KEYS["ec256"][0] in text, text
    run(["openssl", "verify", "-CAfile", w / "default.pem",
         w / "default.pem"])

    # Bad input is refused before any Sign.
    before = audit_signs(p11.kmsd, KEYS["ec256"][0])
    for extra in (["--subject", "no equals sign"], ["--subject", "XX=a"],
                  ["--days", "0"], ["--days", "36501"],
                  ["--version", "x"]):
        p = self_sign(p11, "ec256", w / "no.pem", *extra, check=False)
        assert p.returncode == 2, (extra, p.stderr)
        assert not (w / "no.pem").exists()
    assert audit_signs(p11.kmsd, KEYS["ec256"][0]) == before
    p = p11.kmsd.kmsctl("key", "cert", "self-sign", "p11/" + "n" * 70,
                        check=False)
    assert p.returncode == 2 and b"does not fit a CN" in p.stderr, p.stderr
    # A key that does not exist.
    p = p11.kmsd.kmsctl("key", "cert", "self-sign", "p11/none", "-o",
                        w / "no.pem", check=False)
    assert p.returncode == 4 and b"NOT_FOUND" in p.stderr
    # Under the default policy whoever signs cannot attach (separation of
    # duties): --attach is refused after the Sign, and nothing changes.
    p = p11.kmsd.kmsctl("key", "cert", "self-sign", KEYS["ec256"][0],
                        "--attach", check=False)
    assert p.returncode == 4 and b"PERMISSION_DENIED" in p.stderr
    pk = p11.kmsd.client("ci").kms.GetPublicKey(
        pb.GetPublicKeyRequest(name=KEYS["ec256"][0]), timeout=30)
    assert pk.cert_chain_pem == certs[1]["ec256"].read_text()
    # The officer holds no Sign grant.
    p = self_sign(p11, "ec256", w / "no.pem", identity="officer",
                  check=False)
    assert p.returncode == 4 and b"PERMISSION_DENIED" in p.stderr
