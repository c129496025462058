"""`python -m narcache --version`: the package's and the library's versions."""
import sys

import narcache


def main(argv):
    if argv[1:] == ["--version"]:
        print("narcache %s (libnarcache %s)" % (narcache.__version__, narcache.library_version))
        return 0
    print("usage: python -m narcache --version", file=sys.stderr)
    return 2


sys.exit(main(sys.argv))
