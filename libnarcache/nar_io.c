/* One-pass helpers over the dumper and restorer: dump to a descriptor,
 * restore from a descriptor, hash a path. */
#define _GNU_SOURCE
#include "common_internal.h"
#include "nar_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

/* Output is gathered into blocks of this size; file regions at least
 * SENDFILE_MIN long go straight from the page cache with sendfile. */
#define STAGING_SIZE (256 * 1024)
#define SENDFILE_MIN (128 * 1024)
#define HASH_CHUNK (128 * 1024)
#define RESTORE_CHUNK (1024 * 1024)

static void clear_err(char *errbuf, size_t errbuf_size) {
  if (errbuf != NULL && errbuf_size > 0)
    errbuf[0] = '\0';
}

/* "subject[: problem][: strerror(err)]" into the caller's buffer. */
static void set_err(char *errbuf, size_t errbuf_size, const char *subject, const char *problem,
                    int err) {
  if (errbuf == NULL || errbuf_size == 0)
    return;
  snprintf(errbuf, errbuf_size, "%s%s%s", subject, problem != NULL ? ": " : "",
           problem != NULL ? problem : "");
  if (err != 0) {
    size_t len = strlen(errbuf);
    snprintf(errbuf + len, errbuf_size - len, ": %s", strerror(err));
  }
}

/* ---- dump ------------------------------------------------------------------- */

typedef struct dump_sink {
  int fd;
  int sendfile_ok;
  char *staging;
  size_t used;
} dump_sink;

static int flush(dump_sink *s) {
  int rc = narcache__write_all(s->fd, s->staging, s->used);
  s->used = 0;
  return rc;
}

/* Copy a file region through the staging buffer. The last read asks for
 * one byte more than the region when there is room, so a file that grew
 * is noticed without another system call; a short read means it shrank.
 * Either must abort the NAR. */
static int copy_region(dump_sink *s, const narcache_nar_segment *seg, int *changed) {
  uint64_t done = 0;
  int probed = 0;
  while (done < seg->length) {
    if (s->used == STAGING_SIZE && flush(s) < 0)
      return -1;
    size_t room = STAGING_SIZE - s->used;
    uint64_t left = seg->length - done;
    size_t want = left < room ? (size_t)left : room;
    probed = left < room;
    ssize_t n = pread(seg->fd, s->staging + s->used, want + (size_t)probed,
                      (off_t)(seg->file_offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n == 0 || (size_t)n > want) {
      *changed = 1;
      return -1;
    }
    s->used += (size_t)n;
    done += (uint64_t)n;
    if (probed && (size_t)n < want) { /* a short read of a regular file is its end */
      *changed = 1;
      return -1;
    }
  }
  struct stat st;
  if (!probed && (fstat(seg->fd, &st) != 0 ||
                  (uint64_t)st.st_size != seg->file_offset + seg->length)) {
    *changed = 1;
    return -1;
  }
  return 0;
}

/* Send a large region without copying it through user space. Falls back
 * to copy_region when the kernel refuses sendfile for this output. */
static int send_region(dump_sink *s, const narcache_nar_segment *seg, int *changed) {
  if (s->used > 0 && flush(s) < 0)
    return -1;
  off_t offset = (off_t)seg->file_offset;
  uint64_t left = seg->length;
  while (left > 0) {
    size_t chunk = left < (1u << 30) ? (size_t)left : (1u << 30);
    ssize_t n = sendfile(s->fd, seg->fd, &offset, chunk);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EINVAL || errno == ENOSYS) && left == seg->length) {
      s->sendfile_ok = 0;
      return copy_region(s, seg, changed);
    }
    if (n < 0)
      return -1;
    if (n == 0) {
      *changed = 1;
      return -1;
    }
    left -= (uint64_t)n;
  }
  /* The file must not have grown either: the NAR records its size. */
  struct stat st;
  if (fstat(seg->fd, &st) != 0 || (uint64_t)st.st_size != seg->file_offset + seg->length) {
    *changed = 1;
    return -1;
  }
  return 0;
}

/* A pipe's default 64 KiB makes writer and reader take turns every few
 * dozen small files; a larger buffer (best effort, within the system's
 * pipe-max-size) lets both run. */
static void widen_pipe(int fd) {
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode))
    (void)fcntl(fd, F_SETPIPE_SZ, 1024 * 1024);
}

/* Drive the dumper: headers and small files are gathered in the staging
 * buffer (small files read ahead by worker threads), large files go by
 * sendfile. */
static int dump_loop(narcache_nar_dumper *d, dump_sink *sink, int *changed) {
  for (;;) {
    narcache_outbuf out = {sink->staging, STAGING_SIZE, sink->used};
    int more = narcache__nar_dumper_read_upto(d, &out, sink->sendfile_ok ? SENDFILE_MIN : 0);
    sink->used = out.pos;
    if (more < 0)
      return more;
    if (more == 2) {
      narcache_nar_segment seg = {NARCACHE_NAR_SEGMENT_VERSION, 0, 0, 0, NULL, -1, 0, 0};
      int rc = narcache_nar_dumper_next(d, &seg);
      if (rc < 0)
        return rc;
      if (rc == 0 || seg.kind != NARCACHE_NAR_SEG_FILE || send_region(sink, &seg, changed) < 0)
        return NARCACHE_EIO;
      continue;
    }
    if ((sink->used == STAGING_SIZE || more == 0) && sink->used > 0 && flush(sink) < 0)
      return NARCACHE_EIO;
    if (more == 0)
      return NARCACHE_OK;
  }
}

int narcache_nar_dump_path_to_fd(uint64_t *size_out, const char *path, int fd, char *errbuf,
                                 size_t errbuf_size) {
  clear_err(errbuf, errbuf_size);
  if (path == NULL || fd < 0)
    return NARCACHE_EINVAL;
  narcache_nar_dumper *d = NULL;
  narcache__readahead *ra = NULL;
  dump_sink sink = {fd, 1, narcache__malloc(STAGING_SIZE), 0};
  int rc = sink.staging != NULL ? narcache_nar_dumper_new(&d) : NARCACHE_ENOMEM;
  if (rc == 0) {
    narcache__nar_dumper_set_walk_threads(d, narcache__io_threads());
    rc = narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, path);
  }
  if (rc == 0)
    (void)narcache__readahead_start(&ra, d); /* without it: slower, same bytes */
  widen_pipe(fd);
  int changed = 0;
  if (rc == 0)
    rc = dump_loop(d, &sink, &changed);
  if (rc < 0 && narcache_nar_dumper_errmsg(d)[0] != '\0')
    set_err(errbuf, errbuf_size, narcache_nar_dumper_errmsg(d), NULL, 0);
  else if (rc < 0)
    set_err(errbuf, errbuf_size, path,
            changed ? "a file changed while being dumped" : "write failed",
            changed ? 0 : errno);
  if (rc == 0 && size_out != NULL)
    *size_out = narcache_nar_dumper_size(d);
  narcache__readahead_stop(ra);
  narcache_nar_dumper_free(d);
  narcache__free(sink.staging);
  return rc;
}

/* ---- hash ---------------------------------------------------------------------- */

int narcache_nar_hash_path(narcache_hash *hash_out, uint64_t *size_out, const char *path,
                           char *errbuf, size_t errbuf_size) {
  clear_err(errbuf, errbuf_size);
  if (hash_out == NULL || path == NULL)
    return NARCACHE_EINVAL;
  narcache_nar_dumper *d = NULL;
  narcache_hasher *h = NULL;
  char *chunk = narcache__malloc(HASH_CHUNK);
  int rc = chunk != NULL ? narcache_nar_dumper_new(&d) : NARCACHE_ENOMEM;
  if (rc == 0)
    rc = narcache_hasher_new(&h, NARCACHE_HASH_SHA256);
  if (rc == 0) {
    narcache__nar_dumper_set_walk_threads(d, narcache__io_threads());
    rc = narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, path);
  }
  narcache__readahead *ra = NULL;
  if (rc == 0)
    (void)narcache__readahead_start(&ra, d); /* without it: slower, same hash */
  /* Hash straight from the dumper's headers and read-ahead buffers. */
  const char *span;
  size_t span_len;
  int more = rc == 0;
  while (more && (more = narcache__nar_dumper_read_span(d, &span, &span_len, chunk,
                                                        HASH_CHUNK)) > 0)
    if ((rc = narcache_hasher_update(h, span, span_len)) < 0)
      break;
  if (more < 0)
    rc = more;
  if (rc == 0)
    rc = narcache_hasher_final(h, hash_out);
  if (rc == 0 && size_out != NULL)
    *size_out = narcache_nar_dumper_size(d);
  if (rc < 0 && d != NULL && narcache_nar_dumper_errmsg(d)[0] != '\0')
    set_err(errbuf, errbuf_size, narcache_nar_dumper_errmsg(d), NULL, 0);
  else if (rc < 0)
    set_err(errbuf, errbuf_size, path, narcache_strerror(rc), 0);
  narcache_hasher_free(h);
  narcache__readahead_stop(ra);
  narcache_nar_dumper_free(d);
  narcache__free(chunk);
  return rc;
}

/* ---- restore -------------------------------------------------------------------- */

int narcache_nar_restore_path_from_fd(const char *path, int fd, char *errbuf,
                                      size_t errbuf_size) {
  clear_err(errbuf, errbuf_size);
  if (path == NULL || fd < 0)
    return NARCACHE_EINVAL;
  narcache_nar_restorer *r = NULL;
  char *chunk = narcache__malloc(RESTORE_CHUNK);
  int rc = chunk != NULL ? narcache_nar_restorer_new(&r) : NARCACHE_ENOMEM;
  if (rc == 0)
    rc = narcache_nar_restorer_open(r, NARCACHE_AT_FDCWD, path);
  while (rc >= 0) {
    ssize_t n = read(fd, chunk, RESTORE_CHUNK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      set_err(errbuf, errbuf_size, path, "cannot read the NAR", errno);
      rc = NARCACHE_EIO;
      break;
    }
    if (n == 0) {
      rc = narcache_nar_restorer_finish(r);
      break;
    }
    narcache_inbuf in = {chunk, (size_t)n, 0};
    rc = narcache_nar_restorer_write(r, &in);
  }
  if (rc < 0 && r != NULL && narcache_nar_restorer_errmsg(r)[0] != '\0')
    set_err(errbuf, errbuf_size, narcache_nar_restorer_errmsg(r), NULL, 0);
  else if (rc < 0 && (errbuf == NULL || errbuf[0] == '\0'))
    set_err(errbuf, errbuf_size, path, narcache_strerror(rc), 0);
  narcache_nar_restorer_free(r);
  narcache__free(chunk);
  return rc < 0 ? rc : NARCACHE_OK;
}
