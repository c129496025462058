#!/usr/bin/env python3
"""A fault injector in front of the real gateway: every request is either
answered with an S3 throttling error or passed to the gateway unchanged
(signatures stay valid: the Host header is forwarded as the client sent
it). One request per connection (responses carry Connection: close).

    flaky_proxy.py UPSTREAM_PORT PORT_FILE [--every N]

Every N-th request (default 2: every other one) gets 503 SlowDown with
Retry-After: 0, or 500 InternalError for each 3rd of those. Writes the
port it listens on to PORT_FILE; prints a line per request to stderr.
Counts go to PORT_FILE.counts ("forwarded N\\ninjected M\\n") as it runs.
"""
import argparse
import socket
import sys
import threading

lock = threading.Lock()
counts = {"requests": 0, "forwarded": 0, "injected": 0}


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def read_body(sock, have, length):
    while len(have) < length:
        chunk = sock.recv(min(1 << 20, length - len(have)))
        if not chunk:
            break
        have += chunk
    return have


def error_response(status, code):
    body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>' + code +
            b"</Code><Message>injected by flaky_proxy</Message></Error>")
    reason = b"Slow Down" if status == 503 else b"Internal Server Error"
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nRetry-After: 0\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (status, reason, len(body)) + body)


def relay(client, upstream_port, every, counts_file):
    with client:
        head, rest = read_head(client)
        if head is None:
            return
        body = read_body(client, rest, content_length(head))
        with lock:
            counts["requests"] += 1
            n = counts["requests"]
            inject = n % every == 0
            counts["injected" if inject else "forwarded"] += 1
            with open(counts_file, "w") as f:
                f.write("forwarded %d\ninjected %d\n" % (counts["forwarded"], counts["injected"]))
        line = head.split(b"\r\n")[0].decode(errors="replace")
        if inject:
            status, code = (500, b"InternalError") if (n // every) % 3 == 0 else (503, b"SlowDown")
            print("inject %d %s" % (status, line), file=sys.stderr, flush=True)
            client.sendall(error_response(status, code))
            return
        print("forward %s" % line, file=sys.stderr, flush=True)
        with socket.create_connection(("127.0.0.1", upstream_port)) as up:
            up.sendall(head + body)
            response_head, response_rest = read_head(up)
            if response_head is None:
                return
            is_head = line.startswith("HEAD ")
            length = 0 if is_head else content_length(response_head)
            response_body = read_body(up, response_rest, length)
            # one request per connection: say so (response headers are not signed)
            lines = [l for l in response_head.split(b"\r\n")
                     if l and not l.lower().startswith(b"connection:")]
            client.sendall(b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + response_body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("upstream_port", type=int)
    ap.add_argument("port_file")
    ap.add_argument("--every", type=int, default=2)
    a = ap.parse_args()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    with open(a.port_file, "w") as f:
        f.write(str(server.getsockname()[1]))
    while True:
        client, _ = server.accept()
        threading.Thread(target=relay, args=(client, a.upstream_port, a.every,
                                             a.port_file + ".counts"), daemon=True).start()


if __name__ == "__main__":
    main()
