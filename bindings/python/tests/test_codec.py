"""narcache's zstd codec against the reference `zstd` command-line tool
(scripts/install-deps installs it; a missing tool fails these tests):
both directions at several sizes, incremental use, flushing, streams,
limits, corrupt and truncated input, and the identity codec "none"."""
import io
import random
import shutil
import subprocess

import pytest

import narcache
from narcache import codec
from narcache.errors import InvalidArgumentError

ZSTD = shutil.which("zstd")


def zstd(*args, data):
    """Run the zstd CLI on `data` (stdin) and return its stdout."""
    assert ZSTD, "the zstd command-line tool is missing (scripts/install-deps installs it)"
    return subprocess.run([ZSTD, "-q", *args], input=data, check=True,
                          capture_output=True).stdout


def compressible(size):
    """`size` bytes of text-like data that compresses well."""
    line = b"".join(b"line %08d of a fairly repetitive text, with some words\n" % i
                    for i in range(1000))
    return (line * (size // len(line) + 1))[:size]


SIZES = {
    "empty": b"",
    "one-byte": b"\x00",
    "1MiB-random": random.Random(1).randbytes(1 << 20),
    "10MiB-compressible": compressible(10 << 20),
}


def test_the_zstd_tool_is_installed():
    """The reference tool is there: these tests must not pass vacuously."""
    assert ZSTD is not None
    assert zstd("-d", "-c", data=zstd("-c", data=b"probe")) == b"probe"


@pytest.mark.parametrize("name", SIZES)
def test_our_frames_decompress_with_the_zstd_tool(name):
    """narcache.compress output is a valid zstd stream the tool decodes to
    the input."""
    data = SIZES[name]
    frame = narcache.compress(data)
    assert frame[:4] == b"\x28\xb5\x2f\xfd"
    assert zstd("-d", "-c", data=frame) == data
    if len(data) > 1000:
        assert len(frame) < len(data) or name.endswith("random")


@pytest.mark.parametrize("name", SIZES)
def test_zstd_tool_output_decompresses_with_narcache(name):
    """Frames written by the tool (at several levels) decode to the input."""
    data = SIZES[name]
    for level in (["-1"], ["-3"], ["-19"] if len(data) <= 1 << 20 else ["-6"]):
        assert narcache.decompress(zstd("-c", *level, data=data)) == data


def test_frames_carry_a_checksum_and_levels_work():
    """compress.h: frames carry a content checksum (frame header descriptor
    bit 2); negative and positive levels produce valid frames, higher ones
    smaller; levels beyond zstd's maximum (22) are refused."""
    data = compressible(60000)
    assert narcache.compress(data)[4] & 0x04
    sizes = {}
    for level in (-5, 1, 3, 9, 19):  # 22 works too, but takes a second
        frame = narcache.compress(data, level=level)
        assert zstd("-d", "-c", data=frame) == data
        sizes[level] = len(frame)
    assert sizes[19] < sizes[-5]
    narcache.Compressor(22).close()
    for level in (23, 1000):
        with pytest.raises(InvalidArgumentError):
            narcache.Compressor(level)


def test_incremental_compression_in_small_chunks():
    """Feeding a Compressor many small pieces gives one stream that both
    the tool and narcache decode to the concatenated input."""
    data = random.Random(2).randbytes(300000) + compressible(300000)
    c = narcache.Compressor()
    pieces = []
    rng = random.Random(3)
    pos = 0
    while pos < len(data):
        n = rng.randrange(1, 5000)
        pieces.append(c.compress(data[pos:pos + n]))
        pos += n
    pieces.append(c.flush())
    stream = b"".join(pieces)
    assert zstd("-d", "-c", data=stream) == data
    assert narcache.decompress(stream) == data


@pytest.mark.parametrize("chunk", [1, 7, 4093, 1 << 16])
def test_incremental_decompression_in_small_chunks(chunk):
    """A Decompressor fed the tool's stream in pieces returns the input,
    whatever the piece size."""
    data = random.Random(chunk).randbytes(200000) if chunk > 1 else compressible(20000)
    stream = zstd("-c", data=data)
    d = narcache.Decompressor()
    out = [d.decompress(stream[i:i + chunk]) for i in range(0, len(stream), chunk)]
    d.finish()
    assert b"".join(out) == data


def test_flush_without_end_makes_everything_so_far_decodable():
    """flush(end=False) emits all input so far in decodable form without
    ending the frame: a fresh decoder returns it all (the stream is then
    unfinished), and the frame can continue and end later."""
    part1, part2 = compressible(100000), random.Random(4).randbytes(50000)
    c = narcache.Compressor()
    head = c.compress(part1) + c.flush(end=False)
    d = narcache.Decompressor()
    assert d.decompress(head) == part1
    unfinished = narcache.Decompressor()
    assert unfinished.decompress(head) == part1
    with pytest.raises(narcache.CompressionError):
        unfinished.finish()  # the frame has not ended yet
    tail = c.compress(part2) + c.flush(end=False) + c.flush()
    assert d.decompress(tail) == part2
    d.finish()
    assert zstd("-d", "-c", data=head + tail) == part1 + part2


def test_after_a_frame_end_a_new_frame_follows():
    """flush() ends a frame; more data then starts another one, and the
    concatenation decodes to everything with both implementations."""
    c = narcache.Compressor()
    stream = c.compress(b"first ") + c.flush() + c.compress(b"second") + c.flush()
    assert stream.count(b"\x28\xb5\x2f\xfd") == 2
    assert narcache.decompress(stream) == b"first second"
    assert zstd("-d", "-c", data=stream) == b"first second"


def test_concatenated_and_skippable_frames_decompress():
    """Frames from narcache and the tool, one after another (and a
    skippable frame), decode to the concatenation of their contents."""
    a, b, e = narcache.compress(b"alpha "), zstd("-c", data=b"beta "), narcache.compress(b"")
    skippable = (0x184D2A50).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"skip!"
    stream = a + b + e + skippable + a
    assert narcache.decompress(stream) == b"alpha beta alpha "
    assert zstd("-d", "-c", data=stream) == b"alpha beta alpha "
    d = narcache.Decompressor()
    out = b"".join(d.decompress(stream[i:i + 3]) for i in range(0, len(stream), 3))
    d.finish()
    assert out == b"alpha beta alpha "


def test_streams_with_bytesio_and_real_files(tmp_path):
    """compress_stream/decompress_stream work on BytesIO and on files,
    return the number of bytes written, and interoperate with the tool."""
    data = compressible(3 << 20) + random.Random(5).randbytes(1 << 20)
    packed = io.BytesIO()
    n = codec.compress_stream(io.BytesIO(data), packed)
    assert n == len(packed.getvalue()) > 0
    assert zstd("-d", "-c", data=packed.getvalue()) == data
    unpacked = io.BytesIO()
    assert codec.decompress_stream(io.BytesIO(packed.getvalue()), unpacked) == len(data)
    assert unpacked.getvalue() == data

    src, zst, back = tmp_path / "in.bin", tmp_path / "in.bin.zst", tmp_path / "back.bin"
    src.write_bytes(data)
    with open(src, "rb") as f, open(zst, "wb") as g:
        n = codec.compress_stream(f, g, level=5)
    assert n == zst.stat().st_size
    subprocess.run([ZSTD, "-q", "-d", "-f", str(zst), "-o", str(tmp_path / "by-tool.bin")],
                   check=True)
    assert (tmp_path / "by-tool.bin").read_bytes() == data
    subprocess.run([ZSTD, "-q", "-f", str(src), "-o", str(tmp_path / "tool.zst")], check=True)
    with open(tmp_path / "tool.zst", "rb") as f, open(back, "wb") as g:
        assert codec.decompress_stream(f, g) == len(data)
    assert back.read_bytes() == data


def test_max_output_limits_decompression():
    """max_output is the most a decoder may produce: one byte over raises
    LimitError, exactly enough passes -- in one call, incrementally and in
    streams."""
    data = compressible(1 << 20)
    frame = narcache.compress(data)
    assert narcache.decompress(frame, max_output=len(data)) == data
    with pytest.raises(narcache.LimitError):
        narcache.decompress(frame, max_output=len(data) - 1)
    d = narcache.Decompressor(max_output=1000)
    with pytest.raises(narcache.LimitError):
        for i in range(0, len(frame), 100):
            d.decompress(frame[i:i + 100])
    with pytest.raises(narcache.LimitError):
        codec.decompress_stream(io.BytesIO(frame), io.BytesIO(), max_output=12345)
    bomb = narcache.compress(bytes(50 << 20))
    assert len(bomb) < 1 << 20
    with pytest.raises(narcache.LimitError):
        narcache.decompress(bomb, max_output=1 << 20)
    with pytest.raises(narcache.LimitError):
        narcache.decompress(b"abc", codec="none", max_output=2)
    assert narcache.decompress(b"abc", codec="none", max_output=3) == b"abc"


@pytest.mark.parametrize("limit", [-1, 2**64 + 10])
def test_a_max_output_outside_the_64_bit_range_is_refused(limit):
    """A negative or over-large max_output is refused, not wrapped modulo
    2**64 (-1 would silently mean "no limit" and 2**64 + 10 a limit of 10)."""
    frame = narcache.compress(bytes(1 << 20))
    with pytest.raises((ValueError, OverflowError, narcache.NarcacheError)) as info:
        narcache.decompress(frame, max_output=limit)
    assert not isinstance(info.value, narcache.LimitError)


def test_a_frame_window_over_the_limit_is_refused():
    """compress.h: a frame whose window exceeds 2^27 bytes is refused
    (LimitError) before anything is allocated for it."""
    frame = zstd("-c", "--long=31", data=random.Random(6).randbytes(100000))
    with pytest.raises(narcache.LimitError):
        narcache.decompress(frame)


def test_corrupt_input_raises_compression_error():
    """Garbage, a flipped byte and a bad checksum raise CompressionError,
    and the error is sticky."""
    data = random.Random(7).randbytes(20000)
    frame = narcache.compress(data)
    for bad in (b"not zstd at all", b"\x00" * 64, bytes(range(256))):
        with pytest.raises(narcache.CompressionError):
            narcache.decompress(bad)
    for pos in (len(frame) // 2, len(frame) - 2):
        damaged = bytearray(frame)
        damaged[pos] ^= 0x10
        with pytest.raises(narcache.CompressionError):
            narcache.decompress(bytes(damaged))
    d = narcache.Decompressor()
    with pytest.raises(narcache.CompressionError):
        d.decompress(b"garbage!" * 4)
    with pytest.raises(narcache.CompressionError):
        d.decompress(frame)  # errors are sticky


def test_truncated_input_raises_at_finish():
    """A stream cut anywhere inside a frame decodes what it can without
    error, and finish() (or decompress()) then raises CompressionError;
    empty input is an error too."""
    data = compressible(50000) + random.Random(8).randbytes(5000)
    frame = narcache.compress(data)
    for cut in list(range(0, 40)) + list(range(40, len(frame), 97)) + [len(frame) - 1]:
        d = narcache.Decompressor()
        try:
            out = d.decompress(frame[:cut])
        except narcache.CompressionError:
            continue  # a header can be refused as soon as it is complete
        assert data.startswith(out)
        with pytest.raises(narcache.CompressionError):
            d.finish()
        with pytest.raises(narcache.CompressionError):
            narcache.decompress(frame[:cut])
    with pytest.raises(narcache.CompressionError):
        codec.decompress_stream(io.BytesIO(frame[:-5]), io.BytesIO())


def test_codec_none_is_the_identity():
    """codec="none" passes bytes through unchanged, in one go and in pieces."""
    data = random.Random(9).randbytes(300000)
    assert narcache.compress(data, codec="none") == data
    assert narcache.decompress(data, codec="none") == data
    assert narcache.compress(b"", codec="none") == b""
    c, d = narcache.Compressor(codec="none"), narcache.Decompressor(codec="none")
    out = b"".join(c.compress(data[i:i + 1000]) for i in range(0, len(data), 1000)) + c.flush()
    assert out == data
    assert b"".join(d.decompress(data[i:i + 777]) for i in range(0, len(data), 777)) == data
    sink = io.BytesIO()
    assert codec.compress_stream(io.BytesIO(data), sink, codec="none") == len(data)
    assert sink.getvalue() == data


@pytest.mark.parametrize("name", ["xz", "bzip2", "br"])
def test_codecs_nix_knows_but_we_do_not_are_not_supported(name):
    """Compression methods Nix knows but narcache cannot code raise
    NotSupportedError everywhere a codec is chosen."""
    for make in (lambda: narcache.Compressor(codec=name),
                 lambda: narcache.Decompressor(codec=name),
                 lambda: narcache.compress(b"x", codec=name),
                 lambda: narcache.decompress(b"x", codec=name),
                 lambda: codec.compress_stream(io.BytesIO(b"x"), io.BytesIO(), codec=name)):
        with pytest.raises(narcache.NotSupportedError):
            make()


def test_unknown_codec_names_are_errors():
    """A name that is no codec at all is refused with a NarcacheError."""
    for name in ("", "ZSTD ", "gzip9", "zstd\0"):
        with pytest.raises(narcache.NarcacheError):
            narcache.Compressor(codec=name)
