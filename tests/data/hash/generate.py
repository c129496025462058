#!/usr/bin/env python3
"""Generate the hash golden data in this directory from real Nix 2.8.

Every expected value is printed by a Nix command (nix-hash, nix hash, nix-store
--add, nix-store --add-fixed, builtins.toFile); Python only produces the input
bytes and writes the tables. Re-run after changing the case list:

    tests/data/hash/generate.py [OUTDIR]   (needs nix-bin; adds to /nix/store)

ctest runs it into a temporary OUTDIR and compares with the committed files,
so the tables are re-proven against the installed Nix on every test run.

Outputs (tab-separated, one header line each):
  contents.tsv   id content_hex            (the inputs)
  encodings.tsv  id algo base16 nix32 base64 sri
  paths.tsv      id kind name inner_base16 store_path
                 kind: source (nix-store --add), fixed (nix-store --add-fixed
                 sha256, flat), text (builtins.toFile); inner_base16 is the
                 hash Nix puts in the preimage: the NAR hash for source, the
                 flat file hash for fixed and text.
  malformed.tsv  input nix_rejects expected_error
                 nix_rejects=1 means `nix hash to-base16` refused the string;
                 0 marks the few inputs where we are deliberately stricter.
"""
import os
import random
from concurrent.futures import ThreadPoolExecutor
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else HERE
NIX = ["nix", "--extra-experimental-features", "nix-command"]
ALGOS = ["md5", "sha1", "sha256", "sha512"]


def run(cmd, stdin=None):
    out = subprocess.run(cmd, check=True, capture_output=True, input=stdin)
    return out.stdout.decode().strip()


def nix_rejects(text):
    proc = subprocess.run(NIX + ["hash", "to-base16", text], capture_output=True)
    return proc.returncode != 0


def contents(rng):
    """Inputs of varied sizes: empty, tiny, around block boundaries, large."""
    sizes = [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 55, 56, 63, 64, 65, 100,
             127, 128, 129, 255, 256, 511, 512, 1000, 1023, 1024, 1025, 4096,
             8191, 65536, 65537]
    sizes += [rng.randrange(0, 3000) for _ in range(27)]
    out = [bytes([0x41 + i % 26]) * s if i % 3 == 0 else
           bytes(rng.randrange(256) for _ in range(s))
           for i, s in enumerate(sizes)]
    out[1] = b"hello"  # the spec's worked example
    return out


def encodings(tmp, data):
    path = os.path.join(tmp, "blob")
    with open(path, "wb") as f:
        f.write(data)
    rows = []
    for algo in ALGOS:
        b16 = run(["nix-hash", "--type", algo, "--flat", path])
        b32 = run(["nix-hash", "--type", algo, "--flat", "--base32", path])
        b64 = run(NIX + ["hash", "file", "--type", algo, "--base64", path])
        sri = run(NIX + ["hash", "file", "--type", algo, "--sri", path])
        # Nix's own converter must agree with its hasher.
        assert run(["nix-hash", "--type", algo, "--to-base32", b16]) == b32
        assert run(NIX + ["hash", "to-sri", f"{algo}:{b32}"]) == sri
        rows.append((algo, b16, b32, b64, sri))
    return rows


def store_paths(tmp, i, data):
    rows = []
    name = ["f", "x.y", "a+b", "q?=", "n-1", "_u", "Z9"][i % 7] + f"-{i}"
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    nar = run(["nix-hash", "--type", "sha256", path])
    rows.append(("source", name, nar, run(["nix-store", "--add", path])))
    flat = run(["nix-hash", "--type", "sha256", "--flat", path])
    rows.append(("fixed", name, flat,
                 run(["nix-store", "--add-fixed", "sha256", path])))
    if b"\0" not in data and len(data) < 4096:
        nix_string = "".join(f"\\{c}" if c in '"\\$' else c
                             for c in data.decode("latin-1"))
        if all(32 <= ord(c) < 127 for c in nix_string):
            expr = f'builtins.toFile "{name}" "{nix_string}"'
            text_path = run(["nix-instantiate", "--eval", "--read-write-mode",
                             "-E", expr]).strip('"')
            rows.append(("text", name, flat, text_path))
    return rows


# (input, error name we return). Built around the real hash of "hello".
HELLO_B32 = "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic"
HELLO_B16 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
HELLO_B64 = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="
MALFORMED = [
    ("", "EBADHASH"),
    (HELLO_B32, "EBADHASH"),                      # no type prefix
    (HELLO_B16, "EBADHASH"),
    ("sha256:", "EBADLENGTH"),
    ("sha256:" + HELLO_B32[:-1], "EBADLENGTH"),
    ("sha256:" + HELLO_B32 + "0", "EBADLENGTH"),
    ("sha256:" + HELLO_B16[:-1], "EBADLENGTH"),
    ("sha256:" + HELLO_B64[:-1], "EBADLENGTH"),    # base64 needs its '='
    ("sha256:" + HELLO_B64 * 2, "EBADLENGTH"),    # 88 chars: a sha512 length
    ("sha256-" + HELLO_B64[:-4], "EBADLENGTH"),   # too few bytes
    ("md5-" + HELLO_B64, "EBADLENGTH"),
    ("sha256:e" + HELLO_B32[1:], "EBADCHAR"),     # e o u t are not nix32
    ("sha256:" + HELLO_B32[:10] + "o" + HELLO_B32[11:], "EBADCHAR"),
    ("sha256:" + HELLO_B32[:20] + "u" + HELLO_B32[21:], "EBADCHAR"),
    ("sha256:" + HELLO_B32[:-1] + "t", "EBADCHAR"),
    ("sha256:" + HELLO_B32.upper(), "EBADCHAR"),
    ("sha256:" + HELLO_B32[:51] + "!", "EBADCHAR"),
    ("sha256:2" + HELLO_B32[1:], "ENONCANONICAL"),  # bit 256 set
    ("sha256:z" + HELLO_B32[1:], "ENONCANONICAL"),
    ("sha256:" + HELLO_B16[:30] + "g" + HELLO_B16[31:], "EBADCHAR"),
    ("sha256:" + HELLO_B16[:63] + " ", "EBADCHAR"),
    ("sha256:" + HELLO_B64[:5] + "*" + HELLO_B64[6:], "EBADCHAR"),
    ("sha256-" + HELLO_B64[:5] + "." + HELLO_B64[6:], "EBADCHAR"),
    ("sha256-" + HELLO_B64[:-1] + "A", "EBADLENGTH"),  # 44 digits = 33 bytes
    ("sha257:" + HELLO_B32, "EHASHALGO"),
    ("SHA256:" + HELLO_B32, "EHASHALGO"),
    ("sha-256:" + HELLO_B32, "EHASHALGO"),
    (":" + HELLO_B32, "EHASHALGO"),
    ("blake3-" + HELLO_B64, "EHASHALGO"),
    ("sha256 :" + HELLO_B32, "EHASHALGO"),
    (" sha256:" + HELLO_B32, "EHASHALGO"),
    ("sha256:" + HELLO_B32 + "\n", "EBADLENGTH"),
    ("md5:" + HELLO_B32, "EBADLENGTH"),
    ("sha1:" + HELLO_B16, "EBADLENGTH"),
    # Nix 2.8 ignores bits past the last byte; we require them to be zero so
    # that each digest has exactly one base64 spelling.
    ("sha256:" + HELLO_B64[:-2] + "R=", "ENONCANONICAL"),
    ("sha256-" + HELLO_B64[:-2] + "R=", "ENONCANONICAL"),
]


def main():
    rng = random.Random(20261126)
    content_rows, enc_rows, path_rows = [], [], []
    def one_case(case):
        i, data = case
        with tempfile.TemporaryDirectory() as tmp:
            return (i, data, encodings(tmp, data), store_paths(tmp, i, data))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one_case, enumerate(contents(rng))))
    for i, data, enc, paths in results:
        content_rows.append((str(i), data.hex()))
        enc_rows += [(str(i),) + row for row in enc]
        path_rows += [(str(i),) + row for row in paths]
    mal_rows = [(text, "1" if nix_rejects(text) else "0", err)
                for text, err in MALFORMED]
    for text, rejected, _ in mal_rows:
        if rejected == "0":
            print(f"note: Nix accepts {text!r}; we reject it", file=sys.stderr)

    def write(name, header, rows):
        with open(os.path.join(OUT, name), "w") as f:
            f.write("\t".join(header) + "\n")
            for row in rows:
                assert not any("\t" in c or "\n" in c for c in row[1:]), row
                f.write("\t".join(c.replace("\n", "\\n") for c in row) + "\n")

    write("contents.tsv", ["id", "content_hex"], content_rows)
    write("encodings.tsv", ["id", "algo", "base16", "nix32", "base64", "sri"],
          enc_rows)
    write("paths.tsv", ["id", "kind", "name", "inner_base16", "store_path"],
          path_rows)
    write("malformed.tsv", ["input", "nix_rejects", "expected_error"], mal_rows)
    print(f"{len(enc_rows)} encodings, {len(path_rows)} store paths, "
          f"{len(mal_rows)} malformed inputs", file=sys.stderr)


if __name__ == "__main__":
    main()
