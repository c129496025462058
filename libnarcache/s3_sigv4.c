/* AWS Signature Version 4: canonical request, string to sign, signing key,
 * Authorization header and presigned query strings.
 *
 * Everything is built into growable buffers from caller-owned inputs; no
 * state is kept between calls. HMAC-SHA256 and SHA-256 come from libsodium
 * (the inputs are short: headers, not bodies). */
#define _POSIX_C_SOURCE 200809L /* gmtime_r */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common_internal.h"
#include "s3_internal.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"

static const char hex_upper[] = "0123456789ABCDEF";
static const char hex_lower[] = "0123456789abcdef";

void narcache__sigv4_amz_date(char out[17], time_t t) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static int is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

int narcache__sigv4_uri_encode(narcache__buf *out, const char *data, size_t len, int keep_slash) {
  if (narcache__buf_reserve(out, len * 3 + 1) != 0)
    return NARCACHE_ENOMEM;
  char *p = out->data + out->len;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)data[i];
    if (is_unreserved(c) || (keep_slash && c == '/')) {
      *p++ = (char)c;
    } else {
      *p++ = '%';
      *p++ = hex_upper[c >> 4];
      *p++ = hex_upper[c & 15];
    }
  }
  out->len = (size_t)(p - out->data);
  out->data[out->len] = '\0';
  return NARCACHE_OK;
}

/* Outputs are also C strings (header values, URLs): keep a NUL after the
 * bytes, not counted in len. */
static int terminate(narcache__buf *b, int rc) {
  if (rc != 0 || b == NULL)
    return rc;
  if (narcache__buf_reserve(b, 1) != 0)
    return NARCACHE_ENOMEM;
  b->data[b->len] = '\0';
  return NARCACHE_OK;
}

static void hex_lower_encode(char *out, const uint8_t *bytes, size_t n) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex_lower[bytes[i] >> 4];
    out[2 * i + 1] = hex_lower[bytes[i] & 15];
  }
  out[2 * n] = '\0';
}

static void hmac_sha256(uint8_t out[32], const void *key, size_t key_len, const void *msg,
                        size_t msg_len) {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key, key_len);
  crypto_auth_hmacsha256_update(&st, msg, msg_len);
  crypto_auth_hmacsha256_final(&st, out);
  sodium_memzero(&st, sizeof st);
}

/* ---- path ---------------------------------------------------------------- */

/* Append the path with "." / ".." / empty segments removed; a trailing
 * slash (or a final "." or "..") is kept as one '/'. */
static int append_normalized_path(narcache__buf *out, const char *path, size_t len) {
  /* Segment starts and lengths; a path has at most len/2+1 segments. */
  size_t cap = len / 2 + 1, n = 0;
  size_t *seg_at = narcache__malloc(2 * cap * sizeof *seg_at);
  if (seg_at == NULL)
    return NARCACHE_ENOMEM;
  size_t *seg_len = seg_at + cap;
  size_t i = 0;
  while (i < len) {
    size_t start = i;
    while (i < len && path[i] != '/')
      i++;
    size_t l = i - start;
    if (l == 0 || (l == 1 && path[start] == '.')) {
      /* dropped */
    } else if (l == 2 && path[start] == '.' && path[start + 1] == '.') {
      if (n > 0)
        n--;
    } else {
      seg_at[n] = start;
      seg_len[n] = l;
      n++;
    }
    if (i < len)
      i++;
  }
  /* "/a/b/", "/a/b/." and "/a/b/c/.." all end in a directory. */
  int trailing = path[len - 1] == '/' || (len >= 2 && memcmp(path + len - 2, "/.", 2) == 0) ||
                 (len >= 3 && memcmp(path + len - 3, "/..", 3) == 0);
  int rc = narcache__buf_append(out, "/", 1);
  for (size_t k = 0; rc == 0 && k < n; k++) {
    if (k > 0)
      rc = narcache__buf_append(out, "/", 1);
    if (rc == 0)
      rc = narcache__sigv4_uri_encode(out, path + seg_at[k], seg_len[k], 0);
  }
  if (rc == 0 && trailing && n > 0)
    rc = narcache__buf_append(out, "/", 1);
  narcache__free(seg_at);
  return rc == 0 ? NARCACHE_OK : NARCACHE_ENOMEM;
}

static int append_canonical_path(narcache__buf *out, const narcache__sigv4_request *r) {
  if (r->path_len == 0)
    return narcache__buf_append(out, "/", 1) == 0 ? NARCACHE_OK : NARCACHE_ENOMEM;
  if (r->normalize_path)
    return append_normalized_path(out, r->path, r->path_len);
  return narcache__sigv4_uri_encode(out, r->path, r->path_len, 1);
}

/* ---- query --------------------------------------------------------------- */

/* Decode %XX escapes (others stay literal), then re-encode canonically. */
static int append_reencoded(narcache__buf *out, const char *s, size_t len) {
  char *decoded = narcache__malloc(len + 1);
  if (decoded == NULL)
    return NARCACHE_ENOMEM;
  size_t n = narcache__percent_decode(decoded, s, len);
  int rc = narcache__sigv4_uri_encode(out, decoded, n, 0);
  narcache__free(decoded);
  return rc;
}

typedef struct query_param {
  char *text; /* "key=value", canonically encoded */
  size_t key_len;
  size_t len;
} query_param;

static int compare_params(const void *a, const void *b) {
  const query_param *x = a, *y = b;
  size_t kl = x->key_len < y->key_len ? x->key_len : y->key_len;
  int c = memcmp(x->text, y->text, kl);
  if (c != 0)
    return c;
  if (x->key_len != y->key_len)
    return x->key_len < y->key_len ? -1 : 1;
  size_t xv = x->len - x->key_len, yv = y->len - y->key_len;
  size_t vl = xv < yv ? xv : yv;
  c = memcmp(x->text + x->key_len, y->text + y->key_len, vl);
  if (c != 0)
    return c;
  return xv < yv ? -1 : xv > yv;
}

static size_t count_params(const char *q, size_t len) {
  size_t n = 1;
  for (size_t i = 0; i < len; i++)
    n += q[i] == '&';
  return n;
}

/* The canonical query: every name=value pair re-encoded, sorted by name
 * then value; a pair without '=' has an empty value. */
static int append_canonical_query(narcache__buf *out, const char *q, size_t len) {
  if (q == NULL || len == 0)
    return NARCACHE_OK;
  size_t cap = count_params(q, len), n = 0;
  query_param *params = narcache__calloc(cap, sizeof *params);
  if (params == NULL)
    return NARCACHE_ENOMEM;
  int rc = NARCACHE_OK;
  size_t i = 0;
  while (rc == 0 && i <= len) {
    size_t start = i;
    while (i < len && q[i] != '&')
      i++;
    size_t end = i++;
    if (end == start)
      continue;
    const char *eq = memchr(q + start, '=', end - start);
    size_t key_end = eq != NULL ? (size_t)(eq - q) : end;
    narcache__buf one = {0};
    rc = append_reencoded(&one, q + start, key_end - start);
    size_t key_len = one.len;
    if (rc == 0)
      rc = narcache__buf_append(&one, "=", 1);
    if (rc == 0 && eq != NULL)
      rc = append_reencoded(&one, eq + 1, end - key_end - 1);
    if (rc == 0)
      rc = narcache__buf_take(&one, &params[n].text, &params[n].len);
    narcache__buf_free(&one);
    if (rc == 0)
      params[n++].key_len = key_len;
  }
  if (rc == 0)
    qsort(params, n, sizeof *params, compare_params);
  for (size_t k = 0; rc == 0 && k < n; k++) {
    if (k > 0 && narcache__buf_append(out, "&", 1) != 0)
      rc = NARCACHE_ENOMEM;
    else if (narcache__buf_append(out, params[k].text, params[k].len) != 0)
      rc = NARCACHE_ENOMEM;
  }
  for (size_t k = 0; k < n; k++)
    narcache__free(params[k].text);
  narcache__free(params);
  return rc;
}

/* ---- headers ------------------------------------------------------------- */

typedef struct header_ref {
  const narcache__s3_field *field;
  size_t order;
} header_ref;

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int compare_names(const narcache__s3_field *a, const narcache__s3_field *b) {
  size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
  for (size_t i = 0; i < n; i++) {
    int x = lower((unsigned char)a->name[i]), y = lower((unsigned char)b->name[i]);
    if (x != y)
      return x < y ? -1 : 1;
  }
  return a->name_len < b->name_len ? -1 : a->name_len > b->name_len;
}

static int compare_headers(const void *a, const void *b) {
  const header_ref *x = a, *y = b;
  int c = compare_names(x->field, y->field);
  if (c != 0)
    return c;
  return x->order < y->order ? -1 : x->order > y->order; /* stable */
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* The value trimmed, with every run of whitespace (folded lines included)
 * turned into one space. */
static int append_header_value(narcache__buf *out, const char *v, size_t len) {
  size_t i = 0, end = len;
  while (i < end && is_space(v[i]))
    i++;
  while (end > i && is_space(v[end - 1]))
    end--;
  if (narcache__buf_reserve(out, end - i + 1) != 0)
    return NARCACHE_ENOMEM;
  char *p = out->data + out->len;
  while (i < end) {
    if (is_space(v[i])) {
      *p++ = ' ';
      while (i < end && is_space(v[i]))
        i++;
    } else {
      *p++ = v[i++];
    }
  }
  out->len = (size_t)(p - out->data);
  out->data[out->len] = '\0';
  return NARCACHE_OK;
}

static int append_lower(narcache__buf *out, const char *s, size_t len) {
  if (narcache__buf_reserve(out, len + 1) != 0)
    return NARCACHE_ENOMEM;
  for (size_t i = 0; i < len; i++)
    out->data[out->len + i] = (char)lower((unsigned char)s[i]);
  out->len += len;
  out->data[out->len] = '\0';
  return NARCACHE_OK;
}

/* "name:value\n" per distinct name into `out`, "a;b" into `names`. */
static int append_canonical_headers(narcache__buf *out, narcache__buf *names,
                                    const narcache__s3_field *h, size_t n) {
  header_ref *refs = narcache__calloc(n ? n : 1, sizeof *refs);
  if (refs == NULL)
    return NARCACHE_ENOMEM;
  for (size_t i = 0; i < n; i++)
    refs[i] = (header_ref){&h[i], i};
  qsort(refs, n, sizeof *refs, compare_headers);
  int rc = NARCACHE_OK;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const narcache__s3_field *f = refs[i].field;
    int same_as_previous = i > 0 && compare_names(refs[i - 1].field, f) == 0;
    if (same_as_previous) {
      rc = narcache__buf_append(out, ",", 1);
    } else {
      if (i > 0)
        rc = narcache__buf_append(out, "\n", 1);
      if (rc == 0)
        rc = append_lower(out, f->name, f->name_len);
      if (rc == 0)
        rc = narcache__buf_append(out, ":", 1);
      if (rc == 0 && names->len > 0)
        rc = narcache__buf_append(names, ";", 1);
      if (rc == 0)
        rc = append_lower(names, f->name, f->name_len);
    }
    if (rc == 0)
      rc = append_header_value(out, f->value, f->value_len);
  }
  if (rc == 0 && n > 0)
    rc = narcache__buf_append(out, "\n", 1);
  narcache__free(refs);
  return rc == 0 ? NARCACHE_OK : NARCACHE_ENOMEM;
}

/* ---- the request --------------------------------------------------------- */

int narcache__sigv4_canonical_request(narcache__buf *out, narcache__buf *signed_headers,
                                      const narcache__sigv4_request *r) {
  if (r->method == NULL || r->payload_hash == NULL || (r->path_len > 0 && r->path[0] != '/'))
    return NARCACHE_EINVAL; /* an absolute path, or none ("/") */
  narcache__buf creq = {0}, names = {0};
  int rc = narcache__buf_append_str(&creq, r->method) == 0 &&
                   narcache__buf_append(&creq, "\n", 1) == 0
               ? append_canonical_path(&creq, r)
               : NARCACHE_ENOMEM;
  if (rc == 0)
    rc = narcache__buf_append(&creq, "\n", 1) == 0
             ? append_canonical_query(&creq, r->query, r->query_len)
             : NARCACHE_ENOMEM;
  if (rc == 0)
    rc = narcache__buf_append(&creq, "\n", 1) == 0
             ? append_canonical_headers(&creq, &names, r->headers, r->n_headers)
             : NARCACHE_ENOMEM;
  if (rc == 0 && (narcache__buf_append(&creq, "\n", 1) != 0 ||
                  narcache__buf_append(&creq, names.data ? names.data : "", names.len) != 0 ||
                  narcache__buf_append(&creq, "\n", 1) != 0 ||
                  narcache__buf_append_str(&creq, r->payload_hash) != 0))
    rc = NARCACHE_ENOMEM;
  if (rc == 0 && out != NULL && narcache__buf_append(out, creq.data, creq.len) != 0)
    rc = NARCACHE_ENOMEM;
  if (rc == 0 && signed_headers != NULL &&
      narcache__buf_append(signed_headers, names.data ? names.data : "", names.len) != 0)
    rc = NARCACHE_ENOMEM;
  narcache__buf_free(&creq);
  narcache__buf_free(&names);
  rc = terminate(out, rc);
  return terminate(signed_headers, rc);
}

/* "20150830/us-east-1/service/aws4_request" */
static int append_credential_scope(narcache__buf *out, const narcache__sigv4_scope *s) {
  if (narcache__buf_append(out, s->amz_date, 8) != 0 || narcache__buf_append(out, "/", 1) != 0 ||
      narcache__buf_append_str(out, s->region) != 0 || narcache__buf_append(out, "/", 1) != 0 ||
      narcache__buf_append_str(out, s->service) != 0 ||
      narcache__buf_append_str(out, "/aws4_request") != 0)
    return NARCACHE_ENOMEM;
  return NARCACHE_OK;
}

int narcache__sigv4_string_to_sign(narcache__buf *out, const narcache__sigv4_scope *s,
                                   const char *canonical, size_t canonical_len) {
  uint8_t digest[crypto_hash_sha256_BYTES];
  char digest_hex[2 * crypto_hash_sha256_BYTES + 1];
  crypto_hash_sha256(digest, (const unsigned char *)canonical, canonical_len);
  hex_lower_encode(digest_hex, digest, sizeof digest);
  if (narcache__buf_append_str(out, SIGV4_ALGORITHM "\n") != 0 ||
      narcache__buf_append(out, s->amz_date, 16) != 0 || narcache__buf_append(out, "\n", 1) != 0 ||
      append_credential_scope(out, s) != 0 || narcache__buf_append(out, "\n", 1) != 0 ||
      narcache__buf_append_str(out, digest_hex) != 0)
    return NARCACHE_ENOMEM;
  return terminate(out, NARCACHE_OK);
}

int narcache__sigv4_signing_key(uint8_t key[32], const narcache__sigv4_scope *s) {
  /* HMAC's first key is "AWS4" + secret, contiguous. */
  uint8_t first[4 + NARCACHE__SIGV4_SECRET_MAX];
  size_t secret_len = strlen(s->secret_key);
  if (secret_len > NARCACHE__SIGV4_SECRET_MAX)
    return NARCACHE_EINVAL;
  memcpy(first, "AWS4", 4);
  memcpy(first + 4, s->secret_key, secret_len);
  uint8_t k[32];
  hmac_sha256(k, first, 4 + secret_len, s->amz_date, 8);
  sodium_memzero(first, sizeof first);
  hmac_sha256(k, k, 32, s->region, strlen(s->region));
  hmac_sha256(k, k, 32, s->service, strlen(s->service));
  hmac_sha256(key, k, 32, "aws4_request", 12);
  sodium_memzero(k, sizeof k);
  return NARCACHE_OK;
}

static int sign_canonical(char signature[65], const narcache__sigv4_scope *s, const char *creq,
                          size_t creq_len) {
  narcache__buf sts = {0};
  int rc = narcache__sigv4_string_to_sign(&sts, s, creq, creq_len);
  if (rc == 0) {
    uint8_t key[32], mac[32];
    rc = narcache__sigv4_signing_key(key, s);
    if (rc == 0) {
      hmac_sha256(mac, key, sizeof key, sts.data, sts.len);
      hex_lower_encode(signature, mac, sizeof mac);
    }
    sodium_memzero(key, sizeof key);
  }
  narcache__buf_free(&sts);
  return rc;
}

int narcache__sigv4_authorization(narcache__buf *out, const narcache__sigv4_request *r,
                                  const narcache__sigv4_scope *s) {
  narcache__buf creq = {0}, names = {0};
  char signature[65];
  int rc = narcache__sigv4_canonical_request(&creq, &names, r);
  if (rc == 0)
    rc = sign_canonical(signature, s, creq.data, creq.len);
  if (rc == 0 &&
      (narcache__buf_append_str(out, SIGV4_ALGORITHM " Credential=") != 0 ||
       narcache__buf_append_str(out, s->access_key) != 0 ||
       narcache__buf_append(out, "/", 1) != 0 || append_credential_scope(out, s) != 0 ||
       narcache__buf_append_str(out, ", SignedHeaders=") != 0 ||
       narcache__buf_append(out, names.data ? names.data : "", names.len) != 0 ||
       narcache__buf_append_str(out, ", Signature=") != 0 ||
       narcache__buf_append_str(out, signature) != 0))
    rc = NARCACHE_ENOMEM;
  narcache__buf_free(&creq);
  narcache__buf_free(&names);
  return terminate(out, rc);
}

/* The request's own query plus the X-Amz-* parameters of a presigned URL
 * (not yet the signature), in any order: the canonical form sorts them. */
static int build_presign_query(narcache__buf *q, const narcache__sigv4_request *r,
                               const narcache__sigv4_scope *s, const char *session_token,
                               uint32_t expires, const char *signed_names, size_t names_len) {
  char expires_text[16];
  snprintf(expires_text, sizeof expires_text, "%u", (unsigned)expires);
  narcache__buf credential = {0};
  int rc = NARCACHE_OK;
  if (narcache__buf_append_str(&credential, s->access_key) != 0 ||
      narcache__buf_append(&credential, "/", 1) != 0 || append_credential_scope(&credential, s) != 0)
    rc = NARCACHE_ENOMEM;
  if (rc == 0 && r->query != NULL && r->query_len > 0 &&
      (narcache__buf_append(q, r->query, r->query_len) != 0 || narcache__buf_append(q, "&", 1) != 0))
    rc = NARCACHE_ENOMEM;
  if (rc == 0 && (narcache__buf_append_str(q, "X-Amz-Algorithm=" SIGV4_ALGORITHM
                                              "&X-Amz-Credential=") != 0 ||
                  narcache__sigv4_uri_encode(q, credential.data, credential.len, 0) != 0 ||
                  narcache__buf_append_str(q, "&X-Amz-Date=") != 0 ||
                  narcache__buf_append(q, s->amz_date, 16) != 0 ||
                  narcache__buf_append_str(q, "&X-Amz-Expires=") != 0 ||
                  narcache__buf_append_str(q, expires_text) != 0))
    rc = NARCACHE_ENOMEM;
  if (rc == 0 && session_token != NULL &&
      (narcache__buf_append_str(q, "&X-Amz-Security-Token=") != 0 ||
       narcache__sigv4_uri_encode(q, session_token, strlen(session_token), 0) != 0))
    rc = NARCACHE_ENOMEM;
  if (rc == 0 && (narcache__buf_append_str(q, "&X-Amz-SignedHeaders=") != 0 ||
                  narcache__sigv4_uri_encode(q, signed_names, names_len, 0) != 0))
    rc = NARCACHE_ENOMEM;
  narcache__buf_free(&credential);
  return rc;
}

int narcache__sigv4_presign(narcache__buf *out, narcache__buf *canonical,
                            const narcache__sigv4_request *r, const narcache__sigv4_scope *s,
                            const char *session_token, uint32_t expires_seconds) {
  narcache__buf names = {0}, query = {0}, creq = {0}, canonical_query = {0};
  char signature[65];
  int rc = narcache__sigv4_canonical_request(NULL, &names, r);
  if (rc == 0)
    rc = build_presign_query(&query, r, s, session_token, expires_seconds,
                             names.data ? names.data : "", names.len);
  if (rc == 0) {
    narcache__sigv4_request signed_request = *r;
    signed_request.query = query.data;
    signed_request.query_len = query.len;
    rc = narcache__sigv4_canonical_request(&creq, NULL, &signed_request);
  }
  if (rc == 0)
    rc = sign_canonical(signature, s, creq.data, creq.len);
  if (rc == 0)
    rc = append_canonical_query(&canonical_query, query.data, query.len);
  if (rc == 0 && (narcache__buf_append(out, canonical_query.data, canonical_query.len) != 0 ||
                  narcache__buf_append_str(out, "&X-Amz-Signature=") != 0 ||
                  narcache__buf_append_str(out, signature) != 0))
    rc = NARCACHE_ENOMEM;
  if (rc == 0 && canonical != NULL && narcache__buf_append(canonical, creq.data, creq.len) != 0)
    rc = NARCACHE_ENOMEM;
  narcache__buf_free(&names);
  narcache__buf_free(&query);
  narcache__buf_free(&creq);
  narcache__buf_free(&canonical_query);
  rc = terminate(out, rc);
  return terminate(canonical, rc);
}
