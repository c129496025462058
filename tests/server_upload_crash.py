#!/usr/bin/env python3
"""Crash safety of uploads through narcache-server.

100 clients upload one path each (the NAR, then its narinfo, as Nix does)
at the same time, and the server is killed with SIGKILL at a random moment;
it is restarted and all uploads start again, several rounds (paths already
there are uploaded again: identical objects replace or leave the published
ones, killed or not). After every restart:
no temporary file is left (the store's startup cleanup), and every narinfo
a client can see is complete and verifies: its NAR is there with the size
and hash it announces, and its signature (the server's, --sign-uploads)
verifies with `narcache narinfo verify`. In the end every path is there and
served byte for byte.

Usage: server_upload_crash.py NARCACHE_SERVER NARCACHE_CLI
"""
import hashlib
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SERVER, CLI = sys.argv[1], sys.argv[2]
CLIENTS = 100
ROUNDS = 6
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def fail(message):
    print("server_upload_crash: " + message, file=sys.stderr)
    sys.exit(1)


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp, cache, token_file, key_file):
        self.args = [SERVER, "--cache", cache, "--upload-token-file", token_file,
                     "--key-file", key_file, "--sign-uploads", "--min-free-space", "0"]
        self.log = open(os.path.join(tmp, "server.log"), "ab")
        self.proc = None
        self.port = None

    def start(self):
        self.port = free_port()
        self.proc = subprocess.Popen(self.args + ["--listen", "127.0.0.1:%d" % self.port],
                                     stdout=self.log, stderr=self.log)
        for _ in range(100):
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        fail("the server did not come up")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(timeout=30) != 0:
            fail("the server exited with %d on SIGTERM" % self.proc.returncode)


def make_paths(tmp):
    """One single-file store path per client: its NAR and its narinfo."""
    paths = []
    for i in range(CLIENTS):
        src = os.path.join(tmp, "src-%03d" % i)
        with open(src, "wb") as f:
            f.write(os.urandom(random.choice([100, 5000, 70000, 300000, 1500000])))
        nar_file = os.path.join(tmp, "nar-%03d" % i)
        with open(nar_file, "wb") as f:
            subprocess.run([CLI, "nar", "dump", src], stdout=f, check=True)
        nar = open(nar_file, "rb").read()
        h = run(CLI, "hash", "file", "--base32", nar_file)
        hash_part = "".join(random.choice(NIX32) for _ in range(32))
        narinfo = ("StorePath: /nix/store/%s-crash-%03d\nURL: nar/%s.nar\nCompression: none\n"
                   "FileHash: sha256:%s\nFileSize: %d\nNarHash: sha256:%s\nNarSize: %d\n"
                   "References: \n" % (hash_part, i, h, h, len(nar), h, len(nar)))
        paths.append({"hash": hash_part, "nar_name": h + ".nar", "nar": nar,
                      "narinfo": narinfo.encode()})
    return paths


SERVER_ALIVE = threading.Event()


def paced(body):
    """The body in 64 KiB pieces, 10 ms apart: a client on a slow link, so
    that the kill finds uploads in every stage."""
    for at in range(0, len(body), 65536):
        yield body[at:at + 65536]
        time.sleep(0.01)


def put(port, token, target, body):
    """The status of one PUT, None once the server is gone (killed). A 503
    (too many uploads at once) is retried like Nix does; so is a connection
    the server closed early -- it answers 503 without reading the body,
    and this client, unlike curl, does not wait for 100 Continue."""
    for _ in range(500):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("PUT", target, body=paced(body),
                      headers={"Authorization": "Bearer " + token,
                               "Content-Length": str(len(body)),
                               "Content-Type": "application/octet-stream"})
            status = c.getresponse().status
            c.close()
        except (OSError, http.client.HTTPException):
            if not SERVER_ALIVE.is_set():
                return None
            status = 503
        if status != 503:
            return status
        time.sleep(0.02)
    return 503


def upload(port, token, p, results):
    time.sleep(random.uniform(0, 0.5))
    s = put(port, token, "/nar/" + p["nar_name"], p["nar"])
    if s == 200:
        s = put(port, token, "/%s.narinfo" % p["hash"], p["narinfo"])
    results[p["hash"]] = s


def check_cache(cache, pk_text):
    """Nothing half-written is visible; nothing temporary is left."""
    for root, _, files in os.walk(cache):
        for name in files:
            if name.startswith(".tmp-"):
                fail("temporary file left after restart: " + os.path.join(root, name))
    visible = 0
    for name in os.listdir(cache):
        if not name.endswith(".narinfo"):
            continue
        path = os.path.join(cache, name)
        fields = dict(line.split(": ", 1) for line in open(path).read().splitlines()
                      if ": " in line)
        nar = os.path.join(cache, fields["URL"])
        if not os.path.exists(nar):
            fail("%s is visible but its NAR %s is not" % (name, fields["URL"]))
        data = open(nar, "rb").read()
        if len(data) != int(fields["FileSize"]):
            fail("%s: NAR has %d bytes, FileSize %s" % (name, len(data), fields["FileSize"]))
        digest = run(CLI, "hash", "file", "--base32", nar)
        if "sha256:" + digest != fields["FileHash"]:
            fail("%s: the NAR's hash is not its FileHash" % name)
        verdict = subprocess.run([CLI, "narinfo", "verify", "--trusted-key", pk_text, path],
                                 capture_output=True, text=True)
        if verdict.returncode != 0:
            fail("%s does not verify: %s %s" % (name, verdict.stdout, verdict.stderr))
        visible += 1
    return visible


def main():
    tmp = tempfile.mkdtemp(prefix="narcache-upload-crash.")
    try:
        cache = os.path.join(tmp, "cache")
        os.mkdir(cache)
        token = "ci-" + os.urandom(16).hex()
        token_file = os.path.join(tmp, "tokens")
        with open(token_file, "w") as f:
            f.write("ci write %s\n" % token)
        sk, pk = os.path.join(tmp, "sk"), os.path.join(tmp, "pk")
        run(CLI, "key", "generate", "crash-test-1", sk, pk)
        pk_text = open(pk).read().strip()
        paths = make_paths(tmp)
        server = Server(tmp, cache, token_file, sk)
        done = set()
        cut_rounds = 0
        for round_no in range(ROUNDS + 1):
            server.start()
            SERVER_ALIVE.set()
            visible = check_cache(cache, pk_text)
            # Every round uploads every path again: the same objects again
            # are a no-op or an identical replacement, and a kill in the
            # middle of one must not hurt the copy already published.
            todo = paths
            results = {}
            threads = [threading.Thread(target=upload, args=(server.port, token, p, results))
                       for p in todo]
            for t in threads:
                t.start()
            last = round_no == ROUNDS
            if not last:
                time.sleep(random.uniform(0.05, 0.8))
                SERVER_ALIVE.clear()
                server.kill()
            for t in threads:
                t.join()
            done |= {h for h, s in results.items() if s == 200}
            cut_rounds += any(s is None for s in results.values())
            bad = {h: s for h, s in results.items() if s not in (200, None)}
            if bad:
                fail("uploads refused: %s" % bad)
            cut = sum(s is None for s in results.values())
            print("round %d: %d narinfo visible at start, %d/%d paths uploaded%s"
                  % (round_no, visible, len(done), len(paths),
                     "" if last else ", SIGKILL cut %d uploads" % cut))
            if last:
                server.stop()
        if cut_rounds < 3:
            fail("the kills cut uploads in only %d rounds: the test proved little" % cut_rounds)
        server.start()
        if check_cache(cache, pk_text) != CLIENTS or len(done) != CLIENTS:
            fail("not every path ended up in the cache")
        for p in random.sample(paths, 10):
            c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            c.request("GET", "/nar/" + p["nar_name"])
            if c.getresponse().read() != p["nar"]:
                fail("a NAR is not served as uploaded")
        server.stop()
        print("server_upload_crash: ok")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


main()
