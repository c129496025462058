#!/usr/bin/env python3
"""narcache-server's sd_notify messages, as systemd would receive them.

We play systemd's side: a datagram socket passed as NOTIFY_SOCKET (a path,
then an abstract name), with SO_PASSCRED so that every message is checked to
come from the daemon's main pid (NotifyAccess=main). Checked:
  - READY=1 once listening (before any WATCHDOG=1), with the address;
  - WATCHDOG=1 at the rate WATCHDOG_USEC asks: gaps of at most about
    WATCHDOG_USEC/2, and not on every probe either;
  - the pings stop while the store's probe hangs (fault injection through
    NARCACHE_FAULT_PROBE_BLOCK_FILE), STATUS says why and /healthz is 503;
    they resume once it recovers;
  - STOPPING=1 on SIGTERM, then a clean exit;
  - WATCHDOG_PID of another process: READY=1 but no pings;
  - a notify socket nobody reads never blocks the loop.
Usage: server_sd_notify.py NARCACHE_SERVER CACHE_DIR
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SERVER, CACHE = sys.argv[1], sys.argv[2]
W_USEC = 600000
W = W_USEC / 1e6
TMP = tempfile.mkdtemp(prefix="narcache-notify.")
PROCS = []  # killed at the end, whatever happened


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


class Notify:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.pid = None
        self.messages = []  # (monotonic time, line)

    def poll(self, seconds):
        """Collect messages for `seconds`; return the new ones."""
        new = []
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                break
            now = time.monotonic()
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
                    if self.pid is not None and pid != self.pid:
                        fail("message from pid %d, not the main pid %d" % (pid, self.pid))
            for line in data.decode().split("\n"):
                if line:
                    new.append((now, line))
        self.messages += new
        return new

    def wait_for(self, prefix, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for t, line in self.poll(min(0.2, end - time.monotonic())):
                if line.startswith(prefix):
                    return t, line
        fail("no %s within %.0f s; got %r" % (prefix, seconds, self.messages[-10:]))


def start(notify_socket, env_extra, own_watchdog_pid=False):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_", "NARCACHE_FAULT_"))}
    env["NOTIFY_SOCKET"] = notify_socket
    env.update(env_extra)
    argv = [SERVER, "--cache", CACHE, "--listen", "127.0.0.1:0"]
    if own_watchdog_pid:  # WATCHDOG_PID set to the daemon's own pid
        argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh"] + argv
    log = open(os.path.join(TMP, "server.log"), "a")
    PROCS.append(subprocess.Popen(argv, env=env, stderr=log))
    return PROCS[-1]


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def pings(msgs):
    return [t for t, line in msgs if line == "WATCHDOG=1"]


def gaps(times):
    return [b - a for a, b in zip(times, times[1:])]


def stop(proc, notify):
    proc.send_signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1", 10)
    try:
        rc = proc.wait(20)
    except subprocess.TimeoutExpired:
        fail("no exit within 20 s of SIGTERM")
    if rc != 0:
        fail("exit status %d after SIGTERM" % rc)
    lines = [line for _, line in notify.messages + notify.poll(0.2)]
    after = lines[lines.index("STOPPING=1") + 1:]
    if after != ["STATUS=stopping"]:
        fail("after STOPPING=1 came %r" % after)


def check_rate(times, what):
    g = gaps(times)
    if len(g) < 3:
        fail("%s: only %d pings" % (what, len(times)))
    print("%s: %d pings, gaps %.0f..%.0f ms" % (what, len(times), min(g) * 1e3, max(g) * 1e3))
    # often enough: systemd kills at W; the daemon aims at W/2 (some slack
    # for a loaded machine, but never near W)
    if max(g) > W / 2 + 0.1:
        fail("%s: a gap of %.0f ms between pings (WATCHDOG_USEC %d)" % (what, max(g) * 1e3, W_USEC))
    # and not more often than needed (the probe runs every W/8)
    if min(g) < W / 4:
        fail("%s: pings only %.0f ms apart" % (what, min(g) * 1e3))


def main_run():
    block = os.path.join(TMP, "block-probe")
    notify = Notify(os.path.join(TMP, "notify"))
    proc = start(os.path.join(TMP, "notify"),
                 {"WATCHDOG_USEC": str(W_USEC), "NARCACHE_FAULT_PROBE_BLOCK_FILE": block},
                 own_watchdog_pid=True)
    notify.pid = proc.pid
    notify.wait_for("READY=1", 30)
    lines = [line for _, line in notify.messages]
    if "WATCHDOG=1" in lines[:lines.index("READY=1")]:
        fail("WATCHDOG=1 before READY=1")
    status = [line for _, line in notify.messages if line.startswith("STATUS=listening on 127.0.0.1:")]
    if not status:
        fail("no listening STATUS with READY=1: %r" % notify.messages)
    port = int(status[0].rsplit(":", 1)[1])
    code, body = get(port, "/nix-cache-info")
    if code != 200 or b"StoreDir: /nix/store" not in body:
        fail("/nix-cache-info: %d %r" % (code, body))

    # healthy: pings at the rate asked
    healthy = notify.poll(3.0)
    check_rate(pings(healthy), "healthy")
    if not any(line.startswith("STATUS=serving") for _, line in healthy):
        fail("no 'serving' STATUS while healthy")

    # the store's probe hangs: pings stop
    open(block, "w").close()
    t_block = time.monotonic()
    wedged = notify.poll(2.5)
    late = [t - t_block for t in pings(wedged) if t - t_block > W / 2]
    if late:
        fail("WATCHDOG=1 %.0f ms after the probe hung" % (late[0] * 1e3))
    if not any(line.startswith("STATUS=unhealthy") for _, line in wedged):
        fail("no 'unhealthy' STATUS while the probe hangs: %r" % wedged)
    code, _ = get(port, "/healthz")
    if code != 503:
        fail("/healthz answered %d while the probe hangs" % code)
    print("wedged: no pings for %.1f s" % (time.monotonic() - t_block - W / 2))

    # it recovers: pings resume
    os.unlink(block)
    t_free = time.monotonic()
    recovered = notify.poll(2.5)
    p = pings(recovered)
    if not p or p[0] - t_free > 1.0:
        fail("pings did not resume within 1 s of recovery: %r" % recovered)
    check_rate(p, "recovered")
    if not any(line.startswith("STATUS=serving") for _, line in recovered):
        fail("no 'serving' STATUS after recovery")
    code, _ = get(port, "/healthz")
    if code != 200:
        fail("/healthz answered %d after recovery" % code)
    stop(proc, notify)


def other_pid_run():
    """Abstract socket; the watchdog belongs to another process."""
    name = "narcache-test-%d-%d" % (os.getpid(), time.monotonic_ns())
    notify = Notify("\0" + name)
    proc = start("@" + name, {"WATCHDOG_USEC": str(W_USEC), "WATCHDOG_PID": "1"})
    notify.pid = proc.pid
    notify.wait_for("READY=1", 30)
    notify.poll(1.5)
    if pings(notify.messages):
        fail("WATCHDOG=1 although WATCHDOG_PID is another process")
    stop(proc, notify)
    print("abstract socket, WATCHDOG_PID=1: READY and STOPPING, no pings")


def unread_run():
    """A notify socket whose queue is full must not stall the loop."""
    path = os.path.join(TMP, "notify-unread")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    log_path = os.path.join(TMP, "server.log")
    before = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    proc = start(path, {"WATCHDOG_USEC": "100000"})
    port = None
    end = time.monotonic() + 30
    while port is None and time.monotonic() < end:
        time.sleep(0.1)
        with open(log_path) as f:
            f.seek(before)
            for line in f:
                if " listening: " in line and "address=127.0.0.1:" in line:
                    port = int(line.rsplit(":", 1)[1])
    if port is None:
        fail("the daemon did not start with an unread notify socket")
    time.sleep(2.0)  # pings every ~40 ms: the socket's queue is long full
    t = time.monotonic()
    code, _ = get(port, "/nix-cache-info")
    if code != 200 or time.monotonic() - t > 1.0:
        fail("unread notify socket: %d after %.1f s" % (code, time.monotonic() - t))
    proc.send_signal(signal.SIGTERM)
    if proc.wait(20) != 0:
        fail("unclean exit with an unread notify socket")
    with open(log_path) as f:
        f.seek(before)
        warned = [line for line in f if "notify_failed" in line]
    if len(warned) != 1:
        fail("expected one notify_failed warning, got %d" % len(warned))
    print("unread notify socket: loop kept serving, one warning")


try:
    main_run()
    other_pid_run()
    unread_run()
except SystemExit:
    with open(os.path.join(TMP, "server.log")) as f:
        sys.stderr.write(f.read()[-6000:])
    raise
finally:
    for proc in PROCS:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    subprocess.run(["rm", "-rf", TMP])
print("sd_notify: ok")
