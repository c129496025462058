#!/usr/bin/env python3
"""Seeds for fuzz_http_conn: request streams as the real Nix 2.8 client
sends them, captured from `nix copy` against a recording HTTP listener
(reads: nix-cache-info, narinfo, NAR; writes: PUTs of NARs and narinfos),
plus hand-written ones for what Nix does not send (HEAD, Range, ETags,
pipelining, chunked bodies, Connection: close, bad requests). Each seed is
written as fuzz/corpus/http_conn/<sha1> with the 4-byte harness header
(see fuzz_http_conn.c) in several client modes.

Usage: http_conn.py OUTDIR [--no-capture] [--raw-to DIR]
  (capture needs nix-bin, root). --raw-to also writes every stream without
  the header into DIR: the seeds of fuzz_http_request.
"""
import hashlib
import http.server
import os
import subprocess
import sys
import tempfile
import threading

HASH = "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0"
TOKEN = "fuzz-token-0123456789abcdef"


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def nix32(digest):
    """Nix's base-32: 5-bit groups from the least significant end."""
    chars = "0123456789abcdfghijklmnpqrsvwxyz"
    n = len(digest) * 8 // 5 + (1 if len(digest) * 8 % 5 else 0)
    value = int.from_bytes(digest, "little")
    return "".join(chars[(value >> (5 * i)) & 31] for i in reversed(range(n)))


def valid_upload():
    """A NAR Nix made (golden file-hello) and its narinfo, uploaded as the
    Nix client would with a token; then both read back."""
    nar = open(os.path.join(ROOT, "tests/data/nar/golden/file-hello.nar"), "rb").read()
    h = nix32(hashlib.sha256(nar).digest())
    path_hash = "a33hzacmykblylyvn7v2fc989f55j9rc"  # not in the harness's store yet
    narinfo = ("StorePath: /nix/store/%s-hello\nURL: nar/%s.nar\nCompression: none\n"
               "NarHash: sha256:%s\nNarSize: %d\nReferences: \n"
               % (path_hash, h, h, len(nar))).encode()
    put = lambda path, body: (
        "PUT %s HTTP/1.1\r\nHost: cache\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
        % (path, TOKEN, len(body))).encode() + body
    get = lambda path: ("GET %s HTTP/1.1\r\nHost: cache\r\n\r\n" % path).encode()
    return [put("/nar/%s.nar" % h, nar) + put("/%s.narinfo" % path_hash, narinfo)
            + get("/%s.narinfo" % path_hash) + get("/nar/%s.nar" % h),
            put("/%s.narinfo" % path_hash, narinfo)]  # refused: its NAR is not there


def hand_written():
    get = lambda path, extra="": ("GET %s HTTP/1.1\r\nHost: cache\r\n%s\r\n" % (path, extra)).encode()
    head = lambda path: ("HEAD %s HTTP/1.1\r\nHost: cache\r\n\r\n" % path).encode()
    put = lambda path, body, extra="": (
        "PUT %s HTTP/1.1\r\nHost: cache\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n%s\r\n"
        % (path, TOKEN, len(body), extra)).encode() + body
    narinfo = ("StorePath: /nix/store/%s-f1\nURL: nar/small.nar.zst\nCompression: zstd\n"
               "NarHash: sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa\n"
               "NarSize: 120\nReferences: \n" % HASH).encode()
    return [
        get("/nix-cache-info"),
        get("/%s.narinfo" % HASH) + get("/nar/big.nar") + get("/%s.ls" % HASH),
        get("/nar/big.nar", "Range: bytes=100-1099\r\n") + get("/nar/small.nar.zst", "Range: bytes=-10\r\n"),
        get("/nar/big.nar", "Range: bytes=999999-\r\n"),
        head("/nar/big.nar") + head("/nix-cache-info") + head("/nothing.narinfo"),
        get("/nar/small.nar.zst", 'If-None-Match: "x"\r\n'),
        get("/nar/broken.nar") + get("/nix-cache-info"),
        get("/nar/stream.nar") + get("/nar/stream.nar", "Range: bytes=1000-200000\r\n")
        + head("/nar/stream.nar") + get("/nar/stream.nar", "Range: bytes=-5000\r\n"),
        get("/nar/wait.nar") + get("/nar/wait.nar", "Range: bytes=1000-200000\r\n")
        + head("/nar/wait.nar") + get("/nar/wait.nar", "Range: bytes=-5000\r\n"),
        get("/00000000000000000000000000000000.narinfo") + get("/11111111111111111111111111111111.narinfo"),
        get("/log/%s-f1.drv" % HASH) + get("/healthz") + get("/metrics"),
        get("/nix-cache-info", "Connection: close\r\n") + get("/nix-cache-info"),
        b"GET /nar/big.nar?hash=" + HASH.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"BREW /pot HTTP/1.1\r\n\r\n",
        b"GET /nix-cache-info HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /nix-cache-info HTTP/1.1\r\n" + b"X: y\r\n" * 70 + b"\r\n",
        b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n",
        put("/nar/upload.nar", b"x" * 100),
        put("/nar/upload.nar", b"x" * 100, "Expect: 100-continue\r\n"),
        put("/%s.narinfo" % HASH, narinfo),
        (b"PUT /nar/up.nar HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode()
         + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        b"PUT /nar/up.nar HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
        b"PUT /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    ]


class Tee:
    """The connection's input as read, byte for byte."""

    def __init__(self, raw):
        self.raw, self.seen = raw, bytearray()

    def readline(self, *args):
        line = self.raw.readline(*args)
        self.seen += line
        return line

    def read(self, *args):
        data = self.raw.read(*args)
        self.seen += data
        return data

    def close(self):
        self.raw.close()


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers like an empty writable cache and keeps every raw request
    exactly as the client sent it."""
    protocol_version = "HTTP/1.1"
    requests = []

    def setup(self):
        super().setup()
        self.rfile = Tee(self.rfile)

    def _record(self, body=b""):
        del body  # already in the tee
        data = bytes(self.rfile.seen)
        self.rfile.seen.clear()
        Recorder.requests.append(data[:4096])  # keep the seeds small

    def _answer(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._record()
        if self.path == "/nix-cache-info":
            self._answer(200, b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n")
        else:
            self._answer(404)

    do_HEAD = do_GET

    def do_PUT(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self._record(body)
        self._answer(200)

    def log_message(self, *args):
        pass


def capture():
    """Real Nix 2.8 requests: nix copy --to and --from a recording server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d" % server.server_port
    nix = ["nix", "--extra-experimental-features", "nix-command"]
    opts = ["--option", "substituters", "", "--option", "require-sigs", "false"]
    env = dict(os.environ)
    env.pop("NIX_REMOTE", None)
    with tempfile.TemporaryDirectory() as tmp:
        env["XDG_CACHE_HOME"] = tmp
        src = os.path.join(tmp, "seed-input")
        with open(src, "w") as f:
            f.write("narcache fuzz seed\n")
        path = subprocess.run(["nix-store", "--add", src], check=True, capture_output=True,
                              text=True, env=env).stdout.strip()
        subprocess.run(nix + ["copy"] + opts + ["--to", url, path], check=True,
                       capture_output=True, env=env)
        subprocess.run(nix + ["copy"] + opts + ["--from", url, "--to",
                                                "local?root=" + os.path.join(tmp, "root"), path],
                       capture_output=True, env=env)  # fails: the recorder has no narinfo
    server.shutdown()
    return Recorder.requests


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    streams = hand_written() + valid_upload()
    if "--no-capture" not in sys.argv:
        real = capture()
        assert real, "nix sent no request"
        authorized = [r.replace(b"\r\n", b"\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n", 1)
                      for r in real if r.startswith(b"PUT ")]
        streams += real + authorized      # one request each
        streams.append(b"".join(real))    # and all of them pipelined
    written = 0
    for stream in streams:
        for header in (b"\x00\x40\x00\x00", b"\x01\x00\x10\x07", b"\x02\xfc\x00\x01",
                       b"\x03\x00\x80\x02"):
            data = header + stream
            name = hashlib.sha1(data).hexdigest()
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
            written += 1
    print("%d seeds (%d streams) in %s" % (written, len(streams), out))
    if "--raw-to" in sys.argv:
        raw = sys.argv[sys.argv.index("--raw-to") + 1]
        os.makedirs(raw, exist_ok=True)
        for stream in streams:
            with open(os.path.join(raw, hashlib.sha1(stream).hexdigest()), "wb") as f:
                f.write(stream)
        print("%d raw streams in %s" % (len(streams), raw))


if __name__ == "__main__":
    main()
