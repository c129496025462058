/* Reference scanning and dumper-backed readers for `narcache cache add`
 * (paths that the Nix database does not list). */
#ifndef NARCACHE_CLI_CACHE_SCAN_H
#define NARCACHE_CLI_CACHE_SCAN_H

#include <narcache.h>

/* The store paths present in a store directory, sorted by hash part. */
typedef struct scan_entry {
  char *base; /* "<hash>-<name>" */
} scan_entry;

typedef struct scan_set {
  scan_entry *entries;
  size_t count;
} scan_set;

/* List the store directory. 0, or -1 (errno set). */
int scan_set_load(scan_set *set, const char *store_dir);
void scan_set_free(scan_set *set);

/* A scan over one NAR, fed in chunks of any size. */
typedef struct ref_scan {
  const scan_set *set;
  unsigned char *found; /* one flag per set entry */
  unsigned char tail[31];
  size_t tail_len;
} ref_scan;

int ref_scan_init(ref_scan *s, const scan_set *set);
void ref_scan_feed(ref_scan *s, const void *data, size_t len);
/* Add every store path whose hash part was seen as a reference of `ni`. */
int ref_scan_add_found(const ref_scan *s, narcache_narinfo *ni);
void ref_scan_free(ref_scan *s);

/* A reader producing the NAR of `path`, and its .ls listing (release the
 * listing with narcache_free). */
int dumper_reader_open(narcache_reader *out, const char *path, char **listing, size_t *listing_len);

#endif
