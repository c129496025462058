#!/usr/bin/env python3
"""A slow HTTP client with a small receive buffer, for fault tests.

Usage: slow_get.py URL OUT BYTES_PER_SECOND

GETs URL (plain http) into OUT at about BYTES_PER_SECOND through a socket
whose receive buffer is fixed small before it connects, so the bytes not
yet taken wait in the server, not in this machine's (possibly huge,
autotuned) receive buffers. Prints "STATUS BODY_BYTES" like curl's -w and
exits 0 when the body arrived whole (its Content-Length), 18 when it was
cut short (curl's "partial file"), 1 on anything else.
"""
import socket
import sys
import time
import urllib.parse


def main():
    url, out, rate = sys.argv[1], sys.argv[2], int(sys.argv[3])
    u = urllib.parse.urlsplit(url)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: the window
    s.settimeout(60)
    s.connect((u.hostname, u.port))
    s.sendall(f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            print("0 0", end="")
            return 1
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(":", 1)[1]) for line in lines[1:]
                  if line.lower().startswith("content-length:"))
    got = len(body)
    start = time.monotonic()
    with open(out, "wb") as f:
        f.write(body)
        while got < length:
            try:
                chunk = s.recv(16384)
            except OSError:
                break
            if not chunk:
                break
            f.write(chunk)
            got += len(chunk)
            ahead = got / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    print(f"{status} {got}", end="")
    return 0 if got == length else 18


if __name__ == "__main__":
    sys.exit(main())
