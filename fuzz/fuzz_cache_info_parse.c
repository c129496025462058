/* nix-cache-info parsing on arbitrary bytes.
 *
 * Every input is parsed over an object that already holds a known-good
 * cache info. A refused input must set a non-empty message and leave the
 * object as it was (it formats back to the known-good text); an input
 * with a NUL byte or over 64 KiB must be refused. An accepted input must
 * format to exactly the lines its getters describe, parse back (in a fresh
 * object) to the same fields, format again byte-identically, and be
 * rebuilt through the setters to the same text.
 *
 * Once per process: 64 KiB is accepted, one byte more is refused with
 * NARCACHE_ELIMIT and changes nothing. */
#include <narcache.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                               \
  do {                                                                            \
    if (!(cond)) {                                                                \
      fprintf(stderr, "fuzz_cache_info_parse: invariant failed at line %d: %s\n", \
              __LINE__, #cond);                                                   \
      abort();                                                                    \
    }                                                                             \
  } while (0)

/* Largest nix-cache-info accepted (cache_info.c). */
#define CACHE_INFO_MAX_BYTES (64 * 1024)

static const char known_good[] = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";

typedef struct fields {
  const char *store_dir;
  size_t store_dir_len;
  int rc_wmq, wmq;
  int rc_prio;
  int32_t prio;
} fields;

static void get_fields(fields *f, const narcache_cache_info *ci) {
  f->store_dir = narcache_cache_info_store_dir(ci, &f->store_dir_len);
  if (f->store_dir != NULL)
    CHECK(strlen(f->store_dir) == f->store_dir_len);
  else
    CHECK(f->store_dir_len == 0);
  f->wmq = -1;
  f->rc_wmq = narcache_cache_info_want_mass_query(ci, &f->wmq);
  CHECK(f->rc_wmq == 0 || f->rc_wmq == NARCACHE_ENOTFOUND);
  if (f->rc_wmq == 0)
    CHECK(f->wmq == 0 || f->wmq == 1);
  f->prio = 0;
  f->rc_prio = narcache_cache_info_priority(ci, &f->prio);
  CHECK(f->rc_prio == 0 || f->rc_prio == NARCACHE_ENOTFOUND);
}

static void check_same_fields(const narcache_cache_info *a, const narcache_cache_info *b) {
  fields fa, fb;
  get_fields(&fa, a);
  get_fields(&fb, b);
  if (fa.store_dir == NULL || fb.store_dir == NULL)
    CHECK(fa.store_dir == NULL && fb.store_dir == NULL);
  else
    CHECK(fa.store_dir_len == fb.store_dir_len &&
          memcmp(fa.store_dir, fb.store_dir, fa.store_dir_len) == 0);
  CHECK(fa.rc_wmq == fb.rc_wmq && (fa.rc_wmq != 0 || fa.wmq == fb.wmq));
  CHECK(fa.rc_prio == fb.rc_prio && (fa.rc_prio != 0 || fa.prio == fb.prio));
}

/* Format, NUL-terminated at its length. NULL on ENOMEM. */
static char *format_or_null(const narcache_cache_info *ci, size_t *len) {
  char *text = NULL;
  int rc = narcache_cache_info_format(&text, len, ci);
  if (rc == NARCACHE_ENOMEM)
    return NULL;
  CHECK(rc == 0 && text != NULL && strlen(text) == *len);
  return text;
}

/* The text the getters describe, one line per field that is set. */
static void check_text_matches_getters(const narcache_cache_info *ci, const char *text,
                                       size_t len) {
  fields f;
  get_fields(&f, ci);
  size_t pos = 0;
  if (f.store_dir != NULL) {
    /* An absolute path without a trailing '/', blanks or control bytes. */
    CHECK(f.store_dir_len > 0 && f.store_dir[0] == '/');
    CHECK(f.store_dir_len == 1 || f.store_dir[f.store_dir_len - 1] != '/');
    for (size_t i = 0; i < f.store_dir_len; i++)
      CHECK((unsigned char)f.store_dir[i] > 0x20 && f.store_dir[i] != 0x7f);
    CHECK(len - pos >= 10 + f.store_dir_len + 1 && memcmp(text + pos, "StoreDir: ", 10) == 0 &&
          memcmp(text + pos + 10, f.store_dir, f.store_dir_len) == 0 &&
          text[pos + 10 + f.store_dir_len] == '\n');
    pos += 10 + f.store_dir_len + 1;
  }
  char line[64];
  if (f.rc_wmq == 0) {
    int n = snprintf(line, sizeof line, "WantMassQuery: %d\n", f.wmq);
    CHECK(len - pos >= (size_t)n && memcmp(text + pos, line, (size_t)n) == 0);
    pos += (size_t)n;
  }
  if (f.rc_prio == 0) {
    int n = snprintf(line, sizeof line, "Priority: %" PRId32 "\n", f.prio);
    CHECK(len - pos >= (size_t)n && memcmp(text + pos, line, (size_t)n) == 0);
    pos += (size_t)n;
  }
  CHECK(pos == len);
}

/* Rebuild through the setters: it must format to `text`. */
static void check_setters(const narcache_cache_info *ci, const char *text, size_t len) {
  narcache_cache_info *b = NULL;
  if (narcache_cache_info_new(&b) != 0)
    return;
  fields f;
  get_fields(&f, ci);
  int rc = 0;
  if (f.store_dir != NULL)
    rc = narcache_cache_info_set_store_dir(b, f.store_dir, f.store_dir_len);
  if (rc != NARCACHE_ENOMEM) {
    CHECK(rc == 0);
    CHECK(narcache_cache_info_set_want_mass_query(b, f.rc_wmq == 0, f.wmq) == 0);
    CHECK(narcache_cache_info_set_priority(b, f.rc_prio == 0, f.prio) == 0);
    check_same_fields(ci, b);
    size_t again_len = 0;
    char *again = format_or_null(b, &again_len);
    if (again != NULL)
      CHECK(again_len == len && memcmp(again, text, len) == 0);
    narcache_free(again);
  }
  narcache_cache_info_free(b);
}

static void check_accepted(const narcache_cache_info *ci, const uint8_t *data, size_t size) {
  CHECK(size <= CACHE_INFO_MAX_BYTES && (size == 0 || memchr(data, '\0', size) == NULL));
  size_t len = 0;
  char *text = format_or_null(ci, &len);
  if (text == NULL)
    return;
  check_text_matches_getters(ci, text, len);
  narcache_cache_info *again = NULL;
  if (narcache_cache_info_new(&again) == 0) {
    int rc = narcache_cache_info_parse(again, text, len);
    if (rc != NARCACHE_ENOMEM) {
      if (rc != 0)
        fprintf(stderr, "fuzz_cache_info_parse: formatted text refused: %s\n%s",
                narcache_cache_info_errmsg(again), text);
      CHECK(rc == 0);
      check_same_fields(ci, again);
      size_t len2 = 0;
      char *text2 = format_or_null(again, &len2);
      if (text2 != NULL)
        CHECK(len2 == len && memcmp(text, text2, len) == 0);
      narcache_free(text2);
    }
    narcache_cache_info_free(again);
  }
  check_setters(ci, text, len);
  narcache_free(text);
}

/* CACHE_INFO_MAX_BYTES is accepted, one byte more is refused and changes
 * nothing (the fuzzer's inputs are never that long): the known-good text
 * and one long unknown key. `ci` holds the known-good cache info. */
static void check_size_limit(narcache_cache_info *ci) {
  const size_t max = CACHE_INFO_MAX_BYTES, head = sizeof known_good - 1;
  char *big = malloc(max + 1);
  CHECK(big != NULL);
  memcpy(big, known_good, head);
  memcpy(big + head, "X: ", 3);
  memset(big + head + 3, 'x', max - head - 4);
  big[max - 1] = '\n';
  big[max] = '\n';
  CHECK(narcache_cache_info_parse(ci, big, max + 1) == NARCACHE_ELIMIT);
  CHECK(narcache_cache_info_errmsg(ci)[0] != '\0');
  size_t len = 0;
  char *text = format_or_null(ci, &len);
  CHECK(text != NULL && len == head && memcmp(text, known_good, len) == 0);
  narcache_free(text);
  CHECK(narcache_cache_info_parse(ci, big, max) == 0);
  free(big);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int checked_limit;
  narcache_cache_info *ci = NULL;
  if (narcache_cache_info_new(&ci) != 0)
    return 0;
  if (narcache_cache_info_parse(ci, known_good, sizeof known_good - 1) != 0) {
    narcache_cache_info_free(ci);
    return 0;
  }
  if (!checked_limit) {
    checked_limit = 1;
    check_size_limit(ci);
    CHECK(narcache_cache_info_parse(ci, known_good, sizeof known_good - 1) == 0);
  }
  int rc = narcache_cache_info_parse(ci, (const char *)data, size);
  if (rc == 0) {
    check_accepted(ci, data, size);
  } else if (rc != NARCACHE_ENOMEM) {
    CHECK(rc == NARCACHE_EBADNARINFO || rc == NARCACHE_ELIMIT);
    const char *msg = narcache_cache_info_errmsg(ci);
    CHECK(msg != NULL && msg[0] != '\0');
    /* The object still holds the known-good cache info. */
    size_t len = 0;
    char *kept = format_or_null(ci, &len);
    if (kept != NULL)
      CHECK(len == sizeof known_good - 1 && memcmp(kept, known_good, len) == 0);
    narcache_free(kept);
  }
  narcache_cache_info_free(ci);
  return 0;
}
