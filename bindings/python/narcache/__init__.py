"""libnarcache for Python, over ctypes (no compiled extension).

Set NARCACHE_LIBRARY to the path of libnarcache.so.0 to choose the library;
otherwise the system loader finds it.

Modules: `nar` (dump, hash, parse, restore and list NARs as Nix does),
`narinfo` (NarInfo), `keys` (SecretKey, PublicKey), `codec` (zstd
streams), `store` (DirStore, NixStore, S3Store, Tokens), `server` (Server), `errors`
(one exception class per library error code).

Objects wrap C objects that are freed when the Python object goes (or at
close() / the end of a `with` block); like the C objects, one object is
used by one thread at a time. Server is the exception: stop() may be
called from any thread.
"""
from . import _lib, codec, errors, hashes, keys, nar, narinfo, server, store
from .codec import Compressor, Decompressor, compress, decompress
from .errors import (CompressionError, ConflictError, HashFormatError, KeyFormatError,
                     LimitError, NarcacheError, NarcacheIOError, NarError, NarInfoError,
                     NotFoundError, NotSupportedError, SignatureError, StorePathError,
                     UnavailableError)
from .keys import PublicKey, SecretKey
from .narinfo import NarInfo
from .server import Server
from .store import DirStore, NixStore, S3Store, Store, Tokens

#: The version of the C library loaded ("MAJOR.MINOR.PATCH").
library_version = _lib.version_string
__version__ = "0.1.0"

__all__ = [
    "nar", "narinfo", "keys", "codec", "store", "server", "errors", "hashes",
    "NarInfo", "SecretKey", "PublicKey", "Server", "Store", "DirStore", "NixStore", "S3Store", "Tokens",
    "Compressor", "Decompressor", "compress", "decompress",
    "NarcacheError", "NarError", "NarInfoError", "KeyFormatError", "SignatureError",
    "NotFoundError", "CompressionError", "LimitError", "NarcacheIOError", "NotSupportedError",
    "HashFormatError", "StorePathError", "UnavailableError", "ConflictError",
    "library_version", "__version__",
]
