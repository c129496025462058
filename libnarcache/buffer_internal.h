/* A growable byte buffer for the library's own use. Not installed. */
#ifndef NARCACHE_BUFFER_INTERNAL_H
#define NARCACHE_BUFFER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct narcache__buf {
  char *data;
  size_t len;
  size_t cap;
} narcache__buf;

/* Make room for `extra` more bytes. 0 or NARCACHE_ENOMEM. */
int narcache__buf_reserve(narcache__buf *b, size_t extra);
/* Append bytes. 0 or NARCACHE_ENOMEM. */
int narcache__buf_append(narcache__buf *b, const void *data, size_t len);
int narcache__buf_append_str(narcache__buf *b, const char *s);
/* Drop the first `n` bytes (consumed by a reader). */
void narcache__buf_consume(narcache__buf *b, size_t n);
/* Hand the contents to the caller as a NUL-terminated string allocated
 * with narcache__malloc; the buffer is left empty. 0 or NARCACHE_ENOMEM. */
int narcache__buf_take(narcache__buf *b, char **out, size_t *len_out);
void narcache__buf_free(narcache__buf *b);

#endif
