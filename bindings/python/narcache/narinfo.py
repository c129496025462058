"""narinfo files: parse, build, format, fingerprint, sign and verify."""
import ctypes
from typing import Iterable, Optional, Sequence

from . import _lib, hashes
from ._handle import Handle, Owner
from .errors import CODES, ENOTFOUND as _NOT_FOUND, check, error_class
from .keys import PublicKey, SecretKey


def _encode(value):
    return value.encode() if isinstance(value, str) else bytes(value)


def _string_field(getter):
    def get(self):
        n = ctypes.c_size_t(0)
        ptr = getter(self._handle.use(), ctypes.byref(n))
        value = _lib.borrowed(ptr, n.value)
        return None if value is None else value.decode()
    return get


def _optional_setter(setter):
    def set_(self, value):
        if value is None:
            self._check(setter(self._handle.use(), None, 0))
        else:
            data = _encode(value)
            self._check(setter(self._handle.use(), data, len(data)))
    return set_


_BAD_NARINFO = CODES["EBADNARINFO"]


class NarInfo(Owner):
    """What a binary cache says about one store path.

    Build one with keyword arguments, or read one with NarInfo.parse();
    str() renders it as Nix writes it. Hashes read back as
    "sha256:<nix32>" whatever spelling they were given in. Like the C
    object, an instance must not be used by two threads at once.
    """
    __slots__ = ()

    def __init__(self, store_path: Optional[str] = None, url: Optional[str] = None,
                 nar_hash: Optional[str] = None, nar_size: Optional[int] = None, *,
                 compression: Optional[str] = None, file_hash: Optional[str] = None,
                 file_size: Optional[int] = None, references: Iterable[str] = (),
                 deriver: Optional[str] = None, system: Optional[str] = None,
                 ca: Optional[str] = None, sigs: Iterable[str] = (),
                 store_dir: Optional[str] = None):
        out = ctypes.c_void_p()
        check(_lib.narcache_narinfo_new(ctypes.byref(out),
                                        None if store_dir is None else _encode(store_dir)))
        self._handle = Handle(out.value, _lib.narcache_narinfo_free)
        fields = dict(store_path=store_path, url=url, nar_hash=nar_hash, nar_size=nar_size,
                      compression=compression, file_hash=file_hash, file_size=file_size,
                      deriver=deriver, system=system, ca=ca)
        for name, value in fields.items():
            if value is not None:
                setattr(self, name, value)
        if references:
            self.references = references
        if sigs:
            self.sigs = sigs

    @classmethod
    def parse(cls, text, store_dir: Optional[str] = None) -> "NarInfo":
        """Read a narinfo (str or bytes). Raises NarInfoError naming line,
        column and field, with the byte offset in `.offset`."""
        self = cls(store_dir=store_dir)
        data = _encode(text)
        ptr = self._handle.use()
        rc = _lib.narcache_narinfo_parse(ptr, data, len(data))
        if rc < 0:
            raise error_class(rc)(rc, _lib.narcache_narinfo_errmsg(ptr).decode(errors="replace"),
                                  _lib.narcache_narinfo_err_offset(ptr))
        return self

    def _check(self, rc):
        if rc < 0:
            # The object's message describes EBADNARINFO failures only; for
            # other codes it may still hold an earlier failure's text.
            message = None
            if rc == _BAD_NARINFO:
                message = _lib.narcache_narinfo_errmsg(self._handle.use()).decode(
                    errors="replace")
            raise error_class(rc)(rc, message)
        return rc

    def _take(self, fn) -> str:
        out, n = ctypes.c_void_p(), ctypes.c_size_t(0)
        self._check(fn(ctypes.byref(out), ctypes.byref(n), self._handle.use()))
        return _lib.take_string(out.value, n.value).decode()

    def __str__(self):
        return self._take(_lib.narcache_narinfo_format)

    def __bytes__(self):
        return str(self).encode()

    def __repr__(self):
        return "<NarInfo %s>" % (self.store_path,)

    def __eq__(self, other):
        return isinstance(other, NarInfo) and str(self) == str(other)

    __hash__ = None

    def fingerprint(self) -> str:
        """The statement signatures cover: "1;<path>;<NarHash>;<NarSize>;<refs>"."""
        return self._take(_lib.narcache_narinfo_fingerprint)

    def sign(self, key: SecretKey) -> str:
        """Sign with `key`, replacing that key's earlier signature; returns
        the new Sig entry."""
        if not isinstance(key, SecretKey):
            raise TypeError("sign() needs a SecretKey")
        self._check(_lib.narcache_narinfo_sign(self._handle.use(), key._handle.use()))
        name = key.name + ":"
        return next(s for s in self.sigs if s.startswith(name))

    def verify(self, trusted_keys: Sequence[PublicKey]) -> PublicKey:
        """Check the signatures as Nix does and return the trusted key that
        verified. Raises NotFoundError when no trusted key signed,
        SignatureError when a trusted key's signature is wrong."""
        keys = list(trusted_keys)
        for k in keys:
            if not isinstance(k, PublicKey):
                raise TypeError("trusted keys must be PublicKey objects")
        array = (ctypes.c_void_p * max(1, len(keys)))(*[k._handle.use() for k in keys])
        which = ctypes.c_void_p()
        rc = _lib.narcache_narinfo_verify(ctypes.byref(which), self._handle.use(), array,
                                          len(keys))
        culprit = next((k for k in keys if which.value and k._handle.ptr == which.value), None)
        if rc < 0:
            message = None
            if culprit is not None:
                message = "the signature by trusted key %s does not verify" % culprit.name
            elif rc == _NOT_FOUND:
                message = "no signature by a trusted key"
            raise error_class(rc)(rc, message)
        return culprit

    # ---- fields

    store_dir = property(_string_field(_lib.narcache_narinfo_store_dir),
                         doc="Store directory the paths live in.")
    store_path = property(_string_field(_lib.narcache_narinfo_store_path),
                          _optional_setter(_lib.narcache_narinfo_set_store_path),
                          doc="StorePath: the full store path.")
    url = property(_string_field(_lib.narcache_narinfo_url),
                   _optional_setter(_lib.narcache_narinfo_set_url),
                   doc="URL of the (compressed) NAR, relative to the cache.")
    compression = property(_string_field(_lib.narcache_narinfo_compression),
                           _optional_setter(_lib.narcache_narinfo_set_compression),
                           doc='Compression of the file at URL ("bzip2" when unnamed).')
    deriver = property(_string_field(_lib.narcache_narinfo_deriver),
                       _optional_setter(_lib.narcache_narinfo_set_deriver),
                       doc='Deriver base name ("<hash>-<name>.drv") or None.')
    system = property(_string_field(_lib.narcache_narinfo_system),
                      _optional_setter(_lib.narcache_narinfo_set_system), doc="System or None.")
    ca = property(_string_field(_lib.narcache_narinfo_ca),
                  _optional_setter(_lib.narcache_narinfo_set_ca),
                  doc="Content address in Nix's rendering, or None.")

    @property
    def nar_hash(self) -> Optional[str]:
        """NarHash as "sha256:<nix32>", or None when not set."""
        h = _lib.Hash()
        rc = _lib.narcache_narinfo_nar_hash(self._handle.use(), ctypes.byref(h))
        return None if rc == _NOT_FOUND else hashes.format(h)

    @nar_hash.setter
    def nar_hash(self, value: str):
        h = hashes.parse(value)
        self._check(_lib.narcache_narinfo_set_nar_hash(self._handle.use(), ctypes.byref(h)))

    @property
    def file_hash(self) -> Optional[str]:
        """FileHash as "<algo>:<nix32>", or None."""
        h = _lib.Hash()
        rc = _lib.narcache_narinfo_file_hash(self._handle.use(), ctypes.byref(h))
        return None if rc == _NOT_FOUND else hashes.format(h)

    @file_hash.setter
    def file_hash(self, value: Optional[str]):
        ptr = None if value is None else ctypes.byref(hashes.parse(value))
        self._check(_lib.narcache_narinfo_set_file_hash(self._handle.use(), ptr))

    @property
    def nar_size(self) -> Optional[int]:
        """NarSize, or None when not set."""
        return _lib.narcache_narinfo_nar_size(self._handle.use()) or None

    @nar_size.setter
    def nar_size(self, value: int):
        size = _lib.in_range(value, "nar_size")
        self._check(_lib.narcache_narinfo_set_nar_size(self._handle.use(), size))

    @property
    def file_size(self) -> Optional[int]:
        """FileSize, or None."""
        n = ctypes.c_uint64(0)
        rc = _lib.narcache_narinfo_file_size(self._handle.use(), ctypes.byref(n))
        return None if rc == _NOT_FOUND else n.value

    @file_size.setter
    def file_size(self, value: Optional[int]):
        present = value is not None
        size = _lib.in_range(value, "file_size") if present else 0
        self._check(_lib.narcache_narinfo_set_file_size(self._handle.use(), int(present), size))

    def _list(self, count, item):
        ptr = self._handle.use()
        n = ctypes.c_size_t(0)
        result = []
        for i in range(count(ptr)):
            result.append(_lib.borrowed(item(ptr, i, ctypes.byref(n)), n.value).decode())
        return tuple(result)

    @property
    def references(self) -> tuple:
        """References as sorted base names ("<hash>-<name>")."""
        return self._list(_lib.narcache_narinfo_reference_count, _lib.narcache_narinfo_reference)

    @references.setter
    def references(self, values: Iterable[str]):
        self._replace(values, _lib.narcache_narinfo_clear_references,
                      _lib.narcache_narinfo_add_reference, "references")

    @property
    def sigs(self) -> tuple:
        """Sig entries ("name:base64"), sorted."""
        return self._list(_lib.narcache_narinfo_sig_count, _lib.narcache_narinfo_sig)

    @sigs.setter
    def sigs(self, values: Iterable[str]):
        self._replace(values, _lib.narcache_narinfo_clear_sigs, _lib.narcache_narinfo_add_sig,
                      "sigs")

    def _replace(self, values, clear, add, field):
        if isinstance(values, (str, bytes)):
            raise TypeError("%s must be an iterable of strings, not one string" % field)
        encoded = [_encode(v) for v in values]
        previous = getattr(self, field)
        ptr = self._handle.use()
        clear(ptr)
        try:
            for v in encoded:
                self._check(add(ptr, v, len(v)))
        except BaseException:
            clear(ptr)  # all or nothing, as the C setters
            for v in previous:
                add(ptr, v.encode(), len(v.encode()))
            raise


