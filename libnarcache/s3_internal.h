/* Internal interface of the S3 modules: AWS Signature Version 4.
 * Not installed. The signer follows AWS's published specification
 * ("Create a signed AWS API request") and is checked against AWS's
 * signing test suite (tests/data/sigv4/). */
#ifndef NARCACHE_S3_INTERNAL_H
#define NARCACHE_S3_INTERNAL_H

#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "buffer_internal.h"
#include "narcache/store.h"

/* One request header, not NUL-terminated. */
typedef struct narcache__s3_field {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} narcache__s3_field;

/* What is signed of a request. */
typedef struct narcache__sigv4_request {
  const char *method; /* "GET", "PUT", ... */
  /* The path as bytes, before any escaping (an S3 object key is taken as
   * is; the signer escapes every byte outside A-Za-z0-9-._~ and '/'):
   * absolute ('/' first), or empty for "/". */
  const char *path;
  size_t path_len;
  /* The query as sent, without '?': name[=value] pairs joined by '&', in
   * any order, with or without %XX escapes. May be NULL. */
  const char *query;
  size_t query_len;
  /* Every header to sign (Host and X-Amz-Date included), in any order and
   * case; repeated names are joined with ',' in the order given. */
  const narcache__s3_field *headers;
  size_t n_headers;
  /* Lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD". */
  const char *payload_hash;
  /* Remove "." and ".." segments and empty segments first, as AWS
   * services other than S3 do. S3 signs the path exactly as given: 0. */
  int normalize_path;
} narcache__sigv4_request;

/* Every function below appends to its output buffers and leaves a NUL
 * after their bytes (not counted in len), so they are also C strings. */

/* Who signs, for which region and service, and when. */
typedef struct narcache__sigv4_scope {
  const char *access_key;
  const char *secret_key;
  const char *region;
  const char *service;  /* "s3" */
  char amz_date[17];    /* YYYYMMDDTHHMMSSZ, see narcache__sigv4_amz_date */
} narcache__sigv4_scope;

/* Format `t` (UTC) as X-Amz-Date wants it: "20150830T123600Z". */
void narcache__sigv4_amz_date(char out[17], time_t t);

/* Append `len` bytes percent-encoded as SigV4 wants them: A-Za-z0-9-._~
 * stay, `keep_slash` keeps '/', every other byte becomes %XX (uppercase).
 * 0 or NARCACHE_ENOMEM. */
int narcache__sigv4_uri_encode(narcache__buf *out, const char *data, size_t len, int keep_slash);

/* The canonical request of `r` into `out`, and the signed-header list
 * ("host;x-amz-date") into `signed_headers` (either may be NULL).
 * 0, NARCACHE_ENOMEM or NARCACHE_EINVAL (no method or hash, a relative
 * path). */
int narcache__sigv4_canonical_request(narcache__buf *out, narcache__buf *signed_headers,
                                      const narcache__sigv4_request *r);

/* The string to sign for a canonical request. 0 or NARCACHE_ENOMEM. */
int narcache__sigv4_string_to_sign(narcache__buf *out, const narcache__sigv4_scope *s,
                                   const char *canonical, size_t canonical_len);

/* Longest secret key accepted (AWS's are 40 characters). */
#define NARCACHE__SIGV4_SECRET_MAX 256

/* The derived signing key of `s` (secret, date, region, service).
 * 0 or NARCACHE_EINVAL (secret longer than NARCACHE__SIGV4_SECRET_MAX). */
int narcache__sigv4_signing_key(uint8_t key[32], const narcache__sigv4_scope *s);

/* The value of the Authorization header for `r`:
 * "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...".
 * 0, NARCACHE_ENOMEM or NARCACHE_EINVAL. */
int narcache__sigv4_authorization(narcache__buf *out, const narcache__sigv4_request *r,
                                  const narcache__sigv4_scope *s);

/* A presigned query string for `r` (whose query holds only the request's
 * own parameters): the canonical query with X-Amz-Algorithm,
 * X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-Security-Token (when
 * `session_token` is not NULL) and X-Amz-SignedHeaders, then
 * "&X-Amz-Signature=<hex>". `canonical` (may be NULL) receives the
 * canonical request that was signed.
 * 0, NARCACHE_ENOMEM or NARCACHE_EINVAL. */
int narcache__sigv4_presign(narcache__buf *out, narcache__buf *canonical,
                            const narcache__sigv4_request *r, const narcache__sigv4_scope *s,
                            const char *session_token, uint32_t expires_seconds);

/* ---- the s3 store's configuration (s3_config.c) ------------------------- */

/* Strings are owned (narcache__malloc) and freed by _config_free. */
typedef struct narcache__s3_config {
  char *scheme;   /* "http" or "https" */
  char *host;     /* host[:port] of the endpoint */
  char *redirect_scheme, *redirect_host; /* the endpoint as clients reach it */
  char *ca_file;                         /* NULL: the system's certificates */
  uint32_t redirect_expires_s;
  char *bucket;
  char *prefix;   /* "" or "dir/sub/" */
  char *region;
  int virtual_host;
  int insecure_tls;
  char *access_key, *secret_key, *session_token;
  uint32_t connect_timeout_ms, request_timeout_ms, stall_timeout_ms, max_attempts;
  uint32_t cache_ttl_ms, negative_ttl_ms, cache_entries, max_connections;
  uint64_t multipart_threshold, part_size;
  unsigned flags;
} narcache__s3_config;

/* Merge o->url and the other options into `c` (zeroed by the caller).
 * 0; NARCACHE_EINVAL with a message in o->error; NARCACHE_ENOMEM. On
 * failure `c` may hold parts: free it all the same. */
int narcache__s3_config_init(narcache__s3_config *c, const narcache_s3_options *o);

/* Release the strings (secrets wiped first). */
void narcache__s3_config_free(narcache__s3_config *c);

/* ---- the metadata cache (s3_cache.c) -------------------------------------- */

typedef struct narcache__s3_cache_entry {
  struct narcache__s3_cache_entry *next; /* in its hash bucket */
  int kind;                 /* 0: slot unused */
  char name[40];
  uint64_t expires_ms;
  char *data; /* NULL: known absent */
  size_t len;
} narcache__s3_cache_entry;

typedef struct narcache__s3_cache {
  pthread_mutex_t lock;
  narcache__s3_cache_entry *slots; /* reused in turn: the oldest insertion goes first */
  size_t n_slots, next_victim;
  narcache__s3_cache_entry **buckets;
  size_t n_buckets;
} narcache__s3_cache;


/* `entries` slots (0: a cache that keeps nothing). 0 or NARCACHE_ENOMEM
 * (then destroy it all the same). */
int narcache__s3_cache_init(narcache__s3_cache *c, uint32_t entries);
void narcache__s3_cache_destroy(narcache__s3_cache *c);

/* 1 when a fresh answer is cached: *present, and a copy of the object in
 * *data (NUL-terminated, narcache__free; NULL when absent); 0 otherwise. */
int narcache__s3_cache_get(narcache__s3_cache *c, int kind, const char *name, size_t len,
                           char **data, size_t *data_len, int *present);

/* Remember `data` (NULL: absent) for ttl_ms. Best effort. */
void narcache__s3_cache_put(narcache__s3_cache *c, int kind, const char *name, size_t len,
                            const char *data, size_t data_len, uint32_t ttl_ms);

#endif
