/* NAR engine against the golden corpus made by Nix 2.8
 * (tests/data/nar/generate.py): dumps byte-identical to nix-store --dump,
 * listings identical to Nix's .ls, round trips, seeking, writer rules,
 * dumper refusals. The corpus trees are rebuilt by corpus.py into the
 * directory given as argv[1] (a ctest fixture). */
#define _GNU_SOURCE
#include <narcache.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "test_support.h"

static const char *corpus_dir;

typedef struct nar_case {
  const char *name;
  uint64_t size;
  const char *sha256_hex;
} nar_case;

typedef struct suite {
  tsv_table manifest;
  nar_case cases[64];
  size_t ncases;
} suite;

static int load_manifest(void **state) {
  suite *s = calloc(1, sizeof *s);
  tsv_load(&s->manifest, "nar/manifest.tsv");
  for (size_t i = 0; i < s->manifest.nrows; i++) {
    tsv_row *row = &s->manifest.rows[i];
    if (row->field[0][0] == '#' || strcmp(row->field[0], "case") == 0)
      continue;
    assert_true(s->ncases < 64);
    nar_case *c = &s->cases[s->ncases++];
    c->name = row->field[0];
    c->size = strtoull(row->field[1], NULL, 10);
    c->sha256_hex = row->field[2];
  }
  assert_true(s->ncases >= 15);
  *state = s;
  return 0;
}

static int free_manifest(void **state) {
  suite *s = *state;
  tsv_free(&s->manifest);
  free(s);
  return 0;
}

/* ---- helpers ---------------------------------------------------------------- */

static char *case_path(const nar_case *c) {
  char *path = NULL;
  assert_true(asprintf(&path, "%s/%s/root", corpus_dir, c->name) > 0);
  return path;
}

static char *golden_path(const char *name, const char *ext) {
  char *path = NULL;
  assert_true(asprintf(&path, "%s/nar/golden/%s.%s", NARCACHE_TEST_DATA_DIR, name, ext) > 0);
  return path;
}

static uint8_t *slurp(const char *path, size_t *len) {
  return (uint8_t *)test_slurp(path, len);
}

/* The NAR of `path` through narcache_nar_dumper_read with `chunk`-sized
 * output buffers; `depth` raises the depth limit when non-zero. */
static uint8_t *dump_with_read(const char *path, size_t chunk, size_t *len) {
  narcache_nar_dumper *d = NULL;
  assert_int_equal(narcache_nar_dumper_new(&d), 0);
  if (narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, path) != 0)
    fail_msg("open %s: %s", path, narcache_nar_dumper_errmsg(d));
  uint64_t size = narcache_nar_dumper_size(d);
  uint8_t *nar = malloc((size_t)size + 1);
  assert_non_null(nar);
  narcache_outbuf out = {nar, 0, 0};
  int rc;
  do {
    out.size = out.pos + chunk < size ? out.pos + chunk : (size_t)size;
    rc = narcache_nar_dumper_read(d, &out);
    if (rc < 0)
      fail_msg("read %s: %s", path, narcache_nar_dumper_errmsg(d));
  } while (rc > 0 && out.pos < size);
  assert_int_equal(out.pos, size);
  out.size = out.pos; /* nothing may remain */
  assert_int_equal(narcache_nar_dumper_read(d, &out), 0);
  narcache_nar_dumper_free(d);
  *len = (size_t)size;
  return nar;
}

/* The NAR of `path` through the segment interface, reading FILE regions
 * with pread as a server would. */
static uint8_t *dump_with_segments(narcache_nar_dumper *d, size_t *len) {
  uint64_t size = narcache_nar_dumper_size(d);
  uint8_t *nar = malloc((size_t)size + 1);
  assert_non_null(nar);
  narcache_nar_segment seg = {NARCACHE_NAR_SEGMENT_VERSION, 0, 0, 0, NULL, -1, 0, 0};
  uint64_t pos = 0;
  int rc;
  while ((rc = narcache_nar_dumper_next(d, &seg)) > 0) {
    assert_int_equal(seg.nar_offset, pos);
    assert_true(seg.length <= size - pos);
    if (seg.kind == NARCACHE_NAR_SEG_BYTES) {
      memcpy(nar + pos, seg.data, (size_t)seg.length);
    } else {
      assert_int_equal(seg.kind, NARCACHE_NAR_SEG_FILE);
      ssize_t got = pread(seg.fd, nar + pos, (size_t)seg.length, (off_t)seg.file_offset);
      assert_int_equal(got, (ssize_t)seg.length);
    }
    pos += seg.length;
  }
  assert_int_equal(rc, 0);
  assert_int_equal(pos, size);
  *len = (size_t)size;
  return nar;
}

static void assert_sha256(const uint8_t *data, size_t len, const char *hex) {
  narcache_hash h;
  char text[NARCACHE_HASH_STRING_MAX];
  assert_int_equal(narcache_hash_buffer(&h, NARCACHE_HASH_SHA256, data, len), 0);
  assert_int_equal(narcache_hash_format(text, sizeof text, NULL, &h, NARCACHE_HASH_BASE16, 0), 0);
  assert_string_equal(text, hex);
}

static char *make_temp_dir(void) {
  char *dir = strdup("/tmp/narcache-test-XXXXXX");
  assert_non_null(mkdtemp(dir));
  return dir;
}

static void remove_temp_dir(const char *dir) {
  char *cmd = NULL;
  assert_true(asprintf(&cmd, "rm -rf '%s'", dir) > 0);
  assert_int_equal(system(cmd), 0);
  free(cmd);
}

/* ---- dumper against nix-store --dump ------------------------------------------------ */

static void test_dump_matches_nix(void **state) {
  suite *s = *state;
  for (size_t i = 0; i < s->ncases; i++) {
    const nar_case *c = &s->cases[i];
    char *path = case_path(c);
    size_t len;
    uint8_t *nar = dump_with_read(path, 1 << 16, &len);
    assert_int_equal(len, c->size);
    assert_sha256(nar, len, c->sha256_hex);
    char *golden_file = golden_path(c->name, "nar");
    size_t golden_len;
    uint8_t *golden = slurp(golden_file, &golden_len);
    if (golden != NULL) { /* small cases: compare every byte */
      assert_int_equal(golden_len, len);
      assert_memory_equal(golden, nar, len);
    }
    /* The same bytes through segments, and through odd-sized reads. */
    narcache_nar_dumper *d = NULL;
    assert_int_equal(narcache_nar_dumper_new(&d), 0);
    assert_int_equal(narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, path), 0);
    size_t seg_len;
    uint8_t *seg_nar = dump_with_segments(d, &seg_len);
    assert_memory_equal(seg_nar, nar, len);
    narcache_nar_dumper_free(d);
    if (len < (1 << 20)) {
      size_t odd_len;
      uint8_t *odd = dump_with_read(path, 7, &odd_len);
      assert_memory_equal(odd, nar, len);
      free(odd);
    }
    free(seg_nar);
    free(golden);
    free(golden_file);
    free(nar);
    free(path);
  }
}

static void test_nar_hash_helper(void **state) {
  suite *s = *state;
  for (size_t i = 0; i < s->ncases; i++) {
    char *path = case_path(&s->cases[i]);
    narcache_hash h;
    uint64_t size = 0;
    char err[256];
    assert_int_equal(narcache_nar_hash_path(&h, &size, path, err, sizeof err), 0);
    assert_int_equal(size, s->cases[i].size);
    char hex[NARCACHE_HASH_STRING_MAX];
    narcache_hash_format(hex, sizeof hex, NULL, &h, NARCACHE_HASH_BASE16, 0);
    assert_string_equal(hex, s->cases[i].sha256_hex);
    free(path);
  }
}

/* ---- listings ----------------------------------------------------------------------- */

static void test_listings_match_nix(void **state) {
  suite *s = *state;
  for (size_t i = 0; i < s->ncases; i++) {
    const nar_case *c = &s->cases[i];
    char *ls_file = golden_path(c->name, "ls");
    size_t want_len;
    uint8_t *want = slurp(ls_file, &want_len);
    assert_non_null(want);
    char *path = case_path(c);

    /* From the dumper's index. */
    narcache_nar_dumper *d = NULL;
    assert_int_equal(narcache_nar_dumper_new(&d), 0);
    assert_int_equal(narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, path), 0);
    char *json = NULL;
    size_t json_len = 0;
    assert_int_equal(narcache_nar_dumper_listing(&json, &json_len, d), 0);
    assert_int_equal(json_len, want_len);
    assert_memory_equal(json, want, want_len);
    narcache_free(json);
    narcache_nar_dumper_free(d);

    /* From the NAR stream, fed in uneven pieces. */
    size_t len;
    uint8_t *nar = dump_with_read(path, 1 << 20, &len);
    narcache_nar_lister *l = NULL;
    assert_int_equal(narcache_nar_lister_new(&l), 0);
    assert_int_equal(narcache_nar_lister_set_limit(l, NARCACHE_NAR_LIMIT_DEPTH, 128), 0);
    for (size_t off = 0, step = 1; off < len; off += step, step = step * 3 % 4093 + 1) {
      narcache_inbuf in = {nar + off, off + step < len ? step : len - off, 0};
      assert_true(narcache_nar_lister_write(l, &in) >= 0);
      assert_int_equal(in.pos, in.size);
    }
    assert_int_equal(narcache_nar_lister_finish(l, &json, &json_len), 0);
    assert_int_equal(json_len, want_len);
    assert_memory_equal(json, want, want_len);
    narcache_free(json);
    narcache_nar_lister_free(l);
    free(nar);
    free(path);
    free(want);
    free(ls_file);
  }
}

/* ---- round trips ----------------------------------------------------------------------- */

/* Parse `nar` and rebuild it with the writer; the bytes must not change. */
static void rewrite_and_compare(const uint8_t *nar, size_t len) {
  narcache_nar_parser *p = NULL;
  narcache_nar_writer *w = NULL;
  assert_int_equal(narcache_nar_parser_new(&p), 0);
  assert_int_equal(narcache_nar_writer_new(&w), 0);
  assert_int_equal(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_DEPTH, 128), 0);
  assert_int_equal(narcache_nar_writer_set_limit(w, NARCACHE_NAR_LIMIT_DEPTH, 128), 0);
  uint8_t *out_bytes = malloc(len + 1);
  narcache_outbuf out = {out_bytes, len, 0};
  narcache_inbuf in = {nar, len, 0};
  narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
  int rc, ended = 0;
  while ((rc = narcache_nar_parser_next(p, &in, &ev)) > 0) {
    switch (ev.type) {
    case NARCACHE_NAR_DIR_BEGIN:
      assert_int_equal(narcache_nar_writer_dir_begin(w), 0);
      break;
    case NARCACHE_NAR_ENTRY:
      assert_int_equal(narcache_nar_writer_entry(w, ev.name, ev.name_len), 0);
      break;
    case NARCACHE_NAR_FILE_BEGIN:
      assert_int_equal(narcache_nar_writer_offset(w) + 0, narcache_nar_writer_offset(w));
      assert_int_equal(narcache_nar_writer_file_begin(w, ev.size, (int)ev.executable), 0);
      break;
    case NARCACHE_NAR_FILE_DATA: {
      narcache_inbuf data = {ev.data, ev.len, 0};
      assert_true(narcache_nar_writer_data(w, &out, &data) >= 0);
      assert_int_equal(data.pos, data.size);
      break;
    }
    case NARCACHE_NAR_SYMLINK:
      assert_int_equal(narcache_nar_writer_symlink(w, ev.name, ev.name_len), 0);
      break;
    case NARCACHE_NAR_DIR_END:
      assert_int_equal(narcache_nar_writer_dir_end(w), 0);
      break;
    case NARCACHE_NAR_END:
      assert_int_equal(narcache_nar_writer_finish(w), 0);
      ended = 1;
      break;
    default:
      break;
    }
  }
  assert_int_equal(rc, 0);
  assert_true(ended);
  assert_int_equal(narcache_nar_parser_finish(p), 0);
  assert_int_equal(narcache_nar_parser_offset(p), len);
  assert_int_equal(narcache_nar_writer_drain(w, &out), 0);
  assert_int_equal(out.pos, len);
  assert_int_equal(narcache_nar_writer_offset(w), len);
  assert_memory_equal(out_bytes, nar, len);
  free(out_bytes);
  narcache_nar_writer_free(w);
  narcache_nar_parser_free(p);
}

static void test_parse_write_roundtrip(void **state) {
  suite *s = *state;
  for (size_t i = 0; i < s->ncases; i++) {
    char *path = case_path(&s->cases[i]);
    size_t len;
    uint8_t *nar = dump_with_read(path, 1 << 20, &len);
    rewrite_and_compare(nar, len);
    free(nar);
    free(path);
  }
}

/* dump -> restore -> dump gives the same NAR; Nix's own NARs restore too. */
static void test_restore_roundtrip(void **state) {
  suite *s = *state;
  char *tmp = make_temp_dir();
  for (size_t i = 0; i < s->ncases; i++) {
    const nar_case *c = &s->cases[i];
    char *path = case_path(c);
    size_t len;
    uint8_t *nar = dump_with_read(path, 1 << 20, &len);
    char *dest = NULL;
    assert_true(asprintf(&dest, "%s/%s", tmp, c->name) > 0);
    narcache_nar_restorer *r = NULL;
    assert_int_equal(narcache_nar_restorer_new(&r), 0);
    assert_int_equal(narcache_nar_restorer_set_limit(r, NARCACHE_NAR_LIMIT_DEPTH, 128), 0);
    assert_int_equal(narcache_nar_restorer_open(r, NARCACHE_AT_FDCWD, dest), 0);
    for (size_t off = 0; off < len; off += 65521) {
      narcache_inbuf in = {nar + off, len - off < 65521 ? len - off : 65521, 0};
      int rc = narcache_nar_restorer_write(r, &in);
      if (rc < 0)
        fail_msg("%s: %s", c->name, narcache_nar_restorer_errmsg(r));
    }
    if (narcache_nar_restorer_finish(r) != 0)
      fail_msg("%s: %s", c->name, narcache_nar_restorer_errmsg(r));
    narcache_nar_restorer_free(r);
    size_t again_len;
    uint8_t *again = dump_with_read(dest, 1 << 20, &again_len);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, nar, len);
    free(again);
    free(dest);
    free(nar);
    free(path);
  }
  remove_temp_dir(tmp);
  free(tmp);
}

/* Nix's `nix-store --restore` accepts what we dump. */
static void test_nix_restores_our_nars(void **state) {
  suite *s = *state;
  char *tmp = make_temp_dir();
  for (size_t i = 0; i < s->ncases; i++) {
    const nar_case *c = &s->cases[i];
    char *path = case_path(c), *nar_file = NULL, *dest = NULL, *cmd = NULL;
    assert_true(asprintf(&nar_file, "%s/%s.nar", tmp, c->name) > 0);
    assert_true(asprintf(&dest, "%s/%s.out", tmp, c->name) > 0);
    int fd = open(nar_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(narcache_nar_dump_path_to_fd(NULL, path, fd, NULL, 0), 0);
    close(fd);
    assert_true(asprintf(&cmd, "nix-store --restore '%s' < '%s'", dest, nar_file) > 0);
    if (system(cmd) != 0)
      fail_msg("nix-store --restore rejected our NAR of %s", c->name);
    narcache_hash h;
    char hex[NARCACHE_HASH_STRING_MAX];
    assert_int_equal(narcache_nar_hash_path(&h, NULL, dest, NULL, 0), 0);
    narcache_hash_format(hex, sizeof hex, NULL, &h, NARCACHE_HASH_BASE16, 0);
    assert_string_equal(hex, c->sha256_hex);
    free(cmd);
    free(dest);
    free(nar_file);
    free(path);
  }
  remove_temp_dir(tmp);
  free(tmp);
}

/* ---- seeking ------------------------------------------------------------------------------ */

static uint64_t next_random(uint64_t *state) {
  *state ^= *state << 13;
  *state ^= *state >> 7;
  *state ^= *state << 17;
  return *state;
}

static void seek_and_compare(const char *path, const uint8_t *nar, size_t len, uint64_t offset) {
  narcache_nar_dumper *d = NULL;
  assert_int_equal(narcache_nar_dumper_new(&d), 0);
  assert_int_equal(narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, path), 0);
  assert_int_equal(narcache_nar_dumper_seek(d, offset), 0);
  size_t tail_len = len - (size_t)offset;
  uint8_t *tail = malloc(tail_len + 1);
  narcache_outbuf out = {tail, tail_len, 0};
  int rc;
  while ((rc = narcache_nar_dumper_read(d, &out)) > 0 && out.pos < tail_len)
    ;
  assert_true(rc >= 0);
  assert_int_equal(out.pos, tail_len);
  if (memcmp(tail, nar + offset, tail_len) != 0)
    fail_msg("%s: the NAR from offset %llu differs", path, (unsigned long long)offset);
  free(tail);
  /* Segments after a seek start exactly at the offset. */
  assert_int_equal(narcache_nar_dumper_seek(d, offset), 0);
  narcache_nar_segment seg = {NARCACHE_NAR_SEGMENT_VERSION, 0, 0, 0, NULL, -1, 0, 0};
  if (offset < len) {
    assert_int_equal(narcache_nar_dumper_next(d, &seg), 1);
    assert_int_equal(seg.nar_offset, offset);
  } else {
    assert_int_equal(narcache_nar_dumper_next(d, &seg), 0);
  }
  narcache_nar_dumper_free(d);
}

static void test_seek_random_offsets(void **state) {
  suite *s = *state;
  static const char *names[] = {"mixed", "tree-5000", "large", "spec-dir", "symlinks",
                                "nested-100", "file-hello"};
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
    const nar_case *c = NULL;
    for (size_t i = 0; i < s->ncases; i++)
      if (strcmp(s->cases[i].name, names[k]) == 0)
        c = &s->cases[i];
    assert_non_null(c);
    char *path = case_path(c);
    size_t len;
    uint8_t *nar = dump_with_read(path, 1 << 20, &len);
    int tries = k < 3 ? 100 : 20;
    for (int t = 0; t < tries; t++)
      seek_and_compare(path, nar, len, next_random(&rng) % (len + 1));
    seek_and_compare(path, nar, len, 0);
    seek_and_compare(path, nar, len, len);
    seek_and_compare(path, nar, len, len - 1);
    narcache_nar_dumper *d = NULL;
    assert_int_equal(narcache_nar_dumper_new(&d), 0);
    assert_int_equal(narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, path), 0);
    assert_int_equal(narcache_nar_dumper_seek(d, len + 1), NARCACHE_EINVAL);
    narcache_nar_dumper_free(d);
    free(nar);
    free(path);
  }
}

/* ---- writer rules ----------------------------------------------------------------------------- */

static void test_writer_refuses_misuse(void **state) {
  (void)state;
  narcache_nar_writer *w = NULL;
  assert_int_equal(narcache_nar_writer_new(&w), 0);
  assert_int_equal(narcache_nar_writer_entry(w, "a", 1), NARCACHE_EMISUSE); /* no dir yet */
  assert_int_equal(narcache_nar_writer_finish(w), NARCACHE_EMISUSE);
  assert_int_equal(narcache_nar_writer_dir_begin(w), 0);
  assert_int_equal(narcache_nar_writer_file_begin(w, 1, 0), NARCACHE_EMISUSE); /* no entry */
  assert_int_equal(narcache_nar_writer_entry(w, "b", 1), 0);
  assert_int_equal(narcache_nar_writer_file_begin(w, 3, 0), 0);
  assert_int_equal(narcache_nar_writer_dir_end(w), NARCACHE_EMISUSE); /* data owed */
  uint8_t buf[4096];
  narcache_outbuf out = {buf, sizeof buf, 0};
  narcache_inbuf in = {"xyzw", 4, 0};
  assert_int_equal(narcache_nar_writer_data(w, &out, &in), 0);
  assert_int_equal(in.pos, 3); /* never more than the file's size */
  assert_int_equal(narcache_nar_writer_data(w, &out, &in), NARCACHE_EMISUSE);
  /* Names must increase: "a" after "b" is refused, and the writer is dead. */
  assert_int_equal(narcache_nar_writer_entry(w, "a", 1), NARCACHE_EINVAL);
  assert_int_equal(narcache_nar_writer_dir_end(w), NARCACHE_EMISUSE);
  narcache_nar_writer_free(w);

  static const char *bad_names[] = {"", ".", "..", "a/b"};
  for (size_t i = 0; i < 4; i++) {
    assert_int_equal(narcache_nar_writer_new(&w), 0);
    assert_int_equal(narcache_nar_writer_dir_begin(w), 0);
    assert_int_equal(narcache_nar_writer_entry(w, bad_names[i], strlen(bad_names[i])),
                     NARCACHE_EINVAL);
    narcache_nar_writer_free(w);
  }
  assert_int_equal(narcache_nar_writer_new(&w), 0);
  assert_int_equal(narcache_nar_writer_dir_begin(w), 0);
  assert_int_equal(narcache_nar_writer_entry(w, "a\0b", 3), NARCACHE_EINVAL);
  narcache_nar_writer_free(w);
  assert_int_equal(narcache_nar_writer_new(&w), 0);
  assert_int_equal(narcache_nar_writer_symlink(w, "", 0), NARCACHE_EINVAL);
  narcache_nar_writer_free(w);
  /* Depth: 64 nested directories are refused by default. */
  assert_int_equal(narcache_nar_writer_new(&w), 0);
  int rc = narcache_nar_writer_dir_begin(w);
  for (int depth = 1; rc == 0 && depth <= 64; depth++) {
    rc = narcache_nar_writer_entry(w, "d", 1);
    if (rc == 0)
      rc = narcache_nar_writer_dir_begin(w);
  }
  assert_int_equal(rc, NARCACHE_ELIMIT);
  narcache_nar_writer_free(w);
}

/* The spec's 5-byte example, built by hand. */
static void test_writer_spec_example(void **state) {
  (void)state;
  narcache_nar_writer *w = NULL;
  assert_int_equal(narcache_nar_writer_new(&w), 0);
  assert_int_equal(narcache_nar_writer_file_begin(w, 5, 0), 0);
  uint8_t buf[256];
  narcache_outbuf out = {buf, 10, 0}; /* small output: data() must wait */
  narcache_inbuf in = {"hello", 5, 0};
  int rc;
  while ((rc = narcache_nar_writer_data(w, &out, &in)) == 1)
    out.size = out.size + 10 < sizeof buf ? out.size + 10 : sizeof buf;
  assert_int_equal(rc, 0);
  assert_int_equal(narcache_nar_writer_finish(w), 0);
  out.size = sizeof buf;
  assert_int_equal(narcache_nar_writer_drain(w, &out), 0);
  assert_int_equal(out.pos, 120);
  assert_sha256(buf, out.pos, "0a430879c266f8b57f4092a0f935cf3facd48bbccde5760d4748ca405171e969");
  narcache_nar_writer_free(w);
}

/* ---- dumper refusals ------------------------------------------------------------------------- */

static void test_dumper_refuses_special_files(void **state) {
  (void)state;
  char *tmp = make_temp_dir(), *fifo = NULL;
  assert_true(asprintf(&fifo, "%s/pipe", tmp) > 0);
  assert_int_equal(mkfifo(fifo, 0644), 0);
  narcache_nar_dumper *d = NULL;
  assert_int_equal(narcache_nar_dumper_new(&d), 0);
  assert_int_equal(narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, tmp), NARCACHE_ENOTSUP);
  assert_non_null(strstr(narcache_nar_dumper_errmsg(d), fifo));
  assert_non_null(strstr(narcache_nar_dumper_errmsg(d), "unsupported type"));
  narcache_nar_dumper_free(d);
  assert_int_equal(narcache_nar_dumper_new(&d), 0);
  assert_int_equal(narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, "/nonexistent/x"),
                   NARCACHE_EIO);
  assert_int_equal(narcache_nar_dumper_syserr(d), ENOENT);
  narcache_nar_dumper_free(d);
  remove_temp_dir(tmp);
  free(fifo);
  free(tmp);
}

/* The depth limit counts every node, as the parser's: with limit 2 a file
 * at depth 2 (root/d/f) is refused, a file at depth 1 is not; the
 * parser with the same limit refuses what the dumper refuses (found by
 * fuzz_nar_dump: files and symlinks were not counted). */
static void test_dumper_depth_limit_counts_files(void **state) {
  (void)state;
  char *tmp = make_temp_dir(), *sub = NULL, *file = NULL, *link = NULL;
  assert_true(asprintf(&sub, "%s/d", tmp) > 0 && asprintf(&file, "%s/d/f", tmp) > 0 &&
              asprintf(&link, "%s/l", tmp) > 0);
  assert_int_equal(mkdir(sub, 0755), 0);
  assert_int_equal(symlink("target", link), 0);
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  fclose(f);
  for (uint64_t limit = 1; limit <= 3; limit++) {
    narcache_nar_dumper *d = NULL;
    assert_int_equal(narcache_nar_dumper_new(&d), 0);
    assert_int_equal(narcache_nar_dumper_set_limit(d, NARCACHE_NAR_LIMIT_DEPTH, limit), 0);
    int rc = narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, tmp);
    assert_int_equal(rc, limit <= 2 ? NARCACHE_ELIMIT : 0);
    narcache_nar_dumper_free(d);
  }
  remove_temp_dir(tmp);
  free(sub);
  free(file);
  free(link);
  free(tmp);
}

static int count_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* Reading part of a file with _read and then asking _next for the rest
 * (what the server does: small pieces copied, large ones sent with
 * sendfile) keeps one descriptor per dumper, and the bytes are right. */
static void test_dumper_read_then_next(void **state) {
  (void)state;
  char *tmp = make_temp_dir(), *file = NULL;
  assert_true(asprintf(&file, "%s/data", tmp) > 0);
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  for (int i = 0; i < 100000; i++)
    fputc('a' + i % 26, f);
  fclose(f);
  int before = count_open_fds();
  for (int round = 0; round < 50; round++) {
    narcache_nar_dumper *d = NULL;
    assert_int_equal(narcache_nar_dumper_new(&d), 0);
    assert_int_equal(narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, tmp), 0);
    char head[400];
    narcache_outbuf out = {head, sizeof head, 0}; /* headers and the file's start */
    assert_int_equal(narcache_nar_dumper_read(d, &out), 1);
    narcache_nar_segment seg = {.version = NARCACHE_NAR_SEGMENT_VERSION};
    assert_int_equal(narcache_nar_dumper_next(d, &seg), 1);
    assert_int_equal(seg.kind, NARCACHE_NAR_SEG_FILE);
    assert_int_equal(seg.nar_offset, sizeof head);
    char c = 0;
    assert_int_equal(pread(seg.fd, &c, 1, (off_t)seg.file_offset), 1);
    assert_int_equal(c, 'a' + (int)(seg.file_offset % 26));
    narcache_nar_dumper_free(d);
  }
  assert_int_equal(count_open_fds(), before);
  unlink(file);
  remove_temp_dir(tmp);
  free(file);
  free(tmp);
}

/* A file that changes size after indexing must fail the dump, never
 * produce a wrong NAR. */
static void test_dumper_detects_changes(void **state) {
  (void)state;
  char *tmp = make_temp_dir(), *file = NULL;
  assert_true(asprintf(&file, "%s/f", tmp) > 0);
  for (int grow = 0; grow < 2; grow++) {
    FILE *f = fopen(file, "wb");
    fputs("0123456789", f);
    fclose(f);
    narcache_nar_dumper *d = NULL;
    assert_int_equal(narcache_nar_dumper_new(&d), 0);
    assert_int_equal(narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, tmp), 0);
    f = fopen(file, "wb");
    fputs(grow ? "0123456789abc" : "0123", f);
    fclose(f);
    uint8_t buf[4096];
    narcache_outbuf out = {buf, sizeof buf, 0};
    assert_int_equal(narcache_nar_dumper_read(d, &out), NARCACHE_EIO);
    assert_non_null(strstr(narcache_nar_dumper_errmsg(d), "changed"));
    /* Sticky. */
    assert_int_equal(narcache_nar_dumper_read(d, &out), NARCACHE_EIO);
    narcache_nar_dumper_free(d);
  }
  remove_temp_dir(tmp);
  free(file);
  free(tmp);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR (built by tests/data/nar/corpus.py build)\n", argv[0]);
    return 2;
  }
  corpus_dir = argv[1];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dump_matches_nix),
      cmocka_unit_test(test_nar_hash_helper),
      cmocka_unit_test(test_listings_match_nix),
      cmocka_unit_test(test_parse_write_roundtrip),
      cmocka_unit_test(test_restore_roundtrip),
      cmocka_unit_test(test_nix_restores_our_nars),
      cmocka_unit_test(test_seek_random_offsets),
      cmocka_unit_test(test_writer_refuses_misuse),
      cmocka_unit_test(test_writer_spec_example),
      cmocka_unit_test(test_dumper_refuses_special_files),
      cmocka_unit_test(test_dumper_depth_limit_counts_files),
      cmocka_unit_test(test_dumper_detects_changes),
      cmocka_unit_test(test_dumper_read_then_next),
  };
  return cmocka_run_group_tests(tests, load_manifest, free_manifest);
}
