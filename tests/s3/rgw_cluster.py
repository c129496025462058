#!/usr/bin/env python3
"""A throwaway Ceph cluster with a RADOS Gateway on 127.0.0.1, for tests.

One monitor, one OSD on memstore (objects live in RAM), no manager, and
radosgw with the beast frontend: a real S3 implementation that starts in a
few seconds. Everything (config, keyrings, data, logs, sockets, pids) stays
in one directory; `stop` signals exactly the recorded pids.

    rgw_cluster.py start DIR [--memstore-mib N]   # prints shell assignments:
        S3_ENDPOINT=http://127.0.0.1:PORT S3_ACCESS_KEY=... S3_SECRET_KEY=...
        S3_REGION=us-east-1 S3_TLS_ENDPOINT=https://127.0.0.1:PORT
        S3_CA_FILE=DIR/tls/cert.pem (the gateway's self-signed certificate)
    rgw_cluster.py stop DIR
    rgw_cluster.py stop-rgw DIR / start-rgw DIR   # only the gateway, killed (fault tests)
    rgw_cluster.py bucket DIR NAME                # create a bucket (signed PUT)

Needs Debian's ceph-mon, ceph-osd, radosgw, ceph-common (scripts/install-deps).
"""
import argparse
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

ACCESS_KEY = "NARCACHETESTKEY00001"
REGION = "us-east-1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, d, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, **kw)


def ceph(d, *args):
    return run(["ceph", "-c", str(d / "ceph.conf"), "--connect-timeout", "30", *args], d).stdout


def spawn(d, name, cmd):
    log = open(d / "log" / f"{name}.out", "wb")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    (d / "pids" / name).write_text(str(p.pid))
    return p


def alive(pid):
    """True while any thread of the process is not a zombie. (The empty
    cmdline of a zombie is not enough: a leader thread that has exited
    leaves an empty cmdline while the others may still serve requests.)"""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        try:
            stat = pathlib.Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            return True
    return False


def make_certificate(d):
    """A self-signed certificate for 127.0.0.1: the gateway also speaks TLS."""
    tls = d / "tls"
    tls.mkdir(exist_ok=True)
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")], d)
    return tls


def write_config(d, mon_port, rgw_port, tls_port, memstore_mib):
    fsid = str(uuid.uuid4())
    quota = memstore_mib * 3 // 4 * 1024 * 1024
    (d / "ceph.conf").write_text(f"""[global]
fsid = {fsid}
mon_host = [v2:127.0.0.1:{mon_port}]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr1 = false
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = {d}/keyring
run_dir = {d}/run
admin_socket = {d}/run/$name.asok
log_file = {d}/log/$name.log
pid_file = {d}/run/$name.pid
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
mon_allow_pool_delete = true
rgw_user_default_quota_max_size = {quota}

[mon]
mon_data = {d}/mon/$name
mon_data_avail_crit = 0
mon_data_avail_warn = 0
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
mon_memory_autotune = false
mon_osd_cache_size = 20
rocksdb_cache_size = 16777216

[osd]
osd_data = {d}/osd/$name
osd_objectstore = memstore
memstore_device_bytes = {memstore_mib * 1024 * 1024}
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1
osd_map_cache_size = 20

[client.rgw.gw]
rgw_frontends = beast endpoint=127.0.0.1:{rgw_port} ssl_endpoint=127.0.0.1:{tls_port} ssl_certificate={d}/tls/cert.pem ssl_private_key={d}/tls/key.pem
rgw_thread_pool_size = 16
# Host BUCKET.localhost names a bucket (virtual-host addressing; libcurl
# resolves *.localhost to loopback); requests to 127.0.0.1 stay path-style.
rgw_dns_name = localhost
rgw_enable_usage_log = false
rgw_enable_ops_log = false
rados_osd_op_timeout = 30
""")
    return fsid


def make_keyring(d):
    k = str(d / "keyring")
    run(["ceph-authtool", "--create-keyring", k, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"], d)
    for name, caps in [
        ("client.admin", ["mon", "allow *", "osd", "allow *", "mds", "allow *", "mgr", "allow *"]),
        ("osd.0", ["mon", "allow profile osd", "osd", "allow *", "mgr", "allow profile osd"]),
        ("client.rgw.gw", ["mon", "allow rw", "osd", "allow rwx", "mgr", "allow rw"]),
    ]:
        cmd = ["ceph-authtool", k, "--gen-key", "-n", name]
        for i in range(0, len(caps), 2):
            cmd += ["--cap", caps[i], caps[i + 1]]
        run(cmd, d)


def wait_http(url, deadline):
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer: the gateway is up
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in time")


def start_rgw(d):
    state = json.loads((d / "state.json").read_text())
    spawn(d, "rgw", ["radosgw", "-c", str(d / "ceph.conf"), "-n", "client.rgw.gw", "-f"])
    wait_http(state["endpoint"] + "/", time.monotonic() + 60)


def start(d, memstore_mib):
    for sub in ["mon", "osd", "run", "log", "pids"]:
        (d / sub).mkdir(parents=True, exist_ok=True)
    mon_port, rgw_port, tls_port = free_port(), free_port(), free_port()
    make_certificate(d)
    fsid = write_config(d, mon_port, rgw_port, tls_port, memstore_mib)
    make_keyring(d)
    conf = str(d / "ceph.conf")
    run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v2:127.0.0.1:{mon_port}]",
         str(d / "monmap")], d)
    run(["ceph-mon", "-c", conf, "--mkfs", "-i", "a", "--monmap", str(d / "monmap"),
         "--keyring", str(d / "keyring")], d)
    spawn(d, "mon", ["ceph-mon", "-c", conf, "-i", "a", "-f"])
    osd_uuid = str(uuid.uuid4())
    osd_id = ceph(d, "osd", "new", osd_uuid).strip()
    (d / "osd" / f"osd.{osd_id}").mkdir(exist_ok=True)
    run(["ceph-osd", "-c", conf, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid], d)
    spawn(d, "osd", ["ceph-osd", "-c", conf, "-i", osd_id, "-f"])
    # rgw creates most of its pools itself; these two come lazily and slowly.
    for pool in ["default.rgw.buckets.data", "default.rgw.buckets.non-ec"]:
        ceph(d, "osd", "pool", "create", pool, "8")
        ceph(d, "osd", "pool", "application", "enable", pool, "rgw")
    secret = secrets.token_hex(20)
    state = {"endpoint": f"http://127.0.0.1:{rgw_port}", "access_key": ACCESS_KEY,
             "secret_key": secret, "region": REGION,
             "tls_endpoint": f"https://127.0.0.1:{tls_port}", "ca_file": str(d / "tls" / "cert.pem")}
    (d / "state.json").write_text(json.dumps(state))
    start_rgw(d)
    run(["radosgw-admin", "-c", conf, "-n", "client.admin", "user", "create", "--uid=narcache",
         "--display-name=narcache", f"--access-key={ACCESS_KEY}", f"--secret-key={secret}"], d)
    return state


def stop_pid(d, name, grace=5.0):
    f = d / "pids" / name
    if not f.exists():
        return
    pid = int(f.read_text())
    if alive(pid):
        if grace > 0:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):  # rgw may ignore SIGTERM while requests hang
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while alive(pid):
                time.sleep(0.05)
    f.unlink()


def stop(d):
    for name in ["rgw", "osd", "mon"]:
        stop_pid(d, name)


def create_bucket(d, name):
    state = json.loads((d / "state.json").read_text())
    # curl 7.88 does not sign x-amz-content-sha256 unless it is given.
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                        "--aws-sigv4", f"aws:amz:{REGION}:s3",
                        "--user", f"{state['access_key']}:{state['secret_key']}",
                        "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                        f"{state['endpoint']}/{name}"], capture_output=True, text=True, timeout=60)
    if r.stdout.strip() != "200":
        raise RuntimeError(f"creating bucket {name}: HTTP {r.stdout} {r.stderr}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["start", "stop", "stop-rgw", "start-rgw", "bucket"])
    ap.add_argument("dir")
    ap.add_argument("name", nargs="?")
    ap.add_argument("--memstore-mib", type=int, default=1024)
    a = ap.parse_args()
    d = pathlib.Path(a.dir).resolve()
    if a.action == "start":
        t0 = time.monotonic()
        try:
            state = start(d, a.memstore_mib)
        except Exception as e:
            stop(d)
            sys.exit(f"rgw_cluster: start failed: {e}\n(logs in {d}/log)")
        print(f"S3_ENDPOINT={state['endpoint']}")
        print(f"S3_ACCESS_KEY={state['access_key']}")
        print(f"S3_SECRET_KEY={state['secret_key']}")
        print(f"S3_REGION={state['region']}")
        print(f"S3_TLS_ENDPOINT={state['tls_endpoint']}")
        print(f"S3_CA_FILE={state['ca_file']}")
        print(f"# started in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    elif a.action == "stop":
        stop(d)
    elif a.action == "stop-rgw":
        # The gateway dies at once (SIGKILL): on SIGTERM radosgw drains the
        # requests in flight first, for seconds, which is not the fault
        # the tests are after.
        stop_pid(d, "rgw", grace=0)
    elif a.action == "start-rgw":
        start_rgw(d)
    else:
        create_bucket(d, a.name)


if __name__ == "__main__":
    main()
