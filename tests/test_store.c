/* Stores (store.h): the dir backend reading a cache Nix 2.8 wrote
 * (tests/data/narinfo/caches/none), refusing names and files that are not
 * objects, atomic uploads with NAR-before-narinfo, and the vtable rules
 * for embedders' backends. */
#define _GNU_SOURCE /* mkdtemp, mkfifo, symlink */
#include <narcache.h>

#include <dirent.h>
#include <stddef.h>
#include <pthread.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "test_support.h"

static const char *const golden_hashes[] = {
    "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0", "a33hzacmykblylyvn7v2fc989f55j9rc",
    "axi51q2zbkl6wsymsp3588as7jxjwljy", "dyfyrpszi87hixnk6as80dh2j3vy31yh",
    "jdcvm66sa10xshdwari117q690jhi6r0", "lr7diqx041cvbc4fx942sjj4flcr3mm8",
    "lx06blglh5frvgbjlqv0wykn7ybanky6", "pmwirphq5m2jaxbb6dxgl37sinsgaib7",
    "rgawqvkc1vqawgdaw37xrgyfddnvnh9v"};

static narcache_store *open_golden(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/narinfo/caches/none", test_data_dir());
  narcache_store *s = NULL;
  assert_int_equal(narcache_store_dir_new(&s, path, 0), 0);
  return s;
}

/* Hash a whole reader through narcache_reader_read, in odd-sized pieces. */
static void hash_reader(narcache_reader *r, narcache_hash *out) {
  narcache_hasher *h = NULL;
  assert_int_equal(narcache_hasher_new(&h, NARCACHE_HASH_SHA256), 0);
  char buf[777];
  uint64_t off = 0;
  while (off < r->size) {
    size_t got = 0;
    assert_int_equal(narcache_reader_read(r, off, buf, sizeof buf, &got), 0);
    assert_true(got > 0);
    assert_int_equal(narcache_hasher_update(h, buf, got), 0);
    off += got;
  }
  size_t got = 1;
  assert_int_equal(narcache_reader_read(r, off, buf, sizeof buf, &got), 0);
  assert_int_equal(got, 0);
  assert_int_equal(narcache_hasher_final(h, out), 0);
  narcache_hasher_free(h);
}

/* Every narinfo of the Nix-written cache reads back byte for byte, and
 * the NAR its URL names has the NarSize and NarHash it states. */
static void test_dir_reads_nix_cache(void **state) {
  (void)state;
  narcache_store *s = open_golden();
  assert_int_equal(narcache_store_probe(s), 0);
  for (size_t i = 0; i < sizeof golden_hashes / sizeof golden_hashes[0]; i++) {
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(narcache_store_read_all(&text, &len, s, NARCACHE_OBJECT_NARINFO,
                                             golden_hashes[i], 32, 1 << 20),
                     0);
    char rel[256];
    snprintf(rel, sizeof rel, "narinfo/caches/none/%s.narinfo", golden_hashes[i]);
    size_t want_len = 0;
    char *want = test_data_slurp(rel, &want_len);
    assert_int_equal(len, want_len);
    assert_memory_equal(text, want, len);
    free(want);

    narcache_narinfo *ni = NULL;
    assert_int_equal(narcache_narinfo_new(&ni, NULL), 0);
    assert_int_equal(narcache_narinfo_parse(ni, text, len), 0);
    narcache_free(text);
    const char *url = narcache_narinfo_url(ni, NULL);
    assert_memory_equal(url, "nar/", 4);
    narcache_reader r;
    assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, url + 4, strlen(url + 4)), 0);
    assert_int_equal(r.size, narcache_narinfo_nar_size(ni));
    assert_true(r.fd >= 0); /* files can be sent with sendfile */
    narcache_hash got, want_hash;
    hash_reader(&r, &got);
    assert_int_equal(narcache_narinfo_nar_hash(ni, &want_hash), 0);
    assert_memory_equal(got.digest, want_hash.digest, 32);
    narcache_reader_close(&r);
    narcache_narinfo_free(ni);
  }
  char *info = NULL;
  assert_int_equal(narcache_store_read_all(&info, NULL, s, NARCACHE_OBJECT_CACHE_INFO, "", 0, 4096), 0);
  assert_string_equal(info, "StoreDir: /nix/store\n");
  narcache_free(info);
  assert_int_equal(narcache_store_read_all(&info, NULL, s, NARCACHE_OBJECT_CACHE_INFO, "", 0, 5),
                   NARCACHE_ELIMIT);
  assert_null(info);
  narcache_store_free(s);
}

static void test_names_refused_before_the_backend(void **state) {
  (void)state;
  narcache_store *s = open_golden();
  static const struct {
    int kind;
    const char *name;
  } bad[] = {
      {NARCACHE_OBJECT_NARINFO, "2x2rbnxcyn2hnpphfd0zsvbidgfij8s"},   /* 31 */
      {NARCACHE_OBJECT_NARINFO, "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0x"}, /* 33 */
      {NARCACHE_OBJECT_NARINFO, "2X2RBNXCYN2HNPPHFD0ZSVBIDGFIJ8S0"},
      {NARCACHE_OBJECT_NARINFO, "../../../../../../../etc/passwd00"},
      {NARCACHE_OBJECT_NAR, "../nix-cache-info"},
      {NARCACHE_OBJECT_NAR, ".hidden.nar"},
      {NARCACHE_OBJECT_NAR, "a/b.nar"},
      {NARCACHE_OBJECT_NAR, ""},
      {NARCACHE_OBJECT_NAR, "x\ny.nar"},
      {NARCACHE_OBJECT_LOG, "../x"},
      {NARCACHE_OBJECT_LOG, "not-a-drv"},
      {NARCACHE_OBJECT_CACHE_INFO, "x"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    narcache_reader r;
    int rc = narcache_store_open(&r, s, bad[i].kind, bad[i].name, strlen(bad[i].name));
    if (rc != NARCACHE_ENOTFOUND)
      fail_msg("%s: %s", bad[i].name, narcache_errname(rc));
    assert_int_equal(r.fd, -1);
  }
  narcache_reader r;
  assert_int_equal(narcache_store_open(&r, s, 99, "x", 1), NARCACHE_EINVAL);
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NARINFO,
                                       "00000000000000000000000000000000", 32),
                   NARCACHE_ENOTFOUND);
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_LISTING,
                                       "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0", 32),
                   NARCACHE_ENOTFOUND);
  narcache_store_free(s);
}

/* A scratch cache directory, removed by the test. */
static char *scratch_dir(void) {
  char *dir = strdup("/tmp/narcache-store-XXXXXX");
  assert_non_null(mkdtemp(dir));
  return dir;
}

static void remove_tree(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* Files in `dir`/`sub` whose name starts with '.' (temporaries). */
static int hidden_files(const char *dir, const char *sub) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, sub);
  DIR *d = opendir(path);
  if (d == NULL)
    return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] == '.' && strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
  closedir(d);
  return n;
}

static void write_file(const char *dir, const char *name, const char *text) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* Files that are not regular files are not objects: symlinks (even to a
 * good file), directories, FIFOs (which would block a reader forever). */
static void test_dir_refuses_non_files(void **state) {
  (void)state;
  char *dir = scratch_dir();
  write_file(dir, "nix-cache-info", "StoreDir: /nix/store\n");
  char path[600];
  snprintf(path, sizeof path, "%s/nar", dir);
  assert_int_equal(mkdir(path, 0755), 0);
  snprintf(path, sizeof path, "%s/nar/link.nar", dir);
  assert_int_equal(symlink("../nix-cache-info", path), 0);
  snprintf(path, sizeof path, "%s/nar/fifo.nar", dir);
  assert_int_equal(mkfifo(path, 0644), 0);
  snprintf(path, sizeof path, "%s/nar/dir.nar", dir);
  assert_int_equal(mkdir(path, 0755), 0);
  snprintf(path, sizeof path, "%s/log", dir);
  assert_int_equal(symlink("/etc", path), 0); /* a symlinked subdirectory */
  narcache_store *s = NULL;
  assert_int_equal(narcache_store_dir_new(&s, dir, 0), 0);
  narcache_reader r;
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, "link.nar", 8), NARCACHE_ENOTFOUND);
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, "fifo.nar", 8), NARCACHE_ENOTFOUND);
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, "dir.nar", 7), NARCACHE_ENOTFOUND);
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_LOG,
                                       "00000000000000000000000000000000-passwd", 39),
                   NARCACHE_ENOTFOUND);
  narcache_store_free(s);
  assert_int_equal(narcache_store_dir_new(&s, "/nonexistent/cache", 0), NARCACHE_ENOTFOUND);
  assert_int_equal(narcache_store_dir_new(&s, dir, 0x80), NARCACHE_EINVAL);
  remove_tree(dir);
  free(dir);
}

static int upload(narcache_store *s, int kind, const char *name, const char *data, size_t len,
                  uint64_t announced, char *msg, size_t msg_size) {
  narcache_upload *up = NULL;
  int rc = narcache_store_upload_begin(&up, s, kind, name, strlen(name), announced);
  if (rc < 0)
    return rc;
  for (size_t off = 0; rc == 0 && off < len; off += 100)
    rc = narcache_upload_write(up, data + off, len - off < 100 ? len - off : 100);
  if (rc == 0)
    rc = narcache_upload_commit(up);
  if (msg != NULL)
    snprintf(msg, msg_size, "%s", narcache_upload_errmsg(up));
  narcache_upload_free(up);
  return rc;
}

/* ref-demo's narinfo and NAR from the Nix-written cache. */
#define REF_HASH "dyfyrpszi87hixnk6as80dh2j3vy31yh"
#define REF_NAR "05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir.nar"

static void test_dir_uploads(void **state) {
  (void)state;
  char *dir = scratch_dir();
  narcache_store *s = NULL;
  assert_int_equal(narcache_store_dir_new(&s, dir, NARCACHE_STORE_DIR_WRITABLE), 0);
  size_t ni_len = 0, nar_len = 0;
  char *ni = test_data_slurp("narinfo/caches/none/" REF_HASH ".narinfo", &ni_len);
  char *nar = test_data_slurp("narinfo/caches/none/nar/" REF_NAR, &nar_len);
  char msg[256];

  /* narinfo first: refused, nothing visible, no temporary left */
  assert_int_equal(upload(s, NARCACHE_OBJECT_NARINFO, REF_HASH, ni, ni_len, ni_len, msg, sizeof msg),
                   NARCACHE_ECONFLICT);
  assert_non_null(strstr(msg, "not in the store"));
  narcache_reader r;
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NARINFO, REF_HASH, 32), NARCACHE_ENOTFOUND);
  assert_int_equal(hidden_files(dir, ""), 0);

  /* a NAR shorter or longer than announced never appears */
  assert_int_equal(upload(s, NARCACHE_OBJECT_NAR, REF_NAR, nar, nar_len - 1, nar_len, NULL, 0),
                   NARCACHE_EMISUSE);
  assert_int_equal(upload(s, NARCACHE_OBJECT_NAR, REF_NAR, nar, nar_len, nar_len - 1, NULL, 0),
                   NARCACHE_ELIMIT);
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, REF_NAR, strlen(REF_NAR)),
                   NARCACHE_ENOTFOUND);
  assert_int_equal(hidden_files(dir, "nar"), 0);

  /* NAR, then narinfo: both readable, byte for byte */
  assert_int_equal(upload(s, NARCACHE_OBJECT_NAR, REF_NAR, nar, nar_len, nar_len, NULL, 0), 0);
  assert_int_equal(upload(s, NARCACHE_OBJECT_NARINFO, REF_HASH, ni, ni_len, ni_len, NULL, 0), 0);
  char *back = NULL;
  size_t back_len = 0;
  assert_int_equal(narcache_store_read_all(&back, &back_len, s, NARCACHE_OBJECT_NARINFO, REF_HASH, 32, 1 << 20), 0);
  assert_int_equal(back_len, ni_len);
  assert_memory_equal(back, ni, ni_len);
  narcache_free(back);

  /* a reader opened before a replacement keeps reading the old bytes */
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, REF_NAR, strlen(REF_NAR)), 0);
  char *other = malloc(nar_len);
  memset(other, 'x', nar_len);
  assert_int_equal(upload(s, NARCACHE_OBJECT_NAR, REF_NAR, other, nar_len, nar_len, NULL, 0), 0);
  char *old = malloc(nar_len);
  size_t got = 0;
  assert_int_equal(narcache_reader_read(&r, 0, old, nar_len, &got), 0);
  assert_int_equal(got, nar_len);
  assert_memory_equal(old, nar, nar_len);
  narcache_reader_close(&r);
  free(old);
  free(other);

  /* narinfos that Nix could not use, or for another path, are refused */
  assert_int_equal(upload(s, NARCACHE_OBJECT_NARINFO, "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0", ni, ni_len,
                          ni_len, msg, sizeof msg),
                   NARCACHE_EBADNARINFO);
  assert_non_null(strstr(msg, "does not have hash part"));
  assert_int_equal(upload(s, NARCACHE_OBJECT_NARINFO, REF_HASH, ni, ni_len - 1, ni_len - 1, msg,
                          sizeof msg),
                   NARCACHE_EBADNARINFO);
  assert_non_null(strstr(msg, "does not end in a newline"));
  assert_int_equal(narcache_store_upload_begin(NULL, s, NARCACHE_OBJECT_NAR, "x", 1, 1), NARCACHE_EINVAL);
  narcache_upload *up = NULL;
  assert_int_equal(narcache_store_upload_begin(&up, s, NARCACHE_OBJECT_NARINFO, REF_HASH, 32,
                                               NARCACHE_NARINFO_MAX_BYTES + 1),
                   NARCACHE_ELIMIT);
  assert_int_equal(narcache_store_upload_begin(&up, s, NARCACHE_OBJECT_NAR, "../x", 4, 1),
                   NARCACHE_ENOTFOUND);

  /* an abandoned upload leaves no trace */
  assert_int_equal(narcache_store_upload_begin(&up, s, NARCACHE_OBJECT_LOG,
                                               "ba703j8axyq4wqbbwjh4vw23rslsrwhw-ref-demo.drv", 45, 10),
                   0);
  assert_int_equal(narcache_upload_write(up, "0123", 4), 0);
  assert_int_equal(hidden_files(dir, "log"), 1);
  narcache_upload_free(up);
  assert_int_equal(hidden_files(dir, "log"), 0);
  assert_int_equal(hidden_files(dir, "nar"), 0);
  assert_int_equal(hidden_files(dir, ""), 0);
  narcache_store_free(s);

  /* temporaries a crash left behind: a day-old one goes when a writable
   * store is opened, a fresh one (maybe another writer's) stays */
  write_file(dir, "nar/.tmp-old", "x");
  write_file(dir, "nar/.tmp-new", "x");
  char old_path[600];
  snprintf(old_path, sizeof old_path, "%s/nar/.tmp-old", dir);
  struct timespec two_days_ago[2] = {{time(NULL) - 2 * 86400, 0}, {time(NULL) - 2 * 86400, 0}};
  assert_int_equal(utimensat(AT_FDCWD, old_path, two_days_ago, 0), 0);
  assert_int_equal(narcache_store_dir_new(&s, dir, NARCACHE_STORE_DIR_WRITABLE), 0);
  assert_int_equal(hidden_files(dir, "nar"), 1);
  assert_int_equal(access(old_path, F_OK), -1);
  snprintf(old_path, sizeof old_path, "%s/nar/.tmp-new", dir);
  assert_int_equal(unlink(old_path), 0);
  narcache_store_free(s);

  /* read-only stores take no uploads */
  assert_int_equal(narcache_store_dir_new(&s, dir, 0), 0);
  assert_int_equal(upload(s, NARCACHE_OBJECT_NAR, REF_NAR, nar, nar_len, nar_len, NULL, 0), NARCACHE_ENOTSUP);
  narcache_store_free(s);
  free(ni);
  free(nar);
  remove_tree(dir);
  free(dir);
}

/* Many writers of the same object at once: every reader sees one complete
 * version, never a mix or a partial file. */
typedef struct writer_arg {
  narcache_store *s;
  char fill;
  int rc;
} writer_arg;

#define RACE_SIZE (256 * 1024)

/* Batch mode: commits are staged and invisible until a flush, which
 * publishes NARs before narinfos; a narinfo may point at a staged NAR; an
 * unflushed commit leaves nothing behind; the 1025th commit publishes. */
static void test_dir_batch(void **state) {
  (void)state;
  char *dir = scratch_dir();
  narcache_store *s = NULL, *reader = NULL;
  assert_int_equal(narcache_store_dir_new(&s, dir, NARCACHE_STORE_DIR_BATCH), NARCACHE_EINVAL);
  assert_int_equal(narcache_store_dir_new(&s, dir, NARCACHE_STORE_DIR_WRITABLE | NARCACHE_STORE_DIR_BATCH), 0);
  assert_int_equal(narcache_store_dir_new(&reader, dir, 0), 0);
  size_t ni_len = 0, nar_len = 0;
  char *ni = test_data_slurp("narinfo/caches/none/" REF_HASH ".narinfo", &ni_len);
  char *nar = test_data_slurp("narinfo/caches/none/nar/" REF_NAR, &nar_len);
  narcache_reader r;

  /* a narinfo whose NAR is neither published nor staged: refused */
  assert_int_equal(upload(s, NARCACHE_OBJECT_NARINFO, REF_HASH, ni, ni_len, ni_len, NULL, 0),
                   NARCACHE_ECONFLICT);
  /* NAR then narinfo: both accepted, neither visible yet */
  assert_int_equal(upload(s, NARCACHE_OBJECT_NAR, REF_NAR, nar, nar_len, nar_len, NULL, 0), 0);
  assert_int_equal(upload(s, NARCACHE_OBJECT_NARINFO, REF_HASH, ni, ni_len, ni_len, NULL, 0), 0);
  assert_int_equal(narcache_store_open(&r, reader, NARCACHE_OBJECT_NAR, REF_NAR, strlen(REF_NAR)),
                   NARCACHE_ENOTFOUND);
  assert_int_equal(narcache_store_open(&r, reader, NARCACHE_OBJECT_NARINFO, REF_HASH, 32),
                   NARCACHE_ENOTFOUND);
  assert_int_equal(hidden_files(dir, ""), 1);
  assert_int_equal(hidden_files(dir, "nar"), 1);
  /* flush: both visible, byte for byte, no temporaries left */
  assert_int_equal(narcache_store_flush(s), 0);
  char *back = NULL;
  size_t back_len = 0;
  assert_int_equal(narcache_store_read_all(&back, &back_len, reader, NARCACHE_OBJECT_NARINFO, REF_HASH,
                                           32, 1 << 20), 0);
  assert_int_equal(back_len, ni_len);
  assert_memory_equal(back, ni, ni_len);
  narcache_free(back);
  assert_int_equal(narcache_store_read_all(&back, &back_len, reader, NARCACHE_OBJECT_NAR, REF_NAR,
                                           strlen(REF_NAR), 1 << 20), 0);
  assert_int_equal(back_len, nar_len);
  assert_memory_equal(back, nar, nar_len);
  narcache_free(back);
  assert_int_equal(hidden_files(dir, ""), 0);
  assert_int_equal(hidden_files(dir, "nar"), 0);
  assert_int_equal(narcache_store_flush(s), 0); /* nothing staged: fine */

  /* staged and never flushed: no trace once the store is freed */
  assert_int_equal(upload(s, NARCACHE_OBJECT_LISTING, REF_HASH, "{}", 2, 2, NULL, 0), 0);
  assert_int_equal(upload(s, NARCACHE_OBJECT_NAR, "unflushed.nar", "x", 1, 1, NULL, 0), 0);
  narcache_store_free(s);
  assert_int_equal(narcache_store_open(&r, reader, NARCACHE_OBJECT_LISTING, REF_HASH, 32),
                   NARCACHE_ENOTFOUND);
  assert_int_equal(narcache_store_open(&r, reader, NARCACHE_OBJECT_NAR, "unflushed.nar", 13),
                   NARCACHE_ENOTFOUND);
  assert_int_equal(hidden_files(dir, ""), 0);
  assert_int_equal(hidden_files(dir, "nar"), 0);

  /* more than 1024 staged objects publish themselves */
  assert_int_equal(narcache_store_dir_new(&s, dir, NARCACHE_STORE_DIR_WRITABLE | NARCACHE_STORE_DIR_BATCH), 0);
  for (int i = 0; i <= 1024; i++) {
    char name[32];
    snprintf(name, sizeof name, "many-%d.nar", i);
    assert_int_equal(upload(s, NARCACHE_OBJECT_NAR, name, name, strlen(name), strlen(name), NULL, 0), 0);
  }
  assert_int_equal(narcache_store_open(&r, reader, NARCACHE_OBJECT_NAR, "many-1023.nar", 13), 0);
  narcache_reader_close(&r);
  assert_int_equal(narcache_store_open(&r, reader, NARCACHE_OBJECT_NAR, "many-1024.nar", 13),
                   NARCACHE_ENOTFOUND);
  assert_int_equal(narcache_store_flush(s), 0);
  assert_int_equal(narcache_store_open(&r, reader, NARCACHE_OBJECT_NAR, "many-1024.nar", 13), 0);
  narcache_reader_close(&r);
  narcache_store_free(s);
  narcache_store_free(reader);
  free(ni);
  free(nar);
  remove_tree(dir);
  free(dir);
}

static void *race_writer(void *p) {
  writer_arg *a = p;
  char *data = malloc(RACE_SIZE);
  memset(data, a->fill, RACE_SIZE);
  for (int i = 0; i < 20 && a->rc == 0; i++)
    a->rc = upload(a->s, NARCACHE_OBJECT_NAR, "race.nar", data, RACE_SIZE, RACE_SIZE, NULL, 0);
  free(data);
  return NULL;
}

static void test_dir_concurrent_writers(void **state) {
  (void)state;
  char *dir = scratch_dir();
  narcache_store *s = NULL;
  assert_int_equal(narcache_store_dir_new(&s, dir, NARCACHE_STORE_DIR_WRITABLE), 0);
  writer_arg first = {s, 'z', 0};
  race_writer(&first); /* the object exists before the race starts */
  assert_int_equal(first.rc, 0);
  pthread_t threads[4];
  writer_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (writer_arg){s, (char)('a' + i), 0};
    assert_int_equal(pthread_create(&threads[i], NULL, race_writer, &args[i]), 0);
  }
  char *buf = malloc(RACE_SIZE);
  for (int seen = 0; seen < 200; seen++) {
    narcache_reader r;
    assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, "race.nar", 8), 0);
    assert_int_equal(r.size, RACE_SIZE);
    size_t got = 0, done = 0;
    while (done < RACE_SIZE) {
      assert_int_equal(narcache_reader_read(&r, done, buf + done, RACE_SIZE - done, &got), 0);
      done += got;
    }
    for (size_t i = 1; i < RACE_SIZE; i++)
      if (buf[i] != buf[0])
        fail_msg("mixed versions at byte %zu", i);
    narcache_reader_close(&r);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(threads[i], NULL);
    assert_int_equal(args[i].rc, 0);
  }
  assert_int_equal(hidden_files(dir, "nar"), 0);
  free(buf);
  narcache_store_free(s);
  remove_tree(dir);
  free(dir);
}

/* ------------------------------------------------------------------ */
/* An embedder's backend                                               */
/* ------------------------------------------------------------------ */

static int destroyed;

static void count_destroy(void *ctx) {
  (void)ctx;
  destroyed++;
}

static int memory_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  (void)ctx;
  (void)name;
  (void)len;
  if (kind != NARCACHE_OBJECT_CACHE_INFO)
    return NARCACHE_ENOTFOUND;
  return narcache_reader_init_memory(out, "StoreDir: /nix/store\nPriority: 10\n", 34);
}

static int broken_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  (void)ctx, (void)kind, (void)name, (void)len;
  out->size = 10; /* neither an fd nor a read callback */
  return 0;
}

static int busy_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  (void)ctx, (void)kind, (void)name, (void)len, (void)out;
  return NARCACHE_EUNAVAIL;
}

static int noop_begin(void *ctx, int kind, const char *name, size_t len, uint64_t size, void **up) {
  (void)ctx, (void)kind, (void)name, (void)len, (void)size, (void)up;
  return 0;
}

static void test_custom_backend(void **state) {
  (void)state;
  narcache_store_methods m = {.version = NARCACHE_STORE_METHODS_VERSION,
                              .open = memory_open,
                              .destroy = count_destroy};
  narcache_store *s = NULL;
  destroyed = 0;
  assert_int_equal(narcache_store_new(&s, &m, NULL), 0);
  char *text = NULL;
  assert_int_equal(narcache_store_read_all(&text, NULL, s, NARCACHE_OBJECT_CACHE_INFO, "", 0, 100), 0);
  narcache_cache_info *ci = NULL;
  assert_int_equal(narcache_cache_info_new(&ci), 0);
  assert_int_equal(narcache_cache_info_parse(ci, text, strlen(text)), 0);
  int32_t prio = 0;
  assert_int_equal(narcache_cache_info_priority(ci, &prio), 0);
  assert_int_equal(prio, 10);
  narcache_cache_info_free(ci);
  narcache_free(text);
  narcache_upload *up = NULL;
  assert_int_equal(narcache_store_upload_begin(&up, s, NARCACHE_OBJECT_NAR, "x.nar", 5, 1), NARCACHE_ENOTSUP);
  assert_int_equal(narcache_store_probe(s), 0); /* no probe: assumed fine */
  narcache_store_free(s);
  assert_int_equal(destroyed, 1);

  /* a table with half the upload callbacks is refused, and ctx released */
  m.upload_begin = noop_begin;
  assert_int_equal(narcache_store_new(&s, &m, NULL), NARCACHE_EINVAL);
  assert_null(s);
  assert_int_equal(destroyed, 2);
  m.upload_begin = NULL;
  m.version = 0;
  assert_int_equal(narcache_store_new(&s, &m, NULL), NARCACHE_EINVAL);
  m.version = NARCACHE_STORE_METHODS_VERSION;

  /* a version-1 table (before `flush`) is read without its newer fields:
   * garbage after them is never called */
  {
    struct {
      narcache_store_methods m;
      char after[64];
    } v1;
    memset(&v1, 0xA5, sizeof v1);
    memcpy(&v1.m, &m, offsetof(narcache_store_methods, flush));
    v1.m.version = 1;
    assert_int_equal(narcache_store_new(&s, &v1.m, NULL), 0);
    assert_int_equal(narcache_store_flush(s), 0);
    narcache_store_free(s);
  }

  /* a backend bug (no way to read) is an I/O error, not a crash */
  m.open = broken_open;
  assert_int_equal(narcache_store_new(&s, &m, NULL), 0);
  narcache_reader r;
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_CACHE_INFO, "", 0), NARCACHE_EIO);
  narcache_store_free(s);
  m.open = busy_open;
  assert_int_equal(narcache_store_new(&s, &m, NULL), 0);
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_CACHE_INFO, "", 0), NARCACHE_EUNAVAIL);
  narcache_store_free(s);
}

/* A file that shrinks after its size was promised is an error, not a
 * short object. */
static void test_reader_rules(void **state) {
  (void)state;
  char *dir = scratch_dir();
  write_file(dir, "nix-cache-info", "StoreDir: /nix/store\n");
  narcache_store *s = NULL;
  assert_int_equal(narcache_store_dir_new(&s, dir, 0), 0);
  narcache_reader r;
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_CACHE_INFO, "", 0), 0);
  assert_int_equal(r.size, 21);
  char path[600];
  snprintf(path, sizeof path, "%s/nix-cache-info", dir);
  assert_int_equal(truncate(path, 5), 0);
  char buf[64];
  size_t got = 0;
  assert_int_equal(narcache_reader_read(&r, 0, buf, sizeof buf, &got), 0);
  assert_int_equal(got, 5);
  assert_int_equal(narcache_reader_read(&r, 5, buf, sizeof buf, &got), NARCACHE_EIO);
  narcache_reader_close(&r);
  narcache_reader_close(&r); /* twice is harmless */
  narcache_store_free(s);

  assert_int_equal(narcache_reader_init_memory(&r, "hello", 5), 0);
  assert_int_equal(narcache_reader_read(&r, 3, buf, 10, &got), 0);
  assert_int_equal(got, 2);
  assert_memory_equal(buf, "lo", 2);
  assert_int_equal(narcache_reader_read(&r, 5, buf, 10, &got), 0);
  assert_int_equal(got, 0);
  narcache_reader_close(&r);
  remove_tree(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dir_reads_nix_cache),
      cmocka_unit_test(test_names_refused_before_the_backend),
      cmocka_unit_test(test_dir_refuses_non_files),
      cmocka_unit_test(test_dir_uploads),
      cmocka_unit_test(test_dir_concurrent_writers),
      cmocka_unit_test(test_dir_batch),
      cmocka_unit_test(test_custom_backend),
      cmocka_unit_test(test_reader_rules),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
