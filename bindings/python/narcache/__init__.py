"""libnarcache for Python, over ctypes (no compiled extension).

Set NARCACHE_LIBRARY to the path of libnarcache.so.0 to choose the library;
otherwise the system loader finds it. Modules: `nar` (dump and hash trees
as Nix does), `errors` (one exception class per library error code).
"""
from . import _lib, errors, nar
from .errors import NarcacheError, NarError, SignatureError, NotFoundError

#: The version of the C library loaded ("MAJOR.MINOR.PATCH").
library_version = _lib.version_string
__version__ = "0.1.0"

__all__ = ["nar", "errors", "NarcacheError", "NarError", "SignatureError", "NotFoundError",
           "library_version", "__version__"]
