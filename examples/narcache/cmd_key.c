/* narcache key: ed25519 signing keys in Nix's file format. */
#define _XOPEN_SOURCE 700
#include "cli.h"

#include <narcache.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char key_usage_text[] =
    "usage: narcache key generate NAME SECRET_FILE PUBLIC_FILE\n"
    "       narcache key public SECRET_FILE\n"
    "\n"
    "generate  creates a new ed25519 key pair called NAME (printable ASCII, no\n"
    "          space or ':'; conventionally host-N, e.g. cache.example.org-1)\n"
    "          in the files Nix uses, as\n"
    "          nix-store --generate-binary-cache-key: NAME:base64, no newline.\n"
    "          SECRET_FILE gets mode 0600, PUBLIC_FILE 0644 less the umask.\n"
    "          Neither file may exist: existing files are never overwritten.\n"
    "public    prints the public key (NAME:base64) of SECRET_FILE, as\n"
    "          nix key convert-secret-to-public.\n"
    "\n"
    "Key files over 4096 bytes are refused. Secret key material is never\n"
    "printed, not even in error messages.\n";

static int key_usage(FILE *to, int status) {
  fputs(key_usage_text, to);
  return status;
}

/* Text of a key in Nix's format: name (<= 255) + ':' + base64 + NUL. */
#define KEY_TEXT_MAX (NARCACHE_KEY_NAME_MAX + 90)

/* 0 if nothing is at `path` (not even a dangling symlink). */
static int check_absent(const char *path) {
  struct stat st;
  if (lstat(path, &st) == 0) {
    cli_error("%s: already exists; not overwritten", path);
    return -1;
  }
  if (errno != ENOENT) {
    cli_error("%s: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

static int key_generate(const char *name, const char *sec_path, const char *pub_path) {
  if (strcmp(sec_path, pub_path) == 0) {
    cli_error("the secret and the public key file must be different files");
    return 2;
  }
  narcache_key *sk = NULL, *pk = NULL;
  int rc = narcache_key_generate(&sk, name, strlen(name));
  if (rc == NARCACHE_EBADKEY) {
    cli_error("bad key name: 1 to %d bytes of printable ASCII, no space, no ':'",
              NARCACHE_KEY_NAME_MAX);
    return 2;
  }
  if (rc == 0 && (check_absent(sec_path) < 0 || check_absent(pub_path) < 0)) {
    narcache_key_free(sk);
    return 1;
  }

  char text[KEY_TEXT_MAX];
  size_t len = 0;
  int status = 1;
  if (rc == 0)
    rc = narcache_key_public(&pk, sk);
  if (rc == 0)
    rc = narcache_key_format(text, sizeof text, &len, sk);
  if (rc < 0) {
    cli_error("cannot generate a key: %s", narcache_strerror(rc));
    goto out;
  }
  dev_t dev = 0;
  ino_t ino = 0;
  int created = cli_create_file(sec_path, text, len, 0600, &dev, &ino) == 0;
  cli_wipe(text, sizeof text);
  if (!created)
    goto out;

  rc = narcache_key_format(text, sizeof text, &len, pk);
  mode_t mask = umask(0);
  umask(mask);
  if (rc < 0)
    cli_error("cannot format the public key: %s", narcache_strerror(rc));
  else if (cli_create_file(pub_path, text, len, 0644 & ~mask, NULL, NULL) == 0)
    status = 0;
  if (status != 0) {
    /* Take back the secret key file, if it is still the one we made. */
    struct stat st;
    if (lstat(sec_path, &st) != 0 || st.st_dev != dev || st.st_ino != ino ||
        unlink(sec_path) != 0)
      cli_error("%s: could not remove the new secret key file again", sec_path);
  }
out:
  cli_wipe(text, sizeof text);
  narcache_key_free(pk);
  narcache_key_free(sk);
  return status;
}

static int key_public(const char *sec_path) {
  narcache_key *sk = NULL, *pk = NULL;
  if (cli_load_key_file(&sk, sec_path, 1) < 0)
    return 1;
  char text[KEY_TEXT_MAX];
  size_t len = 0;
  int rc = narcache_key_public(&pk, sk);
  if (rc == 0)
    rc = narcache_key_format(text, sizeof text, &len, pk);
  narcache_key_free(pk);
  narcache_key_free(sk);
  if (rc < 0) {
    cli_error("%s: %s", sec_path, narcache_strerror(rc));
    return 1;
  }
  printf("%.*s\n", (int)len, text);
  return cli_flush_stdout() < 0 ? 1 : 0;
}

int cmd_key(int argc, char **argv) {
  if (argc < 1)
    return key_usage(stderr, 2);
  const char *sub = argv[0];
  if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0)
    return key_usage(stdout, 0);
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
      return key_usage(stdout, 0);
  int want = strcmp(sub, "generate") == 0 ? 3 : strcmp(sub, "public") == 0 ? 1 : -1;
  if (want < 0) {
    cli_error("unknown key command '%s' (see narcache key --help)", sub);
    return 2;
  }
  if (argc - 1 != want) {
    cli_error("key %s needs %s", sub, want == 3 ? "NAME SECRET_FILE PUBLIC_FILE" : "SECRET_FILE");
    return 2;
  }
  int rc = narcache_init();
  if (rc < 0) {
    cli_error("cannot initialise the library: %s", narcache_strerror(rc));
    return 1;
  }
  int status = want == 3 ? key_generate(argv[1], argv[2], argv[3]) : key_public(argv[1]);
  narcache_shutdown();
  return status;
}
