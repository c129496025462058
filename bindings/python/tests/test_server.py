"""narcache.Server from Python: serving a cache written by Nix, hooks
(and hooks that raise), uploads through tokens and the authorize hook,
and object lifetimes: a server dropped while running, stores and keys
dropped before the server, reference cycles."""
import gc
import http.client
import shutil
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

import pytest

import narcache

DATA = Path(__file__).resolve().parents[3] / "tests" / "data" / "narinfo"
CACHE = DATA / "caches" / "none"
F1 = "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0"


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def put(server, target, body, token=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Content-Length": str(len(body))}
    if token:
        headers["Authorization"] = "Bearer " + token
    conn.request("PUT", target, body=body, headers=headers)
    response = conn.getresponse()
    status, data = response.status, response.read()
    conn.close()
    return status, data


def refused(port):
    """True once nothing accepts on 127.0.0.1:port."""
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except OSError:
        return True


def test_serves_a_cache_written_by_nix():
    with narcache.Server(str(CACHE)) as server:
        assert server.running and server.port > 0
        assert server.url == "http://127.0.0.1:%d" % server.port
        assert server.addresses == ["127.0.0.1:%d" % server.port]
        assert get(server.url + "/nix-cache-info") == (200, (CACHE / "nix-cache-info").read_bytes())
        text = (CACHE / (F1 + ".narinfo")).read_bytes()
        assert get(server.url + "/%s.narinfo" % F1) == (200, text)
        url = narcache.NarInfo.parse(text).url
        assert get(server.url + "/" + url) == (200, (CACHE / url).read_bytes())
        assert get(server.url + "/" + "0" * 32 + ".narinfo")[0] == 404
        assert server.wait_healthy(10) and server.healthy
    assert not server.running
    assert refused(server.port)


def test_access_and_log_hooks_see_requests():
    access, logs = [], []
    with narcache.Server(CACHE, log=logs.append, access=access.append) as server:
        port = server.port
        get(server.url + "/%s.narinfo" % F1)
        get(server.url + "/nothing")
        server.wait_healthy(10)
    assert [r.event for r in logs if r.event == "listening"] == ["listening"]
    assert any(r.fields.get("address") == "127.0.0.1:%d" % port for r in logs)
    narinfo = [r for r in access if r.route == "narinfo"]
    assert len(narinfo) == 1 and narinfo[0].status == 200 and narinfo[0].method == "GET"
    assert narinfo[0].target == "/%s.narinfo" % F1 and narinfo[0].peer.startswith("127.0.0.1:")
    assert any(r.status == 404 and r.route == "other" for r in access)


def test_a_hook_that_raises_stops_the_server_and_stop_raises_it():
    class Boom(Exception):
        pass

    def access(record):
        raise Boom("from the access hook: %s" % record.target)

    server = narcache.Server(CACHE, access=access).start()
    get(server.url + "/nix-cache-info")  # answered; the hook raises afterwards
    assert server.wait(10), "the server did not stop after the hook raised"
    with pytest.raises(Boom, match="nix-cache-info"):
        server.stop()
    server.stop()  # reported once; a second stop is quiet

    with pytest.raises(Boom):
        with narcache.Server(CACHE, access=access) as s2:
            get(s2.url + "/nix-cache-info")
            s2.wait(10)


def test_an_exception_in_the_with_block_wins_over_a_hook_error():
    def access(record):
        raise RuntimeError("hook")

    with pytest.raises(KeyError):
        with narcache.Server(CACHE, access=access) as server:
            get(server.url + "/nix-cache-info")
            raise KeyError("body")


def make_upload_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(CACHE / "nix-cache-info", cache)
    return cache


def golden_f1():
    text = (CACHE / (F1 + ".narinfo")).read_bytes()
    info = narcache.NarInfo.parse(text)
    return text, info, (CACHE / info.url).read_bytes()


def test_uploads_with_a_token_table(tmp_path):
    cache = make_upload_cache(tmp_path)
    text, info, nar = golden_f1()
    token = "t0ken-for-the-python-test-0123456789"
    trusted = narcache.PublicKey.parse((DATA / "keys" / "test-cache-1.pub").read_text())
    with narcache.Server(cache, tokens="ci write %s\n" % token, trusted_keys=[trusted],
                         options={"max_upload_bytes": 1 << 20}) as server:
        assert put(server, "/" + info.url, nar)[0] == 401
        assert put(server, "/" + info.url, nar, token="wrong-token-0123456789")[0] == 401
        assert put(server, "/" + info.url, nar, token=token)[0] in (200, 201, 204)
        assert put(server, "/%s.narinfo" % F1, text, token=token)[0] in (200, 201, 204)
        assert get(server.url + "/%s.narinfo" % F1) == (200, text)
    assert (cache / (F1 + ".narinfo")).read_bytes() == text
    assert (cache / info.url).read_bytes() == nar


def test_authorize_hook_decides_and_the_server_signs_with_its_key(tmp_path):
    cache = make_upload_cache(tmp_path)
    text, info, nar = golden_f1()
    info.sigs = []
    key = narcache.SecretKey.generate("python-upload-1")
    asked = []

    def authorize(request):
        asked.append(request)
        return "write" if request.credential == "let-me-in-please-0123" else None

    with narcache.Server(cache, keys=[key], authorize=authorize,
                         options={"max_upload_bytes": 1 << 20}) as server:
        assert put(server, "/" + info.url, nar)[0] == 401
        assert put(server, "/" + info.url, nar, token="let-me-in-please-0123")[0] in (200, 201)
        status, _ = put(server, "/%s.narinfo" % F1, bytes(info), token="let-me-in-please-0123")
        assert status in (200, 201)
        served = narcache.NarInfo.parse(get(server.url + "/%s.narinfo" % F1)[1])
    assert served.verify([key.public_key]).name == "python-upload-1"
    assert [r.method for r in asked] == ["PUT"] * 3
    assert asked[0].credential is None and asked[1].credential == "let-me-in-please-0123"
    assert asked[1].kind != asked[2].kind


def test_authorize_hook_returning_nonsense_is_an_error(tmp_path):
    cache = make_upload_cache(tmp_path)
    _, info, nar = golden_f1()
    server = narcache.Server(cache, authorize=lambda r: "admin",
                             options={"max_upload_bytes": 1 << 20}).start()
    assert put(server, "/" + info.url, nar, token="x" * 20)[0] == 401  # denied, not granted
    server.wait(10)
    with pytest.raises(ValueError, match="admin"):
        server.stop()
    assert not (cache / info.url).exists()


def test_options_are_checked():
    with pytest.raises(ValueError, match="no_such_option"):
        narcache.Server(CACHE, options={"no_such_option": 1})
    with pytest.raises(narcache.errors.InvalidArgumentError):
        narcache.Server(CACHE, options={"max_connections": -5}).start()
    with pytest.raises(narcache.errors.InvalidArgumentError):
        narcache.Server(CACHE, listen=["not an address"]).start()
    with pytest.raises(narcache.NotFoundError):
        narcache.Server(str(CACHE / "missing"))


def test_a_server_dropped_while_running_stops():
    server = narcache.Server(CACHE).start()
    port = server.port
    running = weakref.ref(server._running)
    thread = server._thread
    del server
    gc.collect()
    thread.join(15)
    assert not thread.is_alive(), "the loop thread kept running after the Server was dropped"
    assert refused(port)
    gc.collect()
    assert running() is None


def test_store_and_keys_dropped_before_the_server_stay_alive(tmp_path):
    key = narcache.SecretKey.generate("short-lived-1")
    store = narcache.DirStore(make_upload_cache(tmp_path), writable=True)
    server = narcache.Server(store, keys=[key], options={"max_upload_bytes": 1024}).start()
    store_ref = weakref.ref(store)
    del store, key
    gc.collect()
    assert store_ref() is not None  # the Server holds its store
    server.store.close()  # even closed by hand, the C store lives while the server does
    assert get(server.url + "/nix-cache-info")[0] == 200
    server.stop()


def test_reference_cycles_are_collected_in_any_order():
    """A hook that refers to its own server makes a cycle; the collector
    then finalizes server, store and keys in no particular order."""
    def start_in_a_cycle():
        key = narcache.SecretKey.generate("cycle-1")
        store = narcache.DirStore(CACHE)
        box = {}
        server = narcache.Server(store, keys=[key], log=lambda r: box["server"].port)
        box["server"] = server
        server.start()
        assert get(server.url + "/nix-cache-info")[0] == 200
        return server.port, server._thread, weakref.ref(server)

    for _ in range(20):
        port, thread, server = start_in_a_cycle()
        assert server() is not None  # only the cycle holds it now
        gc.collect()
        assert server() is None
        thread.join(15)
        assert not thread.is_alive() and refused(port)
    gc.collect()


def test_stop_from_another_thread_and_wait():
    server = narcache.Server(CACHE).start()
    threading.Timer(0.2, server.stop).start()
    start = time.monotonic()
    assert server.wait(10)
    assert time.monotonic() - start < 10
    server.stop()


def test_the_interpreter_exits_cleanly_with_servers_still_running(tmp_path):
    """No stop(), one server still referenced, one with a hook: exit is
    prompt and clean (the servers are stopped before their stores go)."""
    import subprocess
    import sys
    script = (
        "import narcache, urllib.request\n"
        "a = narcache.Server(%r).start()\n"
        "b = narcache.Server(narcache.DirStore(%r), access=lambda r: None).start()\n"
        "for s in (a, b):\n"
        "    assert urllib.request.urlopen(s.url + '/nix-cache-info').status == 200\n"
        "print('served', flush=True)\n" % (str(CACHE), str(CACHE)))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "served\n" and "Exception" not in result.stderr


def test_stop_from_a_hook_asks_and_returns():
    box = {}

    def access(record):
        box["server"].stop()  # on the loop thread: must not wait for itself

    server = narcache.Server(CACHE, access=access)
    box["server"] = server
    server.start()
    assert get(server.url + "/nix-cache-info")[0] == 200
    assert server.wait(10)
    server.stop()
    assert not server.running
