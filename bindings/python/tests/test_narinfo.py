"""narcache.NarInfo against the narinfo files, keys and fingerprints that
real Nix 2.8 wrote (tests/data/narinfo, see its README.md and
nix-verify.txt): parsing and formatting byte for byte, field access,
fingerprints, signing, verification as `nix store verify` decides, setter
validation and hostile input."""
import base64
import random
from pathlib import Path

import pytest

import narcache
from narcache import NarInfo, PublicKey, SecretKey
from narcache.errors import InvalidArgumentError

DATA = Path(__file__).resolve().parents[3] / "tests" / "data" / "narinfo"
KEYS = DATA / "keys"
GOLDEN = sorted((DATA / "golden").glob("*/*.narinfo"))
SIGNED = [p for p in GOLDEN if p.parent.name != "bad"]
REF_DEMO = DATA / "golden" / "none" / "dyfyrpszi87hixnk6as80dh2j3vy31yh.narinfo"
REQUIRED = ("StorePath", "URL", "NarHash", "NarSize")


def name_of(path):
    return "%s/%s" % (path.parent.name, path.stem)


def fields(text):
    """The narinfo's lines as {key: [values]} (Sig repeats)."""
    result = {}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        result.setdefault(key, []).append(value)
    return result


def first(f, key):
    """The first value of `key` in fields() output, or None."""
    return f[key][0] if key in f else None


def public(name):
    return PublicKey.parse((KEYS / (name + ".pub")).read_text())


def secret(name):
    return SecretKey.from_file(KEYS / (name + ".sec"))


def fingerprint_rows():
    rows = []
    for line in (DATA / "fingerprints.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            rows.append(tuple(line.split("\t")))
    return rows


def test_the_golden_data_is_there():
    """The corpus this file relies on exists (a moved directory must fail
    loudly, not make every parametrized test vanish)."""
    assert len(GOLDEN) >= 36
    assert {p.parent.name for p in GOLDEN} == {"none", "xz", "multisig", "bad"}
    assert len(fingerprint_rows()) >= 36


# ---- parse and format


@pytest.mark.parametrize("path", GOLDEN, ids=name_of)
def test_golden_narinfo_formats_back_byte_for_byte(path):
    """Every narinfo Nix wrote parses (from str and from bytes) and str()
    gives back exactly the same text."""
    text = path.read_text()
    assert str(NarInfo.parse(text)) == text
    assert bytes(NarInfo.parse(path.read_bytes())) == path.read_bytes()


@pytest.mark.parametrize("path", GOLDEN, ids=name_of)
def test_properties_match_the_text_fields(path):
    """Each property returns the value of its line in the file (or None /
    empty when the line is absent)."""
    f = fields(path.read_text())
    ni = NarInfo.parse(path.read_text())
    assert ni.store_dir == "/nix/store"
    assert ni.store_path == first(f, "StorePath")
    assert ni.url == first(f, "URL")
    assert ni.compression == first(f, "Compression")
    assert ni.nar_hash == first(f, "NarHash")
    assert ni.nar_size == int(first(f, "NarSize"))
    assert ni.file_hash == first(f, "FileHash")
    assert ni.file_size == (int(first(f, "FileSize")) if "FileSize" in f else None)
    assert ni.references == tuple(sorted(first(f, "References").split()))
    assert ni.deriver == first(f, "Deriver")
    assert ni.system == first(f, "System")
    assert ni.ca == first(f, "CA")
    assert ni.sigs == tuple(sorted(f.get("Sig", [])))
    assert ni.store_path in repr(ni)


def test_equality_is_by_content():
    """Two parses of one file are equal; a changed field makes them differ;
    a NarInfo is mutable, hence unhashable."""
    a, b = NarInfo.parse(REF_DEMO.read_text()), NarInfo.parse(REF_DEMO.read_text())
    assert a == b
    b.url = "nar/other.nar"
    assert a != b
    with pytest.raises(TypeError):
        hash(a)


def test_nix_leniencies_are_accepted_and_normalized():
    """What Nix 2.8 accepts -- an unknown key, References repeated or with
    extra spaces, "Deriver: unknown-deriver", NarHash in hex or SRI -- parses
    and formats back to Nix's own rendering."""
    golden = REF_DEMO.read_text()
    f = fields(golden)
    digest = narcache.hashes.parse(f["NarHash"][0])
    raw = bytes(digest.digest[:digest.len])
    refs = f["References"][0].split()
    variants = [
        golden.replace("Deriver:", "X-Unknown: whatever\nDeriver:"),
        golden.replace(f["References"][0], "%s  %s %s" % (refs[1], refs[0], refs[1])),
        golden.replace(f["NarHash"][0], "sha256:" + raw.hex()),
        golden.replace(f["NarHash"][0], "sha256-" + base64.b64encode(raw).decode()),
    ]
    for text in variants:
        assert text != golden
        ni = NarInfo.parse(text)
        assert str(ni) == golden
        assert ni.verify([public("test-cache-1")]) is not None
    unknown = NarInfo.parse(golden.replace(f["Deriver"][0], "unknown-deriver"))
    assert unknown.deriver is None
    assert "Deriver" not in str(unknown)


def test_another_store_directory():
    """A narinfo of another store directory parses only with that
    store_dir, and its fingerprint names paths there."""
    text = REF_DEMO.read_text().replace("/nix/store", "/gnu/store")
    with pytest.raises(narcache.NarInfoError):
        NarInfo.parse(text)
    ni = NarInfo.parse(text, store_dir="/gnu/store")
    assert ni.store_dir == "/gnu/store"
    assert ni.fingerprint().startswith("1;/gnu/store/")
    assert ",/gnu/store/" in ni.fingerprint()
    assert str(ni) == text
    with pytest.raises(narcache.NarcacheError):
        NarInfo(store_dir="relative/store")


# ---- fingerprints and signatures


@pytest.mark.parametrize("row", fingerprint_rows(), ids=lambda r: r[0] + ":" + r[2].split(":")[0])
def test_fingerprint_equals_what_nix_signed(row):
    """fingerprint() is exactly the statement Nix signed, and the file
    carries that signature."""
    narinfo, fingerprint, sig = row
    ni = NarInfo.parse((DATA / "golden" / narinfo).read_text())
    assert ni.fingerprint() == fingerprint
    assert sig in ni.sigs


@pytest.mark.parametrize("path", SIGNED, ids=name_of)
def test_verify_returns_the_trusted_key_that_signed(path):
    """verify() with the golden public key returns that very object;
    with only an unrelated key it raises NotFoundError (nothing trusted
    signed), as `nix store verify` calls such a path untrusted."""
    ni = NarInfo.parse(path.read_text())
    key = public("test-cache-1")
    assert ni.verify([key]) is key
    stranger = SecretKey.generate("stranger-1").public_key
    assert ni.verify([stranger, key]) is key
    with pytest.raises(narcache.NotFoundError):
        ni.verify([stranger])
    with pytest.raises(narcache.NotFoundError):
        ni.verify([])
    other = public("other-cache-2")
    if path.parent.name == "multisig":
        assert ni.verify([other]) is other
        assert ni.verify([other, key]) in (other, key)
    else:
        with pytest.raises(narcache.NotFoundError):
            ni.verify([other])


# What `nix store verify --trusted-public-keys test-cache-1:... --sigs-needed 1`
# says of each hand-edited file (nix-verify.txt): exit 2 "untrusted" because no
# signature by a trusted key exists -> NotFoundError; exit 2 because the trusted
# key's signature does not verify -> SignatureError; exit 4 "signature is not
# valid" (a malformed signature by a trusted key) -> SignatureError; accepted ->
# the key. sig-good-plus-corrupt holds a corrupt but well-formed (64-byte)
# signature next to a good one: narinfo.h accepts when one entry verifies.
BAD_EXPECTED = {
    "sig-other-key": narcache.NotFoundError,
    "sig-missing": narcache.NotFoundError,
    "sig-other-key-relabeled": narcache.SignatureError,
    "sig-corrupt-char": narcache.SignatureError,
    "sig-truncated": narcache.SignatureError,
    "narsize-changed": narcache.SignatureError,
    "narhash-changed": narcache.SignatureError,
    "references-changed": narcache.SignatureError,
    "sig-good-plus-corrupt": None,
}


def test_every_bad_file_has_an_expectation():
    """The table below covers exactly the files in golden/bad."""
    assert {p.stem for p in GOLDEN if p.parent.name == "bad"} == set(BAD_EXPECTED)


@pytest.mark.parametrize("case", sorted(BAD_EXPECTED))
def test_bad_files_verify_as_nix_decides(case):
    """Each hand-edited narinfo is refused (or accepted) as Nix 2.8 does,
    with the exception class telling "untrusted" from "bad signature"; a
    SignatureError names the trusted key whose signature failed."""
    ni = NarInfo.parse((DATA / "golden" / "bad" / (case + ".narinfo")).read_text())
    key = public("test-cache-1")
    expected = BAD_EXPECTED[case]
    if expected is None:
        assert ni.verify([key]) is key
        return
    with pytest.raises(expected) as info:
        ni.verify([key])
    assert type(info.value) is expected
    if expected is narcache.SignatureError:
        assert "test-cache-1" in str(info.value)


def test_malformed_signature_by_a_trusted_key_is_refused_even_next_to_a_good_one():
    """narinfo.h: a malformed signature (not 64 bytes) by a trusted key is
    EBADSIG even if another entry verifies, as Nix 2.8 aborts with
    "signature is not valid"; by an untrusted name it is ignored."""
    golden = REF_DEMO.read_text()
    truncated = fields((DATA / "golden" / "bad" / "sig-truncated.narinfo").read_text())["Sig"][0]
    assert truncated.startswith("test-cache-1:")
    ni = NarInfo.parse(golden)
    ni.sigs = ni.sigs + (truncated,)
    assert len(ni.sigs) == 2
    with pytest.raises(narcache.SignatureError):
        ni.verify([public("test-cache-1")])
    ni.sigs = fields(golden)["Sig"] + ["unrelated-9:" + truncated.split(":", 1)[1]]
    key = public("test-cache-1")
    assert ni.verify([key]) is key


def test_a_wrong_signature_by_one_trusted_key_and_a_good_one_by_another():
    """A well-formed but wrong signature by one trusted key does not stop a
    good signature by another trusted key from verifying (Nix: one good
    Sig is enough)."""
    text = (DATA / "golden" / "multisig" / REF_DEMO.name).read_text()
    ni = NarInfo.parse(text)
    good = fields(text)["Sig"]
    broken = [s if not s.startswith("test-cache-1:") else
              s[:20] + ("A" if s[20] != "A" else "B") + s[21:] for s in good]
    ni.sigs = broken
    other, key = public("other-cache-2"), public("test-cache-1")
    assert ni.verify([key, other]) is other
    with pytest.raises(narcache.SignatureError):
        ni.verify([key])


def test_of_two_trusted_keys_with_one_name_the_first_counts():
    """As Nix builds its key map: a second trusted key of the same name is
    ignored, whether it is the right key or an impostor."""
    ni = NarInfo.parse(REF_DEMO.read_text())
    real = public("test-cache-1")
    impostor = SecretKey.generate("test-cache-1").public_key
    assert impostor.name == real.name and impostor != real
    assert ni.verify([real, impostor]) is real
    with pytest.raises(narcache.SignatureError):
        ni.verify([impostor, real])


def test_verify_and_sign_check_their_argument_types():
    """Keys of the wrong kind are refused before reaching C."""
    ni = NarInfo.parse(REF_DEMO.read_text())
    with pytest.raises(TypeError):
        ni.verify([secret("test-cache-1")])
    with pytest.raises(TypeError):
        ni.verify(["test-cache-1:Rafd3TBRcGGOBAWy+lynoJ9yLAs+zGtteFsrD9X31xY="])
    with pytest.raises(TypeError):
        ni.sign(public("test-cache-1"))


def rebuilt(text, **overrides):
    """A NarInfo built from keyword arguments with the text's fields, no Sig."""
    f = fields(text)
    kwargs = dict(
        store_path=first(f, "StorePath"), url=first(f, "URL"), nar_hash=first(f, "NarHash"),
        nar_size=int(first(f, "NarSize")), compression=first(f, "Compression"),
        file_hash=first(f, "FileHash"),
        file_size=int(first(f, "FileSize")) if "FileSize" in f else None,
        references=first(f, "References").split(), deriver=first(f, "Deriver"), system=first(f, "System"),
        ca=first(f, "CA"))
    kwargs.update(overrides)
    return NarInfo(**kwargs)


@pytest.mark.parametrize("path", [p for p in SIGNED if p.parent.name in ("none", "xz")],
                         ids=name_of)
def test_signing_a_rebuilt_narinfo_reproduces_nix_exactly(path):
    """Built from keyword arguments and signed with test-cache-1.sec, a
    narinfo renders exactly as Nix wrote it (ed25519 is deterministic)."""
    text = path.read_text()
    ni = rebuilt(text)
    assert ni.sigs == ()
    assert str(ni) == "".join(l + "\n" for l in text.splitlines() if not l.startswith("Sig: "))
    sig = ni.sign(secret("test-cache-1"))
    assert sig == fields(text)["Sig"][0]
    assert str(ni) == text


def test_signing_with_two_keys_reproduces_the_multisig_file():
    """Two keys give two sorted Sig lines, as in golden/multisig; signing
    again with one key replaces its entry instead of adding one."""
    for path in (p for p in SIGNED if p.parent.name == "multisig"):
        text = path.read_text()
        ni = rebuilt(text)
        ni.sign(secret("test-cache-1"))
        ni.sign(secret("other-cache-2"))
        assert str(ni) == text
        ni.sign(secret("test-cache-1"))
        assert len(ni.sigs) == 2 and str(ni) == text


def test_sign_replaces_a_stale_signature_of_the_same_key():
    """A wrong Sig entry by test-cache-1 is replaced by sign(), after which
    the narinfo verifies again."""
    text = (DATA / "golden" / "bad" / "sig-corrupt-char.narinfo").read_text()
    ni = NarInfo.parse(text)
    with pytest.raises(narcache.SignatureError):
        ni.verify([public("test-cache-1")])
    ni.sign(secret("test-cache-1"))
    assert str(ni) == REF_DEMO.read_text()


def test_a_narinfo_without_required_fields_cannot_be_rendered_or_signed():
    """StorePath, URL, NarHash and NarSize are required to format; the
    fingerprint needs StorePath, NarHash and NarSize."""
    empty = NarInfo()
    for action in (str, NarInfo.fingerprint, lambda ni: ni.sign(secret("test-cache-1"))):
        with pytest.raises(narcache.NarInfoError):
            action(empty)
    ni = rebuilt(REF_DEMO.read_text(), url=None)
    assert ni.url is None
    with pytest.raises(narcache.NarInfoError):
        str(ni)
    assert ni.fingerprint() == dict(r[:2] for r in fingerprint_rows())["none/" + REF_DEMO.name]
    assert NarInfo().compression == "bzip2"
    assert NarInfo().nar_size is None and NarInfo().nar_hash is None


# ---- setters


BAD_VALUES = [
    ("store_path", "/nix/store/short-x", narcache.NarInfoError),
    ("store_path", "/usr/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo", narcache.NarInfoError),
    ("store_path", "/nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref demo", narcache.NarInfoError),
    ("store_path", "", narcache.NarInfoError),
    ("url", "", narcache.NarInfoError),
    ("url", "nar/a b.nar", narcache.NarInfoError),
    ("url", "nar/a\nSig: x:y", narcache.NarInfoError),
    ("compression", "x z", narcache.NarInfoError),
    ("compression", "a/b", narcache.NarInfoError),
    ("nar_hash", "md5:00000000000000000000000000000000", narcache.HashFormatError),
    ("nar_hash", "sha256:tooshort", narcache.HashFormatError),
    ("nar_hash", "not a hash", narcache.HashFormatError),
    ("file_hash", "sha256:0000", narcache.HashFormatError),
    ("file_hash", "nohash:0000", narcache.HashFormatError),
    ("nar_size", 0, (narcache.NarInfoError, InvalidArgumentError)),
    ("references", ["not-a-base-name"], narcache.NarInfoError),
    ("references", ["2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1", "bad name"], narcache.NarInfoError),
    ("references", ["/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1"], narcache.NarInfoError),
    ("deriver", "x.drv", narcache.NarInfoError),
    ("system", "x86_64 linux", narcache.NarInfoError),
    ("system", "x86_64-linux\n", narcache.NarInfoError),
    ("ca", "bogus", narcache.NarInfoError),
    ("ca", "fixed:sha256:zz", narcache.NarInfoError),
    ("sigs", [":no-name"], narcache.NarInfoError),
    ("sigs", ["no-colon"], narcache.NarInfoError),
    ("sigs", ["ok-1:abc", "bad 2:abc"], narcache.NarInfoError),
]


@pytest.mark.parametrize("field,value,error", BAD_VALUES,
                         ids=["%s=%r" % (f, v) for f, v, _ in BAD_VALUES])
def test_setters_reject_bad_values_and_leave_the_object_unchanged(field, value, error):
    """A refused value raises the documented class and changes nothing, not
    even part of a list."""
    ni = NarInfo.parse(REF_DEMO.read_text())
    before = getattr(ni, field)
    with pytest.raises(error):
        setattr(ni, field, value)
    assert getattr(ni, field) == before
    assert str(ni) == REF_DEMO.read_text()


@pytest.mark.parametrize("field,value", [("nar_size", -1), ("file_size", -1),
                                         ("nar_size", 2**64 + 216), ("file_size", 2**64)])
def test_sizes_out_of_the_unsigned_64_bit_range_are_refused(field, value):
    """A size that is negative or does not fit in 64 bits is an error, not
    silently wrapped into another number."""
    ni = NarInfo.parse(REF_DEMO.read_text())
    with pytest.raises((ValueError, OverflowError, narcache.NarcacheError)):
        setattr(ni, field, value)
    assert str(ni) == REF_DEMO.read_text()


def test_setter_error_messages_describe_this_failure_not_an_earlier_one():
    """The message of a failed setter is about that setter: after a refused
    Compression, a refused NarHash or NarSize must not repeat the
    Compression complaint."""
    ni = NarInfo.parse(REF_DEMO.read_text())
    with pytest.raises(narcache.NarInfoError) as first:
        ni.compression = "x z"
    assert "Compression" in str(first.value)
    with pytest.raises(narcache.HashFormatError) as second:
        ni.nar_hash = "md5:00000000000000000000000000000000"
    assert "Compression" not in str(second.value)
    with pytest.raises(narcache.NarcacheError) as third:
        ni.nar_size = 0
    assert "Compression" not in str(third.value)


def test_setters_accept_good_values_and_clear_optional_fields():
    """Good values change the rendering; None clears optional fields;
    hashes read back in Nix's spelling whatever spelling was given."""
    ni = NarInfo.parse(REF_DEMO.read_text())
    ni.system = "x86_64-linux"
    ni.ca = "fixed:r:sha256:" + "0" * 52
    ni.compression = "zstd"
    ni.file_hash = "sha256:" + "00" * 32
    ni.file_size = 7
    text = str(ni)
    assert "System: x86_64-linux\n" in text and "Compression: zstd\n" in text
    assert "FileHash: sha256:" + "0" * 52 + "\n" in text and "FileSize: 7\n" in text
    assert text.index("Sig: ") < text.index("CA: ")
    for name in ("system", "ca", "deriver", "file_hash", "file_size"):
        setattr(ni, name, None)
        assert getattr(ni, name) is None
    ni.compression = None
    assert ni.compression == "bzip2"
    ni.references = []
    assert ni.references == () and "References: \n" in str(ni)
    ni.references = ["dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo",
                     "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1",
                     "dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo"]
    assert ni.references == ("2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1",
                             "dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo")
    with pytest.raises(TypeError):
        ni.references = "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1"


# ---- hostile input


def must_not_parse(data):
    """Parsing `data` raises a NarcacheError (and nothing else)."""
    with pytest.raises(narcache.NarcacheError) as info:
        NarInfo.parse(data)
    return info.value


def test_random_bytes_are_refused():
    """Random byte strings of many lengths raise NarcacheError."""
    rng = random.Random(1234)
    for n in list(range(0, 64)) + [rng.randrange(64, 5000) for _ in range(200)]:
        must_not_parse(bytes(rng.randrange(256) for _ in range(n)))


@pytest.mark.parametrize("path", [p for p in GOLDEN if p.parent.name in ("none", "bad")],
                         ids=name_of)
def test_every_truncation_of_a_golden_file_is_refused_or_complete(path):
    """A golden file cut at any byte is refused unless the cut falls at a
    line end after all required fields; a refusal points into the text."""
    data = path.read_bytes()
    complete = 0
    for cut in range(len(data)):
        piece = data[:cut]
        try:
            ni = NarInfo.parse(piece)
        except narcache.NarInfoError as e:
            assert e.offset is not None and 0 <= e.offset <= cut
            continue
        assert piece.endswith(b"\n")
        assert all(key in fields(piece.decode()) for key in REQUIRED)
        assert ni.store_path == fields(piece.decode())["StorePath"][0]
        complete += 1
    assert complete >= 1  # at least the file without its last line


def test_mutated_golden_files_never_crash():
    """Golden files with random bytes changed, inserted or deleted either
    parse or raise NarcacheError; what parses formats and fingerprints."""
    rng = random.Random(99)
    sources = [p.read_bytes() for p in GOLDEN]
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(3000):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(data))
            op = rng.randrange(3)
            if op == 0:
                data[pos] = rng.randrange(256)
            elif op == 1:
                data.insert(pos, rng.choice(b"\n\r\0: abcSig"))
            else:
                del data[pos]
        try:
            ni = NarInfo.parse(bytes(data))
        except narcache.NarcacheError:
            outcomes["refused"] += 1
            continue
        outcomes["parsed"] += 1
        assert str(ni).startswith("StorePath: ")
        assert ni.fingerprint().startswith("1;/nix/store/")
    assert outcomes["parsed"] > 0 and outcomes["refused"] > 0


def test_oversized_input_is_refused():
    """A 2 MiB text, over the 1 MiB limit, is refused with LimitError --
    whether garbage or made of valid-looking lines."""
    must_not_parse(b"A" * (2 << 20))
    golden = REF_DEMO.read_bytes()
    padded = golden + b"X-Padding: " + b"p" * (2 << 20) + b"\n"
    assert isinstance(must_not_parse(padded), narcache.LimitError)
    assert isinstance(must_not_parse("é" * (1 << 20)), narcache.LimitError)


@pytest.mark.parametrize("old,new,line,field", [
    ("NarSize: 216", "NarSize: -216", 7, "NarSize"),
    ("NarSize: 216", "NarSize: 21x6", 7, "NarSize"),
    ("NarSize: 216", "NarSize: 99999999999999999999999", 7, "NarSize"),
    ("Compression: none", "Compression:  none", 3, "Compression"),
    ("URL: nar/", "URL: nar /", 2, "URL"),
    ("FileSize: 216\n", "FileSize: 216\r\n", 5, "FileSize"),
    ("NarHash: sha256:", "NarHash: md5:", 6, "NarHash"),
    ("Deriver: ba70", "Deriver: \x01ba70", 9, "Deriver"),
    ("References: 2x2r", "References: 2x2r/", 8, "References"),
    ("Sig: test-cache-1", "Sig: :test-cache-1", 10, "Sig"),
    ("Deriver:", "URL: nar/again.nar\nDeriver:", 9, "URL"),
    ("Deriver:", "\nDeriver:", 9, None),
    ("Deriver:", "Bad Key: x\nDeriver:", 9, None),
])
def test_narinfo_error_names_line_and_offset(old, new, line, field):
    """A malformed line raises NarInfoError whose message names the line
    (and the field) and whose .offset lies on that line."""
    golden = REF_DEMO.read_text()
    assert old in golden
    text = golden.replace(old, new, 1)
    e = must_not_parse(text)
    assert isinstance(e, narcache.NarInfoError)
    assert "line %d" % line in str(e)
    if field:
        assert field in str(e)
    data = text.encode()
    start = sum(len(l) for l in data.splitlines(keepends=True)[:line - 1])
    end = start + len(data.splitlines(keepends=True)[line - 1])
    assert start <= e.offset < end


def test_parse_errors_carry_the_library_code_and_name():
    """NarInfoError is a NarcacheError with the library's code and name."""
    e = must_not_parse("StorePath: /nix/store/x\n")
    assert isinstance(e, narcache.NarInfoError)
    assert e.name == "EBADNARINFO" and e.code < 0
