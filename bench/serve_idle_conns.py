#!/usr/bin/env python3
"""Open many keep-alive HTTP/1.1 connections, send one request on each,
read each response completely, then keep every connection open and idle.

usage: serve_idle_conns.py HOST PORT COUNT PATH [HOLD_SECONDS]

Used by bench/run-serve.sh to measure a server's memory per idle
connection. Prints to stdout, one line each:
  CONNECTED n          all connections are open (the rest failed)
  READY ok=N bad=N failed=N seconds=S
                       every response is in: N with status 200, N with
                       another status or a broken response, N connections
                       refused/reset; the connections now idle
  CLOSED alive=N       after HOLD_SECONDS more (default 30), how many
                       connections the server had kept open (nothing to
                       read, no EOF, no error); then closes them and exits.
Loopback only; bounded in count and time.
"""
import selectors
import socket
import sys
import time


def main():
    if len(sys.argv) not in (5, 6):
        sys.stderr.write(__doc__)
        return 2
    host, port, count, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    hold = float(sys.argv[5]) if len(sys.argv) == 6 else 30.0
    if not host.startswith("127.") and host not in ("localhost", "::1"):
        sys.stderr.write("serve_idle_conns.py: loopback addresses only\n")
        return 2
    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: narcache-bench-idle\r\n\r\n"
               % (path, host, port)).encode()
    t0 = time.monotonic()
    socks = []
    failed = 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect((host, port))
            s.sendall(request)
        except OSError:
            failed += 1
            s.close()
            continue
        s.setblocking(False)
        socks.append(s)
    print("CONNECTED %d" % len(socks), flush=True)

    # Read every response: head up to the blank line, then Content-Length
    # bytes of body.
    sel = selectors.DefaultSelector()
    state = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        state[s] = b""
    ok = bad = 0
    done = set()
    deadline = time.monotonic() + 60
    while len(done) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                bad += 1
                done.add(s)
                sel.unregister(s)
                continue
            buf = state[s] + data
            state[s] = buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = buf[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(buf) - end - 4 < length:
                continue
            status = head[0].split(" ")
            if len(status) >= 2 and status[1] == "200":
                ok += 1
            else:
                bad += 1
            done.add(s)
            sel.unregister(s)
            state[s] = b""
    bad += len(socks) - len(done)  # never answered within the deadline
    print("READY ok=%d bad=%d failed=%d seconds=%.2f"
          % (ok, bad, failed, time.monotonic() - t0), flush=True)

    # Idle for HOLD_SECONDS.
    sel.close()
    time.sleep(hold)
    alive = 0
    for s in socks:
        try:
            if s.recv(1) == b"":
                continue  # closed by the server
        except BlockingIOError:
            alive += 1
            continue
        except OSError:
            continue
    for s in socks:
        s.close()
    print("CLOSED alive=%d" % alive, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
