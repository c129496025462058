/* Hostile NARs: every rejection row of spec §1.4 (the strict >= 2.35
 * column, plus trailing data), the NAR-reader items of §9, the parser
 * limits, and restore safety (§1.5: nothing written outside the
 * destination, nothing left behind on failure, exact modes).
 *
 * Each hostile input is assembled frame by frame with nar_builder, the
 * expected error offset taken from the builder length just before the
 * offending frame. Every input is fed three ways -- in one exact-size heap
 * buffer (so ASan sees any overread), one byte per call, and in 3-byte
 * chunks -- and all must agree on the code, the offset and the events. */
#define _GNU_SOURCE
#include <narcache.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "nar_builder.h"
#include "test_support.h"

#if defined(__GNUC__) || defined(__clang__)
#define TEST_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TEST_PRINTF(f, a)
#endif

/* ------------------------------------------------------------------------ */
/* Event traces                                                              */
/* ------------------------------------------------------------------------ */

/* Events rendered as text, one per line, independent of how the input was
 * split: FILE_DATA spans are joined and shown at FILE_END. */
typedef struct trace {
  char *s;
  size_t len, cap;
  char *data; /* contents of the current file so far */
  size_t data_len, data_cap;
  uint64_t next_data_offset;
} trace;

static void tr_grow(char **s, size_t *cap, size_t len, size_t more) {
  if (*cap - len > more)
    return;
  size_t c = *cap != 0 ? *cap : 256;
  while (c - len <= more)
    c *= 2;
  char *grown = realloc(*s, c);
  assert_non_null(grown);
  *s = grown;
  *cap = c;
}

static void tr_add(trace *t, const char *fmt, ...) TEST_PRINTF(2, 3);

static void tr_add(trace *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  assert_true(n >= 0);
  tr_grow(&t->s, &t->cap, t->len, (size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
  va_end(ap);
  t->len += (size_t)n;
}

/* Bytes as printable ASCII, anything else as \xNN. */
static void tr_bytes(trace *t, const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) {
    if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
      tr_add(t, "%c", p[i]);
    else
      tr_add(t, "\\x%02x", p[i]);
  }
}

static void tr_flush_data(trace *t) {
  if (t->data_len == 0)
    return;
  tr_add(t, "data=");
  tr_bytes(t, t->data, t->data_len);
  tr_add(t, " (unfinished)\n");
  t->data_len = 0;
}

static void tr_event(trace *t, const narcache_nar_event *ev) {
  switch (ev->type) {
  case NARCACHE_NAR_DIR_BEGIN:
    tr_add(t, "D%u\n", ev->depth);
    break;
  case NARCACHE_NAR_ENTRY:
    assert_non_null(ev->name);
    assert_int_equal(ev->name[ev->name_len], '\0');
    tr_add(t, "E%u:", ev->depth);
    tr_bytes(t, ev->name, ev->name_len);
    tr_add(t, "\n");
    break;
  case NARCACHE_NAR_FILE_BEGIN:
    tr_add(t, "F%u size=%llu x=%u @%llu\n", ev->depth, (unsigned long long)ev->size,
           ev->executable, (unsigned long long)ev->offset);
    t->next_data_offset = ev->offset;
    t->data_len = 0;
    break;
  case NARCACHE_NAR_FILE_DATA:
    assert_non_null(ev->data);
    assert_true(ev->len > 0);
    assert_int_equal(ev->offset, t->next_data_offset);
    t->next_data_offset += ev->len;
    tr_grow(&t->data, &t->data_cap, t->data_len, ev->len);
    memcpy(t->data + t->data_len, ev->data, ev->len);
    t->data_len += ev->len;
    break;
  case NARCACHE_NAR_FILE_END:
    tr_add(t, "data=");
    tr_bytes(t, t->data, t->data_len);
    tr_add(t, "\nf%u\n", ev->depth);
    t->data_len = 0;
    break;
  case NARCACHE_NAR_SYMLINK:
    assert_non_null(ev->name);
    assert_int_equal(ev->name[ev->name_len], '\0');
    tr_add(t, "S%u:", ev->depth);
    tr_bytes(t, ev->name, ev->name_len);
    tr_add(t, "\n");
    break;
  case NARCACHE_NAR_DIR_END:
    tr_add(t, "d%u\n", ev->depth);
    break;
  case NARCACHE_NAR_END:
    tr_add(t, "$%llu\n", (unsigned long long)ev->offset);
    break;
  default:
    fail_msg("unknown event type %u", ev->type);
  }
}

static void tr_free(trace *t) {
  free(t->s);
  free(t->data);
  memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------------ */
/* Running the parser                                                        */
/* ------------------------------------------------------------------------ */

/* Parser limits for a run; 0 keeps the default. */
typedef struct limits {
  uint64_t name, target, depth, size;
} limits;

typedef struct run_result {
  int code;        /* 0: accepted (END seen and finish() ok); else the error */
  uint64_t offset; /* erroffset for an error */
  char msg[512];
  trace tr;
} run_result;

static void apply_limits(narcache_nar_parser *p, const limits *lim) {
  if (lim == NULL)
    return;
  if (lim->name != 0)
    assert_int_equal(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_NAME_LEN, lim->name), 0);
  if (lim->target != 0)
    assert_int_equal(
        narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_TARGET_LEN, lim->target), 0);
  if (lim->depth != 0)
    assert_int_equal(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_DEPTH, lim->depth), 0);
  if (lim->size != 0)
    assert_int_equal(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_SIZE, lim->size), 0);
}

/* Feed `len` bytes in pieces of `chunk` (each piece in its own exact-size
 * heap copy), then finish(). On an error, check that it is sticky. */
static void run_parser(run_result *res, const limits *lim, const void *nar, size_t len,
                       size_t chunk) {
  memset(res, 0, sizeof *res);
  narcache_nar_parser *p = NULL;
  assert_int_equal(narcache_nar_parser_new(&p), 0);
  apply_limits(p, lim);
  narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
  int rc = 0, ended = 0;
  size_t off = 0;
  while (off < len) {
    size_t n = len - off < chunk ? len - off : chunk;
    char *piece = exact_copy((const char *)nar + off, n);
    narcache_inbuf in = {piece, n, 0};
    while ((rc = narcache_nar_parser_next(p, &in, &ev)) > 0) {
      assert_true(in.pos <= in.size);
      assert_false(ended);
      tr_event(&res->tr, &ev);
      ended = ev.type == NARCACHE_NAR_END;
    }
    assert_true(in.pos <= in.size);
    if (rc == 0)
      assert_int_equal(in.pos, in.size); /* 0 means: all input used */
    free(piece);
    if (rc < 0)
      break;
    off += n;
  }
  if (rc == 0) {
    rc = narcache_nar_parser_finish(p);
    if (rc == 0) {
      assert_true(ended);
      assert_int_equal(narcache_nar_parser_offset(p), len);
      assert_string_equal(narcache_nar_parser_errmsg(p), "");
    }
  }
  tr_flush_data(&res->tr);
  res->code = rc;
  if (rc < 0) {
    res->offset = narcache_nar_parser_erroffset(p);
    snprintf(res->msg, sizeof res->msg, "%s", narcache_nar_parser_errmsg(p));
    /* Sticky: more input, finish() and the message all repeat the error. */
    static const char more[16] = {1, 0, 0, 0, 0, 0, 0, 0, '(', 0, 0, 0, 0, 0, 0, 0};
    narcache_inbuf in = {more, sizeof more, 0};
    assert_int_equal(narcache_nar_parser_next(p, &in, &ev), rc);
    assert_int_equal(in.pos, 0);
    assert_int_equal(narcache_nar_parser_finish(p), rc);
    assert_int_equal(narcache_nar_parser_next(p, &in, &ev), rc);
    assert_int_equal(narcache_nar_parser_erroffset(p), res->offset);
    assert_string_equal(narcache_nar_parser_errmsg(p), res->msg);
  }
  narcache_nar_parser_free(p);
}

static const size_t chunk_sizes[] = {SIZE_MAX, 1, 3};
#define NCHUNKS (sizeof chunk_sizes / sizeof chunk_sizes[0])

static void expect_reject_l(const char *what, const nar_builder *b, const limits *lim,
                            int code, uint64_t offset) {
  char *first_trace = NULL;
  for (size_t c = 0; c < NCHUNKS; c++) {
    run_result r;
    run_parser(&r, lim, b->data, b->len, chunk_sizes[c]);
    if (r.code != code || r.offset != offset)
      fail_msg("%s (chunk %zu): got %s at offset %llu (\"%s\"), want %s at offset %llu", what,
               chunk_sizes[c], narcache_errname(r.code), (unsigned long long)r.offset, r.msg,
               narcache_errname(code), (unsigned long long)offset);
    if (r.msg[0] == '\0' || strstr(r.msg, "offset") == NULL)
      fail_msg("%s: error message \"%s\" does not mention the offset", what, r.msg);
    const char *t = r.tr.s != NULL ? r.tr.s : "";
    if (first_trace == NULL)
      first_trace = strdup(t);
    else if (strcmp(first_trace, t) != 0)
      fail_msg("%s: events differ with chunk %zu:\n%s---\n%s", what, chunk_sizes[c],
               first_trace, t);
    tr_free(&r.tr);
  }
  free(first_trace);
}

static void expect_reject(const char *what, const nar_builder *b, int code, uint64_t offset) {
  expect_reject_l(what, b, NULL, code, offset);
}

/* Accept in every split; return the event trace (caller frees) if wanted. */
static char *expect_accept_l(const char *what, const nar_builder *b, const limits *lim) {
  char *first_trace = NULL;
  for (size_t c = 0; c < NCHUNKS; c++) {
    run_result r;
    run_parser(&r, lim, b->data, b->len, chunk_sizes[c]);
    if (r.code != 0)
      fail_msg("%s (chunk %zu): rejected with %s at offset %llu: %s", what, chunk_sizes[c],
               narcache_errname(r.code), (unsigned long long)r.offset, r.msg);
    if (first_trace == NULL)
      first_trace = strdup(r.tr.s);
    else if (strcmp(first_trace, r.tr.s) != 0)
      fail_msg("%s: events differ with chunk %zu:\n%s---\n%s", what, chunk_sizes[c],
               first_trace, r.tr.s);
    tr_free(&r.tr);
  }
  return first_trace;
}

static void expect_accept(const char *what, const nar_builder *b) {
  free(expect_accept_l(what, b, NULL));
}

/* ------------------------------------------------------------------------ */
/* Inputs                                                                    */
/* ------------------------------------------------------------------------ */

/* §1.2: a 5-byte file "hello", 120 bytes. */
static void build_hello(nar_builder *b) {
  nb_init(b);
  nb_magic(b);
  nb_file(b, 0, "hello", 5);
}

/* §1.2 directory vector: a = "hi\n", b = executable "#!/bin/sh\n",
 * c -> a, d/e = empty file. 1064 bytes. */
static void build_spec_dir(nar_builder *b) {
  nb_init(b);
  nb_magic(b);
  nb_dir_begin(b);
  nb_entry(b, "a", 1);
  nb_file(b, 0, "hi\n", 3);
  nb_close(b);
  nb_entry(b, "b", 1);
  nb_file(b, 1, "#!/bin/sh\n", 10);
  nb_close(b);
  nb_entry(b, "c", 1);
  nb_symlink(b, "a");
  nb_close(b);
  nb_entry(b, "d", 1);
  nb_dir_begin(b);
  nb_entry(b, "e", 1);
  nb_file(b, 0, "", 0);
  nb_close(b);
  nb_close(b); /* d */
  nb_close(b); /* entry d */
  nb_close(b); /* root */
}

/* Magic, then a root directory whose first entry is `name` (a file "x"),
 * left open: the caller adds more entries and closes. */
static void build_dir_with(nar_builder *b, const void *name, size_t len) {
  nb_init(b);
  nb_magic(b);
  nb_dir_begin(b);
  nb_entry(b, name, len);
  nb_file(b, 0, "x", 1);
  nb_close(b);
}

/* Offset of the first entry name's frame in build_dir_with(). */
static size_t first_name_offset(void) {
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_toks(&b, "entry", "(", "name", (const char *)NULL);
  size_t at = b.len;
  nb_free(&b);
  return at;
}

/* A root directory holding exactly the given names (files), in that order. */
static void build_dir_names(nar_builder *b, const char *const *names, const size_t *lens,
                            size_t n, size_t *name_offsets) {
  nb_init(b);
  nb_magic(b);
  nb_dir_begin(b);
  for (size_t i = 0; i < n; i++) {
    nb_toks(b, "entry", "(", "name", (const char *)NULL);
    if (name_offsets != NULL)
      name_offsets[i] = b->len;
    nb_str(b, names[i], lens[i]);
    nb_tok(b, "node");
    nb_file(b, 0, "", 0);
    nb_close(b);
  }
  nb_close(b);
}

/* `ndirs` nested directories (depths 0 .. ndirs-1) and a file at depth
 * `ndirs` in the innermost. entry_at[i] is the offset of the "entry" token
 * that introduces the node at depth i (1 <= i <= ndirs). */
static void build_deep(nar_builder *b, size_t ndirs, size_t *entry_at) {
  nb_init(b);
  nb_magic(b);
  nb_dir_begin(b);
  for (size_t i = 1; i < ndirs; i++) {
    entry_at[i] = b->len;
    nb_entry(b, "d", 1);
    nb_dir_begin(b);
  }
  entry_at[ndirs] = b->len;
  nb_entry(b, "f", 1);
  nb_file(b, 0, "deep", 4);
  nb_close(b);
  for (size_t i = 1; i < ndirs; i++) {
    nb_close(b); /* directory node */
    nb_close(b); /* entry */
  }
  nb_close(b);
}

/* ------------------------------------------------------------------------ */
/* Accepted inputs and events                                                */
/* ------------------------------------------------------------------------ */

static void test_spec_directory_events(void **state) {
  (void)state;
  nar_builder b;
  build_spec_dir(&b);
  assert_int_equal(b.len, 1064);
  narcache_hash h;
  assert_int_equal(narcache_hash_buffer(&h, NARCACHE_HASH_SHA256, b.data, b.len), 0);
  char hex[NARCACHE_HASH_STRING_MAX];
  assert_int_equal(narcache_hash_format(hex, sizeof hex, NULL, &h, NARCACHE_HASH_BASE16, 0), 0);
  assert_string_equal(hex, "455bd6b49b00bed897779fe8731fb48e7aa58ccc34042b50c0c5d07df64de785");
  char *t = expect_accept_l("spec directory", &b, NULL);
  assert_string_equal(t, "D0\n"
                         "E1:a\n"
                         "F1 size=3 x=0 @232\n"
                         "data=hi\\x0a\n"
                         "f1\n"
                         "E1:b\n"
                         "F1 size=10 x=1 @456\n"
                         "data=#!/bin/sh\\x0a\n"
                         "f1\n"
                         "E1:c\n"
                         "S1:a\n"
                         "E1:d\n"
                         "D1\n"
                         "E2:e\n"
                         "F2 size=0 x=0 @984\n"
                         "data=\n"
                         "f2\n"
                         "d1\n"
                         "d0\n"
                         "$1064\n");
  free(t);
  nb_free(&b);
}

static void test_root_kinds_accepted(void **state) {
  (void)state;
  nar_builder b;
  build_hello(&b);
  assert_int_equal(b.len, 120);
  char *t = expect_accept_l("hello", &b, NULL);
  assert_string_equal(t, "F0 size=5 x=0 @96\ndata=hello\nf0\n$120\n");
  free(t);
  nb_free(&b);

  /* Contents whose length is a multiple of 8 (no padding) and 0 (no data). */
  nb_init(&b);
  nb_magic(&b);
  nb_file(&b, 1, "12345678", 8);
  t = expect_accept_l("8-byte executable", &b, NULL);
  assert_string_equal(t, "F0 size=8 x=1 @128\ndata=12345678\nf0\n$152\n");
  free(t);
  nb_free(&b);

  nb_init(&b);
  nb_magic(&b);
  nb_symlink(&b, "/nix/store/../../etc");
  t = expect_accept_l("root symlink", &b, NULL);
  assert_string_equal(t, "S0:/nix/store/../../etc\n$136\n");
  free(t);
  nb_free(&b);

  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_close(&b);
  t = expect_accept_l("empty root directory", &b, NULL);
  assert_string_equal(t, "D0\nd0\n$96\n");
  free(t);
  nb_free(&b);
}

static void test_odd_names_accepted(void **state) {
  (void)state;
  /* §9 item 4 and §1.1's order example, all legal, in unsigned order. */
  static const char *const names[] = {"\x01x", "\n", "...", "A", "B", "_", "a", "a-", "ab",
                                      "x~nix~case~hack~1", "z", "~", "\xc3\xa9", "\xff",
                                      "\xff\xfe"};
  size_t n = sizeof names / sizeof names[0];
  size_t lens[sizeof names / sizeof names[0]];
  for (size_t i = 0; i < n; i++)
    lens[i] = strlen(names[i]);
  nar_builder b;
  build_dir_names(&b, names, lens, n, NULL);
  char *t = expect_accept_l("odd names", &b, NULL);
  assert_non_null(strstr(t, "E1:...\n"));
  assert_non_null(strstr(t, "E1:\\xff\\xfe\n"));
  assert_non_null(strstr(t, "E1:A\nF1"));
  assert_non_null(strstr(t, "E1:a\nF1"));
  free(t);
  nb_free(&b);

  /* Names differing only in case; "a" < "a-" (prefix first). */
  static const char *const pairs[][2] = {{"A", "a"}, {"Makefile", "makefile"}, {"a", "a-"},
                                         {"a", "\x80"}, {"\x7f", "\x80"}, {"z", "\xff"}};
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    size_t pl[2] = {strlen(pairs[i][0]), strlen(pairs[i][1])};
    build_dir_names(&b, pairs[i], pl, 2, NULL);
    expect_accept(pairs[i][1], &b);
    nb_free(&b);
  }

  /* A name of exactly 255 bytes and a target of exactly 4095 bytes. */
  char big[4095];
  memset(big, 'n', sizeof big);
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_entry(&b, big, 255);
  nb_toks(&b, "(", "type", "symlink", "target", (const char *)NULL);
  nb_str(&b, big, 4095);
  nb_toks(&b, ")", ")", ")", (const char *)NULL);
  expect_accept("255-byte name, 4095-byte target", &b);
  nb_free(&b);
}

static void test_order_signed_vs_unsigned(void **state) {
  (void)state;
  /* Accepted one way, rejected reversed at the second name. */
  static const char *const pairs[][2] = {
      {"a", "\x80"}, {"a", "a-"}, {"a", "\xc3\xa9"}, {"\x7f", "\x80"}, {"a\x80", "a\xff"},
      {"a-", "ab"},  {"A", "a"},  {"ab", "abc"},     {"\x01", "\x02"}};
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    const char *fwd[2] = {pairs[i][0], pairs[i][1]};
    const char *rev[2] = {pairs[i][1], pairs[i][0]};
    size_t fl[2] = {strlen(fwd[0]), strlen(fwd[1])};
    size_t rl[2] = {fl[1], fl[0]};
    size_t at[2];
    nar_builder b;
    build_dir_names(&b, fwd, fl, 2, at);
    expect_accept("sorted pair", &b);
    nb_free(&b);
    build_dir_names(&b, rev, rl, 2, at);
    expect_reject("reversed pair", &b, NARCACHE_EBADNAR, at[1]);
    nb_free(&b);
  }
}

/* ------------------------------------------------------------------------ */
/* §1.4, one test per row                                                    */
/* ------------------------------------------------------------------------ */

static void test_bad_magic(void **state) {
  (void)state;
  static const char *const wrong[] = {"nix-archive-2", "NIX-ARCHIVE-1", "nix-archive-",
                                      "nix-archive-1\n", "", "(", "nix-archive-11",
                                      "nix-archive-0000000000000000000000000000001"};
  nar_builder b;
  for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
    nb_init(&b);
    nb_tok(&b, wrong[i]);
    nb_file(&b, 0, "x", 1);
    expect_reject(wrong[i], &b, NARCACHE_EBADNAR, 0);
    nb_free(&b);
  }
  /* First length > 13 with nothing behind it: fails on the length alone. */
  static const uint64_t lengths[] = {14, 32, 33, 1u << 20, (uint64_t)1 << 60, UINT64_MAX};
  for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
    nb_init(&b);
    nb_u64(&b, lengths[i]);
    expect_reject("first length too big", &b, NARCACHE_EBADNAR, 0);
    nb_free(&b);
  }
  /* Not a NAR at all. */
  nb_init(&b);
  nb_raw(&b, "{\"version\":1,\"root\":{}}", 23);
  expect_reject("JSON", &b, NARCACHE_EBADNAR, 0);
  nb_free(&b);
}

static void test_nonzero_padding(void **state) {
  (void)state;
  nar_builder b;
  /* In the magic's padding, at each of its three bytes. */
  for (size_t bad = 0; bad < 3; bad++) {
    nb_init(&b);
    nb_u64(&b, 13);
    nb_raw(&b, "nix-archive-1", 13);
    unsigned char pad[3] = {0, 0, 0};
    pad[bad] = (unsigned char)(bad == 1 ? 0x80 : 1);
    nb_raw(&b, pad, 3);
    nb_file(&b, 0, "x", 1);
    expect_reject("magic padding", &b, NARCACHE_EBADNAR, 8 + 13 + bad);
    nb_free(&b);
  }
  /* After a keyword: "(" with padding "\0\0\0 \0\0\0". */
  nb_init(&b);
  nb_magic(&b);
  nb_u64(&b, 1);
  size_t at = b.len;
  nb_raw(&b, "(\0\0\0 \0\0\0", 8);
  nb_toks(&b, "type", "regular", "contents", "x", ")", (const char *)NULL);
  expect_reject("keyword padding", &b, NARCACHE_EBADNAR, at + 4);
  nb_free(&b);
  /* After file contents: the byte after "hello" (the last one too). */
  for (size_t bad = 0; bad < 3; bad++) {
    nb_init(&b);
    nb_magic(&b);
    nb_toks(&b, "(", "type", "regular", "contents", (const char *)NULL);
    nb_u64(&b, 5);
    nb_raw(&b, "hello", 5);
    at = b.len;
    unsigned char pad[3] = {0, 0, 0};
    pad[bad] = 0xff;
    nb_raw(&b, pad, 3);
    nb_tok(&b, ")");
    expect_reject("contents padding", &b, NARCACHE_EBADNAR, at + bad);
    nb_free(&b);
  }
  /* After an entry name. */
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_toks(&b, "entry", "(", "name", (const char *)NULL);
  nb_u64(&b, 2);
  nb_raw(&b, "ab", 2);
  at = b.len;
  nb_raw(&b, "\0\0\0\0\0x", 6);
  nb_tok(&b, "node");
  nb_file(&b, 0, "", 0);
  nb_toks(&b, ")", ")", (const char *)NULL);
  expect_reject("name padding", &b, NARCACHE_EBADNAR, at + 5);
  nb_free(&b);
  /* After a symlink target. */
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "symlink", "target", (const char *)NULL);
  nb_u64(&b, 3);
  nb_raw(&b, "abc", 3);
  at = b.len;
  nb_raw(&b, "\0\0\0\0\x01", 5);
  nb_tok(&b, ")");
  expect_reject("target padding", &b, NARCACHE_EBADNAR, at + 4);
  nb_free(&b);
}

/* Every proper prefix of a valid NAR is rejected by finish() at its own
 * length (so EOF inside a length, a body and a padding are all covered). */
static void check_all_truncations(const char *what, const nar_builder *full) {
  for (size_t k = 0; k < full->len; k++) {
    nar_builder cut = {full->data, k, k};
    char label[128];
    snprintf(label, sizeof label, "%s cut at %zu", what, k);
    expect_reject(label, &cut, NARCACHE_EBADNAR, k);
  }
}

static void test_truncated_everywhere(void **state) {
  (void)state;
  nar_builder b;
  build_hello(&b);
  check_all_truncations("hello", &b);
  /* EOF inside the padding after "hello" (0x65 .. 0x67), explicitly. */
  for (size_t k = 0x65; k < 0x68; k++) {
    nar_builder cut = {b.data, k, k};
    expect_reject("EOF in padding", &cut, NARCACHE_EBADNAR, k);
  }
  nb_free(&b);
  build_spec_dir(&b);
  check_all_truncations("spec directory", &b);
  nb_free(&b);
  /* Empty input. */
  nar_builder none = {NULL, 0, 0};
  expect_reject("empty input", &none, NARCACHE_EBADNAR, 0);
}

static void test_unknown_type_tag_wrong_case(void **state) {
  (void)state;
  nar_builder b;
  static const char *const types[] = {"fifo", "Regular", "REGULAR", "dir", "file", "",
                                      "socket", "symlink ", "regular\n"};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    nb_init(&b);
    nb_magic(&b);
    nb_toks(&b, "(", "type", (const char *)NULL);
    size_t at = b.len;
    nb_toks(&b, types[i], "contents", "x", ")", (const char *)NULL);
    expect_reject(types[i], &b, NARCACHE_EBADNAR, at);
    nb_free(&b);
  }
  /* A type containing NUL: "regular\0". */
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", (const char *)NULL);
  size_t at = b.len;
  nb_str(&b, "regular", 8);
  nb_toks(&b, "contents", "x", ")", (const char *)NULL);
  expect_reject("regular\\0", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  /* Unknown or wrong-case tags and keywords in every position. */
  static const struct {
    const char *const before[10];
    const char *bad;
  } cases[] = {
      {{"(", NULL}, "TYPE"},
      {{"(", NULL}, "Type"},
      {{NULL}, "["},
      {{"(", "type", "regular", NULL}, "Contents"},
      {{"(", "type", "regular", NULL}, "size"},
      {{"(", "type", "regular", NULL}, "Executable"},
      {{"(", "type", "regular", "executable", "", NULL}, "CONTENTS"},
      {{"(", "type", "regular", "contents", "x", NULL}, "]"},
      {{"(", "type", "symlink", NULL}, "Target"},
      {{"(", "type", "symlink", NULL}, "link"},
      {{"(", "type", "symlink", "target", "t", NULL}, "))"},
      {{"(", "type", "directory", NULL}, "Entry"},
      {{"(", "type", "directory", NULL}, "entries"},
      {{"(", "type", "directory", "entry", NULL}, "{"},
      {{"(", "type", "directory", "entry", "(", NULL}, "Name"},
      {{"(", "type", "directory", "entry", "(", "name", "n", NULL}, "NODE"},
      {{"(", "type", "directory", "entry", "(", "name", "n", "node", NULL}, "Node"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    nb_init(&b);
    nb_magic(&b);
    for (size_t j = 0; cases[i].before[j] != NULL; j++)
      nb_tok(&b, cases[i].before[j]);
    at = b.len;
    nb_tok(&b, cases[i].bad);
    nb_toks(&b, "x", "x", "x", (const char *)NULL);
    expect_reject(cases[i].bad, &b, NARCACHE_EBADNAR, at);
    nb_free(&b);
  }
  /* An entry closed by something other than ")". */
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_entry(&b, "n", 1);
  nb_file(&b, 0, "", 0);
  at = b.len;
  nb_tok(&b, "entry");
  nb_close(&b);
  expect_reject("entry not closed", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_type_twice(void **state) {
  (void)state;
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", (const char *)NULL);
  size_t at = b.len;
  nb_toks(&b, "type", "regular", "contents", "x", ")", (const char *)NULL);
  expect_reject("type type", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "regular", (const char *)NULL);
  at = b.len;
  nb_toks(&b, "type", "regular", "contents", "x", ")", (const char *)NULL);
  expect_reject("type regular type regular", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "directory", (const char *)NULL);
  at = b.len;
  nb_toks(&b, "type", "directory", ")", (const char *)NULL);
  expect_reject("type directory type directory", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_executable_value_not_empty(void **state) {
  (void)state;
  static const char *const values[] = {"x", "1", "true", " ", "executable"};
  nar_builder b;
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    nb_init(&b);
    nb_magic(&b);
    nb_toks(&b, "(", "type", "regular", "executable", (const char *)NULL);
    size_t at = b.len;
    nb_toks(&b, values[i], "contents", "x", ")", (const char *)NULL);
    expect_reject(values[i], &b, NARCACHE_EBADNAR, at);
    nb_free(&b);
  }
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "regular", "executable", (const char *)NULL);
  size_t at = b.len;
  nb_str(&b, "", 1); /* a single NUL byte */
  nb_toks(&b, "contents", "x", ")", (const char *)NULL);
  expect_reject("executable \\0", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_bad_entry_names(void **state) {
  (void)state;
  static const struct {
    const char *name;
    size_t len;
  } bad[] = {{"", 0},     {".", 1},     {"..", 2},   {"/", 1},  {"a/b", 3}, {"/x", 2},
             {"x/", 2},   {"../x", 4},  {"\0", 1},   {"a\0b", 3}, {"a\0", 2}, {"./", 2}};
  nar_builder b;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    /* As the first entry ... */
    nb_init(&b);
    nb_magic(&b);
    nb_dir_begin(&b);
    nb_toks(&b, "entry", "(", "name", (const char *)NULL);
    size_t at = b.len;
    nb_str(&b, bad[i].name, bad[i].len);
    nb_tok(&b, "node");
    nb_file(&b, 0, "x", 1);
    nb_toks(&b, ")", ")", (const char *)NULL);
    expect_reject("bad name first", &b, NARCACHE_EBADNAR, at);
    nb_free(&b);
    /* ... and after a valid one that sorts before it. */
    build_dir_with(&b, "\x01", 1);
    nb_toks(&b, "entry", "(", "name", (const char *)NULL);
    at = b.len;
    nb_str(&b, bad[i].name, bad[i].len);
    nb_tok(&b, "node");
    nb_file(&b, 0, "x", 1);
    nb_toks(&b, ")", ")", (const char *)NULL);
    expect_reject("bad name second", &b, NARCACHE_EBADNAR, at);
    nb_free(&b);
  }
}

static void test_entries_not_sorted(void **state) {
  (void)state;
  static const char *const orders[][3] = {
      {"b", "a", NULL}, {"a-", "a", NULL}, {"a", "c", "b"}, {"z", "A", NULL}, {"\xff", "a", NULL}};
  for (size_t i = 0; i < sizeof orders / sizeof orders[0]; i++) {
    size_t n = orders[i][2] != NULL ? 3 : 2, lens[3], at[3];
    for (size_t j = 0; j < n; j++)
      lens[j] = strlen(orders[i][j]);
    nar_builder b;
    build_dir_names(&b, orders[i], lens, n, at);
    expect_reject("unsorted", &b, NARCACHE_EBADNAR, at[n - 1]);
    nb_free(&b);
  }
  /* Order is per directory: a nested directory starts afresh, and the
   * outer order continues after it. */
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_entry(&b, "m", 1);
  nb_dir_begin(&b);
  nb_entry(&b, "z", 1);
  nb_file(&b, 0, "", 0);
  nb_toks(&b, ")", ")", ")", (const char *)NULL);
  nb_toks(&b, "entry", "(", "name", (const char *)NULL);
  size_t at = b.len;
  nb_tok(&b, "c"); /* compared with "m" of the root, not "z" of the subdirectory */
  nb_tok(&b, "node");
  nb_file(&b, 0, "", 0);
  nb_toks(&b, ")", ")", (const char *)NULL);
  expect_reject("unsorted after a subdirectory", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_entry(&b, "m", 1);
  nb_dir_begin(&b);
  nb_entry(&b, "a", 1);
  nb_file(&b, 0, "", 0);
  nb_toks(&b, ")", ")", ")", (const char *)NULL);
  nb_entry(&b, "n", 1);
  nb_file(&b, 0, "", 0);
  nb_toks(&b, ")", ")", (const char *)NULL);
  expect_accept("order per directory", &b);
  nb_free(&b);
}

static void test_duplicate_entry_names(void **state) {
  (void)state;
  static const char *const dup[][3] = {{"a", "a", NULL}, {"a", "b", "b"}, {"\xff", "\xff", NULL}};
  for (size_t i = 0; i < sizeof dup / sizeof dup[0]; i++) {
    size_t n = dup[i][2] != NULL ? 3 : 2, lens[3], at[3];
    for (size_t j = 0; j < n; j++)
      lens[j] = strlen(dup[i][j]);
    nar_builder b;
    build_dir_names(&b, dup[i], lens, n, at);
    expect_reject("duplicate", &b, NARCACHE_EBADNAR, at[n - 1]);
    nb_free(&b);
  }
  /* A directory "a", then a file "a". */
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_entry(&b, "a", 1);
  nb_dir_begin(&b);
  nb_toks(&b, ")", ")", (const char *)NULL);
  nb_toks(&b, "entry", "(", "name", (const char *)NULL);
  size_t at = b.len;
  nb_tok(&b, "a");
  nb_tok(&b, "node");
  nb_file(&b, 0, "", 0);
  nb_toks(&b, ")", ")", (const char *)NULL);
  expect_reject("dir then file of the same name", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_executable_after_contents_or_twice(void **state) {
  (void)state;
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "regular", "contents", "x", (const char *)NULL);
  size_t at = b.len;
  nb_toks(&b, "executable", "", ")", (const char *)NULL);
  expect_reject("executable after contents", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "regular", "executable", "", (const char *)NULL);
  at = b.len;
  nb_toks(&b, "executable", "", "contents", "x", ")", (const char *)NULL);
  expect_reject("executable twice", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "symlink", (const char *)NULL);
  at = b.len;
  nb_toks(&b, "executable", "", "target", "x", ")", (const char *)NULL);
  expect_reject("executable symlink", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_contents_missing(void **state) {
  (void)state;
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "regular", (const char *)NULL);
  size_t at = b.len;
  nb_tok(&b, ")");
  expect_reject("no contents", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "regular", "executable", "", (const char *)NULL);
  at = b.len;
  nb_tok(&b, ")");
  expect_reject("executable, no contents", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  /* Inside a directory. */
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_entry(&b, "f", 1);
  nb_toks(&b, "(", "type", "regular", (const char *)NULL);
  at = b.len;
  nb_toks(&b, ")", ")", ")", (const char *)NULL);
  expect_reject("no contents in a directory", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_contents_twice(void **state) {
  (void)state;
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "regular", "contents", "abc", (const char *)NULL);
  size_t at = b.len;
  nb_toks(&b, "contents", "def", ")", (const char *)NULL);
  expect_reject("contents twice", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_entry_without_node_or_two_names(void **state) {
  (void)state;
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_toks(&b, "entry", "(", "name", "a", (const char *)NULL);
  size_t at = b.len;
  nb_toks(&b, ")", ")", (const char *)NULL);
  expect_reject("entry without node", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_toks(&b, "entry", "(", "name", "a", (const char *)NULL);
  at = b.len;
  nb_toks(&b, "name", "b", "node", (const char *)NULL);
  nb_file(&b, 0, "", 0);
  nb_toks(&b, ")", ")", (const char *)NULL);
  expect_reject("two names", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  /* An entry with nothing at all. */
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_toks(&b, "entry", "(", (const char *)NULL);
  at = b.len;
  nb_toks(&b, ")", ")", (const char *)NULL);
  expect_reject("empty entry", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  /* Two nodes in one entry. */
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_entry(&b, "a", 1);
  nb_file(&b, 0, "", 0);
  at = b.len;
  nb_tok(&b, "node");
  nb_file(&b, 0, "", 0);
  nb_toks(&b, ")", ")", (const char *)NULL);
  expect_reject("two nodes", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_node_before_name(void **state) {
  (void)state;
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_toks(&b, "entry", "(", (const char *)NULL);
  size_t at = b.len;
  nb_tok(&b, "node");
  nb_file(&b, 0, "", 0);
  nb_toks(&b, "name", "a", ")", ")", (const char *)NULL);
  expect_reject("node before name", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_symlink_without_target(void **state) {
  (void)state;
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "symlink", (const char *)NULL);
  size_t at = b.len;
  nb_tok(&b, ")");
  expect_reject("symlink without target", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "symlink", "target", "a", (const char *)NULL);
  at = b.len;
  nb_toks(&b, "target", "b", ")", (const char *)NULL);
  expect_reject("two targets", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_symlink_target_empty(void **state) {
  (void)state;
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "symlink", "target", (const char *)NULL);
  size_t at = b.len;
  nb_toks(&b, "", ")", (const char *)NULL);
  expect_reject("empty target", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);

  build_dir_with(&b, "a", 1);
  nb_entry(&b, "b", 1);
  nb_toks(&b, "(", "type", "symlink", "target", (const char *)NULL);
  at = b.len;
  nb_toks(&b, "", ")", ")", ")", (const char *)NULL);
  expect_reject("empty target in a directory", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_symlink_target_nul(void **state) {
  (void)state;
  static const struct {
    const char *t;
    size_t len;
  } targets[] = {{"\0", 1}, {"a\0b", 3}, {"/etc/passwd\0.txt", 16}, {"abcdefg\0", 8}};
  nar_builder b;
  for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
    nb_init(&b);
    nb_magic(&b);
    nb_toks(&b, "(", "type", "symlink", "target", (const char *)NULL);
    size_t at = b.len;
    nb_str(&b, targets[i].t, targets[i].len);
    nb_tok(&b, ")");
    expect_reject("target with NUL", &b, NARCACHE_EBADNAR, at);
    nb_free(&b);
  }
}

static void test_entry_name_too_long(void **state) {
  (void)state;
  char name[4096];
  memset(name, 'n', sizeof name);
  static const size_t lens[] = {256, 257, 4096};
  nar_builder b;
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    nb_init(&b);
    nb_magic(&b);
    nb_dir_begin(&b);
    nb_toks(&b, "entry", "(", "name", (const char *)NULL);
    size_t at = b.len;
    nb_str(&b, name, lens[i]);
    nb_tok(&b, "node");
    nb_file(&b, 0, "", 0);
    nb_toks(&b, ")", ")", (const char *)NULL);
    expect_reject("long name", &b, NARCACHE_ELIMIT, at);
    /* Only the length field is needed to decide. */
    nar_builder head = {b.data, at + 8, at + 8};
    expect_reject("long name, length only", &head, NARCACHE_ELIMIT, at);
    nb_free(&b);
  }
}

static void test_symlink_target_too_long(void **state) {
  (void)state;
  char target[8192];
  memset(target, 't', sizeof target);
  static const size_t lens[] = {4096, 4097, 8192};
  nar_builder b;
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    nb_init(&b);
    nb_magic(&b);
    nb_toks(&b, "(", "type", "symlink", "target", (const char *)NULL);
    size_t at = b.len;
    nb_str(&b, target, lens[i]);
    nb_tok(&b, ")");
    expect_reject("long target", &b, NARCACHE_ELIMIT, at);
    nar_builder head = {b.data, at + 8, at + 8};
    expect_reject("long target, length only", &head, NARCACHE_ELIMIT, at);
    nb_free(&b);
  }
}

static void test_keyword_too_long(void **state) {
  (void)state;
  /* A tag of 33 bytes (and of absurd lengths) where a keyword is expected. */
  char tag[64];
  memset(tag, 'k', sizeof tag);
  tag[33] = '\0';
  nar_builder b;
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "regular", (const char *)NULL);
  size_t at = b.len;
  nb_toks(&b, tag, "contents", "", ")", (const char *)NULL);
  expect_reject("33-byte tag", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", (const char *)NULL);
  at = b.len;
  nb_tok(&b, tag);
  nb_toks(&b, "contents", "", ")", (const char *)NULL);
  expect_reject("33-byte type", &b, NARCACHE_EBADNAR, at);
  nb_free(&b);
}

static void test_depth_limit(void **state) {
  (void)state;
  size_t entry_at[101];
  nar_builder b;
  /* A node at depth 64 (inside 64 nested directories) is rejected ... */
  build_deep(&b, 64, entry_at);
  expect_reject("depth 64", &b, NARCACHE_ELIMIT, entry_at[64]);
  nb_free(&b);
  /* ... one at depth 63 is fine. */
  build_deep(&b, 63, entry_at);
  char *t = expect_accept_l("depth 63", &b, NULL);
  assert_non_null(strstr(t, "E63:f\nF63 size=4"));
  free(t);
  nb_free(&b);
  /* An empty directory at depth 64 is rejected just the same. */
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  size_t at = 0;
  for (size_t i = 1; i <= 64; i++) {
    at = b.len;
    nb_entry(&b, "d", 1);
    nb_dir_begin(&b);
  }
  nb_close(&b); /* the innermost directory */
  for (size_t i = 1; i <= 64; i++)
    nb_toks(&b, ")", ")", (const char *)NULL); /* its entry, the directory above */
  expect_reject("empty directory at depth 64", &b, NARCACHE_ELIMIT, at);
  nb_free(&b);
}

static void test_trailing_data(void **state) {
  (void)state;
  static const size_t extra[] = {1, 7, 8, 16, 120};
  for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
    nar_builder b;
    build_hello(&b);
    size_t end = b.len;
    unsigned char junk[120];
    memset(junk, 0, sizeof junk);
    nb_raw(&b, junk, extra[i]);
    expect_reject("zero bytes after the archive", &b, NARCACHE_EBADNAR, end);
    nb_free(&b);
    /* A second archive appended. */
    build_spec_dir(&b);
    end = b.len;
    nb_magic(&b);
    nb_file(&b, 0, "x", 1);
    expect_reject("two archives", &b, NARCACHE_EBADNAR, end);
    nb_free(&b);
  }
}

/* ------------------------------------------------------------------------ */
/* §9: huge lengths, without big allocations                                 */
/* ------------------------------------------------------------------------ */

static size_t largest_request;

static void *counting_malloc(void *ctx, size_t size) {
  (void)ctx;
  if (size > largest_request)
    largest_request = size;
  return malloc(size);
}

static void *counting_realloc(void *ctx, void *p, size_t size) {
  (void)ctx;
  if (size > largest_request)
    largest_request = size;
  return realloc(p, size);
}

static void counting_free(void *ctx, void *p) {
  (void)ctx;
  free(p);
}

static void test_huge_lengths(void **state) {
  (void)state;
  narcache_allocator a = {NARCACHE_ALLOCATOR_VERSION, counting_malloc, counting_realloc,
                          counting_free, NULL};
  assert_int_equal(narcache_set_allocator(&a), 0);
  largest_request = 0;
  static const uint64_t huge[] = {(uint64_t)1 << 32,      (uint64_t)1 << 60,
                                  (uint64_t)1 << 63,      UINT64_MAX - 16,
                                  UINT64_MAX - 15,        UINT64_MAX - 8,
                                  UINT64_MAX - 7,         UINT64_MAX - 6,
                                  UINT64_MAX};
  for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
    uint64_t len = huge[i];
    nar_builder b;
    /* Where a keyword is expected. */
    nb_init(&b);
    nb_magic(&b);
    nb_toks(&b, "(", (const char *)NULL);
    size_t at = b.len;
    nb_u64(&b, len);
    nb_raw(&b, "type\0\0\0\0", 8);
    expect_reject("huge keyword", &b, NARCACHE_EBADNAR, at);
    nb_free(&b);
    /* Where "" is expected after "executable". */
    nb_init(&b);
    nb_magic(&b);
    nb_toks(&b, "(", "type", "regular", "executable", (const char *)NULL);
    at = b.len;
    nb_u64(&b, len);
    expect_reject("huge executable value", &b, NARCACHE_EBADNAR, at);
    nb_free(&b);
    /* An entry name and a symlink target: over their limits. */
    nb_init(&b);
    nb_magic(&b);
    nb_dir_begin(&b);
    nb_toks(&b, "entry", "(", "name", (const char *)NULL);
    at = b.len;
    nb_u64(&b, len);
    nb_raw(&b, "aaaaaaaa", 8);
    expect_reject("huge name", &b, NARCACHE_ELIMIT, at);
    nb_free(&b);
    nb_init(&b);
    nb_magic(&b);
    nb_toks(&b, "(", "type", "symlink", "target", (const char *)NULL);
    at = b.len;
    nb_u64(&b, len);
    nb_raw(&b, "aaaaaaaa", 8);
    expect_reject("huge target", &b, NARCACHE_ELIMIT, at);
    nb_free(&b);
    /* File contents: streamed, so a length that fits in 64 bits after the
     * frame is legal until the input ends; one whose frame would pass
     * 2^64 (len + pad or offset + len overflowing) exceeds the size limit. */
    nb_init(&b);
    nb_magic(&b);
    nb_toks(&b, "(", "type", "regular", "contents", (const char *)NULL);
    at = b.len;
    nb_u64(&b, len);
    nb_raw(&b, "data....", 8);
    uint64_t pad = (8 - len % 8) % 8;
    int overflows = len > UINT64_MAX - pad || len + pad > UINT64_MAX - (at + 8);
    if (overflows) {
      expect_reject("huge contents", &b, NARCACHE_ELIMIT, at);
    } else {
      expect_reject("huge contents, truncated", &b, NARCACHE_EBADNAR, b.len);
      run_result r;
      run_parser(&r, NULL, b.data, b.len, SIZE_MAX);
      char want[128];
      snprintf(want, sizeof want, "F0 size=%llu x=0 @%zu\ndata=data.... (unfinished)\n",
               (unsigned long long)len, at + 8);
      assert_string_equal(r.tr.s, want);
      tr_free(&r.tr);
    }
    nb_free(&b);
  }
  assert_int_equal(narcache_set_allocator(NULL), 0);
  /* Nothing was sized from an untrusted length. */
  if (largest_request > 64 * 1024)
    fail_msg("the parser allocated %zu bytes for a hostile length", largest_request);
}

/* ------------------------------------------------------------------------ */
/* Limits                                                                    */
/* ------------------------------------------------------------------------ */

static void test_limit_defaults_and_setting(void **state) {
  (void)state;
  assert_int_equal(narcache_nar_limit_default(NARCACHE_NAR_LIMIT_NAME_LEN), 255);
  assert_int_equal(narcache_nar_limit_default(NARCACHE_NAR_LIMIT_TARGET_LEN), 4095);
  assert_int_equal(narcache_nar_limit_default(NARCACHE_NAR_LIMIT_DEPTH), 64);
  assert_true(narcache_nar_limit_default(NARCACHE_NAR_LIMIT_SIZE) == UINT64_MAX);
  assert_int_equal(narcache_nar_limit_default(0), 0);
  assert_int_equal(narcache_nar_limit_default(99), 0);

  narcache_nar_parser *p = NULL;
  assert_int_equal(narcache_nar_parser_new(&p), 0);
  assert_int_equal(narcache_nar_parser_set_limit(p, 99, 10), NARCACHE_EINVAL);
  assert_int_equal(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_DEPTH, 0),
                   NARCACHE_EINVAL);
  assert_int_equal(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_DEPTH, 3), 0);
  nar_builder b;
  build_hello(&b);
  narcache_inbuf in = {b.data, 4, 0};
  narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
  assert_int_equal(narcache_nar_parser_next(p, &in, &ev), 0);
  assert_int_equal(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_DEPTH, 100),
                   NARCACHE_EMISUSE);
  nb_free(&b);
  narcache_nar_parser_free(p);

  /* Name and target limits, both ways. */
  char name[300];
  memset(name, 'q', sizeof name);
  for (size_t len = 9; len <= 11; len++) {
    build_dir_with(&b, name, len);
    nb_close(&b);
    limits lim = {10, 0, 0, 0};
    if (len <= 10)
      free(expect_accept_l("name at the limit", &b, &lim));
    else
      expect_reject_l("name over the limit", &b, &lim, NARCACHE_ELIMIT, first_name_offset());
    nb_free(&b);
  }
  /* A 300-byte name is fine with a raised limit. */
  build_dir_with(&b, name, 300);
  nb_close(&b);
  expect_reject("300-byte name", &b, NARCACHE_ELIMIT, first_name_offset());
  limits raised = {300, 0, 0, 0};
  free(expect_accept_l("300-byte name, limit 300", &b, &raised));
  nb_free(&b);
  for (size_t len = 4; len <= 6; len++) {
    nb_init(&b);
    nb_magic(&b);
    nb_toks(&b, "(", "type", "symlink", "target", (const char *)NULL);
    size_t at = b.len;
    nb_str(&b, name, len);
    nb_tok(&b, ")");
    limits lim = {0, 5, 0, 0};
    if (len <= 5)
      free(expect_accept_l("target at the limit", &b, &lim));
    else
      expect_reject_l("target over the limit", &b, &lim, NARCACHE_ELIMIT, at);
    nb_free(&b);
  }
}

static void test_limit_depth_100(void **state) {
  (void)state;
  size_t entry_at[101];
  nar_builder b;
  build_deep(&b, 100, entry_at);
  expect_reject("100 deep, default limit", &b, NARCACHE_ELIMIT, entry_at[64]);
  limits l101 = {0, 0, 101, 0};
  char *t = expect_accept_l("100 deep, limit 101", &b, &l101);
  assert_non_null(strstr(t, "E100:f\nF100 size=4"));
  free(t);
  limits l100 = {0, 0, 100, 0};
  expect_reject_l("100 deep, limit 100", &b, &l100, NARCACHE_ELIMIT, entry_at[100]);
  limits l1 = {0, 0, 1, 0};
  expect_reject_l("100 deep, limit 1", &b, &l1, NARCACHE_ELIMIT, entry_at[1]);
  nb_free(&b);
  /* Limit 1 still allows a root directory with no entries and a root file. */
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_close(&b);
  free(expect_accept_l("empty root, depth limit 1", &b, &l1));
  nb_free(&b);
}

static void test_limit_size(void **state) {
  (void)state;
  nar_builder b;
  build_spec_dir(&b);
  limits exact = {0, 0, 0, 1064};
  free(expect_accept_l("size limit = NAR size", &b, &exact));
  /* One byte less: the final ")" frame (at 1048) does not fit. */
  limits less = {0, 0, 0, 1063};
  expect_reject_l("size limit = NAR size - 1", &b, &less, NARCACHE_ELIMIT, 1048);
  nb_free(&b);

  /* A 1 MiB file under a 4 KiB limit fails at its length field, before any
   * of its contents are seen (they are not even supplied here). */
  nb_init(&b);
  nb_magic(&b);
  nb_dir_begin(&b);
  nb_entry(&b, "big", 3);
  nb_toks(&b, "(", "type", "regular", "contents", (const char *)NULL);
  size_t at = b.len;
  nb_u64(&b, 1u << 20);
  limits small = {0, 0, 0, 4096};
  expect_reject_l("1 MiB file, 4 KiB limit", &b, &small, NARCACHE_ELIMIT, at);
  nb_free(&b);
  /* No FILE_BEGIN was reported for it. */
  nb_init(&b);
  nb_magic(&b);
  nb_toks(&b, "(", "type", "regular", "contents", (const char *)NULL);
  at = b.len;
  nb_u64(&b, 5000);
  run_result r;
  run_parser(&r, &small, b.data, b.len, 1);
  assert_int_equal(r.code, NARCACHE_ELIMIT);
  assert_int_equal(r.offset, at);
  assert_null(r.tr.s);
  tr_free(&r.tr);
  nb_free(&b);
}

static void test_parser_reset_after_error(void **state) {
  (void)state;
  narcache_nar_parser *p = NULL;
  assert_int_equal(narcache_nar_parser_new(&p), 0);
  narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
  narcache_inbuf junk = {"garbage!garbage!", 16, 0};
  assert_int_equal(narcache_nar_parser_next(p, &junk, &ev), NARCACHE_EBADNAR);
  assert_int_equal(narcache_nar_parser_erroffset(p), 0);
  narcache_nar_parser_reset(p);
  assert_string_equal(narcache_nar_parser_errmsg(p), "");
  nar_builder b;
  build_hello(&b);
  char *copy = exact_copy(b.data, b.len);
  narcache_inbuf in = {copy, b.len, 0};
  int rc, last = 0;
  while ((rc = narcache_nar_parser_next(p, &in, &ev)) > 0)
    last = rc;
  assert_int_equal(rc, 0);
  assert_int_equal(last, NARCACHE_NAR_END);
  assert_int_equal(narcache_nar_parser_finish(p), 0);
  free(copy);
  nb_free(&b);
  narcache_nar_parser_free(p);
}

/* ------------------------------------------------------------------------ */
/* Restore safety                                                            */
/* ------------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  if (flag == FTW_DP)
    return rmdir(path);
  return unlink(path);
}

static void rm_rf(const char *path) {
  if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    fail_msg("cannot remove %s: %s", path, strerror(errno));
}

static char *make_tmp(void) {
  const char *base = getenv("TMPDIR");
  char templ[4096];
  snprintf(templ, sizeof templ, "%s/narcache-reject-XXXXXX",
           base != NULL && base[0] != '\0' ? base : "/tmp");
  char *dir = mkdtemp(templ);
  if (dir == NULL)
    fail_msg("mkdtemp: %s", strerror(errno));
  return strdup(dir);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The entries of `dir` (hidden ones included), sorted, one per line. */
static char *listing(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL)
    fail_msg("opendir %s: %s", dir, strerror(errno));
  char *names[256];
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    assert_true(n < 256);
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof names[0], cmp_str);
  size_t total = 1;
  for (size_t i = 0; i < n; i++)
    total += strlen(names[i]) + 1;
  char *out = malloc(total);
  assert_non_null(out);
  out[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    strcat(out, names[i]);
    strcat(out, "\n");
    free(names[i]);
  }
  return out;
}

static void assert_empty_dir(const char *dir, const char *what) {
  char *l = listing(dir);
  if (l[0] != '\0')
    fail_msg("%s: %s is not empty:\n%s", what, dir, l);
  free(l);
}

static char *path_join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  assert_non_null(p);
  snprintf(p, n, "%s/%s", a, b);
  return p;
}

typedef struct restore_result {
  int write_rc;  /* last write() result */
  int finish_rc; /* finish() result, or 1 if not called (write failed) */
  char msg[512];
} restore_result;

/* Restore `nar` to `dest` in pieces of `chunk`. With `stop_after_write`,
 * free the restorer without calling finish(). */
static void restore(restore_result *res, const char *dest, const void *nar, size_t len,
                    size_t chunk, int stop_after_write) {
  memset(res, 0, sizeof *res);
  res->finish_rc = 1;
  narcache_nar_restorer *r = NULL;
  assert_int_equal(narcache_nar_restorer_new(&r), 0);
  int rc = narcache_nar_restorer_open(r, NARCACHE_AT_FDCWD, dest);
  if (rc != 0)
    fail_msg("open %s: %s: %s", dest, narcache_errname(rc), narcache_nar_restorer_errmsg(r));
  size_t off = 0;
  rc = 0;
  while (off < len) {
    size_t n = len - off < chunk ? len - off : chunk;
    char *piece = exact_copy((const char *)nar + off, n);
    narcache_inbuf in = {piece, n, 0};
    rc = narcache_nar_restorer_write(r, &in);
    free(piece);
    if (rc < 0)
      break;
    off += n;
  }
  res->write_rc = rc;
  if (rc < 0) {
    snprintf(res->msg, sizeof res->msg, "%s", narcache_nar_restorer_errmsg(r));
    assert_true(res->msg[0] != '\0');
    /* Sticky. */
    narcache_inbuf more = {"x", 1, 0};
    assert_int_equal(narcache_nar_restorer_write(r, &more), rc);
    assert_int_equal(narcache_nar_restorer_finish(r), rc);
  } else if (!stop_after_write) {
    res->finish_rc = narcache_nar_restorer_finish(r);
    if (res->finish_rc < 0)
      snprintf(res->msg, sizeof res->msg, "%s", narcache_nar_restorer_errmsg(r));
  }
  narcache_nar_restorer_free(r);
}

/* A directory NAR with a bit of everything, for restore tests. */
static void build_tree(nar_builder *b) {
  nb_init(b);
  nb_magic(b);
  nb_dir_begin(b);
  nb_entry(b, "a", 1);
  nb_file(b, 0, "plain\n", 6);
  nb_close(b);
  nb_entry(b, "b", 1);
  nb_file(b, 1, "#!/bin/sh\necho hi\n", 18);
  nb_close(b);
  nb_entry(b, "c", 1);
  nb_dir_begin(b);
  nb_entry(b, "d", 1);
  nb_file(b, 0, "", 0);
  nb_close(b);
  nb_entry(b, "e", 1);
  nb_dir_begin(b);
  nb_entry(b, "f", 1);
  nb_file(b, 1, "12345678", 8);
  nb_close(b);
  nb_toks(b, ")", ")", (const char *)NULL); /* e */
  nb_toks(b, ")", ")", (const char *)NULL); /* c */
  nb_entry(b, "g", 1);
  nb_symlink(b, "c/e/f");
  nb_close(b);
}

static void test_restore_bad_names_leave_nothing(void **state) {
  (void)state;
  static const struct {
    const char *name;
    size_t len;
  } bad[] = {{"..", 2}, {"/x", 2}, {"a/b", 3}, {"x\0y", 3}, {".", 1}, {"", 0}, {"\0", 1}};
  char *tmp = make_tmp();
  char *dest = path_join(tmp, "out");
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      nar_builder b;
      nb_init(&b);
      nb_magic(&b);
      nb_dir_begin(&b);
      nb_entry(&b, "\x01", 1);
      nb_file(&b, 0, "first", 5);
      nb_close(&b);
      nb_entry(&b, "\x02", 1);
      nb_dir_begin(&b);
      nb_entry(&b, "inner", 5);
      nb_file(&b, 1, "exe", 3);
      nb_toks(&b, ")", ")", ")", (const char *)NULL);
      nb_entry(&b, bad[i].name, bad[i].len);
      nb_file(&b, 0, "evil", 4);
      nb_toks(&b, ")", ")", (const char *)NULL);
      restore_result res;
      restore(&res, dest, b.data, b.len, bytewise ? 1 : SIZE_MAX, 0);
      if (res.write_rc != NARCACHE_EBADNAR)
        fail_msg("bad name %zu: write gave %s (%s)", i, narcache_errname(res.write_rc), res.msg);
      assert_empty_dir(tmp, "after a bad name");
      nb_free(&b);
    }
  }
  free(dest);
  rm_rf(tmp);
  free(tmp);
}

static void test_restore_symlink_then_write_through_it(void **state) {
  (void)state;
  char *tmp = make_tmp();
  char *parent = path_join(tmp, "p");
  char *outside = path_join(tmp, "outside");
  char *dest = path_join(parent, "out");
  assert_int_equal(mkdir(parent, 0755), 0);
  assert_int_equal(mkdir(outside, 0755), 0);
  const char *targets[] = {outside, "..", "../..", "."};
  for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
    for (int second_kind = 0; second_kind < 3; second_kind++) {
      /* "a" -> target, then a second "a" trying to put "pwned" through it. */
      nar_builder b;
      nb_init(&b);
      nb_magic(&b);
      nb_dir_begin(&b);
      nb_entry(&b, "a", 1);
      nb_symlink(&b, targets[i]);
      nb_close(&b);
      nb_toks(&b, "entry", "(", "name", (const char *)NULL);
      size_t at = b.len;
      nb_tok(&b, "a");
      nb_tok(&b, "node");
      if (second_kind == 0) {
        nb_dir_begin(&b);
        nb_entry(&b, "pwned", 5);
        nb_file(&b, 0, "owned", 5);
        nb_toks(&b, ")", ")", (const char *)NULL);
      } else if (second_kind == 1) {
        nb_file(&b, 0, "owned", 5);
      } else {
        nb_symlink(&b, "/etc/passwd");
      }
      nb_toks(&b, ")", ")", (const char *)NULL);
      expect_reject("duplicate through a symlink", &b, NARCACHE_EBADNAR, at);
      restore_result res;
      restore(&res, dest, b.data, b.len, SIZE_MAX, 0);
      assert_int_equal(res.write_rc, NARCACHE_EBADNAR);
      assert_empty_dir(parent, "duplicate through a symlink");
      assert_empty_dir(outside, "duplicate through a symlink (outside)");
      nb_free(&b);

      /* The unsorted version: "b" -> target, then "a" (which would come first). */
      nb_init(&b);
      nb_magic(&b);
      nb_dir_begin(&b);
      nb_entry(&b, "b", 1);
      nb_symlink(&b, targets[i]);
      nb_close(&b);
      nb_toks(&b, "entry", "(", "name", (const char *)NULL);
      at = b.len;
      nb_tok(&b, "a");
      nb_tok(&b, "node");
      nb_file(&b, 0, "owned", 5);
      nb_toks(&b, ")", ")", (const char *)NULL);
      expect_reject("unsorted after a symlink", &b, NARCACHE_EBADNAR, at);
      restore(&res, dest, b.data, b.len, 1, 0);
      assert_int_equal(res.write_rc, NARCACHE_EBADNAR);
      assert_empty_dir(parent, "unsorted after a symlink");
      assert_empty_dir(outside, "unsorted after a symlink (outside)");
      nb_free(&b);
    }
    /* A valid NAR with such a symlink restores it as a symlink and writes
     * nothing through it. */
    nar_builder b;
    nb_init(&b);
    nb_magic(&b);
    nb_dir_begin(&b);
    nb_entry(&b, "a", 1);
    nb_symlink(&b, targets[i]);
    nb_close(&b);
    nb_entry(&b, "b", 1);
    nb_dir_begin(&b);
    nb_entry(&b, "pwned", 5);
    nb_file(&b, 0, "owned", 5);
    nb_toks(&b, ")", ")", ")", ")", (const char *)NULL);
    restore_result res;
    restore(&res, dest, b.data, b.len, SIZE_MAX, 0);
    assert_int_equal(res.write_rc, 1);
    assert_int_equal(res.finish_rc, 0);
    char *a = path_join(dest, "a");
    struct stat st;
    assert_int_equal(lstat(a, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    char link[4096];
    ssize_t n = readlink(a, link, sizeof link - 1);
    assert_true(n > 0);
    link[n] = '\0';
    assert_string_equal(link, targets[i]);
    free(a);
    assert_empty_dir(outside, "valid NAR with an outward symlink");
    rm_rf(dest);
    nb_free(&b);
  }
  free(dest);
  free(outside);
  free(parent);
  rm_rf(tmp);
  free(tmp);
}

static void test_restore_destination_exists(void **state) {
  (void)state;
  char *tmp = make_tmp();
  char *dest = path_join(tmp, "out");
  nar_builder b;
  build_tree(&b);
  for (int kind = 0; kind < 4; kind++) {
    if (kind == 0)
      assert_int_equal(mkdir(dest, 0700), 0);
    else if (kind == 1) {
      FILE *f = fopen(dest, "w");
      assert_non_null(f);
      fputs("keep me", f);
      fclose(f);
    } else if (kind == 2)
      assert_int_equal(symlink("/nonexistent/dangling", dest), 0);
    else
      assert_int_equal(symlink(tmp, dest), 0); /* symlink to a directory */
    char *before = listing(tmp);
    struct stat st_before, st_after;
    assert_int_equal(lstat(dest, &st_before), 0);

    narcache_nar_restorer *r = NULL;
    assert_int_equal(narcache_nar_restorer_new(&r), 0);
    assert_int_equal(narcache_nar_restorer_open(r, NARCACHE_AT_FDCWD, dest), NARCACHE_EIO);
    assert_int_equal(narcache_nar_restorer_syserr(r), EEXIST);
    assert_true(narcache_nar_restorer_errmsg(r)[0] != '\0');
    /* Nothing can be written afterwards either. */
    narcache_inbuf in = {b.data, b.len, 0};
    assert_true(narcache_nar_restorer_write(r, &in) < 0);
    assert_true(narcache_nar_restorer_finish(r) < 0);
    narcache_nar_restorer_free(r);

    char *after = listing(tmp);
    assert_string_equal(before, after);
    assert_int_equal(lstat(dest, &st_after), 0);
    assert_int_equal(st_before.st_ino, st_after.st_ino);
    assert_int_equal(st_before.st_mode, st_after.st_mode);
    assert_int_equal(st_before.st_size, st_after.st_size);
    if (kind == 0) {
      assert_empty_dir(dest, "existing directory");
      assert_int_equal(rmdir(dest), 0);
    } else if (kind == 1) {
      char text[32] = {0};
      FILE *f = fopen(dest, "r");
      assert_non_null(f);
      assert_int_equal(fread(text, 1, sizeof text - 1, f), 7);
      fclose(f);
      assert_string_equal(text, "keep me");
      assert_int_equal(unlink(dest), 0);
    } else {
      char link[4096];
      ssize_t n = readlink(dest, link, sizeof link - 1);
      assert_true(n > 0);
      link[n] = '\0';
      assert_string_equal(link, kind == 2 ? "/nonexistent/dangling" : tmp);
      assert_int_equal(unlink(dest), 0);
    }
    free(before);
    free(after);
  }
  assert_empty_dir(tmp, "destination exists");
  /* "." and ".." are not usable destinations. */
  narcache_nar_restorer *r = NULL;
  assert_int_equal(narcache_nar_restorer_new(&r), 0);
  char *dotdot = path_join(tmp, "..");
  assert_int_equal(narcache_nar_restorer_open(r, NARCACHE_AT_FDCWD, dotdot), NARCACHE_EINVAL);
  narcache_nar_restorer_free(r);
  free(dotdot);
  nb_free(&b);
  free(dest);
  rm_rf(tmp);
  free(tmp);
}

static void test_restore_fails_midway_leaves_nothing(void **state) {
  (void)state;
  char *tmp = make_tmp();
  char *dest = path_join(tmp, "out");
  nar_builder good;
  build_tree(&good);
  /* Same tree, but the root directory continues with a bad entry "h". */
  nar_builder b;
  nb_init(&b);
  nb_raw(&b, good.data, good.len);
  nb_entry(&b, "h", 1);
  nb_toks(&b, "(", "type", (const char *)NULL);
  size_t bad_at = b.len;
  nb_toks(&b, "fifo", ")", ")", ")", (const char *)NULL);
  expect_reject("bad type after a valid prefix", &b, NARCACHE_EBADNAR, bad_at);
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    narcache_nar_restorer *r = NULL;
    assert_int_equal(narcache_nar_restorer_new(&r), 0);
    assert_int_equal(narcache_nar_restorer_open(r, NARCACHE_AT_FDCWD, dest), 0);
    /* The valid prefix builds a (hidden) partial tree ... */
    int rc = 0;
    for (size_t off = 0; off < bad_at;) {
      size_t n = bytewise ? 1 : bad_at;
      char *piece = exact_copy(b.data + off, n);
      narcache_inbuf in = {piece, n, 0};
      rc = narcache_nar_restorer_write(r, &in);
      assert_int_equal(in.pos, n);
      free(piece);
      assert_int_equal(rc, 0);
      off += n;
    }
    char *during = listing(tmp);
    assert_true(during[0] == '.'); /* exactly one hidden entry, not "out" */
    assert_int_equal(strchr(during, '\n') - during + 1, strlen(during));
    free(during);
    /* ... and the bad token removes all of it. */
    char *rest = exact_copy(b.data + bad_at, b.len - bad_at);
    narcache_inbuf in = {rest, b.len - bad_at, 0};
    assert_int_equal(narcache_nar_restorer_write(r, &in), NARCACHE_EBADNAR);
    free(rest);
    assert_true(narcache_nar_restorer_errmsg(r)[0] != '\0');
    assert_empty_dir(tmp, "after a midway failure");
    narcache_inbuf again = {good.data, good.len, 0};
    assert_int_equal(narcache_nar_restorer_write(r, &again), NARCACHE_EBADNAR);
    assert_int_equal(narcache_nar_restorer_finish(r), NARCACHE_EBADNAR);
    narcache_nar_restorer_free(r);
    assert_empty_dir(tmp, "after a midway failure and free");
  }
  /* Other kinds of midway failure, through the helper. */
  static const char *const bad_tail[] = {"contents", "entry", "executable", "TYPE"};
  for (size_t i = 0; i < sizeof bad_tail / sizeof bad_tail[0]; i++) {
    nb_free(&b);
    nb_init(&b);
    nb_raw(&b, good.data, good.len);
    nb_tok(&b, "entry");
    nb_toks(&b, "(", "name", "h", "node", "(", "type", "regular", "contents", "x",
            (const char *)NULL);
    nb_tok(&b, bad_tail[i]);
    restore_result res;
    restore(&res, dest, b.data, b.len, 3, 0);
    assert_int_equal(res.write_rc, NARCACHE_EBADNAR);
    assert_empty_dir(tmp, bad_tail[i]);
  }
  nb_free(&b);
  nb_free(&good);
  free(dest);
  rm_rf(tmp);
  free(tmp);
}

static void test_restore_truncated_leaves_nothing(void **state) {
  (void)state;
  char *tmp = make_tmp();
  char *dest = path_join(tmp, "out");
  nar_builder good;
  build_tree(&good);
  nb_close(&good); /* complete the root */
  /* Proper prefixes (every frame boundary, and points inside lengths,
   * strings, contents and padding; the parser test covers every byte):
   * write() wants more, finish() fails, nothing stays. */
  for (size_t k = 0; k < good.len; k++) {
    if (k % 8 != 0 && k % 13 != 5)
      continue;
    restore_result res;
    restore(&res, dest, good.data, k, k % 2 == 0 ? SIZE_MAX : 7, 0);
    if (res.write_rc != 0 || res.finish_rc != NARCACHE_EBADNAR)
      fail_msg("prefix %zu: write %s, finish %s (%s)", k, narcache_errname(res.write_rc),
               narcache_errname(res.finish_rc), res.msg);
    assert_empty_dir(tmp, "after a truncated NAR");
  }
  /* Freed without finish(): also nothing. */
  restore_result res;
  restore(&res, dest, good.data, good.len - 16, SIZE_MAX, 1);
  assert_int_equal(res.write_rc, 0);
  assert_empty_dir(tmp, "after free without finish");
  /* Even a complete NAR is not published without finish(). */
  restore(&res, dest, good.data, good.len, SIZE_MAX, 1);
  assert_int_equal(res.write_rc, 1);
  assert_empty_dir(tmp, "complete NAR, no finish");
  /* Trailing data after a complete archive. */
  nar_builder b;
  nb_init(&b);
  nb_raw(&b, good.data, good.len);
  nb_u64(&b, 0);
  restore(&res, dest, b.data, b.len, SIZE_MAX, 0);
  assert_int_equal(res.write_rc, NARCACHE_EBADNAR);
  assert_empty_dir(tmp, "trailing data");
  nb_free(&b);
  nb_free(&good);
  free(dest);
  rm_rf(tmp);
  free(tmp);
}

static void check_node(const char *root, const char *rel, mode_t type, mode_t perm,
                       const char *contents) {
  char *p = rel[0] != '\0' ? path_join(root, rel) : strdup(root);
  struct stat st;
  if (lstat(p, &st) != 0)
    fail_msg("%s: %s", p, strerror(errno));
  if ((st.st_mode & S_IFMT) != type)
    fail_msg("%s: wrong type %o", p, (unsigned)(st.st_mode & S_IFMT));
  if (type != S_IFLNK && (st.st_mode & 07777) != perm)
    fail_msg("%s: mode %04o, want %04o", p, (unsigned)(st.st_mode & 07777), (unsigned)perm);
  if (contents != NULL && type == S_IFREG) {
    char buf[256] = {0};
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    assert_int_equal(n, strlen(contents));
    assert_string_equal(buf, contents);
  } else if (contents != NULL && type == S_IFLNK) {
    char buf[4096];
    ssize_t n = readlink(p, buf, sizeof buf - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, contents);
  }
  free(p);
}

static void test_restore_modes_ignore_umask(void **state) {
  (void)state;
  char *tmp = make_tmp();
  char *dest = path_join(tmp, "out");
  nar_builder b;
  build_tree(&b);
  nb_close(&b);
  mode_t old = umask(077);
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    restore_result res;
    restore(&res, dest, b.data, b.len, bytewise ? 1 : SIZE_MAX, 0);
    if (res.write_rc != 1 || res.finish_rc != 0) {
      umask(old);
      fail_msg("restore: write %s, finish %s (%s)", narcache_errname(res.write_rc),
               narcache_errname(res.finish_rc), res.msg);
    }
    check_node(dest, "", S_IFDIR, 0755, NULL);
    check_node(dest, "a", S_IFREG, 0644, "plain\n");
    check_node(dest, "b", S_IFREG, 0755, "#!/bin/sh\necho hi\n");
    check_node(dest, "c", S_IFDIR, 0755, NULL);
    check_node(dest, "c/d", S_IFREG, 0644, "");
    check_node(dest, "c/e", S_IFDIR, 0755, NULL);
    check_node(dest, "c/e/f", S_IFREG, 0755, "12345678");
    check_node(dest, "g", S_IFLNK, 0, "c/e/f");
    char *top = listing(tmp);
    assert_string_equal(top, "out\n"); /* no temporary left over */
    free(top);
    char *inside = listing(dest);
    assert_string_equal(inside, "a\nb\nc\ng\n");
    free(inside);
    rm_rf(dest);
  }
  nb_free(&b);
  /* Root file and root executable. */
  for (int exec = 0; exec < 2; exec++) {
    nb_init(&b);
    nb_magic(&b);
    nb_file(&b, exec, "root", 4);
    restore_result res;
    restore(&res, dest, b.data, b.len, SIZE_MAX, 0);
    assert_int_equal(res.finish_rc, 0);
    check_node(dest, "", S_IFREG, exec ? 0755 : 0644, "root");
    assert_int_equal(unlink(dest), 0);
    nb_free(&b);
  }
  umask(old);
  assert_empty_dir(tmp, "modes");
  free(dest);
  rm_rf(tmp);
  free(tmp);
}

/* Limits apply to the restorer too; an I/O failure (a name the file
 * system refuses) also removes everything. */
static void test_restore_limits_leave_nothing(void **state) {
  (void)state;
  char *tmp = make_tmp();
  char *dest = path_join(tmp, "out");
  size_t entry_at[101];
  nar_builder b;
  build_deep(&b, 64, entry_at);
  restore_result res;
  restore(&res, dest, b.data, b.len, SIZE_MAX, 0);
  assert_int_equal(res.write_rc, NARCACHE_ELIMIT);
  assert_empty_dir(tmp, "depth 64");
  nb_free(&b);

  /* 100 deep restores with a raised limit, and not without. */
  build_deep(&b, 100, entry_at);
  for (int raised = 0; raised < 2; raised++) {
    narcache_nar_restorer *r = NULL;
    assert_int_equal(narcache_nar_restorer_new(&r), 0);
    if (raised)
      assert_int_equal(narcache_nar_restorer_set_limit(r, NARCACHE_NAR_LIMIT_DEPTH, 101), 0);
    assert_int_equal(narcache_nar_restorer_open(r, NARCACHE_AT_FDCWD, dest), 0);
    narcache_inbuf in = {b.data, b.len, 0};
    int rc = narcache_nar_restorer_write(r, &in);
    assert_int_equal(rc, raised ? 1 : NARCACHE_ELIMIT);
    assert_int_equal(narcache_nar_restorer_set_limit(r, NARCACHE_NAR_LIMIT_DEPTH, 200),
                     NARCACHE_EMISUSE);
    assert_int_equal(narcache_nar_restorer_finish(r), raised ? 0 : NARCACHE_ELIMIT);
    narcache_nar_restorer_free(r);
    if (raised) {
      char rel[256] = "";
      for (int i = 1; i < 100; i++)
        strcat(rel, "d/");
      strcat(rel, "f");
      check_node(dest, rel, S_IFREG, 0644, "deep");
      rm_rf(dest);
    }
    assert_empty_dir(tmp, "100 deep");
  }
  nb_free(&b);

  /* A 300-byte name passes a raised parser limit but not the file system. */
  char name[300];
  memset(name, 'n', sizeof name);
  build_dir_with(&b, "a", 1);
  nb_entry(&b, name, sizeof name);
  nb_file(&b, 0, "x", 1);
  nb_toks(&b, ")", ")", (const char *)NULL);
  narcache_nar_restorer *r = NULL;
  assert_int_equal(narcache_nar_restorer_new(&r), 0);
  assert_int_equal(narcache_nar_restorer_set_limit(r, NARCACHE_NAR_LIMIT_NAME_LEN, 300), 0);
  assert_int_equal(narcache_nar_restorer_open(r, NARCACHE_AT_FDCWD, dest), 0);
  narcache_inbuf in = {b.data, b.len, 0};
  assert_int_equal(narcache_nar_restorer_write(r, &in), NARCACHE_EIO);
  assert_int_equal(narcache_nar_restorer_syserr(r), ENAMETOOLONG);
  assert_int_equal(narcache_nar_restorer_finish(r), NARCACHE_EIO);
  narcache_nar_restorer_free(r);
  assert_empty_dir(tmp, "name too long for the file system");
  nb_free(&b);
  free(dest);
  rm_rf(tmp);
  free(tmp);
}

/* The destination appears after open(): finish() refuses to replace it and
 * removes its own tree. */
static void test_restore_destination_appears(void **state) {
  (void)state;
  char *tmp = make_tmp();
  char *dest = path_join(tmp, "out");
  nar_builder b;
  build_tree(&b);
  nb_close(&b);
  for (int kind = 0; kind < 2; kind++) {
    narcache_nar_restorer *r = NULL;
    assert_int_equal(narcache_nar_restorer_new(&r), 0);
    assert_int_equal(narcache_nar_restorer_open(r, NARCACHE_AT_FDCWD, dest), 0);
    narcache_inbuf in = {b.data, b.len, 0};
    assert_int_equal(narcache_nar_restorer_write(r, &in), 1);
    if (kind == 0)
      assert_int_equal(mkdir(dest, 0700), 0);
    else
      assert_int_equal(symlink("/nonexistent", dest), 0);
    assert_int_equal(narcache_nar_restorer_finish(r), NARCACHE_EIO);
    assert_int_equal(narcache_nar_restorer_syserr(r), EEXIST);
    narcache_nar_restorer_free(r);
    char *l = listing(tmp);
    assert_string_equal(l, "out\n");
    free(l);
    struct stat st;
    assert_int_equal(lstat(dest, &st), 0);
    if (kind == 0) {
      assert_true(S_ISDIR(st.st_mode));
      assert_empty_dir(dest, "destination that appeared");
      assert_int_equal(rmdir(dest), 0);
    } else {
      assert_true(S_ISLNK(st.st_mode));
      assert_int_equal(unlink(dest), 0);
    }
  }
  /* A root symlink pointing outside is restored as a symlink, nothing more. */
  nb_free(&b);
  nb_init(&b);
  nb_magic(&b);
  nb_symlink(&b, "..");
  restore_result res;
  restore(&res, dest, b.data, b.len, 1, 0);
  assert_int_equal(res.finish_rc, 0);
  check_node(dest, "", S_IFLNK, 0, "..");
  char *l = listing(tmp);
  assert_string_equal(l, "out\n");
  free(l);
  assert_int_equal(unlink(dest), 0);
  nb_free(&b);
  free(dest);
  rm_rf(tmp);
  free(tmp);
}

static void test_restore_parent_missing(void **state) {
  (void)state;
  char *tmp = make_tmp();
  char *missing = path_join(tmp, "no/such/dir/out");
  char *file = path_join(tmp, "file");
  char *under_file = path_join(tmp, "file/out");
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  fclose(f);
  nar_builder b;
  build_hello(&b);
  const char *dests[] = {missing, under_file};
  const int errs[] = {ENOENT, ENOTDIR};
  for (size_t i = 0; i < 2; i++) {
    narcache_nar_restorer *r = NULL;
    assert_int_equal(narcache_nar_restorer_new(&r), 0);
    assert_int_equal(narcache_nar_restorer_open(r, NARCACHE_AT_FDCWD, dests[i]), NARCACHE_EIO);
    assert_int_equal(narcache_nar_restorer_syserr(r), errs[i]);
    assert_true(narcache_nar_restorer_errmsg(r)[0] != '\0');
    narcache_inbuf in = {b.data, b.len, 0};
    assert_true(narcache_nar_restorer_write(r, &in) < 0);
    assert_true(narcache_nar_restorer_finish(r) < 0);
    narcache_nar_restorer_free(r);
    char *l = listing(tmp);
    assert_string_equal(l, "file\n");
    free(l);
  }
  nb_free(&b);
  assert_int_equal(unlink(file), 0);
  free(missing);
  free(file);
  free(under_file);
  rm_rf(tmp);
  free(tmp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spec_directory_events),
      cmocka_unit_test(test_root_kinds_accepted),
      cmocka_unit_test(test_odd_names_accepted),
      cmocka_unit_test(test_order_signed_vs_unsigned),
      cmocka_unit_test(test_bad_magic),
      cmocka_unit_test(test_nonzero_padding),
      cmocka_unit_test(test_truncated_everywhere),
      cmocka_unit_test(test_unknown_type_tag_wrong_case),
      cmocka_unit_test(test_type_twice),
      cmocka_unit_test(test_executable_value_not_empty),
      cmocka_unit_test(test_bad_entry_names),
      cmocka_unit_test(test_entries_not_sorted),
      cmocka_unit_test(test_duplicate_entry_names),
      cmocka_unit_test(test_executable_after_contents_or_twice),
      cmocka_unit_test(test_contents_missing),
      cmocka_unit_test(test_contents_twice),
      cmocka_unit_test(test_entry_without_node_or_two_names),
      cmocka_unit_test(test_node_before_name),
      cmocka_unit_test(test_symlink_without_target),
      cmocka_unit_test(test_symlink_target_empty),
      cmocka_unit_test(test_symlink_target_nul),
      cmocka_unit_test(test_entry_name_too_long),
      cmocka_unit_test(test_symlink_target_too_long),
      cmocka_unit_test(test_keyword_too_long),
      cmocka_unit_test(test_depth_limit),
      cmocka_unit_test(test_trailing_data),
      cmocka_unit_test(test_huge_lengths),
      cmocka_unit_test(test_limit_defaults_and_setting),
      cmocka_unit_test(test_limit_depth_100),
      cmocka_unit_test(test_limit_size),
      cmocka_unit_test(test_parser_reset_after_error),
      cmocka_unit_test(test_restore_bad_names_leave_nothing),
      cmocka_unit_test(test_restore_symlink_then_write_through_it),
      cmocka_unit_test(test_restore_destination_exists),
      cmocka_unit_test(test_restore_fails_midway_leaves_nothing),
      cmocka_unit_test(test_restore_truncated_leaves_nothing),
      cmocka_unit_test(test_restore_modes_ignore_umask),
      cmocka_unit_test(test_restore_parent_missing),
      cmocka_unit_test(test_restore_limits_leave_nothing),
      cmocka_unit_test(test_restore_destination_appears),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
