"""Exceptions for the library's error codes.

Every C error code (< 0) maps to one class, all derived from
NarcacheError, which carries the code, the library's symbolic name
("EBADNAR"), its message and, where the library reports one, the byte
offset of the problem. Codes this package does not know (a newer library)
still raise NarcacheError.
"""
from . import _lib


class NarcacheError(Exception):
    """A libnarcache call failed."""

    def __init__(self, code, message=None, offset=None):
        self.code = code
        self.name = _lib.narcache_errname(code).decode()
        self.message = message or _lib.narcache_strerror(code).decode()
        self.offset = offset
        text = "%s: %s" % (self.name, self.message)
        if offset is not None:
            text += " (at byte %d)" % offset
        super().__init__(text)


class InvalidArgumentError(NarcacheError, ValueError):
    """EINVAL: an argument the library refuses."""


class OutOfMemoryError(NarcacheError, MemoryError):
    """ENOMEM."""


class MisuseError(NarcacheError):
    """EMISUSE: a call not allowed in the object's state."""


class BufferTooSmallError(NarcacheError):
    """EBUFS."""


class LimitError(NarcacheError):
    """ELIMIT: a configured limit was exceeded."""


class NarError(NarcacheError):
    """EBADNAR: a malformed NAR archive."""


class NarInfoError(NarcacheError):
    """EBADNARINFO: a malformed narinfo."""


class KeyFormatError(NarcacheError):
    """EBADKEY: a malformed key."""


class SignatureError(NarcacheError):
    """EBADSIG: a signature that does not verify."""


class NotFoundError(NarcacheError, LookupError):
    """ENOTFOUND."""


class CompressionError(NarcacheError):
    """ECOMPRESS: compression or decompression failed."""


class CanceledError(NarcacheError):
    """ECANCELED."""


class CallbackError(NarcacheError):
    """EUSER: a callback asked to abort."""


class NarcacheIOError(NarcacheError, OSError):
    """EIO: an input/output error."""


class NotSupportedError(NarcacheError):
    """ENOTSUP."""


class HashFormatError(NarcacheError, ValueError):
    """EBADHASH, EHASHALGO, EBADCHAR, EBADLENGTH, ENONCANONICAL: bad hash text."""


class StorePathError(NarcacheError, ValueError):
    """EBADSTOREPATH: a malformed store path."""


class CryptoError(NarcacheError):
    """ECRYPTO: the cryptographic library failed."""


class UnavailableError(NarcacheError):
    """EUNAVAIL: temporarily unavailable; try again later."""


class ConflictError(NarcacheError):
    """ECONFLICT: conflicts with the current state."""


class NoSpaceError(NarcacheError):
    """ENOSPACE: not enough storage space."""


_BY_NAME = {
    "EINVAL": InvalidArgumentError, "ENOMEM": OutOfMemoryError, "EMISUSE": MisuseError,
    "EBUFS": BufferTooSmallError, "ELIMIT": LimitError, "EBADNAR": NarError,
    "EBADNARINFO": NarInfoError, "EBADKEY": KeyFormatError, "EBADSIG": SignatureError,
    "ENOTFOUND": NotFoundError, "ECOMPRESS": CompressionError, "ECANCELED": CanceledError,
    "EUSER": CallbackError, "EIO": NarcacheIOError, "ENOTSUP": NotSupportedError,
    "EBADHASH": HashFormatError, "EHASHALGO": HashFormatError, "EBADCHAR": HashFormatError,
    "EBADLENGTH": HashFormatError, "ENONCANONICAL": HashFormatError,
    "EBADSTOREPATH": StorePathError, "ECRYPTO": CryptoError, "EUNAVAIL": UnavailableError,
    "ECONFLICT": ConflictError, "ENOSPACE": NoSpaceError,
}


def error_class(code):
    """The exception class for a (negative) library error code."""
    return _BY_NAME.get(_lib.narcache_errname(code).decode(), NarcacheError)


def check(code, message=None, offset=None):
    """Return `code` if it is a success (>= 0), else raise its exception."""
    if code >= 0:
        return code
    raise error_class(code)(code, message or None, offset)


def _codes():
    codes, code = {}, -1
    while True:
        name = _lib.narcache_errname(code).decode()
        if name == "UNKNOWN":
            return codes
        codes[name] = code
        code -= 1


#: Every error code of the loaded library by name ({"EINVAL": -1, ...}).
CODES = _codes()
ENOTFOUND = CODES["ENOTFOUND"]
EUSER = CODES["EUSER"]
EINVAL = CODES["EINVAL"]
EBADSIG = CODES["EBADSIG"]
EBADNAR = CODES["EBADNAR"]
EIO = CODES["EIO"]
ENOTSUP = CODES["ENOTSUP"]


def check_object(code, ptr, errmsg, erroffset=None):
    """check() for a call on a C object that keeps its own error message
    (`errmsg(ptr)`) and, for parsers, the offset (`erroffset(ptr)`)."""
    if code >= 0:
        return code
    message = errmsg(ptr).decode(errors="replace") or None
    raise error_class(code)(code, message, None if erroffset is None else erroffset(ptr))
