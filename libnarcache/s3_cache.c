/* The s3 store's metadata cache: narinfo and nix-cache-info answers (found
 * or absent) kept for a while, so that a storm of narinfo queries does not
 * become a storm of object-store requests. Fixed size: slots are reused in
 * turn, the oldest insertion first; chained hash buckets find them. One
 * lock; copies in and out, so nothing is shared with callers. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common_internal.h"
#include "s3_internal.h"
#include "s3_io_internal.h"

static size_t cache_hash(int kind, const char *name, size_t len) {
  uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
  for (size_t i = 0; i < len; i++)
    h = (h ^ (uint8_t)name[i]) * 1099511628211ull;
  return (size_t)h;
}

int narcache__s3_cache_init(narcache__s3_cache *c, uint32_t entries) {
  if (pthread_mutex_init(&c->lock, NULL) != 0)
    return NARCACHE_ENOMEM;
  c->n_slots = entries;
  c->n_buckets = entries > 0 ? (size_t)entries * 2 : 1;
  c->slots = narcache__calloc(c->n_slots ? c->n_slots : 1, sizeof *c->slots);
  c->buckets = narcache__calloc(c->n_buckets, sizeof *c->buckets);
  return c->slots != NULL && c->buckets != NULL ? NARCACHE_OK : NARCACHE_ENOMEM;
}

void narcache__s3_cache_destroy(narcache__s3_cache *c) {
  if (c->slots == NULL && c->buckets == NULL)
    return;
  for (size_t i = 0; c->slots != NULL && i < c->n_slots; i++)
    narcache__free(c->slots[i].data);
  narcache__free(c->slots);
  narcache__free(c->buckets);
  pthread_mutex_destroy(&c->lock);
}

static narcache__s3_cache_entry **cache_find_locked(narcache__s3_cache *c, int kind, const char *name, size_t len) {
  narcache__s3_cache_entry **p = &c->buckets[cache_hash(kind, name, len) % c->n_buckets];
  for (; *p != NULL; p = &(*p)->next)
    if ((*p)->kind == kind && strlen((*p)->name) == len && memcmp((*p)->name, name, len) == 0)
      return p;
  return p;
}

/* 1 with a copy in *data (NULL: known absent), 0 if not cached or expired. */
int narcache__s3_cache_get(narcache__s3_cache *c, int kind, const char *name, size_t len, char **data,
                     size_t *data_len, int *present) {
  if (c->n_slots == 0 || len >= sizeof c->slots[0].name)
    return 0;
  int hit = 0;
  pthread_mutex_lock(&c->lock);
  narcache__s3_cache_entry *e = *cache_find_locked(c, kind, name, len);
  if (e != NULL && e->expires_ms > narcache__s3_now_ms()) {
    *present = e->data != NULL;
    *data = NULL;
    *data_len = 0;
    hit = 1;
    if (e->data != NULL) {
      *data = narcache__malloc(e->len + 1);
      if (*data == NULL) {
        hit = 0;
      } else {
        memcpy(*data, e->data, e->len + 1);
        *data_len = e->len;
      }
    }
  }
  pthread_mutex_unlock(&c->lock);
  return hit;
}

static void cache_unlink_locked(narcache__s3_cache *c, narcache__s3_cache_entry *e) {
  narcache__s3_cache_entry **p = cache_find_locked(c, e->kind, e->name, strlen(e->name));
  if (*p == e)
    *p = e->next;
  narcache__free(e->data);
  memset(e, 0, sizeof *e);
}

/* Remember `data` (NULL: absent) for ttl_ms. Best effort: no memory, no entry. */
void narcache__s3_cache_put(narcache__s3_cache *c, int kind, const char *name, size_t len, const char *data,
                      size_t data_len, uint32_t ttl_ms) {
  if (c->n_slots == 0 || len >= sizeof c->slots[0].name)
    return;
  char *copy = NULL;
  if (data != NULL) {
    if ((copy = narcache__malloc(data_len + 1)) == NULL)
      return;
    memcpy(copy, data, data_len);
    copy[data_len] = '\0';
  }
  pthread_mutex_lock(&c->lock);
  narcache__s3_cache_entry **p = cache_find_locked(c, kind, name, len);
  narcache__s3_cache_entry *e = *p;
  if (e == NULL) {
    e = &c->slots[c->next_victim];
    c->next_victim = (c->next_victim + 1) % c->n_slots;
    if (e->kind != 0)
      cache_unlink_locked(c, e);
    p = cache_find_locked(c, kind, name, len); /* the chain may have changed */
    e->kind = kind;
    memcpy(e->name, name, len);
    e->name[len] = '\0';
    e->next = NULL;
    *p = e;
  } else {
    narcache__free(e->data);
  }
  e->data = copy;
  e->len = data_len;
  e->expires_ms = narcache__s3_now_ms() + ttl_ms;
  pthread_mutex_unlock(&c->lock);
}

