/* Growable byte buffer. */
#include "buffer_internal.h"
#include "common_internal.h"

#include <string.h>

int narcache__buf_reserve(narcache__buf *b, size_t extra) {
  if (extra <= b->cap - b->len)
    return NARCACHE_OK;
  if (extra > SIZE_MAX / 2 - b->len)
    return NARCACHE_ENOMEM;
  size_t want = b->len + extra;
  size_t cap = b->cap != 0 ? b->cap : 256;
  while (cap < want)
    cap *= 2;
  char *data = narcache__realloc(b->data, cap);
  if (data == NULL)
    return NARCACHE_ENOMEM;
  b->data = data;
  b->cap = cap;
  return NARCACHE_OK;
}

int narcache__buf_append(narcache__buf *b, const void *data, size_t len) {
  if (len == 0)
    return NARCACHE_OK;
  int rc = narcache__buf_reserve(b, len);
  if (rc < 0)
    return rc;
  memcpy(b->data + b->len, data, len);
  b->len += len;
  return NARCACHE_OK;
}

int narcache__buf_append_str(narcache__buf *b, const char *s) {
  return narcache__buf_append(b, s, strlen(s));
}

void narcache__buf_consume(narcache__buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

int narcache__buf_take(narcache__buf *b, char **out, size_t *len_out) {
  int rc = narcache__buf_reserve(b, 1);
  if (rc < 0)
    return rc;
  b->data[b->len] = '\0';
  *out = b->data;
  if (len_out != NULL)
    *len_out = b->len;
  b->data = NULL;
  b->len = b->cap = 0;
  return NARCACHE_OK;
}

void narcache__buf_free(narcache__buf *b) {
  narcache__free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
