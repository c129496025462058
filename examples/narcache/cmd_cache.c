/* narcache cache add: copy store paths from the local Nix store into a
 * binary-cache directory, as `nix copy --to 'file://DIR?compression=zstd&
 * secret-key=F&write-nar-listing=true'` does, with parallel jobs. */
#define _GNU_SOURCE
#include "cache_scan.h"
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
    "usage: narcache cache add --to DIR|s3://BUCKET[/PREFIX][?endpoint=URL&region=R]\n"
    "                          --key-file SECRET_FILE [--key-file ...]\n"
    "                          [--compression zstd|none] [--level N] [--jobs N]\n"
    "                          [--closure] [--store-dir DIR] [--db PATH] PATH...\n"
    "\n"
    "Writes each store PATH (with --closure: and everything it refers to) into\n"
    "the binary-cache directory DIR, as nix copy --to file://DIR does: the\n"
    "NAR (compressed, named by its file hash), the .ls listing, and the narinfo\n"
    "signed with every key, published last. Paths whose narinfo is already in\n"
    "DIR are skipped. Metadata comes from the Nix database (--db, default\n"
    "/nix/var/nix/db/db.sqlite); for a path it does not list, the NAR is made\n"
    "from the tree and its references are found by scanning it for the hash\n"
    "parts of the paths in the store directory, as Nix does (--closure does\n"
    "not follow those).\n"
    "An s3:// destination is a bucket laid out the same way (nix copy --to\n"
    "s3://...); credentials come from --s3-credentials-file FILE (an AWS\n"
    "credentials file; profile= in the URL picks the profile), else from\n"
    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN), else\n"
    "~/.aws/credentials (AWS_PROFILE).\n"
    "--compression  zstd (default) or none;  --level  zstd level (default 3)\n"
    "--jobs         paths copied in parallel (default: one per CPU that other\n"
    "               processes leave free, measured over the first 0.1 s)\n"
    "Progress is shown on a terminal. Exit status 0 if every path is in DIR.\n";

typedef struct cache_options {
  const char *to;
  const char *s3_credentials_file; /* --s3-credentials-file */
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
  const char **paths; /* the argument for the hash, or NULL */
  uint64_t *nar_sizes; /* registered NarSize, 0 when unknown */
  size_t *order;       /* the order paths are taken in: largest NAR first */
  size_t count;
  size_t next;
  /* progress */
  size_t done, skipped, failed;
  uint64_t bytes_in, bytes_out;
  struct timespec start;
  int show_progress;
  /* publishing (the destination stages commits): */
  struct timespec last_flush;
  int flush_failed;
} job_queue;

typedef struct worker_ctx {
  job_queue *q;
  narcache_store *src, *dst; /* src NULL: no Nix database */
  const cache_options *o;
  narcache_key **keys;
  pthread_mutex_t scan_lock;
  int scan_loaded;
  scan_set scan; /* the store directory, listed on first need */
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
typedef struct nar_observer {
  ref_scan scan;
  narcache_hasher *nar_hasher;
} nar_observer;

static int compress_to(FILE *tmp, narcache_reader *r, narcache_codec *codec, narcache_hash *file_hash,
                       uint64_t *file_size, nar_observer *watch) {
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
    if (watch != NULL && got > 0) { /* the uncompressed NAR: hash and references */
      ref_scan_feed(&watch->scan, in_buf, got);
      rc = narcache_hasher_update(watch->nar_hasher, in_buf, got);
    }
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

/* Where a path's NAR, listing and metadata come from. */
typedef struct path_source {
  narcache_narinfo *ni;
  narcache_reader reader;
  char *listing;
  size_t listing_len;
  nar_observer *watch; /* unregistered: NarHash and references still to find */
} path_source;

static int source_registered(worker_ctx *w, const char *hash, path_source *src) {
  char *text = NULL;
  size_t len = 0;
  int rc = narcache_store_read_all(&text, &len, w->src, NARCACHE_OBJECT_NARINFO, hash, 32, 1 << 20);
  if (rc < 0)
    return rc;
  rc = narcache_narinfo_new(&src->ni, w->o->store_dir);
  if (rc == 0)
    rc = narcache_narinfo_parse(src->ni, text, len);
  narcache_free(text);
  const char *url = rc == 0 ? narcache_narinfo_url(src->ni, NULL) : NULL;
  if (rc == 0)
    rc = narcache_store_open(&src->reader, w->src, NARCACHE_OBJECT_NAR, url + 4, strlen(url + 4));
  if (rc == 0)
    rc = narcache_store_read_all(&src->listing, &src->listing_len, w->src, NARCACHE_OBJECT_LISTING,
                                 hash, 32, SIZE_MAX);
  return rc;
}

static int source_unregistered(worker_ctx *w, const char *path, path_source *src) {
  pthread_mutex_lock(&w->scan_lock);
  int rc = 0;
  if (!w->scan_loaded && scan_set_load(&w->scan, w->o->store_dir) < 0)
    rc = NARCACHE_EIO;
  w->scan_loaded = rc == 0;
  pthread_mutex_unlock(&w->scan_lock);
  if (rc < 0) {
    cli_error("%s: cannot list: %s", w->o->store_dir, strerror(errno));
    return rc;
  }
  src->watch = calloc(1, sizeof *src->watch);
  if (src->watch == NULL || ref_scan_init(&src->watch->scan, &w->scan) < 0)
    return NARCACHE_ENOMEM;
  rc = narcache_hasher_new(&src->watch->nar_hasher, NARCACHE_HASH_SHA256);
  if (rc == 0)
    rc = narcache_narinfo_new(&src->ni, w->o->store_dir);
  if (rc == 0 && narcache_narinfo_set_store_path(src->ni, path, strlen(path)) < 0)
    rc = NARCACHE_EINVAL;
  if (rc == 0)
    rc = dumper_reader_open(&src->reader, path, &src->listing, &src->listing_len);
  if (rc < 0)
    cli_error("%s: %s", path, rc == NARCACHE_EIO ? "cannot read the tree" : narcache_strerror(rc));
  return rc;
}

static void source_free(path_source *src) {
  narcache_narinfo_free(src->ni);
  narcache_reader_close(&src->reader);
  narcache_free(src->listing);
  if (src->watch != NULL) {
    ref_scan_free(&src->watch->scan);
    narcache_hasher_free(src->watch->nar_hasher);
    free(src->watch);
  }
}

/* An unregistered path's narinfo gets what the NAR pass found. */
static int finish_unregistered(worker_ctx *w, path_source *src) {
  narcache_hash h;
  int rc = narcache_hasher_final(src->watch->nar_hasher, &h);
  if (rc == 0)
    rc = narcache_narinfo_set_nar_hash(src->ni, &h);
  if (rc == 0)
    rc = narcache_narinfo_set_nar_size(src->ni, src->reader.size);
  if (rc == 0 && ref_scan_add_found(&src->watch->scan, src->ni) < 0)
    rc = NARCACHE_ENOMEM;
  for (size_t i = 0; rc == 0 && i < w->o->n_keys; i++)
    rc = narcache_narinfo_sign(src->ni, w->keys[i]);
  return rc;
}

/* Compress the NAR into a temporary file and upload it under its file
 * hash, unless identical bytes are already there. */
static int store_nar(worker_ctx *w, path_source *src, const char *path, char *nar_name, size_t size,
                     narcache_hash *file_hash, uint64_t *file_size) {
  narcache_codec *codec = NULL;
  int rc = narcache_codec_new_compressor(&codec, w->o->codec, w->o->level);
  if (rc == 0 && w->o->codec == NARCACHE_CODEC_ZSTD)
    rc = narcache_codec_set_pledged_size(codec, src->reader.size);
  FILE *tmp = rc == 0 ? tmpfile() : NULL;
  if (rc == 0 && tmp == NULL)
    rc = NARCACHE_EIO;
  if (rc == 0)
    rc = compress_to(tmp, &src->reader, codec, file_hash, file_size, src->watch);
  narcache_codec_free(codec);
  char digits[NARCACHE_HASH_STRING_MAX];
  if (rc == 0)
    rc = narcache_hash_format(digits, sizeof digits, NULL, file_hash, NARCACHE_HASH_NIX32, 0);
  if (rc == 0)
    snprintf(nar_name, size, "%s.nar%s", digits, narcache_codec_extension(w->o->codec));
  if (rc == 0 && !exists(w->dst, NARCACHE_OBJECT_NAR, nar_name))
    rc = upload_file(w->dst, NARCACHE_OBJECT_NAR, nar_name, tmp, *file_size, path);
  else if (rc < 0)
    cli_error("%s: NAR: %s", path, narcache_strerror(rc));
  if (tmp != NULL)
    fclose(tmp);
  return rc;
}

/* One path: NAR, listing, then the narinfo that points at them. */
static int copy_path(worker_ctx *w, const char *hash, const char *arg, uint64_t *in_bytes,
                     uint64_t *out_bytes) {
  path_source src;
  memset(&src, 0, sizeof src);
  src.reader.fd = -1;
  int rc = w->src != NULL ? source_registered(w, hash, &src) : NARCACHE_ENOTFOUND;
  if (rc == NARCACHE_ENOTFOUND && arg != NULL) {
    source_free(&src);
    memset(&src, 0, sizeof src);
    src.reader.fd = -1;
    rc = source_unregistered(w, arg, &src);
  } else if (rc < 0) {
    cli_error("%s: not a valid path in the Nix database (%s)", hash, narcache_strerror(rc));
  }
  const char *path = src.ni != NULL && narcache_narinfo_store_path(src.ni, NULL) != NULL
                         ? narcache_narinfo_store_path(src.ni, NULL)
                         : hash;
  char nar_name[NARCACHE_HASH_STRING_MAX + 16] = "";
  narcache_hash file_hash;
  uint64_t file_size = 0;
  if (rc == 0)
    rc = store_nar(w, &src, path, nar_name, sizeof nar_name, &file_hash, &file_size);
  *in_bytes = src.reader.size;
  *out_bytes = file_size;
  if (rc == 0 && src.watch != NULL)
    rc = finish_unregistered(w, &src);
  if (rc == 0)
    rc = upload_text(w->dst, NARCACHE_OBJECT_LISTING, hash, src.listing, src.listing_len, path);
  char new_url[NARCACHE_HASH_STRING_MAX + 24];
  snprintf(new_url, sizeof new_url, "nar/%s", nar_name);
  const char *method = narcache_codec_name(w->o->codec);
  if (rc == 0 && ((rc = narcache_narinfo_set_url(src.ni, new_url, strlen(new_url))) < 0 ||
                  (rc = narcache_narinfo_set_compression(src.ni, method, strlen(method))) < 0 ||
                  (rc = narcache_narinfo_set_file_hash(src.ni, &file_hash)) < 0 ||
                  (rc = narcache_narinfo_set_file_size(src.ni, 1, file_size)) < 0))
    cli_error("%s: %s", path, narcache_narinfo_errmsg(src.ni));
  char *out = NULL;
  size_t out_len = 0;
  if (rc == 0)
    rc = narcache_narinfo_format(&out, &out_len, src.ni);
  if (rc == 0)
    rc = upload_text(w->dst, NARCACHE_OBJECT_NARINFO, hash, out, out_len, path);
  narcache_free(out);
  source_free(&src);
  return rc;
}

/* Paths are published (made visible and durable) together, at most this
 * often: one syncfs per batch instead of two fsyncs per file. */
#define FLUSH_SECONDS 1.0

static int publish(worker_ctx *w) {
  int rc = narcache_store_flush(w->dst);
  if (rc < 0) {
    cli_error("%s: publishing: %s", w->o->to, narcache_strerror(rc));
    pthread_mutex_lock(&w->q->lock);
    w->q->flush_failed = 1;
    pthread_mutex_unlock(&w->q->lock);
  }
  return rc;
}

static void *worker(void *arg) {
  worker_ctx *w = arg;
  job_queue *q = w->q;
  for (;;) {
    pthread_mutex_lock(&q->lock);
    size_t i = q->next < q->count ? q->order[q->next++] : q->count;
    pthread_mutex_unlock(&q->lock);
    if (i == q->count)
      return NULL;
    const char *hash = q->hashes[i];
    int skip = exists(w->dst, NARCACHE_OBJECT_NARINFO, hash);
    uint64_t in = 0, out = 0;
    int rc = skip ? 0 : copy_path(w, hash, q->paths[i], &in, &out);
    pthread_mutex_lock(&q->lock);
    q->done++;
    q->skipped += skip;
    q->failed += rc < 0;
    q->bytes_in += in;
    q->bytes_out += out;
    show_progress(q, 0);
    int flush_now = seconds_since(&q->last_flush) >= FLUSH_SECONDS;
    if (flush_now)
      clock_gettime(CLOCK_MONOTONIC, &q->last_flush);
    pthread_mutex_unlock(&q->lock);
    if (flush_now)
      publish(w);
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

static int add_unique(job_queue *q, size_t *cap, const char *hash, const char *path) {
  for (size_t i = 0; i < q->count; i++)
    if (memcmp(q->hashes[i], hash, 32) == 0)
      return 0;
  if (q->count == *cap) {
    *cap = *cap ? *cap * 2 : 64;
    void *hashes = realloc(q->hashes, *cap * sizeof *q->hashes);
    if (hashes != NULL)
      q->hashes = hashes;
    void *paths = realloc(q->paths, *cap * sizeof *q->paths);
    if (paths != NULL)
      q->paths = paths;
    void *sizes = realloc(q->nar_sizes, *cap * sizeof *q->nar_sizes);
    if (sizes != NULL)
      q->nar_sizes = sizes;
    if (hashes == NULL || paths == NULL || sizes == NULL)
      return -1;
  }
  memcpy(q->hashes[q->count], hash, 32);
  q->hashes[q->count][32] = '\0';
  q->paths[q->count] = path;
  q->nar_sizes[q->count] = 0;
  q->count++;
  return 0;
}

static int order_by_size(job_queue *q);

/* The work list: the arguments, and with --closure everything reachable. */
static int collect(job_queue *q, narcache_store *src, const cache_options *o) {
  size_t cap = 0;
  for (size_t i = 0; i < o->n_paths; i++) {
    char hash[33];
    if (hash_of_arg(o->paths[i], o->store_dir, hash) < 0 || add_unique(q, &cap, hash, o->paths[i]) < 0)
      return -1;
  }
  for (size_t i = 0; src != NULL && i < q->count; i++) {
    char *text = NULL;
    size_t len = 0;
    int rc = narcache_store_read_all(&text, &len, src, NARCACHE_OBJECT_NARINFO, q->hashes[i], 32, 1 << 20);
    if (rc == NARCACHE_ENOTFOUND && q->paths[i] != NULL)
      continue; /* unregistered: its references are found while copying */
    if (rc < 0) {
      cli_error("%s: not a valid path in the Nix database (%s)", q->hashes[i], narcache_strerror(rc));
      return -1;
    }
    narcache_narinfo *ni = NULL;
    rc = narcache_narinfo_new(&ni, o->store_dir);
    if (rc == 0)
      rc = narcache_narinfo_parse(ni, text, len);
    if (rc == 0)
      q->nar_sizes[i] = narcache_narinfo_nar_size(ni);
    for (size_t k = 0; rc == 0 && o->closure && k < narcache_narinfo_reference_count(ni); k++)
      if (add_unique(q, &cap, narcache_narinfo_reference(ni, k, NULL), NULL) < 0)
        rc = NARCACHE_ENOMEM;
    narcache_narinfo_free(ni);
    narcache_free(text);
    if (rc < 0)
      return -1;
  }
  return order_by_size(q);
}

static const job_queue *sorting; /* qsort has no context argument */

static int larger_nar_first(const void *a, const void *b) {
  size_t i = *(const size_t *)a, j = *(const size_t *)b;
  uint64_t si = sorting->nar_sizes[i], sj = sorting->nar_sizes[j];
  return si != sj ? (si < sj ? 1 : -1) : (i > j) - (i < j);
}

/* Largest NARs first: the last path to finish is then a small one, so
 * the jobs end together instead of one of them compressing a big path
 * alone at the end. */
static int order_by_size(job_queue *q) {
  q->order = malloc((q->count ? q->count : 1) * sizeof *q->order);
  if (q->order == NULL)
    return -1;
  for (size_t i = 0; i < q->count; i++)
    q->order[i] = i;
  sorting = q;
  qsort(q->order, q->count, sizeof *q->order, larger_nar_first);
  sorting = NULL;
  return 0;
}

/* CPU ticks (user + system + ...) of the whole machine that were busy,
 * and of this process, for judging how many CPUs others leave free. */
static int busy_ticks(unsigned long long *machine, unsigned long long *self) {
  FILE *f = fopen("/proc/stat", "r");
  unsigned long long v[8] = {0};
  int ok = f != NULL && fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                               &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8;
  if (f != NULL)
    fclose(f);
  *machine = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]; /* all but idle and iowait */
  f = fopen("/proc/self/stat", "r");
  unsigned long utime = 0, stime = 0;
  ok = ok && f != NULL &&
       fscanf(f, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) == 2;
  if (f != NULL)
    fclose(f);
  *self = (unsigned long long)utime + stime;
  return ok ? 0 : -1;
}

/* How many jobs to run: --jobs, or one per CPU that other processes leave
 * free, judged over the first SAMPLE_MS while the first job already runs.
 * Compression is nearly all the work, and two compressors sharing one
 * core finish later than one alone (they evict each other's tables). */
#define SAMPLE_MS 100

static int free_cpus(unsigned long long machine0, unsigned long long self0, double seconds) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned long long machine1, self1;
  long hz = sysconf(_SC_CLK_TCK);
  if (cpus < 1 || hz < 1 || seconds <= 0 || busy_ticks(&machine1, &self1) < 0)
    return cpus > 0 ? (int)cpus : 1;
  double others = (double)((machine1 - machine0) - (self1 - self0)) / (double)hz / seconds;
  long n = cpus - (long)(others + 0.5);
  return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

static int parse_cache_options(int argc, char **argv, cache_options *o) {
  static const char *keys[64];
  o->store_dir = NARCACHE_STORE_DIR;
  o->codec = NARCACHE_CODEC_ZSTD;
  o->level = 3;
  o->jobs = 0; /* decided once running: see free_cpus() */
  o->key_files = keys;
  int i = 0;
  for (; i < argc && argv[i][0] == '-'; i++) {
    int missing = 0;
    const char *v;
    if (strcmp(argv[i], "--closure") == 0)
      o->closure = 1;
    else if ((v = cli_option_value(argc, argv, &i, "--to", &missing)) != NULL)
      o->to = v;
    else if ((v = cli_option_value(argc, argv, &i, "--s3-credentials-file", &missing)) != NULL)
      o->s3_credentials_file = v;
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
  if (o->to == NULL || o->n_paths == 0 || o->jobs < 0 || o->jobs > 256) {
    cli_error("need --to DIR, at least one PATH, and 1..256 jobs");
    return 2;
  }
  if (o->level < narcache_codec_min_level() || o->level > narcache_codec_max_level()) {
    cli_error("--level: %d..%d", narcache_codec_min_level(), narcache_codec_max_level());
    return 2;
  }
  return 0;
}

/* An s3:// destination: credentials and endpoint checked before any work. */
static int open_s3(narcache_store **dst, const char *url, const char *credentials_file) {
  char error[512] = "";
  narcache_s3_options so = {.version = NARCACHE_S3_OPTIONS_VERSION,
                            .url = url,
                            .credentials_file = credentials_file,
                            .flags = NARCACHE_STORE_S3_WRITABLE,
                            .error = error,
                            .error_size = sizeof error};
  int rc = narcache_store_s3_new(dst, &so);
  if (rc == 0 && (rc = narcache_store_s3_check(*dst, error, sizeof error)) < 0) {
    narcache_store_free(*dst);
    *dst = NULL;
  }
  if (rc < 0)
    cli_error("%s", error[0] ? error : narcache_strerror(rc));
  return rc;
}

/* Open the destination, creating it (and nix-cache-info) as Nix does. */
static int open_destination(narcache_store **dst, const cache_options *o) {
  int rc;
  if (strncmp(o->to, "s3://", 5) == 0) {
    if (open_s3(dst, o->to, o->s3_credentials_file) < 0)
      return -1;
    rc = 0;
  } else {
    if (mkdir(o->to, 0755) < 0 && errno != EEXIST) {
      cli_error("%s: %s", o->to, strerror(errno));
      return -1;
    }
    rc = narcache_store_dir_new(dst, o->to, NARCACHE_STORE_DIR_WRITABLE | NARCACHE_STORE_DIR_BATCH);
  }
  if (rc == 0)
    rc = narcache_store_set_store_dir(*dst, o->store_dir);
  if (rc == 0 && !exists(*dst, NARCACHE_OBJECT_CACHE_INFO, "")) {
    char info[600];
    int n = snprintf(info, sizeof info, "StoreDir: %s\n", o->store_dir);
    rc = upload_text(*dst, NARCACHE_OBJECT_CACHE_INFO, "", info, (size_t)n, "nix-cache-info");
    if (rc == 0)
      rc = narcache_store_flush(*dst);
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
  if (rc == NARCACHE_ENOTFOUND && o.db == NULL) {
    src = NULL; /* no Nix database here: every path is scanned */
  } else if (rc < 0) {
    cli_error("cannot open the Nix database: %s", narcache_strerror(rc));
    goto out;
  }
  if (open_destination(&dst, &o) < 0 || collect(&q, src, &o) < 0)
    goto out;
  q.show_progress = isatty(STDERR_FILENO);
  clock_gettime(CLOCK_MONOTONIC, &q.start);
  q.last_flush = q.start;
  pthread_t threads[256];
  worker_ctx w = {&q, src, dst, &o, keys, PTHREAD_MUTEX_INITIALIZER, 0, {NULL, 0}};
  unsigned long long machine0 = 0, self0 = 0;
  int sampling = o.jobs == 0 && busy_ticks(&machine0, &self0) == 0;
  int want = o.jobs > 0 ? o.jobs : 1;
  int started = 0;
  for (; started < want && started < (int)q.count; started++)
    if (pthread_create(&threads[started], NULL, worker, &w) != 0)
      break;
  if (sampling && started == 1 && q.count > 1) {
    /* the first job runs meanwhile: nothing is lost by waiting */
    struct timespec pause = {0, SAMPLE_MS * 1000000L}, t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    nanosleep(&pause, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* our own first job counts as ours, not as another process's load */
    int more = free_cpus(machine0, self0, seconds) - 1;
    for (; more > 0 && started < (int)q.count && started < 256; more--, started++)
      if (pthread_create(&threads[started], NULL, worker, &w) != 0)
        break;
  }
  if (started == 0)
    worker(&w);
  for (int t = 0; t < started; t++)
    pthread_join(threads[t], NULL);
  publish(&w);
  show_progress(&q, 1);
  scan_set_free(&w.scan);
  status = q.failed > 0 || q.flush_failed ? 1 : 0;
out:
  free(q.hashes);
  free(q.paths);
  free(q.nar_sizes);
  free(q.order);
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
