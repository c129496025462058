/* The s3 store backend: a binary cache in an S3-compatible bucket, laid out
 * as `nix copy --to s3://BUCKET` lays it out (PREFIX/nix-cache-info,
 * PREFIX/<hash>.narinfo, PREFIX/nar/<file>, ...), so buckets Nix wrote are
 * served as they are.
 *
 * Requests are signed with AWS Signature Version 4 (s3_sigv4.c) and carried
 * by the store's I/O thread (s3_io.c). The callbacks below run on the
 * caller's thread and wait, with deadlines, for the transfers they start:
 *  - narinfo and nix-cache-info are fetched whole, with retries, and kept in
 *    a small cache (found: cache_ttl, absent: negative_ttl) that our own
 *    uploads update at once;
 *  - NARs, listings and logs stream: the GET starts at open (its head gives
 *    the size), reads take the body as it arrives, and a read elsewhere
 *    (an HTTP Range) starts a ranged GET pinned to the same ETag. Over
 *    plain http that GET runs on a connection of our own (s3_stream.c) to
 *    the address libcurl last reached (no name lookup of ours), whose
 *    socket the server splices straight to its client; over https
 *    libcurl carries it, and the server sends from its receive ring
 *    (while the ring is empty, a WAIT segment lets its loop wait);
 *  - uploads up to 1 MiB are kept in memory and PUT at commit with a signed
 *    payload (retried); larger ones stream in one PUT, or as a multipart
 *    upload above the threshold, with bounded buffers. A narinfo is PUT
 *    last, after checking that the NAR it names exists: the narinfo PUT is
 *    the commit point, and S3 object PUTs are atomic.
 * A store that cannot be reached, or refuses our credentials, answers
 * NARCACHE_EUNAVAIL (HTTP 503), never NARCACHE_ENOTFOUND: a client must not
 * cache "absent" because the object store had a bad minute. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sodium.h>
#include <time.h>

#include "common_internal.h"
#include "narcache/narinfo.h"
#include "narcache/store.h"
#include "s3_internal.h"
#include "s3_io_internal.h"
#include "s3_stream_internal.h"
#include "store_internal.h"

#define SMALL_UPLOAD_MAX (1024 * 1024)
#define METADATA_MAX NARCACHE_NARINFO_MAX_BYTES
#define STREAM_RING (512 * 1024)
/* How long a segment call waits for ring bytes before answering WAIT to a
 * caller that takes it: a transfer keeping up never makes it wait
 * elsewhere, a slow one does not hold the caller's thread. */
#define SEGMENT_GRACE_MS 5
#define MAX_PARTS 10000
#define KEY_MAX 1100


static int cacheable(int kind) {
  return kind == NARCACHE_OBJECT_NARINFO || kind == NARCACHE_OBJECT_CACHE_INFO;
}

typedef struct s3_store {
  narcache__s3_config cfg;
  narcache__s3_io *io;
  narcache__s3_cache cache;
  atomic_int streams;      /* GETs of bodies on connections of our own */
  atomic_int streams_open; /* those connections, within cfg.max_connections */
} s3_store;

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

/* "nar/abc.nar.xz" for a NAR, "<hash>.narinfo", ... without the prefix. */
static int object_key(char *out, size_t size, int kind, const char *name, size_t len) {
  int n;
  switch (kind) {
  case NARCACHE_OBJECT_CACHE_INFO: n = snprintf(out, size, "nix-cache-info"); break;
  case NARCACHE_OBJECT_NARINFO: n = snprintf(out, size, "%.*s.narinfo", (int)len, name); break;
  case NARCACHE_OBJECT_LISTING: n = snprintf(out, size, "%.*s.ls", (int)len, name); break;
  case NARCACHE_OBJECT_NAR: n = snprintf(out, size, "nar/%.*s", (int)len, name); break;
  case NARCACHE_OBJECT_LOG: n = snprintf(out, size, "log/%.*s", (int)len, name); break;
  default: return NARCACHE_EINVAL;
  }
  return n > 0 && (size_t)n < size ? NARCACHE_OK : NARCACHE_ENOTFOUND;
}

typedef struct s3_call {
  const char *method;
  const char *key;   /* object key below the prefix; NULL: the bucket itself */
  const char *query; /* canonically encoded, or NULL */
  const narcache__s3_field *extra;
  size_t n_extra;
  const void *body; /* NULL with body_size > 0: streamed */
  uint64_t body_size;
  const char *payload_hash; /* NULL: UNSIGNED-PAYLOAD */
  size_t response_buffer;
  uint32_t total_timeout_ms;
  char *why; /* if not NULL: libcurl's message of a failed transfer */
  size_t why_size;
} s3_call;

static int slist_add(struct curl_slist **list, const char *name, const char *value) {
  char line[4096];
  int n = snprintf(line, sizeof line, "%s: %s", name, value);
  if (n < 0 || (size_t)n >= sizeof line)
    return NARCACHE_EINVAL;
  struct curl_slist *l = curl_slist_append(*list, line);
  if (l == NULL)
    return NARCACHE_ENOMEM;
  *list = l;
  return NARCACHE_OK;
}

/* The Host and the unescaped path of `key` (NULL: the bucket itself) at
 * endpoint host `base`, path-style or virtual-host. */
static int object_target(const narcache__s3_config *cfg, const char *base, const char *key, char *host,
                         size_t host_size, char *raw_path, size_t path_size) {
  int n = cfg->virtual_host ? snprintf(host, host_size, "%s.%s", cfg->bucket, base)
                            : snprintf(host, host_size, "%s", base);
  if (n < 0 || (size_t)n >= host_size)
    return NARCACHE_EINVAL;
  n = cfg->virtual_host
          ? snprintf(raw_path, path_size, "/%s%s", key ? cfg->prefix : "", key ? key : "")
          : snprintf(raw_path, path_size, "/%s%s%s%s", cfg->bucket, key ? "/" : "",
                     key ? cfg->prefix : "", key ? key : "");
  return n > 0 && (size_t)n < path_size ? NARCACHE_OK : NARCACHE_ENOTFOUND;
}

/* A request, signed: its headers and where it goes. The fields point into
 * this struct, the call and the configuration. */
typedef struct signed_call {
  char host[512];
  narcache__sigv4_scope scope;
  narcache__s3_field fields[12];
  size_t n_fields;
  narcache__buf auth;   /* the Authorization value */
  narcache__buf target; /* the encoded path and query */
} signed_call;

static void signed_call_free(signed_call *sc) {
  narcache__buf_free(&sc->auth);
  narcache__buf_free(&sc->target);
}

static int sign_call(const s3_store *s, const s3_call *call, signed_call *sc) {
  const narcache__s3_config *cfg = &s->cfg;
  memset(sc, 0, sizeof *sc);
  char raw_path[KEY_MAX + 300];
  int rc = object_target(cfg, cfg->host, call->key, sc->host, sizeof sc->host, raw_path,
                         sizeof raw_path);
  if (rc < 0)
    return rc;
  sc->scope = (narcache__sigv4_scope){.access_key = cfg->access_key,
                                      .secret_key = cfg->secret_key,
                                      .region = cfg->region,
                                      .service = "s3"};
  narcache__sigv4_amz_date(sc->scope.amz_date, time(NULL));
  const char *payload = call->payload_hash ? call->payload_hash : "UNSIGNED-PAYLOAD";
  narcache__s3_field *f = sc->fields;
  size_t nf = 0;
  f[nf++] = (narcache__s3_field){"Host", 4, sc->host, strlen(sc->host)};
  f[nf++] = (narcache__s3_field){"x-amz-date", 10, sc->scope.amz_date, 16};
  f[nf++] = (narcache__s3_field){"x-amz-content-sha256", 20, payload, strlen(payload)};
  if (cfg->session_token != NULL)
    f[nf++] = (narcache__s3_field){"x-amz-security-token", 20, cfg->session_token,
                                   strlen(cfg->session_token)};
  for (size_t i = 0; i < call->n_extra && nf < 12; i++)
    f[nf++] = call->extra[i];
  sc->n_fields = nf;
  narcache__sigv4_request req = {.method = call->method,
                                 .path = raw_path,
                                 .path_len = strlen(raw_path),
                                 .query = call->query,
                                 .query_len = call->query ? strlen(call->query) : 0,
                                 .headers = f,
                                 .n_headers = nf,
                                 .payload_hash = payload};
  rc = narcache__sigv4_authorization(&sc->auth, &req, &sc->scope);
  if (rc == 0 && (narcache__sigv4_uri_encode(&sc->target, raw_path, strlen(raw_path), 1) != 0 ||
                  (call->query != NULL && (narcache__buf_append(&sc->target, "?", 1) != 0 ||
                                           narcache__buf_append_str(&sc->target, call->query) != 0)) ||
                  narcache__buf_append(&sc->target, "", 1) != 0))
    rc = NARCACHE_ENOMEM;
  if (rc < 0)
    signed_call_free(sc);
  return rc;
}

/* Sign and start one request on the I/O thread (libcurl). */
static int s3_start(s3_store *s, const s3_call *call, narcache__s3_xfer **out) {
  const narcache__s3_config *cfg = &s->cfg;
  signed_call sc;
  int rc = sign_call(s, call, &sc);
  if (rc < 0)
    return rc;
  narcache__buf url = {0};
  if (narcache__buf_append_str(&url, cfg->scheme) != 0 ||
      narcache__buf_append_str(&url, "://") != 0 || narcache__buf_append_str(&url, sc.host) != 0 ||
      narcache__buf_append_str(&url, sc.target.data) != 0 || narcache__buf_append(&url, "", 1) != 0)
    rc = NARCACHE_ENOMEM;
  struct curl_slist *headers = NULL;
  for (size_t i = 0; rc == 0 && i < sc.n_fields; i++) {
    char name[64], value[2048];
    if (sc.fields[i].name_len >= sizeof name || sc.fields[i].value_len >= sizeof value) {
      rc = NARCACHE_EINVAL;
      break;
    }
    memcpy(name, sc.fields[i].name, sc.fields[i].name_len);
    name[sc.fields[i].name_len] = '\0';
    memcpy(value, sc.fields[i].value, sc.fields[i].value_len);
    value[sc.fields[i].value_len] = '\0';
    rc = slist_add(&headers, name, value);
  }
  if (rc == 0)
    rc = slist_add(&headers, "Authorization", sc.auth.data);
  if (rc == 0) { /* no 100-continue round trip, no form content type */
    struct curl_slist *l = curl_slist_append(headers, "Expect:");
    if (l != NULL && call->body_size > 0 && strcmp(call->method, "POST") == 0 &&
        (l = curl_slist_append(l, "Content-Type: application/xml")) == NULL)
      rc = NARCACHE_ENOMEM;
    else if (l == NULL)
      rc = NARCACHE_ENOMEM;
    else
      headers = l;
  }
  if (rc == 0) {
    narcache__s3_request r = {.method = call->method,
                              .url = url.data,
                              .body = call->body,
                              .body_size = call->body_size,
                              .request_buffer = STREAM_RING,
                              .response_buffer = call->response_buffer,
                              .connect_timeout_ms = cfg->connect_timeout_ms,
                              .stall_timeout_ms = cfg->stall_timeout_ms,
                              .total_timeout_ms = call->total_timeout_ms,
                              .insecure_tls = cfg->insecure_tls,
                              .ca_file = cfg->ca_file};
    rc = narcache__s3_xfer_start(out, s->io, &r, headers);
    headers = NULL;
  }
  curl_slist_free_all(headers);
  signed_call_free(&sc);
  narcache__buf_free(&url);
  return rc;
}

static int append_line(narcache__buf *b, const char *name, size_t name_len, const char *value,
                       size_t value_len) {
  if (memchr(value, '\r', value_len) != NULL || memchr(value, '\n', value_len) != NULL)
    return NARCACHE_EINVAL; /* a header may not smuggle in another */
  return narcache__buf_append(b, name, name_len) != 0 || narcache__buf_append(b, ": ", 2) != 0 ||
                 narcache__buf_append(b, value, value_len) != 0 ||
                 narcache__buf_append(b, "\r\n", 2) != 0
             ? NARCACHE_ENOMEM
             : NARCACHE_OK;
}

/* Sign a body-less request and send it on a connection of our own (plain
 * http only: see s3_stream_internal.h); wait for the response head. */
static int s3_stream_start(s3_store *s, const s3_call *call, const char *ip, long port,
                           uint64_t deadline_ms, narcache__s3_stream **out) {
  signed_call sc;
  int rc = sign_call(s, call, &sc);
  if (rc < 0)
    return rc;
  narcache__buf req = {0};
  if (narcache__buf_append_str(&req, call->method) != 0 || narcache__buf_append(&req, " ", 1) != 0 ||
      narcache__buf_append_str(&req, sc.target.data) != 0 ||
      narcache__buf_append_str(&req, " HTTP/1.1\r\n") != 0)
    rc = NARCACHE_ENOMEM;
  for (size_t i = 0; rc == 0 && i < sc.n_fields; i++)
    rc = append_line(&req, sc.fields[i].name, sc.fields[i].name_len, sc.fields[i].value,
                     sc.fields[i].value_len);
  if (rc == 0)
    rc = append_line(&req, "Authorization", 13, sc.auth.data, strlen(sc.auth.data));
  if (rc == 0 && narcache__buf_append_str(&req, "Connection: close\r\n\r\n") != 0)
    rc = NARCACHE_ENOMEM;
  if (rc == 0)
    rc = narcache__s3_stream_get(out, ip, port, req.data, req.len, s->cfg.connect_timeout_ms,
                                 deadline_ms);
  signed_call_free(&sc);
  narcache__buf_free(&req);
  return rc;
}

/* What an error status means to a caller of the store. */
static int status_result(long status) {
  if (status == 404)
    return NARCACHE_ENOTFOUND;
  if (status == 401 || status == 403 || status == 408 || status == 429 || status >= 500)
    return NARCACHE_EUNAVAIL; /* never "absent": see the top of the file */
  return NARCACHE_EIO;
}

static int retryable(int rc, long status) {
  return rc == NARCACHE_EUNAVAIL && status != 401 && status != 403;
}

/* Sleep before attempt `attempt` + 1: 50 ms doubling, with jitter, at least
 * what Retry-After asked (capped at 2 s). 0 (no sleep) when the pause would
 * reach the deadline: no time is left for another try. */
static int backoff(uint32_t attempt, uint32_t retry_after_s, uint64_t deadline_ms) {
  uint64_t ms = 50u << (attempt < 6 ? attempt - 1 : 5);
  ms += randombytes_uniform((uint32_t)ms);
  if (retry_after_s > 0 && ms < (uint64_t)retry_after_s * 1000u)
    ms = (uint64_t)retry_after_s * 1000u;
  if (ms > 2000)
    ms = 2000;
  if (narcache__s3_now_ms() + ms + 10 >= deadline_ms)
    return 0;
  struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
  return 1;
}

/* One whole exchange with a body in memory either way: the response body
 * (up to `max` bytes, 200 only) lands in *body if `body` is not NULL.
 * Retried on 5xx, 429, timeouts and failed connections. 0 when the
 * response was 2xx; else the mapped status (ENOTFOUND, EUNAVAIL, EIO). */
static int s3_exchange(s3_store *s, const s3_call *call, size_t max, char **body,
                       size_t *body_len, long *status_out, narcache__s3_head *head_out) {
  if (body != NULL) {
    *body = NULL;
    *body_len = 0;
  }
  int rc = NARCACHE_EUNAVAIL;
  long status = 0;
  /* One budget for all the attempts: a caller waits request_timeout_ms at
   * most, however many tries fit in it. */
  uint64_t deadline = narcache__s3_now_ms() + s->cfg.request_timeout_ms;
  for (uint32_t attempt = 1; attempt <= s->cfg.max_attempts; attempt++) {
    narcache__s3_xfer *x = NULL;
    narcache__s3_head head = {0};
    status = 0;
    rc = s3_start(s, call, &x);
    if (rc < 0)
      return rc;
    narcache__buf got = {0};
    rc = narcache__s3_xfer_wait_head(x, deadline, &status);
    if (rc == 0) {
      narcache__s3_xfer_head(x, &head);
      if (status >= 200 && status < 300 && body != NULL) {
        uint8_t chunk[16384];
        size_t n = 0;
        while ((rc = narcache__s3_xfer_read(x, chunk, sizeof chunk, &n, deadline)) == 0 && n > 0) {
          if (got.len + n > max) {
            rc = NARCACHE_ELIMIT;
            break;
          }
          if (narcache__buf_append(&got, chunk, n) != 0) {
            rc = NARCACHE_EUNAVAIL;
            break;
          }
        }
      } else if (rc == 0) {
        rc = narcache__s3_xfer_wait_done(x, deadline, &status);
      }
    }
    if (rc == 0 && (status < 200 || status >= 300))
      rc = status_result(status);
    if (rc < 0 && call->why != NULL && call->why_size > 0)
      snprintf(call->why, call->why_size, "%s", narcache__s3_xfer_curl_error(x));
    narcache__s3_xfer_free(x);
    if (rc == 0) {
      if (body != NULL && narcache__buf_take(&got, body, body_len) != 0)
        rc = NARCACHE_EUNAVAIL;
      if (head_out != NULL)
        *head_out = head;
      break;
    }
    narcache__buf_free(&got);
    if (!retryable(rc, status) || attempt == s->cfg.max_attempts ||
        (call->body_size > 0 && call->body == NULL) /* a stream cannot be sent again */ ||
        !backoff(attempt, head.retry_after_s, deadline))
      break;
  }
  if (status_out != NULL)
    *status_out = status;
  return rc;
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */
/* ------------------------------------------------------------------ */

typedef struct s3_reader {
  s3_store *s;
  char key[KEY_MAX];
  char etag[96];
  uint64_t size;
  uint64_t pos;      /* where the running GET's next byte not yet taken is */
  uint64_t lent;     /* bytes from `pos` on handed out by the last segment */
  int lent_buffered; /* ... from the stream's buffer (else its socket, or the ring) */
  narcache__s3_xfer *x;    /* the running GET: libcurl's, */
  narcache__s3_stream *st; /* or ours (plain http) */
} s3_reader;

static void s3_reader_stop(s3_reader *r) {
  narcache__s3_xfer_free(r->x);
  r->x = NULL;
  if (r->st != NULL) {
    narcache__s3_stream_free(r->st);
    r->st = NULL;
    atomic_fetch_sub(&r->s->streams_open, 1);
  }
  r->lent = 0;
  r->lent_buffered = 0;
}

static void s3_reader_close(void *ctx) {
  s3_reader *r = ctx;
  s3_reader_stop(r);
  narcache__free(r);
}

/* One try at the GET: on a connection of our own when the endpoint allows
 * it, libcurl has found the server's address (the store's probe at the
 * latest), and the store's connection budget has room; else through
 * libcurl. */
static int s3_reader_attempt(s3_reader *r, const s3_call *call, uint64_t deadline, long *status,
                             narcache__s3_head *head) {
  s3_store *s = r->s;
  s3_reader_stop(r);
  *status = 0;
  char ip[64];
  long port = 0;
  if (atomic_load(&s->streams) && narcache__s3_io_last_peer(s->io, ip, sizeof ip, &port) == 0) {
    if (atomic_fetch_add(&s->streams_open, 1) < (int)s->cfg.max_connections) {
      int rc = s3_stream_start(s, call, ip, port, deadline, &r->st);
      if (rc == 0) {
        *status = r->st->status;
        *head = r->st->head;
        return NARCACHE_OK;
      }
      atomic_fetch_sub(&s->streams_open, 1);
      if (rc != NARCACHE_ENOTSUP)
        return rc;
      atomic_store(&s->streams, 0); /* bodies not delimited by length: libcurl from now on */
    } else {
      atomic_fetch_sub(&s->streams_open, 1); /* over budget: libcurl queues this one */
    }
  }
  int rc = s3_start(s, call, &r->x);
  if (rc == 0)
    rc = narcache__s3_xfer_wait_head(r->x, deadline, status);
  if (r->x != NULL)
    narcache__s3_xfer_head(r->x, head);
  return rc;
}

/* Start a GET of the object from `offset` on; wait for its head. */
static int s3_reader_start(s3_reader *r, uint64_t offset) {
  char range[64];
  narcache__s3_field extra[2];
  size_t n_extra = 0;
  if (offset > 0) {
    snprintf(range, sizeof range, "bytes=%llu-", (unsigned long long)offset);
    extra[n_extra++] = (narcache__s3_field){"Range", 5, range, strlen(range)};
    if (r->etag[0] != '\0') /* the same object, or nothing */
      extra[n_extra++] = (narcache__s3_field){"If-Match", 8, r->etag, strlen(r->etag)};
  }
  s3_call call = {.method = "GET",
                  .key = r->key,
                  .extra = extra,
                  .n_extra = n_extra,
                  .response_buffer = STREAM_RING};
  int rc = NARCACHE_EUNAVAIL;
  long status = 0;
  narcache__s3_head head = {0};
  uint64_t deadline = narcache__s3_now_ms() + r->s->cfg.request_timeout_ms;
  for (uint32_t attempt = 1; attempt <= r->s->cfg.max_attempts; attempt++) {
    rc = s3_reader_attempt(r, &call, deadline, &status, &head);
    if (rc == 0 && status != (offset > 0 ? 206 : 200))
      rc = status == 412 || status == 416 || (offset > 0 && status == 200) ? NARCACHE_EIO
                                                                           : status_result(status);
    if (rc == 0 || !retryable(rc, status) || attempt == r->s->cfg.max_attempts ||
        !backoff(attempt, head.retry_after_s, deadline))
      break;
  }
  if (rc == 0 && offset == 0 && head.content_length == UINT64_MAX)
    rc = NARCACHE_EIO; /* the size must be known first */
  if (rc == 0 && offset > 0 && head.content_length != r->size - offset)
    rc = NARCACHE_EIO; /* the object changed under us */
  if (rc < 0) {
    s3_reader_stop(r);
    return rc;
  }
  if (offset == 0) {
    r->size = head.content_length;
    memcpy(r->etag, head.etag, sizeof r->etag);
  }
  r->pos = offset;
  return NARCACHE_OK;
}

/* Be at `offset`: take the bytes a segment lent that the caller used, or
 * start a new GET from there (a jump, a retry after a failure). */
static int s3_reader_seek(s3_reader *r, uint64_t offset) {
  uint64_t lent = r->lent;
  int buffered = r->lent_buffered;
  r->lent = 0;
  r->lent_buffered = 0;
  if ((r->x != NULL || r->st != NULL) && offset >= r->pos && offset - r->pos <= lent) {
    size_t used = (size_t)(offset - r->pos);
    if (r->x != NULL)
      narcache__s3_xfer_consume(r->x, used);
    else if (buffered)
      narcache__s3_stream_drop(r->st, used);
    /* else the caller read them off the socket itself */
    r->pos = offset;
    return NARCACHE_OK;
  }
  int rc = s3_reader_start(r, offset);
  return rc == NARCACHE_ENOTFOUND ? NARCACHE_EIO : rc; /* it was there at open */
}

/* After a body read: a short body or a failed transfer ends this GET (the
 * next read starts another from where it stopped). */
static int s3_reader_result(s3_reader *r, int rc, size_t got) {
  if (rc == 0 && got == 0)
    rc = NARCACHE_EIO; /* shorter than its Content-Length */
  if (rc < 0) {
    s3_reader_stop(r);
    return rc == NARCACHE_EUNAVAIL ? NARCACHE_EUNAVAIL : NARCACHE_EIO;
  }
  return NARCACHE_OK;
}

static int s3_reader_read(void *ctx, uint64_t offset, void *buf, size_t len, size_t *got) {
  s3_reader *r = ctx;
  *got = 0;
  if (offset >= r->size || len == 0)
    return NARCACHE_OK;
  int rc = s3_reader_seek(r, offset);
  if (rc < 0)
    return rc;
  uint64_t left = r->size - offset;
  if (len > left)
    len = (size_t)left;
  uint32_t stall = r->s->cfg.stall_timeout_ms;
  size_t n = 0;
  rc = r->x != NULL ? narcache__s3_xfer_read(r->x, buf, len, &n, narcache__s3_now_ms() + stall)
                    : narcache__s3_stream_read(r->st, buf, len, &n, stall);
  if ((rc = s3_reader_result(r, rc, n)) < 0)
    return rc;
  *got = n;
  r->pos += n;
  return NARCACHE_OK;
}

/* Lend the caller `n` bytes at `data` as the segment at `offset`; they are
 * taken (as far as used) at the next call. */
static int lend_bytes(s3_reader *r, narcache_nar_segment *seg, uint64_t offset, const void *data,
                      uint64_t n) {
  r->lent = n;
  seg->kind = NARCACHE_NAR_SEG_BYTES;
  seg->nar_offset = offset;
  seg->length = n;
  seg->data = data;
  seg->fd = -1;
  seg->file_offset = 0;
  return 1;
}

/* A segment the caller takes through `fd`, waiting at most the stall
 * timeout: STREAM (the next `length` bytes, read off our own connection)
 * or WAIT (length 0: nothing yet; poll `fd` and ask again at `offset`,
 * without a thread). */
static int fd_segment(s3_reader *r, narcache_nar_segment *seg, uint32_t kind, uint64_t offset,
                      uint64_t length, int fd) {
  uint32_t stall = r->s->cfg.stall_timeout_ms;
  r->lent = length;
  seg->kind = kind;
  seg->nar_offset = offset;
  seg->length = length;
  seg->data = NULL;
  seg->fd = fd;
  seg->file_offset = 0;
  seg->wait_ms = stall > INT32_MAX ? INT32_MAX : (int)stall;
  return 1;
}

/* A segment of our own connection's body: the bytes that came with the
 * head, then the socket itself for a caller that knows STREAM segments
 * (it reads them off the socket, or splices them on, in order). */
static int s3_stream_segment(s3_reader *r, uint64_t offset, narcache_nar_segment *seg) {
  uint32_t stall = r->s->cfg.stall_timeout_ms;
  uint64_t left = r->size - offset;
  const void *data = NULL;
  size_t n = narcache__s3_stream_buffered(r->st, &data);
  if (n == 0 && seg->version < 2) { /* older callers take bytes only */
    int rc = narcache__s3_stream_fill(r->st, stall);
    n = narcache__s3_stream_buffered(r->st, &data);
    if ((rc = s3_reader_result(r, rc, n)) < 0)
      return rc;
  }
  if (n > 0) {
    r->lent_buffered = 1;
    return lend_bytes(r, seg, offset, data, n < left ? n : left);
  }
  return fd_segment(r, seg, NARCACHE_NAR_SEG_STREAM, offset, left, r->st->fd);
}

/* The server's way in: the bytes without a copy -- from the libcurl
 * transfer's ring, or our own connection (above). The bytes the caller
 * used are taken when the next call comes. */
static int s3_reader_segment(void *ctx, uint64_t offset, narcache_nar_segment *seg) {
  s3_reader *r = ctx;
  if (offset >= r->size)
    return NARCACHE_EINVAL;
  int rc = s3_reader_seek(r, offset);
  if (rc < 0)
    return rc;
  if (r->st != NULL)
    return s3_stream_segment(r, offset, seg);
  uint64_t left = r->size - offset;
  size_t want = left < SIZE_MAX ? (size_t)left : SIZE_MAX;
  uint32_t stall = r->s->cfg.stall_timeout_ms;
  int can_wait = seg->version >= 3; /* the caller takes WAIT segments */
  uint64_t now = narcache__s3_now_ms();
  const void *data = NULL;
  size_t n = 0;
  rc = narcache__s3_xfer_peek(r->x, want, &data, &n, now + (can_wait ? SEGMENT_GRACE_MS : stall));
  if (n == 0 && can_wait) {
    int fd = -1;
    int armed = narcache__s3_xfer_arm(r->x, &fd);
    if (armed == 1)
      return fd_segment(r, seg, NARCACHE_NAR_SEG_WAIT, offset, 0, fd);
    /* something came meanwhile (or the end); no descriptor: block */
    rc = narcache__s3_xfer_peek(r->x, want, &data, &n,
                                narcache__s3_now_ms() + (armed == 0 ? 0 : stall));
  }
  if ((rc = s3_reader_result(r, rc, n)) < 0)
    return rc;
  /* libcurl stops at Content-Length; never pass the end anyway */
  return lend_bytes(r, seg, offset, data, n < left ? n : left);
}

static int s3_open_small(s3_store *s, int kind, const char *name, size_t len, const char *key,
                         narcache_reader *out) {
  char *data = NULL;
  size_t data_len = 0;
  int present = 0;
  if (narcache__s3_cache_get(&s->cache, kind, name, len, &data, &data_len, &present)) {
    if (!present)
      return NARCACHE_ENOTFOUND;
  } else {
    s3_call call = {.method = "GET", .key = key, .total_timeout_ms = s->cfg.request_timeout_ms};
    int rc = s3_exchange(s, &call, METADATA_MAX, &data, &data_len, NULL, NULL);
    if (rc == NARCACHE_ENOTFOUND) {
      narcache__s3_cache_put(&s->cache, kind, name, len, NULL, 0, s->cfg.negative_ttl_ms);
      return rc;
    }
    if (rc < 0)
      return rc == NARCACHE_ELIMIT ? NARCACHE_EIO : rc;
    narcache__s3_cache_put(&s->cache, kind, name, len, data, data_len, s->cfg.cache_ttl_ms);
  }
  int rc = narcache_reader_init_memory(out, data, data_len);
  narcache__free(data);
  return rc < 0 ? NARCACHE_EUNAVAIL : rc;
}

static int s3_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  s3_store *s = ctx;
  char key[KEY_MAX];
  int rc = object_key(key, sizeof key, kind, name, len);
  if (rc < 0)
    return rc;
  if (cacheable(kind))
    return s3_open_small(s, kind, name, len, key, out);
  s3_reader *r = narcache__calloc(1, sizeof *r);
  if (r == NULL)
    return NARCACHE_EUNAVAIL;
  r->s = s;
  memcpy(r->key, key, sizeof key);
  rc = s3_reader_start(r, 0);
  if (rc < 0) {
    s3_reader_close(r);
    return rc;
  }
  out->size = r->size;
  out->fd = -1;
  out->read = s3_reader_read;
  out->segment = s3_reader_segment;
  out->close = s3_reader_close;
  out->ctx = r;
  return NARCACHE_OK;
}

/* A presigned GET of the NAR on the endpoint clients reach: they download
 * it straight from the object store (Range included). */
static int s3_redirect(void *ctx, int kind, const char *name, size_t len, char **url) {
  s3_store *s = ctx;
  *url = NULL;
  if (kind != NARCACHE_OBJECT_NAR)
    return 0;
  const narcache__s3_config *cfg = &s->cfg;
  char key[KEY_MAX], host[512], raw_path[KEY_MAX + 300];
  int rc = object_key(key, sizeof key, kind, name, len);
  if (rc == 0)
    rc = object_target(cfg, cfg->redirect_host, key, host, sizeof host, raw_path, sizeof raw_path);
  if (rc < 0)
    return rc;
  narcache__sigv4_scope scope = {.access_key = cfg->access_key,
                                 .secret_key = cfg->secret_key,
                                 .region = cfg->region,
                                 .service = "s3"};
  narcache__sigv4_amz_date(scope.amz_date, time(NULL));
  narcache__s3_field h = {"Host", 4, host, strlen(host)};
  narcache__sigv4_request req = {.method = "GET",
                                 .path = raw_path,
                                 .path_len = strlen(raw_path),
                                 .headers = &h,
                                 .n_headers = 1,
                                 .payload_hash = "UNSIGNED-PAYLOAD"};
  narcache__buf query = {0}, out = {0};
  rc = narcache__sigv4_presign(&query, NULL, &req, &scope, cfg->session_token,
                               cfg->redirect_expires_s);
  if (rc == 0 && (narcache__buf_append_str(&out, cfg->redirect_scheme) != 0 ||
                  narcache__buf_append_str(&out, "://") != 0 ||
                  narcache__buf_append_str(&out, host) != 0 ||
                  narcache__sigv4_uri_encode(&out, raw_path, strlen(raw_path), 1) != 0 ||
                  narcache__buf_append(&out, "?", 1) != 0 ||
                  narcache__buf_append(&out, query.data, query.len) != 0 ||
                  narcache__buf_take(&out, url, NULL) != 0))
    rc = NARCACHE_EUNAVAIL;
  narcache__buf_free(&query);
  narcache__buf_free(&out);
  return rc < 0 ? rc : 1;
}

/* Cheap and signed: a HEAD of nix-cache-info. Present or absent both prove
 * the store answers. */
static int s3_probe(void *ctx) {
  s3_store *s = ctx;
  s3_call call = {.method = "HEAD", .key = "nix-cache-info",
                  .total_timeout_ms = s->cfg.request_timeout_ms};
  long status = 0;
  int rc = s3_exchange(s, &call, 0, NULL, NULL, &status, NULL);
  return rc == 0 || rc == NARCACHE_ENOTFOUND ? NARCACHE_OK : rc;
}

/* ------------------------------------------------------------------ */
/* Uploads                                                             */
/* ------------------------------------------------------------------ */

enum { UPLOAD_MEMORY, UPLOAD_STREAM, UPLOAD_MULTIPART };

typedef struct s3_upload {
  s3_store *s;
  int kind;
  int mode;
  char name[300];
  size_t name_len;
  char key[KEY_MAX];
  uint64_t size, written;
  uint8_t last_byte; /* streamed: held back until the commit */
  narcache__buf memory;
  narcache__s3_xfer *x; /* the running PUT (of the object, or of a part) */
  char *upload_id;      /* multipart */
  uint32_t part_number;
  uint64_t part_left;
  narcache__buf parts_xml;
} s3_upload;

/* The text between <tag> and </tag> in `xml`, into `out`. */
static int xml_text(const char *xml, const char *tag, char *out, size_t size) {
  char open[64], close[64];
  snprintf(open, sizeof open, "<%s>", tag);
  snprintf(close, sizeof close, "</%s>", tag);
  const char *a = strstr(xml, open);
  const char *b = a != NULL ? strstr(a, close) : NULL;
  if (b == NULL)
    return 0;
  a += strlen(open);
  if ((size_t)(b - a) >= size)
    return 0;
  memcpy(out, a, (size_t)(b - a));
  out[b - a] = '\0';
  return 1;
}

static int start_multipart(s3_upload *up) {
  s3_call call = {.method = "POST", .key = up->key, .query = "uploads",
                  .total_timeout_ms = up->s->cfg.request_timeout_ms};
  char *body = NULL;
  size_t len = 0;
  int rc = s3_exchange(up->s, &call, 65536, &body, &len, NULL, NULL);
  char id[1024];
  if (rc == 0 && !xml_text(body, "UploadId", id, sizeof id))
    rc = NARCACHE_EIO;
  narcache__buf enc = {0};
  if (rc == 0 && narcache__sigv4_uri_encode(&enc, id, strlen(id), 0) != 0)
    rc = NARCACHE_EUNAVAIL;
  if (rc == 0 && narcache__buf_take(&enc, &up->upload_id, NULL) != 0)
    rc = NARCACHE_EUNAVAIL;
  narcache__buf_free(&enc);
  narcache__free(body);
  return rc;
}

static int s3_upload_begin(void *ctx, int kind, const char *name, size_t len, uint64_t size,
                           void **upload) {
  s3_store *s = ctx;
  if (!(s->cfg.flags & NARCACHE_STORE_S3_WRITABLE))
    return NARCACHE_ENOTSUP;
  s3_upload *up = narcache__calloc(1, sizeof *up);
  if (up == NULL)
    return NARCACHE_EUNAVAIL;
  up->s = s;
  up->kind = kind;
  up->size = size;
  int rc = len < sizeof up->name ? object_key(up->key, sizeof up->key, kind, name, len)
                                 : NARCACHE_ENOTFOUND;
  if (rc == 0) {
    memcpy(up->name, name, len);
    up->name_len = len;
  }
  if (rc == 0 && (size <= SMALL_UPLOAD_MAX || kind == NARCACHE_OBJECT_NARINFO)) {
    up->mode = UPLOAD_MEMORY;
    if (narcache__buf_reserve(&up->memory, (size_t)size + 1) != 0)
      rc = NARCACHE_EUNAVAIL;
  } else if (rc == 0 && size < s->cfg.multipart_threshold) {
    up->mode = UPLOAD_STREAM;
    s3_call call = {.method = "PUT", .key = up->key, .body_size = size};
    rc = s3_start(s, &call, &up->x);
  } else if (rc == 0) {
    up->mode = UPLOAD_MULTIPART;
    rc = start_multipart(up);
  }
  if (rc < 0) {
    narcache__buf_free(&up->memory);
    narcache__free(up);
    return rc;
  }
  *upload = up;
  return NARCACHE_OK;
}

/* Wait for a streamed PUT to end; keep its ETag for a part. */
static int finish_put(s3_upload *up, char *etag, size_t etag_size) {
  narcache__s3_xfer_end_body(up->x);
  long status = 0;
  uint64_t deadline = narcache__s3_now_ms() + up->s->cfg.request_timeout_ms +
                      up->s->cfg.stall_timeout_ms;
  int rc = narcache__s3_xfer_wait_done(up->x, deadline, &status);
  if (rc == 0 && (status < 200 || status >= 300))
    rc = status_result(status) == NARCACHE_ENOTFOUND ? NARCACHE_EIO : status_result(status);
  if (rc == 0 && etag != NULL) {
    narcache__s3_head head;
    narcache__s3_xfer_head(up->x, &head);
    if (head.etag[0] == '\0')
      rc = NARCACHE_EIO;
    snprintf(etag, etag_size, "%s", head.etag);
  }
  narcache__s3_xfer_free(up->x);
  up->x = NULL;
  return rc;
}

static int next_part(s3_upload *up) {
  if (up->part_number == MAX_PARTS)
    return NARCACHE_ELIMIT;
  up->part_number++;
  uint64_t left = up->size - up->written;
  up->part_left = left < up->s->cfg.part_size ? left : up->s->cfg.part_size;
  char query[1200];
  snprintf(query, sizeof query, "partNumber=%u&uploadId=%s", up->part_number, up->upload_id);
  s3_call call = {.method = "PUT", .key = up->key, .query = query, .body_size = up->part_left};
  return s3_start(up->s, &call, &up->x);
}

static int end_part(s3_upload *up) {
  char etag[96];
  int rc = finish_put(up, etag, sizeof etag);
  if (rc == 0) {
    char part[256];
    snprintf(part, sizeof part, "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>",
             up->part_number, etag);
    if (narcache__buf_append_str(&up->parts_xml, part) != 0)
      rc = NARCACHE_EUNAVAIL;
  }
  return rc;
}

static int write_multipart(s3_upload *up, const uint8_t *p, size_t len) {
  while (len > 0) {
    int rc = up->x == NULL ? next_part(up) : NARCACHE_OK;
    if (rc < 0)
      return rc;
    size_t n = len < up->part_left ? len : (size_t)up->part_left;
    uint64_t deadline = narcache__s3_now_ms() + up->s->cfg.stall_timeout_ms;
    rc = narcache__s3_xfer_write(up->x, p, n, deadline);
    if (rc < 0)
      return rc;
    p += n;
    len -= n;
    up->written += n;
    up->part_left -= n;
    if (up->part_left == 0 && (rc = end_part(up)) < 0)
      return rc;
  }
  return NARCACHE_OK;
}

static int s3_upload_write(void *upload, const void *data, size_t len) {
  s3_upload *up = upload;
  if (len > up->size - up->written)
    return NARCACHE_ELIMIT;
  switch (up->mode) {
  case UPLOAD_MEMORY:
    up->written += len;
    return narcache__buf_append(&up->memory, data, len) == 0 ? NARCACHE_OK : NARCACHE_EUNAVAIL;
  case UPLOAD_STREAM: {
    /* The object's last byte waits for the commit: until S3 has every
     * byte the PUT cannot complete, so an upload the caller abandons after
     * writing it all (a NAR that failed verification) never appears. */
    size_t pass = len;
    if (len > 0 && up->written + len == up->size) {
      up->last_byte = ((const uint8_t *)data)[len - 1];
      pass = len - 1;
    }
    uint64_t deadline = narcache__s3_now_ms() + up->s->cfg.stall_timeout_ms;
    int rc = narcache__s3_xfer_write(up->x, data, pass, deadline);
    if (rc == 0)
      up->written += len;
    return rc;
  }
  default:
    return write_multipart(up, data, len);
  }
}

/* A narinfo must not go public before the NAR it names (as store_dir.c). */
static int check_nar_present(s3_upload *up) {
  char file[300], key[KEY_MAX];
  int rc = narcache__store_narinfo_nar(up->memory.data, up->memory.len, file, sizeof file);
  if (rc != 1)
    return rc;
  if (object_key(key, sizeof key, NARCACHE_OBJECT_NAR, file, strlen(file)) < 0)
    return NARCACHE_ECONFLICT;
  s3_call call = {.method = "HEAD", .key = key, .total_timeout_ms = up->s->cfg.request_timeout_ms};
  rc = s3_exchange(up->s, &call, 0, NULL, NULL, NULL, NULL);
  return rc == NARCACHE_ENOTFOUND ? NARCACHE_ECONFLICT : rc;
}

static int commit_memory(s3_upload *up) {
  int rc = up->kind == NARCACHE_OBJECT_NARINFO ? check_nar_present(up) : NARCACHE_OK;
  if (rc < 0)
    return rc;
  uint8_t digest[32];
  char payload[65];
  crypto_hash_sha256(digest, (const uint8_t *)(up->memory.data ? up->memory.data : ""),
                     up->memory.len);
  for (int i = 0; i < 32; i++)
    snprintf(payload + 2 * i, 3, "%02x", digest[i]);
  const char *type = up->kind == NARCACHE_OBJECT_NARINFO      ? "text/x-nix-narinfo"
                     : up->kind == NARCACHE_OBJECT_CACHE_INFO ? "text/x-nix-cache-info"
                     : up->kind == NARCACHE_OBJECT_LISTING    ? "application/json"
                                                              : "application/octet-stream";
  narcache__s3_field extra[] = {{"Content-Type", 12, type, strlen(type)}};
  s3_call call = {.method = "PUT", .key = up->key, .extra = extra, .n_extra = 1,
                  .body = up->memory.data ? up->memory.data : "", .body_size = up->memory.len,
                  .payload_hash = payload, .total_timeout_ms = up->s->cfg.request_timeout_ms};
  /* A body of 0 bytes must still be a PUT with a body of 0 bytes. */
  rc = s3_exchange(up->s, &call, 0, NULL, NULL, NULL, NULL);
  if (rc == NARCACHE_ENOTFOUND)
    rc = NARCACHE_EIO; /* no such bucket */
  if (rc == 0 && cacheable(up->kind))
    narcache__s3_cache_put(&up->s->cache, up->kind, up->name, up->name_len, up->memory.data ? up->memory.data : "",
              up->memory.len, up->s->cfg.cache_ttl_ms);
  return rc;
}

static int complete_multipart(s3_upload *up) {
  narcache__buf xml = {0};
  int rc = NARCACHE_OK;
  if (narcache__buf_append_str(&xml, "<CompleteMultipartUpload>") != 0 ||
      narcache__buf_append(&xml, up->parts_xml.data, up->parts_xml.len) != 0 ||
      narcache__buf_append_str(&xml, "</CompleteMultipartUpload>") != 0)
    rc = NARCACHE_EUNAVAIL;
  char query[1100];
  snprintf(query, sizeof query, "uploadId=%s", up->upload_id);
  uint8_t digest[32];
  char payload[65];
  crypto_hash_sha256(digest, (const uint8_t *)xml.data, xml.len);
  for (int i = 0; i < 32; i++)
    snprintf(payload + 2 * i, 3, "%02x", digest[i]);
  char *body = NULL;
  size_t len = 0;
  if (rc == 0) {
    /* A long one: S3 may take a while to assemble big objects. */
    s3_call call = {.method = "POST", .key = up->key, .query = query, .body = xml.data,
                    .body_size = xml.len, .payload_hash = payload,
                    .total_timeout_ms = up->s->cfg.request_timeout_ms + up->s->cfg.stall_timeout_ms};
    rc = s3_exchange(up->s, &call, 65536, &body, &len, NULL, NULL);
  }
  /* S3 can answer 200 and report the failure in the body. */
  if (rc == 0 && (body == NULL || strstr(body, "<Error>") != NULL ||
                  strstr(body, "CompleteMultipartUploadResult") == NULL))
    rc = NARCACHE_EIO;
  narcache__free(body);
  narcache__buf_free(&xml);
  return rc;
}

static void abort_multipart(s3_upload *up) {
  if (up->upload_id == NULL)
    return;
  char query[1100];
  snprintf(query, sizeof query, "uploadId=%s", up->upload_id);
  s3_call call = {.method = "DELETE", .key = up->key, .query = query,
                  .total_timeout_ms = up->s->cfg.request_timeout_ms};
  (void)s3_exchange(up->s, &call, 0, NULL, NULL, NULL, NULL);
}

static void upload_release(s3_upload *up) {
  narcache__s3_xfer_free(up->x);
  narcache__buf_free(&up->memory);
  narcache__buf_free(&up->parts_xml);
  narcache__free(up->upload_id);
  narcache__free(up);
}

/* Send the byte held back, then wait for S3 to take the object. */
static int commit_stream(s3_upload *up) {
  uint64_t deadline = narcache__s3_now_ms() + up->s->cfg.stall_timeout_ms;
  int rc = narcache__s3_xfer_write(up->x, &up->last_byte, 1, deadline);
  return rc == 0 ? finish_put(up, NULL, 0) : rc;
}

static int s3_upload_commit(void *upload) {
  s3_upload *up = upload;
  int rc;
  if (up->written != up->size)
    rc = NARCACHE_EMISUSE;
  else if (up->mode == UPLOAD_MEMORY)
    rc = commit_memory(up);
  else if (up->mode == UPLOAD_STREAM)
    rc = commit_stream(up);
  else
    rc = up->x != NULL ? end_part(up) : NARCACHE_OK;
  if (up->mode == UPLOAD_MULTIPART) {
    if (rc == 0)
      rc = complete_multipart(up);
    if (rc < 0)
      abort_multipart(up);
  }
  upload_release(up);
  return rc;
}

static void s3_upload_abort(void *upload) {
  s3_upload *up = upload;
  /* Cancelling a running PUT drops it: S3 keeps nothing of a PUT whose
   * body did not arrive in full. */
  narcache__s3_xfer_free(up->x);
  up->x = NULL;
  if (up->mode == UPLOAD_MULTIPART)
    abort_multipart(up);
  upload_release(up);
}

/* ------------------------------------------------------------------ */
/* Lifetime                                                            */
/* ------------------------------------------------------------------ */

/* curl_global_init is process-wide: counted, under a lock. */
static pthread_mutex_t curl_init_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned curl_users;

static int curl_acquire(void) {
  pthread_mutex_lock(&curl_init_lock);
  int rc = NARCACHE_OK;
  if (curl_users == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    rc = NARCACHE_ENOMEM;
  if (rc == 0)
    curl_users++;
  pthread_mutex_unlock(&curl_init_lock);
  return rc;
}

static void curl_release(void) {
  pthread_mutex_lock(&curl_init_lock);
  if (--curl_users == 0)
    curl_global_cleanup();
  pthread_mutex_unlock(&curl_init_lock);
}

static void s3_destroy(void *ctx) {
  s3_store *s = ctx;
  if (s == NULL)
    return;
  narcache__s3_io_free(s->io);
  narcache__s3_cache_destroy(&s->cache);
  narcache__s3_config_free(&s->cfg);
  narcache__free(s);
  curl_release();
}

/* Bodies on connections of our own need plain http, and no proxy that
 * libcurl would have used. */
static int streams_allowed(const narcache__s3_config *cfg) {
  static const char *const proxies[] = {"http_proxy", "all_proxy", "ALL_PROXY"};
  for (size_t i = 0; i < sizeof proxies / sizeof proxies[0]; i++) {
    const char *v = getenv(proxies[i]);
    if (v != NULL && v[0] != '\0')
      return 0;
  }
  return strcmp(cfg->scheme, "http") == 0;
}

int narcache_store_s3_new(narcache_store **out, const narcache_s3_options *o) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  if (o == NULL || o->version < 1 || o->version > NARCACHE_S3_OPTIONS_VERSION)
    return NARCACHE_EINVAL;
  if (o->error != NULL && o->error_size > 0)
    o->error[0] = '\0';
  s3_store *s = narcache__calloc(1, sizeof *s);
  if (s == NULL)
    return NARCACHE_ENOMEM;
  if (curl_acquire() < 0) {
    narcache__free(s);
    return NARCACHE_ENOMEM;
  }
  int rc = narcache__s3_config_init(&s->cfg, o);
  if (rc == 0)
    rc = narcache__s3_cache_init(&s->cache, s->cfg.cache_entries);
  if (rc == 0)
    rc = narcache__s3_io_new(&s->io, (long)s->cfg.max_connections);
  atomic_init(&s->streams, rc == 0 && streams_allowed(&s->cfg));
  atomic_init(&s->streams_open, 0);
  if (rc < 0) {
    s3_destroy(s);
    return rc;
  }
  static const narcache_store_methods methods = {
      .version = NARCACHE_STORE_METHODS_VERSION,
      .open = s3_open,
      .upload_begin = s3_upload_begin,
      .upload_write = s3_upload_write,
      .upload_commit = s3_upload_commit,
      .upload_abort = s3_upload_abort,
      .probe = s3_probe,
      .destroy = s3_destroy,
      .redirect = s3_redirect,
  };
  narcache_store_methods m = methods;
  if (!(s->cfg.flags & NARCACHE_STORE_S3_WRITABLE))
    m.upload_begin = NULL, m.upload_write = NULL, m.upload_commit = NULL, m.upload_abort = NULL;
  if (!(s->cfg.flags & NARCACHE_STORE_S3_REDIRECT))
    m.redirect = NULL;
  return narcache_store_new(out, &m, s);
}

int narcache_store_s3_check(narcache_store *store, char *message, size_t message_size) {
  s3_store *s = narcache__store_backend(store, (const void *)s3_open);
  if (message != NULL && message_size > 0)
    message[0] = '\0';
  if (s == NULL)
    return NARCACHE_EINVAL;
  /* A HEAD of the bucket proves endpoint, credentials, clock and bucket. */
  char curl_why[256] = "";
  s3_call call = {.method = "HEAD", .total_timeout_ms = s->cfg.request_timeout_ms,
                  .why = curl_why, .why_size = sizeof curl_why};
  long status = 0;
  int rc = s3_exchange(s, &call, 0, NULL, NULL, &status, NULL);
  const char *why = NULL;
  if (rc == 0)
    return NARCACHE_OK;
  if (status == 403 || status == 401) {
    rc = NARCACHE_EBADKEY;
    why = "the credentials were refused (wrong access or secret key, or a clock far off)";
  } else if (status == 404) {
    rc = NARCACHE_ENOTFOUND;
    why = "no such bucket";
  } else if (status == 0) {
    why = curl_why[0] != '\0' ? curl_why : "the endpoint cannot be reached";
  } else {
    why = "the object store answered with an error";
  }
  if (message != NULL && message_size > 0)
    snprintf(message, message_size, "s3 bucket %s at %s://%s: %s (HTTP %ld)", s->cfg.bucket,
             s->cfg.scheme, s->cfg.host, why, status);
  return rc;
}
