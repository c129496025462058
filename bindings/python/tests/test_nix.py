"""The binding against the real Nix 2.8 client: the README's example
builds and signs a cache of a closure that `nix store verify` accepts
(and refuses with another key), a Server started from Python serves it
to `nix copy` with signatures required, and the live Nix store served
from Python (NixStore, signing on the fly) does too."""
import os
import re
import subprocess
from pathlib import Path

import pytest

import narcache

ROOT = Path(__file__).resolve().parents[3]
NIX = ["nix", "--extra-experimental-features", "nix-command"]
NIXOPTS = ["--option", "sandbox", "false", "--option", "build-users-group", "",
           "--option", "substituters", ""]

DERIVATION = r'''
derivation {
  name = "narcache-python-demo";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir $out; echo ${./input} > $out/ref; /bin/cp -r ${./tree} $out/tree; /bin/ln -s ${./tree} $out/tree-link" ];
}
'''


def run(args, **kw):
    env = dict(os.environ)
    env.pop("NIX_REMOTE", None)
    env.update(kw.pop("env", {}))
    return subprocess.run(args, check=kw.pop("check", True), capture_output=True, text=True,
                          env=env, **kw)


@pytest.fixture(scope="module")
def closure(tmp_path_factory):
    """A built store path referring to two added ones (a file, a tree)."""
    src = tmp_path_factory.mktemp("src")
    (src / "tree" / "sub").mkdir(parents=True)
    (src / "input").write_text("narcache python test input %d\n" % os.getpid())
    (src / "tree" / "a").write_text("a\n")
    (src / "tree" / "sub" / "b.sh").write_text("#!/bin/sh\necho b\n")
    os.chmod(src / "tree" / "sub" / "b.sh", 0o755)
    os.symlink("a", src / "tree" / "link")
    (src / "tree" / "big").write_bytes(os.urandom(200000))
    (src / "default.nix").write_text(DERIVATION)
    built = run(["nix-build"] + NIXOPTS + ["--no-out-link", str(src / "default.nix")])
    path = built.stdout.strip().splitlines()[-1]
    paths = run(["nix-store", "--query", "--requisites", path]).stdout.split()
    assert len(paths) >= 3
    return path, paths


def readme_example():
    """The first Python block of the README's "## Python" section, run."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md (Python example)", "exec"), namespace)
    return namespace["add_closure"]


@pytest.fixture(scope="module")
def signed_cache(closure, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    key = narcache.SecretKey.generate("python-cache-1")
    key.save(tmp / "sec", tmp / "pub")
    cache = tmp / "cache"
    readme_example()(str(cache), closure[0], key)
    return cache, (tmp / "pub").read_text(), key


def nix_verify(cache, public_key, paths, tmp_path):
    return run(NIX + ["store", "verify", "--store", "file://%s" % cache,
                      "--trusted-public-keys", public_key, "--sigs-needed", "1"] + paths,
               env={"XDG_CACHE_HOME": str(tmp_path / "xdg-verify")}, check=False)


def test_a_cache_signed_in_python_verifies_with_nix(closure, signed_cache, tmp_path):
    cache, public_key, _ = signed_cache
    _, paths = closure
    assert len(list(cache.glob("*.narinfo"))) == len(paths)
    result = nix_verify(cache, public_key, paths, tmp_path)
    assert result.returncode == 0, result.stderr
    other = str(narcache.SecretKey.generate("python-cache-1").public_key)  # same name
    result = nix_verify(cache, other, paths, tmp_path)
    assert result.returncode != 0
    assert result.stderr.count("is untrusted") == len(paths), result.stderr


def copy_from(url, public_key, path, root, tmp_path):
    return run(NIX + ["copy"] + NIXOPTS + ["--option", "require-sigs", "true",
                                           "--option", "trusted-public-keys", public_key,
                                           "--from", url, "--to", "local?root=%s" % root, path],
               env={"XDG_CACHE_HOME": str(tmp_path / ("xdg-" + root.name))}, check=False)


def assert_same_nars(paths, root):
    for p in paths:
        assert narcache.nar.dump(root / p.lstrip("/")) == narcache.nar.dump(p), p


def test_a_server_started_from_python_serves_the_nix_client(closure, signed_cache, tmp_path):
    cache, public_key, _ = signed_cache
    path, paths = closure
    routes = []
    with narcache.Server(cache, access=lambda r: routes.append((r.route, r.status))) as server:
        root = tmp_path / "root"
        result = copy_from(server.url, public_key, path, root, tmp_path)
        assert result.returncode == 0, result.stderr
        assert_same_nars(paths, root)
        wrong = tmp_path / "wrong"
        other = str(narcache.SecretKey.generate("python-cache-1").public_key)
        result = copy_from(server.url, other, path, wrong, tmp_path)
        assert result.returncode != 0
    assert ("narinfo", 200) in routes and ("nar", 200) in routes


def test_the_live_nix_store_served_from_python(closure, tmp_path):
    path, paths = closure
    key = narcache.SecretKey.generate("python-live-1")
    with narcache.Server("nix", keys=[key]) as server:
        hash_part = os.path.basename(path)[:32]
        text = run(["curl", "-sf", "%s/%s.narinfo" % (server.url, hash_part)]).stdout
        info = narcache.NarInfo.parse(text)
        assert info.store_path == path
        assert info.verify([key.public_key]).name == "python-live-1"
        root = tmp_path / "live"
        result = copy_from(server.url, str(key.public_key), path, root, tmp_path)
        assert result.returncode == 0, result.stderr
        assert_same_nars(paths, root)
