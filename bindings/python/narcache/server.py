"""An embeddable Nix binary-cache server running in a background thread.

    with narcache.Server("/srv/cache", listen=["127.0.0.1:0"]) as server:
        print(server.url)        # http://127.0.0.1:PORT
        ...                      # nix copy --from server.url ...

The server runs its own libuv loop in a daemon thread; Python hooks run
on that thread. A hook that raises stops the server, and stop() (or
leaving the `with` block) raises the exception in the caller's thread.
"""
import atexit
import ctypes
import logging
import os
import threading
import weakref
from collections import namedtuple
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

from . import _lib
from ._handle import Handle
from .errors import check
from .keys import PublicKey, SecretKey
from .store import DirStore, NixStore, Store, Tokens

#: Numeric options (server.h, NARCACHE_OPT_*) by their lower-case names.
OPTIONS = {
    "max_connections": 1, "header_timeout_ms": 2, "idle_timeout_ms": 3, "body_stall_ms": 4,
    "min_body_rate": 5, "max_head_bytes": 6, "max_headers": 7, "max_target_bytes": 8,
    "max_upload_bytes": 9, "priority": 10, "want_mass_query": 11, "probe_interval_ms": 12,
    "probe_timeout_ms": 13, "stop_timeout_ms": 14, "narinfo_max_age": 15, "retry_after": 16,
    "memory_cache_ms": 17, "memory_cache_bytes": 18, "max_uploads": 19, "private": 20,
    "allow_overwrite": 21, "store_timeout_ms": 22,
}

#: Scopes an authorize hook returns.
SCOPES = {None: 0, False: 0, "none": 0, "read": 1, "write": 2}

LogRecord = namedtuple("LogRecord", "level event message fields")
AccessRecord = namedtuple("AccessRecord",
                          "method target route status body_bytes duration_us peer aborted")
AuthRequest = namedtuple("AuthRequest", "method target kind credential peer")

_LOG_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
_logger = logging.getLogger("narcache.server")


def _text(value):
    return None if value is None else value.decode(errors="replace")


def _default_log(record: LogRecord):
    fields = " ".join("%s=%s" % kv for kv in record.fields.items())
    _logger.log(_LOG_LEVELS.get(record.level, logging.INFO), "%s %s%s", record.event,
                record.message, " " + fields if fields else "")


class _UserHooks:
    """The Python hooks. Owned by the Server; the loop thread sees them
    only through a weak reference, so that a hook referring to its own
    Server (a cycle) does not keep an unreachable server running."""
    __slots__ = ("log", "access", "authorize", "__weakref__")

    def __init__(self, log, access, authorize):
        self.log, self.access, self.authorize = log or _default_log, access, authorize


class _Running:
    """What the loop thread uses: the C server and its hook trampolines.
    It refers neither to the Server object nor (strongly) to the Python
    hooks, so dropping the last reference to a Server stops it even while
    it runs."""

    def __init__(self, user_hooks):
        self.handle = None
        self.error = None
        self.error_lock = threading.Lock()
        self.healthy = threading.Event()
        self.done = threading.Event()
        self.status = ""
        self.user = weakref.ref(user_hooks)
        access, authorize = user_hooks.access, user_hooks.authorize
        # The C trampolines must live as long as the C server may call
        # them: this object is what the loop thread holds on to.
        self.trampolines = (
            _lib.ServerHook(self._on_healthy), _lib.StatusHook(self._on_status),
            _lib.LogHook(self._on_log),
            _lib.AccessHook(self._on_access) if access else _lib.AccessHook(),
            _lib.AuthorizeHook(self._on_authorize) if authorize else _lib.AuthorizeHook())
        healthy, status, log_hook, access_hook, authorize_hook = self.trampolines
        self.hooks = _lib.ServerHooks(version=_lib.SERVER_HOOKS_VERSION, healthy=healthy,
                                      status=status, log=log_hook, access=access_hook,
                                      authorize=authorize_hook)

    def fail(self, exc):
        """A hook raised: keep the first exception and stop the server."""
        with self.error_lock:
            if self.error is None:
                self.error = exc
        if self.handle is not None and self.handle.ptr is not None:
            _lib.narcache_server_stop(self.handle.ptr)

    def _on_healthy(self, _userdata, _server):
        self.healthy.set()

    def _on_status(self, _userdata, _server, healthy, text):
        self.status = _text(text) or ""
        if not healthy:
            self.healthy.clear()

    def _on_log(self, _userdata, record_ptr):
        try:
            r = record_ptr.contents
            fields = {_text(r.fields[i].key): _text(r.fields[i].value) for i in range(r.n_fields)}
            hooks = self.user()
            if hooks is None:  # the Server is gone; the loop is winding down
                return
            hooks.log(LogRecord(r.level, _text(r.event), _text(r.message), fields))
        except BaseException as e:  # noqa: B902 -- re-raised by stop()
            self.fail(e)

    def _on_access(self, _userdata, record_ptr):
        try:
            r = record_ptr.contents
            hooks = self.user()
            if hooks is None:
                return
            hooks.access(AccessRecord(_text(r.method), _text(r.target), _text(r.route), r.status,
                                      r.body_bytes, r.duration_us, _text(r.peer),
                                      bool(r.aborted)))
        except BaseException as e:  # noqa: B902
            self.fail(e)

    def _on_authorize(self, _userdata, request_ptr):
        try:
            r = request_ptr.contents
            credential = (None if not r.credential else
                          ctypes.string_at(r.credential, r.credential_len).decode(
                              errors="replace"))
            hooks = self.user()
            if hooks is None:
                return 0
            scope = hooks.authorize(AuthRequest(_text(r.method), _text(r.target), r.kind,
                                             credential, _text(r.peer)))
            if scope in (0, 1, 2):
                return int(scope)
            if scope in SCOPES:
                return SCOPES[scope]
            raise ValueError("authorize hook returned %r (use None, 'read' or 'write')" % scope)
        except BaseException as e:  # noqa: B902
            self.fail(e)
            return 0

    def run(self):
        try:
            _lib.narcache_server_run(self.handle.ptr)
        finally:
            self.done.set()
            self.healthy.clear()
            self.handle.drop()  # the use start() took for this thread


_running_servers = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit():
    # Stop servers still running when the interpreter exits, before the
    # stores they read from are finalized under them.
    for server in list(_running_servers):
        try:
            server.stop(timeout=10, raise_hook_errors=False)
        except Exception:  # noqa: BLE001 -- exiting anyway
            pass


class Server:
    """A Nix binary-cache HTTP server on `store`.

    store: a Store (DirStore, NixStore), a cache directory path, or "nix"
        for the local Nix store (signed with `keys`).
    listen: addresses: "HOST:PORT" (port 0 picks a free one), "[V6]:PORT",
        "unix:PATH".
    keys: SecretKeys the server signs with: every narinfo of the local Nix
        store, and narinfo uploads that arrive without a trusted signature
        (first key).
    trusted_keys: PublicKeys whose signatures make an uploaded narinfo
        acceptable as it is.
    tokens: a Tokens table (or its text) deciding who may upload, and who
        may read when options["private"] is 1.
    options: {name: value} from OPTIONS, e.g. {"max_upload_bytes": 1 << 30}
        (uploads are off unless it is set).
    log, access, authorize: hooks, called on the server thread. log gets a
        LogRecord (default: the "narcache.server" logger), access an
        AccessRecord per request, authorize an AuthRequest and returns
        None, "read" or "write" (replacing the token table).
    """

    def __init__(self, store: Union[Store, str, os.PathLike], listen: Sequence[str] = ("127.0.0.1:0",),
                 keys: Iterable[SecretKey] = (), trusted_keys: Iterable[PublicKey] = (),
                 tokens: Union[Tokens, str, None] = None,
                 options: Optional[Mapping[str, int]] = None,
                 log: Optional[Callable[[LogRecord], None]] = None,
                 access: Optional[Callable[[AccessRecord], None]] = None,
                 authorize: Optional[Callable[[AuthRequest], Optional[str]]] = None):
        self._options = dict(options or {})
        for name in self._options:
            if name not in OPTIONS:
                raise ValueError("unknown server option %r (see narcache.server.OPTIONS)" % name)
        self._keys = list(keys)
        self._trusted = list(trusted_keys)
        if any(not isinstance(k, SecretKey) for k in self._keys):
            raise TypeError("keys are SecretKey objects")
        if any(not isinstance(k, PublicKey) for k in self._trusted):
            raise TypeError("trusted_keys are PublicKey objects")
        if isinstance(store, (str, os.PathLike)):
            if store == "nix":
                store = NixStore(keys=self._keys)
            else:
                store = DirStore(store, writable=self._options.get("max_upload_bytes", 0) > 0)
        if not isinstance(store, Store):
            raise TypeError("store is a Store, a cache directory or \"nix\"")
        self.store = store
        self._tokens = Tokens(tokens) if isinstance(tokens, (str, bytes)) else tokens
        self._listen = list(listen)
        if not self._listen:
            raise ValueError("a server needs at least one address to listen on")
        self._hooks = _UserHooks(log, access, authorize)
        self._running = _Running(self._hooks)
        self._thread = None
        self._addresses = []
        self._port = 0

    # ---- lifecycle

    def start(self) -> "Server":
        """Bind, start accepting, and run the loop in a background thread.
        When it returns the listeners accept connections (port known)."""
        if self._running.handle is not None:
            raise RuntimeError("a Server starts once; create a new one")
        out = ctypes.c_void_p()
        check(_lib.narcache_server_new(ctypes.byref(out), None, self.store._handle.use()))
        borrowed = [self.store._handle] + [k._handle for k in self._keys + self._trusted]
        if self._tokens is not None:
            borrowed.append(self._tokens._handle)
        handle = Handle(out.value, _lib.narcache_server_free, borrowed)
        self._running.handle = handle
        try:
            self._configure(handle.ptr)
            check(_lib.narcache_server_start(handle.ptr))
            self._read_addresses(handle.ptr)
        except BaseException:
            handle.release()
            raise
        handle.acquire()  # released by the thread when the loop ends
        self._thread = threading.Thread(target=self._running.run, name="narcache-server",
                                        daemon=True)
        self._thread.start()
        _running_servers.add(self)
        return self

    def _configure(self, ptr):
        check(_lib.narcache_server_set_hooks(ptr, ctypes.byref(self._running.hooks), None))
        for name, value in self._options.items():
            value = _lib.in_range(value, name, 64, signed=True)
            check(_lib.narcache_server_set_option(ptr, OPTIONS[name], value),
                  "option %s=%r refused" % (name, value))
        if self._tokens is not None:
            check(_lib.narcache_server_set_tokens(ptr, self._tokens._handle.use()))
        if self._trusted or (self._keys and not isinstance(self.store, NixStore)):
            trusted = (ctypes.c_void_p * max(1, len(self._trusted)))(
                *[k._handle.use() for k in self._trusted])
            signing = self._keys[0]._handle.use() if self._keys else None
            check(_lib.narcache_server_set_upload_keys(ptr, trusted, len(self._trusted),
                                                       signing))
        for address in self._listen:
            check(_lib.narcache_server_listen(ptr, address.encode(), 0),
                  "cannot listen on %s" % address)

    def _read_addresses(self, ptr):
        buf = ctypes.create_string_buffer(512)
        for i in range(_lib.narcache_server_listener_count(ptr)):
            check(_lib.narcache_server_address(ptr, i, buf, len(buf)))
            self._addresses.append(buf.value.decode())
        self._port = _lib.narcache_server_port(ptr, 0)

    def stop(self, timeout: Optional[float] = 30, raise_hook_errors: bool = True) -> None:
        """Stop gracefully (responses in flight finish) and wait for the
        thread. Raises TimeoutError if it has not ended within `timeout`
        seconds, and then the first exception a hook raised, if any. From
        a hook (on the server's thread) it only asks for the stop."""
        handle = self._running.handle
        if handle is None:
            return
        if handle.ptr is not None and not self._running.done.is_set():
            _lib.narcache_server_stop(handle.ptr)
        if threading.current_thread() is self._thread:
            return  # called from a hook: the loop ends after it returns
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("the server did not stop within %s s" % timeout)
        handle.release()
        _running_servers.discard(self)
        error, self._running.error = self._running.error, None
        if error is not None and raise_hook_errors:
            raise error

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the server has stopped (by stop() from another
        thread, or a hook that raised); True if it has."""
        return self._running.done.wait(timeout)

    def wait_healthy(self, timeout: float = 10) -> bool:
        """Block until a health probe passed (the store answers and the
        loop turns); False on timeout."""
        return self._running.healthy.wait(timeout)

    def __enter__(self):
        if self._running.handle is None:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop(raise_hook_errors=exc_type is None)
        return False

    def __del__(self):
        running = getattr(self, "_running", None)
        handle = running.handle if running is not None else None
        if handle is not None:
            if handle.ptr is not None and not running.done.is_set():
                _lib.narcache_server_stop(handle.ptr)  # the thread frees it when it ends
            handle.release()

    # ---- introspection

    @property
    def running(self) -> bool:
        """True between start() and the end of the loop."""
        return self._thread is not None and not self._running.done.is_set()

    @property
    def healthy(self) -> bool:
        """True while the last health probe passed."""
        return self._running.healthy.is_set()

    @property
    def status(self) -> str:
        """The one-line status of the last health probe."""
        return self._running.status

    @property
    def addresses(self) -> list:
        """Local addresses: "ADDR:PORT", "[V6]:PORT" or "unix:PATH" (known
        from start() on, kept after stop)."""
        return list(self._addresses)

    @property
    def port(self) -> int:
        """The TCP port of the first listener (0 for a unix socket)."""
        if self._running.handle is None:
            raise RuntimeError("the server has not started")
        return self._port

    @property
    def url(self) -> str:
        """http://ADDR:PORT of the first listener, for Nix's substituters."""
        address = self.addresses[0]
        if address.startswith("unix:"):
            raise ValueError("the first listener is a unix socket")
        return "http://" + address
