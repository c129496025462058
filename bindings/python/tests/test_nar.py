"""The Python binding's NAR functions against the real Nix (nix-store
--dump, nix-hash), and the mapping of library errors to exceptions."""
import hashlib
import io
import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import narcache
from narcache import errors, nar


@pytest.fixture
def tree(tmp_path):
    """Files of several sizes, an executable, a symlink, nested and empty
    directories, names that sort differently as bytes and as text."""
    root = tmp_path / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a").write_bytes(b"hello\n")
    (root / "B").write_bytes(os.urandom(300000))
    (root / "sub" / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "sub" / "run.sh", 0o755)
    (root / "sub" / "deeper" / "zero").write_bytes(b"")
    os.symlink("../a", root / "sub" / "link")
    (root / "\u00e9t\u00e9").write_bytes(b"unicode name")
    return root


def nix_dump(path):
    return subprocess.run(["nix-store", "--dump", str(path)], check=True,
                          capture_output=True).stdout


def test_dump_equals_nix_store_dump(tree):
    assert narcache.nar.dump(tree) == nix_dump(tree)
    single = tree / "a"
    assert narcache.nar.dump(single) == nix_dump(single)
    link = tree / "sub" / "link"
    assert narcache.nar.dump(link) == nix_dump(link)


def test_dump_to_a_file_and_to_a_stream(tree, tmp_path):
    expected = nix_dump(tree)
    out = tmp_path / "out.nar"
    with open(out, "wb") as f:
        f.write(b"")  # buffered data must not get mixed up with the fd writes
        assert narcache.nar.dump_to(tree, f) == len(expected)
    assert out.read_bytes() == expected
    stream = io.BytesIO()  # no fileno(): copied through a temporary file
    assert narcache.nar.dump_to(tree, stream) == len(expected)
    assert stream.getvalue() == expected


def test_hash_equals_nix_hash(tree):
    nar_hash, size = narcache.nar.hash(tree)
    expected = subprocess.run(["nix-hash", "--type", "sha256", "--base32", str(tree)],
                              check=True, capture_output=True, text=True).stdout.strip()
    assert nar_hash == "sha256:" + expected
    assert size == len(nix_dump(tree))


def test_missing_path_raises_with_the_library_message(tmp_path):
    missing = tmp_path / "nothing-here"
    with pytest.raises(errors.NarcacheIOError) as info:
        narcache.nar.hash(missing)
    e = info.value
    assert isinstance(e, narcache.NarcacheError) and isinstance(e, OSError)
    assert e.name == "EIO" and e.code < 0
    assert str(missing) in e.message
    with pytest.raises(errors.NarcacheIOError):
        narcache.nar.dump(missing)


def test_a_socket_is_not_supported(tmp_path):
    import socket
    path = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    try:
        with pytest.raises(errors.NotSupportedError):
            narcache.nar.dump(path)
    finally:
        s.close()


def test_every_error_code_has_its_class():
    seen = {}
    code = -1
    while errors._lib.narcache_errname(code).decode() != "UNKNOWN":
        cls = errors.error_class(code)
        assert cls is not narcache.NarcacheError, "no class for code %d" % code
        e = cls(code)
        assert e.code == code and e.message and e.name in str(e)
        seen[e.name] = cls
        code -= 1
    assert len(seen) >= 25
    assert seen["EBADNAR"] is narcache.NarError
    assert seen["EBADSIG"] is narcache.SignatureError
    # a code this package does not know still raises the base class
    assert errors.error_class(code) is narcache.NarcacheError
    with pytest.raises(narcache.NarcacheError):
        errors.check(code - 100)
    assert errors.check(7) == 7


def test_version_command():
    out = subprocess.run([sys.executable, "-m", "narcache", "--version"], check=True,
                         capture_output=True, text=True).stdout
    assert out.startswith("narcache ") and narcache.library_version in out


# ---------------------------------------------------------------------------
# nar.parse, nar.restore and nar.listing_json against the golden NARs and
# listings real Nix 2.8 wrote (tests/data/nar, see its README.md).

NAR_DATA = Path(__file__).resolve().parents[3] / "tests" / "data" / "nar"
GOLDEN_NARS = sorted(p.stem for p in (NAR_DATA / "golden").glob("*.nar"))
#: Nodes must be nested less deeply than this (nar.h, the parser's default).
DEPTH_LIMIT = 64
EV = nar.EventType


def manifest():
    """{case: (nar_size, sha256 hex, nix32)} from manifest.tsv."""
    rows = {}
    for line in (NAR_DATA / "manifest.tsv").read_text().splitlines():
        if line.startswith("#") or line.startswith("case\t") or not line:
            continue
        case, size, sha, nix32 = line.split("\t")
        rows[case] = (int(size), sha, nix32)
    return rows


def golden_nar(case):
    return (NAR_DATA / "golden" / (case + ".nar")).read_bytes()


def golden_ls(case):
    return (NAR_DATA / "golden" / (case + ".ls")).read_bytes()


def decode_listing(data):
    """A .ls file as a dict; raw non-UTF-8 bytes become surrogate escapes,
    as nar.Event names do."""
    return json.loads(as_bytes(data).decode("utf-8", "surrogateescape"))


def as_bytes(text):
    """A listing as bytes, whether the binding returns bytes or str (with
    non-UTF-8 bytes as surrogate escapes)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    return text.encode("utf-8", "surrogateescape")


def max_depth(node, depth=0):
    if node["type"] != "directory":
        return depth
    return max([depth] + [max_depth(n, depth + 1) for n in node["entries"].values()])


def too_deep(case):
    return max_depth(decode_listing(golden_ls(case))["root"]) >= DEPTH_LIMIT


def ordered(node):
    """A listing node as nested tuples, keeping the entry order."""
    if node["type"] == "directory":
        return ("directory", tuple((k, ordered(v)) for k, v in node["entries"].items()))
    return tuple(sorted(node.items()))


def coalesce(events):
    """Events with runs of FILE_DATA merged into one (how contents are cut
    into FILE_DATA events depends on the input chunks), checking that the
    pieces of a run are contiguous."""
    out = []
    for ev in events:
        if ev.type == EV.FILE_DATA and out and out[-1].type == EV.FILE_DATA:
            prev = out[-1]
            assert ev.offset == prev.offset + len(prev.data)
            out[-1] = nar.Event(EV.FILE_DATA, prev.depth, prev.offset, data=prev.data + ev.data)
        else:
            out.append(ev)
    return out


def tree_from_events(events, data):
    """Rebuild the listing tree ({"version": 1, "root": ...}) from parse
    events, checking depths, offsets and contents against the NAR bytes."""
    stack, root, name, current = [], None, None, None

    def attach(node):
        nonlocal root
        if not stack:
            assert root is None
            root = node
        else:
            entries = stack[-1]["entries"]
            assert name not in entries
            if entries:
                assert os.fsencode(list(entries)[-1]) < os.fsencode(name)  # sorted
            entries[name] = node

    for ev in events:
        if ev.type == EV.DIR_BEGIN:
            assert ev.depth == len(stack)
            node = {"type": "directory", "entries": {}}
            attach(node)
            stack.append(node)
        elif ev.type == EV.ENTRY:
            assert ev.depth == len(stack) and ev.name
            name = ev.name
        elif ev.type == EV.FILE_BEGIN:
            assert ev.depth == len(stack)
            node = {"type": "regular", "size": ev.size}
            if ev.executable:
                node["executable"] = True
            node["narOffset"] = ev.offset
            attach(node)
            current = [node, 0]
        elif ev.type == EV.FILE_DATA:
            node, received = current
            assert ev.offset == node["narOffset"] + received
            assert data[ev.offset:ev.offset + len(ev.data)] == ev.data
            current[1] += len(ev.data)
        elif ev.type == EV.FILE_END:
            node, received = current
            assert received == node["size"]
            assert ev.offset == node["narOffset"] + (node["size"] + 7) // 8 * 8
            current = None
        elif ev.type == EV.SYMLINK:
            assert ev.depth == len(stack)
            attach({"type": "symlink", "target": ev.target})
        elif ev.type == EV.DIR_END:
            stack.pop()
            assert ev.depth == len(stack)
        else:
            assert ev.type == EV.END and not stack
            assert ev.offset == len(data)
    assert events[-1].type == EV.END
    return {"version": 1, "root": root}


class Trickle(io.RawIOBase):
    """A binary file object whose read() returns at most `most` bytes."""

    def __init__(self, data, most=7):
        self.data, self.pos, self.most = data, 0, most

    def readable(self):
        return True

    def read(self, n=-1):
        n = self.most if n < 0 else min(n, self.most)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


def events_until_error(source):
    """(events yielded, the NarcacheError raised or None)."""
    events = []
    try:
        for ev in nar.parse(source):
            events.append(ev)
    except narcache.NarcacheError as e:
        return events, e
    return events, None


def assert_prefix(partial, full):
    """`partial` events are the start of `full` (a last FILE_DATA may hold
    only the start of the contents)."""
    partial, full = coalesce(partial), coalesce(full)
    assert len(partial) <= len(full)
    for got, want in zip(partial, full):
        if got != want:
            assert got is partial[-1] and got.type == want.type == EV.FILE_DATA
            assert got.offset == want.offset and want.data.startswith(got.data)


def test_the_golden_nars_are_there_and_match_the_manifest():
    """The corpus is present and each golden NAR has the size and SHA-256
    that manifest.tsv records from nix-store --dump."""
    rows = manifest()
    assert len(GOLDEN_NARS) >= 17 and set(GOLDEN_NARS) <= set(rows)
    for case in GOLDEN_NARS:
        data = golden_nar(case)
        assert (len(data), hashlib.sha256(data).hexdigest()) == rows[case][:2]
    assert [c for c in GOLDEN_NARS if too_deep(c)] == ["nested-100", "nested-63", "nested-64"]


@pytest.mark.parametrize("case", GOLDEN_NARS)
def test_parse_events_reconstruct_the_golden_listing(case):
    """The parse events of a golden NAR rebuild exactly the tree of Nix's
    .ls listing (entry order, sizes, executable bits, targets, narOffsets),
    FILE_DATA pieces are the NAR's bytes and add up to the file sizes, and
    END is at the NAR's end. Trees nested 64 deep or more stop with
    LimitError at the limit, after the events before it."""
    data = golden_nar(case)
    events, error = events_until_error(data)
    if too_deep(case):
        assert isinstance(error, narcache.LimitError)
        assert 0 < error.offset < len(data) and events
        assert max(ev.depth for ev in events) == DEPTH_LIMIT - 1
        return
    assert error is None
    tree = tree_from_events(events, data)
    expected = decode_listing(golden_ls(case))
    assert tree == expected
    assert ordered(tree["root"]) == ordered(expected["root"])
    if tree["root"]["type"] == "regular":
        assert [ev.type for ev in coalesce(events)][:1] == [EV.FILE_BEGIN]


@pytest.mark.parametrize("case", ["spec-dir", "padding", "symlinks", "names", "bytes-names",
                                  "mixed", "file-empty", "symlink-root"])
def test_parsing_a_file_object_in_small_reads_gives_the_same_events(case):
    """A binary file object read a few bytes at a time, or 1 MiB at a time,
    yields the same events as the NAR given as bytes (contents may be cut
    into more FILE_DATA pieces)."""
    data = golden_nar(case)
    whole = list(nar.parse(data))
    for most in (1, 7, 4096):
        assert coalesce(list(nar.parse(Trickle(data, most)))) == coalesce(whole)
    assert coalesce(list(nar.parse(io.BytesIO(data)))) == coalesce(whole)
    assert coalesce(list(nar.parse(bytearray(data)))) == coalesce(whole)
    assert coalesce(list(nar.parse(memoryview(data)))) == coalesce(whole)


def test_every_truncation_of_a_small_nar_raises_with_an_offset():
    """spec-dir cut at every byte raises NarError whose offset lies within
    the bytes given, after yielding a prefix of the full events."""
    data = golden_nar("spec-dir")
    full = list(nar.parse(data))
    for cut in range(len(data)):
        events, error = events_until_error(data[:cut])
        assert isinstance(error, narcache.NarError), cut
        assert 0 <= error.offset <= cut
        assert_prefix(events, full)
        if cut > 100:
            assert events


@pytest.mark.parametrize("case", ["padding", "symlinks", "names", "bytes-targets", "mixed",
                                  "nested-62"])
def test_truncations_of_larger_nars_raise_with_an_offset(case):
    """Golden NARs cut at 60 random points (also read in small pieces)
    raise NarError within the data, after a prefix of the events."""
    data = golden_nar(case)
    full = list(nar.parse(data))
    rng = random.Random(case)
    for cut in sorted(rng.sample(range(len(data)), 60)):
        source = data[:cut] if cut % 2 else Trickle(data[:cut], 1000)
        events, error = events_until_error(source)
        assert isinstance(error, narcache.NarError), cut
        assert 0 <= error.offset <= cut
        assert_prefix(events, full)


def frames(data):
    """(start, length) of every string frame: a NAR is nothing else."""
    pos, result = 0, []
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 8], "little")
        result.append((pos, n))
        pos += 8 + (n + 7) // 8 * 8
    assert pos == len(data)
    return result


def token_frames(data):
    """Start offsets of the frames that are grammar tokens ("(", "entry",
    "type", ...), not names, targets or contents."""
    starts, previous = [], None
    for start, n in frames(data):
        value = data[start + 8:start + 8 + n]
        if previous not in (b"contents", b"name", b"target") and value in TOKENS:
            starts.append(start)
        previous = value
    return starts


TOKENS = {b"nix-archive-1", b"(", b")", b"type", b"regular", b"executable", b"contents",
          b"symlink", b"target", b"directory", b"entry", b"name", b"node"}


def test_nonzero_padding_is_refused_at_its_offset():
    """Every padding byte of spec-dir (after tokens, names and contents),
    set to 1, raises NarError at exactly that byte, after a prefix of the
    events."""
    data = golden_nar("spec-dir")
    full = list(nar.parse(data))
    padding = [i for start, n in frames(data)
               for i in range(start + 8 + n, start + 8 + (n + 7) // 8 * 8)]
    assert len(padding) > 100
    for pos in padding:
        damaged = bytearray(data)
        damaged[pos] = 1
        events, error = events_until_error(bytes(damaged))
        assert isinstance(error, narcache.NarError)
        assert error.offset == pos and "padding" in error.message
        assert_prefix(events, full)


@pytest.mark.parametrize("pos,value", [(8, ord("N")), (0, 14), (24, 2), (48, ord("T")),
                                       (64, 8), (72, ord("x")), (128, 200), (232, 0xff)])
def test_corrupted_nars_raise_within_the_data(pos, value):
    """Damaged magic, lengths and tokens of spec-dir raise NarError (or
    LimitError) with an offset inside the data, after a prefix of the
    events. A changed content byte is not an error (contents are opaque)."""
    data = golden_nar("spec-dir")
    full = list(nar.parse(data))
    damaged = bytearray(data)
    damaged[pos] = value
    events, error = events_until_error(bytes(damaged))
    if pos == 232:
        assert error is None and events[3].data == b"\xffi\n"
        return
    assert isinstance(error, (narcache.NarError, narcache.LimitError))
    assert 0 <= error.offset <= len(data)
    assert_prefix(events, full)


@pytest.mark.parametrize("extra", [b"\0", b"\0" * 8, b"nix-archive-1", golden_nar("file-empty")])
def test_trailing_bytes_after_the_archive_raise(extra):
    """Any byte after the root node's ")" raises NarError at the NAR's end,
    after every event including END; also when it arrives in a later read."""
    data = golden_nar("spec-dir")
    for source in (data + extra, Trickle(data + extra, 1064), Trickle(data + extra, 5)):
        events, error = events_until_error(source)
        assert isinstance(error, narcache.NarError)
        assert error.offset == len(data)
        assert coalesce(events) == coalesce(list(nar.parse(data)))


def test_parse_rejects_non_binary_sources():
    """A text-mode file or an object that is no file at all is a TypeError."""
    with pytest.raises(TypeError):
        list(nar.parse(io.StringIO("nix-archive-1")))
    with pytest.raises(TypeError):
        list(nar.parse(12345))


# ---- hand-made NARs (spec §1.1: length-prefixed, zero-padded strings)


def s(b):
    """One NAR string frame."""
    b = b.encode() if isinstance(b, str) else b
    return len(b).to_bytes(8, "little") + b + bytes(-len(b) % 8)


def regular(contents=b"", executable=False):
    return (s("(") + s("type") + s("regular") + (s("executable") + s("") if executable else b"")
            + s("contents") + s(contents) + s(")"))


def symlink(target):
    return s("(") + s("type") + s("symlink") + s("target") + s(target) + s(")")


def directory(*entries):
    body = b"".join(s("entry") + s("(") + s("name") + s(n) + s("node") + node + s(")")
                    for n, node in entries)
    return s("(") + s("type") + s("directory") + body + s(")")


def archive(node):
    return s("nix-archive-1") + node


def test_the_hand_made_nar_builder_matches_nix():
    """The builder below reproduces Nix's spec-dir and file-hello NARs, so
    the hostile NARs built with it differ from good ones only where meant."""
    spec_dir = archive(directory(("a", regular(b"hi\n")), ("b", regular(b"#!/bin/sh\n", True)),
                                 ("c", symlink("a")), ("d", directory(("e", regular())))))
    assert spec_dir == golden_nar("spec-dir")
    assert archive(regular(b"hello")) == golden_nar("file-hello")


def nested(levels, leaf):
    node = leaf
    for _ in range(levels):
        node = directory(("d", node))
    return node


def hostile(outside):
    """NARs that must be refused; `outside` is a directory a symlink in
    them points at."""
    return {
        "dotdot": archive(directory(("..", regular(b"x")))),
        "dot": archive(directory((".", regular(b"x")))),
        "slash": archive(directory(("a/b", regular(b"x")))),
        "dotdot-slash": archive(directory(("../../escaped", regular(b"x")))),
        "absolute": archive(directory(("/tmp/escaped", regular(b"x")))),
        "empty-name": archive(directory(("", regular(b"x")))),
        "nul-name": archive(directory(("a\0b", regular(b"x")))),
        "unsorted": archive(directory(("b", regular()), ("a", regular()))),
        "duplicate": archive(directory(("a", regular()), ("a", regular()))),
        "symlink-then-same-name": archive(directory(("a", symlink(outside)),
                                                    ("a", directory(("pwned", regular(b"x")))))),
        "symlink-then-bad-entry": archive(directory(("a", symlink(outside)),
                                                    ("b", directory(("..", regular(b"x")))))),
        "deep-dotdot": archive(directory(("ok", directory(("..", directory(("x", regular()))))))),
        "empty-target": archive(symlink("")),
        "nul-target": archive(symlink("a\0b")),
        "long-name": archive(directory(("x" * 256, regular()))),
        "long-target": archive(symlink("t" * 4096)),
        "bad-executable": archive(s("(") + s("type") + s("regular") + s("executable") + s("x")
                                  + s("contents") + s(b"") + s(")")),
        "upper-case-token": archive(s("(") + s("TYPE") + s("regular") + s("contents") + s(b"")
                                    + s(")")),
        "fifo": archive(s("(") + s("type") + s("fifo") + s(")")),
        "bad-magic": s("nix-archive-2") + regular(),
        "huge-length": s("nix-archive-1") + (2**62).to_bytes(8, "little") + b"(" * 64,
        "too-deep": archive(nested(DEPTH_LIMIT, regular(b"bottom"))),
    }


HOSTILE = sorted(hostile("/nonexistent"))


def test_the_depth_limit_is_exactly_64():
    """A file at depth 63 parses; at depth 64 it is refused (nar.h)."""
    assert list(nar.parse(archive(nested(DEPTH_LIMIT - 1, regular(b"bottom")))))[-1].type == EV.END
    _, error = events_until_error(archive(nested(DEPTH_LIMIT, regular(b"bottom"))))
    assert isinstance(error, narcache.LimitError)


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_nars_are_refused_by_parse(case):
    """Names that could escape or collide, bad targets, over-long names,
    unknown tokens and absurd lengths raise NarError or LimitError with an
    offset inside the data."""
    data = hostile("/tmp/x/y")[case]
    events, error = events_until_error(data)
    assert isinstance(error, (narcache.NarError, narcache.LimitError)), case
    assert 0 <= error.offset <= len(data)
    assert not any(ev.type == EV.END for ev in events)


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_nars_are_refused_by_restore_without_a_trace(case, tmp_path):
    """restore() of a hostile NAR raises, creates nothing at the destination
    or next to it, and writes nothing outside (a symlink in the archive
    is never followed)."""
    parent, outside = tmp_path / "parent", tmp_path / "outside"
    parent.mkdir()
    outside.mkdir()
    data = hostile(os.fsencode(outside))[case]
    with pytest.raises((narcache.NarError, narcache.LimitError)):
        nar.restore(data, parent / "dest")
    assert os.listdir(parent) == [] and os.listdir(outside) == []
    assert sorted(os.listdir(tmp_path)) == ["outside", "parent"]


@pytest.mark.parametrize("case", GOLDEN_NARS)
def test_restore_gives_a_tree_nix_dumps_back_to_the_same_nar(case, tmp_path):
    """Every golden NAR restores to a tree whose `nix-store --dump` is the
    NAR byte for byte; too deep ones raise LimitError and leave nothing."""
    data = golden_nar(case)
    dest = tmp_path / "out"
    if too_deep(case):
        with pytest.raises(narcache.LimitError):
            nar.restore(data, dest)
        assert os.listdir(tmp_path) == []
        return
    nar.restore(data, dest)
    assert nix_dump(dest) == data
    assert os.listdir(tmp_path) == ["out"]


def test_restore_from_file_objects_and_modes(tmp_path):
    """A file object read in small pieces restores the same tree; modes are
    those nix-store --restore leaves: dirs 0755, files 0644, executables
    0755."""
    data = golden_nar("mixed")
    nar.restore(Trickle(data, 333), tmp_path / "a")
    with open(NAR_DATA / "golden" / "mixed.nar", "rb") as f:
        nar.restore(f, str(tmp_path / "b"))
    assert nix_dump(tmp_path / "a") == nix_dump(tmp_path / "b") == data
    listing_root = decode_listing(golden_ls("mixed"))["root"]

    def check(node, path):
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if node["type"] == "directory":
            assert mode == 0o755
            for name, child in node["entries"].items():
                check(child, os.path.join(path, name))
        elif node["type"] == "regular":
            assert mode == (0o755 if node.get("executable") else 0o644)
            assert os.path.getsize(path) == node["size"]
        else:
            assert os.readlink(path) == node["target"]
    check(listing_root, str(tmp_path / "a"))


@pytest.mark.parametrize("case", ["spec-dir", "mixed", "names", "symlinks", "padding"])
def test_a_bad_nar_restores_nothing_not_even_a_hidden_temporary(case, tmp_path):
    """Truncated or corrupted NARs (cut or damaged late, after much was
    created) raise and leave the parent directory exactly as it was."""
    data = golden_nar(case)
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "neighbour").write_text("keep me")
    rng = random.Random(case)
    cuts = [len(data) - 1, len(data) - 8, len(data) // 2] + rng.sample(range(1, len(data)), 5)
    tokens = token_frames(data)
    damages = []
    for start in (tokens[-2], next(t for t in tokens if t > len(data) * 3 // 4)):
        damaged = bytearray(data)
        damaged[start + 8] = 0xee  # a token's first character
        damages.append(bytes(damaged))
    for bad in [data[:cut] for cut in cuts] + damages + [data + b"\0" * 8]:
        for source in (bad, Trickle(bad, 4096)):
            with pytest.raises(narcache.NarcacheError):
                nar.restore(source, parent / "dest")
            assert os.listdir(parent) == ["neighbour"]
    assert (parent / "neighbour").read_text() == "keep me"


def test_a_failing_source_restores_nothing(tmp_path):
    """If reading the NAR fails half way, the error propagates and nothing
    is left behind."""
    data = golden_nar("mixed")

    class Failing(Trickle):
        def read(self, n=-1):
            if self.pos > len(self.data) // 2:
                raise OSError("the disk went away")
            return super().read(n)

    with pytest.raises(OSError, match="went away"):
        nar.restore(Failing(data, 1000), tmp_path / "dest")
    assert os.listdir(tmp_path) == []


def test_restore_never_replaces_or_follows_an_existing_destination(tmp_path):
    """An existing file, directory or (dangling) symlink at the destination
    raises NarcacheIOError and is left untouched; the symlink's target is
    not created. A missing parent raises NarcacheIOError too."""
    data = golden_nar("spec-dir")
    (tmp_path / "file").write_text("mine")
    (tmp_path / "dir").mkdir()
    os.symlink(tmp_path / "target-of-link", tmp_path / "link")
    for name in ("file", "dir", "link"):
        with pytest.raises(narcache.NarcacheIOError):
            nar.restore(data, tmp_path / name)
    assert (tmp_path / "file").read_text() == "mine"
    assert os.listdir(tmp_path / "dir") == []
    assert not os.path.lexists(tmp_path / "target-of-link")
    assert sorted(os.listdir(tmp_path)) == ["dir", "file", "link"]
    with pytest.raises(narcache.NarcacheIOError):
        nar.restore(data, tmp_path / "missing" / "dest")
    assert not (tmp_path / "missing").exists()


# ---- listings


@pytest.mark.parametrize("case", GOLDEN_NARS)
def test_listing_of_a_golden_nar_equals_nix_byte_for_byte(case):
    """listing_json of a golden NAR, given as bytes or as a file object, is
    Nix's .ls byte for byte (raw non-UTF-8 bytes included), and listing()
    is the same as a dict. Too deep trees raise LimitError."""
    data = golden_nar(case)
    if too_deep(case):
        for source in (data, io.BytesIO(data)):
            with pytest.raises(narcache.LimitError) as info:
                nar.listing_json(source)
            assert 0 < info.value.offset < len(data)
        return
    expected = golden_ls(case)
    assert as_bytes(nar.listing_json(data)) == expected
    assert as_bytes(nar.listing_json(io.BytesIO(data))) == expected
    assert as_bytes(nar.listing_json(Trickle(data, 100))) == expected
    assert nar.listing(data) == decode_listing(expected)


def test_listing_of_a_bad_nar_raises_with_an_offset():
    """A truncated or trailing-garbage NAR gives no listing but NarError
    with the offset of the problem."""
    data = golden_nar("mixed")
    with pytest.raises(narcache.NarError) as info:
        nar.listing_json(data[:30000])
    assert 0 <= info.value.offset <= 30000
    with pytest.raises(narcache.NarError) as info:
        nar.listing_json(data + b"\0" * 8)
    assert info.value.offset == len(data)


def test_listing_of_a_path_equals_the_listing_of_its_dump(tree):
    """listing_json(path), computed from metadata only, equals the listing
    of the NAR that nar.dump makes of the same path -- for a tree, a single
    file and a symlink."""
    for path in (tree, tree / "a", tree / "sub" / "link", tree / "empty"):
        from_path = nar.listing_json(path)
        assert as_bytes(from_path) == as_bytes(nar.listing_json(nar.dump(path)))
        assert as_bytes(nar.listing_json(str(path))) == as_bytes(from_path)
        assert nar.listing(path) == decode_listing(from_path)
    assert nar.listing(tree)["root"]["entries"]["sub"]["entries"]["run.sh"]["executable"]
    with pytest.raises(narcache.NarcacheIOError):
        nar.listing_json(tree / "missing")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The trees the golden data was made from (corpus.py build)."""
    out = tmp_path_factory.mktemp("corpus")
    subprocess.run([sys.executable, str(NAR_DATA / "corpus.py"), "build", str(out)], check=True)
    return out


@pytest.mark.parametrize("case", sorted(manifest()))
def test_listing_and_hash_of_corpus_trees_equal_nix(case, corpus):
    """For every corpus tree (also those too large for a golden NAR and the
    deeply nested ones), listing_json(path) is Nix's .ls byte for byte and
    nar.hash(path) is Nix's NarHash and NarSize."""
    root = corpus / case / "root"
    assert as_bytes(nar.listing_json(root)) == golden_ls(case)
    size, _, nix32 = manifest()[case]
    assert nar.hash(root) == ("sha256:" + nix32, size)
