"""Creating and dropping 100,000 library objects under garbage-collector
pressure (reference cycles, abandoned iterators, objects closed by hand
and by the collector, children outliving parents) must not grow the
process: every C object is freed exactly once."""
import gc
import os
from pathlib import Path

import narcache

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"
NARINFO = (DATA / "narinfo" / "golden" / "none" / "dyfyrpszi87hixnk6as80dh2j3vy31yh.narinfo"
           ).read_text()
PUBLIC = (DATA / "narinfo" / "keys" / "test-cache-1.pub").read_text()
SECRET = (DATA / "narinfo" / "keys" / "test-cache-1.sec").read_text()
NAR = (DATA / "nar" / "golden" / "mixed.nar").read_bytes()


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def churn(i, keep):
    """Make a few objects in the ways a program drops them."""
    kind = i % 10
    if kind == 0:
        info = narcache.NarInfo.parse(NARINFO)
        info.fingerprint()
        cycle = [info]
        cycle.append(cycle)  # only the collector frees this one
    elif kind == 1:
        key = narcache.PublicKey.parse(PUBLIC)
        info = narcache.NarInfo.parse(NARINFO)
        keep.append(info.verify([key]))  # a child kept after its list is gone
    elif kind == 2:
        secret = narcache.SecretKey.parse(SECRET)
        public = secret.public_key
        del secret  # the parent goes first
        assert public.name == "test-cache-1"
    elif kind == 3:
        with narcache.NarInfo.parse(NARINFO) as info:
            str(info)
        info.close()  # twice is harmless
    elif kind == 4:
        events = narcache.nar.parse(NAR)
        next(events)  # abandoned mid-archive: the parser must still go
    elif kind == 5:
        try:
            narcache.NarInfo.parse("StorePath: garbage\n")
        except narcache.NarInfoError as e:
            keep.append(e)  # an exception with a traceback that refers to frames
    elif kind == 6:
        narcache.nar.listing_json(NAR)
    elif kind == 7 and i % 100 == 7:
        narcache.decompress(narcache.compress(NARINFO.encode()))  # zstd contexts are large
    elif kind == 8:
        info = narcache.NarInfo(store_dir="/nix/store")
        info.store_path = "/nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo"
        info.references = ["dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo"]
    elif kind == 9:
        try:
            list(narcache.nar.parse(NAR[:-8]))
        except narcache.NarError:
            pass
    if len(keep) > 50:
        keep.clear()


def test_100000_objects_do_not_grow_the_process():
    thresholds = gc.get_threshold()
    gc.set_threshold(50, 5, 5)  # collect often: finalizers run in arbitrary order
    try:
        keep = []
        for i in range(10000):  # warm up allocator pools and caches
            churn(i, keep)
        gc.collect()
        before = rss_bytes()
        for i in range(100000):
            churn(i, keep)
        keep.clear()
        gc.collect()
        grown = rss_bytes() - before
    finally:
        gc.set_threshold(*thresholds)
    # A leak of even 64 bytes per object would be 6.4 MB here.
    assert grown < 4 * 1024 * 1024, "RSS grew by %d bytes over 100,000 objects" % grown
