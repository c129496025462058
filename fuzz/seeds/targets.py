#!/usr/bin/env python3
"""Seeds of nar_restore, nar_dump, sign_verify and nix32 from real data:
NARs made by Nix 2.8 (tests/data/nar/golden), the narinfo test keys and
fingerprints, manifest hashes; of auth: token files and the
Authorization values Nix sends (Bearer, and Basic from a netrc); of
load_response: responses as narcache-server and nginx frame them; of s3:
s3:// URLs as Nix and the tests write them, AWS credentials files, and the
requests of AWS's SigV4 test suite (tests/data/sigv4). Usage: fuzz/seeds/targets.py (writes into
fuzz/corpus/<target>/, files named by SHA-1)."""
import hashlib, os, sys, glob, struct
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
def put(target, blob):
    d = os.path.join(root, 'fuzz/corpus', target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(blob).hexdigest()
    with open(os.path.join(d, name), 'wb') as f:
        f.write(blob)

golden = sorted(glob.glob(root + '/tests/data/nar/golden/*.nar'))
nars = {os.path.basename(p)[:-4]: open(p, 'rb').read() for p in golden}

# nar_restore: 3 header bytes + golden NAR
for name, nar in nars.items():
    put('nar_restore', b'\x00\x00\x00' + nar)           # one piece, no limits
small = ['spec-dir', 'file-hello', 'symlink-root', 'file-exec', 'dir-empty', 'symlinks', 'nested-62']
for name in small:
    nar = nars[name]
    put('nar_restore', b'\x03\x07\x00' + nar)            # random chunks 1..8
    put('nar_restore', b'\x48\x80\x00' + nar)            # abandon half way, absolute path
for name in ['nested-62', 'nested-64', 'spec-dir']:
    put('nar_restore', b'\x00\x00\x09' + nars[name])     # depth limit 3
put('nar_restore', b'\x05\x80\x0e' + nars['names'])      # split, name limit 4
put('nar_restore', b'\x02\x0f\x33' + nars['spec-dir'])   # fixed 16, size limit 832
put('nar_restore', b'\x00\x00\x00' + nars['spec-dir'] + b'\x00' * 8)  # trailing bytes
put('nar_restore', b'\x01\x00\x00' + nars['spec-dir'][:500])          # truncated, 1-byte

# sign_verify: raw key texts (the whole input is a key text), and structured inputs
for p in sorted(glob.glob(root + '/tests/data/narinfo/keys/*')):
    t = open(p, 'rb').read()
    put('sign_verify', t)
    put('sign_verify', t + b'\n')
    put('sign_verify', t.rstrip(b'='))
fp = open(root + '/tests/data/narinfo/fingerprints.tsv', 'rb').read().split(b'\n')
msgs = [l.split(b'\t')[1] for l in fp if l and not l.startswith(b'#')][:4]
name = b'test-cache-1'
for i, m in enumerate(msgs or [b'1;/nix/store/x;sha256:0;0;']):
    flags = [0x01, 0x02, 0x0c, 0x10][i % 4]
    seed = hashlib.sha256(m).digest()
    put('sign_verify', bytes([flags, len(name), i, 0]) + name + seed + m)
put('sign_verify', bytes([0x00, 5, 1, 0]) + b'a b:c' + bytes(32) + b'msg')   # raw name, refused
put('sign_verify', bytes([0x21, 5, 3, 1]) + bytes(32) + b'long name')         # 255..265 bytes

# nix32: header + payload; payload from real hashes
import base64
man = open(root + '/tests/data/nar/manifest.tsv').read().split('\n')
rows = [l.split('\t') for l in man if l and not l.startswith('#')][1:]
for r in rows[:4]:
    hexd, nix32 = r[2], r[3]
    put('nix32', b'\x00' + bytes.fromhex(hexd))                 # encode a digest
    put('nix32', bytes([52]) + nix32.encode())                  # nix32 text (52 chars -> 32 bytes)
    put('nix32', b'\x00' + hexd.encode())                       # hex text
    put('nix32', b'\x00' + base64.b64encode(bytes.fromhex(hexd)))  # base64 text
put('nix32', b'\x00' + b'2' + rows[0][3][1:].encode())          # non-canonical top digit
put('nix32', b'\x00' + rows[0][3].upper().encode())             # upper case
put('nix32', b'\x40' + bytes(range(256)))                       # mapped alphabet
put('nix32', b'\x80' + bytes(range(20)))                        # store-path hash size, EBUFS first
put('nix32', b'\x01' + b'QQ==')                                 # base64 room one short
put('nix32', b'\x00' + b'QR==')                                 # stray bits

# nar_dump: 4 header bytes + a tree program (see fuzz_nar_dump.c)
def name(style, text):
    """op style bits and name bytes for a name spelled `text` (bytes)."""
    if style == 0:   # letters abcd: 1 + b % 4 of them
        return bytes([len(text) - 1]) + bytes(c - ord('a') for c in text)
    return bytes([len(text) - 1]) + text   # raw (1) or printable (2, byte - 0x20 % 95)
def pr(text):  # printable style: byte values so that ' ' + b % 95 == c
    return bytes([len(text) - 1]) + bytes(c - 0x20 for c in text)
def f(nm, data, mode=0, style=0, big=False):
    op = (3 if big else 0) | style << 3 | mode << 5
    n = name(style, nm) if style != 2 else pr(nm)
    return bytes([op]) + n + (bytes([len(data)]) + data if not big else bytes([data]))
def ln(nm, target, style=0):
    n = name(style, nm) if style != 2 else pr(nm)
    return bytes([4 | style << 3]) + n + bytes([len(target) - 1]) + target
def d(nm, style=0, enter=True):
    n = name(style, nm) if style != 2 else pr(nm)
    return bytes([(5 if enter else 6) | style << 3]) + n
UP = b'\x07'
hdr = lambda win=0, seek=0, lim=0: bytes([win, seek >> 8, seek & 255, lim])
put('nar_dump', hdr())                                            # empty root directory
put('nar_dump', hdr(200) + b'\x00\x05hello')                      # root file
put('nar_dump', hdr(3, 50) + b'\x20\x00')                        # root executable, empty
put('nar_dump', hdr(7, 9) + b'\x01\x05target')                   # root symlink
spec = b'\x02' + f(b'a', b'hello') + d(b'b') + f(b'c', b'', mode=1) + UP + d(b'd') + ln(b'e', b'../a')
put('nar_dump', hdr(0, 300) + spec)                                # spec-like tree, 1-byte window
put('nar_dump', hdr(63, 1000, 0x01 | 1 << 2) + spec)               # depth limit 2
put('nar_dump', hdr(16, 77, 0x02 | 0 << 2) + spec)                 # names 1
put('nar_dump', hdr(250, 512, 0x03 | 20 << 2) + spec)              # size 768
order = b'\x02' + f(b'a', b'1') + f(b'ab', b'2') + f(b'b', b'3') + f(b'aa', b'4') + f(b'a', b'dup') \
      + f(b'\xff\xfe', b'x', style=1) + f(b'\xc3\xa9', b'e', style=1) + f(b'A', b'up', style=1) \
      + f(b'-rf ', b'', style=2) + f(b'...', b'', style=2) + f(b'x y', b'', style=2)
put('nar_dump', hdr(5, 123) + order)                               # byte order, non-UTF-8
modes = b'\x02' + b''.join(f(bytes([ord('a') + i % 4, ord('a') + i // 4]), bytes([i]) * 9, mode=i) for i in range(8))
put('nar_dump', hdr(33, 600) + modes)                              # every mode
deep = b'\x02' + d(b'a') * 12 + f(b'z', b'bottom') + UP * 3 + ln(b'l', b'/etc/passwd')
put('nar_dump', hdr(1, 900) + deep)
put('nar_dump', hdr(9, 900, 0x01 | 11 << 2) + deep)                # depth limit 12
big = b'\x02' + f(b'b', 0x13, big=True) + f(b'c', 0x07, mode=1, big=True) + f(b'a', b'small' * 8)
put('nar_dump', hdr(255, 20000 >> 0 & 0xffff) + big)               # large files, big window
longn = b'\x02' + bytes([0x18, 55]) + b'\x05hello' + bytes([0x04 | 0x18, 40]) + b'\xfftarget'
put('nar_dump', hdr(64, 4000, 0x02 | 23 << 2) + longn)             # 255-byte name, 4095-byte target
links = b'\x02' + d(b'sentinel', style=2, enter=False) + ln(b'up', b'../sentinel/x', 2) + ln(b'abs', b'/tmp', 2) \
      + ln(b'dot', b'.', 2) + ln(b'loop', b'loop', 2) + ln(b'nul', b'a\x00b', 2)
put('nar_dump', hdr(12, 222) + links)

# auth: a token file, or an Authorization header value (the harness tries both)
token = b'6b1f0c0e5d0a4e3c9a7f21d4c8e2b9a1'
put('auth', b'ci-main write ' + token + b'\nlaptop read 0f9e8d7c6b5a49382716a5b4c3d2e1f0\n')
put('auth', b'# comment\n\n  a\twrite  0123456789abcdef0123  # x\r\n')   # blanks, tab, CR
put('auth', b'a write 0123456789abcdef\na read 0123456789abcdef\n')      # duplicate: refused
put('auth', b'Bearer ' + token)
put('auth', b'Basic ' + base64.b64encode(b'nix:' + token))                 # netrc password

# load_response: header byte (bit 0 HEAD, bits 1-6 piece size - 1, bit 7 EOF) + response bytes
narinfo = open(root + '/tests/data/narinfo/caches/none/' + sorted(
    n for n in os.listdir(root + '/tests/data/narinfo/caches/none') if n.endswith('.narinfo'))[0], 'rb').read()
def response(status, reason, fields, body):
    head = b'HTTP/1.1 %d %s\r\n' % (status, reason) + b''.join(b'%s: %s\r\n' % f for f in fields)
    return head + b'\r\n' + body
ours = [(b'Server', b'narcache'), (b'Date', b'Fri, 27 Nov 2026 13:38:38 GMT')]
put('load_response', b'\x00' + response(200, b'OK', ours + [(b'Content-Type', b'text/x-nix-narinfo'),
    (b'Content-Length', b'%d' % len(narinfo))], narinfo))
put('load_response', b'\x0e' + response(404, b'Not Found', ours + [(b'Content-Length', b'14')],
    b'404 Not Found\n'))
put('load_response', b'\x01' + response(200, b'OK', ours + [(b'Content-Length', b'1048576')], b''))
put('load_response', b'\x06' + response(503, b'Service Unavailable', ours + [(b'Retry-After', b'5'),
    (b'Content-Length', b'24'), (b'Connection', b'close')], b'503 Service Unavailable\n'))
put('load_response', b'\x02' + response(100, b'Continue', [], b'') + response(200, b'OK', ours +
    [(b'Content-Length', b'0')], b''))
put('load_response', b'\x10' + response(200, b'OK', [(b'Server', b'nginx/1.22.1'),
    (b'Transfer-Encoding', b'chunked')], b'5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n'))
put('load_response', b'\x80' + response(200, b'OK', [(b'Server', b'nginx/1.22.1')], narinfo))
put('load_response', b'\x00' + response(304, b'Not Modified', ours + [(b'ETag', b'"x"')], b''))

# s3: selector byte (0 URL, 1 credentials file, 2 request to sign) + input
for url in [b's3://nix-cache', b's3://nix-cache/cache?endpoint=http://127.0.0.1:7480&region=us-east-1',
            b's3://my.bucket/a/b/?endpoint=s3.example.org&scheme=https&addressing=path',
            b's3://bucket-1?region=eu-west-1&addressing=virtual&profile=ci',
            b's3://b?endpoint=http%3A%2F%2Fh%3A1', b's3://x', b'http://bucket']:
    put('s3', b'\x00' + url)
put('s3', b'\x01\x00[default]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = '
          b'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n')
put('s3', b'\x01\x01# comment\n[default]\naws_access_key_id=a\n[ci]\r\naws_access_key_id = AK\r\n'
          b'aws_secret_access_key = SK\r\naws_session_token = TOKEN\r\n')
suite = os.path.join(root, 'tests/data/sigv4/aws')
for case in sorted(os.listdir(suite)):
    req = os.path.join(suite, case, 'request.txt')
    if not os.path.exists(req):
        continue
    lines = open(req, 'rb').read().split(b'\n')
    target = lines[0].split(b' ')[1] if len(lines[0].split(b' ')) > 2 else b'/'
    path, _, query = target.partition(b'?')
    name, value = b'x-fuzz', b''
    for h in lines[1:]:
        if b':' in h and not h.lower().startswith(b'host:'):
            name, value = h.split(b':', 1)
            break
    normalize = 0 if 'unnormalized' in case else 1
    put('s3', b'\x02' + bytes([normalize]) + path + b'\x00' + query + b'\x00' + name + b'\x00' + value)
put('s3', b'\x02\x00/nix-cache/nar/0p5d58x7b9jgy10c49mfnz52lgvc2cavhac95ag4dc5hn1miqwsz.nar.zst'
          b'\x00partNumber=3&uploadId=2~abc%2Bdef\x00Range\x00bytes=100-')

# s3_response: response heads as Ceph RGW 16.2 sent them to the tests
# (a ranged GET, a missing object, a refused signature), the fault proxy's
# SlowDown, an informational head, and a chunked one (refused: not
# length-delimited).
rgw = [(b'Accept-Ranges', b'bytes'), (b'x-amz-request-id', b'tx000008f3a71964f073776-006b09e3f7-1010-default'),
       (b'Date', b'Fri, 27 Nov 2026 20:11:35 GMT')]
def head(status, reason, fields):
    return b'HTTP/1.1 ' + str(status).encode() + b' ' + reason + b'\r\n' + \
        b''.join(n + b': ' + v + b'\r\n' for n, v in fields) + b'\r\n'
put('s3_response', head(206, b'Partial Content', [(b'Content-Length', b'100'),
    (b'Content-Range', b'bytes 100-199/268435456')] + rgw + [(b'Last-Modified', b'Fri, 27 Nov 2026 20:06:49 GMT'),
    (b'x-rgw-object-type', b'Normal'), (b'ETag', b'"6f395e1be507eff9f4937ba3e37275fc"'),
    (b'Content-Type', b'binary/octet-stream'), (b'Connection', b'close')]))
put('s3_response', head(200, b'OK', [(b'Content-Length', b'268435456'), (b'ETag', b'"6f395e1be507eff9f4937ba3e37275fc-3"')]
    + rgw + [(b'Content-Type', b'binary/octet-stream'), (b'Connection', b'close')]))
put('s3_response', head(404, b'Not Found', [(b'Content-Length', b'231')] + rgw +
    [(b'Content-Type', b'application/xml'), (b'Connection', b'Keep-Alive')]))
put('s3_response', head(403, b'Forbidden', [(b'Content-Length', b'234')] + rgw + [(b'Content-Type', b'application/xml')]))
put('s3_response', head(503, b'Slow Down', [(b'Content-Type', b'application/xml'), (b'Retry-After', b'1'),
    (b'Content-Length', b'120')]))
put('s3_response', head(100, b'Continue', []))
put('s3_response', head(200, b'OK', [(b'Transfer-Encoding', b'chunked'), (b'Content-Encoding', b'gzip')]))
