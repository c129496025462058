/* Version, errors, allocator hook and the init refcount. */
#include "common_internal.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- version ------------------------------------------------------------ */

unsigned int narcache_version(void) { return NARCACHE_VERSION_HEX; }

const char *narcache_version_string(void) { return NARCACHE_VERSION_STRING; }

/* ---- errors ------------------------------------------------------------- */

const char *narcache_strerror(int code) {
  switch (code) {
  case NARCACHE_OK:
    return "success";
#define NARCACHE_STRERROR_CASE_(name, value, text)                            \
  case NARCACHE_##name:                                                       \
    return text;
    NARCACHE_ERRNO_MAP(NARCACHE_STRERROR_CASE_)
#undef NARCACHE_STRERROR_CASE_
  default:
    return "unknown error";
  }
}

const char *narcache_errname(int code) {
  switch (code) {
  case NARCACHE_OK:
    return "OK";
#define NARCACHE_ERRNAME_CASE_(name, value, text)                             \
  case NARCACHE_##name:                                                       \
    return #name;
    NARCACHE_ERRNO_MAP(NARCACHE_ERRNAME_CASE_)
#undef NARCACHE_ERRNAME_CASE_
  default:
    return "UNKNOWN";
  }
}

/* ---- allocator ---------------------------------------------------------- */

static void *libc_malloc(void *ctx, size_t size) {
  (void)ctx;
  return malloc(size);
}

static void *libc_realloc(void *ctx, void *p, size_t size) {
  (void)ctx;
  return realloc(p, size);
}

static void libc_free(void *ctx, void *p) {
  (void)ctx;
  free(p);
}

static const narcache_allocator libc_allocator = {
    NARCACHE_ALLOCATOR_VERSION, libc_malloc, libc_realloc, libc_free, NULL};

static narcache_allocator current_allocator = {
    NARCACHE_ALLOCATOR_VERSION, libc_malloc, libc_realloc, libc_free, NULL};

/* Number of allocations handed out and not yet freed. Memory must go back
 * to the allocator that produced it, hence the refusal to switch while any
 * is outstanding. */
static atomic_size_t live_allocations;

int narcache_set_allocator(const narcache_allocator *a) {
  if (a != NULL && (a->version != NARCACHE_ALLOCATOR_VERSION ||
                    a->malloc_fn == NULL || a->realloc_fn == NULL ||
                    a->free_fn == NULL))
    return NARCACHE_EINVAL;
  if (atomic_load(&live_allocations) != 0)
    return NARCACHE_EMISUSE;
  current_allocator = a != NULL ? *a : libc_allocator;
  return NARCACHE_OK;
}

void *narcache__malloc(size_t size) {
  void *p = current_allocator.malloc_fn(current_allocator.ctx,
                                        size != 0 ? size : 1);
  if (p != NULL)
    atomic_fetch_add(&live_allocations, 1);
  return p;
}

void *narcache__calloc(size_t count, size_t size) {
  if (size != 0 && count > SIZE_MAX / size)
    return NULL;
  void *p = narcache__malloc(count * size);
  if (p != NULL)
    memset(p, 0, count * size);
  return p;
}

void *narcache__realloc(void *p, size_t size) {
  if (p == NULL)
    return narcache__malloc(size);
  return current_allocator.realloc_fn(current_allocator.ctx, p,
                                      size != 0 ? size : 1);
}

void narcache__free(void *p) {
  if (p == NULL)
    return;
  current_allocator.free_fn(current_allocator.ctx, p);
  atomic_fetch_sub(&live_allocations, 1);
}

void narcache_free(void *p) { narcache__free(p); }

/* ---- init --------------------------------------------------------------- */

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_count;

int narcache_init(void) {
  int result;
  pthread_mutex_lock(&init_lock);
  if (init_count == 0 && sodium_init() < 0) {
    result = NARCACHE_ECRYPTO;
  } else {
    result = ++init_count;
  }
  pthread_mutex_unlock(&init_lock);
  return result;
}

int narcache_shutdown(void) {
  int result;
  pthread_mutex_lock(&init_lock);
  if (init_count == 0) {
    result = NARCACHE_EMISUSE;
  } else {
    result = --init_count;
  }
  pthread_mutex_unlock(&init_lock);
  return result;
}
