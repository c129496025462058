/* What happens to the bytes of an upload (PUT) once the connection has
 * read them: they go into a store upload, which publishes the object
 * atomically at the end or leaves no trace. Every function here runs on a
 * pool thread (store calls may block) except the limits check; the HTTP
 * side (reading the body, 100-continue, answering) is server_conn.c.
 *
 * Each failure is an HTTP status and a reason for the client and the log.
 * Refusals the client caused are 4xx, never 5xx: Nix 2.8 retries a PUT
 * answered with 5xx with the original Content-Length and an empty body
 * (spec §11). */
#define _GNU_SOURCE
#include "server_internal.h"

#include <stdio.h>
#include <string.h>

struct srv_upload {
  narcache_upload *store_upload;
  int kind;
};

static int store_status(int rc) {
  switch (rc) {
  case NARCACHE_ENOTSUP:
    return 405; /* the store is read-only */
  case NARCACHE_ENOTFOUND:
  case NARCACHE_EINVAL:
  case NARCACHE_EBADNARINFO:
  case NARCACHE_EMISUSE:
    return 400;
  case NARCACHE_ELIMIT:
    return 413;
  case NARCACHE_ECONFLICT:
    return 409;
  case NARCACHE_EUNAVAIL:
    return 503;
  default:
    return 500;
  }
}

static int failed(int rc, const char *detail, char *why, size_t why_size) {
  snprintf(why, why_size, "%s", detail != NULL && detail[0] != '\0' ? detail : narcache_strerror(rc));
  return store_status(rc);
}

int narcache__srv_upload_begin(srv_upload **out, srv_t *s, int kind, const char *name, size_t len,
                               uint64_t size, char *why, size_t why_size) {
  *out = NULL;
  srv_upload *u = narcache__calloc(1, sizeof *u);
  if (u == NULL)
    return failed(NARCACHE_EUNAVAIL, "out of memory", why, why_size);
  u->kind = kind;
  int rc = narcache_store_upload_begin(&u->store_upload, s->store, kind, name, len, size);
  if (rc != 0) {
    narcache__free(u);
    return failed(rc, NULL, why, why_size);
  }
  *out = u;
  return 0;
}

int narcache__srv_upload_write(srv_upload *u, const void *data, size_t len, char *why,
                               size_t why_size) {
  int rc = narcache_upload_write(u->store_upload, data, len);
  return rc == 0 ? 0 : failed(rc, narcache_upload_errmsg(u->store_upload), why, why_size);
}

int narcache__srv_upload_commit(srv_upload *u, char *why, size_t why_size) {
  int rc = narcache_upload_commit(u->store_upload);
  int status = rc == 0 ? 0 : failed(rc, narcache_upload_errmsg(u->store_upload), why, why_size);
  narcache_upload_free(u->store_upload);
  narcache__free(u);
  return status;
}

void narcache__srv_upload_abort(srv_upload *u) {
  if (u == NULL)
    return;
  narcache_upload_free(u->store_upload);
  narcache__free(u);
}
