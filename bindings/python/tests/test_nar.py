"""The Python binding's NAR functions against the real Nix (nix-store
--dump, nix-hash), and the mapping of library errors to exceptions."""
import io
import os
import subprocess
import sys

import pytest

import narcache
from narcache import errors


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
