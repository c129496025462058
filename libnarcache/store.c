/* The store front end: name checks, readers, and the upload wrapper that
 * every backend gets for free (exact sizes, narinfo validation). */
#define _GNU_SOURCE /* pread */
#include "buffer_internal.h"
#include "common_internal.h"
#include "store_internal.h"
#include "narcache/narinfo.h"
#include "narcache/store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

struct narcache_store {
  narcache_store_methods m;
  void *ctx;
  char *store_dir;
};

struct narcache_upload {
  narcache_store *store;
  void *backend; /* NULL once committed or aborted */
  int kind;
  char name[256];
  size_t name_len;
  uint64_t size, written;
  narcache__buf narinfo; /* a copy of a narinfo upload, checked at commit */
  char errmsg[256];
};

/* ------------------------------------------------------------------ */
/* Names                                                               */
/* ------------------------------------------------------------------ */

static int is_nix32(char c) {
  return c != '\0' && memchr("0123456789abcdfghijklmnpqrsvwxyz", c, 32) != NULL;
}

static int is_file_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '+' || c == '.' || c == '_' || c == '-';
}

int narcache_object_name_check(int kind, const char *name, size_t len) {
  if (name == NULL && len != 0)
    return NARCACHE_EINVAL;
  switch (kind) {
  case NARCACHE_OBJECT_CACHE_INFO:
    return len == 0 ? NARCACHE_OK : NARCACHE_ENOTFOUND;
  case NARCACHE_OBJECT_NARINFO:
  case NARCACHE_OBJECT_LISTING:
    if (len != NARCACHE_STORE_HASH_CHARS)
      return NARCACHE_ENOTFOUND;
    for (size_t i = 0; i < len; i++)
      if (!is_nix32(name[i]))
        return NARCACHE_ENOTFOUND;
    return NARCACHE_OK;
  case NARCACHE_OBJECT_NAR:
    if (len == 0 || len > 255 || name[0] == '.')
      return NARCACHE_ENOTFOUND;
    for (size_t i = 0; i < len; i++)
      if (!is_file_char(name[i]))
        return NARCACHE_ENOTFOUND;
    return NARCACHE_OK;
  case NARCACHE_OBJECT_LOG:
    return narcache_store_path_parse_base(NULL, name, len, NULL) == 0 ? NARCACHE_OK
                                                                      : NARCACHE_ENOTFOUND;
  default:
    return NARCACHE_EINVAL;
  }
}

/* ------------------------------------------------------------------ */
/* Shared by the backends                                              */
/* ------------------------------------------------------------------ */

int narcache__store_errno(int err) {
  switch (err) {
  case ENOENT:
  case ENOTDIR:
  case ELOOP:
    return NARCACHE_ENOTFOUND;
  case EMFILE:
  case ENFILE:
  case ENOMEM:
  case ENOSPC:
  case EDQUOT:
  case EAGAIN:
  case EINTR:
  case ETIMEDOUT:
  case ESTALE:
    return NARCACHE_EUNAVAIL;
  default:
    return NARCACHE_EIO;
  }
}

int narcache__store_write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return narcache__store_errno(errno) == NARCACHE_EUNAVAIL ? NARCACHE_EUNAVAIL : NARCACHE_EIO;
    p += n;
    len -= (size_t)n;
  }
  return NARCACHE_OK;
}

/* ------------------------------------------------------------------ */
/* Readers                                                             */
/* ------------------------------------------------------------------ */

static void close_fd_ctx(void *ctx) { close((int)(intptr_t)ctx); }

void narcache_reader_init_fd(narcache_reader *r, int fd, uint64_t offset, uint64_t size) {
  memset(r, 0, sizeof *r);
  r->version = NARCACHE_READER_VERSION;
  r->fd = fd;
  r->fd_offset = offset;
  r->size = size;
  r->close = close_fd_ctx;
  r->ctx = (void *)(intptr_t)fd;
}

typedef struct memory_reader {
  size_t len;
  char data[];
} memory_reader;

static int memory_read(void *ctx, uint64_t offset, void *buf, size_t len, size_t *got) {
  memory_reader *m = ctx;
  size_t n = offset >= m->len ? 0 : m->len - (size_t)offset;
  if (n > len)
    n = len;
  if (n > 0)
    memcpy(buf, m->data + offset, n);
  *got = n;
  return NARCACHE_OK;
}

static void memory_close(void *ctx) { narcache__free(ctx); }

int narcache_reader_init_memory(narcache_reader *r, const void *data, size_t len) {
  if (r == NULL || (data == NULL && len != 0))
    return NARCACHE_EINVAL;
  memset(r, 0, sizeof *r);
  memory_reader *m = narcache__malloc(sizeof *m + len + 1);
  if (m == NULL)
    return NARCACHE_ENOMEM;
  m->len = len;
  if (len > 0)
    memcpy(m->data, data, len);
  r->version = NARCACHE_READER_VERSION;
  r->size = len;
  r->fd = -1;
  r->read = memory_read;
  r->close = memory_close;
  r->ctx = m;
  return NARCACHE_OK;
}

int narcache_reader_read(narcache_reader *r, uint64_t offset, void *buf, size_t len,
                         size_t *got) {
  if (r == NULL || got == NULL || (buf == NULL && len != 0))
    return NARCACHE_EINVAL;
  *got = 0;
  if (offset >= r->size || len == 0)
    return NARCACHE_OK;
  if (len > r->size - offset)
    len = (size_t)(r->size - offset);
  if (r->fd < 0)
    return r->read != NULL ? r->read(r->ctx, offset, buf, len, got) : NARCACHE_EINVAL;
  for (;;) {
    ssize_t n = pread(r->fd, buf, len, (off_t)(r->fd_offset + offset));
    if (n >= 0) {
      /* The size was promised: a file that shrank under us is an error,
       * not an early end that would truncate a response. */
      if (n == 0)
        return NARCACHE_EIO;
      *got = (size_t)n;
      return NARCACHE_OK;
    }
    if (errno != EINTR)
      /* not "absent": the object was opened, reading it failed */
      return narcache__store_errno(errno) == NARCACHE_EUNAVAIL ? NARCACHE_EUNAVAIL : NARCACHE_EIO;
  }
}

void narcache_reader_close(narcache_reader *r) {
  if (r == NULL)
    return;
  if (r->close != NULL)
    r->close(r->ctx);
  memset(r, 0, sizeof *r);
  r->fd = -1;
}

/* ------------------------------------------------------------------ */
/* Stores                                                              */
/* ------------------------------------------------------------------ */

int narcache_store_new(narcache_store **out, const narcache_store_methods *m, void *ctx) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  int upload_parts = m != NULL ? (m->upload_begin != NULL) + (m->upload_write != NULL) +
                                     (m->upload_commit != NULL) + (m->upload_abort != NULL)
                               : 0;
  int rc = NARCACHE_OK;
  if (m == NULL || m->version < 1 || m->open == NULL || (upload_parts != 0 && upload_parts != 4))
    rc = NARCACHE_EINVAL;
  narcache_store *s = NULL;
  if (rc == 0 && (s = narcache__calloc(1, sizeof *s)) == NULL)
    rc = NARCACHE_ENOMEM;
  if (rc < 0) {
    if (m != NULL && m->destroy != NULL)
      m->destroy(ctx);
    return rc;
  }
  /* Copy only the fields this version of the table has; newer ones stay
   * NULL. */
  size_t known = m->version == 1   ? offsetof(narcache_store_methods, flush)
                 : m->version == 2 ? offsetof(narcache_store_methods, redirect)
                                   : sizeof s->m;
  memcpy(&s->m, m, known);
  s->m.version = NARCACHE_STORE_METHODS_VERSION;
  s->ctx = ctx;
  *out = s;
  return NARCACHE_OK;
}

int narcache__store_narinfo_nar(const char *text, size_t len, char *file, size_t file_size) {
  narcache_narinfo *ni = NULL;
  if (narcache_narinfo_new(&ni, NULL) < 0)
    return NARCACHE_EUNAVAIL;
  /* Parsed leniently about the store directory: only the URL matters. */
  int rc = narcache_narinfo_parse(ni, text, len);
  size_t url_len = 0;
  const char *url = rc == 0 ? narcache_narinfo_url(ni, &url_len) : NULL;
  rc = rc == NARCACHE_ENOMEM ? NARCACHE_EUNAVAIL : 0;
  if (url != NULL && url_len > 4 && memcmp(url, "nar/", 4) == 0) {
    const char *name = url + 4;
    size_t name_len = url_len - 4;
    const char *query = memchr(name, '?', name_len);
    if (query != NULL)
      name_len = (size_t)(query - name);
    if (narcache_object_name_check(NARCACHE_OBJECT_NAR, name, name_len) < 0 ||
        name_len >= file_size) {
      rc = NARCACHE_ECONFLICT;
    } else {
      memcpy(file, name, name_len);
      file[name_len] = '\0';
      rc = 1;
    }
  }
  narcache_narinfo_free(ni);
  return rc;
}

void *narcache__store_backend(narcache_store *s, const void *open_fn) {
  return s != NULL && (const void *)s->m.open == open_fn ? s->ctx : NULL;
}

const char *narcache__store_dir(const narcache_store *s) {
  return s->store_dir != NULL ? s->store_dir : NARCACHE_STORE_DIR;
}

int narcache_store_set_store_dir(narcache_store *s, const char *store_dir) {
  if (s == NULL || store_dir == NULL || store_dir[0] != '/')
    return NARCACHE_EINVAL;
  size_t len = strlen(store_dir);
  char *copy = narcache__malloc(len + 1);
  if (copy == NULL)
    return NARCACHE_ENOMEM;
  memcpy(copy, store_dir, len + 1);
  narcache__free(s->store_dir);
  s->store_dir = copy;
  return NARCACHE_OK;
}

void narcache_store_free(narcache_store *s) {
  if (s == NULL)
    return;
  if (s->m.destroy != NULL)
    s->m.destroy(s->ctx);
  narcache__free(s->store_dir);
  narcache__free(s);
}

int narcache_store_redirect(char **url, narcache_store *s, int kind, const char *name,
                            size_t len) {
  if (url == NULL)
    return NARCACHE_EINVAL;
  *url = NULL;
  if (s == NULL)
    return NARCACHE_EINVAL;
  int rc = narcache_object_name_check(kind, name, len);
  if (rc < 0 || s->m.redirect == NULL)
    return rc;
  rc = s->m.redirect(s->ctx, kind, name, len, url);
  if (rc != 1 || *url == NULL) { /* 0, an error, or a backend bug */
    narcache_free(*url);
    *url = NULL;
    return rc == 1 ? NARCACHE_EIO : rc;
  }
  return 1;
}

int narcache_store_open(narcache_reader *out, narcache_store *s, int kind, const char *name,
                        size_t len) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  memset(out, 0, sizeof *out);
  out->fd = -1;
  if (s == NULL)
    return NARCACHE_EINVAL;
  int rc = narcache_object_name_check(kind, name, len);
  if (rc < 0)
    return rc;
  out->version = NARCACHE_READER_VERSION;
  rc = s->m.open(s->ctx, kind, name, len, out);
  if (rc < 0) {
    narcache_reader_close(out);
    return rc;
  }
  if (out->fd < 0 && out->read == NULL) { /* a backend bug must not crash the server */
    narcache_reader_close(out);
    return NARCACHE_EIO;
  }
  return NARCACHE_OK;
}

int narcache_store_read_all(char **out, size_t *out_len, narcache_store *s, int kind,
                            const char *name, size_t len, size_t max) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  narcache_reader r;
  int rc = narcache_store_open(&r, s, kind, name, len);
  if (rc < 0)
    return rc;
  if (r.size > max) {
    narcache_reader_close(&r);
    return NARCACHE_ELIMIT;
  }
  char *text = narcache__malloc((size_t)r.size + 1);
  if (text == NULL)
    rc = NARCACHE_ENOMEM;
  size_t done = 0;
  while (rc == 0 && done < r.size) {
    size_t got = 0;
    rc = narcache_reader_read(&r, done, text + done, (size_t)r.size - done, &got);
    if (rc == 0 && got == 0)
      rc = NARCACHE_EIO;
    done += got;
  }
  narcache_reader_close(&r);
  if (rc < 0) {
    narcache__free(text);
    return rc;
  }
  text[done] = '\0';
  *out = text;
  if (out_len != NULL)
    *out_len = done;
  return NARCACHE_OK;
}

int narcache_store_probe(narcache_store *s) {
  if (s == NULL)
    return NARCACHE_EINVAL;
  return s->m.probe != NULL ? s->m.probe(s->ctx) : NARCACHE_OK;
}

/* ------------------------------------------------------------------ */
/* Uploads                                                             */
/* ------------------------------------------------------------------ */

NARCACHE_PRINTF(3, 4)
static int upload_fail(narcache_upload *up, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(up->errmsg, sizeof up->errmsg, fmt, ap);
  va_end(ap);
  return code;
}

int narcache_store_upload_begin(narcache_upload **out, narcache_store *s, int kind,
                                const char *name, size_t len, uint64_t size) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  if (s == NULL)
    return NARCACHE_EINVAL;
  int rc = narcache_object_name_check(kind, name, len);
  if (rc < 0)
    return rc;
  if (s->m.upload_begin == NULL)
    return NARCACHE_ENOTSUP;
  if (kind == NARCACHE_OBJECT_NARINFO && size > NARCACHE_NARINFO_MAX_BYTES)
    return NARCACHE_ELIMIT;
  narcache_upload *up = narcache__calloc(1, sizeof *up);
  if (up == NULL)
    return NARCACHE_ENOMEM;
  up->store = s;
  up->kind = kind;
  memcpy(up->name, name, len);
  up->name_len = len;
  up->size = size;
  rc = s->m.upload_begin(s->ctx, kind, name, len, size, &up->backend);
  if (rc < 0) {
    narcache__free(up);
    return rc;
  }
  *out = up;
  return NARCACHE_OK;
}

int narcache_upload_write(narcache_upload *up, const void *data, size_t len) {
  if (up == NULL || (data == NULL && len != 0))
    return NARCACHE_EINVAL;
  if (up->backend == NULL)
    return NARCACHE_EMISUSE;
  if (len > up->size - up->written)
    return upload_fail(up, NARCACHE_ELIMIT, "more than the announced %llu bytes",
                       (unsigned long long)up->size);
  if (up->kind == NARCACHE_OBJECT_NARINFO && narcache__buf_append(&up->narinfo, data, len) < 0)
    return NARCACHE_ENOMEM;
  int rc = up->store->m.upload_write(up->backend, data, len);
  if (rc < 0)
    return upload_fail(up, rc, "write: %s", narcache_strerror(rc));
  up->written += len;
  return NARCACHE_OK;
}

/* A narinfo upload must be one Nix can read and must describe the path it
 * is stored under. */
static int check_narinfo(narcache_upload *up) {
  narcache_narinfo *ni = NULL;
  int rc = narcache_narinfo_new(&ni, up->store->store_dir);
  if (rc == 0)
    rc = narcache_narinfo_parse(ni, up->narinfo.data, up->narinfo.len);
  if (rc == NARCACHE_EBADNARINFO || rc == NARCACHE_ELIMIT) {
    rc = upload_fail(up, NARCACHE_EBADNARINFO, "%s", narcache_narinfo_errmsg(ni));
  } else if (rc == 0) {
    size_t dir_len = 0;
    narcache_narinfo_store_dir(ni, &dir_len);
    const char *path = narcache_narinfo_store_path(ni, NULL);
    if (memcmp(path + dir_len + 1, up->name, NARCACHE_STORE_HASH_CHARS) != 0)
      rc = upload_fail(up, NARCACHE_EBADNARINFO, "StorePath %s does not have hash part %.*s", path,
                       (int)up->name_len, up->name);
  }
  narcache_narinfo_free(ni);
  return rc;
}

int narcache_upload_commit(narcache_upload *up) {
  if (up == NULL)
    return NARCACHE_EINVAL;
  if (up->backend == NULL)
    return NARCACHE_EMISUSE;
  int rc = NARCACHE_OK;
  if (up->written != up->size)
    rc = upload_fail(up, NARCACHE_EMISUSE, "%llu of %llu bytes written",
                     (unsigned long long)up->written, (unsigned long long)up->size);
  if (rc == 0 && up->kind == NARCACHE_OBJECT_NARINFO)
    rc = check_narinfo(up);
  if (rc < 0) {
    up->store->m.upload_abort(up->backend);
    up->backend = NULL;
    return rc;
  }
  void *backend = up->backend;
  up->backend = NULL;
  rc = up->store->m.upload_commit(backend);
  if (rc == NARCACHE_ECONFLICT)
    upload_fail(up, rc, "the NAR this narinfo points to is not in the store");
  else if (rc < 0)
    upload_fail(up, rc, "commit: %s", narcache_strerror(rc));
  return rc;
}

int narcache_store_flush(narcache_store *s) {
  if (s == NULL)
    return NARCACHE_EINVAL;
  return s->m.flush != NULL ? s->m.flush(s->ctx) : NARCACHE_OK;
}

const char *narcache_upload_errmsg(const narcache_upload *up) {
  return up == NULL ? "" : up->errmsg;
}

void narcache_upload_free(narcache_upload *up) {
  if (up == NULL)
    return;
  if (up->backend != NULL)
    up->store->m.upload_abort(up->backend);
  narcache__buf_free(&up->narinfo);
  narcache__free(up);
}
