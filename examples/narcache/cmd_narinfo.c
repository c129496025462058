/* narcache narinfo: fingerprint, sign and verify .narinfo files. */
#define _XOPEN_SOURCE 700
#include "cli.h"

#include <narcache.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char narinfo_usage_text[] =
    "usage: narcache narinfo fingerprint [--store-dir DIR] FILE\n"
    "       narcache narinfo sign --key-file SECRET_FILE [--key-file ...]\n"
    "                             [--store-dir DIR] FILE...\n"
    "       narcache narinfo verify --trusted-key NAME:BASE64 [--trusted-key ...]\n"
    "                               [--trusted-key-file PUBLIC_FILE ...]\n"
    "                               [--store-dir DIR] FILE...\n"
    "\n"
    "fingerprint  prints what a signature covers:\n"
    "             1;<StorePath>;sha256:<NarHash>;<NarSize>;<references, full paths>\n"
    "sign         signs each FILE with every key (a Sig by a key of the same\n"
    "             name is replaced) and rewrites it atomically in Nix's canonical\n"
    "             form, keeping its mode (unknown fields are dropped). A FILE that\n"
    "             does not parse is reported and left alone; the others are\n"
    "             still signed.\n"
    "verify       prints one line per FILE: 'FILE: ok (KEY)', 'FILE: no signature\n"
    "             by a trusted key', 'FILE: bad signature (KEY)' or 'FILE:\n"
    "             malformed narinfo: ...'. Trusted keys work as Nix's\n"
    "             trusted-public-keys: matched by name, the first key given with\n"
    "             a name wins. Only signatures count; a CA field is not taken\n"
    "             as proof (Nix accepts CA paths without a signature). At\n"
    "             least one trusted key (--trusted-key or a public key file\n"
    "             given with --trusted-key-file) is needed.\n"
    "\n"
    "--store-dir DIR  the store directory of the cache (default /nix/store).\n"
    "Exit status: 0 if every FILE was handled (verify: verified), 1 otherwise,\n"
    "2 on bad usage.\n";

static int narinfo_usage(FILE *to, int status) {
  fputs(narinfo_usage_text, to);
  return status;
}

enum { CMD_FINGERPRINT, CMD_SIGN, CMD_VERIFY };

/* A trusted key as given on the command line. */
typedef struct key_arg {
  int is_file;
  const char *value;
} key_arg;

typedef struct narinfo_options {
  const char *store_dir;
  key_arg *keys; /* --key-file (sign) or --trusted-key[-file] (verify), in order */
  size_t n_keys;
  char **files;
  size_t n_files;
} narinfo_options;

/* Returns 0, 1 for --help, or 2 (bad usage, reported). */
static int parse_options(int cmd, int argc, char **argv, narinfo_options *o) {
  o->store_dir = NULL;
  o->n_keys = 0;
  o->n_files = 0;
  o->keys = calloc((size_t)argc + 1, sizeof *o->keys);
  o->files = calloc((size_t)argc + 1, sizeof *o->files);
  if (o->keys == NULL || o->files == NULL) {
    cli_error("out of memory");
    return 2;
  }
  int only_files = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v;
    int missing = 0;
    if (only_files || a[0] != '-' || a[1] == '\0') {
      o->files[o->n_files++] = argv[i];
    } else if (strcmp(a, "--") == 0) {
      only_files = 1;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      return 1;
    } else if ((v = cli_option_value(argc, argv, &i, "--store-dir", &missing)) != NULL) {
      o->store_dir = v;
    } else if (cmd == CMD_SIGN &&
               (v = cli_option_value(argc, argv, &i, "--key-file", &missing)) != NULL) {
      o->keys[o->n_keys++] = (key_arg){1, v};
    } else if (cmd == CMD_VERIFY &&
               (v = cli_option_value(argc, argv, &i, "--trusted-key-file", &missing)) != NULL) {
      o->keys[o->n_keys++] = (key_arg){1, v};
    } else if (cmd == CMD_VERIFY &&
               (v = cli_option_value(argc, argv, &i, "--trusted-key", &missing)) != NULL) {
      o->keys[o->n_keys++] = (key_arg){0, v};
    } else {
      if (missing)
        cli_error("option '%s' needs a value", a);
      else
        cli_error("unknown option '%s' (see narcache narinfo --help)", a);
      return 2;
    }
  }
  if (o->n_files == 0) {
    cli_error("no narinfo file given");
    return 2;
  }
  if (cmd == CMD_FINGERPRINT && o->n_files != 1) {
    cli_error("narinfo fingerprint takes one file");
    return 2;
  }
  if (cmd == CMD_SIGN && o->n_keys == 0) {
    cli_error("narinfo sign needs --key-file");
    return 2;
  }
  if (cmd == CMD_VERIFY && o->n_keys == 0) {
    cli_error("narinfo verify needs --trusted-key or --trusted-key-file");
    return 2;
  }
  return 0;
}

/* Load the keys of `o`: secret key files for sign, public keys for verify.
 * Returns 0, 1 (a key file failed) or 2 (a --trusted-key value is bad). */
static int load_keys(narcache_key **keys, const narinfo_options *o, int secret) {
  for (size_t i = 0; i < o->n_keys; i++) {
    const key_arg *k = &o->keys[i];
    if (k->is_file) {
      if (cli_load_key_file(&keys[i], k->value, secret) < 0)
        return 1;
      continue;
    }
    size_t at = 0;
    int rc = narcache_key_parse_public(&keys[i], k->value, strlen(k->value), &at);
    if (rc == NARCACHE_EBADKEY) {
      /* The value is not echoed: it might be a secret key pasted by mistake. */
      cli_error("--trusted-key #%zu: not a public key NAME:BASE64 (error at byte %zu)", i + 1,
                at);
      return 2;
    }
    if (rc < 0) {
      cli_error("--trusted-key #%zu: %s", i + 1, narcache_strerror(rc));
      return 1;
    }
  }
  if (secret) /* two keys of one name would silently keep only the last Sig */
    for (size_t i = 0; i < o->n_keys; i++)
      for (size_t j = 0; j < i; j++)
        if (strcmp(narcache_key_name(keys[i], NULL), narcache_key_name(keys[j], NULL)) == 0) {
          cli_error("%s and %s: both keys are called '%s'", o->keys[j].value, o->keys[i].value,
                    narcache_key_name(keys[i], NULL));
          return 2;
        }
  return 0;
}

/* Parse FILE into `ni`. On failure returns NULL and describes the problem
 * in err[0..err_size); *malformed says whether the file was read but did
 * not parse. */
static char *load_narinfo(narcache_narinfo *ni, const char *path, size_t *len, struct stat *st,
                          char *err, size_t err_size, int *malformed) {
  *malformed = 0;
  char *text = cli_read_file(path, NARCACHE_NARINFO_MAX_BYTES, len, st, err, err_size);
  if (text == NULL)
    return NULL;
  int rc = narcache_narinfo_parse(ni, text, *len);
  if (rc < 0) {
    const char *msg = narcache_narinfo_errmsg(ni);
    snprintf(err, err_size, "%s", msg[0] != '\0' ? msg : narcache_strerror(rc));
    *malformed = rc == NARCACHE_EBADNARINFO || rc == NARCACHE_ELIMIT;
    free(text);
    return NULL;
  }
  return text;
}

static int narinfo_fingerprint(narcache_narinfo *ni, const narinfo_options *o) {
  const char *path = o->files[0];
  char err[512];
  size_t len = 0;
  int malformed = 0;
  char *text = load_narinfo(ni, path, &len, NULL, err, sizeof err, &malformed);
  if (text == NULL) {
    cli_error("%s: %s", path, err);
    return 1;
  }
  free(text);
  char *fp = NULL;
  size_t fp_len = 0;
  int rc = narcache_narinfo_fingerprint(&fp, &fp_len, ni);
  if (rc < 0) {
    cli_error("%s: no fingerprint: %s", path, narcache_strerror(rc));
    return 1;
  }
  fwrite(fp, 1, fp_len, stdout);
  fputc('\n', stdout);
  narcache_free(fp);
  return cli_flush_stdout() < 0 ? 1 : 0;
}

static int sign_one(narcache_narinfo *ni, const char *path, narcache_key *const *keys,
                    size_t n_keys) {
  char err[512];
  size_t len = 0;
  struct stat st;
  int malformed = 0;
  char *text = load_narinfo(ni, path, &len, &st, err, sizeof err, &malformed);
  if (text == NULL) {
    cli_error("%s: %s", path, err);
    return 1;
  }
  int status = 1, rc = 0;
  char *out = NULL;
  size_t out_len = 0;
  if (!S_ISREG(st.st_mode)) {
    cli_error("%s: not a regular file", path);
    goto done;
  }
  for (size_t k = 0; k < n_keys && rc == 0; k++)
    rc = narcache_narinfo_sign(ni, keys[k]);
  if (rc == 0)
    rc = narcache_narinfo_format(&out, &out_len, ni);
  if (rc < 0) {
    cli_error("%s: cannot sign: %s", path, narcache_strerror(rc));
    goto done;
  }
  /* Already signed and canonical: leave the file (and its mtime) alone. */
  if (out_len == len && memcmp(out, text, len) == 0)
    status = 0;
  else if (cli_replace_file(path, out, out_len, &st) == 0)
    status = 0;
done:
  narcache_free(out);
  free(text);
  return status;
}

static int narinfo_sign(narcache_narinfo *ni, const narinfo_options *o) {
  narcache_key **keys = calloc(o->n_keys, sizeof *keys);
  if (keys == NULL) {
    cli_error("out of memory");
    return 1;
  }
  int status = load_keys(keys, o, 1);
  if (status == 0)
    for (size_t i = 0; i < o->n_files; i++)
      status |= sign_one(ni, o->files[i], keys, o->n_keys);
  for (size_t i = 0; i < o->n_keys; i++)
    narcache_key_free(keys[i]);
  free(keys);
  return status;
}

/* One verdict line for `path`; returns 0 only if it verified. */
static int verify_one(narcache_narinfo *ni, const char *path, const narcache_key *const *keys,
                      size_t n_keys) {
  char err[512];
  size_t len = 0;
  int malformed = 0;
  char *text = load_narinfo(ni, path, &len, NULL, err, sizeof err, &malformed);
  if (text == NULL) {
    printf("%s: %s: %s\n", path, malformed ? "malformed narinfo" : "cannot read", err);
    return 1;
  }
  free(text);
  const narcache_key *which = NULL;
  int rc = narcache_narinfo_verify(&which, ni, keys, n_keys);
  const char *name = which != NULL ? narcache_key_name(which, NULL) : "?";
  switch (rc) {
  case NARCACHE_OK:
    printf("%s: ok (%s)\n", path, name);
    return 0;
  case NARCACHE_ENOTFOUND:
    printf("%s: no signature by a trusted key\n", path);
    return 1;
  case NARCACHE_EBADSIG:
    printf("%s: bad signature (%s)\n", path, name);
    return 1;
  case NARCACHE_EBADNARINFO:
    printf("%s: malformed narinfo: no fingerprint (StorePath, NarHash or NarSize missing)\n",
           path);
    return 1;
  default:
    printf("%s: error: %s\n", path, narcache_strerror(rc));
    return 1;
  }
}

static int narinfo_verify(narcache_narinfo *ni, const narinfo_options *o) {
  narcache_key **keys = calloc(o->n_keys, sizeof *keys);
  if (keys == NULL) {
    cli_error("out of memory");
    return 1;
  }
  int status = load_keys(keys, o, 0);
  if (status == 0) {
    for (size_t i = 0; i < o->n_files; i++)
      status |= verify_one(ni, o->files[i], (const narcache_key *const *)keys, o->n_keys);
    if (cli_flush_stdout() < 0)
      status = 1;
  }
  for (size_t i = 0; i < o->n_keys; i++)
    narcache_key_free(keys[i]);
  free(keys);
  return status;
}

int cmd_narinfo(int argc, char **argv) {
  if (argc < 1)
    return narinfo_usage(stderr, 2);
  const char *sub = argv[0];
  if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0)
    return narinfo_usage(stdout, 0);
  int cmd = strcmp(sub, "fingerprint") == 0 ? CMD_FINGERPRINT
            : strcmp(sub, "sign") == 0      ? CMD_SIGN
            : strcmp(sub, "verify") == 0    ? CMD_VERIFY
                                            : -1;
  if (cmd < 0) {
    cli_error("unknown narinfo command '%s' (see narcache narinfo --help)", sub);
    return 2;
  }
  narinfo_options o;
  int status = parse_options(cmd, argc - 1, argv + 1, &o);
  narcache_narinfo *ni = NULL;
  int initialised = 0;
  if (status == 1) {
    status = narinfo_usage(stdout, 0);
    goto out;
  }
  if (status != 0)
    goto out;
  int rc = narcache_init();
  if (rc < 0) {
    cli_error("cannot initialise the library: %s", narcache_strerror(rc));
    status = 1;
    goto out;
  }
  initialised = 1;
  rc = narcache_narinfo_new(&ni, o.store_dir);
  if (rc < 0) {
    if (rc == NARCACHE_EINVAL && o.store_dir != NULL) {
      cli_error("--store-dir '%s': must be an absolute path without a trailing '/'", o.store_dir);
      status = 2;
    } else {
      cli_error("%s", narcache_strerror(rc));
      status = 1;
    }
    goto out;
  }
  status = cmd == CMD_FINGERPRINT ? narinfo_fingerprint(ni, &o)
           : cmd == CMD_SIGN      ? narinfo_sign(ni, &o)
                                  : narinfo_verify(ni, &o);
out:
  narcache_narinfo_free(ni);
  if (initialised)
    narcache_shutdown();
  free(o.keys);
  free(o.files);
  return status;
}
