#!/usr/bin/env python3
"""Deterministic NAR test corpus (file-system trees) for libnarcache.

    corpus.py build OUTDIR [CASE...]   create OUTDIR/<case>/root for every case
                                       (or only the named ones)
    corpus.py list                     print the case names, one per line

Each case's root node is OUTDIR/<case>/root; it may be a regular file, a
symlink or a directory. An existing OUTDIR/<case> is removed and re-created.

Everything is derived from fixed seeds (SplitMix64 for choices, SHAKE-256 for
file contents), so the trees are byte-identical on every run, machine and
Python >= 3.6. Permission bits are set explicitly with chmod (umask does not
matter): directories 0755, plain files 0644 (a few deliberate variants such
as 0600/0444/0675, all without S_IXUSR), executables 0755 (variants 0700/0744,
all with S_IXUSR). Every file stays readable by its owner and every directory
stays writable by its owner, so an unprivileged user can build, read and
delete the trees. Names and contents are handled as bytes throughout.

Needs no Nix. The expected NAR bytes / hashes / .ls listings for these trees
were produced by real Nix (see generate.py and manifest.tsv); changing
anything here requires re-running generate.py.
"""
import hashlib
import os
import shutil
import sys

MASK64 = (1 << 64) - 1


class Rng:
    """SplitMix64: tiny, fully specified, independent of Python's `random`."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        """Uniform-enough integer in [0, n) (n small; modulo bias irrelevant)."""
        return self.next64() % n


def blob(label, size):
    """`size` pseudo-random bytes determined by `label` (SHAKE-256)."""
    if size == 0:
        return b""
    if isinstance(label, str):
        label = label.encode()
    return hashlib.shake_256(b"narcache-corpus\0" + label).digest(size)


# ---------------------------------------------------------------- helpers

def mkdir(path, mode=0o755):
    os.mkdir(path)
    os.chmod(path, mode)


def wfile(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)
    os.chmod(path, mode)


def wexec(path, data, mode=0o755):
    wfile(path, data, mode)


def link(path, target):
    os.symlink(target, path)


def j(*parts):
    return os.path.join(*[os.fsencode(p) for p in parts])


# ---------------------------------------------------------------- cases
# Each builder gets `root` (bytes path that does not exist yet) and creates it.

def c_file_empty(root):
    wfile(root, b"")


def c_file_hello(root):
    wfile(root, b"hello")


def c_file_exec(root):
    wexec(root, b"#!/bin/sh\necho hi\n")


def c_file_8(root):
    wfile(root, b"8bytes!\n")


def c_file_exec_empty(root):
    wexec(root, b"")


def c_symlink_root(root):
    link(root, b"target")


def c_dir_empty(root):
    mkdir(root)


def c_spec_dir(root):
    # spec §1.2 directory test vector: 1064 bytes, a@232 b@456 e@984
    mkdir(root)
    wfile(j(root, "a"), b"hi\n")
    wexec(j(root, "b"), b"#!/bin/sh\n")
    link(j(root, "c"), b"a")
    mkdir(j(root, "d"))
    wfile(j(root, "d", "e"), b"")


def c_padding(root):
    # content lengths around the 8-byte padding boundary
    mkdir(root)
    for n in list(range(0, 18)) + [23, 24, 25, 255, 256, 257, 4095, 4096, 4097]:
        wfile(j(root, "len-%04d" % n), blob("padding-%d" % n, n))
    # names of every length 1..17 (name padding)
    for n in range(1, 18):
        wfile(j(root, "n" * n), b"%d\n" % n)


def c_symlinks(root):
    mkdir(root)
    wfile(j(root, "x"), b"x\n")
    link(j(root, "absolute"), b"/nix/store/foo")
    link(j(root, "relative"), b"../x/y")
    link(j(root, "dangling"), b"does-not-exist")
    link(j(root, "spaces"), b"a target with spaces")
    link(j(root, "to-file"), b"x")
    link(j(root, "to-dir"), b"sub")
    link(j(root, "dot"), b".")
    link(j(root, "dotdot"), b"..")
    link(j(root, "self"), b"self")                       # loop
    link(j(root, "chain1"), b"chain2")
    link(j(root, "chain2"), b"x")
    link(j(root, "trailing-slash"), b"sub/")
    link(j(root, "double-slash"), b"//nix//store/")
    link(j(root, "one-byte"), b"y")
    link(j(root, "utf8"), "caf\u00e9/\u65e5\u672c".encode())
    link(j(root, "invalid-utf8"), b"bad\xff\xfe\xc3(")
    link(j(root, "quotes"), b'he said "hi" \\ back\\slash')
    link(j(root, "controls"), b"tab\there\nnewline\rcr\x01\x1f\x7f")
    link(j(root, "len-7"), b"1234567")
    link(j(root, "len-8"), b"12345678")
    link(j(root, "len-9"), b"123456789")
    # Linux allows targets up to PATH_MAX-1 = 4095 bytes (ext4, tmpfs, ...)
    long_target = (b"/nix/store/" + b"l" * 5000)[:4095]
    link(j(root, "long-4095"), long_target)
    mkdir(j(root, "sub"))
    link(j(root, "sub", "up"), b"../x")


def c_names(root):
    mkdir(root)
    names = [
        "with space", " leading-space", "trailing-space ", "two  spaces",
        "\u00e9",                      # é precomposed (c3 a9)
        "e\u0301",                     # e + combining acute (no normalisation)
        "\u65e5\u672c",                # 日本
        "\U0001F600",                  # 4-byte UTF-8 (emoji)
        "-rf", "--x", "-", "...", "..a", ".hidden", "a.", "a-", "a", "ab",
        "A", "B", "Z", "_", "~", "z", "0", "9", "a.b", "a,b", "a=b", "a+b",
        "case", "Case", "CASE", "cASE",
        "quote\"", "back\\slash", "apos'", "dollar$", "star*", "q?",
        "brackets[]", "braces{}", "angle<>", "pipe|", "amp&", "semi;",
        "hash#", "pct%", "at@", "excl!", "caret^", "tick`", "paren()",
        "colon:",
    ]
    for i, name in enumerate(names):
        wfile(j(root, name), ("%d:%s\n" % (i, name)).encode(), 0o644)
    # byte-level names (not valid / unusual UTF-8)
    raw = [
        b"\xc3(",                      # truncated 2-byte sequence
        b"\xed\xa0\x80",               # UTF-8-encoded surrogate U+D800
        b"\xf4\x90\x80\x80",           # beyond U+10FFFF
        b"\xc0\xaf",                   # overlong '/'
        b"\xef\xbf\xbf",               # U+FFFF (valid encoding, noncharacter)
        b"\xe2\x80\xa8",               # U+2028 LINE SEPARATOR
        b"\xef\xbb\xbfbom",            # BOM prefix
        b"\xff\xfe",
    ]
    for i, name in enumerate(raw):
        wfile(j(root, name), b"raw %d\n" % i)
    wfile(j(root, "N" * 255), b"255-byte name\n")
    wfile(j(root, ("\u00e9" * 127) + "x"), b"255-byte UTF-8 name\n")  # 254+1
    # entries of other types with interesting names
    mkdir(j(root, "dir with space"))
    wfile(j(root, "dir with space", "\u00e9"), b"")
    link(j(root, "link \u00e9"), "\u00e9".encode())
    wexec(j(root, "exec \u65e5\u672c"), b"#!/bin/sh\n")


def c_bytes_names(root):
    # one file per byte value 0x01..0xff except '/': name = byte + "x"
    mkdir(root)
    for b in range(1, 256):
        if b == 0x2F:
            continue
        wfile(j(root, bytes([b]) + b"x"), bytes([b]))


def c_bytes_targets(root):
    # one symlink per byte value 0x01..0xff: name = hex, target = byte + "x"
    mkdir(root)
    for b in range(1, 256):
        link(j(root, "%02x" % b), bytes([b]) + b"x")


def nested(depth):
    """`depth` nested directories below root; the bottom file is at node
    depth depth+1 (root directory = depth 0)."""
    def build(root):
        mkdir(root)
        p = root
        for i in range(depth):
            p = j(p, "d%02d" % (i % 100))
            mkdir(p)
        wfile(j(p, "bottom"), b"bottom of %d\n" % depth)
    return build


def c_tree_5000(root):
    rng = Rng(5000)
    mkdir(root)
    dirs = ["src", "src/core", "src/util", "data", "data/a", "data/b",
            "docs/x/y", "z"]
    dirpaths = []
    for d in dirs:
        p = root
        for part in d.split("/"):
            p = j(p, part)
            if not os.path.isdir(p):
                mkdir(p)
        dirpaths.append(p)
    exts = ["c", "h", "txt", "json", "", "sh", "dat"]
    for i in range(5000):
        d = dirpaths[rng.below(len(dirpaths))]
        ext = exts[rng.below(len(exts))]
        name = "f%04d%s" % (i, "." + ext if ext else "")
        size = rng.below(4097)                        # 0 .. 4096
        kind = rng.below(4)
        if kind == 0:
            data = blob("tree-%d" % i, size)          # random bytes
        elif kind == 1:
            data = (b"line %d\n" % i * (size // 7 + 1))[:size]
        else:
            data = bytes([0x61 + i % 26]) * size
        if ext == "sh" or rng.below(10) == 0:
            wexec(j(d, name), data)
        else:
            wfile(j(d, name), data)


def c_large(root):
    mib = 1 << 20
    mkdir(root)
    wfile(j(root, "3MiB"), blob("large-3", 3 * mib))
    wexec(j(root, "5MiB+7"), blob("large-5", 5 * mib + 7))
    wfile(j(root, "1MiB"), (b"0123456789abcdef" * (mib // 16)))
    wfile(j(root, "small-empty"), b"")
    wfile(j(root, "small-1"), b"1")
    wfile(j(root, "small-13"), b"thirteen byte")


def c_mixed(root):
    mkdir(root)
    for d in ["bin", "lib", "lib/pkgconfig", "include", "include/foo",
              "share", "share/doc", "share/doc/foo", "share/man",
              "share/man/man1", "share/empty", "etc", "libexec",
              "libexec/foo", "nix-support", "var", "var/lib", "var/lib/empty"]:
        mkdir(j(root, d))
    wexec(j(root, "bin/foo"), b"#!/bin/sh\nexec /nix/store/abc-foo/libexec/foo/foo-real \"$@\"\n")
    wexec(j(root, "bin/foo-helper"), blob("helper", 3001), 0o700)
    link(j(root, "bin/bar"), b"foo")
    os.link(j(root, "bin/foo"), j(root, "bin/foo-hardlink"))   # dumped as a copy
    wexec(j(root, "libexec/foo/foo-real"), blob("foo-real", 20000), 0o744)
    wexec(j(root, "lib/libfoo.so.1.2.3"), blob("libfoo", 12345))
    link(j(root, "lib/libfoo.so.1"), b"libfoo.so.1.2.3")
    link(j(root, "lib/libfoo.so"), b"libfoo.so.1")
    wfile(j(root, "lib/libfoo.a"), blob("libfoo.a", 4567))
    wfile(j(root, "lib/pkgconfig/foo.pc"),
          b"prefix=/nix/store/abc-foo\nName: foo\nVersion: 1.2.3\nLibs: -lfoo\n")
    wfile(j(root, "include/foo.h"), b"#pragma once\nint foo(void);\n")
    wfile(j(root, "include/foo/config.h"), b"#define FOO 1\n")
    wfile(j(root, "share/doc/foo/README"), b"foo\n===\n\nA package.\n" * 10)
    wfile(j(root, "share/doc/foo/.keep"), b"")
    wfile(j(root, "share/man/man1/foo.1"), b".TH FOO 1\n.SH NAME\nfoo\n", 0o444)
    wfile(j(root, "etc/foo.conf"), b"key = value\n", 0o600)
    # group/other execute but not owner execute => NOT executable in a NAR
    wfile(j(root, "etc/not-exec-gx"), b"#!/bin/sh\n", 0o675)
    wfile(j(root, "etc/empty"), b"")
    wexec(j(root, "etc/empty-exec"), b"")
    wfile(j(root, "nix-support/propagated-build-inputs"),
          b"/nix/store/00000000000000000000000000000000-dep ")
    link(j(root, "share/doc/foo/abs-link"), b"/nix/store/abc-foo/share/doc/foo/README")
    link(j(root, "share/foo"), b"doc/foo")
    os.chmod(j(root, "var/lib/empty"), 0o700)   # dir mode is not in the NAR


CASES = [
    ("file-empty", c_file_empty),
    ("file-hello", c_file_hello),
    ("file-exec", c_file_exec),
    ("file-8", c_file_8),
    ("file-exec-empty", c_file_exec_empty),
    ("symlink-root", c_symlink_root),
    ("dir-empty", c_dir_empty),
    ("spec-dir", c_spec_dir),
    ("padding", c_padding),
    ("symlinks", c_symlinks),
    ("names", c_names),
    ("bytes-names", c_bytes_names),
    ("bytes-targets", c_bytes_targets),
    ("nested-62", nested(62)),
    ("nested-63", nested(63)),
    ("nested-64", nested(64)),
    ("nested-100", nested(100)),
    ("tree-5000", c_tree_5000),
    ("large", c_large),
    ("mixed", c_mixed),
]
CASE_MAP = dict(CASES)


def rmtree(path):
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def build(outdir, names=None):
    outdir = os.fsencode(outdir)
    os.makedirs(outdir, exist_ok=True)
    for name in names or [n for n, _ in CASES]:
        if name not in CASE_MAP:
            raise SystemExit("corpus.py: unknown case %r" % name)
        casedir = j(outdir, name)
        rmtree(casedir)
        os.mkdir(casedir)
        os.chmod(casedir, 0o755)
        CASE_MAP[name](j(casedir, "root"))


def main(argv):
    if len(argv) >= 3 and argv[1] == "build":
        build(argv[2], argv[3:])
    elif len(argv) == 2 and argv[1] == "list":
        for name, _ in CASES:
            print(name)
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
