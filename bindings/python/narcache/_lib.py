"""Loading libnarcache and declaring every C function the package calls.

The library is found through $NARCACHE_LIBRARY (a path), then the system
loader (libnarcache.so.0). Its version must be within what this package
was written for: same major version, and at least the minor it needs.
All argtypes/restype declarations live here, so that a call with a wrong
type fails in Python instead of corrupting memory.
"""
import ctypes
import ctypes.util
import os

#: Versions of the C library this package works with.
SUPPORTED_MAJOR = 0
MIN_MINOR = 1

_SONAME = "libnarcache.so.0"


def _load():
    path = os.environ.get("NARCACHE_LIBRARY")
    candidates = [path] if path else [_SONAME, ctypes.util.find_library("narcache")]
    errors = []
    for name in candidates:
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            errors.append(str(e))
    raise ImportError("cannot load libnarcache (set NARCACHE_LIBRARY to its path): "
                      + "; ".join(errors or ["not found"]))


lib = _load()

c_int, c_uint, c_char_p, c_size_t, c_uint64 = (ctypes.c_int, ctypes.c_uint, ctypes.c_char_p,
                                               ctypes.c_size_t, ctypes.c_uint64)


class Hash(ctypes.Structure):
    """narcache_hash: algorithm, length and digest (up to 64 bytes)."""
    _fields_ = [("algo", ctypes.c_uint32), ("len", ctypes.c_uint32),
                ("digest", ctypes.c_uint8 * 64)]


def _declare(name, restype, *argtypes):
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


narcache_version = _declare("narcache_version", c_uint)
narcache_version_string = _declare("narcache_version_string", c_char_p)
narcache_strerror = _declare("narcache_strerror", c_char_p, c_int)
narcache_errname = _declare("narcache_errname", c_char_p, c_int)
narcache_nar_dump_path_to_fd = _declare("narcache_nar_dump_path_to_fd", c_int,
                                        ctypes.POINTER(c_uint64), c_char_p, c_int,
                                        c_char_p, c_size_t)
narcache_nar_hash_path = _declare("narcache_nar_hash_path", c_int, ctypes.POINTER(Hash),
                                  ctypes.POINTER(c_uint64), c_char_p, c_char_p, c_size_t)
narcache_hash_format = _declare("narcache_hash_format", c_int, c_char_p, c_size_t,
                                ctypes.POINTER(c_size_t), ctypes.POINTER(Hash), c_int, c_int)
narcache_hash_string_max = _declare("narcache_hash_string_max", c_size_t)

version = narcache_version()
version_string = narcache_version_string().decode()
if (version >> 16) != SUPPORTED_MAJOR or ((version >> 8) & 0xff) < MIN_MINOR:
    raise ImportError("libnarcache %s is not supported by this package (needs %d.%d or a later "
                      "%d.x)" % (version_string, SUPPORTED_MAJOR, MIN_MINOR, SUPPORTED_MAJOR))
