/* narcache -- command-line front end to libnarcache (public API only). */
#include "cli.h"

#include <narcache.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char usage_text[] =
    "usage: narcache COMMAND ...\n"
    "\n"
    "  nar dump PATH              write the NAR of PATH to stdout (as nix-store --dump)\n"
    "  nar restore DEST           restore the NAR on stdin to DEST (as nix-store --restore)\n"
    "  nar ls [--json]            list the NAR on stdin (--json: the .ls file Nix writes)\n"
    "  nar hash [--base16|--sri] PATH\n"
    "                             NAR hash of PATH, as narinfo NarHash (sha256:<nix32>)\n"
    "  hash file [--type ALGO] [--base16|--base32|--base64|--sri] FILE...\n"
    "  hash convert [--type ALGO] [--to base16|base32|base64|sri] HASH...\n"
    "  key generate NAME SECRET_FILE PUBLIC_FILE\n"
    "                             new key pair (as nix-store --generate-binary-cache-key)\n"
    "  key public SECRET_FILE     print the public key of a secret key\n"
    "  narinfo fingerprint [--store-dir DIR] FILE\n"
    "                             print what a narinfo signature covers\n"
    "  narinfo sign --key-file SECRET_FILE... [--store-dir DIR] FILE...\n"
    "                             sign narinfo files in place\n"
    "  narinfo verify --trusted-key NAME:BASE64... [--store-dir DIR] FILE...\n"
    "                             check narinfo signatures (also --trusted-key-file)\n"
    "  cache add --to DIR|s3://BUCKET --key-file F [--compression zstd|none] [--jobs N] [--closure] PATH...\n"
    "                             write store paths into a binary-cache directory\n"
    "  version\n"
    "\n"
    "Run 'narcache nar --help' (key --help, narinfo --help) for the options.\n"
    "Exit status 0 on success, 1 on failure (one line on stderr names the\n"
    "problem; narinfo verify prints one verdict per file on stdout), 2 on bad usage.\n";

void cli_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("narcache: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage_text, stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    fputs(usage_text, stdout);
    return 0;
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("narcache %s (headers %s)\n", narcache_version_string(), NARCACHE_VERSION_STRING);
    return 0;
  }
  if (strcmp(cmd, "hash") == 0)
    return cmd_hash(argc - 2, argv + 2);
  if (strcmp(cmd, "nar") == 0)
    return cmd_nar(argc - 2, argv + 2);
  if (strcmp(cmd, "cache") == 0)
    return cmd_cache(argc - 2, argv + 2);
  if (strcmp(cmd, "key") == 0)
    return cmd_key(argc - 2, argv + 2);
  if (strcmp(cmd, "narinfo") == 0)
    return cmd_narinfo(argc - 2, argv + 2);
  cli_error("unknown command '%s' (see narcache --help)", cmd);
  return 2;
}
