"""ed25519 keys in Nix's format ("name:base64"), as written by
`nix-store --generate-binary-cache-key` and `nix key generate-secret`."""
import ctypes
import os

from . import _lib
from ._handle import Handle, Owner
from .errors import check

_FORMAT_MAX = 256 + 89


def _text_bytes(text):
    if isinstance(text, str):
        return text.encode()
    return bytes(text)


def _parse(parser, cls, text):
    data = _text_bytes(text)
    out = ctypes.c_void_p()
    where = ctypes.c_size_t(0)
    rc = parser(ctypes.byref(out), data, len(data), ctypes.byref(where))
    check(rc, None, where.value)
    return cls._wrap(out.value)


class _Key(Owner):
    __slots__ = ()

    @classmethod
    def _wrap(cls, ptr):
        self = cls.__new__(cls)
        self._handle = Handle(ptr, _lib.narcache_key_free)
        return self

    @property
    def name(self) -> str:
        """The key's name, the part before ':' ("cache.example.org-1")."""
        return _lib.narcache_key_name(self._handle.use(), None).decode()

    def _format(self) -> bytes:
        buf = ctypes.create_string_buffer(_FORMAT_MAX)
        n = ctypes.c_size_t(0)
        try:
            check(_lib.narcache_key_format(buf, _FORMAT_MAX, ctypes.byref(n),
                                           self._handle.use()))
            return buf.raw[:n.value]
        finally:
            ctypes.memset(buf, 0, _FORMAT_MAX)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check a detached 64-byte signature of `message`; raises
        SignatureError when it does not verify."""
        message, signature = bytes(message), bytes(signature)
        check(_lib.narcache_key_verify(self._handle.use(), signature, len(signature), message,
                                       len(message)))


class PublicKey(_Key):
    """A public key: what clients list in `trusted-public-keys`."""
    __slots__ = ()

    @classmethod
    def parse(cls, text) -> "PublicKey":
        """Parse "name:base64(32 bytes)"; raises KeyFormatError with the
        offset of the problem."""
        return _parse(_lib.narcache_key_parse_public, cls, _text_bytes(text).rstrip(b"\n"))

    def __str__(self):
        return self._format().decode()

    def __repr__(self):
        return "PublicKey(%r)" % str(self)

    def __eq__(self, other):
        return isinstance(other, PublicKey) and str(self) == str(other)

    def __hash__(self):
        return hash(str(self))


class SecretKey(_Key):
    """A secret signing key. Its bytes live in libsodium's guarded memory
    and are wiped when the object is closed or collected; str() and repr()
    never show them (use export())."""
    __slots__ = ()

    @classmethod
    def generate(cls, name: str) -> "SecretKey":
        """A new random key named `name` (printable ASCII, no ' ' or ':')."""
        data = name.encode()
        out = ctypes.c_void_p()
        check(_lib.narcache_key_generate(ctypes.byref(out), data, len(data)))
        return cls._wrap(out.value)

    @classmethod
    def parse(cls, text) -> "SecretKey":
        """Parse "name:base64(64 bytes)" (one trailing newline allowed)."""
        return _parse(_lib.narcache_key_parse_secret, cls, text)

    @classmethod
    def from_file(cls, path) -> "SecretKey":
        """Read a secret key file as Nix writes it."""
        with open(path, "rb") as f:
            data = bytearray(f.read(64 * 1024))
        try:
            return cls.parse(bytes(data))
        finally:
            data[:] = bytes(len(data))

    @property
    def public_key(self) -> PublicKey:
        """The matching public key."""
        out = ctypes.c_void_p()
        check(_lib.narcache_key_public(ctypes.byref(out), self._handle.use()))
        return PublicKey._wrap(out.value)

    def sign(self, message: bytes) -> bytes:
        """The detached 64-byte ed25519 signature of `message`."""
        message = bytes(message)
        size = _lib.narcache_key_signature_bytes()
        sig = ctypes.create_string_buffer(size)
        check(_lib.narcache_key_sign(sig, size, self._handle.use(), message, len(message)))
        return sig.raw

    def export(self) -> str:
        """The key in Nix's file format: secret material, handle with care."""
        return self._format().decode()

    def save(self, path, public_path=None) -> None:
        """Write the key file (mode 0600, refusing to replace a file), and
        optionally the public key next to it."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self._format())
        if public_path is not None:
            with open(public_path, "x") as f:
                f.write(str(self.public_key))

    def __repr__(self):
        return "<SecretKey %r>" % self.name

    __str__ = __repr__
