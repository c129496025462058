/* The "nixstore" backend: a live local Nix store served as a binary cache.
 * Metadata from Nix's SQLite database (read-only), NARs dumped on the fly,
 * narinfo signed on the fly. */
#define _GNU_SOURCE
#include "common_internal.h"
#include "store_internal.h"
#include "narcache/compress.h"
#include "narcache/nar.h"
#include "narcache/narinfo.h"
#include "narcache/store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#include <bzlib.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_DB "/nix/var/nix/db/db.sqlite"
#define DEFAULT_LOG_DIR "/nix/var/log/nix"
/* Largest decompressed build log served; Nix itself caps what it keeps
 * only by max-build-log-size, which is unlimited by default. */
#define MAX_LOG_SIZE (1024ull * 1024 * 1024)
#define DEFAULT_PRIORITY 30
#define NIX32_SHA256 52
/* Tree indexes kept between requests (see nixstore.parked). */
#define PARKED_DUMPERS 8

/* How long a lookup waits for Nix's database before saying "unavailable". */
#define BUSY_TIMEOUT_MS 2000

/* Most connections one store keeps open; a lookup beyond that waits for
 * one to come back. SQLite connections are not shared between threads. */
#define MAX_CONNECTIONS 16

/* One read-only connection with its prepared statements. */
typedef struct db_conn {
  sqlite3 *db;
  sqlite3_stmt *q_path, *q_refs;
  struct db_conn *next_idle;
} db_conn;

typedef struct nixstore {
  char *store_dir;
  size_t store_dir_len;
  char *db_uri;
  char *log_dir;
  pthread_mutex_t pool_lock;
  pthread_cond_t pool_returned;
  db_conn *idle;   /* connections nobody is using */
  int n_open;      /* idle + in use (+ being opened) */
  const narcache_key **keys;
  size_t n_keys;
  int32_t priority;
  int codec; /* NARCACHE_CODEC_NONE or _ZSTD */
  int level;
  /* Indexes of trees recently served, kept for the next request for the
   * same path: walking a large tree costs tens of ms before the first
   * byte, and a client fleet fetches the same NARs again and again. */
  pthread_mutex_t parked_lock;
  struct parked_dumper {
    char hash[33];
    narcache_nar_dumper *dumper;
    uint64_t used; /* for choosing the oldest */
  } parked[PARKED_DUMPERS];
  uint64_t park_clock;
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
static int fill_from_row(nixstore *s, db_conn *c, narcache_narinfo *ni, int64_t *id) {
  sqlite3_stmt *st = c->q_path;
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

static int add_references(nixstore *s, db_conn *c, narcache_narinfo *ni, int64_t id) {
  sqlite3_stmt *st = c->q_refs;
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

static void conn_close(db_conn *c) {
  if (c == NULL)
    return;
  sqlite3_finalize(c->q_path);
  sqlite3_finalize(c->q_refs);
  sqlite3_close(c->db);
  narcache__free(c);
}

static int conn_open(const char *uri, db_conn **out) {
  db_conn *c = narcache__calloc(1, sizeof *c);
  if (c == NULL)
    return NARCACHE_ENOMEM;
  /* mode=ro: SQLite then never takes a write lock, so a running Nix never
   * waits for us; in WAL mode readers and Nix's writer do not block each
   * other at all. */
  int rc = sqlite3_open_v2(uri, &c->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                           NULL);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    rc = sqlite3_prepare_v2(c->db,
                            "SELECT id, path, hash, deriver, narSize, sigs, ca FROM ValidPaths "
                            "WHERE path >= ?1 AND path < ?2 LIMIT 1",
                            -1, &c->q_path, NULL);
  }
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(c->db,
                            "SELECT p.path FROM Refs r JOIN ValidPaths p ON r.reference = p.id "
                            "WHERE r.referrer = ?1",
                            -1, &c->q_refs, NULL);
  if (rc != SQLITE_OK) {
    conn_close(c);
    return from_sqlite(rc);
  }
  *out = c;
  return NARCACHE_OK;
}

/* Take an idle connection, open a new one, or wait for one to come back. */
static int conn_acquire(nixstore *s, db_conn **out) {
  pthread_mutex_lock(&s->pool_lock);
  while (s->idle == NULL && s->n_open >= MAX_CONNECTIONS)
    pthread_cond_wait(&s->pool_returned, &s->pool_lock);
  db_conn *c = s->idle;
  if (c != NULL) {
    s->idle = c->next_idle;
    pthread_mutex_unlock(&s->pool_lock);
    *out = c;
    return NARCACHE_OK;
  }
  s->n_open++;
  pthread_mutex_unlock(&s->pool_lock);
  int rc = conn_open(s->db_uri, out);
  if (rc < 0) {
    pthread_mutex_lock(&s->pool_lock);
    s->n_open--;
    pthread_cond_signal(&s->pool_returned);
    pthread_mutex_unlock(&s->pool_lock);
  }
  return rc;
}

static void conn_release(nixstore *s, db_conn *c) {
  pthread_mutex_lock(&s->pool_lock);
  c->next_idle = s->idle;
  s->idle = c;
  pthread_cond_signal(&s->pool_returned);
  pthread_mutex_unlock(&s->pool_lock);
}

/* Look up the valid path with hash part `hash` and fill `ni`. */
static int query_path(nixstore *s, const char *hash, narcache_narinfo *ni) {
  /* Paths are "<dir>/<hash>-<name>": the range ["<dir>/<hash>-",
   * "<dir>/<hash>.") holds exactly them ('.' follows '-'), and the unique
   * index on path answers it. */
  char lo[512], hi[512];
  snprintf(lo, sizeof lo, "%s/%.32s-", s->store_dir, hash);
  snprintf(hi, sizeof hi, "%s/%.32s.", s->store_dir, hash);
  db_conn *c = NULL;
  int rc = conn_acquire(s, &c);
  if (rc < 0)
    return rc;
  /* One read transaction: the path row and its references come from the
   * same snapshot even while Nix commits. */
  rc = sqlite3_exec(c->db, "BEGIN", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    conn_release(s, c);
    return from_sqlite(rc);
  }
  sqlite3_stmt *st = c->q_path;
  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, lo, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  int64_t id = 0;
  int result = rc == SQLITE_ROW    ? fill_from_row(s, c, ni, &id)
               : rc == SQLITE_DONE ? NARCACHE_ENOTFOUND
                                   : from_sqlite(rc);
  if (result == 0)
    result = add_references(s, c, ni, id);
  sqlite3_reset(st);
  sqlite3_reset(c->q_refs);
  sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
  conn_release(s, c);
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
  nixstore *store;
  char hash[33];
  narcache_nar_dumper *dumper;
  uint64_t pos;
  int failed; /* the dumper saw an error: not worth keeping */
} nar_reader;

/* Take the parked index of `hash`, if any. */
static narcache_nar_dumper *unpark(nixstore *s, const char *hash) {
  narcache_nar_dumper *d = NULL;
  pthread_mutex_lock(&s->parked_lock);
  for (int i = 0; i < PARKED_DUMPERS && d == NULL; i++)
    if (s->parked[i].dumper != NULL && memcmp(s->parked[i].hash, hash, 32) == 0) {
      d = s->parked[i].dumper;
      s->parked[i].dumper = NULL;
    }
  pthread_mutex_unlock(&s->parked_lock);
  return d;
}

/* Keep a dumper for the next request of the same path, replacing the
 * oldest one parked. */
static void park(nixstore *s, const char *hash, narcache_nar_dumper *d) {
  narcache_nar_dumper *evicted = NULL;
  pthread_mutex_lock(&s->parked_lock);
  int slot = 0;
  for (int i = 0; i < PARKED_DUMPERS; i++) {
    if (s->parked[i].dumper == NULL) {
      slot = i;
      break;
    }
    if (s->parked[i].used < s->parked[slot].used)
      slot = i;
  }
  evicted = s->parked[slot].dumper;
  memcpy(s->parked[slot].hash, hash, 32);
  s->parked[slot].hash[32] = '\0';
  s->parked[slot].dumper = d;
  s->parked[slot].used = ++s->park_clock;
  pthread_mutex_unlock(&s->parked_lock);
  narcache_nar_dumper_free(evicted);
}

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
  if (rc < 0 || (out.pos == 0 && len > 0)) {
    r->failed = 1;
    return NARCACHE_EIO; /* the tree changed under us: never a short NAR */
  }
  return NARCACHE_OK;
}

/* The NAR from `offset` on as the dumper's next piece: header bytes, or a
 * region of a file for sendfile(). */
static int nar_segment(void *ctx, uint64_t offset, narcache_nar_segment *seg) {
  nar_reader *r = ctx;
  if (offset != r->pos && narcache_nar_dumper_seek(r->dumper, offset) < 0)
    return NARCACHE_EIO;
  seg->version = NARCACHE_NAR_SEGMENT_VERSION;
  int rc = narcache_nar_dumper_next(r->dumper, seg);
  if (rc <= 0) {
    r->pos = UINT64_MAX; /* position unknown: seek next time */
    r->failed = 1;
    return NARCACHE_EIO;
  }
  r->pos = seg->nar_offset + seg->length; /* the dumper stands after it */
  return 1;
}

static void nar_close(void *ctx) {
  nar_reader *r = ctx;
  /* Only a dumper that delivered the whole NAR (or nothing) is kept: one
   * abandoned in the middle of a file (client gone) is not reused. */
  if (!r->failed && (r->pos == 0 || r->pos == narcache_nar_dumper_size(r->dumper)))
    park(r->store, r->hash, r->dumper);
  else
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
  /* A parked index is used only while the path is still valid (the query
   * above) and its tree still there; it was built when its size matched. */
  struct stat st;
  if (rc == 0 && (d = unpark(s, hash)) != NULL &&
      (lstat(narcache_narinfo_store_path(ni, NULL), &st) < 0 ||
       narcache_nar_dumper_seek(d, 0) < 0)) {
    narcache_nar_dumper_free(d);
    d = NULL;
  }
  if (rc == 0 && d == NULL && (rc = narcache_nar_dumper_new(&d)) == 0) {
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

/* An unlinked temporary file in $TMPDIR or /tmp, or a negative code. */
static int open_tmpfile(void) {
  const char *dir = getenv("TMPDIR");
  int fd = open(dir != NULL && dir[0] != '\0' ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  return fd >= 0 ? fd : errno == ENOENT ? NARCACHE_EIO : narcache__store_errno(errno);
}

/* Compress the whole NAR into an unlinked temporary file: a response
 * needs the size before the first byte. */
static int compress_to_tmpfile(nixstore *s, narcache_nar_dumper *d, narcache_reader *out) {
  int fd = open_tmpfile();
  if (fd < 0)
    return fd;
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
      rc = narcache__store_write_all(fd, out_buf, z.pos);
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
  /* "<hash part>-<nix32 NarHash>.nar" or the same + ".zst"; also
   * nix-serve's old "<hash part>.nar" (whatever the path holds now) */
  size_t plain = 32 + 1 + NIX32_SHA256 + 4;
  int codec = len == plain + 4 ? NARCACHE_CODEC_ZSTD : NARCACHE_CODEC_NONE;
  int legacy = len == 32 + 4 && memcmp(name + 32, ".nar", 4) == 0;
  if (!legacy && ((len != plain && len != plain + 4) || name[32] != '-' ||
                  memcmp(name + plain - 4, codec == NARCACHE_CODEC_NONE ? ".nar" : ".nar.zst",
                         codec == NARCACHE_CODEC_NONE ? 4 : 8) != 0))
    return NARCACHE_ENOTFOUND;
  narcache_narinfo *ni = NULL;
  narcache_nar_dumper *d = NULL;
  int rc = open_dumper(s, name, &ni, &d);
  if (rc < 0)
    return rc;
  char want[160];
  rc = legacy ? 0 : nar_name(want, sizeof want, name, ni, codec);
  narcache_narinfo_free(ni);
  if (rc == 0 && !legacy && (strlen(want) != len || memcmp(want, name, len) != 0))
    rc = NARCACHE_ENOTFOUND; /* the path was rebuilt with other contents */
  if (rc == 0 && codec == NARCACHE_CODEC_ZSTD) {
    rc = compress_to_tmpfile(s, d, out);
    if (rc == 0)
      park(s, name, d);
    else
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
  r->store = s;
  memcpy(r->hash, name, 32);
  out->size = narcache_nar_dumper_size(d);
  out->fd = -1;
  out->read = nar_read;
  out->segment = nar_segment;
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
  if (rc == 0)
    park(s, hash, d); /* `narcache cache add` asks for the NAR next */
  else
    narcache_nar_dumper_free(d);
  narcache_narinfo_free(ni);
  return rc;
}

/* Decompress a bzip2 build log into an unlinked temporary file. */
static int bunzip_to_tmpfile(int in_fd, narcache_reader *out) {
  int fd = open_tmpfile();
  if (fd < 0)
    return fd;
  enum { CHUNK = 64 * 1024 };
  char *in_buf = narcache__malloc(CHUNK), *out_buf = narcache__malloc(CHUNK);
  bz_stream bz;
  memset(&bz, 0, sizeof bz);
  int rc = in_buf == NULL || out_buf == NULL ? NARCACHE_ENOMEM : NARCACHE_OK;
  int bz_ready = rc == 0 && BZ2_bzDecompressInit(&bz, 0, 0) == BZ_OK;
  if (rc == 0 && !bz_ready)
    rc = NARCACHE_ENOMEM;
  uint64_t written = 0;
  int bz_rc = BZ_OK, at_eof = 0;
  while (rc == 0 && bz_rc != BZ_STREAM_END) {
    if (bz.avail_in == 0 && !at_eof) {
      ssize_t n = read(in_fd, in_buf, CHUNK);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0) {
        rc = NARCACHE_EIO;
        break;
      }
      at_eof = n == 0;
      bz.next_in = in_buf;
      bz.avail_in = (unsigned)n;
    }
    bz.next_out = out_buf;
    bz.avail_out = CHUNK;
    bz_rc = BZ2_bzDecompress(&bz);
    size_t made = CHUNK - bz.avail_out;
    if (bz_rc != BZ_OK && bz_rc != BZ_STREAM_END)
      rc = NARCACHE_EIO; /* corrupt */
    else if (bz_rc == BZ_OK && at_eof && bz.avail_in == 0 && made == 0)
      rc = NARCACHE_EIO; /* truncated */
    else if ((written += made) > MAX_LOG_SIZE)
      rc = NARCACHE_EIO;
    else
      rc = narcache__store_write_all(fd, out_buf, made);
  }
  if (bz_ready)
    BZ2_bzDecompressEnd(&bz);
  narcache__free(in_buf);
  narcache__free(out_buf);
  if (rc < 0) {
    close(fd);
    return rc;
  }
  narcache_reader_init_fd(out, fd, 0, written);
  return NARCACHE_OK;
}

/* A regular file under the log directory (its size in *size), or a
 * negative code. */
static int open_log_file(const char *path, uint64_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0)
    return narcache__store_errno(errno);
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return NARCACHE_ENOTFOUND;
  }
  *size = (uint64_t)st.st_size;
  return fd;
}

/* Nix keeps the log of /nix/store/<name> as <log dir>/drvs/<2 chars of
 * name>/<rest of name>, bzip2-compressed (".bz2") unless
 * compress-build-log is off. Served decompressed, as a client expects. */
static int open_log(nixstore *s, const char *name, size_t len, narcache_reader *out) {
  if (len < 5 || memcmp(name + len - 4, ".drv", 4) != 0)
    return NARCACHE_ENOTFOUND;
  char path[4600];
  int n = snprintf(path, sizeof path, "%s/drvs/%.2s/%.*s", s->log_dir, name, (int)(len - 2),
                   name + 2);
  if (n < 0 || (size_t)n + 4 >= sizeof path)
    return NARCACHE_ENOTFOUND;
  uint64_t size = 0;
  int fd = open_log_file(path, &size);
  if (fd >= 0) {
    narcache_reader_init_fd(out, fd, 0, size);
    return NARCACHE_OK;
  }
  if (fd != NARCACHE_ENOTFOUND)
    return fd;
  strcat(path, ".bz2");
  if ((fd = open_log_file(path, &size)) < 0)
    return fd;
  int rc = bunzip_to_tmpfile(fd, out);
  close(fd);
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
  case NARCACHE_OBJECT_LOG:
    return open_log(s, name, len, out);
  default:
    return NARCACHE_ENOTFOUND;
  }
}

static int nixstore_probe(void *ctx) {
  nixstore *s = ctx;
  db_conn *c = NULL;
  int rc = conn_acquire(s, &c);
  if (rc < 0)
    return rc;
  sqlite3_stmt *st = c->q_path;
  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, "", -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, "", -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  conn_release(s, c);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? NARCACHE_OK : from_sqlite(rc);
}

static void nixstore_destroy(void *ctx) {
  nixstore *s = ctx;
  while (s->idle != NULL) {
    db_conn *c = s->idle;
    s->idle = c->next_idle;
    conn_close(c);
  }
  for (int i = 0; i < PARKED_DUMPERS; i++)
    narcache_nar_dumper_free(s->parked[i].dumper);
  pthread_mutex_destroy(&s->parked_lock);
  pthread_cond_destroy(&s->pool_returned);
  pthread_mutex_destroy(&s->pool_lock);
  narcache__free(s->db_uri);
  narcache__free(s->log_dir);
  narcache__free(s->keys);
  narcache__free(s->store_dir);
  narcache__free(s);
}

/* Keep the URI, and open a first connection now so that a wrong path or a
 * file that is not Nix's database is reported by _new. */
static int open_database(nixstore *s, const char *db_path) {
  size_t len = strlen(db_path);
  if (len == 0 || len > 4096)
    return NARCACHE_EINVAL;
  /* "file:" + the path with '%', '?' and '#' escaped (they would change the
   * meaning of the URI) + "?mode=ro" */
  s->db_uri = narcache__malloc(5 + 3 * len + 9 + 1);
  if (s->db_uri == NULL)
    return NARCACHE_ENOMEM;
  char *w = s->db_uri;
  w += sprintf(w, "file:");
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)db_path[i];
    if (ch == '%' || ch == '?' || ch == '#')
      w += sprintf(w, "%%%02X", ch);
    else
      *w++ = (char)ch;
  }
  strcpy(w, "?mode=ro");
  db_conn *c = NULL;
  int rc = conn_acquire(s, &c);
  if (rc == 0)
    conn_release(s, c);
  return rc;
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
  pthread_mutex_init(&s->pool_lock, NULL);
  pthread_mutex_init(&s->parked_lock, NULL);
  pthread_cond_init(&s->pool_returned, NULL);
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
  if (rc == 0) {
    const char *log_dir = o->log_dir != NULL ? o->log_dir : DEFAULT_LOG_DIR;
    size_t log_len = strlen(log_dir);
    s->log_dir = log_len < 4096 ? narcache__malloc(log_len + 1) : NULL;
    if (s->log_dir != NULL)
      memcpy(s->log_dir, log_dir, log_len + 1);
    else
      rc = log_len < 4096 ? NARCACHE_ENOMEM : NARCACHE_EINVAL;
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
