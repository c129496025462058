/* Access tokens: the token file parser, the constant-time check and the
 * Authorization header's credential. See auth.h. */
#define _GNU_SOURCE
#include "narcache/auth.h"
#include "narcache/hash.h"
#include "common_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAME_MAX_LEN 64
#define TOKEN_MIN_LEN 16
#define TOKEN_MAX_LEN 256
#define DIGEST_LEN 32

typedef struct token_entry {
  char name[NAME_MAX_LEN + 1];
  int scope;
  uint8_t digest[DIGEST_LEN]; /* SHA-256 of the token: never the token itself */
} token_entry;

struct narcache_tokens {
  token_entry *entries;
  size_t count, cap;
};

NARCACHE_PRINTF(3, 4)
static int parse_error(char *err, size_t err_size, const char *fmt, ...) {
  if (err != NULL && err_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
  }
  return NARCACHE_EINVAL;
}

static int name_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '.' || ch == '_' || ch == '@' || ch == '-';
}

static int blank(char ch) { return ch == ' ' || ch == '\t' || ch == '\r'; }

/* The next whitespace-separated field of [*p, end), or an empty span. A
 * `#` at the start of a field begins a comment: the rest is ignored. */
static size_t next_field(const char **p, const char *end, const char **field) {
  const char *s = *p;
  while (s < end && blank(*s))
    s++;
  if (s < end && *s == '#')
    s = end;
  const char *e = s;
  while (e < end && !blank(*e))
    e++;
  *field = s;
  *p = e;
  return (size_t)(e - s);
}

static void digest_of(uint8_t out[DIGEST_LEN], const char *token, size_t len) {
  narcache_hash h;
  (void)narcache_hash_buffer(&h, NARCACHE_HASH_SHA256, token, len);
  memcpy(out, h.digest, DIGEST_LEN);
  sodium_memzero(&h, sizeof h);
}

static int add_entry(narcache_tokens *t, const token_entry *e) {
  if (t->count == t->cap) {
    size_t cap = t->cap == 0 ? 8 : t->cap * 2;
    token_entry *grown = narcache__realloc(t->entries, cap * sizeof *grown);
    if (grown == NULL)
      return NARCACHE_ENOMEM;
    t->entries = grown;
    t->cap = cap;
  }
  t->entries[t->count++] = *e;
  return NARCACHE_OK;
}

/* One non-empty line: NAME SCOPE TOKEN. */
static int parse_line(narcache_tokens *t, const char *p, const char *end, size_t line_no,
                      char *err, size_t err_size) {
  const char *name, *scope, *token, *extra;
  size_t name_len = next_field(&p, end, &name);
  if (name_len == 0)
    return NARCACHE_OK; /* blank or comment */
  size_t scope_len = next_field(&p, end, &scope);
  size_t token_len = next_field(&p, end, &token);
  if (token_len == 0 || next_field(&p, end, &extra) != 0)
    return parse_error(err, err_size, "line %zu: expected NAME SCOPE TOKEN", line_no);
  if (name_len > NAME_MAX_LEN)
    return parse_error(err, err_size, "line %zu: name longer than %d characters", line_no,
                       NAME_MAX_LEN);
  for (size_t i = 0; i < name_len; i++)
    if (!name_char(name[i]))
      return parse_error(err, err_size, "line %zu: name may only have A-Z a-z 0-9 . _ @ -",
                         line_no);
  token_entry e;
  memset(&e, 0, sizeof e);
  if (scope_len == 4 && memcmp(scope, "read", 4) == 0)
    e.scope = NARCACHE_SCOPE_READ;
  else if (scope_len == 5 && memcmp(scope, "write", 5) == 0)
    e.scope = NARCACHE_SCOPE_WRITE;
  else
    return parse_error(err, err_size, "line %zu: scope must be 'read' or 'write'", line_no);
  if (token_len < TOKEN_MIN_LEN || token_len > TOKEN_MAX_LEN)
    return parse_error(err, err_size, "line %zu: a token has %d to %d characters", line_no,
                       TOKEN_MIN_LEN, TOKEN_MAX_LEN);
  for (size_t i = 0; i < token_len; i++)
    if ((unsigned char)token[i] < 0x21 || (unsigned char)token[i] > 0x7e)
      return parse_error(err, err_size, "line %zu: a token is printable ASCII", line_no);
  memcpy(e.name, name, name_len);
  digest_of(e.digest, token, token_len);
  for (size_t i = 0; i < t->count; i++) {
    if (strcmp(t->entries[i].name, e.name) == 0)
      return parse_error(err, err_size, "line %zu: name '%s' used twice", line_no, e.name);
    if (sodium_memcmp(t->entries[i].digest, e.digest, DIGEST_LEN) == 0)
      return parse_error(err, err_size, "line %zu: the same token as '%s'", line_no,
                         t->entries[i].name);
  }
  int rc = add_entry(t, &e);
  sodium_memzero(&e, sizeof e);
  return rc;
}

int narcache_tokens_parse(narcache_tokens **out, const char *text, size_t len, char *err,
                          size_t err_size) {
  if (out == NULL || (text == NULL && len > 0))
    return NARCACHE_EINVAL;
  *out = NULL;
  if (len > NARCACHE_TOKENS_MAX_BYTES) {
    if (err != NULL && err_size > 0)
      snprintf(err, err_size, "token file larger than %u bytes", NARCACHE_TOKENS_MAX_BYTES);
    return NARCACHE_ELIMIT;
  }
  narcache_tokens *t = narcache__calloc(1, sizeof *t);
  if (t == NULL)
    return NARCACHE_ENOMEM;
  const char *p = text, *end = text + len;
  size_t line_no = 0;
  int rc = NARCACHE_OK;
  while (rc == NARCACHE_OK && p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = nl != NULL ? nl : end;
    line_no++;
    if (memchr(p, '\0', (size_t)(line_end - p)) != NULL)
      rc = parse_error(err, err_size, "line %zu: NUL byte", line_no);
    else
      rc = parse_line(t, p, line_end, line_no, err, err_size);
    p = nl != NULL ? nl + 1 : end;
  }
  if (rc != NARCACHE_OK) {
    narcache_tokens_free(t);
    return rc;
  }
  *out = t;
  return NARCACHE_OK;
}

int narcache_tokens_load(narcache_tokens **out, const char *path, char *err, size_t err_size) {
  if (out == NULL || path == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    if (err != NULL && err_size > 0)
      snprintf(err, err_size, "%s: %s", path, strerror(errno));
    return NARCACHE_EIO;
  }
  char *text = narcache__malloc(NARCACHE_TOKENS_MAX_BYTES + 1);
  if (text == NULL) {
    close(fd);
    return NARCACHE_ENOMEM;
  }
  size_t len = 0;
  int rc = NARCACHE_OK;
  for (;;) {
    ssize_t n = read(fd, text + len, NARCACHE_TOKENS_MAX_BYTES + 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      if (err != NULL && err_size > 0)
        snprintf(err, err_size, "%s: %s", path, strerror(errno));
      rc = NARCACHE_EIO;
      break;
    }
    if (n == 0 || (len += (size_t)n) > NARCACHE_TOKENS_MAX_BYTES)
      break;
  }
  close(fd);
  if (rc == NARCACHE_OK)
    rc = narcache_tokens_parse(out, text, len, err, err_size);
  sodium_memzero(text, len < NARCACHE_TOKENS_MAX_BYTES + 1 ? len : NARCACHE_TOKENS_MAX_BYTES + 1);
  narcache__free(text);
  return rc;
}

int narcache_tokens_check(const narcache_tokens *t, const char *credential, size_t len,
                          const char **name) {
  if (name != NULL)
    *name = NULL;
  if (t == NULL || credential == NULL || len == 0 || len > TOKEN_MAX_LEN)
    return NARCACHE_SCOPE_NONE;
  uint8_t digest[DIGEST_LEN];
  digest_of(digest, credential, len);
  /* Visit every entry and compare all of each digest: which one matches
   * (if any) must not change the time taken. */
  int scope = NARCACHE_SCOPE_NONE;
  size_t match = 0;
  for (size_t i = 0; i < t->count; i++) {
    size_t equal = (size_t)(sodium_memcmp(t->entries[i].digest, digest, DIGEST_LEN) == 0);
    size_t take = (size_t)0 - equal; /* all ones on a match */
    scope = (int)(((size_t)t->entries[i].scope & take) | ((size_t)scope & ~take));
    match = (i & take) | (match & ~take);
  }
  sodium_memzero(digest, sizeof digest);
  if (name != NULL)
    *name = scope != NARCACHE_SCOPE_NONE ? t->entries[match].name : NULL;
  return scope;
}

size_t narcache_tokens_count(const narcache_tokens *t) { return t == NULL ? 0 : t->count; }

void narcache_tokens_free(narcache_tokens *t) {
  if (t == NULL)
    return;
  if (t->entries != NULL)
    sodium_memzero(t->entries, t->cap * sizeof *t->entries);
  narcache__free(t->entries);
  narcache__free(t);
}

static int prefix_nocase(const char *value, size_t len, const char *scheme) {
  size_t n = strlen(scheme);
  return len > n && strncasecmp(value, scheme, n) == 0 && value[n] == ' ';
}

static int copy_credential(char *out, size_t out_size, const char *p, size_t len) {
  if (len == 0 || memchr(p, '\0', len) != NULL)
    return NARCACHE_EINVAL;
  if (len >= out_size || len > (size_t)INT32_MAX)
    return NARCACHE_EBUFS;
  memcpy(out, p, len);
  out[len] = '\0';
  return (int)len;
}

int narcache_auth_credential(char *out, size_t out_size, const char *value, size_t len) {
  if (out == NULL || out_size == 0 || value == NULL)
    return NARCACHE_EINVAL;
  out[0] = '\0';
  int bearer = prefix_nocase(value, len, "Bearer");
  if (!bearer && !prefix_nocase(value, len, "Basic"))
    return NARCACHE_EINVAL;
  size_t start = bearer ? 7 : 6, end = len;
  while (start < end && value[start] == ' ')
    start++;
  while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
    end--;
  if (bearer)
    return copy_credential(out, out_size, value + start, end - start);
  /* Basic: base64 of USER:PASSWORD; the password is the token */
  uint8_t decoded[1024];
  size_t decoded_len = 0;
  if (narcache_base64_decode(decoded, sizeof decoded, &decoded_len, value + start, end - start,
                             NULL) != 0)
    return NARCACHE_EINVAL;
  const uint8_t *colon = memchr(decoded, ':', decoded_len);
  int rc = colon == NULL ? NARCACHE_EINVAL
                         : copy_credential(out, out_size, (const char *)colon + 1,
                                           decoded_len - (size_t)(colon + 1 - decoded));
  sodium_memzero(decoded, sizeof decoded);
  return rc;
}
