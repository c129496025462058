"""narcache.S3Store: configuration errors say why (no network needed), and,
when tests/s3/run.sh provides a Ceph RADOS Gateway (S3_ENDPOINT, ...), a
Server in front of a bucket: uploads through it land in the bucket and
come back, a wrong secret key is refused with a reason."""
import os

import pytest

import narcache
from test_server import DATA, F1, get, golden_f1, put

S3 = os.environ.get("S3_ENDPOINT")
needs_gateway = pytest.mark.skipif(S3 is None, reason="run by tests/s3/run.sh (a Ceph RADOS Gateway)")


@pytest.mark.parametrize("url, says", [
    ("http://bucket", "not an s3:// URL"),
    ("s3://x", "bucket name"),
    ("s3://good-bucket?endpoint=ftp://h", "endpoint"),
    ("s3://good-bucket?region=", "region"),
])
def test_configuration_errors_say_why(url, says):
    with pytest.raises(narcache.NarcacheError) as e:
        narcache.S3Store(url, access_key="a", secret_key="b")
    assert says in str(e.value)


@needs_gateway
def test_a_server_in_front_of_a_bucket():
    url = "s3://%s/python?endpoint=%s" % (os.environ["S3_BUCKET"], S3)
    store = narcache.S3Store(url, access_key=os.environ["S3_ACCESS_KEY"],
                             secret_key=os.environ["S3_SECRET_KEY"], writable=True)
    store.check()
    assert store.probe()
    text, info, nar = golden_f1()
    token = "t0ken-for-the-python-s3-test-0123456789"
    trusted = narcache.PublicKey.parse((DATA / "keys" / "test-cache-1.pub").read_text())
    with narcache.Server(store, tokens="ci write %s\n" % token, trusted_keys=[trusted],
                         options={"max_upload_bytes": 1 << 20}) as server:
        assert get(server.url + "/%s.narinfo" % F1)[0] == 404
        assert put(server, "/" + info.url, nar, token=token)[0] in (200, 201, 204)
        assert put(server, "/%s.narinfo" % F1, text, token=token)[0] in (200, 201, 204)
        assert get(server.url + "/%s.narinfo" % F1) == (200, text)
        assert get(server.url + "/" + info.url) == (200, nar)
    wrong = narcache.S3Store(url, access_key=os.environ["S3_ACCESS_KEY"],
                             secret_key="not-the-secret-key-0123456789")
    with pytest.raises(narcache.NarcacheError) as e:
        wrong.check()
    assert "credentials were refused" in str(e.value)
