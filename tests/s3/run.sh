#!/usr/bin/env bash
# The s3 tests: a throwaway Ceph cluster with a RADOS Gateway on 127.0.0.1
# (rgw_cluster.py), then the store test (test_store_s3), the Python
# binding's S3Store test and the Nix-driven end-to-end and fault test
# (s3_nix.sh) against it. The cluster is stopped whatever happens.
# Usage: run.sh TEST_STORE_S3 NARCACHE_SERVER NARCACHE_CLI [LIBNARCACHE_SO]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
test_bin=$1 server=$2 cli=$3 library=${4:-}
# Ceph's monitor syncs its database often: keep the cluster in memory if we can.
base=${TMPDIR:-/tmp}
[[ -z ${TMPDIR:-} && -d /dev/shm && -w /dev/shm ]] && base=/dev/shm
RGW_DIR=$(mktemp -d "$base/narcache-rgw.XXXXXX")
cleanup() {
    python3 "$here/rgw_cluster.py" stop "$RGW_DIR" || true
    rm -rf "$RGW_DIR"
}
trap cleanup EXIT
env_lines=$(python3 "$here/rgw_cluster.py" start "$RGW_DIR") # says how long it took
eval "$env_lines"
export S3_ENDPOINT S3_ACCESS_KEY S3_SECRET_KEY S3_REGION S3_TLS_ENDPOINT S3_CA_FILE RGW_DIR

# Two fault injectors in front of the gateway: one fails every other
# request (503 SlowDown / 500), one fails them all.
rgw_port=${S3_ENDPOINT##*:}
proxies=()
for kind in flaky:2 down:1; do
    python3 "$here/flaky_proxy.py" "$rgw_port" "$RGW_DIR/${kind%%:*}.port" --every "${kind##*:}" \
        2> "$RGW_DIR/${kind%%:*}.log" &
    proxies+=($!)
done
trap 'kill "${proxies[@]}" 2>/dev/null; cleanup' EXIT
for kind in flaky down; do
    for _ in $(seq 1 50); do [[ -s $RGW_DIR/$kind.port ]] && break; sleep 0.1; done
done
export S3_FLAKY_ENDPOINT=http://127.0.0.1:$(cat "$RGW_DIR/flaky.port") S3_FLAKY_COUNTS=$RGW_DIR/flaky.port.counts
export S3_DOWN_ENDPOINT=http://127.0.0.1:$(cat "$RGW_DIR/down.port") S3_DOWN_COUNTS=$RGW_DIR/down.port.counts

python3 "$here/rgw_cluster.py" bucket "$RGW_DIR" store-tests
S3_BUCKET=store-tests "$test_bin"
if [[ -n $library ]]; then
    python3 "$here/rgw_cluster.py" bucket "$RGW_DIR" python-tests
    S3_BUCKET=python-tests bash "$here/../python_binding.sh" "$library" "$here/../../bindings/python" -k s3
fi
bash "$here/s3_nix.sh" "$server" "$cli"
