/* Internal helpers shared by the library's modules. Not installed. */
#ifndef NARCACHE_COMMON_INTERNAL_H
#define NARCACHE_COMMON_INTERNAL_H

#include "narcache/common.h"

/* Allocation through the user's allocator. Every live allocation is counted
 * so that narcache_set_allocator() can refuse while memory is outstanding. */
void *narcache__malloc(size_t size);
void *narcache__calloc(size_t count, size_t size);
void *narcache__realloc(void *p, size_t size);
void narcache__free(void *p);

/* Check printf-style arguments of the library's message formatters. */
#if defined(__GNUC__) || defined(__clang__)
#define NARCACHE_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define NARCACHE_PRINTF(fmt, args)
#endif

/* The value of a hexadecimal digit (either case), or -1. */
int narcache__hex_value(unsigned char c);

/* Percent-decode [in, in + len) into `out` (room for len bytes): "%XX"
 * with two hexadecimal digits becomes that byte, anything else (a lone or
 * malformed '%' included) stays as it is. Returns the decoded length. */
size_t narcache__percent_decode(char *out, const char *in, size_t len);

/* Store `offset` into an optional error-offset out-parameter. */
static inline void narcache__set_offset(size_t *err_offset, size_t offset) {
  if (err_offset != NULL)
    *err_offset = offset;
}

#endif
