"""Store backends a Server answers from, and access-token tables."""
import ctypes
import os
from typing import Iterable, Optional

from . import _lib
from ._handle import Handle, Owner
from .errors import check, error_class
from .keys import SecretKey

_WRITABLE = 1
_CODECS = {"none": 1, "zstd": 2}


class Store(Owner):
    """A backend: DirStore or NixStore."""
    __slots__ = ()

    def probe(self) -> bool:
        """True when objects can be read right now (the health probe)."""
        return _lib.narcache_store_probe(self._handle.use()) == 0


class DirStore(Store):
    """A binary-cache directory as `nix copy --to file://PATH` writes it.
    With writable=True the server may take uploads into it (each object is
    written to a temporary file, fsynced and renamed into place)."""
    __slots__ = ()

    def __init__(self, path, writable: bool = False, min_free: Optional[int] = None):
        out = ctypes.c_void_p()
        check(_lib.narcache_store_dir_new(ctypes.byref(out), os.fsencode(os.fspath(path)),
                                          _WRITABLE if writable else 0),
              "cannot open the cache directory %s" % os.fspath(path))
        self._handle = Handle(out.value, _lib.narcache_store_free)
        if min_free is not None:
            check(_lib.narcache_store_dir_set_min_free(out.value,
                                                       _lib.in_range(min_free, "min_free")))


class NixStore(Store):
    """A local Nix store served as a binary cache (read-only), with NARs
    made on the fly from the store paths and narinfo from Nix's database,
    signed with `keys`."""
    __slots__ = ()

    def __init__(self, store_dir: Optional[str] = None, db_path: Optional[str] = None,
                 keys: Iterable[SecretKey] = (), priority: int = 0, compression: str = "none",
                 level: int = 0, log_dir: Optional[str] = None):
        keys = list(keys)
        for k in keys:
            if not isinstance(k, SecretKey):
                raise TypeError("a NixStore signs with SecretKey objects")
        if compression not in _CODECS:
            raise ValueError("compression must be one of %s" % ", ".join(sorted(_CODECS)))
        array = (ctypes.c_void_p * max(1, len(keys)))(*[k._handle.use() for k in keys])
        opts = _lib.NixStoreOptions(
            version=_lib.NIXSTORE_OPTIONS_VERSION,
            store_dir=None if store_dir is None else os.fsencode(store_dir),
            db_path=None if db_path is None else os.fsencode(db_path),
            keys=array, n_keys=len(keys), priority=_lib.in_range(priority, "priority", 32, True),
            compression=_CODECS[compression], level=_lib.in_range(level, "level", 32, True), log_dir=None if log_dir is None else os.fsencode(log_dir))
        out = ctypes.c_void_p()
        check(_lib.narcache_store_nixstore_new(ctypes.byref(out), ctypes.byref(opts)),
              "cannot open the Nix store database %s" % (db_path or "/nix/var/nix/db/db.sqlite"))
        # The store points at the keys: they stay alive as long as it does.
        self._handle = Handle(out.value, _lib.narcache_store_free, [k._handle for k in keys])


class Tokens(Owner):
    """An access-token table ("NAME SCOPE TOKEN" lines; see auth.h): which
    bearer tokens may upload (write) or read a private cache."""
    __slots__ = ()

    def __init__(self, text):
        data = text.encode() if isinstance(text, str) else bytes(text)
        out = ctypes.c_void_p()
        err = ctypes.create_string_buffer(256)
        rc = _lib.narcache_tokens_parse(ctypes.byref(out), data, len(data), err, len(err))
        if rc < 0:
            raise error_class(rc)(rc, err.value.decode(errors="replace") or None)
        self._handle = Handle(out.value, _lib.narcache_tokens_free)

    @classmethod
    def load(cls, path) -> "Tokens":
        """Read a token file."""
        with open(path, "rb") as f:
            return cls(f.read())

    def __len__(self):
        return _lib.narcache_tokens_count(self._handle.use())
