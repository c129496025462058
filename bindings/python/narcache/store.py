"""Store backends a Server answers from, and access-token tables."""
import ctypes
import os
from typing import Iterable, Optional

from . import _lib
from ._handle import Handle, Owner
from .errors import check, error_class
from .keys import SecretKey

_WRITABLE = 1
_S3_REDIRECT = 8
_CODECS = {"none": 1, "zstd": 2}


class Store(Owner):
    """A backend: DirStore, NixStore or S3Store."""
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


def _opt(text: Optional[str]) -> Optional[bytes]:
    return None if text is None else text.encode()


class S3Store(Store):
    """A bucket of an S3-compatible object store laid out as `nix copy --to
    s3://BUCKET` writes it (see narcache_store_s3_new): `url` is
    "s3://BUCKET[/PREFIX][?endpoint=URL&region=R&addressing=path|virtual&
    profile=P]". Credentials: access_key/secret_key, else the AWS_*
    environment variables, else ~/.aws/credentials. Nothing is sent until
    used; check() asks the bucket at once. writable=True takes uploads;
    redirect=True sends NAR requests to presigned URLs (307)."""
    __slots__ = ()

    def __init__(self, url: str, access_key: Optional[str] = None,
                 secret_key: Optional[str] = None, session_token: Optional[str] = None,
                 writable: bool = False, redirect: bool = False,
                 redirect_endpoint: Optional[str] = None, request_timeout_ms: int = 0,
                 ca_file: Optional[str] = None):
        error = ctypes.create_string_buffer(512)
        opts = _lib.S3Options(
            version=_lib.S3_OPTIONS_VERSION, url=url.encode(), access_key=_opt(access_key),
            secret_key=_opt(secret_key), session_token=_opt(session_token),
            flags=(_WRITABLE if writable else 0) | (_S3_REDIRECT if redirect else 0),
            redirect_endpoint=_opt(redirect_endpoint), ca_file=_opt(ca_file),
            request_timeout_ms=_lib.in_range(request_timeout_ms, "request_timeout_ms", 32),
            error=ctypes.cast(error, ctypes.c_void_p), error_size=len(error))
        out = ctypes.c_void_p()
        check(_lib.narcache_store_s3_new(ctypes.byref(out), ctypes.byref(opts)),
              error.value.decode(errors="replace") or None)
        self._handle = Handle(out.value, _lib.narcache_store_free)

    def check(self) -> None:
        """One signed request to the bucket now; raises with the reason
        (credentials refused, no such bucket, unreachable)."""
        message = ctypes.create_string_buffer(512)
        check(_lib.narcache_store_s3_check(self._handle.use(), message, len(message)),
              message.value.decode(errors="replace") or None)


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
