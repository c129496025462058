"""NAR archives: dump a tree exactly as `nix-store --dump` does, hash it,
parse a NAR strictly as a stream of events, restore it safely, list it."""
import ctypes
import enum
import json
import os
import tempfile
from typing import BinaryIO, Iterator, NamedTuple, Optional, Union

from . import _lib, hashes
from ._handle import create
from .errors import check, check_object

_ERRBUF = 512


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
    return hashes.format(h), size.value


_READ_CHUNK = 1 << 20
Source = Union[bytes, bytearray, memoryview, BinaryIO]


def _chunks(source: Source):
    """The NAR bytes of `source` in pieces: a bytes-like object whole, a
    binary file object read 1 MiB at a time."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield bytes(source)
        return
    read = getattr(source, "read", None)
    if read is None:
        raise TypeError("a NAR source is bytes or a binary file object, not %s"
                        % type(source).__name__)
    while True:
        chunk = read(_READ_CHUNK)
        if not chunk:
            return
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError("the NAR source must be opened in binary mode")
        yield bytes(chunk)


def _name(ptr, length):
    """An entry name or target: str, with bytes that are not UTF-8 kept
    as surrogate escapes, as os.fsdecode does (os.fsencode gives them back)."""
    return _lib.borrowed(ptr, length).decode("utf-8", "surrogateescape")


class EventType(enum.IntEnum):
    """What an Event reports (the values of the C enum)."""
    DIR_BEGIN = 1
    ENTRY = 2
    FILE_BEGIN = 3
    FILE_DATA = 4
    FILE_END = 5
    SYMLINK = 6
    DIR_END = 7
    END = 8


class Event(NamedTuple):
    """One step of a NAR. `offset` is the NAR offset where the event's
    frame starts; for FILE_BEGIN the first content byte (the listing's
    narOffset), for FILE_DATA that of `data`."""
    type: EventType
    depth: int
    offset: int
    name: Optional[str] = None    # ENTRY: the name of the node that follows
    target: Optional[str] = None  # SYMLINK
    executable: bool = False      # FILE_BEGIN
    size: Optional[int] = None    # FILE_BEGIN
    data: Optional[bytes] = None  # FILE_DATA


_TYPES = {t.value: t for t in EventType}


def _event(ev: _lib.NarEvent) -> Event:
    kind = _TYPES[ev.type]
    if kind == EventType.ENTRY:
        return Event(kind, ev.depth, ev.offset, name=_name(ev.name, ev.name_len))
    if kind == EventType.SYMLINK:
        return Event(kind, ev.depth, ev.offset, target=_name(ev.name, ev.name_len))
    if kind == EventType.FILE_BEGIN:
        return Event(kind, ev.depth, ev.offset, executable=bool(ev.executable), size=ev.size)
    if kind == EventType.FILE_DATA:
        return Event(kind, ev.depth, ev.offset, data=ctypes.string_at(ev.data, ev.len))
    return Event(kind, ev.depth, ev.offset)


def parse(source: Source) -> Iterator[Event]:
    """The events of the NAR in `source` (bytes or a binary file object),
    checked as strictly as the C parser does: a malformed, truncated or
    over-long archive raises NarError (or LimitError) with the NAR offset
    in `.offset`, after the events before the problem. Memory stays
    bounded however large the archive."""
    parser = create(_lib.narcache_nar_parser_new, _lib.narcache_nar_parser_free)

    def checked(rc):
        return check_object(rc, parser.ptr, _lib.narcache_nar_parser_errmsg,
                            _lib.narcache_nar_parser_erroffset)

    try:
        ev = _lib.NarEvent(version=_lib.NAR_EVENT_VERSION)
        for chunk in _chunks(source):
            inbuf = _lib.in_buffer(chunk)
            while checked(_lib.narcache_nar_parser_next(parser.use(), ctypes.byref(inbuf),
                                                        ctypes.byref(ev))):
                yield _event(ev)
        checked(_lib.narcache_nar_parser_finish(parser.use()))
    finally:
        parser.release()


def restore(source: Source, dest) -> None:
    """Unpack the NAR in `source` to the new path `dest` (whose parent must
    exist), as `nix-store --restore` does but all or nothing: the tree is
    built under a hidden name and renamed into place only when the whole
    archive was good; on any error nothing is left behind. Symlinks in the
    archive are created, never followed."""
    restorer = create(_lib.narcache_nar_restorer_new, _lib.narcache_nar_restorer_free)

    def checked(rc):
        return check_object(rc, restorer.ptr, _lib.narcache_nar_restorer_errmsg)

    try:
        ptr = restorer.use()
        checked(_lib.narcache_nar_restorer_open(ptr, _lib.AT_FDCWD, _path_bytes(dest)))
        for chunk in _chunks(source):
            inbuf = _lib.in_buffer(chunk)
            checked(_lib.narcache_nar_restorer_write(ptr, ctypes.byref(inbuf)))
        checked(_lib.narcache_nar_restorer_finish(ptr))
    finally:
        restorer.release()


def listing_json(source) -> bytes:
    """The `.ls` listing, byte for byte as Nix writes it next to a NAR
    (write-nar-listing=true): bytes, since names that are not UTF-8 are
    written raw, as Nix does. `source` is a path on disk (str or
    os.PathLike: its NAR is described from the tree's metadata, no file
    contents read) or a NAR (bytes or a binary file object)."""
    if isinstance(source, (str, os.PathLike)):
        return _listing_of_path(source)
    return _listing_of_nar(source)


def listing(source) -> dict:
    """listing_json(source) as a dict: {"version": 1, "root": {...}}.
    Names that are not UTF-8 come as surrogate escapes (as os.fsdecode)."""
    return json.loads(listing_json(source).decode("utf-8", "surrogateescape"))


def _listing_of_path(path) -> bytes:
    dumper = create(_lib.narcache_nar_dumper_new, _lib.narcache_nar_dumper_free)
    try:
        ptr = dumper.use()
        check_object(_lib.narcache_nar_dumper_open(ptr, _lib.AT_FDCWD, _path_bytes(path)), ptr,
                     _lib.narcache_nar_dumper_errmsg)
        text, n = ctypes.c_void_p(), ctypes.c_size_t(0)
        check(_lib.narcache_nar_dumper_listing(ctypes.byref(text), ctypes.byref(n), ptr))
        return _lib.take_string(text.value, n.value)
    finally:
        dumper.release()


def _listing_of_nar(source) -> bytes:
    lister = create(_lib.narcache_nar_lister_new, _lib.narcache_nar_lister_free)

    def checked(rc):
        return check_object(rc, lister.ptr, _lib.narcache_nar_lister_errmsg,
                            _lib.narcache_nar_lister_erroffset)

    try:
        ptr = lister.use()
        for chunk in _chunks(source):
            inbuf = _lib.in_buffer(chunk)
            checked(_lib.narcache_nar_lister_write(ptr, ctypes.byref(inbuf)))
        text, n = ctypes.c_void_p(), ctypes.c_size_t(0)
        checked(_lib.narcache_nar_lister_finish(ptr, ctypes.byref(text), ctypes.byref(n)))
        return _lib.take_string(text.value, n.value)
    finally:
        lister.release()
