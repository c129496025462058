/* A small, short-lived memory cache of narinfo and nix-cache-info answers
 * (positive and "absent"), consulted on the loop thread before a request
 * goes to the threadpool.
 *
 * Why: a Nix client fleet asks for the same narinfos again and again, and
 * each trip to the store costs two thread hand-offs; answering from memory
 * takes microseconds. Why it is safe: entries live at most
 * NARCACHE_OPT_MEMORY_CACHE_MS (default 1 s), far below the max-age the
 * responses themselves allow clients to cache; an upload through this
 * server drops the entry at once (narcache__srv_cache_forget).
 *
 * Direct-mapped: a slot per hash of (kind, name); a collision replaces the
 * older entry. Only objects up to SRV_CACHE_MAX_OBJECT bytes, and no more
 * than the byte budget in all. */
#define _GNU_SOURCE
#include "server_internal.h"

#include <string.h>

#define SLOTS 8192 /* a power of two */

typedef struct cache_slot {
  uint64_t hash;
  uint64_t expires_ms;
  char *data; /* NULL: "absent" */
  uint32_t len;
  uint8_t kind;
  uint8_t used;
  uint8_t name_len;
  char name[SRV_CACHE_MAX_NAME];
} cache_slot;

struct srv_cache {
  cache_slot slots[SLOTS];
  size_t bytes;
  size_t budget;
};

static uint64_t key_hash(int kind, const char *name, size_t len) {
  uint64_t h = 1469598103934665603ull ^ (uint64_t)kind; /* FNV-1a */
  for (size_t i = 0; i < len; i++)
    h = (h ^ (unsigned char)name[i]) * 1099511628211ull;
  return h;
}

srv_cache *narcache__srv_cache_new(size_t budget) {
  srv_cache *c = narcache__calloc(1, sizeof *c);
  if (c != NULL)
    c->budget = budget;
  return c;
}

static void drop(srv_cache *c, cache_slot *s) {
  if (s->data != NULL) {
    c->bytes -= s->len;
    narcache__free(s->data);
  }
  s->data = NULL;
  s->used = 0;
}

void narcache__srv_cache_free(srv_cache *c) {
  if (c == NULL)
    return;
  for (size_t i = 0; i < SLOTS; i++)
    drop(c, &c->slots[i]);
  narcache__free(c);
}

static cache_slot *slot_of(srv_cache *c, int kind, const char *name, size_t len, uint64_t *hash) {
  *hash = key_hash(kind, name, len);
  return &c->slots[*hash & (SLOTS - 1)];
}

int narcache__srv_cache_get(srv_cache *c, int kind, const char *name, size_t len, uint64_t now_ms,
                            const char **data, size_t *data_len) {
  if (c == NULL || len > SRV_CACHE_MAX_NAME)
    return SRV_CACHE_MISS;
  uint64_t hash;
  cache_slot *s = slot_of(c, kind, name, len, &hash);
  if (!s->used || s->hash != hash || s->kind != kind || s->name_len != len ||
      memcmp(s->name, name, len) != 0)
    return SRV_CACHE_MISS;
  if (now_ms >= s->expires_ms) {
    drop(c, s);
    return SRV_CACHE_MISS;
  }
  if (s->data == NULL)
    return SRV_CACHE_ABSENT;
  *data = s->data;
  *data_len = s->len;
  return SRV_CACHE_HIT;
}

void narcache__srv_cache_put(srv_cache *c, int kind, const char *name, size_t len,
                             const char *data, size_t data_len, uint64_t expires_ms) {
  if (c == NULL || len > SRV_CACHE_MAX_NAME || data_len > SRV_CACHE_MAX_OBJECT)
    return;
  uint64_t hash;
  cache_slot *s = slot_of(c, kind, name, len, &hash);
  drop(c, s);
  char *copy = NULL;
  if (data != NULL) {
    if (c->bytes + data_len > c->budget || (copy = narcache__malloc(data_len ? data_len : 1)) == NULL)
      return;
    memcpy(copy, data, data_len);
    c->bytes += data_len;
  }
  s->hash = hash;
  s->expires_ms = expires_ms;
  s->data = copy;
  s->len = (uint32_t)data_len;
  s->kind = (uint8_t)kind;
  s->name_len = (uint8_t)len;
  memcpy(s->name, name, len);
  s->used = 1;
}

void narcache__srv_cache_forget(srv_cache *c, int kind, const char *name, size_t len) {
  if (c == NULL || len > SRV_CACHE_MAX_NAME)
    return;
  uint64_t hash;
  cache_slot *s = slot_of(c, kind, name, len, &hash);
  if (s->used && s->hash == hash)
    drop(c, s);
}
