#!/usr/bin/env python3
"""Copy AWS's Signature Version 4 test suite into tests/data/sigv4/aws/.

The suite is AWS's published set of requests with their canonical
requests, strings to sign and signatures; awslabs/aws-c-auth keeps it in
tests/aws-signing-test-suite/v4 (Apache-2.0). Usage:

    import.py [CHECKOUT]   # a git clone of aws-c-auth; cloned at PIN if absent
"""
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = "https://github.com/awslabs/aws-c-auth"
PIN = "495329c2433034bd8fd53fc6ba9e0202d3fac876"
FILES = ["context.json", "request.txt",
         "header-canonical-request.txt", "header-string-to-sign.txt", "header-signature.txt",
         "query-canonical-request.txt", "query-string-to-sign.txt", "query-signature.txt"]


def main():
    here = pathlib.Path(__file__).resolve().parent
    out = here / "aws"
    with tempfile.TemporaryDirectory() as tmp:
        if len(sys.argv) > 1:
            checkout = pathlib.Path(sys.argv[1])
        else:
            checkout = pathlib.Path(tmp) / "aws-c-auth"
            subprocess.run(["git", "clone", "-q", REPO, str(checkout)], check=True)
        rev = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                             check=True, capture_output=True, text=True).stdout.strip()
        if rev != PIN:
            subprocess.run(["git", "-C", str(checkout), "checkout", "-q", PIN], check=True)
        suite = checkout / "tests" / "aws-signing-test-suite" / "v4"
        if out.exists():
            shutil.rmtree(out)
        names = []
        for case in sorted(p for p in suite.iterdir() if p.is_dir()):
            json.loads((case / "context.json").read_text())  # must be valid
            dest = out / case.name
            dest.mkdir(parents=True)
            for f in FILES:
                if (case / f).exists():
                    shutil.copyfile(case / f, dest / f)
            names.append(case.name)
        (out / "CASES").write_text("".join(n + "\n" for n in names))
        print(f"{len(names)} cases from {REPO} at {PIN}")


if __name__ == "__main__":
    main()
