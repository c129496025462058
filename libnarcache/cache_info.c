/* nix-cache-info: the cache's StoreDir, WantMassQuery and Priority. */
#include "buffer_internal.h"
#include "common_internal.h"
#include "narcache/narinfo.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Nothing legitimate comes near this; it bounds work on hostile input. */
#define CACHE_INFO_MAX_BYTES (64 * 1024)

typedef struct cache_info_fields {
  char *store_dir; /* NULL = not set */
  size_t store_dir_len;
  int has_want_mass_query;
  int want_mass_query;
  int has_priority;
  int32_t priority;
} cache_info_fields;

struct narcache_cache_info {
  cache_info_fields f;
  char errmsg[160];
};

static void fields_clear(cache_info_fields *f) {
  narcache__free(f->store_dir);
  memset(f, 0, sizeof *f);
}

int narcache_cache_info_new(narcache_cache_info **out) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = narcache__calloc(1, sizeof **out);
  return *out == NULL ? NARCACHE_ENOMEM : NARCACHE_OK;
}

void narcache_cache_info_free(narcache_cache_info *ci) {
  if (ci == NULL)
    return;
  fields_clear(&ci->f);
  narcache__free(ci);
}

const char *narcache_cache_info_errmsg(const narcache_cache_info *ci) {
  return ci == NULL ? "" : ci->errmsg;
}

NARCACHE_PRINTF(2, 3)
static int fail(narcache_cache_info *ci, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ci->errmsg, sizeof ci->errmsg, fmt, ap);
  va_end(ap);
  return NARCACHE_EBADNARINFO;
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

static int valid_store_dir(const char *dir, size_t len) {
  if (len < 2 || dir[0] != '/' || dir[len - 1] == '/')
    return 0;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)dir[i] <= 0x20 || dir[i] == 0x7f)
      return 0;
  return 1;
}

static int set_store_dir(cache_info_fields *f, const char *dir, size_t len) {
  char *copy = narcache__malloc(len + 1);
  if (copy == NULL)
    return NARCACHE_ENOMEM;
  memcpy(copy, dir, len);
  copy[len] = '\0';
  narcache__free(f->store_dir);
  f->store_dir = copy;
  f->store_dir_len = len;
  return NARCACHE_OK;
}

/* An optionally negative decimal int32, nothing else. */
static int parse_priority(int32_t *out, const char *v, size_t len) {
  size_t i = 0;
  int negative = len > 0 && v[0] == '-';
  if (negative)
    i++;
  if (i == len)
    return -1;
  int64_t n = 0;
  for (; i < len; i++) {
    if (v[i] < '0' || v[i] > '9')
      return -1;
    n = n * 10 + (v[i] - '0');
    if (n > (int64_t)INT32_MAX + 1)
      return -1;
  }
  n = negative ? -n : n;
  if (n > INT32_MAX || n < INT32_MIN)
    return -1;
  *out = (int32_t)n;
  return 0;
}

typedef struct line_ctx {
  narcache_cache_info *ci;
  cache_info_fields *f;
  size_t line_no;
} line_ctx;

static int parse_value(line_ctx *c, const char *key, size_t key_len, const char *v,
                       size_t len) {
  cache_info_fields *f = c->f;
  if (key_len == 8 && memcmp(key, "StoreDir", 8) == 0) {
    if (f->store_dir != NULL)
      return fail(c->ci, "line %zu: StoreDir appears twice", c->line_no);
    if (!valid_store_dir(v, len))
      return fail(c->ci, "line %zu: StoreDir: expected an absolute path", c->line_no);
    return set_store_dir(f, v, len);
  }
  if (key_len == 13 && memcmp(key, "WantMassQuery", 13) == 0) {
    if (f->has_want_mass_query)
      return fail(c->ci, "line %zu: WantMassQuery appears twice", c->line_no);
    if (len != 1 || (v[0] != '0' && v[0] != '1'))
      return fail(c->ci, "line %zu: WantMassQuery: expected 0 or 1", c->line_no);
    f->has_want_mass_query = 1;
    f->want_mass_query = v[0] == '1';
    return NARCACHE_OK;
  }
  if (key_len == 8 && memcmp(key, "Priority", 8) == 0) {
    if (f->has_priority)
      return fail(c->ci, "line %zu: Priority appears twice", c->line_no);
    if (parse_priority(&f->priority, v, len) < 0)
      return fail(c->ci, "line %zu: Priority: expected a 32-bit integer", c->line_no);
    f->has_priority = 1;
    return NARCACHE_OK;
  }
  return NARCACHE_OK; /* unknown keys are for newer readers */
}

static int parse_line(line_ctx *c, const char *line, size_t len) {
  const char *colon = memchr(line, ':', len);
  if (colon == NULL)
    return NARCACHE_OK; /* Nix skips such lines */
  size_t key_len = (size_t)(colon - line);
  const char *v = colon + 1;
  size_t v_len = len - key_len - 1;
  while (v_len > 0 && is_blank(v[0])) {
    v++;
    v_len--;
  }
  while (v_len > 0 && is_blank(v[v_len - 1]))
    v_len--;
  return parse_value(c, line, key_len, v, v_len);
}

int narcache_cache_info_parse(narcache_cache_info *ci, const char *text, size_t len) {
  if (ci == NULL || (text == NULL && len != 0))
    return NARCACHE_EINVAL;
  ci->errmsg[0] = '\0';
  if (len > CACHE_INFO_MAX_BYTES) {
    fail(ci, "nix-cache-info is larger than %d bytes", CACHE_INFO_MAX_BYTES);
    return NARCACHE_ELIMIT;
  }
  if (len > 0 && memchr(text, '\0', len) != NULL)
    return fail(ci, "NUL byte at offset %zu", (size_t)((const char *)memchr(text, '\0', len) - text));
  cache_info_fields fresh;
  memset(&fresh, 0, sizeof fresh);
  line_ctx c = {ci, &fresh, 0};
  size_t pos = 0;
  int rc = NARCACHE_OK;
  while (rc == 0 && pos < len) {
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t end = nl != NULL ? (size_t)(nl - text) : len;
    c.line_no++;
    rc = parse_line(&c, text + pos, end - pos);
    pos = end + 1;
  }
  if (rc < 0) {
    fields_clear(&fresh);
    if (rc == NARCACHE_ENOMEM)
      fail(ci, "out of memory");
    return rc;
  }
  fields_clear(&ci->f);
  ci->f = fresh;
  return NARCACHE_OK;
}

int narcache_cache_info_format(char **out, size_t *out_len, const narcache_cache_info *ci) {
  if (out == NULL || ci == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  narcache__buf b = {0};
  char line[40];
  int rc = NARCACHE_OK;
  if (ci->f.store_dir != NULL) {
    if ((rc = narcache__buf_append_str(&b, "StoreDir: ")) == 0 &&
        (rc = narcache__buf_append(&b, ci->f.store_dir, ci->f.store_dir_len)) == 0)
      rc = narcache__buf_append(&b, "\n", 1);
  }
  if (rc == 0 && ci->f.has_want_mass_query) {
    snprintf(line, sizeof line, "WantMassQuery: %d\n", ci->f.want_mass_query);
    rc = narcache__buf_append_str(&b, line);
  }
  if (rc == 0 && ci->f.has_priority) {
    snprintf(line, sizeof line, "Priority: %" PRId32 "\n", ci->f.priority);
    rc = narcache__buf_append_str(&b, line);
  }
  if (rc == 0)
    rc = narcache__buf_take(&b, out, out_len);
  narcache__buf_free(&b);
  return rc;
}

const char *narcache_cache_info_store_dir(const narcache_cache_info *ci, size_t *len) {
  if (ci == NULL || ci->f.store_dir == NULL) {
    if (len != NULL)
      *len = 0;
    return NULL;
  }
  if (len != NULL)
    *len = ci->f.store_dir_len;
  return ci->f.store_dir;
}

int narcache_cache_info_set_store_dir(narcache_cache_info *ci, const char *dir, size_t len) {
  if (ci == NULL)
    return NARCACHE_EINVAL;
  ci->errmsg[0] = '\0';
  if (dir == NULL) {
    narcache__free(ci->f.store_dir);
    ci->f.store_dir = NULL;
    ci->f.store_dir_len = 0;
    return NARCACHE_OK;
  }
  if (!valid_store_dir(dir, len))
    return fail(ci, "StoreDir: expected an absolute path");
  return set_store_dir(&ci->f, dir, len);
}

int narcache_cache_info_want_mass_query(const narcache_cache_info *ci, int *out) {
  if (ci == NULL || out == NULL)
    return NARCACHE_EINVAL;
  if (!ci->f.has_want_mass_query)
    return NARCACHE_ENOTFOUND;
  *out = ci->f.want_mass_query;
  return NARCACHE_OK;
}

int narcache_cache_info_set_want_mass_query(narcache_cache_info *ci, int present, int value) {
  if (ci == NULL)
    return NARCACHE_EINVAL;
  ci->f.has_want_mass_query = present != 0;
  ci->f.want_mass_query = present && value != 0;
  return NARCACHE_OK;
}

int narcache_cache_info_priority(const narcache_cache_info *ci, int32_t *out) {
  if (ci == NULL || out == NULL)
    return NARCACHE_EINVAL;
  if (!ci->f.has_priority)
    return NARCACHE_ENOTFOUND;
  *out = ci->f.priority;
  return NARCACHE_OK;
}

int narcache_cache_info_set_priority(narcache_cache_info *ci, int present, int32_t priority) {
  if (ci == NULL)
    return NARCACHE_EINVAL;
  ci->f.has_priority = present != 0;
  ci->f.priority = present ? priority : 0;
  return NARCACHE_OK;
}
