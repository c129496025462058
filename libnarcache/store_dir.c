/* The "dir" backend: a binary-cache directory as `nix copy --to file://`
 * lays it out. Everything is opened relative to the directory's fd; object
 * names were checked by store.c (no '/', no leading '.'). */
#define _GNU_SOURCE
#include "buffer_internal.h"
#include "common_internal.h"
#include "store_internal.h"
#include "narcache/narinfo.h"
#include "narcache/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* A committed upload not yet published (NARCACHE_STORE_DIR_BATCH): its
 * temporary file is complete but not yet synced or renamed. */
typedef struct staged_object {
  int kind;
  char temp[320];
  char final[320];
} staged_object;

/* Batch mode publishes by itself once this many objects wait, which keeps
 * memory (and the NAR lookups of narinfo commits) bounded. */
#define MAX_STAGED 1024

typedef struct dir_store {
  int root_fd;
  unsigned flags;
  uint64_t min_free; /* bytes an upload must leave free (0: no floor) */
  atomic_uint next_temp; /* temp file names: unique within the process */
  /* batch mode only */
  pthread_mutex_t stage_lock; /* held across a whole flush */
  staged_object *staged;
  size_t n_staged;
} dir_store;

typedef struct dir_upload {
  dir_store *store;
  int dir_fd; /* owned unless it is the root */
  int fd;
  int kind;
  char temp[320];
  char final[320];
  narcache__buf narinfo; /* kept to find the NAR it points to */
} dir_upload;

/* The subdirectory holding objects of a kind (NULL: the root). */
static const char *kind_dir(int kind) {
  return kind == NARCACHE_OBJECT_NAR ? "nar" : kind == NARCACHE_OBJECT_LOG ? "log" : NULL;
}

/* Subdirectory and file name of an object. */
static const char *object_place(int kind, const char *name, size_t len, char *file,
                                size_t file_size) {
  if (kind == NARCACHE_OBJECT_CACHE_INFO)
    snprintf(file, file_size, "nix-cache-info");
  else if (kind == NARCACHE_OBJECT_NARINFO)
    snprintf(file, file_size, "%.*s.narinfo", (int)len, name);
  else if (kind == NARCACHE_OBJECT_LISTING)
    snprintf(file, file_size, "%.*s.ls", (int)len, name);
  else
    snprintf(file, file_size, "%.*s", (int)len, name);
  return kind_dir(kind);
}

/* The directory holding an object: the root itself, or a subdirectory
 * opened without following a symlink. With `create`, make it first. */
static int open_dir(dir_store *s, const char *sub, int create, int *dir_fd) {
  if (sub == NULL) {
    *dir_fd = s->root_fd;
    return NARCACHE_OK;
  }
  if (create && mkdirat(s->root_fd, sub, 0755) < 0 && errno != EEXIST)
    return narcache__store_errno(errno);
  int fd = openat(s->root_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return narcache__store_errno(errno);
  *dir_fd = fd;
  return NARCACHE_OK;
}

static void close_dir(dir_store *s, int dir_fd) {
  if (dir_fd >= 0 && dir_fd != s->root_fd)
    close(dir_fd);
}

static int dir_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  dir_store *s = ctx;
  char file[320];
  const char *sub = object_place(kind, name, len, file, sizeof file);
  int dir_fd = -1;
  int rc = open_dir(s, sub, 0, &dir_fd);
  if (rc < 0)
    return rc;
  /* O_NONBLOCK: a FIFO planted in the cache must not hang a worker. */
  int fd = openat(dir_fd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  int saved = errno;
  close_dir(s, dir_fd);
  if (fd < 0)
    return narcache__store_errno(saved);
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return NARCACHE_ENOTFOUND;
  }
  narcache_reader_init_fd(out, fd, 0, (uint64_t)st.st_size);
  return NARCACHE_OK;
}

/* A fresh temporary name next to the final one: hidden (leading '.', which
 * no object name has), unique per process and per call, random enough
 * across processes sharing the directory. */
static void temp_name(dir_store *s, const char *final, char *out, size_t size) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  unsigned n = atomic_fetch_add(&s->next_temp, 1);
  snprintf(out, size, ".tmp-%.200s-%ld-%u-%lx", final, (long)getpid(), n,
           (unsigned long)ts.tv_nsec);
}

/* Would `size` more bytes leave less than the floor free? */
static int below_floor(dir_store *s, uint64_t size) {
  struct statvfs fs;
  if (s->min_free == 0 || fstatvfs(s->root_fd, &fs) != 0)
    return 0;
  uint64_t avail = (uint64_t)fs.f_bavail * (uint64_t)fs.f_frsize;
  return avail < s->min_free || avail - s->min_free < size;
}

static int dir_upload_begin(void *ctx, int kind, const char *name, size_t len, uint64_t size,
                            void **upload) {
  dir_store *s = ctx;
  if (below_floor(s, size))
    return NARCACHE_ENOSPACE;
  dir_upload *up = narcache__calloc(1, sizeof *up);
  if (up == NULL)
    return NARCACHE_ENOMEM;
  up->store = s;
  up->kind = kind;
  up->fd = -1;
  const char *sub = object_place(kind, name, len, up->final, sizeof up->final);
  int rc = open_dir(s, sub, 1, &up->dir_fd);
  if (rc < 0) {
    narcache__free(up);
    return rc;
  }
  for (int attempt = 0; attempt < 100 && up->fd < 0; attempt++) {
    temp_name(s, up->final, up->temp, sizeof up->temp);
    up->fd = openat(up->dir_fd, up->temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0644);
    if (up->fd < 0 && errno != EEXIST)
      break;
  }
  if (up->fd < 0) {
    rc = narcache__store_errno(errno);
    close_dir(s, up->dir_fd);
    narcache__free(up);
    return rc;
  }
  *upload = up;
  return NARCACHE_OK;
}

static int dir_upload_write(void *upload, const void *data, size_t len) {
  dir_upload *up = upload;
  if (up->kind == NARCACHE_OBJECT_NARINFO && narcache__buf_append(&up->narinfo, data, len) < 0)
    return NARCACHE_ENOMEM;
  return narcache__store_write_all(up->fd, data, len);
}

static void dir_upload_release(dir_upload *up, int remove_temp) {
  if (up->fd >= 0)
    close(up->fd);
  if (remove_temp)
    unlinkat(up->dir_fd, up->temp, 0);
  close_dir(up->store, up->dir_fd);
  narcache__buf_free(&up->narinfo);
  narcache__free(up);
}

static void dir_upload_abort(void *upload) { dir_upload_release(upload, 1); }

/* Whether a NAR of that name waits to be published (stage_lock held). */
static int nar_is_staged(const dir_store *s, const char *file) {
  for (size_t i = 0; i < s->n_staged; i++)
    if (s->staged[i].kind == NARCACHE_OBJECT_NAR && strcmp(s->staged[i].final, file) == 0)
      return 1;
  return 0;
}

/* A narinfo goes public only after the NAR it names: a client that sees
 * the narinfo must be able to fetch the NAR. URLs outside nar/ (absolute
 * URLs to elsewhere) are the uploader's business. */
static int check_nar_present(dir_upload *up) {
  char name[300] = "nar/";
  int rc = narcache__store_narinfo_nar(up->narinfo.data, up->narinfo.len, name + 4, sizeof name - 4);
  if (rc != 1)
    return rc;
  struct stat st;
  if (!nar_is_staged(up->store, name + 4) &&
      (fstatat(up->store->root_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)))
    return NARCACHE_ECONFLICT;
  return NARCACHE_OK;
}

/* ------------------------------------------------------------------ */
/* Batch mode: commits are staged, a flush publishes them together      */
/* ------------------------------------------------------------------ */

/* Publish everything staged (stage_lock held). One syncfs() makes every
 * staged file durable; then the NARs, listings and logs are renamed into
 * place and their directories synced, and only then the narinfos, so a
 * crash at any point leaves no narinfo whose NAR is missing or partial.
 * On an error the objects not yet renamed are dropped. */
static int flush_locked(dir_store *s) {
  if (s->n_staged == 0)
    return NARCACHE_OK;
  int rc = syncfs(s->root_fd) < 0 ? narcache__store_errno(errno) : NARCACHE_OK;
  static const char *const dirs[] = {"nar", "log", NULL};
  for (int pass = 0; pass < 2; pass++) { /* 0: all but narinfo; 1: narinfo */
    for (size_t i = 0; i < s->n_staged; i++) {
      staged_object *o = &s->staged[i];
      if ((o->kind == NARCACHE_OBJECT_NARINFO) != (pass == 1) || o->temp[0] == '\0')
        continue;
      const char *sub = kind_dir(o->kind);
      int dir_fd = s->root_fd;
      if (rc == 0 && open_dir(s, sub, 0, &dir_fd) < 0)
        rc = NARCACHE_EIO;
      if (rc == 0 && renameat(dir_fd, o->temp, dir_fd, o->final) < 0)
        rc = narcache__store_errno(errno);
      if (rc < 0) {
        int fd = s->root_fd;
        if (open_dir(s, sub, 0, &fd) == 0) {
          unlinkat(fd, o->temp, 0);
          close_dir(s, fd);
        }
      }
      o->temp[0] = '\0';
      if (dir_fd != s->root_fd)
        close_dir(s, dir_fd);
    }
    /* The renames of this pass are durable before the next one starts. */
    for (int d = 0; d < 3 && rc == 0; d++) {
      int dir_fd = s->root_fd;
      if (d < 2 && (open_dir(s, dirs[d], 0, &dir_fd) < 0))
        continue; /* never created: nothing was renamed there */
      if (fsync(dir_fd) < 0)
        rc = narcache__store_errno(errno);
      close_dir(s, dir_fd);
    }
  }
  s->n_staged = 0;
  return rc;
}

/* Commit in batch mode: check, then queue the finished temporary file. */
static int stage_upload(dir_upload *up) {
  dir_store *s = up->store;
  pthread_mutex_lock(&s->stage_lock);
  int rc = NARCACHE_OK;
  if (s->n_staged == MAX_STAGED)
    rc = flush_locked(s);
  if (rc == 0 && up->kind == NARCACHE_OBJECT_NARINFO)
    rc = check_nar_present(up);
  if (rc == 0) {
    staged_object *o = &s->staged[s->n_staged++];
    o->kind = up->kind;
    memcpy(o->temp, up->temp, sizeof o->temp);
    memcpy(o->final, up->final, sizeof o->final);
  }
  pthread_mutex_unlock(&s->stage_lock);
  dir_upload_release(up, rc < 0);
  return rc;
}

static int dir_flush(void *ctx) {
  dir_store *s = ctx;
  if (!(s->flags & NARCACHE_STORE_DIR_BATCH))
    return NARCACHE_OK;
  pthread_mutex_lock(&s->stage_lock);
  int rc = flush_locked(s);
  pthread_mutex_unlock(&s->stage_lock);
  return rc;
}

static int dir_upload_commit(void *upload) {
  dir_upload *up = upload;
  if (up->store->flags & NARCACHE_STORE_DIR_BATCH)
    return stage_upload(up);
  int rc = NARCACHE_OK;
  if (fsync(up->fd) < 0)
    rc = narcache__store_errno(errno);
  if (rc == 0 && up->kind == NARCACHE_OBJECT_NARINFO)
    rc = check_nar_present(up);
  if (rc == 0 && renameat(up->dir_fd, up->temp, up->dir_fd, up->final) < 0)
    rc = narcache__store_errno(errno);
  /* The rename is durable only once the directory is on disk. */
  if (rc == 0 && fsync(up->dir_fd) < 0)
    rc = narcache__store_errno(errno);
  dir_upload_release(up, rc < 0);
  return rc;
}

static int dir_probe(void *ctx) {
  dir_store *s = ctx;
  int fd = openat(s->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return narcache__store_errno(errno) == NARCACHE_ENOTFOUND ? NARCACHE_EIO : narcache__store_errno(errno);
  close(fd);
  return NARCACHE_OK;
}

static void dir_destroy(void *ctx) {
  dir_store *s = ctx;
  /* Unflushed commits were never published: leave no trace of them. */
  for (size_t i = 0; i < s->n_staged; i++) {
    int fd = s->root_fd;
    if (open_dir(s, kind_dir(s->staged[i].kind), 0, &fd) == 0) {
      unlinkat(fd, s->staged[i].temp, 0);
      close_dir(s, fd);
    }
  }
  if (s->flags & NARCACHE_STORE_DIR_BATCH)
    pthread_mutex_destroy(&s->stage_lock);
  narcache__free(s->staged);
  close(s->root_fd);
  narcache__free(s);
}

/* Temporary files older than this are left over from a crash: no upload
 * takes a day between its first byte and its rename. */
#define STALE_TEMP_SECONDS (24 * 60 * 60)

/* The writer's pid in a temporary name ".tmp-<final>-<pid>-<n>-<hex>"
 * (see temp_name), or -1. */
static long temp_writer_pid(const char *name) {
  const char *dash[3] = {NULL, NULL, NULL}; /* the last three '-' */
  for (const char *p = name; *p != '\0'; p++)
    if (*p == '-') {
      dash[0] = dash[1];
      dash[1] = dash[2];
      dash[2] = p;
    }
  if (dash[0] == NULL)
    return -1;
  char *end = NULL;
  long pid = strtol(dash[0] + 1, &end, 10);
  return end == dash[1] && pid > 0 ? pid : -1;
}

/* Left over by a writer that is gone: its process no longer exists (it
 * crashed or was killed), or the file is a day old. A writer on another
 * machine sharing the directory (NFS) or in another pid namespace is not
 * seen: its temporary files go after the day. */
static int stale_temp(const char *name, const struct stat *st, time_t now) {
  if (now - st->st_mtime > STALE_TEMP_SECONDS)
    return 1;
  long pid = temp_writer_pid(name);
  return pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Remove stale ".tmp-*" files from one directory of the cache. */
static void remove_stale_temps(int root_fd, const char *sub) {
  int fd = sub == NULL ? dup(root_fd)
                       : openat(root_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return;
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    close(fd);
    return;
  }
  time_t now = time(NULL);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    struct stat st;
    if (strncmp(e->d_name, ".tmp-", 5) == 0 &&
        fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
        stale_temp(e->d_name, &st, now))
      unlinkat(dirfd(d), e->d_name, 0);
  }
  closedir(d);
}

int narcache_store_dir_new(narcache_store **out, const char *path, unsigned flags) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  unsigned known = NARCACHE_STORE_DIR_WRITABLE | NARCACHE_STORE_DIR_BATCH;
  if (path == NULL || (flags & ~known) != 0 ||
      ((flags & NARCACHE_STORE_DIR_BATCH) && !(flags & NARCACHE_STORE_DIR_WRITABLE)))
    return NARCACHE_EINVAL;
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return narcache__store_errno(errno);
  dir_store *s = narcache__calloc(1, sizeof *s);
  if (s == NULL) {
    close(fd);
    return NARCACHE_ENOMEM;
  }
  s->root_fd = fd;
  s->flags = flags;
  atomic_init(&s->next_temp, 0);
  if (flags & NARCACHE_STORE_DIR_BATCH) {
    s->staged = narcache__calloc(MAX_STAGED, sizeof *s->staged);
    if (s->staged == NULL) {
      close(fd);
      narcache__free(s);
      return NARCACHE_ENOMEM;
    }
    pthread_mutex_init(&s->stage_lock, NULL);
  }
  narcache_store_methods m = {
      .version = NARCACHE_STORE_METHODS_VERSION,
      .open = dir_open,
      .probe = dir_probe,
      .destroy = dir_destroy,
      .flush = dir_flush,
  };
  if (flags & NARCACHE_STORE_DIR_WRITABLE) {
    remove_stale_temps(fd, NULL);
    remove_stale_temps(fd, "nar");
    remove_stale_temps(fd, "log");
    m.upload_begin = dir_upload_begin;
    m.upload_write = dir_upload_write;
    m.upload_commit = dir_upload_commit;
    m.upload_abort = dir_upload_abort;
  }
  return narcache_store_new(out, &m, s);
}

int narcache_store_dir_set_min_free(narcache_store *store, uint64_t bytes) {
  dir_store *s = narcache__store_backend(store, (const void *)dir_open);
  if (s == NULL)
    return NARCACHE_EINVAL;
  s->min_free = bytes;
  return NARCACHE_OK;
}
