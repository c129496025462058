"""Ownership of C objects by Python objects.

A Handle owns one C object and frees it exactly once. Its users are the
Python object that created it plus every Handle that borrows it (a server
borrows its store and keys): the C object is freed only when the owner
has let go *and* no borrower is left. So whatever order the garbage
collector runs finalizers in -- a reference cycle gives no order at all --
a parent is never freed before a child that points into it.
"""
import ctypes
import threading

from .errors import check


class Handle:
    __slots__ = ("ptr", "_free", "_borrowed", "_users", "_released", "__weakref__")
    # A class attribute, not a module global: finalizers may run while the
    # interpreter shuts down and module globals are being cleared.
    _lock = threading.Lock()

    def __init__(self, ptr, free, borrowed=()):
        if not ptr:
            raise ValueError("NULL object")
        self.ptr = ptr
        self._free = free
        self._borrowed = tuple(borrowed)
        self._users = 1
        self._released = False
        with self._lock:
            for parent in self._borrowed:
                parent._users += 1

    def use(self):
        """The C object, or ValueError once it was closed."""
        ptr = self.ptr
        if ptr is None:
            raise ValueError("operation on a closed object")
        return ptr

    def acquire(self):
        """Take one more use (e.g. a thread running on the object)."""
        with self._lock:
            if self.ptr is None:
                raise ValueError("operation on a closed object")
            self._users += 1

    def release(self):
        """The owner lets go (close() or garbage collection). Idempotent."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self.drop()

    def drop(self):
        """One use ends; the last one frees the C object, then lets go of
        what it borrowed."""
        with self._lock:
            self._users -= 1
            if self._users > 0 or self.ptr is None:
                return
            ptr, self.ptr = self.ptr, None
        self._free(ptr)
        for parent in self._borrowed:
            parent.drop()

    def __del__(self):
        self.release()


class Owner:
    """Base of the Python classes that wrap one C object (self._handle)."""
    __slots__ = ("_handle", "__weakref__")

    def close(self):
        """Free the C object now rather than at garbage collection. The
        object is unusable afterwards; calling close() again is harmless."""
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        self.close()


def create(constructor, free, *args):
    """Call a C constructor `narcache_x_new(&out, *args)` and own the object."""
    out = ctypes.c_void_p()
    check(constructor(ctypes.byref(out), *args))
    return Handle(out.value, free)
