"""The README's user story, with kmsctl and OpenSSL only."""

import json
import os
import zipfile

from conftest import openssl_verifies


def make_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("index.html", "<html>kms</html>\n")
        z.writestr("app.bin", os.urandom(4096))


def test_release_signing_story(kmsd, workdir):
    name = "release/android"
    app = workdir / "app.zip"
    make_zip(app)
    sig = workdir / "sig.der"
    pub = workdir / "pub.pem"

    kmsd.kmsctl("key", "create", name, "--algorithm", "EC_P256_SHA256",
                identity="officer")
    kmsd.kmsctl("sign", name, "--in", app, "-o", sig, identity="ci")
    assert sig.stat().st_size > 0
    p = kmsd.kmsctl("pubkey", name, identity="ci")
    assert p.stdout.startswith(b"-----BEGIN PUBLIC KEY-----")
    pub.write_bytes(p.stdout)

    assert openssl_verifies(pub, sig, app)

    # The same signature is refused for other content.
    other = workdir / "other.zip"
    make_zip(other)
    assert not openssl_verifies(pub, sig, other)


def test_json_output(kmsd):
    name = "release/android-json"
    kmsd.kmsctl("key", "create", name, "--algorithm", "ED25519",
                identity="officer")

    key = json.loads(kmsd.kmsctl("--json", "key", "get", name,
                                 identity="officer").stdout)
    assert key["name"] == name
    assert key["algorithm"] == "ED25519"

    listing = json.loads(kmsd.kmsctl("--json", "key", "list",
                                     identity="officer").stdout)
    keys = listing["keys"] if isinstance(listing, dict) else listing
    assert name in [k["name"] for k in keys]

    who = json.loads(kmsd.kmsctl("--json", "whoami", identity="ci").stdout)
    assert who["identity"] == "ci"
    assert "signer" in who["roles"]


def test_output_to_a_pipe_keeps_the_pipe(kmsd, workdir):
    """-o names an existing pipe or device: kmsctl writes into it and does
    not rename a file over it (as root that would replace /dev/null)."""
    import stat
    import threading

    name = "release/pipe"
    kmsd.kmsctl("key", "create", name, "--algorithm", "EC_P256_SHA256",
                identity="officer")
    fifo = workdir / "sig.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    kmsd.kmsctl("sign", name, "--digest", "07" * 32, "-o", fifo)
    reader.join(10)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert len(got) == 1 and got[0][:1] == b"\x30"  # a DER signature
    assert not [p for p in workdir.iterdir() if p.name.startswith("sig.fifo.")]

    # Bundle outputs are whole-or-nothing files: a pipe is refused.
    app = workdir / "pipe.zip"
    make_zip(app)
    kmsd.kmsctl("key", "create", "ota/pipe/sign", "--algorithm",
                "RSA_RAW_PKCS1_2048", identity="officer")
    p = kmsd.kmsctl("bundle", "encrypt", "--format", "capgo", "--key",
                    "ota/pipe/sign", "-o", fifo, app, check=False)
    assert p.returncode != 0 and b"not a regular file" in p.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
