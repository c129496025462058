/* The narinfo object: parsing Nix's "Key: value" text, validated fields,
 * and rendering it back in the order Nix writes. */
#include "common_internal.h"
#include "narinfo_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Owned strings and sorted string sets                                */
/* ------------------------------------------------------------------ */

static int str_set(narcache__str *dst, const char *s, size_t len) {
  char *copy = narcache__malloc(len + 1);
  if (copy == NULL)
    return NARCACHE_ENOMEM;
  if (len > 0)
    memcpy(copy, s, len);
  copy[len] = '\0';
  narcache__free(dst->s);
  dst->s = copy;
  dst->len = len;
  return NARCACHE_OK;
}

static void str_clear(narcache__str *dst) {
  narcache__free(dst->s);
  dst->s = NULL;
  dst->len = 0;
}

static int str_cmp(const char *a, size_t alen, const char *b, size_t blen) {
  int c = memcmp(a, b, alen < blen ? alen : blen);
  if (c != 0)
    return c;
  return alen < blen ? -1 : alen > blen;
}

/* Index of the first item not less than (s, len). */
static size_t strset_lower_bound(const narcache__strset *set, const char *s, size_t len) {
  size_t lo = 0, hi = set->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (str_cmp(set->items[mid].s, set->items[mid].len, s, len) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

int narcache__strset_insert(narcache__strset *set, const char *s, size_t len) {
  size_t at = strset_lower_bound(set, s, len);
  if (at < set->count && str_cmp(set->items[at].s, set->items[at].len, s, len) == 0)
    return NARCACHE_OK;
  if (set->count == set->cap) {
    size_t cap = set->cap ? set->cap * 2 : 8;
    narcache__str *items = narcache__realloc(set->items, cap * sizeof *items);
    if (items == NULL)
      return NARCACHE_ENOMEM;
    set->items = items;
    set->cap = cap;
  }
  narcache__str item = {NULL, 0};
  if (str_set(&item, s, len) < 0)
    return NARCACHE_ENOMEM;
  memmove(set->items + at + 1, set->items + at, (set->count - at) * sizeof *set->items);
  set->items[at] = item;
  set->count++;
  return NARCACHE_OK;
}

/* Append without keeping order; narcache__strset_sort() restores it. The
 * parser uses this so that a hostile, reverse-sorted list costs n log n
 * rather than n^2 moves. */
static int strset_append(narcache__strset *set, const char *s, size_t len) {
  if (set->count == set->cap) {
    size_t cap = set->cap ? set->cap * 2 : 8;
    narcache__str *items = narcache__realloc(set->items, cap * sizeof *items);
    if (items == NULL)
      return NARCACHE_ENOMEM;
    set->items = items;
    set->cap = cap;
  }
  narcache__str item = {NULL, 0};
  if (str_set(&item, s, len) < 0)
    return NARCACHE_ENOMEM;
  set->items[set->count++] = item;
  return NARCACHE_OK;
}

static int item_cmp(const void *a, const void *b) {
  const narcache__str *x = a, *y = b;
  return str_cmp(x->s, x->len, y->s, y->len);
}

/* Sort and drop duplicates. */
static void strset_sort(narcache__strset *set) {
  if (set->count < 2)
    return;
  qsort(set->items, set->count, sizeof *set->items, item_cmp);
  size_t kept = 1;
  for (size_t i = 1; i < set->count; i++) {
    if (item_cmp(&set->items[kept - 1], &set->items[i]) == 0)
      narcache__free(set->items[i].s);
    else
      set->items[kept++] = set->items[i];
  }
  set->count = kept;
}

void narcache__strset_clear(narcache__strset *set) {
  for (size_t i = 0; i < set->count; i++)
    narcache__free(set->items[i].s);
  narcache__free(set->items);
  set->items = NULL;
  set->count = set->cap = 0;
}

static void fields_clear(narcache__narinfo_fields *f) {
  str_clear(&f->store_path);
  str_clear(&f->url);
  str_clear(&f->compression);
  str_clear(&f->deriver);
  str_clear(&f->system);
  str_clear(&f->ca);
  narcache__strset_clear(&f->references);
  narcache__strset_clear(&f->sigs);
  memset(f, 0, sizeof *f);
}

/* ------------------------------------------------------------------ */
/* Object lifetime and error reporting                                 */
/* ------------------------------------------------------------------ */

static int valid_store_dir(const char *dir, size_t len) {
  if (len < 2 || dir[0] != '/' || dir[len - 1] == '/')
    return 0;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)dir[i] <= 0x20 || dir[i] == 0x7f)
      return 0;
  return 1;
}

int narcache_narinfo_new(narcache_narinfo **out, const char *store_dir) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  if (store_dir == NULL)
    store_dir = NARCACHE_STORE_DIR;
  size_t dir_len = strlen(store_dir);
  if (!valid_store_dir(store_dir, dir_len))
    return NARCACHE_EINVAL;
  narcache_narinfo *ni = narcache__calloc(1, sizeof *ni);
  if (ni == NULL)
    return NARCACHE_ENOMEM;
  ni->store_dir = narcache__malloc(dir_len + 1);
  if (ni->store_dir == NULL) {
    narcache__free(ni);
    return NARCACHE_ENOMEM;
  }
  memcpy(ni->store_dir, store_dir, dir_len + 1);
  ni->store_dir_len = dir_len;
  *out = ni;
  return NARCACHE_OK;
}

void narcache_narinfo_free(narcache_narinfo *ni) {
  if (ni == NULL)
    return;
  fields_clear(&ni->f);
  narcache__free(ni->store_dir);
  narcache__free(ni);
}

const char *narcache_narinfo_errmsg(const narcache_narinfo *ni) {
  return ni == NULL ? "" : ni->errmsg;
}

size_t narcache_narinfo_err_offset(const narcache_narinfo *ni) {
  return ni == NULL ? 0 : ni->err_offset;
}

static void clear_error(narcache_narinfo *ni) {
  ni->errmsg[0] = '\0';
  ni->err_offset = 0;
}

NARCACHE_PRINTF(2, 3)
static int set_error(narcache_narinfo *ni, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ni->errmsg, sizeof ni->errmsg, fmt, ap);
  va_end(ap);
  return NARCACHE_EBADNARINFO;
}

/* ------------------------------------------------------------------ */
/* Value validation shared by the parser and the setters. Each returns */
/* 0 or an error with *where = offset of the bad byte in the value and */
/* *why = a static description.                                        */
/* ------------------------------------------------------------------ */

typedef struct value_error {
  size_t where;
  const char *why;
} value_error;

static int reject(value_error *e, size_t where, const char *why) {
  e->where = where;
  e->why = why;
  return NARCACHE_EBADNARINFO;
}

/* Printable ASCII without spaces: URLs, systems, signatures. */
static int check_word(const char *v, size_t len, value_error *e) {
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
      return reject(e, i, "expected printable ASCII without spaces");
  return NARCACHE_OK;
}

static int check_compression(const char *v, size_t len, value_error *e) {
  for (size_t i = 0; i < len; i++) {
    char c = v[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return reject(e, i, "expected a method name of [A-Za-z0-9._-]");
  }
  return NARCACHE_OK;
}

static int check_store_path(const narcache_narinfo *ni, const char *v, size_t len,
                            value_error *e) {
  size_t at = 0;
  if (narcache_store_path_parse(NULL, v, len, ni->store_dir, &at) == 0)
    return NARCACHE_OK;
  if (at <= ni->store_dir_len)
    return reject(e, at, "not a path in the store directory");
  if (at < ni->store_dir_len + 1 + NARCACHE_STORE_HASH_CHARS)
    return reject(e, at, "invalid store path hash");
  if (at == ni->store_dir_len + 1 + NARCACHE_STORE_HASH_CHARS)
    return reject(e, at, "expected '-' after the store path hash");
  return reject(e, at, "invalid store path name");
}

static int check_base_name(const char *v, size_t len, value_error *e) {
  size_t at = 0;
  if (narcache_store_path_parse_base(NULL, v, len, &at) == 0)
    return NARCACHE_OK;
  if (len > 0 && v[0] == '/')
    return reject(e, 0, "expected a base name <hash>-<name>, not a full path");
  if (at < NARCACHE_STORE_HASH_CHARS)
    return reject(e, at, "invalid store path hash");
  if (at == NARCACHE_STORE_HASH_CHARS)
    return reject(e, at, "expected '-' after the store path hash");
  return reject(e, at, "invalid store path name");
}

static const char *hash_error_text(int rc) {
  switch (rc) {
  case NARCACHE_EBADHASH:
    return "expected <algo>:<digits> or an SRI hash";
  case NARCACHE_EHASHALGO:
    return "unknown hash algorithm";
  case NARCACHE_EBADLENGTH:
    return "wrong hash length";
  case NARCACHE_EBADCHAR:
    return "invalid character in hash";
  case NARCACHE_ENONCANONICAL:
    return "non-canonical hash encoding";
  default:
    return "invalid hash";
  }
}

static int parse_hash(narcache_hash *out, const char *v, size_t len, value_error *e) {
  size_t at = 0;
  int rc = narcache_hash_parse(out, v, len, &at);
  return rc < 0 ? reject(e, at, hash_error_text(rc)) : NARCACHE_OK;
}

/* Decimal digits only: no sign, no blanks, no overflow. */
static int parse_size(uint64_t *out, const char *v, size_t len, value_error *e) {
  if (len == 0)
    return reject(e, 0, "expected a decimal number");
  uint64_t n = 0;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9')
      return reject(e, i, "expected a decimal number");
    unsigned digit = (unsigned)(v[i] - '0');
    if (n > (UINT64_MAX - digit) / 10)
      return reject(e, i, "number too large");
    n = n * 10 + digit;
  }
  *out = n;
  return NARCACHE_OK;
}

static int check_sig(const char *v, size_t len, value_error *e) {
  int rc = check_word(v, len, e);
  if (rc < 0)
    return rc;
  const char *colon = memchr(v, ':', len);
  if (colon == NULL)
    return reject(e, len, "expected <key name>:<signature>");
  if (colon == v)
    return reject(e, 0, "empty key name");
  return NARCACHE_OK;
}

/* Content address, Nix's grammar: "text:sha256:<digits>" or
 * "fixed:[r:]<algo>:<digits>", digits in base16, nix32 or base64 (not SRI).
 * Rendered canonically into `out` as Nix does (<algo>:<nix32>). */
static int parse_ca(narcache__buf *out, const char *v, size_t len, value_error *e) {
  size_t prefix = 0;
  int text = 0;
  if (len >= 5 && memcmp(v, "text:", 5) == 0) {
    prefix = 5;
    text = 1;
  } else if (len >= 8 && memcmp(v, "fixed:r:", 8) == 0) {
    prefix = 8;
  } else if (len >= 6 && memcmp(v, "fixed:", 6) == 0) {
    prefix = 6;
  } else {
    return reject(e, 0, "expected text: or fixed:");
  }
  const char *algo = v + prefix;
  const char *colon = memchr(algo, ':', len - prefix);
  if (colon == NULL)
    return reject(e, prefix, "expected <algo>:<digits>");
  int id = narcache_hash_algo_from_name(algo, (size_t)(colon - algo));
  if (id < 0)
    return reject(e, prefix, "unknown hash algorithm");
  if (text && id != NARCACHE_HASH_SHA256)
    return reject(e, prefix, "text content addresses use sha256");
  const char *digits = colon + 1;
  size_t digits_len = len - (size_t)(digits - v);
  size_t digits_at = (size_t)(digits - v);
  for (size_t i = 0; i < digits_len; i++)
    if (digits[i] == ':' || digits[i] == '-')
      return reject(e, digits_at + i, "invalid character in hash");
  narcache_hash h;
  size_t at = 0;
  int rc = narcache_hash_parse_as(&h, id, digits, digits_len, &at);
  if (rc < 0)
    return reject(e, digits_at + at, hash_error_text(rc));
  char rendered[NARCACHE_HASH_STRING_MAX];
  size_t rendered_len = 0;
  rc = narcache_hash_format(rendered, sizeof rendered, &rendered_len, &h, NARCACHE_HASH_NIX32, 1);
  if (rc < 0)
    return rc;
  if ((rc = narcache__buf_append(out, v, prefix)) < 0 ||
      (rc = narcache__buf_append(out, rendered, rendered_len)) < 0)
    return rc;
  return NARCACHE_OK;
}

/* ------------------------------------------------------------------ */
/* Parser                                                              */
/* ------------------------------------------------------------------ */

enum field_id {
  F_STORE_PATH,
  F_URL,
  F_COMPRESSION,
  F_FILE_HASH,
  F_FILE_SIZE,
  F_NAR_HASH,
  F_NAR_SIZE,
  F_REFERENCES,
  F_DERIVER,
  F_SYSTEM,
  F_SIG,
  F_CA,
  F_UNKNOWN
};

static const char *const field_names[] = {"StorePath", "URL",        "Compression", "FileHash",
                                          "FileSize",  "NarHash",    "NarSize",     "References",
                                          "Deriver",   "System",     "Sig",         "CA"};

static enum field_id field_lookup(const char *key, size_t len) {
  for (size_t i = 0; i < F_UNKNOWN; i++)
    if (strlen(field_names[i]) == len && memcmp(field_names[i], key, len) == 0)
      return (enum field_id)i;
  return F_UNKNOWN;
}

typedef struct parse_state {
  narcache_narinfo *ni;
  narcache__narinfo_fields *f;
  const char *text;
  size_t line_no;
  size_t line_start;
  size_t value_start;
  const char *field;
} parse_state;

/* Error at byte `pos` of the text, positioned by line and column. */
static int parse_fail(parse_state *ps, size_t pos, const char *what) {
  ps->ni->err_offset = pos;
  if (ps->field != NULL)
    return set_error(ps->ni, "line %zu, column %zu: %s: %s", ps->line_no,
                     pos - ps->line_start + 1, ps->field, what);
  return set_error(ps->ni, "line %zu, column %zu: %s", ps->line_no, pos - ps->line_start + 1,
                   what);
}

static int value_fail(parse_state *ps, const value_error *e) {
  return parse_fail(ps, ps->value_start + e->where, e->why);
}

static int parse_references(parse_state *ps, const char *v, size_t len) {
  size_t i = 0;
  while (i < len) {
    if (v[i] == ' ') { /* Nix splits on runs of spaces; so do we */
      i++;
      continue;
    }
    const char *space = memchr(v + i, ' ', len - i);
    size_t end = space != NULL ? (size_t)(space - v) : len;
    value_error e;
    if (check_base_name(v + i, end - i, &e) < 0) {
      e.where += i;
      return value_fail(ps, &e);
    }
    if (strset_append(&ps->f->references, v + i, end - i) < 0)
      return NARCACHE_ENOMEM;
    i = end;
  }
  return NARCACHE_OK;
}

static int parse_ca_field(parse_state *ps, const char *v, size_t len) {
  if (len == 0) /* Nix reads an empty CA as none */
    return NARCACHE_OK;
  narcache__buf rendered = {0};
  value_error e;
  int rc = parse_ca(&rendered, v, len, &e);
  if (rc == NARCACHE_EBADNARINFO)
    rc = value_fail(ps, &e);
  if (rc == 0)
    rc = str_set(&ps->f->ca, rendered.data, rendered.len);
  narcache__buf_free(&rendered);
  return rc;
}

static int parse_field(parse_state *ps, enum field_id id, const char *v, size_t len) {
  narcache__narinfo_fields *f = ps->f;
  value_error e = {0, NULL};
  int rc = NARCACHE_OK;
  switch (id) {
  case F_STORE_PATH:
    rc = check_store_path(ps->ni, v, len, &e);
    if (rc == 0)
      rc = str_set(&f->store_path, v, len);
    break;
  case F_URL:
    rc = len == 0 ? reject(&e, 0, "empty URL") : check_word(v, len, &e);
    if (rc == 0)
      rc = str_set(&f->url, v, len);
    break;
  case F_COMPRESSION:
    rc = check_compression(v, len, &e);
    if (rc == 0 && len > 0)
      rc = str_set(&f->compression, v, len);
    break;
  case F_FILE_HASH:
    rc = parse_hash(&f->file_hash, v, len, &e);
    f->has_file_hash = rc == 0;
    break;
  case F_FILE_SIZE:
    rc = parse_size(&f->file_size, v, len, &e);
    f->has_file_size = rc == 0;
    break;
  case F_NAR_HASH:
    rc = parse_hash(&f->nar_hash, v, len, &e);
    if (rc == 0 && f->nar_hash.algo != NARCACHE_HASH_SHA256)
      rc = reject(&e, 0, "NarHash must be sha256");
    f->has_nar_hash = rc == 0;
    break;
  case F_NAR_SIZE:
    rc = parse_size(&f->nar_size, v, len, &e);
    if (rc == 0 && f->nar_size == 0)
      rc = reject(&e, 0, "must not be 0");
    break;
  case F_REFERENCES:
    return parse_references(ps, v, len);
  case F_DERIVER:
    if (len == 15 && memcmp(v, "unknown-deriver", 15) == 0)
      break;
    rc = check_base_name(v, len, &e);
    if (rc == 0)
      rc = str_set(&f->deriver, v, len);
    break;
  case F_SYSTEM:
    rc = check_word(v, len, &e);
    if (rc == 0 && len > 0)
      rc = str_set(&f->system, v, len);
    break;
  case F_SIG:
    rc = check_sig(v, len, &e);
    if (rc == 0)
      rc = strset_append(&f->sigs, v, len);
    break;
  case F_CA:
    return parse_ca_field(ps, v, len);
  case F_UNKNOWN:
    break;
  }
  if (rc == NARCACHE_EBADNARINFO)
    return value_fail(ps, &e);
  return rc;
}

static int is_key_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '-';
}

/* One "Key: value" line spanning text[start, eol). */
static int parse_line(parse_state *ps, size_t start, size_t eol, unsigned *seen) {
  const char *line = ps->text + start;
  size_t len = eol - start;
  ps->field = NULL;
  if (len == 0)
    return parse_fail(ps, start, "blank line");
  size_t k = 0;
  while (k < len && is_key_char(line[k]))
    k++;
  if (k == 0)
    return parse_fail(ps, start, "expected a field name");
  if (k == len || line[k] != ':')
    return parse_fail(ps, start + k, line[k] == '\r' ? "carriage return (CRLF line ends)"
                                                     : "expected ':' after the field name");
  enum field_id id = field_lookup(line, k);
  if (id != F_UNKNOWN)
    ps->field = field_names[id];
  if (k + 1 == len || line[k + 1] != ' ')
    return parse_fail(ps, start + k + 1, "expected one space after ':'");
  size_t v = k + 2;
  for (size_t i = v; i < len; i++) {
    unsigned char c = (unsigned char)line[i];
    if (c == '\r')
      return parse_fail(ps, start + i, "carriage return (CRLF line ends)");
    if (c < 0x20 || c == 0x7f)
      return parse_fail(ps, start + i, "control character in value");
  }
  if (id != F_UNKNOWN && id != F_SIG) {
    if (*seen & (1u << id))
      return parse_fail(ps, start, "field appears twice");
    *seen |= 1u << id;
  }
  ps->value_start = start + v;
  return parse_field(ps, id, line + v, len - v);
}

static int parse_text(parse_state *ps, size_t len) {
  unsigned seen = 0;
  size_t pos = 0;
  ps->line_no = 1;
  while (pos < len) {
    ps->line_start = pos;
    const char *nl = memchr(ps->text + pos, '\n', len - pos);
    if (nl == NULL) {
      ps->field = NULL;
      /* Report the real problem when the unterminated line has one. */
      for (size_t i = pos; i < len; i++)
        if (ps->text[i] == '\0')
          return parse_fail(ps, i, "NUL byte");
      return parse_fail(ps, len, "last line does not end in a newline");
    }
    size_t eol = (size_t)(nl - ps->text);
    int rc = parse_line(ps, pos, eol, &seen);
    if (rc < 0)
      return rc;
    pos = eol + 1;
    ps->line_no++;
  }
  ps->field = NULL;
  ps->line_start = pos;
  static const enum field_id required[] = {F_STORE_PATH, F_URL, F_NAR_HASH, F_NAR_SIZE};
  for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
    if (!(seen & (1u << required[i]))) {
      ps->ni->err_offset = len;
      return set_error(ps->ni, "missing required field %s", field_names[required[i]]);
    }
  return NARCACHE_OK;
}

int narcache_narinfo_parse(narcache_narinfo *ni, const char *text, size_t len) {
  if (ni == NULL || (text == NULL && len != 0))
    return NARCACHE_EINVAL;
  clear_error(ni);
  if (len > NARCACHE_NARINFO_MAX_BYTES) {
    ni->err_offset = NARCACHE_NARINFO_MAX_BYTES;
    set_error(ni, "narinfo is larger than %d bytes", NARCACHE_NARINFO_MAX_BYTES);
    return NARCACHE_ELIMIT;
  }
  narcache__narinfo_fields fresh;
  memset(&fresh, 0, sizeof fresh);
  parse_state ps = {ni, &fresh, text, 1, 0, 0, NULL};
  int rc = parse_text(&ps, len);
  if (rc < 0) {
    fields_clear(&fresh);
    if (rc == NARCACHE_ENOMEM)
      set_error(ni, "out of memory");
    return rc;
  }
  strset_sort(&fresh.references);
  strset_sort(&fresh.sigs);
  fields_clear(&ni->f);
  ni->f = fresh;
  return NARCACHE_OK;
}

/* ------------------------------------------------------------------ */
/* Formatter                                                           */
/* ------------------------------------------------------------------ */

static int append_line(narcache__buf *b, const char *key, const char *value, size_t len) {
  int rc;
  if ((rc = narcache__buf_append_str(b, key)) < 0 || (rc = narcache__buf_append(b, ": ", 2)) < 0 ||
      (rc = narcache__buf_append(b, value, len)) < 0 || (rc = narcache__buf_append(b, "\n", 1)) < 0)
    return rc;
  return NARCACHE_OK;
}

static int append_hash_line(narcache__buf *b, const char *key, const narcache_hash *h) {
  char text[NARCACHE_HASH_STRING_MAX];
  size_t len = 0;
  int rc = narcache_hash_format(text, sizeof text, &len, h, NARCACHE_HASH_NIX32, 1);
  return rc < 0 ? rc : append_line(b, key, text, len);
}

static int append_number_line(narcache__buf *b, const char *key, uint64_t n) {
  char text[24];
  int len = snprintf(text, sizeof text, "%" PRIu64, n);
  return append_line(b, key, text, (size_t)len);
}

static int append_references(narcache__buf *b, const narcache__strset *refs) {
  int rc = narcache__buf_append_str(b, "References: ");
  for (size_t i = 0; rc == 0 && i < refs->count; i++) {
    if (i > 0)
      rc = narcache__buf_append(b, " ", 1);
    if (rc == 0)
      rc = narcache__buf_append(b, refs->items[i].s, refs->items[i].len);
  }
  return rc == 0 ? narcache__buf_append(b, "\n", 1) : rc;
}

static int format_fields(narcache__buf *b, const narcache__narinfo_fields *f) {
  int rc = append_line(b, "StorePath", f->store_path.s, f->store_path.len);
  if (rc == 0)
    rc = append_line(b, "URL", f->url.s, f->url.len);
  if (rc == 0)
    rc = f->compression.s ? append_line(b, "Compression", f->compression.s, f->compression.len)
                          : append_line(b, "Compression", "bzip2", 5);
  if (rc == 0 && f->has_file_hash)
    rc = append_hash_line(b, "FileHash", &f->file_hash);
  if (rc == 0 && f->has_file_size)
    rc = append_number_line(b, "FileSize", f->file_size);
  if (rc == 0)
    rc = append_hash_line(b, "NarHash", &f->nar_hash);
  if (rc == 0)
    rc = append_number_line(b, "NarSize", f->nar_size);
  if (rc == 0)
    rc = append_references(b, &f->references);
  if (rc == 0 && f->deriver.s)
    rc = append_line(b, "Deriver", f->deriver.s, f->deriver.len);
  if (rc == 0 && f->system.s)
    rc = append_line(b, "System", f->system.s, f->system.len);
  for (size_t i = 0; rc == 0 && i < f->sigs.count; i++)
    rc = append_line(b, "Sig", f->sigs.items[i].s, f->sigs.items[i].len);
  if (rc == 0 && f->ca.s)
    rc = append_line(b, "CA", f->ca.s, f->ca.len);
  return rc;
}

int narcache_narinfo_format(char **out, size_t *out_len, const narcache_narinfo *ni) {
  if (out == NULL || ni == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  const narcache__narinfo_fields *f = &ni->f;
  if (f->store_path.s == NULL || f->url.s == NULL || !f->has_nar_hash || f->nar_size == 0)
    return NARCACHE_EBADNARINFO;
  narcache__buf b = {0};
  int rc = format_fields(&b, f);
  if (rc == 0)
    rc = narcache__buf_take(&b, out, out_len);
  narcache__buf_free(&b);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Field access                                                        */
/* ------------------------------------------------------------------ */

static const char *get_str(const narcache__str *s, size_t *len) {
  if (len != NULL)
    *len = s->s != NULL ? s->len : 0;
  return s->s;
}

/* Validate with `check`, then store; the object is unchanged on error. */
typedef int (*value_check)(const narcache_narinfo *ni, const char *v, size_t len,
                           value_error *e);

static int set_checked(narcache_narinfo *ni, narcache__str *dst, const char *field,
                       value_check check, const char *v, size_t len) {
  if (ni == NULL || (v == NULL && len != 0))
    return NARCACHE_EINVAL;
  clear_error(ni);
  value_error e = {0, NULL};
  if (check(ni, v, len, &e) < 0)
    return set_error(ni, "%s: byte %zu: %s", field, e.where, e.why);
  return str_set(dst, v, len);
}

/* As set_checked, for a field that NULL removes. */
static int set_optional(narcache_narinfo *ni, narcache__str *dst, const char *field,
                        value_check check, const char *v, size_t len) {
  if (ni != NULL && v == NULL) {
    clear_error(ni);
    str_clear(dst);
    return NARCACHE_OK;
  }
  return set_checked(ni, dst, field, check, v, len);
}

static int check_url_value(const narcache_narinfo *ni, const char *v, size_t len,
                           value_error *e) {
  (void)ni;
  return len == 0 ? reject(e, 0, "empty URL") : check_word(v, len, e);
}

static int check_word_value(const narcache_narinfo *ni, const char *v, size_t len,
                            value_error *e) {
  (void)ni;
  return len == 0 ? reject(e, 0, "empty value") : check_word(v, len, e);
}

static int check_compression_value(const narcache_narinfo *ni, const char *v, size_t len,
                                   value_error *e) {
  (void)ni;
  return check_compression(v, len, e);
}

static int check_base_value(const narcache_narinfo *ni, const char *v, size_t len,
                            value_error *e) {
  (void)ni;
  return check_base_name(v, len, e);
}

static int check_sig_value(const narcache_narinfo *ni, const char *v, size_t len,
                           value_error *e) {
  (void)ni;
  return check_sig(v, len, e);
}

const char *narcache_narinfo_store_dir(const narcache_narinfo *ni, size_t *len) {
  if (ni == NULL)
    return NULL;
  if (len != NULL)
    *len = ni->store_dir_len;
  return ni->store_dir;
}

const char *narcache_narinfo_store_path(const narcache_narinfo *ni, size_t *len) {
  return ni == NULL ? NULL : get_str(&ni->f.store_path, len);
}

int narcache_narinfo_set_store_path(narcache_narinfo *ni, const char *path, size_t len) {
  if (ni == NULL)
    return NARCACHE_EINVAL;
  return set_checked(ni, &ni->f.store_path, "StorePath", check_store_path, path, len);
}

const char *narcache_narinfo_url(const narcache_narinfo *ni, size_t *len) {
  return ni == NULL ? NULL : get_str(&ni->f.url, len);
}

int narcache_narinfo_set_url(narcache_narinfo *ni, const char *url, size_t len) {
  if (ni == NULL)
    return NARCACHE_EINVAL;
  return set_checked(ni, &ni->f.url, "URL", check_url_value, url, len);
}

const char *narcache_narinfo_compression(const narcache_narinfo *ni, size_t *len) {
  if (ni == NULL)
    return NULL;
  if (ni->f.compression.s == NULL) {
    if (len != NULL)
      *len = 5;
    return "bzip2";
  }
  return get_str(&ni->f.compression, len);
}

int narcache_narinfo_set_compression(narcache_narinfo *ni, const char *method, size_t len) {
  if (ni == NULL)
    return NARCACHE_EINVAL;
  if (len == 0) /* "" is bzip2, as an absent field */
    method = NULL;
  return set_optional(ni, &ni->f.compression, "Compression", check_compression_value, method,
                      len);
}

int narcache_narinfo_file_hash(const narcache_narinfo *ni, narcache_hash *out) {
  if (ni == NULL || out == NULL)
    return NARCACHE_EINVAL;
  if (!ni->f.has_file_hash)
    return NARCACHE_ENOTFOUND;
  *out = ni->f.file_hash;
  return NARCACHE_OK;
}

static int valid_hash(const narcache_hash *h) {
  return narcache_hash_algo_size((int)h->algo) != 0 &&
         narcache_hash_algo_size((int)h->algo) == h->len;
}

int narcache_narinfo_set_file_hash(narcache_narinfo *ni, const narcache_hash *h) {
  if (ni == NULL || (h != NULL && !valid_hash(h)))
    return NARCACHE_EINVAL;
  ni->f.has_file_hash = h != NULL;
  if (h != NULL)
    ni->f.file_hash = *h;
  return NARCACHE_OK;
}

int narcache_narinfo_file_size(const narcache_narinfo *ni, uint64_t *out) {
  if (ni == NULL || out == NULL)
    return NARCACHE_EINVAL;
  if (!ni->f.has_file_size)
    return NARCACHE_ENOTFOUND;
  *out = ni->f.file_size;
  return NARCACHE_OK;
}

int narcache_narinfo_set_file_size(narcache_narinfo *ni, int present, uint64_t size) {
  if (ni == NULL)
    return NARCACHE_EINVAL;
  ni->f.has_file_size = present != 0;
  ni->f.file_size = present ? size : 0;
  return NARCACHE_OK;
}

int narcache_narinfo_nar_hash(const narcache_narinfo *ni, narcache_hash *out) {
  if (ni == NULL || out == NULL)
    return NARCACHE_EINVAL;
  if (!ni->f.has_nar_hash)
    return NARCACHE_ENOTFOUND;
  *out = ni->f.nar_hash;
  return NARCACHE_OK;
}

int narcache_narinfo_set_nar_hash(narcache_narinfo *ni, const narcache_hash *h) {
  if (ni == NULL || h == NULL || !valid_hash(h))
    return NARCACHE_EINVAL;
  if (h->algo != NARCACHE_HASH_SHA256)
    return NARCACHE_EHASHALGO;
  ni->f.nar_hash = *h;
  ni->f.has_nar_hash = 1;
  return NARCACHE_OK;
}

uint64_t narcache_narinfo_nar_size(const narcache_narinfo *ni) {
  return ni == NULL ? 0 : ni->f.nar_size;
}

int narcache_narinfo_set_nar_size(narcache_narinfo *ni, uint64_t size) {
  if (ni == NULL || size == 0)
    return NARCACHE_EINVAL;
  ni->f.nar_size = size;
  return NARCACHE_OK;
}

size_t narcache_narinfo_reference_count(const narcache_narinfo *ni) {
  return ni == NULL ? 0 : ni->f.references.count;
}

const char *narcache_narinfo_reference(const narcache_narinfo *ni, size_t i, size_t *len) {
  if (ni == NULL || i >= ni->f.references.count)
    return NULL;
  return get_str(&ni->f.references.items[i], len);
}

/* Validate like set_checked, then insert into a set. */
static int add_checked(narcache_narinfo *ni, narcache__strset *set, const char *field,
                       value_check check, const char *v, size_t len) {
  if (ni == NULL || (v == NULL && len != 0))
    return NARCACHE_EINVAL;
  clear_error(ni);
  value_error e = {0, NULL};
  if (check(ni, v, len, &e) < 0)
    return set_error(ni, "%s: byte %zu: %s", field, e.where, e.why);
  return narcache__strset_insert(set, v, len);
}

int narcache_narinfo_add_reference(narcache_narinfo *ni, const char *base, size_t len) {
  if (ni == NULL)
    return NARCACHE_EINVAL;
  return add_checked(ni, &ni->f.references, "References", check_base_value, base, len);
}

void narcache_narinfo_clear_references(narcache_narinfo *ni) {
  if (ni != NULL)
    narcache__strset_clear(&ni->f.references);
}

const char *narcache_narinfo_deriver(const narcache_narinfo *ni, size_t *len) {
  return ni == NULL ? NULL : get_str(&ni->f.deriver, len);
}

int narcache_narinfo_set_deriver(narcache_narinfo *ni, const char *base, size_t len) {
  if (ni == NULL)
    return NARCACHE_EINVAL;
  return set_optional(ni, &ni->f.deriver, "Deriver", check_base_value, base, len);
}

const char *narcache_narinfo_system(const narcache_narinfo *ni, size_t *len) {
  return ni == NULL ? NULL : get_str(&ni->f.system, len);
}

int narcache_narinfo_set_system(narcache_narinfo *ni, const char *system, size_t len) {
  if (ni == NULL)
    return NARCACHE_EINVAL;
  return set_optional(ni, &ni->f.system, "System", check_word_value, system, len);
}

const char *narcache_narinfo_ca(const narcache_narinfo *ni, size_t *len) {
  return ni == NULL ? NULL : get_str(&ni->f.ca, len);
}

int narcache_narinfo_set_ca(narcache_narinfo *ni, const char *ca, size_t len) {
  if (ni == NULL)
    return NARCACHE_EINVAL;
  clear_error(ni);
  if (ca == NULL) {
    str_clear(&ni->f.ca);
    return NARCACHE_OK;
  }
  narcache__buf rendered = {0};
  value_error e = {0, NULL};
  int rc = parse_ca(&rendered, ca, len, &e);
  if (rc == NARCACHE_EBADNARINFO)
    rc = set_error(ni, "CA: byte %zu: %s", e.where, e.why);
  if (rc == 0)
    rc = str_set(&ni->f.ca, rendered.data, rendered.len);
  narcache__buf_free(&rendered);
  return rc;
}

size_t narcache_narinfo_sig_count(const narcache_narinfo *ni) {
  return ni == NULL ? 0 : ni->f.sigs.count;
}

const char *narcache_narinfo_sig(const narcache_narinfo *ni, size_t i, size_t *len) {
  if (ni == NULL || i >= ni->f.sigs.count)
    return NULL;
  return get_str(&ni->f.sigs.items[i], len);
}

int narcache_narinfo_add_sig(narcache_narinfo *ni, const char *sig, size_t len) {
  if (ni == NULL)
    return NARCACHE_EINVAL;
  return add_checked(ni, &ni->f.sigs, "Sig", check_sig_value, sig, len);
}

void narcache_narinfo_clear_sigs(narcache_narinfo *ni) {
  if (ni != NULL)
    narcache__strset_clear(&ni->f.sigs);
}
