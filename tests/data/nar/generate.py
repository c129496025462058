#!/usr/bin/env python3
"""Generate the NAR golden data in this directory from real Nix 2.8.

    tests/data/nar/generate.py [OUTDIR]     (default OUTDIR = this directory)

Needs nix-store, nix-hash and nix (2.8) and a writable /nix/store (it adds the
corpus with `nix-store --add` and deletes again the paths it added).

What it does:
  1. builds the corpus twice (corpus.py build) into two temporary directories
     and checks that Nix computes identical NARs for both (determinism);
  2. for every case: `nix-store --dump OUTDIR/<case>/root` gives the NAR; its
     size and sha256 go into manifest.tsv, together with
     `nix-hash --type sha256 --base32` of the tree (asserted equal to the
     sha256 of the dump, converted by `nix-hash --to-base32`);
     NARs <= 64 KiB are written to golden/<case>.nar;
  3. `nix-store --add` the root, then
     `nix copy --to 'file://CACHE?write-nar-listing=true&compression=none'`
     and copies CACHE/<hashpart>.ls byte-for-byte to golden/<case>.ls.
     The narinfo's NarHash/NarSize and the uncompressed nar/*.nar in that
     cache are checked against the dump, and every narOffset/size/target/name
     in the listing is checked against the dump and the tree on disk.

Every expected value (NAR bytes, sizes, hashes, listings) comes from Nix;
Python only creates the input trees (corpus.py) and cross-checks. A case Nix
cannot add or list is recorded as a `# ...` comment line in manifest.tsv and
reported on stderr, never silently skipped.

Outputs (in OUTDIR):
  manifest.tsv      '#' comment lines, then a header line
                    case  nar_size  nar_sha256_base16  nar_hash_nix32
  golden/<case>.nar the NAR (only when nar_size <= 65536)
  golden/<case>.ls  the .ls listing as written by `nix copy` (every case)
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus.py")
NIX = ["nix", "--extra-experimental-features", "nix-command"]
GOLDEN_NAR_MAX = 64 * 1024


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, **kw).stdout


def text(cmd):
    return run(cmd).decode().strip()


def build_corpus(outdir):
    t0 = time.monotonic()
    subprocess.run([sys.executable, CORPUS, "build", outdir], check=True)
    return time.monotonic() - t0


def nar_of(path):
    dump = run(["nix-store", "--dump", path])
    nix32 = text(["nix-hash", "--type", "sha256", "--base32", path])
    return dump, nix32


def check_listing(listing, dump, fspath, where):
    """Cross-check one .ls node against the NAR bytes and the tree on disk."""
    t = listing["type"]
    if t == "regular":
        st = os.lstat(fspath)
        assert os.path.isfile(fspath) and not os.path.islink(fspath), where
        size = listing["size"]
        assert size == st.st_size, where
        assert listing.get("executable", False) == bool(st.st_mode & 0o100), where
        off = listing.get("narOffset")
        assert off is not None, "%s: no narOffset" % where
        assert dump[off - 8:off] == struct.pack("<Q", size), where
        with open(fspath, "rb") as f:
            assert dump[off:off + size] == f.read(), where
    elif t == "symlink":
        assert os.path.islink(fspath), where
        assert listing["target"].encode("utf-8", "surrogateescape") == \
            os.readlink(fspath), where
    elif t == "directory":
        names = sorted(os.listdir(fspath))
        keys = [k.encode("utf-8", "surrogateescape") for k in listing["entries"]]
        assert keys == names, "%s: entries %r != %r" % (where, keys, names)
        for k, child in listing["entries"].items():
            kb = k.encode("utf-8", "surrogateescape")
            check_listing(child, dump, os.path.join(fspath, kb), where + b"/" + kb)
    else:
        raise AssertionError("%s: unknown type %r" % (where, t))


def listing_of(root, dump, nix32, cache, added):
    """nix-store --add + nix copy to a file:// cache; return the .ls bytes."""
    expected = text(["nix-store", "--print-fixed-path", "--recursive",
                     "sha256", nix32, "root"])
    valid_before = subprocess.run(["nix-store", "--check-validity", expected],
                                  capture_output=True).returncode == 0
    storepath = text(["nix-store", "--add", root])
    assert storepath == expected, (storepath, expected)
    if not valid_before:
        added.append(storepath)
    # the store copy must have the same NAR as the source tree
    assert run(["nix-store", "--dump", storepath]) == dump, storepath
    run(NIX + ["copy", "--to",
               "file://%s?write-nar-listing=true&compression=none" % cache,
               storepath])
    hashpart = os.path.basename(storepath)[:32]
    narinfo = {}
    with open(os.path.join(cache, hashpart + ".narinfo")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition(": ")
            narinfo[k] = v
    assert narinfo["NarHash"] == "sha256:" + nix32, narinfo
    assert int(narinfo["NarSize"]) == len(dump), narinfo
    assert narinfo["Compression"] == "none", narinfo
    with open(os.path.join(cache, narinfo["URL"]), "rb") as f:
        assert f.read() == dump, "cache NAR differs from nix-store --dump"
    with open(os.path.join(cache, hashpart + ".ls"), "rb") as f:
        ls = f.read()
    # Raw bytes >= 0x80 (also invalid UTF-8) survive via surrogateescape.
    parsed = json.loads(ls.decode("utf-8", "surrogateescape"))
    assert parsed["version"] == 1, parsed
    check_listing(parsed["root"], dump, os.fsencode(root), b"root")
    return ls


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    outdir = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else HERE
    golden = os.path.join(outdir, "golden")
    os.makedirs(golden, exist_ok=True)
    cases = text([sys.executable, CORPUS, "list"]).split("\n")
    nix_version = text(["nix", "--version"])

    tmp = tempfile.mkdtemp(prefix="narcache-nar-gen.")
    added = []
    try:
        dir_a, dir_b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        secs = build_corpus(dir_a)
        build_corpus(dir_b)
        sys.stderr.write("corpus.py build took %.2f s\n" % secs)

        rows, notes, written = [], [], set()
        for case in cases:
            root_a = os.path.join(dir_a, case, "root")
            dump, nix32 = nar_of(root_a)
            dump_b, nix32_b = nar_of(os.path.join(dir_b, case, "root"))
            assert dump == dump_b and nix32 == nix32_b, \
                "%s: corpus.py is not deterministic" % case
            sha = hashlib.sha256(dump).hexdigest()
            conv = text(["nix-hash", "--type", "sha256", "--to-base32", sha])
            assert conv == nix32, (case, conv, nix32)
            rows.append("%s\t%d\t%s\t%s" % (case, len(dump), sha, nix32))
            if len(dump) <= GOLDEN_NAR_MAX:
                write_atomic(os.path.join(golden, case + ".nar"), dump)
                written.add(case + ".nar")
            cache = os.path.join(tmp, "cache-" + case)
            try:
                ls = listing_of(root_a, dump, nix32, cache, added)
            except (subprocess.CalledProcessError, AssertionError, OSError,
                    KeyError, ValueError) as e:
                err = e.stderr.decode(errors="replace").strip() \
                    if isinstance(e, subprocess.CalledProcessError) else repr(e)
                msg = "%s: no .ls: %s" % (case, " ".join(err.split()))
                sys.stderr.write("WARNING: " + msg + "\n")
                notes.append("# " + msg)
                continue
            write_atomic(os.path.join(golden, case + ".ls"), ls)
            written.add(case + ".ls")
            sys.stderr.write("%-16s %9d %s\n" % (case, len(dump), nix32))

        # drop golden files of cases that no longer exist / no longer qualify
        for fn in os.listdir(golden):
            if fn not in written and (fn.endswith(".nar") or fn.endswith(".ls")):
                os.unlink(os.path.join(golden, fn))

        header = [
            "# NAR golden manifest, generated by generate.py with %s." % nix_version,
            "# nar_size/nar_sha256_base16: `nix-store --dump <corpus>/<case>/root`;",
            "# nar_hash_nix32: `nix-hash --type sha256 --base32` (asserted equal).",
            "# golden/<case>.nar exists iff nar_size <= %d; golden/<case>.ls"
            " is from `nix copy` (write-nar-listing=true)." % GOLDEN_NAR_MAX,
        ] + notes
        body = ["case\tnar_size\tnar_sha256_base16\tnar_hash_nix32"] + rows
        write_atomic(os.path.join(outdir, "manifest.tsv"),
                     ("\n".join(header + body) + "\n").encode())
        if notes:
            sys.stderr.write("%d case(s) without listing, see manifest.tsv\n"
                             % len(notes))
    finally:
        # nix-store --add made the copies; remove only the paths we created
        for p in added:
            subprocess.run(["nix-store", "--delete", p], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
