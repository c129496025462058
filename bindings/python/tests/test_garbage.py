"""Every parser reachable from Python, fed random and mutated input: each
call either succeeds or raises a NarcacheError subclass (never another
exception type, never a crash), and the objects stay usable."""
import random
import zlib
from pathlib import Path

import pytest

import narcache

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"
NARINFO = (DATA / "narinfo" / "golden" / "none" / "dyfyrpszi87hixnk6as80dh2j3vy31yh.narinfo"
           ).read_bytes()
PUBLIC = (DATA / "narinfo" / "keys" / "test-cache-1.pub").read_bytes()
SECRET = (DATA / "narinfo" / "keys" / "test-cache-1.sec").read_bytes()
NAR = (DATA / "nar" / "golden" / "mixed.nar").read_bytes()
TOKENS = b"ci write 0123456789abcdef0123\nlaptop read abcdefabcdef0123456789\n"


def mutations(seed_input, count, rng):
    """Random bytes, truncations, bit flips, splices and repeats of a good input."""
    for _ in range(count):
        choice = rng.randrange(5)
        data = bytearray(seed_input)
        if choice == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        elif choice == 1:
            yield bytes(data[:rng.randrange(0, len(data) + 1)])
        elif choice == 2:
            for _ in range(rng.randrange(1, 8)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
            yield bytes(data)
        elif choice == 3:
            i, j = sorted(rng.randrange(len(data) + 1) for _ in range(2))
            yield bytes(data[:i] + data[j:] + data[i:j])
        else:
            i = rng.randrange(len(data))
            yield bytes(data[:i] + data[i:i + 16] * rng.randrange(1, 50) + data[i:])


def consume_nar(data):
    return list(narcache.nar.parse(data))


def decompress(data):
    return narcache.decompress(data, max_output=1 << 20)


PARSERS = [
    ("narinfo", narcache.NarInfo.parse, NARINFO),
    ("public key", narcache.PublicKey.parse, PUBLIC),
    ("secret key", narcache.SecretKey.parse, SECRET),
    ("nar", consume_nar, NAR),
    ("nar listing", narcache.nar.listing_json, NAR),
    ("zstd", decompress, narcache.compress(NAR)),
    ("tokens", narcache.Tokens, TOKENS),
    ("hash", narcache.hashes.parse, b"sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"),
]


@pytest.mark.parametrize("name,parse,good", PARSERS, ids=[p[0] for p in PARSERS])
def test_garbage_raises_library_errors_only(name, parse, good):
    parse(good)  # the seed itself is accepted
    rng = random.Random(zlib.crc32(name.encode()))  # the same inputs on every run
    refused = 0
    for data in mutations(good, 1500, rng):
        try:
            parse(data)
        except narcache.NarcacheError as e:
            refused += 1
            assert e.code < 0 and e.name.startswith("E") and e.message
            if e.offset is not None:
                assert 0 <= e.offset <= len(data)
    assert refused > 500, "%s accepted too much garbage (%d refused)" % (name, refused)
    parse(good)  # and the library still works
