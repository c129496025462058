/* Fault injection for tests -- not for production.
 *
 *   NARCACHE_FAULT_PROBE_BLOCK_FILE=PATH
 *     The store is wrapped in a delegating store whose health probe blocks
 *     (on its threadpool thread) for as long as PATH exists, then asks the
 *     real store. This is a wedged store as a hung NFS mount or a locked
 *     database makes one: the server's probe stops passing, so the
 *     systemd watchdog stops being fed, and passes again once PATH is
 *     removed. Every other call goes straight to the real store.
 *
 *   NARCACHE_FAULT_STORE_BLOCK_FILE=PATH
 *     Every store call (open, upload_begin, probe) blocks for as long as
 *     PATH exists: a backend wedged as a whole, whose calls pile up on
 *     the threadpool until it has no thread left.
 *
 * The wrapper goes through the public store API only (narcache_store_new
 * with a methods table of our own), as any embedder's backend would. */
#define _GNU_SOURCE
#include "daemon.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct fault_store {
  narcache_store *inner;
  char *probe_block_file; /* NULL: the probe is not blocked on its own */
  char *store_block_file; /* NULL: calls are not blocked */
} fault_store;

/* Sleep in 10 ms steps for as long as `path` exists. */
static void wait_while_exists(const char *path) {
  while (path != NULL && access(path, F_OK) == 0) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static int f_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  fault_store *f = ctx;
  wait_while_exists(f->store_block_file);
  return narcache_store_open(out, f->inner, kind, name, len);
}

static int f_upload_begin(void *ctx, int kind, const char *name, size_t len, uint64_t size,
                          void **upload) {
  fault_store *f = ctx;
  narcache_upload *up = NULL;
  wait_while_exists(f->store_block_file);
  int rc = narcache_store_upload_begin(&up, f->inner, kind, name, len, size);
  *upload = up;
  return rc;
}

static int f_upload_write(void *upload, const void *data, size_t len) {
  return narcache_upload_write(upload, data, len);
}

static int f_upload_commit(void *upload) {
  int rc = narcache_upload_commit(upload);
  narcache_upload_free(upload);
  return rc;
}

static void f_upload_abort(void *upload) { narcache_upload_free(upload); }

static int f_probe(void *ctx) {
  fault_store *f = ctx;
  wait_while_exists(f->probe_block_file);
  wait_while_exists(f->store_block_file);
  return narcache_store_probe(f->inner);
}

static int f_flush(void *ctx) {
  fault_store *f = ctx;
  return narcache_store_flush(f->inner);
}

static void f_destroy(void *ctx) {
  fault_store *f = ctx;
  narcache_store_free(f->inner);
  free(f->probe_block_file);
  free(f->store_block_file);
  free(f);
}

static char *env_copy(const char *name, int *failed) {
  const char *v = getenv(name);
  if (v == NULL || v[0] == '\0')
    return NULL;
  char *copy = strdup(v);
  if (copy == NULL)
    *failed = 1;
  return copy;
}

int fault_store_wrap(narcache_store **store) {
  int failed = 0;
  char *probe_file = env_copy("NARCACHE_FAULT_PROBE_BLOCK_FILE", &failed);
  char *store_file = env_copy("NARCACHE_FAULT_STORE_BLOCK_FILE", &failed);
  if (probe_file == NULL && store_file == NULL && !failed)
    return 0;
  fault_store *f = calloc(1, sizeof *f);
  if (f == NULL || failed) {
    free(f);
    free(probe_file);
    free(store_file);
    narcache_store_free(*store);
    *store = NULL;
    return NARCACHE_ENOMEM;
  }
  f->inner = *store;
  f->probe_block_file = probe_file;
  f->store_block_file = store_file;
  static const narcache_store_methods methods = {
      .version = NARCACHE_STORE_METHODS_VERSION,
      .open = f_open,
      .upload_begin = f_upload_begin,
      .upload_write = f_upload_write,
      .upload_commit = f_upload_commit,
      .upload_abort = f_upload_abort,
      .probe = f_probe,
      .destroy = f_destroy,
      .flush = f_flush,
  };
  int rc = narcache_store_new(store, &methods, f); /* frees f (and inner) on failure */
  if (rc < 0) {
    *store = NULL;
    return rc;
  }
  if (probe_file)
    daemon_log(NARCACHE_LOG_WARNING, "fault_injection",
               "TEST ONLY: the store probe blocks while this file exists", "file", probe_file);
  if (store_file)
    daemon_log(NARCACHE_LOG_WARNING, "fault_injection",
               "TEST ONLY: every store call blocks while this file exists", "file", store_file);
  return 0;
}
