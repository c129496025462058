/* narcache cache add: copy store paths from the local Nix store into a
 * binary-cache directory, as `nix copy --to 'file://DIR?compression=zstd&
 * secret-key=F&write-nar-listing=true'` does, with parallel jobs. */
#define _GNU_SOURCE
#include "cli.h"

#include <narcache.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char cache_usage_text[] =
    "usage: narcache cache add --to DIR --key-file SECRET_FILE [--key-file ...]\n"
    "                          [--compression zstd|none] [--level N] [--jobs N]\n"
    "                          [--closure] [--store-dir DIR] [--db PATH] PATH...\n"
    "\n"
    "Writes each store PATH (with --closure: and everything it refers to) into\n"
    "the binary-cache directory DIR, as nix copy --to file://DIR does: the\n"
    "NAR (compressed, named by its file hash), the .ls listing, and the narinfo\n"
    "signed with every key, published last. Paths whose narinfo is already in\n"
    "DIR are skipped. Metadata comes from the Nix database (--db, default\n"
    "/nix/var/nix/db/db.sqlite); paths it does not list are an error.\n"
    "--compression  zstd (default) or none;  --level  zstd level (default 3)\n"
    "--jobs         paths copied in parallel (default: the number of CPUs)\n"
    "Progress is shown on a terminal. Exit status 0 if every path is in DIR.\n";

typedef struct cache_options {
  const char *to;
  const char *store_dir;
  const char *db;
  const char **key_files;
  size_t n_keys;
  int codec;
  int level;
  int jobs;
  int closure;
  char **paths;
  size_t n_paths;
} cache_options;

typedef struct job_queue {
  pthread_mutex_t lock;
  char (*hashes)[33];
  size_t count;
  size_t next;
  /* progress */
  size_t done, skipped, failed;
  uint64_t bytes_in, bytes_out;
  struct timespec start;
  int show_progress;
} job_queue;

typedef struct worker_ctx {
  job_queue *q;
  narcache_store *src, *dst;
  const cache_options *o;
} worker_ctx;

static double seconds_since(const struct timespec *t0) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void show_progress(job_queue *q, int final) {
  if (!q->show_progress)
    return;
  double secs = seconds_since(&q->start);
  fprintf(stderr, "\r%zu/%zu paths (%zu skipped, %zu failed), %.1f MiB NAR -> %.1f MiB, %.1f MiB/s%s",
          q->done, q->count, q->skipped, q->failed, (double)q->bytes_in / 1048576.0,
          (double)q->bytes_out / 1048576.0,
          secs > 0 ? (double)q->bytes_in / 1048576.0 / secs : 0.0, final ? "\n" : "   ");
}

/* Copy a reader's bytes through `codec` into `tmp`, hashing the output. */
static int compress_to(FILE *tmp, narcache_reader *r, narcache_codec *codec, narcache_hash *file_hash,
                       uint64_t *file_size) {
  narcache_hasher *h = NULL;
  int rc = narcache_hasher_new(&h, NARCACHE_HASH_SHA256);
  static const size_t chunk = 256 * 1024;
  char *in_buf = malloc(chunk), *out_buf = malloc(chunk);
  if (in_buf == NULL || out_buf == NULL)
    rc = NARCACHE_ENOMEM;
  uint64_t off = 0;
  *file_size = 0;
  int finishing = 0;
  while (rc == 0) {
    size_t got = 0;
    if (off < r->size) {
      rc = narcache_reader_read(r, off, in_buf, chunk, &got);
      off += got;
    }
    if (rc < 0)
      break;
    finishing = off == r->size;
    narcache_inbuf in = {in_buf, got, 0};
    int more;
    do {
      narcache_outbuf out = {out_buf, chunk, 0};
      more = narcache_codec_process(codec, &out, &in, finishing ? NARCACHE_FLUSH_END : NARCACHE_FLUSH_NONE);
      if (more < 0) {
        rc = more;
        break;
      }
      if (out.pos > 0 && (fwrite(out_buf, 1, out.pos, tmp) != out.pos ||
                          narcache_hasher_update(h, out_buf, out.pos) < 0))
        rc = NARCACHE_EIO;
      *file_size += out.pos;
    } while (rc == 0 && (in.pos < in.size || (finishing && more > 0)));
    if (finishing)
      break;
  }
  if (rc == 0)
    rc = narcache_hasher_final(h, file_hash);
  if (rc == 0 && fflush(tmp) != 0)
    rc = NARCACHE_EIO;
  narcache_hasher_free(h);
  free(in_buf);
  free(out_buf);
  return rc;
}

/* Upload the contents of `tmp` as an object. */
static int upload_file(narcache_store *dst, int kind, const char *name, FILE *tmp, uint64_t size,
                       const char *what) {
  narcache_upload *up = NULL;
  int rc = narcache_store_upload_begin(&up, dst, kind, name, strlen(name), size);
  char buf[65536];
  rewind(tmp);
  size_t n;
  while (rc == 0 && (n = fread(buf, 1, sizeof buf, tmp)) > 0)
    rc = narcache_upload_write(up, buf, n);
  if (rc == 0)
    rc = narcache_upload_commit(up);
  if (rc < 0)
    cli_error("%s: upload: %s %s", what, narcache_strerror(rc), up ? narcache_upload_errmsg(up) : "");
  narcache_upload_free(up);
  return rc;
}

static int upload_text(narcache_store *dst, int kind, const char *name, const char *text, size_t len,
                       const char *what) {
  narcache_upload *up = NULL;
  int rc = narcache_store_upload_begin(&up, dst, kind, name, strlen(name), len);
  if (rc == 0)
    rc = narcache_upload_write(up, text, len);
  if (rc == 0)
    rc = narcache_upload_commit(up);
  if (rc < 0)
    cli_error("%s: upload: %s %s", what, narcache_strerror(rc), up ? narcache_upload_errmsg(up) : "");
  narcache_upload_free(up);
  return rc;
}

static int exists(narcache_store *s, int kind, const char *name) {
  narcache_reader r;
  if (narcache_store_open(&r, s, kind, name, strlen(name)) != 0)
    return 0;
  narcache_reader_close(&r);
  return 1;
}

/* One path: NAR, listing, then the narinfo that points at them. */
static int copy_path(worker_ctx *w, const char *hash, uint64_t *in_bytes, uint64_t *out_bytes) {
  char *text = NULL;
  size_t len = 0;
  int rc = narcache_store_read_all(&text, &len, w->src, NARCACHE_OBJECT_NARINFO, hash, 32, 1 << 20);
  if (rc < 0) {
    cli_error("%s: not a valid path in the Nix database (%s)", hash, narcache_strerror(rc));
    return rc;
  }
  narcache_narinfo *ni = NULL;
  rc = narcache_narinfo_new(&ni, w->o->store_dir);
  if (rc == 0)
    rc = narcache_narinfo_parse(ni, text, len);
  narcache_free(text);
  const char *path = rc == 0 ? narcache_narinfo_store_path(ni, NULL) : hash;
  narcache_reader r = {0};
  const char *url = rc == 0 ? narcache_narinfo_url(ni, NULL) : NULL;
  if (rc == 0)
    rc = narcache_store_open(&r, w->src, NARCACHE_OBJECT_NAR, url + 4, strlen(url + 4));
  narcache_codec *codec = NULL;
  if (rc == 0)
    rc = narcache_codec_new_compressor(&codec, w->o->codec, w->o->level);
  if (rc == 0 && w->o->codec == NARCACHE_CODEC_ZSTD)
    rc = narcache_codec_set_pledged_size(codec, r.size);
  FILE *tmp = rc == 0 ? tmpfile() : NULL;
  if (rc == 0 && tmp == NULL)
    rc = NARCACHE_EIO;
  narcache_hash file_hash;
  uint64_t file_size = 0;
  if (rc == 0)
    rc = compress_to(tmp, &r, codec, &file_hash, &file_size);
  *in_bytes = r.size;
  *out_bytes = file_size;
  narcache_reader_close(&r);
  narcache_codec_free(codec);
  char nar_name[NARCACHE_HASH_STRING_MAX + 16] = "", digits[NARCACHE_HASH_STRING_MAX];
  if (rc == 0)
    rc = narcache_hash_format(digits, sizeof digits, NULL, &file_hash, NARCACHE_HASH_NIX32, 0);
  if (rc == 0)
    snprintf(nar_name, sizeof nar_name, "%s.nar%s", digits, narcache_codec_extension(w->o->codec));
  /* The same bytes may already be there (identical NARs share a file). */
  if (rc == 0 && !exists(w->dst, NARCACHE_OBJECT_NAR, nar_name))
    rc = upload_file(w->dst, NARCACHE_OBJECT_NAR, nar_name, tmp, file_size, path);
  if (tmp != NULL)
    fclose(tmp);
  char *listing = NULL;
  size_t listing_len = 0;
  if (rc == 0)
    rc = narcache_store_read_all(&listing, &listing_len, w->src, NARCACHE_OBJECT_LISTING, hash, 32,
                                 SIZE_MAX);
  if (rc == 0)
    rc = upload_text(w->dst, NARCACHE_OBJECT_LISTING, hash, listing, listing_len, path);
  narcache_free(listing);
  char new_url[NARCACHE_HASH_STRING_MAX + 24];
  snprintf(new_url, sizeof new_url, "nar/%s", nar_name);
  const char *method = narcache_codec_name(w->o->codec);
  if (rc == 0 && ((rc = narcache_narinfo_set_url(ni, new_url, strlen(new_url))) < 0 ||
                  (rc = narcache_narinfo_set_compression(ni, method, strlen(method))) < 0 ||
                  (rc = narcache_narinfo_set_file_hash(ni, &file_hash)) < 0 ||
                  (rc = narcache_narinfo_set_file_size(ni, 1, file_size)) < 0))
    cli_error("%s: %s", path, narcache_narinfo_errmsg(ni));
  char *out = NULL;
  size_t out_len = 0;
  if (rc == 0)
    rc = narcache_narinfo_format(&out, &out_len, ni);
  if (rc == 0)
    rc = upload_text(w->dst, NARCACHE_OBJECT_NARINFO, hash, out, out_len, path);
  else if (rc != NARCACHE_EIO)
    cli_error("%s: %s", path, narcache_strerror(rc));
  narcache_free(out);
  narcache_narinfo_free(ni);
  return rc;
}

static void *worker(void *arg) {
  worker_ctx *w = arg;
  job_queue *q = w->q;
  for (;;) {
    pthread_mutex_lock(&q->lock);
    size_t i = q->next < q->count ? q->next++ : q->count;
    pthread_mutex_unlock(&q->lock);
    if (i == q->count)
      return NULL;
    const char *hash = q->hashes[i];
    int skip = exists(w->dst, NARCACHE_OBJECT_NARINFO, hash);
    uint64_t in = 0, out = 0;
    int rc = skip ? 0 : copy_path(w, hash, &in, &out);
    pthread_mutex_lock(&q->lock);
    q->done++;
    q->skipped += skip;
    q->failed += rc < 0;
    q->bytes_in += in;
    q->bytes_out += out;
    show_progress(q, 0);
    pthread_mutex_unlock(&q->lock);
  }
}

/* The hash part of a store path argument. */
static int hash_of_arg(const char *arg, const char *store_dir, char hash[33]) {
  const char *base = NULL;
  if (narcache_store_path_parse(&base, arg, strlen(arg), store_dir, NULL) < 0) {
    cli_error("%s: not a store path in %s", arg, store_dir);
    return -1;
  }
  memcpy(hash, base, 32);
  hash[32] = '\0';
  return 0;
}

static int add_unique(job_queue *q, size_t *cap, const char *hash) {
  for (size_t i = 0; i < q->count; i++)
    if (memcmp(q->hashes[i], hash, 32) == 0)
      return 0;
  if (q->count == *cap) {
    *cap = *cap ? *cap * 2 : 64;
    q->hashes = realloc(q->hashes, *cap * sizeof *q->hashes);
    if (q->hashes == NULL)
      return -1;
  }
  memcpy(q->hashes[q->count], hash, 32);
  q->hashes[q->count][32] = '\0';
  q->count++;
  return 0;
}

/* The work list: the arguments, and with --closure everything reachable. */
static int collect(job_queue *q, narcache_store *src, const cache_options *o) {
  size_t cap = 0;
  for (size_t i = 0; i < o->n_paths; i++) {
    char hash[33];
    if (hash_of_arg(o->paths[i], o->store_dir, hash) < 0 || add_unique(q, &cap, hash) < 0)
      return -1;
  }
  for (size_t i = 0; o->closure && i < q->count; i++) {
    char *text = NULL;
    size_t len = 0;
    int rc = narcache_store_read_all(&text, &len, src, NARCACHE_OBJECT_NARINFO, q->hashes[i], 32, 1 << 20);
    if (rc < 0) {
      cli_error("%s: not a valid path in the Nix database (%s)", q->hashes[i], narcache_strerror(rc));
      return -1;
    }
    narcache_narinfo *ni = NULL;
    rc = narcache_narinfo_new(&ni, o->store_dir);
    if (rc == 0)
      rc = narcache_narinfo_parse(ni, text, len);
    for (size_t k = 0; rc == 0 && k < narcache_narinfo_reference_count(ni); k++)
      if (add_unique(q, &cap, narcache_narinfo_reference(ni, k, NULL)) < 0)
        rc = NARCACHE_ENOMEM;
    narcache_narinfo_free(ni);
    narcache_free(text);
    if (rc < 0)
      return -1;
  }
  return 0;
}

static int parse_cache_options(int argc, char **argv, cache_options *o) {
  static const char *keys[64];
  o->store_dir = NARCACHE_STORE_DIR;
  o->codec = NARCACHE_CODEC_ZSTD;
  o->level = 3;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  o->jobs = cpus > 0 ? (int)cpus : 1;
  o->key_files = keys;
  int i = 0;
  for (; i < argc && argv[i][0] == '-'; i++) {
    int missing = 0;
    const char *v;
    if (strcmp(argv[i], "--closure") == 0)
      o->closure = 1;
    else if ((v = cli_option_value(argc, argv, &i, "--to", &missing)) != NULL)
      o->to = v;
    else if ((v = cli_option_value(argc, argv, &i, "--store-dir", &missing)) != NULL)
      o->store_dir = v;
    else if ((v = cli_option_value(argc, argv, &i, "--db", &missing)) != NULL)
      o->db = v;
    else if ((v = cli_option_value(argc, argv, &i, "--key-file", &missing)) != NULL) {
      if (o->n_keys == 64)
        return 2;
      keys[o->n_keys++] = v;
    } else if ((v = cli_option_value(argc, argv, &i, "--compression", &missing)) != NULL) {
      o->codec = narcache_codec_from_name(v, strlen(v));
      if (o->codec < 0) {
        cli_error("--compression: zstd or none");
        return 2;
      }
    } else if ((v = cli_option_value(argc, argv, &i, "--level", &missing)) != NULL)
      o->level = atoi(v);
    else if ((v = cli_option_value(argc, argv, &i, "--jobs", &missing)) != NULL)
      o->jobs = atoi(v);
    else {
      if (!missing)
        cli_error("unknown option %s", argv[i]);
      return 2;
    }
  }
  o->paths = argv + i;
  o->n_paths = (size_t)(argc - i);
  if (o->to == NULL || o->n_paths == 0 || o->jobs < 1 || o->jobs > 256) {
    cli_error("need --to DIR, at least one PATH, and 1..256 jobs");
    return 2;
  }
  if (o->level < narcache_codec_min_level() || o->level > narcache_codec_max_level()) {
    cli_error("--level: %d..%d", narcache_codec_min_level(), narcache_codec_max_level());
    return 2;
  }
  return 0;
}

/* Open the destination, creating it (and nix-cache-info) as Nix does. */
static int open_destination(narcache_store **dst, const cache_options *o) {
  if (mkdir(o->to, 0755) < 0 && errno != EEXIST) {
    cli_error("%s: %s", o->to, strerror(errno));
    return -1;
  }
  int rc = narcache_store_dir_new(dst, o->to, NARCACHE_STORE_DIR_WRITABLE);
  if (rc == 0)
    rc = narcache_store_set_store_dir(*dst, o->store_dir);
  if (rc == 0 && !exists(*dst, NARCACHE_OBJECT_CACHE_INFO, "")) {
    char info[600];
    int n = snprintf(info, sizeof info, "StoreDir: %s\n", o->store_dir);
    rc = upload_text(*dst, NARCACHE_OBJECT_CACHE_INFO, "", info, (size_t)n, "nix-cache-info");
  }
  if (rc < 0)
    cli_error("%s: %s", o->to, narcache_strerror(rc));
  return rc < 0 ? -1 : 0;
}

static int cache_add(int argc, char **argv) {
  cache_options o = {0};
  int status = parse_cache_options(argc, argv, &o);
  if (status != 0)
    return status;
  narcache_key *keys[64] = {0};
  narcache_store *src = NULL, *dst = NULL;
  job_queue q = {.lock = PTHREAD_MUTEX_INITIALIZER};
  status = 1;
  for (size_t i = 0; i < o.n_keys; i++)
    if (cli_load_key_file(&keys[i], o.key_files[i], 1) < 0)
      goto out;
  narcache_nixstore_options so = {0};
  so.version = NARCACHE_NIXSTORE_OPTIONS_VERSION;
  so.store_dir = o.store_dir;
  so.db_path = o.db;
  so.keys = (const narcache_key *const *)keys;
  so.n_keys = o.n_keys;
  int rc = narcache_store_nixstore_new(&src, &so);
  if (rc < 0) {
    cli_error("cannot open the Nix database: %s", narcache_strerror(rc));
    goto out;
  }
  if (open_destination(&dst, &o) < 0 || collect(&q, src, &o) < 0)
    goto out;
  q.show_progress = isatty(STDERR_FILENO);
  clock_gettime(CLOCK_MONOTONIC, &q.start);
  int n = o.jobs < (int)q.count ? o.jobs : (int)q.count;
  pthread_t threads[256];
  worker_ctx w = {&q, src, dst, &o};
  int started = 0;
  for (; started < n; started++)
    if (pthread_create(&threads[started], NULL, worker, &w) != 0)
      break;
  if (started == 0)
    worker(&w);
  for (int t = 0; t < started; t++)
    pthread_join(threads[t], NULL);
  show_progress(&q, 1);
  status = q.failed > 0 ? 1 : 0;
out:
  free(q.hashes);
  narcache_store_free(src);
  narcache_store_free(dst);
  for (size_t i = 0; i < o.n_keys; i++)
    narcache_key_free(keys[i]);
  return status;
}

int cmd_cache(int argc, char **argv) {
  if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
    fputs(cache_usage_text, argc < 1 ? stderr : stdout);
    return argc < 1 ? 2 : 0;
  }
  if (strcmp(argv[0], "add") == 0)
    return cache_add(argc - 1, argv + 1);
  cli_error("unknown cache command '%s' (see narcache cache --help)", argv[0]);
  return 2;
}
