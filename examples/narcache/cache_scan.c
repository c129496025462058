/* For store paths the Nix database does not list: find their references
 * the way Nix's scanner does (any store path hash part appearing in the
 * NAR bytes), and read their NAR through a dumper. */
#define _GNU_SOURCE
#include "cache_scan.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

static int is_nix32(unsigned char c) {
  return c != 0 && memchr("0123456789abcdfghijklmnpqrsvwxyz", c, 32) != NULL;
}

static int cmp_entry(const void *a, const void *b) {
  return memcmp(((const scan_entry *)a)->base, ((const scan_entry *)b)->base, 32);
}

int scan_set_load(scan_set *set, const char *store_dir) {
  memset(set, 0, sizeof *set);
  DIR *d = opendir(store_dir);
  if (d == NULL)
    return -1;
  size_t cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name);
    if (narcache_store_path_parse_base(NULL, e->d_name, len, NULL) < 0)
      continue;
    if (set->count == cap) {
      cap = cap ? cap * 2 : 1024;
      scan_entry *grown = realloc(set->entries, cap * sizeof *grown);
      if (grown == NULL) {
        closedir(d);
        return -1;
      }
      set->entries = grown;
    }
    set->entries[set->count].base = strdup(e->d_name);
    if (set->entries[set->count].base == NULL) {
      closedir(d);
      return -1;
    }
    set->count++;
  }
  closedir(d);
  qsort(set->entries, set->count, sizeof *set->entries, cmp_entry);
  return 0;
}

void scan_set_free(scan_set *set) {
  for (size_t i = 0; i < set->count; i++)
    free(set->entries[i].base);
  free(set->entries);
  memset(set, 0, sizeof *set);
}

static const scan_entry *lookup(const scan_set *set, const unsigned char *hash) {
  size_t lo = 0, hi = set->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = memcmp(set->entries[mid].base, hash, 32);
    if (c == 0)
      return &set->entries[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

int ref_scan_init(ref_scan *s, const scan_set *set) {
  memset(s, 0, sizeof *s);
  s->set = set;
  s->found = calloc(set->count > 0 ? set->count : 1, 1);
  return s->found == NULL ? -1 : 0;
}

void ref_scan_free(ref_scan *s) {
  free(s->found);
  memset(s, 0, sizeof *s);
}

/* Every 32-byte window of nix32 characters in buf[0, len) whose start is
 * before `limit`. Skips ahead past any other byte, as Nix does. */
static void scan_windows(ref_scan *s, const unsigned char *buf, size_t len, size_t limit) {
  size_t i = 0;
  while (i + 32 <= len && i < limit) {
    size_t j = 32;
    while (j > 0 && is_nix32(buf[i + j - 1]))
      j--;
    if (j > 0) {
      i += j; /* buf[i + j - 1] cannot be inside any hash */
      continue;
    }
    const scan_entry *e = lookup(s->set, buf + i);
    if (e != NULL)
      s->found[e - s->set->entries] = 1;
    i++;
  }
}

void ref_scan_feed(ref_scan *s, const void *data, size_t len) {
  const unsigned char *p = data;
  /* Windows that start in the saved tail and end in the new data. */
  unsigned char joint[31 + 31];
  size_t take = len < 31 ? len : 31;
  memcpy(joint, s->tail, s->tail_len);
  memcpy(joint + s->tail_len, p, take);
  scan_windows(s, joint, s->tail_len + take, s->tail_len);
  scan_windows(s, p, len, len);
  /* Keep the last 31 bytes seen: a hash may continue in the next chunk. */
  if (len >= 31) {
    memcpy(s->tail, p + len - 31, 31);
    s->tail_len = 31;
  } else {
    size_t keep = s->tail_len + len > 31 ? 31 - len : s->tail_len;
    memmove(s->tail, s->tail + s->tail_len - keep, keep);
    memcpy(s->tail + keep, p, len);
    s->tail_len = keep + len;
  }
}

int ref_scan_add_found(const ref_scan *s, narcache_narinfo *ni) {
  for (size_t i = 0; i < s->set->count; i++) {
    if (!s->found[i])
      continue;
    const char *base = s->set->entries[i].base;
    if (narcache_narinfo_add_reference(ni, base, strlen(base)) < 0)
      return -1;
  }
  return 0;
}

/* ---- a reader over a dumper ------------------------------------------ */

typedef struct dumper_reader {
  narcache_nar_dumper *d;
  uint64_t pos;
} dumper_reader;

static int dumper_read(void *ctx, uint64_t offset, void *buf, size_t len, size_t *got) {
  dumper_reader *r = ctx;
  if (offset != r->pos) {
    if (narcache_nar_dumper_seek(r->d, offset) < 0)
      return NARCACHE_EIO;
    r->pos = offset;
  }
  narcache_outbuf out = {buf, len, 0};
  int rc = narcache_nar_dumper_read(r->d, &out);
  *got = out.pos;
  r->pos += out.pos;
  return rc < 0 || out.pos == 0 ? NARCACHE_EIO : NARCACHE_OK;
}

static void dumper_close(void *ctx) {
  dumper_reader *r = ctx;
  narcache_nar_dumper_free(r->d);
  free(r);
}

int dumper_reader_open(narcache_reader *out, const char *path, char **listing, size_t *listing_len) {
  dumper_reader *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NARCACHE_ENOMEM;
  int rc = narcache_nar_dumper_new(&r->d);
  if (rc == 0)
    rc = narcache_nar_dumper_open(r->d, NARCACHE_AT_FDCWD, path);
  if (rc == 0)
    rc = narcache_nar_dumper_listing(listing, listing_len, r->d);
  if (rc < 0) {
    narcache_nar_dumper_free(r->d);
    free(r);
    return rc;
  }
  memset(out, 0, sizeof *out);
  out->version = NARCACHE_READER_VERSION;
  out->size = narcache_nar_dumper_size(r->d);
  out->fd = -1;
  out->read = dumper_read;
  out->close = dumper_close;
  out->ctx = r;
  return NARCACHE_OK;
}
