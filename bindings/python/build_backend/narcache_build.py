"""A PEP 517 build backend for the pure-Python `narcache` package, using
only the standard library (no setuptools download in an isolated build).

It builds a py3-none-any wheel of the `narcache/` directory, an sdist,
and (PEP 660) an editable wheel that points a .pth file at the sources.
"""
import base64
import hashlib
import io
import os
import tarfile
import zipfile

NAME = "narcache"
VERSION = "0.1.0"
SUMMARY = ("Python binding (ctypes, no compiled code) of libnarcache: NAR, narinfo, keys, "
           "codecs, a Nix binary-cache server")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST_INFO = "%s-%s.dist-info" % (NAME, VERSION)
TAG = "py3-none-any"


def _metadata():
    return ("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: %s\n"
            "Requires-Python: >=3.9\n" % (NAME, VERSION, SUMMARY)).encode()


def _wheel_file():
    return ("Wheel-Version: 1.0\nGenerator: narcache_build\nRoot-Is-Purelib: true\n"
            "Tag: %s\n" % TAG).encode()


def _package_files():
    """(archive name, path) of every module, sorted (reproducible)."""
    base = os.path.join(ROOT, NAME)
    return sorted(("%s/%s" % (NAME, f), os.path.join(base, f))
                  for f in os.listdir(base) if f.endswith(".py") or f == "py.typed")


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d\n" % (name, digest, len(data))


def _write_wheel(wheel_directory, entries):
    filename = "%s-%s-%s.whl" % (NAME, VERSION, TAG)
    entries = list(entries) + [("%s/METADATA" % DIST_INFO, _metadata()),
                               ("%s/WHEEL" % DIST_INFO, _wheel_file())]
    record = "".join(_record_line(name, data) for name, data in entries)
    record += "%s/RECORD,,\n" % DIST_INFO
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w",
                         zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries + [("%s/RECORD" % DIST_INFO, record.encode())]:
            wheel.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return filename


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    entries = []
    for name, path in _package_files():
        with open(path, "rb") as f:
            entries.append((name, f.read()))
    return _write_wheel(wheel_directory, entries)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, [("%s.pth" % NAME, (ROOT + "\n").encode())])


def build_sdist(sdist_directory, config_settings=None):
    base = "%s-%s" % (NAME, VERSION)
    filename = base + ".tar.gz"
    files = [("pyproject.toml", os.path.join(ROOT, "pyproject.toml"))]
    files += [("build_backend/narcache_build.py", os.path.abspath(__file__))]
    files += _package_files()
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as tar:
        pkg_info = _metadata()
        info = tarfile.TarInfo("%s/PKG-INFO" % base)
        info.size = len(pkg_info)
        tar.addfile(info, io.BytesIO(pkg_info))
        for name, path in files:
            tar.add(path, arcname="%s/%s" % (base, name))
    return filename
