/* Crash safety of the dir store (store.h): a child process uploads
 * (NAR, narinfo) pairs into a cache directory the way Nix does -- the NAR
 * as nar/<nix32 sha256>.nar, then the narinfo under its hash part,
 * sometimes replacing an existing narinfo with one for a new NAR -- and is
 * killed with SIGKILL at a random moment. Afterwards, through a fresh
 * read-only store on the same directory:
 *  - every visible narinfo parses, and the NAR its URL names opens and has
 *    its NarSize and NarHash;
 *  - every visible NAR is complete (its sha256 is the one its name says);
 *  - every narinfo is the old version or the new one: a narinfo whose
 *    commit had returned is still there, unchanged unless a replacement
 *    was in flight, and then it is exactly the old or the new text;
 *  - nothing else is visible; interrupted uploads leave only hidden
 *    ".tmp-*" files (counted and reported, they may survive a kill).
 * The child records what it is about to publish in shared memory before
 * each narinfo commit, so the parent knows "old" and "new" exactly.
 *
 * Every other round the writer uses a batch store (NARCACHE_STORE_DIR_BATCH):
 * its commits are only staged, and a narinfo counts as committed once a
 * later narcache_store_flush() has returned; until then it is in flight.
 *
 * NARCACHE_CRASH_SEED=<n> replays a run, NARCACHE_CRASH_ROUNDS=<n> changes
 * the number of rounds. A failing run keeps its directory for inspection. */
#define _GNU_SOURCE /* mkdtemp, nftw, prctl */
#include <narcache.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "test_support.h"

#define DEFAULT_ROUNDS 60
#define MAX_DELAY_US 50000u
#define BLOB_MAX (2u * 1024 * 1024)
#define MAX_SLOTS 8192
#define WATCHDOG_SECONDS 120

/* ------------------------------------------------------------------ */
/* Random numbers (splitmix64: reproducible from one seed)             */
/* ------------------------------------------------------------------ */

static uint64_t rnd(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static uint64_t below(uint64_t *state, uint64_t n) { return rnd(state) % n; }

/* ------------------------------------------------------------------ */
/* What the child has published, shared with the parent               */
/* ------------------------------------------------------------------ */

/* One narinfo (one store path). v[cur] is the sha256 of the narinfo text
 * whose commit returned; while `pending`, v[next] is the text being
 * committed and v[1 - next] the one it replaces (all zeros for a new
 * path). A digest is only written while its index is not in use. */
typedef struct slot {
  char hash[NARCACHE_STORE_HASH_CHARS + 1];
  unsigned n; /* the store path is /nix/store/<hash>-crash-<n> */
  uint8_t v[2][32];
  _Atomic int cur;
  _Atomic int next;
  _Atomic int committed;
  _Atomic int pending;
} slot;

typedef struct shared {
  _Atomic unsigned nslots;
  _Atomic unsigned nar_commits;
  _Atomic unsigned narinfo_commits;
  _Atomic unsigned replacements;
  _Atomic unsigned abandoned;
  _Atomic int child_failed;
  char child_msg[512];
  slot slots[MAX_SLOTS];
} shared;

/* ------------------------------------------------------------------ */
/* The writer (child process): never returns, never uses cmocka        */
/* ------------------------------------------------------------------ */

static void child_fail(shared *sh, const char *what, int rc, const narcache_upload *up) {
  snprintf(sh->child_msg, sizeof sh->child_msg, "%s: %s%s%s", what, narcache_errname(rc),
           up != NULL ? ": " : "", up != NULL ? narcache_upload_errmsg(up) : "");
  atomic_store(&sh->child_failed, 1);
  _exit(3);
}

/* Random NAR-like bytes: the NAR magic when there is room, then noise. */
static void fill_blob(uint8_t *p, size_t len, uint64_t *rng) {
  static const uint8_t magic[24] = {13, 0, 0, 0, 0, 0, 0, 0, 'n', 'i', 'x', '-',
                                    'a', 'r', 'c', 'h', 'i', 'v', 'e', '-', '1', 0, 0, 0};
  size_t i = 0;
  if (len >= sizeof magic) {
    memcpy(p, magic, sizeof magic);
    i = sizeof magic;
  }
  for (; i < len; i += 8) {
    uint64_t x = rnd(rng);
    memcpy(p + i, &x, len - i < 8 ? len - i : 8);
  }
}

/* 1 B .. 2 MiB: some tiny, some near the top, log-uniform in between. */
static size_t blob_size(uint64_t *rng) {
  switch (below(rng, 16)) {
  case 0:
    return 1 + (size_t)below(rng, 64);
  case 1:
    return BLOB_MAX - (size_t)below(rng, 4096);
  default: {
    size_t lo = (size_t)1 << (6 + below(rng, 15)); /* 64 .. 1 MiB */
    return lo + (size_t)below(rng, lo);
  }
  }
}

/* Upload `len` bytes in random-sized chunks. With `stop_at` < len, write
 * only that many and abandon the upload. Dies on any error. */
static void child_put(shared *sh, narcache_store *s, int kind, const char *name,
                      const void *data, size_t len, size_t stop_at, uint64_t *rng,
                      slot *announce) {
  narcache_upload *up = NULL;
  int rc = narcache_store_upload_begin(&up, s, kind, name, strlen(name), len);
  if (rc < 0)
    child_fail(sh, "upload_begin", rc, NULL);
  const uint8_t *p = data;
  size_t end = stop_at < len ? stop_at : len;
  for (size_t off = 0; off < end;) {
    size_t chunk = 1 + (size_t)below(rng, (uint64_t)1 << below(rng, 18));
    if (chunk > end - off)
      chunk = end - off;
    rc = narcache_upload_write(up, p + off, chunk);
    if (rc < 0)
      child_fail(sh, "upload_write", rc, up);
    off += chunk;
  }
  if (stop_at < len) {
    narcache_upload_free(up);
    atomic_fetch_add(&sh->abandoned, 1);
    return;
  }
  if (announce != NULL)
    atomic_store(&announce->pending, 1);
  rc = narcache_upload_commit(up);
  if (rc < 0)
    child_fail(sh, kind == NARCACHE_OBJECT_NAR ? "NAR commit" : "narinfo commit", rc, up);
  narcache_upload_free(up);
}

/* Upload a fresh NAR; its sha256, size and name come back. */
static size_t child_nar(shared *sh, narcache_store *s, uint8_t *blob, uint64_t *rng,
                        narcache_hash *h, char *name, size_t name_size) {
  size_t len = blob_size(rng);
  fill_blob(blob, len, rng);
  int rc = narcache_hash_buffer(h, NARCACHE_HASH_SHA256, blob, len);
  if (rc < 0)
    child_fail(sh, "hash", rc, NULL);
  char digits[NARCACHE_HASH_STRING_MAX];
  rc = narcache_hash_format(digits, sizeof digits, NULL, h, NARCACHE_HASH_NIX32, 0);
  if (rc < 0)
    child_fail(sh, "hash_format", rc, NULL);
  snprintf(name, name_size, "%.52s.nar", digits);
  child_put(sh, s, NARCACHE_OBJECT_NAR, name, blob, len, len, rng, NULL);
  atomic_fetch_add(&sh->nar_commits, 1);
  return len;
}

/* The narinfo text Nix would write for this path and NAR. */
static char *child_narinfo_text(shared *sh, const slot *sl, const narcache_hash *h,
                                size_t nar_len, const char *nar_name, size_t *len) {
  narcache_narinfo *ni = NULL;
  int rc = narcache_narinfo_new(&ni, NULL);
  if (rc < 0)
    child_fail(sh, "narinfo_new", rc, NULL);
  char path[128], url[128];
  snprintf(path, sizeof path, "/nix/store/%s-crash-%u", sl->hash, sl->n);
  snprintf(url, sizeof url, "nar/%s", nar_name);
  if ((rc = narcache_narinfo_set_store_path(ni, path, strlen(path))) < 0 ||
      (rc = narcache_narinfo_set_url(ni, url, strlen(url))) < 0 ||
      (rc = narcache_narinfo_set_compression(ni, "none", 4)) < 0 ||
      (rc = narcache_narinfo_set_nar_hash(ni, h)) < 0 ||
      (rc = narcache_narinfo_set_nar_size(ni, nar_len)) < 0)
    child_fail(sh, narcache_narinfo_errmsg(ni), rc, NULL);
  char *text = NULL;
  rc = narcache_narinfo_format(&text, len, ni);
  if (rc < 0)
    child_fail(sh, "narinfo_format", rc, NULL);
  narcache_narinfo_free(ni);
  return text;
}

/* The narinfo of `sl` is public: its new text is the current one. */
static void child_settle(shared *sh, slot *sl) {
  atomic_store(&sl->cur, atomic_load(&sl->next));
  atomic_store(&sl->committed, 1);
  atomic_store(&sl->pending, 0);
  (void)sh;
}

/* Commit a narinfo for `sl`. Returns 1 when it is public, 0 when a batch
 * store only staged it (settled by the caller after a flush). */
static int child_publish(shared *sh, narcache_store *s, slot *sl, const narcache_hash *h,
                         size_t nar_len, const char *nar_name, uint64_t *rng, int is_new,
                         int batch) {
  size_t len = 0;
  char *text = child_narinfo_text(sh, sl, h, nar_len, nar_name, &len);
  int next = is_new ? 1 : 1 - atomic_load(&sl->cur);
  narcache_hash d;
  int rc = narcache_hash_buffer(&d, NARCACHE_HASH_SHA256, text, len);
  if (rc < 0)
    child_fail(sh, "hash", rc, NULL);
  memcpy(sl->v[next], d.digest, 32);
  atomic_store(&sl->next, next);
  if (is_new)
    atomic_fetch_add(&sh->nslots, 1); /* the slot exists from here on */
  /* child_put sets `pending` right before the commit */
  child_put(sh, s, NARCACHE_OBJECT_NARINFO, sl->hash, text, len, len, rng, sl);
  atomic_fetch_add(&sh->narinfo_commits, 1);
  if (!is_new)
    atomic_fetch_add(&sh->replacements, 1);
  narcache_free(text);
  if (batch)
    return 0;
  child_settle(sh, sl);
  return 1;
}

static void child_main(shared *sh, const char *dir, uint64_t seed, pid_t parent, int batch) {
  /* Never outlive the parent (e.g. if its watchdog fires). */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)
    _exit(4);
  uint64_t rng = seed;
  uint8_t *blob = malloc(BLOB_MAX);
  if (blob == NULL)
    child_fail(sh, "malloc", NARCACHE_ENOMEM, NULL);
  narcache_store *s = NULL;
  int rc = narcache_store_dir_new(&s, dir, NARCACHE_STORE_DIR_WRITABLE |
                                              (batch ? NARCACHE_STORE_DIR_BATCH : 0));
  if (rc < 0)
    child_fail(sh, "store_dir_new", rc, NULL);
  static slot *staged[MAX_SLOTS]; /* batch: narinfos committed, not yet flushed */
  size_t n_staged = 0;
  for (;;) {
    if (batch && n_staged > 0 && below(&rng, 4) == 0) {
      rc = narcache_store_flush(s);
      if (rc < 0)
        child_fail(sh, "flush", rc, NULL);
      for (size_t i = 0; i < n_staged; i++)
        child_settle(sh, staged[i]);
      n_staged = 0;
    }
    unsigned nslots = atomic_load(&sh->nslots);
    if (nslots >= MAX_SLOTS)
      pause(); /* nothing left to do but wait for the kill */

    /* now and then an upload that is abandoned half way */
    if (below(&rng, 16) == 0) {
      size_t len = blob_size(&rng);
      fill_blob(blob, len, &rng);
      char name[64];
      snprintf(name, sizeof name, "abandoned-%016" PRIx64 ".nar", rnd(&rng));
      child_put(sh, s, NARCACHE_OBJECT_NAR, name, blob, len, (size_t)below(&rng, len), &rng,
                NULL);
    }

    narcache_hash h;
    char nar_name[64];
    size_t nar_len = child_nar(sh, s, blob, &rng, &h, nar_name, sizeof nar_name);

    /* a quarter of the time: replace a narinfo that is already there */
    slot *sl = NULL;
    if (nslots > 0 && below(&rng, 4) == 0)
      for (int tries = 0; tries < 8 && sl == NULL; tries++) {
        slot *c = &sh->slots[below(&rng, nslots)];
        if (atomic_load(&c->committed) && !atomic_load(&c->pending))
          sl = c;
      }
    if (sl != NULL) {
      if (!child_publish(sh, s, sl, &h, nar_len, nar_name, &rng, 0, batch))
        staged[n_staged++] = sl;
      continue;
    }
    sl = &sh->slots[nslots];
    uint8_t raw[20];
    for (size_t i = 0; i < sizeof raw; i++)
      raw[i] = (uint8_t)rnd(&rng);
    rc = narcache_nix32_encode(sl->hash, sizeof sl->hash, NULL, raw, sizeof raw);
    if (rc < 0)
      child_fail(sh, "nix32_encode", rc, NULL);
    sl->n = nslots;
    memset(sl->v, 0, sizeof sl->v);
    atomic_store(&sl->cur, 0);
    atomic_store(&sl->committed, 0);
    atomic_store(&sl->pending, 0);
    if (!child_publish(sh, s, sl, &h, nar_len, nar_name, &rng, 1, batch))
      staged[n_staged++] = sl;
  }
}

/* ------------------------------------------------------------------ */
/* The checker (parent)                                                */
/* ------------------------------------------------------------------ */

typedef struct checker {
  const char *dir;
  narcache_store *store;
  shared *sh;
  int round;
  unsigned delay_us;
  int problems;
  /* per slot: seen in this check, and its digest */
  uint8_t *seen;
  uint8_t (*seen_digest)[32];
  unsigned *order; /* slot indices sorted by hash part */
  unsigned nslots;
  /* this round's findings */
  unsigned narinfos, nars, temps;
  unsigned pending_old, pending_new;
} checker;

__attribute__((format(printf, 2, 3))) static void problem(checker *c, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "PROBLEM round %d (SIGKILL after %u us): %s\n", c->round, c->delay_us, msg);
  c->problems++;
}

/* sha256 of a whole reader; -1 (and a problem) if it cannot be read. */
static int hash_reader(checker *c, narcache_reader *r, narcache_hash *out, const char *what) {
  narcache_hasher *h = NULL;
  assert_int_equal(narcache_hasher_new(&h, NARCACHE_HASH_SHA256), 0);
  static uint8_t buf[1 << 16];
  uint64_t off = 0;
  while (off < r->size) {
    size_t got = 0;
    int rc = narcache_reader_read(r, off, buf, sizeof buf, &got);
    if (rc < 0 || got == 0) {
      problem(c, "%s: read at %" PRIu64 " of %" PRIu64 ": %s", what, off, r->size,
              rc < 0 ? narcache_errname(rc) : "short file");
      narcache_hasher_free(h);
      return -1;
    }
    assert_int_equal(narcache_hasher_update(h, buf, got), 0);
    off += got;
  }
  assert_int_equal(narcache_hasher_final(h, out), 0);
  narcache_hasher_free(h);
  return 0;
}

static const shared *sort_base;

static int by_hash(const void *a, const void *b) {
  return strcmp(sort_base->slots[*(const unsigned *)a].hash,
                sort_base->slots[*(const unsigned *)b].hash);
}

static int find_slot(const checker *c, const char *hash) {
  size_t lo = 0, hi = c->nslots;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int cmp = strncmp(c->sh->slots[c->order[mid]].hash, hash, NARCACHE_STORE_HASH_CHARS);
    if (cmp == 0)
      return (int)c->order[mid];
    if (cmp < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -1;
}

static int is_nix32(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (s[i] == '\0' || strchr("0123456789abcdfghijklmnpqrsvwxyz", s[i]) == NULL)
      return 0;
  return 1;
}

/* One visible <hash>.narinfo: old or new version, and its NAR complete. */
static void check_narinfo(checker *c, const char *file) {
  const char *hash = file;
  char *text = NULL;
  size_t len = 0;
  int rc = narcache_store_read_all(&text, &len, c->store, NARCACHE_OBJECT_NARINFO, hash,
                                   NARCACHE_STORE_HASH_CHARS, NARCACHE_NARINFO_MAX_BYTES);
  if (rc < 0) {
    problem(c, "visible %s cannot be read: %s", file, narcache_errname(rc));
    return;
  }
  narcache_hash d;
  assert_int_equal(narcache_hash_buffer(&d, NARCACHE_HASH_SHA256, text, len), 0);

  /* old or new, as the writer recorded them */
  int i = find_slot(c, hash);
  if (i < 0) {
    problem(c, "visible %s was never uploaded", file);
  } else {
    slot *sl = &c->sh->slots[i];
    int committed = atomic_load(&sl->committed), pending = atomic_load(&sl->pending);
    int cur = atomic_load(&sl->cur), next = atomic_load(&sl->next);
    int is_cur = committed && memcmp(d.digest, sl->v[cur], 32) == 0;
    int is_new = pending && memcmp(d.digest, sl->v[next], 32) == 0;
    int is_old = pending && committed && memcmp(d.digest, sl->v[1 - next], 32) == 0;
    if (!is_cur && !is_new && !is_old)
      problem(c, "%s (%zu bytes) is neither the committed version nor one being committed "
                 "(committed=%d pending=%d)",
              file, len, committed, pending);
    if (pending) {
      c->pending_new += is_new;
      c->pending_old += !is_new;
    }
    c->seen[i] = 1;
    memcpy(c->seen_digest[i], d.digest, 32);
  }

  narcache_narinfo *ni = NULL;
  assert_int_equal(narcache_narinfo_new(&ni, NULL), 0);
  rc = narcache_narinfo_parse(ni, text, len);
  narcache_free(text);
  if (rc < 0) {
    problem(c, "visible %s does not parse: %s", file, narcache_narinfo_errmsg(ni));
    narcache_narinfo_free(ni);
    return;
  }
  size_t path_len = 0;
  const char *path = narcache_narinfo_store_path(ni, &path_len);
  if (path == NULL || path_len < 11 + NARCACHE_STORE_HASH_CHARS ||
      memcmp(path + 11, hash, NARCACHE_STORE_HASH_CHARS) != 0 ||
      strstr(path, "-crash-") == NULL)
    problem(c, "%s: StorePath %s is not this path", file, path != NULL ? path : "(none)");
  if (strcmp(narcache_narinfo_compression(ni, NULL), "none") != 0)
    problem(c, "%s: Compression %s", file, narcache_narinfo_compression(ni, NULL));
  const char *url = narcache_narinfo_url(ni, NULL);
  narcache_hash want;
  uint64_t want_size = narcache_narinfo_nar_size(ni);
  if (url == NULL || strncmp(url, "nar/", 4) != 0 ||
      narcache_narinfo_nar_hash(ni, &want) != 0) {
    problem(c, "%s: URL %s / NarHash missing", file, url != NULL ? url : "(none)");
    narcache_narinfo_free(ni);
    return;
  }
  narcache_reader r;
  rc = narcache_store_open(&r, c->store, NARCACHE_OBJECT_NAR, url + 4, strlen(url + 4));
  if (rc < 0) {
    problem(c, "%s points to %s, which cannot be opened: %s", file, url, narcache_errname(rc));
    narcache_narinfo_free(ni);
    return;
  }
  narcache_hash got;
  char what[300];
  snprintf(what, sizeof what, "%s (from %s)", url, file);
  if (r.size != want_size)
    problem(c, "%s: NarSize %" PRIu64 " but %s has %" PRIu64 " bytes", file, want_size, url,
            r.size);
  else if (hash_reader(c, &r, &got, what) == 0 && memcmp(got.digest, want.digest, 32) != 0)
    problem(c, "%s: %s does not have the NarHash", file, url);
  else
    c->narinfos++;
  narcache_reader_close(&r);
  narcache_narinfo_free(ni);
}

/* One visible nar/<name>: complete, i.e. its sha256 is its name. */
static void check_nar(checker *c, const char *name) {
  size_t len = strlen(name);
  if (len != 52 + 4 || strcmp(name + 52, ".nar") != 0 || !is_nix32(name, 52)) {
    problem(c, "unexpected visible file nar/%s", name);
    return;
  }
  narcache_reader r;
  int rc = narcache_store_open(&r, c->store, NARCACHE_OBJECT_NAR, name, len);
  if (rc < 0) {
    problem(c, "visible nar/%s cannot be opened: %s", name, narcache_errname(rc));
    return;
  }
  char what[128];
  snprintf(what, sizeof what, "nar/%.56s", name);
  narcache_hash got;
  if (hash_reader(c, &r, &got, what) == 0) {
    char digits[NARCACHE_HASH_STRING_MAX];
    assert_int_equal(narcache_hash_format(digits, sizeof digits, NULL, &got, NARCACHE_HASH_NIX32, 0), 0);
    if (memcmp(digits, name, 52) != 0)
      problem(c, "visible nar/%s is partial or wrong: %" PRIu64 " bytes with sha256 %s", name,
              r.size, digits);
    else
      c->nars++;
  }
  narcache_reader_close(&r);
}

/* Hidden entries: temporaries of interrupted uploads, nothing else. */
static int hidden(checker *c, const char *sub, const char *name) {
  if (name[0] != '.')
    return 0;
  if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    return 1;
  if (strncmp(name, ".tmp-", 5) == 0)
    c->temps++;
  else
    problem(c, "unexpected hidden file %s%s", sub, name);
  return 1;
}

static void check_dir(checker *c) {
  c->narinfos = c->nars = c->temps = c->pending_old = c->pending_new = 0;
  c->nslots = atomic_load(&c->sh->nslots);
  assert_true(c->nslots <= MAX_SLOTS);
  memset(c->seen, 0, MAX_SLOTS);
  for (unsigned i = 0; i < c->nslots; i++)
    c->order[i] = i;
  sort_base = c->sh;
  qsort(c->order, c->nslots, sizeof *c->order, by_hash);

  DIR *d = opendir(c->dir);
  assert_non_null(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (hidden(c, "", e->d_name))
      continue;
    size_t len = strlen(e->d_name);
    if (strcmp(e->d_name, "nar") == 0)
      continue;
    if (len == NARCACHE_STORE_HASH_CHARS + 8 &&
        strcmp(e->d_name + NARCACHE_STORE_HASH_CHARS, ".narinfo") == 0 &&
        is_nix32(e->d_name, NARCACHE_STORE_HASH_CHARS))
      check_narinfo(c, e->d_name);
    else
      problem(c, "unexpected visible file %s", e->d_name);
  }
  closedir(d);

  char path[600];
  snprintf(path, sizeof path, "%s/nar", c->dir);
  d = opendir(path);
  if (d != NULL) { /* absent when the child died before its first NAR */
    while ((e = readdir(d)) != NULL)
      if (!hidden(c, "nar/", e->d_name))
        check_nar(c, e->d_name);
    closedir(d);
  }

  /* A narinfo whose commit returned never disappears. Then make the
   * model what is on disk now, for the next writer. */
  for (unsigned i = 0; i < c->nslots; i++) {
    slot *sl = &c->sh->slots[i];
    if (!c->seen[i] && atomic_load(&sl->committed))
      problem(c, "%s.narinfo was committed but is no longer visible", sl->hash);
    if (!c->seen[i] && atomic_load(&sl->pending))
      c->pending_old++; /* a new path whose commit was cut short */
    if (c->seen[i]) {
      memcpy(sl->v[0], c->seen_digest[i], 32);
      memset(sl->v[1], 0, 32);
    }
    atomic_store(&sl->cur, 0);
    atomic_store(&sl->next, 0);
    atomic_store(&sl->committed, c->seen[i]);
    atomic_store(&sl->pending, 0);
  }
}

/* ------------------------------------------------------------------ */
/* The harness                                                         */
/* ------------------------------------------------------------------ */

static volatile sig_atomic_t watchdog_child;

static void on_watchdog(int sig) {
  (void)sig;
  static const char msg[] = "test_store_crash: watchdog: a round took too long, giving up\n";
  if (watchdog_child > 0)
    kill((pid_t)watchdog_child, SIGKILL);
  ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)n;
  _exit(1);
}

static void sleep_until(const struct timespec *t) {
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, t, NULL) == EINTR)
    continue;
}

static uint64_t elapsed_us(const struct timespec *a, const struct timespec *b) {
  return (uint64_t)((b->tv_sec - a->tv_sec) * 1000000 + (b->tv_nsec - a->tv_nsec) / 1000);
}

static int keep_dir;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static int teardown_dir(void **state) {
  char *dir = *state;
  if (dir != NULL) {
    if (keep_dir)
      fprintf(stderr, "keeping %s for inspection\n", dir);
    else
      assert_int_equal(nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
    free(dir);
  }
  return 0;
}

static unsigned env_unsigned(const char *name, unsigned dflt) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0' ? (unsigned)strtoul(v, NULL, 0) : dflt;
}

static void test_kill_writer_at_random_points(void **state) {
  char *dir = strdup("/tmp/narcache-crash-XXXXXX");
  assert_non_null(dir);
  assert_non_null(mkdtemp(dir));
  *state = dir;

  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  uint64_t seed = (uint64_t)now.tv_sec * 1000003u ^ (uint64_t)now.tv_nsec ^ (uint64_t)getpid();
  const char *seed_env = getenv("NARCACHE_CRASH_SEED");
  if (seed_env != NULL && *seed_env != '\0')
    seed = strtoull(seed_env, NULL, 0);
  unsigned rounds = env_unsigned("NARCACHE_CRASH_ROUNDS", DEFAULT_ROUNDS);
  print_message("seed %" PRIu64 " (NARCACHE_CRASH_SEED), %u rounds, dir %s\n", seed, rounds, dir);
  uint64_t rng = seed;

  shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(sh != MAP_FAILED);
  checker c = {.dir = dir, .sh = sh};
  c.seen = calloc(MAX_SLOTS, 1);
  c.seen_digest = calloc(MAX_SLOTS, sizeof *c.seen_digest);
  c.order = calloc(MAX_SLOTS, sizeof *c.order);
  assert_non_null(c.seen);
  assert_non_null(c.seen_digest);
  assert_non_null(c.order);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_watchdog;
  sigemptyset(&sa.sa_mask);
  assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);

  uint64_t verified = 0, nars_verified = 0;
  unsigned prev_temps = 0, prev[4] = {0, 0, 0, 0};
  unsigned caught_pending_old = 0, caught_pending_new = 0, idle_rounds = 0;
  for (unsigned round = 0; round < rounds; round++) {
    c.round = (int)round;
    unsigned delay = below(&rng, 6) == 0 ? 0 : (unsigned)below(&rng, MAX_DELAY_US + 1);
    c.delay_us = delay;
    uint64_t child_seed = rnd(&rng);
    alarm(WATCHDOG_SECONDS);

    fflush(stdout);
    fflush(stderr);
    struct timespec start, deadline, killed;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
      child_main(sh, dir, child_seed, parent, (int)(round % 2));
    watchdog_child = pid;
    deadline = start;
    deadline.tv_nsec += (long)delay * 1000;
    deadline.tv_sec += deadline.tv_nsec / 1000000000;
    deadline.tv_nsec %= 1000000000;
    sleep_until(&deadline);
    assert_int_equal(kill(pid, SIGKILL), 0);
    clock_gettime(CLOCK_MONOTONIC, &killed);
    int status = 0;
    pid_t w;
    while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
      continue;
    assert_int_equal(w, pid);
    watchdog_child = 0;
    if (atomic_load(&sh->child_failed))
      fail_msg("round %u: the writer failed: %s", round, sh->child_msg);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
      fail_msg("round %u: the writer ended on its own (status 0x%x)", round, (unsigned)status);

    assert_int_equal(narcache_store_dir_new(&c.store, dir, 0), 0);
    check_dir(&c);
    narcache_store_free(c.store);
    c.store = NULL;
    alarm(0);

    unsigned now_counts[4] = {atomic_load(&sh->nar_commits), atomic_load(&sh->narinfo_commits),
                              atomic_load(&sh->replacements), atomic_load(&sh->abandoned)};
    print_message("round %2u (%s): SIGKILL after %5u us (%6" PRIu64 " us): writer committed %3u NARs, "
                  "%3u narinfos (%2u replacing), abandoned %u; visible %4u narinfos, %4u NARs "
                  "verified; in flight: %u old, %u new; .tmp-* left %u (+%u)\n",
                  round, round % 2 ? "batch" : "plain", delay, elapsed_us(&start, &killed), now_counts[0] - prev[0],
                  now_counts[1] - prev[1], now_counts[2] - prev[2], now_counts[3] - prev[3],
                  c.narinfos, c.nars, c.pending_old, c.pending_new, c.temps,
                  c.temps - (c.temps < prev_temps ? c.temps : prev_temps));
    idle_rounds += now_counts[1] == prev[1];
    memcpy(prev, now_counts, sizeof prev);
    prev_temps = c.temps;
    verified += c.narinfos;
    nars_verified += c.nars;
    caught_pending_old += c.pending_old;
    caught_pending_new += c.pending_new;
    if (c.problems > 0) {
      keep_dir = 1;
      fail_msg("round %u (SIGKILL %u us after fork, seed %" PRIu64 "): %d problem(s), see above",
               round, delay, seed, c.problems);
    }
  }
  print_message("total: %" PRIu64 " narinfo checks and %" PRIu64 " NAR checks passed over %u "
                "rounds; writer committed %u NARs, %u narinfos (%u replacing), abandoned %u; "
                "killed mid-commit: %u left the old state, %u the new; %u rounds without a "
                "narinfo commit; %u .tmp-* files left at the end\n",
                verified, nars_verified, rounds, prev[0], prev[1], prev[2], prev[3],
                caught_pending_old, caught_pending_new, idle_rounds, prev_temps);
  assert_true(verified > 0); /* the test must not pass vacuously */

  munmap(sh, sizeof *sh);
  free(c.seen);
  free(c.seen_digest);
  free(c.order);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_kill_writer_at_random_points, teardown_dir),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
