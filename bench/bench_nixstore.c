/* bench_nixstore: narinfo lookup latency of the nixstore backend
 * (narcache_store_nixstore_new + narcache_store_read_all(NARINFO)) on a
 * synthetic Nix database, against the raw SQLite queries the backend runs
 * and a raw libsodium signature.
 *
 *   bench_nixstore gen [-n PATHS] [-R REFS] [-S SEED] [-s SCHEMA_DB] DB
 *   bench_nixstore run [-r ROUNDS] [-t SECONDS] [-S SEED] [-c CASE] DB
 *
 * gen: writes a new database DB (an existing file is replaced) with the
 *   schema copied statement by statement from SCHEMA_DB (default Nix's own
 *   /nix/var/nix/db/db.sqlite, opened read-only: its page size and every
 *   CREATE in sqlite_master, in order), in WAL mode like Nix's, with PATHS
 *   ValidPaths rows (default 20000): random nix32 hash parts, package-like
 *   names, "sha256:<hex>" hashes, a registration time, a deriver for 85%,
 *   a NAR size between 1 kB and 100 MB (log-uniform), two signatures
 *   (base64 of 64 random bytes under two key names), a fixed-output CA for
 *   5%; and on average REFS (default 5) Refs rows per path (0..2*REFS
 *   references to earlier paths, a self-reference for 10%). One
 *   transaction; the WAL is checkpointed when gen closes the database.
 *   The same SEED gives the same database.
 *
 * run: opens DB three ways, each as the backend does (URI "file:DB?mode=ro",
 *   SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, 2 s busy
 *   timeout): a nixstore store without keys, one with one signing key
 *   (narcache_key_generate), and a raw SQLite connection with the two
 *   statements the backend prepares. Lookups take hash parts from a
 *   pseudo-random sequence: existing paths (hit) or random hash parts that
 *   are not in the database (miss). Cases, all timed in the same process:
 *
 *     raw-sql        BEGIN; the path query (range on `path`, all seven
 *                    columns read); for a hit the Refs query (every row
 *                    read); COMMIT -- what the backend does in SQLite
 *     raw-sign       crypto_sign_detached of a 200-byte message
 *     nc             narcache_store_read_all(NARINFO) + narcache_free,
 *                    no keys
 *     nc-key         the same with one signing key
 *     raw-sql x2, nc x2, nc-key x2
 *                    two threads at once: the raw queries on one
 *                    connection per thread; the nc cases on the one shared
 *                    store (the backend has one connection behind a mutex)
 *
 *   Before timing it checks 200 hits and 200 misses: every hit comes back
 *   with its StorePath and as many References as the database has, and
 *   with the key a Sig that narcache_narinfo_verify accepts; every miss is
 *   NARCACHE_ENOTFOUND (and no row for raw-sql).
 *
 *   Timing: iteration counts are set once so that each case takes about
 *   SECONDS (default 0.2) per round. A round runs every case in 10 slices,
 *   the slices of all cases interleaved (case order rotating), so that a
 *   slow spell of the host hits all cases alike; a case's time in a round is
 *   the sum of its slices. For each case the medians over ROUNDS (default 7)
 *   rounds are printed:
 *     result case=<name> lookup=hit|miss|- threads=<n> us=<median wall
 *            microseconds per operation of all threads together, i.e.
 *            1/throughput> lat_us=<median microseconds per operation as one
 *            thread sees it (= us * threads)> per_s=<operations/s from us>
 *   -c CASE runs only the case with that label (e.g. -c "raw-sql hit"), for
 *   perf or strace. BENCH_NIXSTORE_RAW_SQL, if set, is executed on the raw
 *   connections after opening (experiments such as
 *   BENCH_NIXSTORE_RAW_SQL="PRAGMA mmap_size = 268435456"; not in the
 *   recorded runs).
 *
 * Exit status: 0 on success, 1 on any error or failed check, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <narcache.h>

#include <sodium.h>
#include <sqlite3.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SCHEMA_DB "/nix/var/nix/db/db.sqlite"
#define STORE_DIR "/nix/store"
#define MAX_ROUNDS 101
#define SEQ_LEN 65536 /* hash parts in each lookup sequence (power of 2) */
#define N_CHECK 200
#define BUSY_TIMEOUT_MS 2000 /* as store_nixstore.c */
#define SIGN_MSG_BYTES 200
#define SLICES 10 /* each case's share of a round, in slices interleaved with the others */

static volatile uint64_t sink; /* keeps results observable */

static void die(const char *what, const char *detail) {
  fprintf(stderr, "bench_nixstore: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  exit(1);
}

static void die_rc(const char *what, int rc) { die(what, narcache_strerror(rc)); }

static void die_sql(const char *what, sqlite3 *db) { die(what, sqlite3_errmsg(db)); }

static double now_seconds(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
    die("clock_gettime", strerror(errno));
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* splitmix64: reproducible pseudo-random numbers from a seed. */
static uint64_t rng_state;
static uint64_t rng(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
static double rng_unit(void) { return (double)(rng() >> 11) / 9007199254740992.0; }
static void rng_bytes(uint8_t *out, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = (uint8_t)rng();
}

/* 32 nix32 digits of 20 random bytes: a store path hash part. */
static void random_hash_part(char out[33]) {
  uint8_t b[20];
  rng_bytes(b, sizeof b);
  size_t n = 0;
  if (narcache_nix32_encode(out, 33, &n, b, sizeof b) < 0 || n != 32)
    die("narcache_nix32_encode", NULL);
  out[32] = '\0';
}

/* ======================================================================= */
/* gen                                                                      */
/* ======================================================================= */

static const char *const pkg_names[] = {
    "glibc-2.37-8",      "bash-5.2-p15",      "coreutils-9.3",     "openssl-3.0.10",
    "python3-3.11.4",    "perl-5.36.0",       "zlib-1.2.13",       "gcc-12.3.0",
    "systemd-253.6",     "libxml2-2.10.4",    "ncurses-6.4",       "readline-8.2p1",
    "curl-8.1.1",        "git-2.41.0",        "nix-2.13.3",        "linux-6.1.38",
    "xz-5.4.3",          "zstd-1.5.5",        "sqlite-3.42.0",     "libffi-3.4.4",
    "gnugrep-3.11",      "gnused-4.9",        "gawk-5.2.2",        "findutils-4.9.0",
    "util-linux-2.39",   "dbus-1.14.8",       "glib-2.76.4",       "gtk+3-3.24.38",
    "mesa-23.1.3",       "llvm-15.0.7",       "rustc-1.70.0",      "go-1.20.6",
    "nodejs-18.16.1",    "ghc-9.4.5",         "boost-1.81.0",      "icu4c-73.2",
    "libpng-apng-1.6.39", "harfbuzz-7.3.0",   "fontconfig-2.14.2", "source-stdenv"};
static const char *const outputs[] = {"", "", "", "-dev", "-lib", "-bin", "-man", "-doc"};

static void exec_sql(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "bench_nixstore: %s: %s\n", sql, err ? err : "?");
    exit(1);
  }
}

static void b64(char *out, size_t out_size, const uint8_t *in, size_t n) {
  size_t len = 0;
  if (narcache_base64_encode(out, out_size, &len, in, n) < 0)
    die("narcache_base64_encode", NULL);
  out[len] = '\0';
}

static int cmd_gen(int argc, char **argv) {
  long n_paths = 20000, refs = 5;
  uint64_t seed = 20261127;
  const char *schema_db = DEFAULT_SCHEMA_DB;
  int opt;
  while ((opt = getopt(argc, argv, "n:R:S:s:")) != -1) {
    switch (opt) {
    case 'n': n_paths = strtol(optarg, NULL, 10); break;
    case 'R': refs = strtol(optarg, NULL, 10); break;
    case 'S': seed = strtoull(optarg, NULL, 10); break;
    case 's': schema_db = optarg; break;
    default: return 2;
    }
  }
  if (optind + 1 != argc || n_paths < 1 || n_paths > 10000000 || refs < 0 || refs > 1000)
    return 2;
  const char *path = argv[optind];
  rng_state = seed;

  /* The schema, read-only, from Nix's database. */
  char uri[4200];
  snprintf(uri, sizeof uri, "file:%s?mode=ro", schema_db);
  sqlite3 *src = NULL;
  if (sqlite3_open_v2(uri, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK)
    die_sql(schema_db, src);
  sqlite3_busy_timeout(src, BUSY_TIMEOUT_MS);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(src, "PRAGMA page_size", -1, &st, NULL) != SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW)
    die_sql("PRAGMA page_size", src);
  int page_size = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);

  static const char *const suffixes[] = {"", "-wal", "-shm"};
  for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
    char f[4200];
    snprintf(f, sizeof f, "%s%s", path, suffixes[i]);
    if (unlink(f) != 0 && errno != ENOENT)
      die(f, strerror(errno));
  }
  sqlite3 *db = NULL;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
    die_sql(path, db);
  char pragma[64];
  snprintf(pragma, sizeof pragma, "PRAGMA page_size = %d", page_size);
  exec_sql(db, pragma);
  exec_sql(db, "PRAGMA journal_mode = WAL");

  if (sqlite3_prepare_v2(src,
                         "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                         "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid",
                         -1, &st, NULL) != SQLITE_OK)
    die_sql("sqlite_master", src);
  int n_stmts = 0, rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    exec_sql(db, (const char *)sqlite3_column_text(st, 1));
    n_stmts++;
  }
  if (rc != SQLITE_DONE || n_stmts == 0)
    die_sql("reading the schema", src);
  sqlite3_finalize(st);
  sqlite3_close(src);

  exec_sql(db, "BEGIN");
  sqlite3_stmt *ins = NULL, *ins_ref = NULL;
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize, "
                         "ultimate, sigs, ca) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                         -1, &ins, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO Refs (referrer, reference) VALUES (?1, ?2)",
                         -1, &ins_ref, NULL) != SQLITE_OK)
    die_sql("prepare insert", db);
  long n_refs = 0;
  for (long i = 0; i < n_paths; i++) {
    char hash[33], dhash[33], p[256], drv[256], hex[65], sigs[400], ca[80];
    random_hash_part(hash);
    const char *name = pkg_names[rng() % (sizeof pkg_names / sizeof *pkg_names)];
    const char *out = outputs[rng() % (sizeof outputs / sizeof *outputs)];
    snprintf(p, sizeof p, STORE_DIR "/%s-%s%s", hash, name, out);
    random_hash_part(dhash);
    snprintf(drv, sizeof drv, STORE_DIR "/%s-%s.drv", dhash, name);
    uint8_t b[64];
    rng_bytes(b, 32);
    size_t len = 0;
    if (narcache_base16_encode(hex, sizeof hex, &len, b, 32) < 0)
      die("narcache_base16_encode", NULL);
    hex[len] = '\0';
    char nar_hash[72];
    snprintf(nar_hash, sizeof nar_hash, "sha256:%s", hex);
    char s1[96], s2[96];
    rng_bytes(b, 64);
    b64(s1, sizeof s1, b, 64);
    rng_bytes(b, 64);
    b64(s2, sizeof s2, b, 64);
    snprintf(sigs, sizeof sigs, "cache.nixos.org-1:%s bench-other-1:%s", s1, s2);
    int has_ca = rng() % 20 == 0;
    if (has_ca) {
      char digits[60];
      rng_bytes(b, 32);
      if (narcache_nix32_encode(digits, sizeof digits, &len, b, 32) < 0)
        die("narcache_nix32_encode", NULL);
      digits[len] = '\0';
      snprintf(ca, sizeof ca, "fixed:r:sha256:%s", digits);
    }
    int64_t nar_size = (int64_t)pow(10.0, 3.0 + 5.0 * rng_unit());
    sqlite3_reset(ins);
    sqlite3_bind_text(ins, 1, p, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(ins, 2, nar_hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(ins, 3, 1690000000 + i);
    if (rng() % 100 < 85 && !has_ca)
      sqlite3_bind_text(ins, 4, drv, -1, SQLITE_TRANSIENT);
    else
      sqlite3_bind_null(ins, 4);
    sqlite3_bind_int64(ins, 5, nar_size);
    sqlite3_bind_null(ins, 6);
    sqlite3_bind_text(ins, 7, sigs, -1, SQLITE_TRANSIENT);
    if (has_ca)
      sqlite3_bind_text(ins, 8, ca, -1, SQLITE_TRANSIENT);
    else
      sqlite3_bind_null(ins, 8);
    if (sqlite3_step(ins) != SQLITE_DONE)
      die_sql("insert ValidPaths", db);
    int64_t id = sqlite3_last_insert_rowid(db);
    long k = refs > 0 ? (long)(rng() % (uint64_t)(2 * refs + 1)) : 0;
    if (k > i)
      k = i; /* references to earlier paths */
    for (long j = 0; j < k; j++) {
      int64_t to = 1 + (int64_t)(rng() % (uint64_t)i);
      sqlite3_reset(ins_ref);
      sqlite3_bind_int64(ins_ref, 1, id);
      sqlite3_bind_int64(ins_ref, 2, to);
      if (sqlite3_step(ins_ref) != SQLITE_DONE)
        die_sql("insert Refs", db);
      n_refs += sqlite3_changes(db);
    }
    if (rng() % 10 == 0) {
      sqlite3_reset(ins_ref);
      sqlite3_bind_int64(ins_ref, 1, id);
      sqlite3_bind_int64(ins_ref, 2, id);
      if (sqlite3_step(ins_ref) != SQLITE_DONE)
        die_sql("insert Refs", db);
      n_refs += sqlite3_changes(db);
    }
  }
  sqlite3_finalize(ins);
  sqlite3_finalize(ins_ref);
  exec_sql(db, "COMMIT");
  if (sqlite3_close(db) != SQLITE_OK)
    die("sqlite3_close", path);
  printf("gen: %s: %d schema statements from %s (page size %d), %ld ValidPaths, %ld Refs, WAL\n",
         path, n_stmts, schema_db, page_size, n_paths, n_refs);
  return 0;
}

/* ======================================================================= */
/* run                                                                      */
/* ======================================================================= */

/* The two statements of store_nixstore.c on a connection opened as it does. */
typedef struct rawdb {
  sqlite3 *db;
  sqlite3_stmt *q_path, *q_refs;
} rawdb;

static void raw_open(rawdb *r, const char *path) {
  char uri[4200];
  snprintf(uri, sizeof uri, "file:%s?mode=ro", path);
  if (sqlite3_open_v2(uri, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                      NULL) != SQLITE_OK)
    die_sql(path, r->db);
  sqlite3_busy_timeout(r->db, BUSY_TIMEOUT_MS);
  /* Experiments only: e.g. "PRAGMA mmap_size = 268435456" (raw cases). */
  const char *extra = getenv("BENCH_NIXSTORE_RAW_SQL");
  if (extra != NULL && *extra != '\0')
    exec_sql(r->db, extra);
  if (sqlite3_prepare_v2(r->db,
                         "SELECT id, path, hash, deriver, narSize, sigs, ca FROM ValidPaths "
                         "WHERE path >= ?1 AND path < ?2 LIMIT 1",
                         -1, &r->q_path, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(r->db,
                         "SELECT p.path FROM Refs r JOIN ValidPaths p ON r.reference = p.id "
                         "WHERE r.referrer = ?1",
                         -1, &r->q_refs, NULL) != SQLITE_OK)
    die_sql("prepare", r->db);
}

static void raw_close(rawdb *r) {
  sqlite3_finalize(r->q_path);
  sqlite3_finalize(r->q_refs);
  sqlite3_close(r->db);
}

static uint64_t text_len(sqlite3_stmt *st, int col) {
  const unsigned char *t = sqlite3_column_text(st, col);
  return t != NULL ? (uint64_t)sqlite3_column_bytes(st, col) + t[0] : 0;
}

/* One lookup as the backend's query_path does it in SQLite. Returns the
 * number of references, or -1 if there is no such path. */
static long raw_lookup(rawdb *r, const char *hash) {
  char lo[512], hi[512];
  snprintf(lo, sizeof lo, "%s/%.32s-", STORE_DIR, hash);
  snprintf(hi, sizeof hi, "%s/%.32s.", STORE_DIR, hash);
  if (sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
    die_sql("BEGIN", r->db);
  sqlite3_stmt *st = r->q_path;
  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, lo, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  long n_refs = -1;
  uint64_t acc = 0;
  if (rc == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(st, 0);
    acc += text_len(st, 1) + text_len(st, 2) + text_len(st, 3) +
           (uint64_t)sqlite3_column_int64(st, 4) + text_len(st, 5) + text_len(st, 6);
    sqlite3_stmt *q = r->q_refs;
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, id);
    n_refs = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
      acc += text_len(q, 0);
      n_refs++;
    }
    if (rc != SQLITE_DONE)
      die_sql("refs", r->db);
  } else if (rc != SQLITE_DONE) {
    die_sql("path query", r->db);
  }
  sqlite3_reset(st);
  sqlite3_reset(r->q_refs);
  sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
  sink += acc;
  return n_refs;
}

/* ---- state shared by the cases ----------------------------------------- */

static char (*hits)[33];   /* every hash part in the database */
static size_t n_hits;
static char (*hit_seq)[33];  /* SEQ_LEN picks from hits */
static char (*miss_seq)[33]; /* SEQ_LEN hash parts not in the database */
static narcache_store *store_plain, *store_key;
static const char *db_path;
static uint8_t sign_sk[crypto_sign_SECRETKEYBYTES];
static uint8_t sign_msg[SIGN_MSG_BYTES];

static void nc_lookup(narcache_store *s, const char *hash, int want_hit) {
  char *text = NULL;
  size_t len = 0;
  int rc = narcache_store_read_all(&text, &len, s, NARCACHE_OBJECT_NARINFO, hash, 32, 1 << 20);
  if (want_hit ? rc != 0 : rc != NARCACHE_ENOTFOUND) {
    fprintf(stderr, "bench_nixstore: lookup %.32s: %s (expected %s)\n", hash, narcache_strerror(rc),
            want_hit ? "a narinfo" : "not found");
    exit(1);
  }
  sink += len;
  narcache_free(text);
}

enum { OP_RAW_SQL, OP_RAW_SIGN, OP_NC, OP_NC_KEY };
static const char *const op_name[] = {"raw-sql", "raw-sign", "nc", "nc-key"};

typedef struct bench_case {
  char label[48];
  int op;
  int hit;     /* 1 hit, 0 miss, -1 not a lookup */
  int threads; /* 1 or 2 */
  unsigned long iters;  /* per thread */
  unsigned long cursor; /* where the next run starts in the sequence */
  double us[MAX_ROUNDS];
} bench_case;

typedef struct thread_arg {
  const bench_case *c;
  unsigned long start, iters;
  rawdb *raw; /* OP_RAW_SQL: this thread's connection */
  pthread_barrier_t *barrier;
} thread_arg;

static void run_ops(const bench_case *c, rawdb *raw, unsigned long start, unsigned long iters) {
  char (*seq)[33] = c->hit == 0 ? miss_seq : hit_seq;
  uint8_t sig[crypto_sign_BYTES];
  for (unsigned long i = 0; i < iters; i++) {
    const char *h = seq[(start + i) & (SEQ_LEN - 1)];
    switch (c->op) {
    case OP_RAW_SQL: {
      long n = raw_lookup(raw, h);
      if ((n >= 0) != (c->hit == 1))
        die("raw lookup", "hit/miss not as expected");
      break;
    }
    case OP_RAW_SIGN:
      sign_msg[0] = (uint8_t)i; /* a different message each time */
      crypto_sign_detached(sig, NULL, sign_msg, sizeof sign_msg, sign_sk);
      sink += sig[0];
      break;
    case OP_NC: nc_lookup(store_plain, h, c->hit); break;
    case OP_NC_KEY: nc_lookup(store_key, h, c->hit); break;
    }
  }
}

static void *thread_main(void *p) {
  thread_arg *a = p;
  pthread_barrier_wait(a->barrier);
  run_ops(a->c, a->raw, a->start, a->iters);
  return NULL;
}

static rawdb raw_conn[2]; /* one per thread */

/* Run a case once; returns its wall time in seconds. */
static double run_case(bench_case *c, unsigned long iters) {
  unsigned long start = c->cursor;
  c->cursor += iters * (unsigned long)c->threads;
  if (c->threads == 1) {
    double t0 = now_seconds();
    run_ops(c, &raw_conn[0], start, iters);
    return now_seconds() - t0;
  }
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, (unsigned)c->threads + 1);
  pthread_t th[2];
  thread_arg args[2];
  for (int t = 0; t < c->threads; t++) {
    args[t] = (thread_arg){c, start + (unsigned long)t * (SEQ_LEN / 2), iters, &raw_conn[t], &barrier};
    if (pthread_create(&th[t], NULL, thread_main, &args[t]) != 0)
      die("pthread_create", NULL);
  }
  pthread_barrier_wait(&barrier);
  double t0 = now_seconds();
  for (int t = 0; t < c->threads; t++)
    pthread_join(th[t], NULL);
  double dt = now_seconds() - t0;
  pthread_barrier_destroy(&barrier);
  return dt;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(const double *v, int n) {
  double tmp[MAX_ROUNDS];
  memcpy(tmp, v, (size_t)n * sizeof *v);
  qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
  return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static void load_hits(void) {
  rawdb r;
  raw_open(&r, db_path);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(r.db, "SELECT path FROM ValidPaths", -1, &st, NULL) != SQLITE_OK)
    die_sql("SELECT path", r.db);
  size_t cap = 1024;
  hits = malloc(cap * sizeof *hits);
  size_t prefix = strlen(STORE_DIR "/");
  int rc;
  while (hits != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *p = (const char *)sqlite3_column_text(st, 0);
    if (p == NULL || strncmp(p, STORE_DIR "/", prefix) != 0 || strlen(p) < prefix + 33)
      continue;
    if (n_hits == cap) {
      cap *= 2;
      hits = realloc(hits, cap * sizeof *hits);
      if (hits == NULL)
        break;
    }
    memcpy(hits[n_hits], p + prefix, 32);
    hits[n_hits][32] = '\0';
    n_hits++;
  }
  if (hits == NULL)
    die("out of memory", NULL);
  sqlite3_finalize(st);
  raw_close(&r);
}

/* Check hits and misses through all three ways before timing. */
static void check(const narcache_key *pub) {
  rawdb *r = &raw_conn[0];
  for (int i = 0; i < N_CHECK; i++) {
    const char *h = hit_seq[(size_t)i * 97 % SEQ_LEN];
    long n_refs = raw_lookup(r, h);
    if (n_refs < 0)
      die("check: raw-sql misses an existing path", h);
    char *text = NULL;
    size_t len = 0;
    int rc = narcache_store_read_all(&text, &len, store_key, NARCACHE_OBJECT_NARINFO, h, 32, 1 << 20);
    if (rc < 0)
      die_rc("check: nixstore lookup", rc);
    narcache_narinfo *ni = NULL;
    if ((rc = narcache_narinfo_new(&ni, NULL)) < 0 || (rc = narcache_narinfo_parse(ni, text, len)) < 0)
      die_rc("check: parse served narinfo", rc);
    const char *sp = narcache_narinfo_store_path(ni, NULL);
    if (sp == NULL || strncmp(sp + strlen(STORE_DIR "/"), h, 32) != 0)
      die("check: wrong StorePath", sp);
    if ((long)narcache_narinfo_reference_count(ni) != n_refs)
      die("check: reference count differs from the database", h);
    const narcache_key *k = NULL;
    if ((rc = narcache_narinfo_verify(&k, ni, &pub, 1)) != 0)
      die_rc("check: narcache_narinfo_verify", rc);
    narcache_narinfo_free(ni);
    narcache_free(text);
    nc_lookup(store_plain, h, 1);
    const char *m = miss_seq[(size_t)i * 89 % SEQ_LEN];
    if (raw_lookup(r, m) >= 0)
      die("check: raw-sql finds a miss", m);
    nc_lookup(store_plain, m, 0);
    nc_lookup(store_key, m, 0);
  }
}

static int cmd_run(int argc, char **argv) {
  int rounds = 7;
  double seconds = 0.2;
  uint64_t seed = 7;
  const char *only = NULL;
  int opt;
  while ((opt = getopt(argc, argv, "r:t:S:c:")) != -1) {
    switch (opt) {
    case 'c': only = optarg; break;
    case 'r': rounds = atoi(optarg); break;
    case 't': seconds = atof(optarg); break;
    case 'S': seed = strtoull(optarg, NULL, 10); break;
    default: return 2;
    }
  }
  if (optind + 1 != argc || rounds < 1 || rounds > MAX_ROUNDS || !(seconds > 0) || seconds > 60)
    return 2;
  db_path = argv[optind];
  rng_state = seed;
  int rc = narcache_init();
  if (rc < 0)
    die_rc("narcache_init", rc);

  load_hits();
  if (n_hits == 0)
    die(db_path, "no store paths");
  hit_seq = malloc(SEQ_LEN * sizeof *hit_seq);
  miss_seq = malloc(SEQ_LEN * sizeof *miss_seq);
  if (hit_seq == NULL || miss_seq == NULL)
    die("out of memory", NULL);
  for (size_t i = 0; i < SEQ_LEN; i++) {
    memcpy(hit_seq[i], hits[rng() % n_hits], 33);
    random_hash_part(miss_seq[i]); /* 2^160 possibilities: checked below */
  }

  narcache_key *key = NULL, *pub = NULL;
  if ((rc = narcache_key_generate(&key, "bench-nixstore-1", 16)) < 0 ||
      (rc = narcache_key_public(&pub, key)) < 0)
    die_rc("narcache_key_generate", rc);
  narcache_nixstore_options so = {0};
  so.version = NARCACHE_NIXSTORE_OPTIONS_VERSION;
  so.db_path = db_path;
  if ((rc = narcache_store_nixstore_new(&store_plain, &so)) < 0)
    die_rc("narcache_store_nixstore_new", rc);
  const narcache_key *keys[1] = {key};
  so.keys = keys;
  so.n_keys = 1;
  if ((rc = narcache_store_nixstore_new(&store_key, &so)) < 0)
    die_rc("narcache_store_nixstore_new (key)", rc);
  raw_open(&raw_conn[0], db_path);
  raw_open(&raw_conn[1], db_path);
  uint8_t pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_keypair(pk, sign_sk);
  randombytes_buf(sign_msg, sizeof sign_msg);

  check(pub);
  printf("bench_nixstore: db=%s paths=%zu rounds=%d seconds=%.3f checked=%d hits+%d misses "
         "sqlite=%s\n",
         db_path, n_hits, rounds, seconds, N_CHECK, N_CHECK, sqlite3_libversion());

  bench_case cases[] = {
      {"raw-sql hit", OP_RAW_SQL, 1, 1, 0, 0, {0}},
      {"raw-sql miss", OP_RAW_SQL, 0, 1, 0, 0, {0}},
      {"nc hit", OP_NC, 1, 1, 0, 0, {0}},
      {"nc miss", OP_NC, 0, 1, 0, 0, {0}},
      {"nc-key hit", OP_NC_KEY, 1, 1, 0, 0, {0}},
      {"nc-key miss", OP_NC_KEY, 0, 1, 0, 0, {0}},
      {"raw-sign 200B", OP_RAW_SIGN, -1, 1, 0, 0, {0}},
      {"raw-sql hit x2", OP_RAW_SQL, 1, 2, 0, 0, {0}},
      {"nc hit x2", OP_NC, 1, 2, 0, 0, {0}},
      {"nc-key hit x2", OP_NC_KEY, 1, 2, 0, 0, {0}},
  };
  int n_cases = (int)(sizeof cases / sizeof *cases);
  if (only != NULL) {
    int i = 0;
    while (i < n_cases && strcmp(cases[i].label, only) != 0)
      i++;
    if (i == n_cases)
      die("no such case", only);
    cases[0] = cases[i];
    n_cases = 1;
  }

  /* Calibrate: grow the count until a run takes >= 20 ms, then scale. */
  for (int i = 0; i < n_cases; i++) {
    bench_case *c = &cases[i];
    unsigned long n = 16;
    double dt;
    while ((dt = run_case(c, n)) < 0.02)
      n *= 2;
    double per = dt / (double)n;
    c->iters = (unsigned long)(seconds / per);
    if (c->iters < 1)
      c->iters = 1;
  }

  for (int r = 0; r < rounds; r++) {
    double spent[sizeof cases / sizeof *cases] = {0};
    unsigned long done[sizeof cases / sizeof *cases] = {0};
    for (int sl = 0; sl < SLICES; sl++)
      for (int k = 0; k < n_cases; k++) {
        int i = (r + sl + k) % n_cases;
        bench_case *c = &cases[i];
        unsigned long n = c->iters * (unsigned long)(sl + 1) / SLICES - done[i];
        if (n > 0)
          spent[i] += run_case(c, n);
        done[i] += n;
      }
    for (int i = 0; i < n_cases; i++)
      cases[i].us[r] = spent[i] * 1e6 / (double)(done[i] * (unsigned long)cases[i].threads);
    printf("round %d:", r + 1);
    for (int i = 0; i < n_cases; i++)
      printf(" [%s] %.2f", cases[i].label, cases[i].us[r]);
    printf("\n");
    fflush(stdout);
  }
  for (int i = 0; i < n_cases; i++) {
    bench_case *c = &cases[i];
    double us = median(c->us, rounds);
    printf("result case=%s lookup=%s threads=%d iters=%lu us=%.3f lat_us=%.3f per_s=%.0f\n",
           op_name[c->op], c->hit == 1 ? "hit" : c->hit == 0 ? "miss" : "-", c->threads, c->iters,
           us, us * c->threads, 1e6 / us);
  }

  raw_close(&raw_conn[0]);
  raw_close(&raw_conn[1]);
  narcache_store_free(store_plain);
  narcache_store_free(store_key);
  narcache_key_free(key);
  narcache_key_free(pub);
  sodium_memzero(sign_sk, sizeof sign_sk);
  free(hits);
  free(hit_seq);
  free(miss_seq);
  (void)narcache_shutdown();
  return 0;
}

static void usage(void) {
  fputs("usage: bench_nixstore gen [-n PATHS] [-R REFS] [-S SEED] [-s SCHEMA_DB] DB\n"
        "       bench_nixstore run [-r ROUNDS] [-t SECONDS] [-S SEED] [-c CASE] DB\n",
        stderr);
}

int main(int argc, char **argv) {
  int rc = 2;
  if (argc >= 2 && strcmp(argv[1], "gen") == 0)
    rc = cmd_gen(argc - 1, argv + 1);
  else if (argc >= 2 && strcmp(argv[1], "run") == 0)
    rc = cmd_run(argc - 1, argv + 1);
  if (rc == 2)
    usage();
  return rc;
}
