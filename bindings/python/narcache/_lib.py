"""Loading libnarcache and declaring every C function the package calls.

The library is found through $NARCACHE_LIBRARY (a path), then the system
loader (libnarcache.so.0), then the libdir pkg-config names for narcache
and /usr/local/lib (an install that ldconfig has not seen yet). Its version must be within what this package
was written for: same major version, and at least the minor it needs.
All argtypes/restype declarations live here, so that a call with a wrong
type fails in Python instead of corrupting memory. Opaque objects travel
as c_void_p; strings the library allocates come back as c_void_p too, so
that they can be copied and then released with narcache_free().
"""
import ctypes
import ctypes.util
import os
import subprocess
from ctypes import (POINTER, CFUNCTYPE, Structure, c_char_p, c_int, c_int32, c_int64,
                    c_size_t, c_uint, c_uint8, c_uint32, c_uint64, c_void_p)

#: Versions of the C library this package works with.
SUPPORTED_MAJOR = 0
MIN_MINOR = 1

_SONAME = "libnarcache.so.0"


def _pkg_config_libdir():
    """The libdir pkg-config knows for narcache: where `cmake --install`
    put it (/usr/local/lib is not in the loader's cache until ldconfig
    runs, but /usr/local/lib/pkgconfig is on pkg-config's default path)."""
    try:
        out = subprocess.run(["pkg-config", "--variable=libdir", "narcache"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    libdir = out.stdout.strip()
    return libdir if out.returncode == 0 and libdir else None


def _candidates():
    path = os.environ.get("NARCACHE_LIBRARY")
    if path:
        yield path
        return
    yield _SONAME
    yield ctypes.util.find_library("narcache")
    libdir = _pkg_config_libdir()
    if libdir:
        yield os.path.join(libdir, _SONAME)
    for libdir in ("/usr/local/lib", "/usr/local/lib64"):
        yield os.path.join(libdir, _SONAME)


def _load():
    candidates = _candidates()
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

# ---- structures with a frozen layout (common.h, hash.h, nar.h, store.h, server.h)


class Hash(Structure):
    """narcache_hash: algorithm, length and digest (up to 64 bytes)."""
    _fields_ = [("algo", c_uint32), ("len", c_uint32), ("digest", c_uint8 * 64)]


class InBuf(Structure):
    _fields_ = [("data", c_void_p), ("size", c_size_t), ("pos", c_size_t)]


class OutBuf(Structure):
    _fields_ = [("data", c_void_p), ("size", c_size_t), ("pos", c_size_t)]


NAR_EVENT_VERSION = 1


class NarEvent(Structure):
    _fields_ = [("version", c_uint32), ("type", c_uint32), ("depth", c_uint32),
                ("executable", c_uint32), ("name", c_void_p), ("name_len", c_size_t),
                ("data", c_void_p), ("len", c_size_t), ("size", c_uint64),
                ("offset", c_uint64)]


NIXSTORE_OPTIONS_VERSION = 1


class NixStoreOptions(Structure):
    _fields_ = [("version", c_uint32), ("store_dir", c_char_p), ("db_path", c_char_p),
                ("keys", POINTER(c_void_p)), ("n_keys", c_size_t), ("priority", c_int32),
                ("compression", c_int), ("level", c_int), ("log_dir", c_char_p)]


S3_OPTIONS_VERSION = 1


class S3Options(Structure):
    _fields_ = [("version", c_uint32), ("url", c_char_p), ("bucket", c_char_p),
                ("prefix", c_char_p), ("endpoint", c_char_p), ("region", c_char_p),
                ("addressing", c_int), ("access_key", c_char_p), ("secret_key", c_char_p),
                ("session_token", c_char_p), ("credentials_file", c_char_p),
                ("profile", c_char_p), ("flags", c_uint), ("connect_timeout_ms", c_uint32),
                ("request_timeout_ms", c_uint32), ("stall_timeout_ms", c_uint32),
                ("max_attempts", c_uint32), ("cache_ttl_ms", c_uint32),
                ("negative_ttl_ms", c_uint32), ("cache_entries", c_uint32),
                ("max_connections", c_uint32), ("multipart_threshold", c_uint64),
                ("part_size", c_uint64), ("redirect_endpoint", c_char_p),
                ("redirect_expires_s", c_uint32), ("ca_file", c_char_p),
                ("error", c_void_p), ("error_size", c_size_t)]


class LogField(Structure):
    _fields_ = [("key", c_char_p), ("value", c_char_p)]


class LogRecord(Structure):
    _fields_ = [("version", c_uint32), ("level", c_int), ("event", c_char_p),
                ("message", c_char_p), ("fields", POINTER(LogField)), ("n_fields", c_size_t)]


class AccessRecord(Structure):
    _fields_ = [("version", c_uint32), ("method", c_char_p), ("target", c_char_p),
                ("route", c_char_p), ("status", c_int), ("body_bytes", c_uint64),
                ("duration_us", c_uint64), ("peer", c_char_p), ("aborted", c_int)]


class AuthRequest(Structure):
    _fields_ = [("version", c_uint32), ("method", c_char_p), ("target", c_char_p),
                ("kind", c_int), ("credential", c_void_p), ("credential_len", c_size_t),
                ("peer", c_char_p)]


SERVER_HOOKS_VERSION = 2
ServerHook = CFUNCTYPE(None, c_void_p, c_void_p)
StatusHook = CFUNCTYPE(None, c_void_p, c_void_p, c_int, c_char_p)
LogHook = CFUNCTYPE(None, c_void_p, POINTER(LogRecord))
AccessHook = CFUNCTYPE(None, c_void_p, POINTER(AccessRecord))
AuthorizeHook = CFUNCTYPE(c_int, c_void_p, POINTER(AuthRequest))


class ServerHooks(Structure):
    _fields_ = [("version", c_uint32), ("listening", ServerHook), ("healthy", ServerHook),
                ("status", StatusHook), ("stopping", ServerHook), ("stopped", ServerHook),
                ("log", LogHook), ("access", AccessHook), ("authorize", AuthorizeHook)]


AT_FDCWD = -100

# ---- functions

P = c_void_p
PP = POINTER(c_void_p)
SIZEP = POINTER(c_size_t)
U64P = POINTER(c_uint64)
HASHP = POINTER(Hash)


def _declare(name, restype, *argtypes):
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    globals()[name] = fn


_SIGNATURES = [
    # common.h
    ("narcache_version", c_uint),
    ("narcache_version_string", c_char_p),
    ("narcache_strerror", c_char_p, c_int),
    ("narcache_errname", c_char_p, c_int),
    ("narcache_free", None, P),
    # hash.h
    ("narcache_hash_format", c_int, c_char_p, c_size_t, SIZEP, HASHP, c_int, c_int),
    ("narcache_hash_parse", c_int, HASHP, c_char_p, c_size_t, SIZEP),
    ("narcache_hash_string_max", c_size_t),
    ("narcache_hash_buffer", c_int, HASHP, c_int, c_char_p, c_size_t),
    ("narcache_hash_algo_from_name", c_int, c_char_p, c_size_t),
    ("narcache_hasher_new", c_int, PP, c_int),
    ("narcache_hasher_update", c_int, P, c_char_p, c_size_t),
    ("narcache_hasher_final", c_int, P, HASHP),
    ("narcache_hasher_free", None, P),
    # nar.h
    ("narcache_nar_parser_new", c_int, PP),
    ("narcache_nar_parser_next", c_int, P, POINTER(InBuf), POINTER(NarEvent)),
    ("narcache_nar_parser_finish", c_int, P),
    ("narcache_nar_parser_errmsg", c_char_p, P),
    ("narcache_nar_parser_erroffset", c_uint64, P),
    ("narcache_nar_parser_free", None, P),
    ("narcache_nar_dumper_new", c_int, PP),
    ("narcache_nar_dumper_open", c_int, P, c_int, c_char_p),
    ("narcache_nar_dumper_errmsg", c_char_p, P),
    ("narcache_nar_dumper_listing", c_int, PP, SIZEP, P),
    ("narcache_nar_dumper_free", None, P),
    ("narcache_nar_restorer_new", c_int, PP),
    ("narcache_nar_restorer_open", c_int, P, c_int, c_char_p),
    ("narcache_nar_restorer_write", c_int, P, POINTER(InBuf)),
    ("narcache_nar_restorer_finish", c_int, P),
    ("narcache_nar_restorer_errmsg", c_char_p, P),
    ("narcache_nar_restorer_free", None, P),
    ("narcache_nar_lister_new", c_int, PP),
    ("narcache_nar_lister_write", c_int, P, POINTER(InBuf)),
    ("narcache_nar_lister_finish", c_int, P, PP, SIZEP),
    ("narcache_nar_lister_errmsg", c_char_p, P),
    ("narcache_nar_lister_erroffset", c_uint64, P),
    ("narcache_nar_lister_free", None, P),
    ("narcache_nar_dump_path_to_fd", c_int, U64P, c_char_p, c_int, c_char_p, c_size_t),
    ("narcache_nar_hash_path", c_int, HASHP, U64P, c_char_p, c_char_p, c_size_t),
    # compress.h
    ("narcache_codec_from_name", c_int, c_char_p, c_size_t),
    ("narcache_codec_new_compressor", c_int, PP, c_int, c_int),
    ("narcache_codec_new_decompressor", c_int, PP, c_int),
    ("narcache_codec_set_max_output", c_int, P, c_uint64),
    ("narcache_codec_process", c_int, P, POINTER(OutBuf), POINTER(InBuf), c_int),
    ("narcache_codec_end", c_int, P),
    ("narcache_codec_errmsg", c_char_p, P),
    ("narcache_codec_free", None, P),
    # narinfo.h: keys
    ("narcache_key_signature_bytes", c_size_t),
    ("narcache_key_generate", c_int, PP, c_char_p, c_size_t),
    ("narcache_key_parse_secret", c_int, PP, c_char_p, c_size_t, SIZEP),
    ("narcache_key_parse_public", c_int, PP, c_char_p, c_size_t, SIZEP),
    ("narcache_key_public", c_int, PP, P),
    ("narcache_key_format", c_int, c_void_p, c_size_t, SIZEP, P),
    ("narcache_key_name", c_char_p, P, SIZEP),
    ("narcache_key_is_secret", c_int, P),
    ("narcache_key_sign", c_int, c_char_p, c_size_t, P, c_char_p, c_size_t),
    ("narcache_key_verify", c_int, P, c_char_p, c_size_t, c_char_p, c_size_t),
    ("narcache_key_free", None, P),
    # narinfo.h: narinfo
    ("narcache_narinfo_new", c_int, PP, c_char_p),
    ("narcache_narinfo_free", None, P),
    ("narcache_narinfo_parse", c_int, P, c_char_p, c_size_t),
    ("narcache_narinfo_errmsg", c_char_p, P),
    ("narcache_narinfo_err_offset", c_size_t, P),
    ("narcache_narinfo_format", c_int, PP, SIZEP, P),
    ("narcache_narinfo_fingerprint", c_int, PP, SIZEP, P),
    ("narcache_narinfo_store_dir", c_void_p, P, SIZEP),
    ("narcache_narinfo_store_path", c_void_p, P, SIZEP),
    ("narcache_narinfo_set_store_path", c_int, P, c_char_p, c_size_t),
    ("narcache_narinfo_url", c_void_p, P, SIZEP),
    ("narcache_narinfo_set_url", c_int, P, c_char_p, c_size_t),
    ("narcache_narinfo_compression", c_void_p, P, SIZEP),
    ("narcache_narinfo_set_compression", c_int, P, c_char_p, c_size_t),
    ("narcache_narinfo_file_hash", c_int, P, HASHP),
    ("narcache_narinfo_set_file_hash", c_int, P, HASHP),
    ("narcache_narinfo_file_size", c_int, P, U64P),
    ("narcache_narinfo_set_file_size", c_int, P, c_int, c_uint64),
    ("narcache_narinfo_nar_hash", c_int, P, HASHP),
    ("narcache_narinfo_set_nar_hash", c_int, P, HASHP),
    ("narcache_narinfo_nar_size", c_uint64, P),
    ("narcache_narinfo_set_nar_size", c_int, P, c_uint64),
    ("narcache_narinfo_reference_count", c_size_t, P),
    ("narcache_narinfo_reference", c_void_p, P, c_size_t, SIZEP),
    ("narcache_narinfo_add_reference", c_int, P, c_char_p, c_size_t),
    ("narcache_narinfo_clear_references", None, P),
    ("narcache_narinfo_deriver", c_void_p, P, SIZEP),
    ("narcache_narinfo_set_deriver", c_int, P, c_char_p, c_size_t),
    ("narcache_narinfo_system", c_void_p, P, SIZEP),
    ("narcache_narinfo_set_system", c_int, P, c_char_p, c_size_t),
    ("narcache_narinfo_ca", c_void_p, P, SIZEP),
    ("narcache_narinfo_set_ca", c_int, P, c_char_p, c_size_t),
    ("narcache_narinfo_sig_count", c_size_t, P),
    ("narcache_narinfo_sig", c_void_p, P, c_size_t, SIZEP),
    ("narcache_narinfo_add_sig", c_int, P, c_char_p, c_size_t),
    ("narcache_narinfo_clear_sigs", None, P),
    ("narcache_narinfo_sign", c_int, P, P),
    ("narcache_narinfo_verify", c_int, PP, P, PP, c_size_t),
    # auth.h
    ("narcache_tokens_parse", c_int, PP, c_char_p, c_size_t, c_char_p, c_size_t),
    ("narcache_tokens_count", c_size_t, P),
    ("narcache_tokens_free", None, P),
    # store.h
    ("narcache_store_dir_new", c_int, PP, c_char_p, c_uint),
    ("narcache_store_dir_set_min_free", c_int, P, c_uint64),
    ("narcache_store_nixstore_new", c_int, PP, POINTER(NixStoreOptions)),
    ("narcache_store_s3_new", c_int, PP, POINTER(S3Options)),
    ("narcache_store_s3_check", c_int, P, c_char_p, c_size_t),
    ("narcache_store_probe", c_int, P),
    ("narcache_store_free", None, P),
    # server.h
    ("narcache_server_new", c_int, PP, c_void_p, P),
    ("narcache_server_set_hooks", c_int, P, POINTER(ServerHooks), c_void_p),
    ("narcache_server_set_option", c_int, P, c_int, c_int64),
    ("narcache_server_get_option", c_int, P, c_int, POINTER(c_int64)),
    ("narcache_server_set_tokens", c_int, P, P),
    ("narcache_server_set_upload_keys", c_int, P, PP, c_size_t, P),
    ("narcache_server_listen", c_int, P, c_char_p, c_uint),
    ("narcache_server_listener_count", c_size_t, P),
    ("narcache_server_address", c_int, P, c_size_t, c_char_p, c_size_t),
    ("narcache_server_port", c_int, P, c_size_t),
    ("narcache_server_start", c_int, P),
    ("narcache_server_run", c_int, P),
    ("narcache_server_stop", c_int, P),
    ("narcache_server_free", None, P),
    ("narcache_server_is_healthy", c_int, P),
]

for _signature in _SIGNATURES:
    _declare(*_signature)
del _signature

version = narcache_version()  # noqa: F821 -- declared above through globals()
version_string = narcache_version_string().decode()  # noqa: F821
if (version >> 16) != SUPPORTED_MAJOR or ((version >> 8) & 0xff) < MIN_MINOR:
    raise ImportError("libnarcache %s is not supported by this package (needs %d.%d or a later "
                      "%d.x)" % (version_string, SUPPORTED_MAJOR, MIN_MINOR, SUPPORTED_MAJOR))


def take_string(ptr, length):
    """Copy a string the library allocated (char **out) and free it."""
    try:
        return ctypes.string_at(ptr, length)
    finally:
        narcache_free(ptr)  # noqa: F821


def borrowed(ptr, length):
    """Copy a borrowed (pointer, length) string, or None for NULL."""
    return None if not ptr else ctypes.string_at(ptr, length)


def in_buffer(data: bytes) -> InBuf:
    """An input cursor over `data` (bytes; the caller keeps it alive)."""
    return InBuf(ctypes.cast(ctypes.c_char_p(data), c_void_p), len(data), 0)


def out_buffer(buf) -> OutBuf:
    """An output cursor over a ctypes char array."""
    return OutBuf(ctypes.cast(buf, c_void_p), len(buf), 0)


def in_range(value, what, bits=64, signed=False):
    """`value` as an int if it fits the C integer type, else OverflowError:
    ctypes would silently wrap it (a size of -1 would become 2**64 - 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        value = int(value.__index__()) if hasattr(value, "__index__") else value
        if not isinstance(value, int):
            raise TypeError("%s must be an integer" % what)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise OverflowError("%s=%d is out of range (%d..%d)" % (what, value, low, high))
    return value
