/* narcache nar: dump, restore, list and hash NARs. */
#include "cli.h"

#include <narcache.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char nar_usage_text[] =
    "usage: narcache nar dump PATH\n"
    "       narcache nar restore [--max-depth N] DEST   < NAR\n"
    "       narcache nar ls [--json] [--max-depth N]    < NAR\n"
    "       narcache nar hash [--base16|--sri] PATH\n"
    "\n"
    "dump     writes the NAR of PATH to stdout, byte for byte as nix-store --dump.\n"
    "restore  creates DEST (which must not exist) from the NAR on stdin; on any\n"
    "         error nothing is left behind. Modes: dirs 0755, files 0644/0755.\n"
    "ls       lists the NAR on stdin: one ./path per line (as nix nar ls -R),\n"
    "         or with --json the .ls document Nix writes (write-nar-listing).\n"
    "hash     prints the NAR hash of PATH as sha256:<nix32> (the narinfo NarHash\n"
    "         form), or as base16 / SRI.\n"
    "\n"
    "NARs are parsed strictly (as newer Nix): nesting depth below 64 unless\n"
    "--max-depth raises it, names up to 255 bytes, targets up to 4095 bytes.\n";

static int nar_usage(FILE *to, int status) {
  fputs(nar_usage_text, to);
  return status;
}

/* ---- options -------------------------------------------------------------- */

typedef struct nar_options {
  int json;
  int encoding;
  uint64_t max_depth;
  const char *path;
} nar_options;

static int parse_options(int argc, char **argv, nar_options *o) {
  o->json = 0;
  o->encoding = NARCACHE_HASH_NIX32;
  o->max_depth = 0;
  o->path = NULL;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--json") == 0) {
      o->json = 1;
    } else if (strcmp(a, "--base16") == 0) {
      o->encoding = NARCACHE_HASH_BASE16;
    } else if (strcmp(a, "--sri") == 0) {
      o->encoding = NARCACHE_HASH_SRI;
    } else if (strcmp(a, "--base32") == 0) {
      o->encoding = NARCACHE_HASH_NIX32;
    } else if (strcmp(a, "--max-depth") == 0 && i + 1 < argc) {
      char *end;
      errno = 0;
      unsigned long long v = strtoull(argv[++i], &end, 10);
      if (errno != 0 || *end != '\0' || v == 0) {
        cli_error("--max-depth needs a positive number");
        return -1;
      }
      o->max_depth = v;
    } else if (a[0] == '-' && a[1] != '\0') {
      cli_error("unknown option '%s' (see narcache nar --help)", a);
      return -1;
    } else if (o->path == NULL) {
      o->path = a;
    } else {
      cli_error("unexpected argument '%s'", a);
      return -1;
    }
  }
  return 0;
}

/* ---- dump / hash ---------------------------------------------------------- */

static int nar_dump(const nar_options *o) {
  char err[512];
  int rc = narcache_nar_dump_path_to_fd(NULL, o->path, STDOUT_FILENO, err, sizeof err);
  if (rc < 0) {
    cli_error("%s", err[0] != '\0' ? err : narcache_strerror(rc));
    return 1;
  }
  return 0;
}

static int nar_hash(const nar_options *o) {
  char err[512], text[NARCACHE_HASH_STRING_MAX];
  narcache_hash h;
  int rc = narcache_nar_hash_path(&h, NULL, o->path, err, sizeof err);
  if (rc < 0) {
    cli_error("%s", err[0] != '\0' ? err : narcache_strerror(rc));
    return 1;
  }
  narcache_hash_format(text, sizeof text, NULL, &h, o->encoding, 1);
  puts(text);
  return 0;
}

/* ---- restore ---------------------------------------------------------------- */

#define CHUNK (1024 * 1024)

static int read_chunk(char *buf, size_t *len) {
  for (;;) {
    ssize_t n = read(STDIN_FILENO, buf, CHUNK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      cli_error("cannot read the NAR from stdin: %s", strerror(errno));
      return -1;
    }
    *len = (size_t)n;
    return 0;
  }
}

static int nar_restore(const nar_options *o) {
  narcache_nar_restorer *r = NULL;
  static char buf[CHUNK];
  int rc = narcache_nar_restorer_new(&r);
  if (rc == 0 && o->max_depth != 0)
    rc = narcache_nar_restorer_set_limit(r, NARCACHE_NAR_LIMIT_DEPTH, o->max_depth);
  if (rc == 0)
    rc = narcache_nar_restorer_open(r, NARCACHE_AT_FDCWD, o->path);
  while (rc >= 0) {
    size_t n;
    if (read_chunk(buf, &n) < 0) {
      narcache_nar_restorer_free(r);
      return 1;
    }
    if (n == 0) {
      rc = narcache_nar_restorer_finish(r);
      break;
    }
    narcache_inbuf in = {buf, n, 0};
    rc = narcache_nar_restorer_write(r, &in);
  }
  if (rc < 0) {
    const char *msg = narcache_nar_restorer_errmsg(r);
    cli_error("%s", msg[0] != '\0' ? msg : narcache_strerror(rc));
  }
  narcache_nar_restorer_free(r);
  return rc < 0 ? 1 : 0;
}

/* ---- ls ----------------------------------------------------------------------- */

static int nar_ls_json(const nar_options *o) {
  narcache_nar_lister *l = NULL;
  static char buf[CHUNK];
  int rc = narcache_nar_lister_new(&l);
  if (rc == 0 && o->max_depth != 0)
    rc = narcache_nar_lister_set_limit(l, NARCACHE_NAR_LIMIT_DEPTH, o->max_depth);
  size_t n = 1;
  while (rc >= 0 && n > 0) {
    if (read_chunk(buf, &n) < 0) {
      narcache_nar_lister_free(l);
      return 1;
    }
    narcache_inbuf in = {buf, n, 0};
    rc = narcache_nar_lister_write(l, &in);
  }
  char *json = NULL;
  size_t len = 0;
  if (rc >= 0)
    rc = narcache_nar_lister_finish(l, &json, &len);
  if (rc < 0) {
    const char *msg = narcache_nar_lister_errmsg(l);
    cli_error("%s", msg[0] != '\0' ? msg : narcache_strerror(rc));
  } else {
    fwrite(json, 1, len, stdout);
  }
  narcache_free(json);
  narcache_nar_lister_free(l);
  return rc < 0 ? 1 : 0;
}

/* Paths as `nix nar ls -R`: "./a", "./d/e". `path` holds the current
 * directory's path; `ends` the length to cut back to at each DIR_END. */
typedef struct ls_state {
  char *path;
  size_t len, cap;
  size_t *ends;
  size_t depth, ends_cap;
} ls_state;

static int ls_push_name(ls_state *s, const char *name, size_t name_len) {
  if (s->len + name_len + 2 > s->cap) {
    size_t cap = (s->len + name_len + 2) * 2;
    char *p = realloc(s->path, cap);
    if (p == NULL)
      return -1;
    s->path = p;
    s->cap = cap;
  }
  s->path[s->len++] = '/';
  memcpy(s->path + s->len, name, name_len);
  s->len += name_len;
  s->path[s->len] = '\0';
  return 0;
}

static int ls_event(ls_state *s, const narcache_nar_event *ev, size_t *entry_start) {
  switch (ev->type) {
  case NARCACHE_NAR_ENTRY:
    *entry_start = s->len;
    if (ls_push_name(s, ev->name, ev->name_len) < 0)
      return -1;
    printf(".%s\n", s->path);
    return 0;
  case NARCACHE_NAR_DIR_BEGIN:
    if (s->depth == s->ends_cap) {
      size_t cap = s->ends_cap ? s->ends_cap * 2 : 16;
      size_t *e = realloc(s->ends, cap * sizeof *e);
      if (e == NULL)
        return -1;
      s->ends = e;
      s->ends_cap = cap;
    }
    s->ends[s->depth++] = *entry_start;
    return 0;
  case NARCACHE_NAR_DIR_END:
    s->len = s->ends[--s->depth];
    *entry_start = s->len;
    return 0;
  case NARCACHE_NAR_FILE_END:
  case NARCACHE_NAR_SYMLINK:
    s->len = *entry_start;
    return 0;
  default:
    return 0;
  }
}

static int nar_ls_paths(const nar_options *o) {
  narcache_nar_parser *p = NULL;
  static char buf[CHUNK];
  ls_state s = {NULL, 0, 0, NULL, 0, 0};
  size_t entry_start = 0;
  int rc = narcache_nar_parser_new(&p);
  if (rc == 0 && o->max_depth != 0)
    rc = narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_DEPTH, o->max_depth);
  size_t n = 1;
  while (rc >= 0 && n > 0) {
    if (read_chunk(buf, &n) < 0) {
      rc = NARCACHE_EIO;
      break;
    }
    narcache_inbuf in = {buf, n, 0};
    narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
    while ((rc = narcache_nar_parser_next(p, &in, &ev)) > 0)
      if (ls_event(&s, &ev, &entry_start) < 0) {
        cli_error("out of memory");
        rc = NARCACHE_ENOMEM;
        break;
      }
  }
  if (rc >= 0)
    rc = narcache_nar_parser_finish(p);
  if (rc < 0 && rc != NARCACHE_EIO && rc != NARCACHE_ENOMEM)
    cli_error("%s", narcache_nar_parser_errmsg(p));
  free(s.path);
  free(s.ends);
  narcache_nar_parser_free(p);
  return rc < 0 ? 1 : 0;
}

/* ---- dispatch --------------------------------------------------------------------- */

int cmd_nar(int argc, char **argv) {
  if (argc < 1)
    return nar_usage(stderr, 2);
  const char *sub = argv[0];
  if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0)
    return nar_usage(stdout, 0);
  nar_options o;
  if (parse_options(argc - 1, argv + 1, &o) < 0)
    return 2;
  int needs_path = strcmp(sub, "ls") != 0;
  if (needs_path != (o.path != NULL)) {
    cli_error(needs_path ? "nar %s needs a path" : "nar %s reads the NAR from stdin", sub);
    return 2;
  }
  if (strcmp(sub, "dump") == 0)
    return nar_dump(&o);
  if (strcmp(sub, "restore") == 0)
    return nar_restore(&o);
  if (strcmp(sub, "hash") == 0)
    return nar_hash(&o);
  if (strcmp(sub, "ls") == 0)
    return o.json ? nar_ls_json(&o) : nar_ls_paths(&o);
  cli_error("unknown nar command '%s' (see narcache nar --help)", sub);
  return 2;
}
