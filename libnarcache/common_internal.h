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

/* Store `offset` into an optional error-offset out-parameter. */
static inline void narcache__set_offset(size_t *err_offset, size_t offset) {
  if (err_offset != NULL)
    *err_offset = offset;
}

#endif
