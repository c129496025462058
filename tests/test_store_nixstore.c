/* The nixstore backend against the real Nix store (driven by
 * tests/store_nixstore.sh, which makes the paths and has Nix write a
 * file:// cache of them).
 *
 *   test_store_nixstore compare CACHE_DIR HASH...
 *     for each path: our narinfo states what Nix's does (StorePath,
 *     NarHash, NarSize, References, Deriver, CA), carries our signature,
 *     and our NAR and .ls are byte-identical to the ones Nix wrote;
 *   test_store_nixstore hammer SECONDS HASH...
 *     look the paths up in a loop from 3 threads at once (while Nix writes
 *     to its database); every lookup must succeed;
 *   test_store_nixstore show HASH...
 *     print the narinfo the backend serves for each path, each followed
 *     by a line "----" (the script compares them with nix path-info);
 *   test_store_nixstore log LOG_DIR NAME EXPECT
 *     open log/NAME from a backend whose log directory is LOG_DIR: EXPECT
 *     is a file holding the text it must serve, or "absent" or "error". */
#include <narcache.h>

#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                        \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  size_t got;
  while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap)
      buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  *len = n;
  return buf;
}

static narcache_narinfo *parse(const char *text, size_t len) {
  narcache_narinfo *ni = NULL;
  if (narcache_narinfo_new(&ni, NULL) != 0 || narcache_narinfo_parse(ni, text, len) != 0) {
    fprintf(stderr, "parse: %s\n", ni ? narcache_narinfo_errmsg(ni) : "?");
    exit(2);
  }
  return ni;
}

static int same_str(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void compare_fields(const narcache_narinfo *ours, const narcache_narinfo *nix, const char *hash) {
  char *fp_ours = NULL, *fp_nix = NULL;
  CHECK(narcache_narinfo_fingerprint(&fp_ours, NULL, ours) == 0, "%s: fingerprint", hash);
  CHECK(narcache_narinfo_fingerprint(&fp_nix, NULL, nix) == 0, "%s: fingerprint", hash);
  /* StorePath, NarHash, NarSize and References, exactly */
  CHECK(fp_ours && fp_nix && strcmp(fp_ours, fp_nix) == 0, "%s: fingerprint\n ours %s\n nix  %s",
        hash, fp_ours, fp_nix);
  narcache_free(fp_ours);
  narcache_free(fp_nix);
  CHECK(same_str(narcache_narinfo_deriver(ours, NULL), narcache_narinfo_deriver(nix, NULL)),
        "%s: Deriver", hash);
  CHECK(same_str(narcache_narinfo_ca(ours, NULL), narcache_narinfo_ca(nix, NULL)), "%s: CA", hash);
}

static char *read_object(narcache_store *s, int kind, const char *name, size_t *len) {
  narcache_reader r;
  int rc = narcache_store_open(&r, s, kind, name, strlen(name));
  if (rc != 0) {
    CHECK(0, "open %s: %s", name, narcache_errname(rc));
    return NULL;
  }
  char *buf = malloc(r.size + 1);
  uint64_t off = 0;
  /* odd-sized reads, and one seek backwards, as a Range request would */
  while (off < r.size) {
    size_t got = 0;
    rc = narcache_reader_read(&r, off, buf + off, 1000, &got);
    if (rc != 0 || got == 0) {
      CHECK(0, "read %s at %llu: %s", name, (unsigned long long)off, narcache_errname(rc));
      break;
    }
    off += got;
  }
  if (r.size > 10) {
    char again[10];
    size_t got = 0;
    CHECK(narcache_reader_read(&r, r.size - 10, again, 10, &got) == 0 && got == 10 &&
              memcmp(again, buf + r.size - 10, 10) == 0,
          "re-read %s", name);
  }
  *len = (size_t)r.size;
  narcache_reader_close(&r);
  return buf;
}

/* The zstd flavour: the narinfo says zstd, and the NAR decompresses to the
 * bytes Nix wrote. */
static void compare_zstd(narcache_store *z, const char *hash, const char *nix_nar, size_t nix_len) {
  char *text = NULL;
  size_t len = 0;
  int rc = narcache_store_read_all(&text, &len, z, NARCACHE_OBJECT_NARINFO, hash, 32, 1 << 20);
  CHECK(rc == 0, "%s: zstd narinfo: %s", hash, narcache_errname(rc));
  if (rc != 0)
    return;
  narcache_narinfo *ni = parse(text, len);
  narcache_free(text);
  CHECK(strcmp(narcache_narinfo_compression(ni, NULL), "zstd") == 0, "%s: Compression", hash);
  const char *url = narcache_narinfo_url(ni, NULL);
  CHECK(strlen(url) > 8 && strcmp(url + strlen(url) - 8, ".nar.zst") == 0, "%s: URL %s", hash, url);
  size_t zlen = 0;
  char *zdata = read_object(z, NARCACHE_OBJECT_NAR, url + 4, &zlen);
  narcache_codec *c = NULL;
  CHECK(narcache_codec_new_decompressor(&c, NARCACHE_CODEC_ZSTD) == 0, "decompressor");
  char *plain = malloc(nix_len + 1);
  narcache_inbuf in = {zdata, zlen, 0};
  narcache_outbuf out = {plain, nix_len + 1, 0};
  while (zdata != NULL && in.pos < in.size && narcache_codec_process(c, &out, &in, 0) >= 0 && out.pos < out.size)
    ;
  CHECK(narcache_codec_end(c) == 0 && out.pos == nix_len && memcmp(plain, nix_nar, nix_len) == 0,
        "%s: zstd NAR does not decompress to Nix's NAR", hash);
  narcache_codec_free(c);
  free(plain);
  free(zdata);
  narcache_narinfo_free(ni);
}

static narcache_store *zstd_store;

static int compare(narcache_store *s, const narcache_key *pub, const char *cache, const char *hash) {
  char path[4096];
  size_t nix_len = 0, ours_len = 0;
  snprintf(path, sizeof path, "%s/%s.narinfo", cache, hash);
  char *nix_text = slurp(path, &nix_len);
  if (nix_text == NULL) {
    CHECK(0, "no %s", path);
    return 1;
  }
  char *ours_text = NULL;
  int rc = narcache_store_read_all(&ours_text, &ours_len, s, NARCACHE_OBJECT_NARINFO, hash, 32, 1 << 20);
  CHECK(rc == 0, "%s: narinfo: %s", hash, narcache_errname(rc));
  if (rc != 0)
    return 1;
  narcache_narinfo *nix = parse(nix_text, nix_len), *ours = parse(ours_text, ours_len);
  compare_fields(ours, nix, hash);
  const narcache_key *trusted[] = {pub};
  CHECK(narcache_narinfo_verify(NULL, ours, trusted, 1) == 0, "%s: our signature", hash);

  /* the NAR our URL names is byte for byte the one Nix wrote */
  const char *url = narcache_narinfo_url(ours, NULL), *nix_url = narcache_narinfo_url(nix, NULL);
  size_t nar_len = 0, nix_nar_len = 0;
  char *nar = read_object(s, NARCACHE_OBJECT_NAR, url + 4, &nar_len);
  snprintf(path, sizeof path, "%s/%s", cache, nix_url);
  char *nix_nar = slurp(path, &nix_nar_len);
  CHECK(nar && nix_nar && nar_len == nix_nar_len && memcmp(nar, nix_nar, nar_len) == 0,
        "%s: NAR differs from Nix's %s", hash, nix_url);
  if (nix_nar != NULL)
    compare_zstd(zstd_store, hash, nix_nar, nix_nar_len);
  /* and the listing */
  size_t ls_len = 0, nix_ls_len = 0;
  char *ls = read_object(s, NARCACHE_OBJECT_LISTING, hash, &ls_len);
  snprintf(path, sizeof path, "%s/%s.ls", cache, hash);
  char *nix_ls = slurp(path, &nix_ls_len);
  CHECK(ls && nix_ls && ls_len == nix_ls_len && memcmp(ls, nix_ls, ls_len) == 0,
        "%s: .ls differs:\n ours %.*s\n nix  %.*s", hash, (int)ls_len, ls ? ls : "",
        (int)nix_ls_len, nix_ls ? nix_ls : "");
  printf("ok %s (%zu-byte NAR, %zu references)\n", hash, nar_len,
         narcache_narinfo_reference_count(ours));
  free(nar);
  free(nix_nar);
  free(ls);
  free(nix_ls);
  narcache_narinfo_free(nix);
  narcache_narinfo_free(ours);
  narcache_free(ours_text);
  free(nix_text);
  return 0;
}

static void absent_objects(narcache_store *s, const char *hash) {
  narcache_reader r;
  CHECK(narcache_store_open(&r, s, NARCACHE_OBJECT_NARINFO, "00000000000000000000000000000000", 32) ==
            NARCACHE_ENOTFOUND,
        "unknown hash must be absent");
  char name[128];
  /* a NAR name whose NarHash is not the registered one */
  snprintf(name, sizeof name, "%s-0000000000000000000000000000000000000000000000000000.nar", hash);
  CHECK(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, name, strlen(name)) == NARCACHE_ENOTFOUND,
        "NAR with a stale hash must be absent");
  CHECK(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, "x.nar", 5) == NARCACHE_ENOTFOUND,
        "foreign NAR name must be absent");
  char *info = NULL;
  CHECK(narcache_store_read_all(&info, NULL, s, NARCACHE_OBJECT_CACHE_INFO, "", 0, 4096) == 0 &&
            strcmp(info, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n") == 0,
        "nix-cache-info: %s", info ? info : "(none)");
  narcache_free(info);
  CHECK(narcache_store_probe(s) == 0, "probe");
}

typedef struct hammer_job {
  narcache_store *store;
  time_t end;
  char **hashes;
  int n;
  int failed;
  unsigned long lookups;
} hammer_job;

static void *hammer_thread(void *arg) {
  hammer_job *job = arg;
  while (time(NULL) < job->end && !job->failed) {
    for (int i = 0; i < job->n; i++) {
      char *text = NULL;
      int rc = narcache_store_read_all(&text, NULL, job->store, NARCACHE_OBJECT_NARINFO,
                                       job->hashes[i], 32, 1 << 20);
      if (rc != 0) {
        fprintf(stderr, "lookup %s while Nix writes: %s\n", job->hashes[i], narcache_errname(rc));
        job->failed = 1;
      }
      narcache_free(text);
      job->lookups++;
    }
    if (narcache_store_probe(job->store) != 0) {
      fprintf(stderr, "probe failed while Nix writes\n");
      job->failed = 1;
    }
  }
  return NULL;
}

static int hammer(narcache_store *s, double seconds, char **hashes, int n) {
  enum { THREADS = 3 };
  hammer_job jobs[THREADS];
  pthread_t threads[THREADS];
  unsigned long lookups = 0;
  for (int t = 0; t < THREADS; t++) {
    jobs[t] = (hammer_job){s, time(NULL) + (time_t)seconds, hashes, n, 0, 0};
    CHECK(pthread_create(&threads[t], NULL, hammer_thread, &jobs[t]) == 0, "pthread_create");
  }
  for (int t = 0; t < THREADS; t++) {
    pthread_join(threads[t], NULL);
    CHECK(!jobs[t].failed, "thread %d: a lookup failed", t);
    CHECK(jobs[t].lookups > 0, "thread %d made no lookup", t);
    lookups += jobs[t].lookups;
  }
  printf("%lu lookups from %d threads while Nix wrote, all answered\n", lookups, THREADS);
  return 0;
}

static int check_log(const char *log_dir, const char *name, const char *expect) {
  narcache_nixstore_options o = {0};
  o.version = NARCACHE_NIXSTORE_OPTIONS_VERSION;
  o.log_dir = log_dir;
  narcache_store *s = NULL;
  int rc = narcache_store_nixstore_new(&s, &o);
  CHECK(rc == 0, "nixstore backend: %s", narcache_errname(rc));
  if (rc != 0)
    return 1;
  char *text = NULL;
  size_t len = 0;
  rc = narcache_store_read_all(&text, &len, s, NARCACHE_OBJECT_LOG, name, strlen(name), 1 << 26);
  if (strcmp(expect, "absent") == 0) {
    CHECK(rc == NARCACHE_ENOTFOUND, "log %s: want absent, got %s", name, narcache_errname(rc));
  } else if (strcmp(expect, "error") == 0) {
    CHECK(rc == NARCACHE_EIO, "log %s: want EIO, got %s", name, narcache_errname(rc));
  } else {
    size_t want_len = 0;
    char *want = slurp(expect, &want_len);
    CHECK(want != NULL, "no %s", expect);
    CHECK(rc == 0, "log %s: %s", name, narcache_errname(rc));
    CHECK(rc != 0 || want == NULL || (len == want_len && memcmp(text, want, len) == 0),
          "log %s: %zu bytes served, %zu expected", name, len, want_len);
    free(want);
  }
  narcache_free(text);
  narcache_store_free(s);
  if (failures == 0)
    printf("log %s: %s\n", name, rc == 0 ? "served" : narcache_errname(rc));
  return failures > 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s compare CACHE HASH... | hammer SECONDS HASH... | log DIR NAME EXPECT\n", argv[0]);
    return 2;
  }
  if (narcache_init() < 0)
    return 2;
  if (strcmp(argv[1], "log") == 0) {
    if (argc != 5)
      return 2;
    int bad = check_log(argv[2], argv[3], argv[4]);
    narcache_shutdown();
    return bad;
  }
  narcache_key *sk = NULL, *pk = NULL;
  if (narcache_key_generate(&sk, "narcache-nixstore-test-1", 24) != 0 || narcache_key_public(&pk, sk) != 0)
    return 2;
  const narcache_key *keys[] = {sk};
  narcache_nixstore_options o = {0};
  o.version = NARCACHE_NIXSTORE_OPTIONS_VERSION;
  o.keys = keys;
  o.n_keys = 1;
  narcache_store *s = NULL;
  int rc = narcache_store_nixstore_new(&s, &o);
  if (rc != 0) {
    fprintf(stderr, "nixstore backend: %s\n", narcache_errname(rc));
    return 1;
  }
  if (strcmp(argv[1], "show") == 0) {
    for (int i = 2; i < argc; i++) {
      char *text = NULL;
      rc = narcache_store_read_all(&text, NULL, s, NARCACHE_OBJECT_NARINFO, argv[i], strlen(argv[i]),
                                   1 << 20);
      CHECK(rc == 0, "%s: narinfo: %s", argv[i], narcache_errname(rc));
      if (rc == 0)
        printf("%s----\n", text);
      narcache_free(text);
    }
  } else if (strcmp(argv[1], "compare") == 0) {
    o.compression = NARCACHE_CODEC_ZSTD;
    o.level = 1;
    if (narcache_store_nixstore_new(&zstd_store, &o) != 0)
      return 1;
    for (int i = 3; i < argc; i++)
      compare(s, pk, argv[2], argv[i]);
    absent_objects(s, argv[3]);
    narcache_store_free(zstd_store);
  } else {
    hammer(s, atof(argv[2]), argv + 3, argc - 3);
  }
  narcache_store_free(s);
  narcache_key_free(sk);
  narcache_key_free(pk);
  narcache_shutdown();
  if (failures > 0)
    fprintf(stderr, "%d failure(s)\n", failures);
  return failures > 0;
}
