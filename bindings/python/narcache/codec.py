"""zstd streams as Nix binary caches use them (Compression: zstd), and the
identity codec "none". Decompression checks every frame header first and
can cap its output (a NAR's NarSize), so a hostile file cannot make it
allocate without bound."""
import ctypes
from typing import BinaryIO, Optional

from . import _lib
from ._handle import Handle, Owner
from .errors import check, check_object

_CHUNK = 1 << 17
_FLUSH_NONE, _FLUSH_BLOCK, _FLUSH_END = 0, 1, 2


def _codec_type(name: str) -> int:
    data = name.encode()
    return check(_lib.narcache_codec_from_name(data, len(data)))


class _Codec(Owner):
    __slots__ = ("_out",)

    def _init(self, ptr):
        self._handle = Handle(ptr, _lib.narcache_codec_free)
        self._out = ctypes.create_string_buffer(_CHUNK)

    def _raise(self, rc):
        check_object(rc, self._handle.use(), _lib.narcache_codec_errmsg)

    def _pieces(self, data: bytes, flush: int, until_drained: bool):
        """Output chunks of at most _CHUNK bytes, as they are produced (a
        stream never holds more than one chunk of output in memory)."""
        ptr = self._handle.use()
        inbuf = _lib.in_buffer(data)
        while True:
            out = _lib.out_buffer(self._out)
            rc = _lib.narcache_codec_process(ptr, ctypes.byref(out), ctypes.byref(inbuf), flush)
            if rc < 0:
                self._raise(rc)
            if out.pos:
                yield self._out.raw[:out.pos]
            more_input = inbuf.pos < inbuf.size
            if not more_input and out.pos < out.size and (rc == 0 or not until_drained):
                return

    def _process(self, data: bytes, flush: int, until_drained: bool) -> bytes:
        return b"".join(self._pieces(data, flush, until_drained))


class Compressor(_Codec):
    """Incremental compressor: compress() as data comes, then flush()."""
    __slots__ = ()

    def __init__(self, level: int = 0, codec: str = "zstd"):
        out = ctypes.c_void_p()
        level = _lib.in_range(level, "level", 32, signed=True)
        check(_lib.narcache_codec_new_compressor(ctypes.byref(out), _codec_type(codec), level))
        self._init(out.value)

    def compress(self, data: bytes) -> bytes:
        """Feed `data`; returns whatever compressed bytes are ready."""
        return self._process(bytes(data), _FLUSH_NONE, False)

    def flush(self, end: bool = True) -> bytes:
        """End the frame (end=True), or only make everything so far
        decodable (end=False). More data may follow either way."""
        return self._process(b"", _FLUSH_END if end else _FLUSH_BLOCK, True)


class Decompressor(_Codec):
    """Incremental decompressor of one or more concatenated frames."""
    __slots__ = ()

    def __init__(self, codec: str = "zstd", max_output: Optional[int] = None):
        out = ctypes.c_void_p()
        check(_lib.narcache_codec_new_decompressor(ctypes.byref(out), _codec_type(codec)))
        self._init(out.value)
        if max_output is not None:
            check(_lib.narcache_codec_set_max_output(
                out.value, _lib.in_range(max_output, "max_output")))

    def decompress(self, data: bytes) -> bytes:
        """Feed compressed bytes; returns the bytes they decode to. Raises
        CompressionError (corrupt data) or LimitError (max_output)."""
        return self._process(bytes(data), _FLUSH_NONE, False)

    def finish(self) -> None:
        """Declare the end of input: raises CompressionError if the data
        stopped inside a frame (or held none)."""
        rc = _lib.narcache_codec_end(self._handle.use())
        if rc < 0:
            self._raise(rc)


def compress(data: bytes, level: int = 0, codec: str = "zstd") -> bytes:
    """`data` as one compressed frame."""
    with Compressor(level, codec) as c:
        return c.compress(data) + c.flush()


def decompress(data: bytes, codec: str = "zstd", max_output: Optional[int] = None) -> bytes:
    """The bytes `data` decodes to (all frames, which must be complete)."""
    with Decompressor(codec, max_output) as d:
        result = d.decompress(data)
        d.finish()
        return result


def compress_stream(src: BinaryIO, dst: BinaryIO, level: int = 0, codec: str = "zstd") -> int:
    """Compress file object `src` into `dst` in bounded memory; returns the
    number of bytes written."""
    written = 0
    with Compressor(level, codec) as c:
        while True:
            chunk = src.read(1 << 20)
            if chunk:
                pieces = c._pieces(bytes(chunk), _FLUSH_NONE, False)
            else:
                pieces = c._pieces(b"", _FLUSH_END, True)
            for piece in pieces:
                dst.write(piece)
                written += len(piece)
            if not chunk:
                return written


def decompress_stream(src: BinaryIO, dst: BinaryIO, codec: str = "zstd",
                      max_output: Optional[int] = None) -> int:
    """Decompress file object `src` into `dst` in bounded memory; returns the
    number of bytes written."""
    written = 0
    with Decompressor(codec, max_output) as d:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                d.finish()
                return written
            for piece in d._pieces(bytes(chunk), _FLUSH_NONE, False):
                dst.write(piece)
                written += len(piece)
