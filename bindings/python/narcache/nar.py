"""NAR archives: dump a tree exactly as `nix-store --dump` does, and hash it."""
import ctypes
import os
import tempfile

from . import _lib
from .errors import check

_ERRBUF = 512
_NIX32 = 2


def _path_bytes(path):
    return os.fsencode(os.fspath(path))


def dump_to(path, fileobj):
    """Write the NAR of `path` to `fileobj` (anything with fileno(), or a
    writable binary file object); return the NAR size in bytes."""
    try:
        fd = fileobj.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is not None:
        if hasattr(fileobj, "flush"):
            fileobj.flush()
        return _dump_fd(path, fd)
    with tempfile.TemporaryFile() as tmp:
        size = _dump_fd(path, tmp.fileno())
        tmp.seek(0)
        while True:
            chunk = tmp.read(1 << 20)
            if not chunk:
                break
            fileobj.write(chunk)
    return size


def _dump_fd(path, fd):
    size = ctypes.c_uint64(0)
    err = ctypes.create_string_buffer(_ERRBUF)
    rc = _lib.narcache_nar_dump_path_to_fd(ctypes.byref(size), _path_bytes(path), fd, err,
                                           _ERRBUF)
    check(rc, err.value.decode(errors="replace"))
    return size.value


def dump(path):
    """The NAR of `path` as bytes (for large trees prefer dump_to)."""
    with tempfile.TemporaryFile() as tmp:
        _dump_fd(path, tmp.fileno())
        tmp.seek(0)
        return tmp.read()


def hash(path):  # noqa: A001 -- the natural name in this module
    """(NarHash as Nix writes it, "sha256:<nix32>", NarSize) of `path`."""
    h = _lib.Hash()
    size = ctypes.c_uint64(0)
    err = ctypes.create_string_buffer(_ERRBUF)
    rc = _lib.narcache_nar_hash_path(ctypes.byref(h), ctypes.byref(size), _path_bytes(path), err,
                                     _ERRBUF)
    check(rc, err.value.decode(errors="replace"))
    text = ctypes.create_string_buffer(_lib.narcache_hash_string_max())
    n = ctypes.c_size_t(0)
    check(_lib.narcache_hash_format(text, len(text), ctypes.byref(n), ctypes.byref(h), _NIX32, 1))
    return text.value.decode(), size.value
