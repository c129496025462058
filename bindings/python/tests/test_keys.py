"""narcache.SecretKey / PublicKey against keys written by Nix 2.8
(`nix-store --generate-binary-cache-key`, tests/data/narinfo/keys and
fresh ones), the signatures Nix made with them (fingerprints.tsv), and the
Nix tools reading keys saved by Python."""
import base64
import os
import stat
import subprocess
from pathlib import Path

import pytest

import narcache
from narcache import PublicKey, SecretKey

DATA = Path(__file__).resolve().parents[3] / "tests" / "data" / "narinfo"
KEYS = DATA / "keys"
GOLDEN_KEYS = sorted(p.stem for p in KEYS.glob("*.sec"))
NIX = ["nix", "--extra-experimental-features", "nix-command"]


@pytest.fixture(params=GOLDEN_KEYS + ["fresh-from-nix"])
def key_files(request, tmp_path):
    """(name, secret file, public file): the golden keys, and one made now
    by nix-store --generate-binary-cache-key."""
    name = request.param
    if name in GOLDEN_KEYS:
        return name, KEYS / (name + ".sec"), KEYS / (name + ".pub")
    name = "fresh.example.org-7"
    sec, pub = tmp_path / "fresh.sec", tmp_path / "fresh.pub"
    subprocess.run(["nix-store", "--generate-binary-cache-key", name, str(sec), str(pub)],
                   check=True, capture_output=True)
    return name, sec, pub


def secret_base64(sec_path):
    return sec_path.read_text().split(":", 1)[1]


def test_there_are_golden_keys():
    """The key files this module relies on exist."""
    assert GOLDEN_KEYS == ["other-cache-2", "test-cache-1"]


def test_nix_key_files_parse_and_format_back(key_files):
    """A Nix key pair loads; the secret's public half equals the public file;
    str(public) and export() give back the file texts exactly."""
    name, sec, pub = key_files
    secret = SecretKey.from_file(sec)
    public = PublicKey.parse(pub.read_text())
    assert secret.name == public.name == name
    assert secret.public_key == public
    assert str(public) == pub.read_text()
    assert str(secret.public_key) == pub.read_text()
    assert secret.export() == sec.read_text()
    assert SecretKey.parse(sec.read_bytes()).export() == sec.read_text()
    assert PublicKey.parse(pub.read_bytes()) == public
    assert hash(PublicKey.parse(pub.read_text())) == hash(public)


def test_one_trailing_newline_and_missing_padding_are_accepted(key_files):
    """As Nix: a key file may end in one newline and omit base64 '='."""
    _, sec, pub = key_files
    text = sec.read_text()
    assert SecretKey.parse(text + "\n").export() == text
    assert SecretKey.parse(text.rstrip("=")).export() == text
    assert str(PublicKey.parse(pub.read_text() + "\n")) == pub.read_text()
    assert str(PublicKey.parse(pub.read_text().rstrip("="))) == pub.read_text()


def fingerprint_rows():
    for line in (DATA / "fingerprints.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            yield line.split("\t")


def test_signatures_equal_the_ones_nix_made():
    """Signing each golden fingerprint gives exactly Nix's signature
    (ed25519 is deterministic), and it verifies with the public key."""
    rows = list(fingerprint_rows())
    assert len(rows) >= 36
    for _, fingerprint, sig in rows:
        name, b64 = sig.split(":", 1)
        secret = SecretKey.from_file(KEYS / (name + ".sec"))
        public = PublicKey.parse((KEYS / (name + ".pub")).read_text())
        assert secret.sign(fingerprint.encode()) == base64.b64decode(b64)
        public.verify(fingerprint.encode(), base64.b64decode(b64))
        secret.verify(fingerprint.encode(), base64.b64decode(b64))


def test_generated_keys_sign_verify_and_round_trip():
    """generate() makes a working, unique key: its signatures verify with its
    public key, its export() parses back to the same key."""
    key = SecretKey.generate("cache.example.org-1")
    assert key.name == "cache.example.org-1"
    message = b"1;/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1;sha256:0;1;"
    sig = key.sign(message)
    assert isinstance(sig, bytes) and len(sig) == 64
    key.public_key.verify(message, sig)
    again = SecretKey.parse(key.export())
    assert again.export() == key.export()
    assert again.public_key == key.public_key
    assert again.sign(message) == sig
    other = SecretKey.generate("cache.example.org-1")
    assert other.export() != key.export() and other.public_key != key.public_key
    with pytest.raises(narcache.SignatureError):
        other.public_key.verify(message, sig)
    assert SecretKey.generate("k" * 255).name == "k" * 255


def test_a_changed_signature_or_message_does_not_verify():
    """Every single flipped bit of the signature, a changed message and a
    signature of the wrong length raise SignatureError."""
    key = SecretKey.from_file(KEYS / "test-cache-1.sec")
    public = key.public_key
    message = b"the statement"
    sig = key.sign(message)
    public.verify(message, sig)
    for bit in range(0, 512, 7):
        bad = bytearray(sig)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(narcache.SignatureError):
            public.verify(message, bytes(bad))
    for wrong in (sig[:63], sig + b"\0", b""):
        with pytest.raises(narcache.SignatureError):
            public.verify(message, wrong)
    for other_message in (b"the statemenT", message + b"\n", b""):
        with pytest.raises(narcache.SignatureError):
            public.verify(other_message, sig)


def test_generate_refuses_bad_names():
    """Key names must be 1..255 printable ASCII bytes without ' ' or ':'."""
    for name in ("", "a b", "a:b", "k" * 256, "caf\u00e9", "tab\there", "nl\n"):
        with pytest.raises(narcache.KeyFormatError):
            SecretKey.generate(name)


GOOD_PUBLIC = (KEYS / "test-cache-1.pub").read_text()
GOOD_SECRET = (KEYS / "test-cache-1.sec").read_text()
MALFORMED = [
    # (text, class to parse it with, where the offset must be: (low, high))
    ("", PublicKey, (0, 0)),
    ("no-colon-at-all", PublicKey, (0, 15)),
    (":" + GOOD_PUBLIC.split(":")[1], PublicKey, (0, 0)),
    ("test-cache-1:", PublicKey, (13, 13)),
    (GOOD_PUBLIC[:20] + "!" + GOOD_PUBLIC[21:], PublicKey, (20, 20)),
    (GOOD_PUBLIC[:20] + " " + GOOD_PUBLIC[21:], PublicKey, (20, 20)),
    (GOOD_PUBLIC + "AAAA", PublicKey, (13, 61)),
    ("test-cache-1:" + base64.b64encode(bytes(31)).decode(), PublicKey, (13, 57)),
    ("bad name:" + GOOD_PUBLIC.split(":")[1], PublicKey, (0, 8)),
    ("k" * 256 + ":" + GOOD_PUBLIC.split(":")[1], PublicKey, (0, 256)),
    (GOOD_SECRET, PublicKey, (13, len(GOOD_SECRET))),
    (GOOD_PUBLIC, SecretKey, (13, len(GOOD_PUBLIC))),
    (GOOD_SECRET + "\n\n", SecretKey, (13, len(GOOD_SECRET) + 2)),
    (GOOD_SECRET[:30] + "*" + GOOD_SECRET[31:], SecretKey, (30, 30)),
    ("", SecretKey, (0, 0)),
]


@pytest.mark.parametrize("text,cls,where", MALFORMED,
                         ids=["%s-%d" % (c.__name__, i) for i, (_, c, _) in enumerate(MALFORMED)])
def test_malformed_keys_raise_key_format_error_with_offset(text, cls, where):
    """A malformed key raises KeyFormatError whose .offset points at the
    problem (within the given range of the text)."""
    with pytest.raises(narcache.KeyFormatError) as info:
        cls.parse(text)
    low, high = where
    assert info.value.offset is not None and low <= info.value.offset <= high
    assert info.value.name == "EBADKEY"


def test_a_secret_key_whose_public_half_does_not_match_is_refused():
    """The 64 secret bytes are seed + public key: a wrong public half is
    refused, and the error shows no key material."""
    raw = base64.b64decode(GOOD_SECRET.split(":")[1])
    for bad in (raw[:32] + bytes(32), raw[:32] + raw[33:] + raw[32:33], raw[:32] + raw[:32]):
        text = "test-cache-1:" + base64.b64encode(bad).decode()
        with pytest.raises(narcache.KeyFormatError) as info:
            SecretKey.parse(text)
        message = str(info.value) + repr(info.value)
        assert base64.b64encode(bad).decode()[:16] not in message
        assert GOOD_SECRET.split(":")[1][:16] not in message


def test_secret_material_never_shows_in_str_repr_or_errors(key_files):
    """str(), repr() and format() of a SecretKey show its name, never the
    secret base64 nor any long piece of it."""
    name, sec, _ = key_files
    secret = SecretKey.from_file(sec)
    b64 = secret_base64(sec)
    seed_b64 = base64.b64encode(base64.b64decode(b64)[:32]).decode()
    for shown in (str(secret), repr(secret), "%s" % secret, "{!r}".format(secret)):
        assert name in shown
        for i in range(0, len(b64) - 12):
            assert b64[i:i + 12] not in shown
        assert seed_b64[:12] not in shown
    # a damaged key file's error does not echo the key either
    damaged = sec.read_text()[:-3] + "!!="
    with pytest.raises(narcache.KeyFormatError) as info:
        SecretKey.parse(damaged)
    assert b64[:20] not in str(info.value)


def test_save_writes_0600_and_never_overwrites(tmp_path):
    """save() writes the secret file with mode 0600 even under umask 0,
    the public file next to it, and refuses to replace an existing file
    (which keeps its contents)."""
    key = SecretKey.generate("saved-1")
    sec, pub = tmp_path / "k.sec", tmp_path / "k.pub"
    old = os.umask(0)
    try:
        key.save(sec, pub)
    finally:
        os.umask(old)
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    assert sec.read_text() == key.export()
    assert pub.read_text() == str(key.public_key)
    assert SecretKey.from_file(sec).export() == key.export()
    assert PublicKey.parse(pub.read_text()) == key.public_key
    other = SecretKey.generate("saved-2")
    with pytest.raises(FileExistsError):
        other.save(sec)
    with pytest.raises(FileExistsError):
        other.save(str(sec))
    assert sec.read_text() == key.export()
    only = tmp_path / "only.sec"
    other.save(only)
    assert only.read_text() == other.export()
    assert sorted(os.listdir(tmp_path)) == ["k.pub", "k.sec", "only.sec"]


def test_nix_reads_a_key_saved_by_python(tmp_path):
    """A key generated and saved by Python is a valid Nix key file: `nix key
    convert-secret-to-public` derives our public key from it, and `nix
    store sign` with it (on a file:// cache) adds exactly the signature
    NarInfo.sign() computes, which our public key verifies."""
    key = SecretKey.generate("python-made-1")
    sec, pub = tmp_path / "py.sec", tmp_path / "py.pub"
    key.save(sec, pub)
    derived = subprocess.run(NIX + ["key", "convert-secret-to-public"], input=sec.read_bytes(),
                             check=True, capture_output=True).stdout.decode()
    assert derived.strip() == pub.read_text()

    cache = tmp_path / "cache"
    cache.mkdir()
    source = DATA / "caches" / "none"
    narinfo_name = "dyfyrpszi87hixnk6as80dh2j3vy31yh.narinfo"
    for name in ("nix-cache-info", narinfo_name):
        (cache / name).write_bytes((source / name).read_bytes())
    golden = narcache.NarInfo.parse((source / narinfo_name).read_text())
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.pop("NIX_REMOTE", None)
    subprocess.run(NIX + ["store", "sign", "--store", "file://%s" % cache, "--key-file",
                          str(sec), golden.store_path], check=True, capture_output=True, env=env)
    signed_by_nix = narcache.NarInfo.parse((cache / narinfo_name).read_text())
    ours = golden.sign(key)
    assert ours in signed_by_nix.sigs
    assert str(signed_by_nix) == str(golden)
    assert signed_by_nix.verify([PublicKey.parse(pub.read_text())]).name == "python-made-1"
