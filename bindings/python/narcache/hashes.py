"""Hash strings as Nix writes them ("sha256:<nix32>") and reads them (any
of base16, nix32, base64 after "algo:", or SRI "algo-base64")."""
import ctypes

from . import _lib
from ._handle import create
from .errors import check

NIX32 = 2


def parse(text: str) -> _lib.Hash:
    """A narcache_hash from any spelling Nix accepts; raises HashFormatError
    with the offset of the problem."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    h = _lib.Hash()
    where = ctypes.c_size_t(0)
    check(_lib.narcache_hash_parse(ctypes.byref(h), data, len(data), ctypes.byref(where)), None,
          where.value)
    return h


def format(h: _lib.Hash) -> str:  # noqa: A001 -- mirrors the C name
    """`h` as "<algo>:<nix32>", the form narinfo files use."""
    size = _lib.narcache_hash_string_max()
    text = ctypes.create_string_buffer(size)
    n = ctypes.c_size_t(0)
    check(_lib.narcache_hash_format(text, size, ctypes.byref(n), ctypes.byref(h), NIX32, 1))
    return text.raw[:n.value].decode()


def normalize(text: str) -> str:
    """Any accepted spelling of a hash, rewritten as "<algo>:<nix32>"."""
    return format(parse(text))


def _algo(name: str) -> int:
    data = name.encode()
    return check(_lib.narcache_hash_algo_from_name(data, len(data)))


def of_bytes(data: bytes, algo: str = "sha256") -> str:
    """The hash of `data` as "<algo>:<nix32>" (a narinfo FileHash)."""
    data = bytes(data)
    h = _lib.Hash()
    check(_lib.narcache_hash_buffer(ctypes.byref(h), _algo(algo), data, len(data)))
    return format(h)


def of_file(path, algo: str = "sha256") -> str:
    """The hash of the file at `path` as "<algo>:<nix32>", read in pieces."""
    hasher = create(_lib.narcache_hasher_new, _lib.narcache_hasher_free, _algo(algo))
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                check(_lib.narcache_hasher_update(hasher.use(), chunk, len(chunk)))
        h = _lib.Hash()
        check(_lib.narcache_hasher_final(hasher.use(), ctypes.byref(h)))
        return format(h)
    finally:
        hasher.release()
