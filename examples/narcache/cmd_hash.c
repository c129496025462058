/* narcache hash: hashing and hash-string conversion, as nix-hash / nix hash. */
#include "cli.h"

#include <narcache.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int hash_usage(void) {
  fputs("usage: narcache hash file [--type ALGO] [--base16|--base32|--base64|--sri] FILE...\n"
        "       narcache hash convert [--type ALGO] [--to base16|base32|base64|sri] HASH...\n",
        stderr);
  return 2;
}

static int parse_encoding(const char *flag) {
  if (strcmp(flag, "base16") == 0)
    return NARCACHE_HASH_BASE16;
  if (strcmp(flag, "base32") == 0 || strcmp(flag, "nix32") == 0)
    return NARCACHE_HASH_NIX32;
  if (strcmp(flag, "base64") == 0)
    return NARCACHE_HASH_BASE64;
  if (strcmp(flag, "sri") == 0)
    return NARCACHE_HASH_SRI;
  return -1;
}

static int print_hash(const narcache_hash *h, int encoding) {
  char text[NARCACHE_HASH_STRING_MAX];
  int rc = narcache_hash_format(text, sizeof text, NULL, h, encoding,
                                encoding == NARCACHE_HASH_SRI);
  if (rc < 0) {
    fprintf(stderr, "narcache: %s\n", narcache_strerror(rc));
    return 1;
  }
  puts(text);
  return 0;
}

static int hash_file(const char *path, int algo, int encoding) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "narcache: %s: %s\n", path, strerror(errno));
    return 1;
  }
  narcache_hasher *h = NULL;
  int rc = narcache_hasher_new(&h, algo);
  static unsigned char buf[1 << 16];
  size_t n;
  while (rc == 0 && (n = fread(buf, 1, sizeof buf, f)) > 0)
    rc = narcache_hasher_update(h, buf, n);
  int read_failed = ferror(f);
  fclose(f);
  narcache_hash digest;
  if (rc == 0 && !read_failed)
    rc = narcache_hasher_final(h, &digest);
  narcache_hasher_free(h);
  if (read_failed) {
    fprintf(stderr, "narcache: %s: read error\n", path);
    return 1;
  }
  if (rc < 0) {
    fprintf(stderr, "narcache: %s: %s\n", path, narcache_strerror(rc));
    return 1;
  }
  return print_hash(&digest, encoding);
}

static int convert_hash(const char *text, int algo, int encoding) {
  narcache_hash h;
  size_t where = 0;
  int rc = algo > 0 ? narcache_hash_parse_as(&h, algo, text, strlen(text), &where)
                    : narcache_hash_parse(&h, text, strlen(text), &where);
  if (rc < 0) {
    fprintf(stderr, "narcache: '%s': %s (%s) at offset %zu\n", text,
            narcache_strerror(rc), narcache_errname(rc), where);
    return 1;
  }
  return print_hash(&h, encoding);
}

int cmd_hash(int argc, char **argv) {
  if (argc < 1)
    return hash_usage();
  int is_file = strcmp(argv[0], "file") == 0;
  if (!is_file && strcmp(argv[0], "convert") != 0)
    return hash_usage();
  int algo = is_file ? NARCACHE_HASH_SHA256 : 0;
  int encoding = is_file ? NARCACHE_HASH_SRI : NARCACHE_HASH_NIX32;
  int i = 1, status = 0;
  for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
    if (strcmp(argv[i], "--type") == 0 && i + 1 < argc) {
      algo = narcache_hash_algo_from_name(argv[i + 1], strlen(argv[i + 1]));
      if (algo < 0) {
        fprintf(stderr, "narcache: unknown hash type '%s'\n", argv[i + 1]);
        return 2;
      }
      i++;
    } else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
      encoding = parse_encoding(argv[++i]);
    } else {
      encoding = parse_encoding(argv[i] + 2);
    }
    if (encoding < 0)
      return hash_usage();
  }
  if (i == argc)
    return hash_usage();
  for (; i < argc; i++)
    status |= is_file ? hash_file(argv[i], algo, encoding)
                      : convert_hash(argv[i], algo, encoding);
  return status;
}

