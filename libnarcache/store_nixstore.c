/* The "nixstore" backend: a live local Nix store served as a binary cache.
 * Metadata from Nix's SQLite database (read-only), NARs dumped on the fly,
 * narinfo signed on the fly. */
#define _GNU_SOURCE
#include "common_internal.h"
#include "narcache/compress.h"
#include "narcache/nar.h"
#include "narcache/narinfo.h"
#include "narcache/store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_DB "/nix/var/nix/db/db.sqlite"
#define DEFAULT_PRIORITY 30
#define NIX32_SHA256 52
/* How long a lookup waits for Nix's database before saying "unavailable". */
#define BUSY_TIMEOUT_MS 2000

typedef struct nixstore {
  char *store_dir;
  size_t store_dir_len;
  sqlite3 *db;
  sqlite3_stmt *q_path, *q_refs;
  pthread_mutex_t lock; /* one connection, short queries */
  const narcache_key **keys;
  size_t n_keys;
  int32_t priority;
  int codec; /* NARCACHE_CODEC_NONE or _ZSTD */
  int level;
} nixstore;

/* ------------------------------------------------------------------ */
/* Database                                                            */
/* ------------------------------------------------------------------ */

static int from_sqlite(int rc) {
  switch (rc & 0xff) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
  case SQLITE_NOMEM:
  case SQLITE_PROTOCOL:
    return NARCACHE_EUNAVAIL;
  case SQLITE_CANTOPEN:
    return NARCACHE_ENOTFOUND;
  default:
    return NARCACHE_EIO;
  }
}

static int column_text(sqlite3_stmt *st, int col, const char **text, size_t *len) {
  *text = (const char *)sqlite3_column_text(st, col);
  *len = (size_t)sqlite3_column_bytes(st, col);
  return *text != NULL;
}

/* The base name of a full path in our store, or NULL. */
static const char *base_of(const nixstore *s, const char *path, size_t len, size_t *base_len) {
  const char *base = NULL;
  if (narcache_store_path_parse(&base, path, len, s->store_dir, NULL) < 0)
    return NULL;
  *base_len = len - (size_t)(base - path);
  return base;
}

/* Fill `ni` from the row in q_path (already stepped to SQLITE_ROW). */
static int fill_from_row(nixstore *s, narcache_narinfo *ni, int64_t *id) {
  sqlite3_stmt *st = s->q_path;
  const char *text;
  size_t len;
  *id = sqlite3_column_int64(st, 0);
  if (!column_text(st, 1, &text, &len) || narcache_narinfo_set_store_path(ni, text, len) < 0)
    return NARCACHE_EIO;
  narcache_hash h;
  if (!column_text(st, 2, &text, &len) || narcache_hash_parse(&h, text, len, NULL) < 0 ||
      narcache_narinfo_set_nar_hash(ni, &h) < 0)
    return NARCACHE_EIO;
  int64_t nar_size = sqlite3_column_int64(st, 4);
  if (nar_size <= 0 || narcache_narinfo_set_nar_size(ni, (uint64_t)nar_size) < 0)
    return NARCACHE_EIO; /* Nix >= 1.x always records it */
  size_t base_len = 0;
  const char *base;
  if (column_text(st, 3, &text, &len) && (base = base_of(s, text, len, &base_len)) != NULL &&
      narcache_narinfo_set_deriver(ni, base, base_len) < 0)
    return NARCACHE_EIO;
  if (column_text(st, 5, &text, &len)) { /* space-separated; skip what Nix would not write */
    for (size_t i = 0; i < len;) {
      const char *space = memchr(text + i, ' ', len - i);
      size_t end = space != NULL ? (size_t)(space - text) : len;
      if (end > i)
        (void)narcache_narinfo_add_sig(ni, text + i, end - i);
      i = end + 1;
    }
  }
  if (column_text(st, 6, &text, &len) && len > 0 && narcache_narinfo_set_ca(ni, text, len) < 0)
    return NARCACHE_EIO;
  return NARCACHE_OK;
}

static int add_references(nixstore *s, narcache_narinfo *ni, int64_t id) {
  sqlite3_stmt *st = s->q_refs;
  sqlite3_reset(st);
  sqlite3_bind_int64(st, 1, id);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *text;
    size_t len, base_len = 0;
    const char *base;
    if (!column_text(st, 0, &text, &len) || (base = base_of(s, text, len, &base_len)) == NULL ||
        narcache_narinfo_add_reference(ni, base, base_len) < 0)
      return NARCACHE_EIO;
  }
  return rc == SQLITE_DONE ? NARCACHE_OK : from_sqlite(rc);
}

/* Look up the valid path with hash part `hash` and fill `ni`. */
static int query_path(nixstore *s, const char *hash, narcache_narinfo *ni) {
  /* Paths are "<dir>/<hash>-<name>": the range ["<dir>/<hash>-",
   * "<dir>/<hash>.") holds exactly them ('.' follows '-'), and the unique
   * index on path answers it. */
  char lo[512], hi[512];
  snprintf(lo, sizeof lo, "%s/%.32s-", s->store_dir, hash);
  snprintf(hi, sizeof hi, "%s/%.32s.", s->store_dir, hash);
  pthread_mutex_lock(&s->lock);
  int rc = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    pthread_mutex_unlock(&s->lock);
    return from_sqlite(rc);
  }
  sqlite3_stmt *st = s->q_path;
  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, lo, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  int64_t id = 0;
  int result = rc == SQLITE_ROW    ? fill_from_row(s, ni, &id)
               : rc == SQLITE_DONE ? NARCACHE_ENOTFOUND
                                   : from_sqlite(rc);
  if (result == 0)
    result = add_references(s, ni, id);
  sqlite3_reset(st);
  sqlite3_reset(s->q_refs);
  sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  pthread_mutex_unlock(&s->lock);
  return result;
}

/* ------------------------------------------------------------------ */
/* Objects                                                             */
/* ------------------------------------------------------------------ */

static int nar_name(char *out, size_t size, const char *hash, const narcache_narinfo *ni,
                    int codec) {
  narcache_hash h;
  char digits[NARCACHE_HASH_STRING_MAX];
  if (narcache_narinfo_nar_hash(ni, &h) < 0 ||
      narcache_hash_format(digits, sizeof digits, NULL, &h, NARCACHE_HASH_NIX32, 0) < 0)
    return NARCACHE_EIO;
  int n = snprintf(out, size, "%.32s-%.52s.nar%s", hash, digits, narcache_codec_extension(codec));
  return n > 0 && (size_t)n < size ? NARCACHE_OK : NARCACHE_EIO;
}

static int open_narinfo(nixstore *s, const char *hash, narcache_reader *out) {
  narcache_narinfo *ni = NULL;
  int rc = narcache_narinfo_new(&ni, s->store_dir);
  if (rc == 0)
    rc = query_path(s, hash, ni);
  char url[160] = "nar/";
  if (rc == 0)
    rc = nar_name(url + 4, sizeof url - 4, hash, ni, s->codec);
  if (rc == 0)
    rc = narcache_narinfo_set_url(ni, url, strlen(url));
  const char *method = narcache_codec_name(s->codec);
  if (rc == 0)
    rc = narcache_narinfo_set_compression(ni, method, strlen(method));
  narcache_hash h;
  if (rc == 0 && s->codec == NARCACHE_CODEC_NONE && narcache_narinfo_nar_hash(ni, &h) == 0) {
    /* Uncompressed: the file is the NAR (as `nix copy` writes with
     * compression=none). */
    narcache_narinfo_set_file_hash(ni, &h);
    narcache_narinfo_set_file_size(ni, 1, narcache_narinfo_nar_size(ni));
  }
  for (size_t i = 0; rc == 0 && i < s->n_keys; i++)
    rc = narcache_narinfo_sign(ni, s->keys[i]);
  char *text = NULL;
  size_t len = 0;
  if (rc == 0)
    rc = narcache_narinfo_format(&text, &len, ni);
  if (rc == 0)
    rc = narcache_reader_init_memory(out, text, len);
  narcache_free(text);
  narcache_narinfo_free(ni);
  return rc;
}

typedef struct nar_reader {
  narcache_nar_dumper *dumper;
  uint64_t pos;
} nar_reader;

static int nar_read(void *ctx, uint64_t offset, void *buf, size_t len, size_t *got) {
  nar_reader *r = ctx;
  if (offset != r->pos) {
    if (narcache_nar_dumper_seek(r->dumper, offset) < 0)
      return NARCACHE_EIO;
    r->pos = offset;
  }
  narcache_outbuf out = {buf, len, 0};
  int rc = narcache_nar_dumper_read(r->dumper, &out);
  r->pos += out.pos;
  *got = out.pos;
  if (rc < 0 || (out.pos == 0 && len > 0))
    return NARCACHE_EIO; /* the tree changed under us: never a short NAR */
  return NARCACHE_OK;
}

static void nar_close(void *ctx) {
  nar_reader *r = ctx;
  narcache_nar_dumper_free(r->dumper);
  narcache__free(r);
}

/* Index the tree of a valid path; its size must be the registered one. */
static int open_dumper(nixstore *s, const char *hash, narcache_narinfo **ni_out,
                       narcache_nar_dumper **out) {
  narcache_narinfo *ni = NULL;
  narcache_nar_dumper *d = NULL;
  int rc = narcache_narinfo_new(&ni, s->store_dir);
  if (rc == 0)
    rc = query_path(s, hash, ni);
  if (rc == 0)
    rc = narcache_nar_dumper_new(&d);
  if (rc == 0) {
    rc = narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, narcache_narinfo_store_path(ni, NULL));
    if (rc == NARCACHE_EIO && narcache_nar_dumper_syserr(d) == 2 /* ENOENT */)
      rc = NARCACHE_ENOTFOUND; /* registered but gone: absent */
    else if (rc < 0)
      rc = NARCACHE_EIO;
  }
  if (rc == 0 && narcache_nar_dumper_size(d) != narcache_narinfo_nar_size(ni))
    rc = NARCACHE_EIO;
  if (rc < 0) {
    narcache_nar_dumper_free(d);
    narcache_narinfo_free(ni);
    return rc;
  }
  *out = d;
  *ni_out = ni;
  return NARCACHE_OK;
}

/* Compress the whole NAR into an unlinked temporary file: a response
 * needs the size before the first byte. */
static int compress_to_tmpfile(nixstore *s, narcache_nar_dumper *d, narcache_reader *out) {
  const char *dir = getenv("TMPDIR");
  int fd = open(dir != NULL && dir[0] != '\0' ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0)
    return errno == EMFILE || errno == ENFILE || errno == ENOSPC ? NARCACHE_EUNAVAIL : NARCACHE_EIO;
  narcache_codec *c = NULL;
  int rc = narcache_codec_new_compressor(&c, NARCACHE_CODEC_ZSTD, s->level);
  if (rc == 0)
    rc = narcache_codec_set_pledged_size(c, narcache_nar_dumper_size(d));
  enum { CHUNK = 256 * 1024 };
  char *in_buf = narcache__malloc(CHUNK), *out_buf = narcache__malloc(CHUNK);
  if (rc == 0 && (in_buf == NULL || out_buf == NULL))
    rc = NARCACHE_ENOMEM;
  uint64_t written = 0;
  int more_nar = 1;
  while (rc == 0) {
    narcache_outbuf nar = {in_buf, CHUNK, 0};
    if (more_nar && (more_nar = narcache_nar_dumper_read(d, &nar)) < 0)
      rc = NARCACHE_EIO;
    narcache_inbuf in = {in_buf, nar.pos, 0};
    int flush = more_nar ? NARCACHE_FLUSH_NONE : NARCACHE_FLUSH_END;
    int left = 0;
    do {
      narcache_outbuf z = {out_buf, CHUNK, 0};
      left = rc == 0 ? narcache_codec_process(c, &z, &in, flush) : rc;
      if (left < 0) {
        rc = left;
        break;
      }
      for (size_t off = 0; off < z.pos;) {
        ssize_t n = write(fd, out_buf + off, z.pos - off);
        if (n < 0 && errno == EINTR)
          continue;
        if (n < 0) {
          rc = errno == ENOSPC ? NARCACHE_EUNAVAIL : NARCACHE_EIO;
          break;
        }
        off += (size_t)n;
      }
      written += z.pos;
    } while (rc == 0 && (in.pos < in.size || (flush == NARCACHE_FLUSH_END && left > 0)));
    if (!more_nar)
      break;
  }
  narcache__free(in_buf);
  narcache__free(out_buf);
  narcache_codec_free(c);
  if (rc < 0) {
    close(fd);
    return rc;
  }
  narcache_reader_init_fd(out, fd, 0, written);
  return NARCACHE_OK;
}

static int open_nar(nixstore *s, const char *name, size_t len, narcache_reader *out) {
  /* "<hash part>-<nix32 NarHash>.nar" or the same + ".zst" */
  size_t plain = 32 + 1 + NIX32_SHA256 + 4;
  int codec = len == plain ? NARCACHE_CODEC_NONE : NARCACHE_CODEC_ZSTD;
  if ((len != plain && len != plain + 4) || name[32] != '-' ||
      memcmp(name + plain - 4, codec == NARCACHE_CODEC_NONE ? ".nar" : ".nar.zst",
             codec == NARCACHE_CODEC_NONE ? 4 : 8) != 0)
    return NARCACHE_ENOTFOUND;
  narcache_narinfo *ni = NULL;
  narcache_nar_dumper *d = NULL;
  int rc = open_dumper(s, name, &ni, &d);
  if (rc < 0)
    return rc;
  char want[160];
  rc = nar_name(want, sizeof want, name, ni, codec);
  narcache_narinfo_free(ni);
  if (rc == 0 && (strlen(want) != len || memcmp(want, name, len) != 0))
    rc = NARCACHE_ENOTFOUND; /* the path was rebuilt with other contents */
  if (rc == 0 && codec == NARCACHE_CODEC_ZSTD) {
    rc = compress_to_tmpfile(s, d, out);
    narcache_nar_dumper_free(d);
    return rc;
  }
  nar_reader *r = rc == 0 ? narcache__calloc(1, sizeof *r) : NULL;
  if (rc == 0 && r == NULL)
    rc = NARCACHE_ENOMEM;
  if (rc < 0) {
    narcache_nar_dumper_free(d);
    return rc;
  }
  r->dumper = d;
  out->size = narcache_nar_dumper_size(d);
  out->fd = -1;
  out->read = nar_read;
  out->close = nar_close;
  out->ctx = r;
  return NARCACHE_OK;
}

static int open_listing(nixstore *s, const char *hash, narcache_reader *out) {
  narcache_narinfo *ni = NULL;
  narcache_nar_dumper *d = NULL;
  int rc = open_dumper(s, hash, &ni, &d);
  if (rc < 0)
    return rc;
  char *json = NULL;
  size_t len = 0;
  rc = narcache_nar_dumper_listing(&json, &len, d);
  if (rc == 0)
    rc = narcache_reader_init_memory(out, json, len);
  narcache_free(json);
  narcache_nar_dumper_free(d);
  narcache_narinfo_free(ni);
  return rc;
}

static int nixstore_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  nixstore *s = ctx;
  switch (kind) {
  case NARCACHE_OBJECT_CACHE_INFO: {
    char text[600];
    int n = snprintf(text, sizeof text, "StoreDir: %s\nWantMassQuery: 1\nPriority: %d\n",
                     s->store_dir, (int)s->priority);
    return narcache_reader_init_memory(out, text, (size_t)n);
  }
  case NARCACHE_OBJECT_NARINFO:
    return open_narinfo(s, name, out);
  case NARCACHE_OBJECT_LISTING:
    return open_listing(s, name, out);
  case NARCACHE_OBJECT_NAR:
    return open_nar(s, name, len, out);
  default:
    return NARCACHE_ENOTFOUND; /* build logs: not yet */
  }
}

static int nixstore_probe(void *ctx) {
  nixstore *s = ctx;
  pthread_mutex_lock(&s->lock);
  sqlite3_stmt *st = s->q_path;
  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, "", -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, "", -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  pthread_mutex_unlock(&s->lock);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? NARCACHE_OK : from_sqlite(rc);
}

static void nixstore_destroy(void *ctx) {
  nixstore *s = ctx;
  sqlite3_finalize(s->q_path);
  sqlite3_finalize(s->q_refs);
  sqlite3_close(s->db);
  pthread_mutex_destroy(&s->lock);
  narcache__free(s->keys);
  narcache__free(s->store_dir);
  narcache__free(s);
}

static int open_database(nixstore *s, const char *db_path) {
  char uri[4200];
  if (snprintf(uri, sizeof uri, "file:%s?mode=ro", db_path) >= (int)sizeof uri)
    return NARCACHE_EINVAL;
  int rc = sqlite3_open_v2(uri, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                           NULL);
  if (rc != SQLITE_OK)
    return from_sqlite(rc);
  sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
  rc = sqlite3_prepare_v2(s->db,
                          "SELECT id, path, hash, deriver, narSize, sigs, ca FROM ValidPaths "
                          "WHERE path >= ?1 AND path < ?2 LIMIT 1",
                          -1, &s->q_path, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT p.path FROM Refs r JOIN ValidPaths p ON r.reference = p.id "
                            "WHERE r.referrer = ?1",
                            -1, &s->q_refs, NULL);
  return rc == SQLITE_OK ? NARCACHE_OK : from_sqlite(rc);
}

int narcache_store_nixstore_new(narcache_store **out, const narcache_nixstore_options *o) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  if (o == NULL || o->version < 1 || (o->keys == NULL && o->n_keys != 0))
    return NARCACHE_EINVAL;
  for (size_t i = 0; i < o->n_keys; i++)
    if (!narcache_key_is_secret(o->keys[i]))
      return NARCACHE_EINVAL;
  if ((o->compression != 0 && o->compression != NARCACHE_CODEC_NONE &&
       o->compression != NARCACHE_CODEC_ZSTD) ||
      o->level < narcache_codec_min_level() || o->level > narcache_codec_max_level())
    return NARCACHE_EINVAL;
  const char *dir = o->store_dir != NULL ? o->store_dir : NARCACHE_STORE_DIR;
  size_t dir_len = strlen(dir);
  if (dir_len < 2 || dir[0] != '/' || dir[dir_len - 1] == '/' || dir_len > 400)
    return NARCACHE_EINVAL;
  nixstore *s = narcache__calloc(1, sizeof *s);
  if (s == NULL)
    return NARCACHE_ENOMEM;
  pthread_mutex_init(&s->lock, NULL);
  s->priority = o->priority != 0 ? o->priority : DEFAULT_PRIORITY;
  s->codec = o->compression != 0 ? o->compression : NARCACHE_CODEC_NONE;
  s->level = o->level;
  s->store_dir = narcache__malloc(dir_len + 1);
  s->keys = o->n_keys > 0 ? narcache__calloc(o->n_keys, sizeof *s->keys) : NULL;
  int rc = s->store_dir == NULL || (o->n_keys > 0 && s->keys == NULL) ? NARCACHE_ENOMEM : 0;
  if (rc == 0) {
    memcpy(s->store_dir, dir, dir_len + 1);
    s->store_dir_len = dir_len;
    for (size_t i = 0; i < o->n_keys; i++)
      s->keys[i] = o->keys[i];
    s->n_keys = o->n_keys;
    rc = open_database(s, o->db_path != NULL ? o->db_path : DEFAULT_DB);
  }
  if (rc < 0) {
    nixstore_destroy(s);
    return rc;
  }
  narcache_store_methods m = {.version = NARCACHE_STORE_METHODS_VERSION,
                              .open = nixstore_open,
                              .probe = nixstore_probe,
                              .destroy = nixstore_destroy};
  rc = narcache_store_new(out, &m, s);
  if (rc == 0)
    rc = narcache_store_set_store_dir(*out, dir);
  if (rc < 0) {
    narcache_store_free(*out);
    *out = NULL;
  }
  return rc;
}
