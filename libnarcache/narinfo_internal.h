/* Internal layout of a narinfo, shared by narinfo.c (parse, format, fields)
 * and narinfo_sign.c (fingerprint, sign, verify). Not installed. */
#ifndef NARCACHE_NARINFO_INTERNAL_H
#define NARCACHE_NARINFO_INTERNAL_H

#include "buffer_internal.h"
#include "narcache/hash.h"
#include "narcache/narinfo.h"

/* An owned string; s == NULL means absent. */
typedef struct narcache__str {
  char *s;
  size_t len;
} narcache__str;

/* A set of strings kept sorted bytewise, as Nix's std::set renders them. */
typedef struct narcache__strset {
  narcache__str *items;
  size_t count;
  size_t cap;
} narcache__strset;

/* Everything a narinfo says; swapped in whole after a successful parse so
 * that a failed parse leaves the previous contents alone. */
typedef struct narcache__narinfo_fields {
  narcache__str store_path;
  narcache__str url;
  narcache__str compression; /* absent = "bzip2" */
  narcache__str deriver;
  narcache__str system;
  narcache__str ca;
  int has_file_hash;
  narcache_hash file_hash;
  int has_file_size;
  uint64_t file_size;
  int has_nar_hash;
  narcache_hash nar_hash;
  uint64_t nar_size; /* 0 = not set */
  narcache__strset references; /* base names */
  narcache__strset sigs;
} narcache__narinfo_fields;

struct narcache_narinfo {
  char *store_dir;
  size_t store_dir_len;
  narcache__narinfo_fields f;
  size_t err_offset;
  char errmsg[256];
};

int narcache__strset_insert(narcache__strset *set, const char *s, size_t len);
void narcache__strset_clear(narcache__strset *set);

/* Append the fingerprint (spec §4.1) of `ni` to `out`.
 * 0; NARCACHE_EBADNARINFO (a signed field is missing); NARCACHE_ENOMEM. */
int narcache__narinfo_fingerprint(narcache__buf *out, const narcache_narinfo *ni);

#endif
