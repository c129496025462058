/* The NAR restorer on arbitrary bytes, into a fresh directory per input.
 *
 * Input layout: 3 header bytes, then the NAR bytes (at most 1 MiB).
 *   [0] bits0-2 chunking (pieces of at least len / 1024 bytes, empty
 *       calls aside): one piece, 1-byte, fixed 1 + [1], random 1..1 + [1],
 *       random 0..1 + [1] % 16 (with empty calls), split once at
 *       len * [1] / 256; bit3 abandon: stop feeding at len * [1] / 256 and
 *       free the restorer without finish(); bit6 the destination is given
 *       as an absolute path (else relative to a directory descriptor).
 *   [1] chunking parameter.
 *   [2] limits, b & 3: none; depth 1 + (b >> 2) % 16; names 1 + (b >> 2)
 *       and targets 1 + 2 * (b >> 2) bytes; size 64 + 64 * (b >> 2).
 * Inputs with more than 320 nodes are skipped (each costs file-system work).
 *
 * Each input gets a mkdtemp directory (under $TMPDIR, else /tmp) holding an
 * empty directory "sentinel"; the restorer builds "dest" next to it.
 * Checked: the result is the parser's verdict on the same bytes with the
 * same limits (0, or the same error code, never EIO), returned by write()
 * or finish(), sticky, with a message; write() returns 1 exactly once the
 * archive is complete. After a failure or an abandoned restore the
 * directory holds "sentinel" alone (no destination, no hidden temporary);
 * after success it holds exactly "sentinel" and "dest", "sentinel" is
 * still empty (a symlink such as "../sentinel/x" stays a symlink), the
 * modes are those of nix-store --restore (directories and executables
 * 0755, files 0644), dumping "dest" with narcache_nar_dump_path_to_fd and
 * with a dumper gives the input byte for byte (the restorer only accepts
 * canonical NARs), the dumper's listing equals the lister's JSON of the
 * input, and a second restore to "dest" is refused (EIO, EEXIST). The
 * directory is then removed with *at() calls that never follow symlinks. */
#define _GNU_SOURCE
#include <narcache.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NAME "fuzz_nar_restore"
#include "fuzz_fs.h"

#define HEADER 3
#define MAX_NAR (1u << 20)
#define MAX_NODES 320

static uint32_t xorshift(uint32_t *s) {
  uint32_t x = *s;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *s = x;
}

/* Size of the next chunk (may be 0 in mode 4), at most `left`. */
static size_t next_chunk(unsigned mode, uint8_t param, uint32_t *rng, unsigned call,
                         size_t split, size_t left) {
  size_t n;
  switch (mode) {
  case 1: n = 1; break;
  case 2: n = (size_t)param + 1; break;
  case 3: n = 1 + xorshift(rng) % ((uint32_t)param + 1); break;
  case 4: n = xorshift(rng) % ((uint32_t)param % 16 + 2); break;
  case 5: n = call == 0 ? split : left; break;
  default: n = left; break;
  }
  return n < left ? n : left;
}

/* Entries of directory `name` in `dirfd` other than "." and "..", and
 * whether each of `a` and `b` is among them. */
static int list_dir(int dirfd, const char *name, const char *a, int *has_a, const char *b,
                    int *has_b) {
  int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  CHECK(fd >= 0);
  DIR *dir = fdopendir(fd);
  CHECK(dir != NULL);
  int count = 0;
  struct dirent *e;
  while ((e = readdir(dir)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    count++;
    if (a != NULL && strcmp(e->d_name, a) == 0)
      *has_a = 1;
    else if (b != NULL && strcmp(e->d_name, b) == 0)
      *has_b = 1;
    else
      fprintf(stderr, "fuzz_nar_restore: unexpected entry \"%s\"\n", e->d_name);
  }
  closedir(dir);
  return count;
}

/* The temporary directory holds "sentinel" (empty) and, if `dest`, "dest". */
static void check_tmp(int tmpfd, int dest) {
  int has_sentinel = 0, has_dest = 0;
  int n = list_dir(tmpfd, ".", "sentinel", &has_sentinel, "dest", &has_dest);
  CHECK(has_sentinel && has_dest == dest && n == 1 + dest);
  CHECK(list_dir(tmpfd, "sentinel", NULL, NULL, NULL, NULL) == 0);
}

static void set_limits(int (*set)(void *, int, uint64_t), void *obj, uint8_t b) {
  uint64_t v = b >> 2;
  switch (b & 3) {
  case 1: CHECK(set(obj, NARCACHE_NAR_LIMIT_DEPTH, 1 + v % 16) == 0); break;
  case 2:
    CHECK(set(obj, NARCACHE_NAR_LIMIT_NAME_LEN, 1 + v) == 0);
    CHECK(set(obj, NARCACHE_NAR_LIMIT_TARGET_LEN, 1 + 2 * v) == 0);
    break;
  case 3: CHECK(set(obj, NARCACHE_NAR_LIMIT_SIZE, 64 + 64 * v) == 0); break;
  default: break;
  }
}

/* The set_limit functions differ only in their object type. */
static int set_parser(void *o, int l, uint64_t v) { return narcache_nar_parser_set_limit(o, l, v); }
static int set_restorer(void *o, int l, uint64_t v) {
  return narcache_nar_restorer_set_limit(o, l, v);
}

/* The parser's verdict on the whole NAR; -1000 if it has too many nodes. */
static int verdict(const uint8_t *nar, size_t len, uint8_t limits) {
  narcache_nar_parser *p = NULL;
  CHECK(narcache_nar_parser_new(&p) == 0);
  set_limits(set_parser, p, limits);
  narcache_inbuf in = {len != 0 ? nar : NULL, len, 0};
  narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
  int rc, nodes = 0;
  while ((rc = narcache_nar_parser_next(p, &in, &ev)) > 0)
    if ((ev.type == NARCACHE_NAR_DIR_BEGIN || ev.type == NARCACHE_NAR_FILE_BEGIN ||
         ev.type == NARCACHE_NAR_SYMLINK) && ++nodes > MAX_NODES)
      break;
  if (rc == 0)
    rc = narcache_nar_parser_finish(p);
  narcache_nar_parser_free(p);
  return nodes > MAX_NODES ? -1000 : rc;
}

/* After a successful restore: the tree dumps back to the input. */
static void check_restored(int tmpfd, const char *dest, const uint8_t *nar, size_t len) {
  int fd = memfd_create("fuzz_nar_restore", MFD_CLOEXEC);
  CHECK(fd >= 0);
  uint64_t dumped = 0;
  char err[256];
  CHECK(narcache_nar_dump_path_to_fd(&dumped, dest, fd, err, sizeof err) == 0);
  CHECK(dumped == len);
  uint8_t *back = malloc(len + 1);
  CHECK(back != NULL);
  CHECK(pread(fd, back, len + 1, 0) == (ssize_t)len && memcmp(back, nar, len) == 0);
  close(fd);

  narcache_nar_dumper *d = NULL;
  CHECK(narcache_nar_dumper_new(&d) == 0);
  CHECK(narcache_nar_dumper_open(d, tmpfd, "dest") == 0);
  CHECK(narcache_nar_dumper_size(d) == len);
  narcache_outbuf out = {back, len + 1, 0};
  int rc;
  while ((rc = narcache_nar_dumper_read(d, &out)) == 1)
    CHECK(out.pos < len);
  CHECK(rc == 0 && out.pos == len && memcmp(back, nar, len) == 0);
  free(back);

  char *listing = NULL, *json = NULL;
  size_t listing_len = 0, json_len = 0;
  CHECK(narcache_nar_dumper_listing(&listing, &listing_len, d) == 0);
  narcache_nar_lister *l = NULL;
  CHECK(narcache_nar_lister_new(&l) == 0);
  narcache_inbuf in = {nar, len, 0};
  CHECK(narcache_nar_lister_write(l, &in) == 1);
  CHECK(narcache_nar_lister_finish(l, &json, &json_len) == 0);
  CHECK(listing_len == json_len && memcmp(listing, json, json_len) == 0);
  narcache_free(listing);
  narcache_free(json);
  narcache_nar_lister_free(l);
  narcache_nar_dumper_free(d);

  /* The destination exists now: a second restore is refused at open. */
  narcache_nar_restorer *r = NULL;
  CHECK(narcache_nar_restorer_new(&r) == 0);
  CHECK(narcache_nar_restorer_open(r, tmpfd, "dest") == NARCACHE_EIO);
  CHECK(narcache_nar_restorer_syserr(r) == EEXIST);
  narcache_nar_restorer_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < HEADER || size - HEADER > MAX_NAR)
    return 0;
  unsigned mode = data[0] & 7;
  int abandon = (data[0] & 8) != 0, absolute = (data[0] & 0x40) != 0;
  uint8_t param = data[1], limits = data[2];
  const uint8_t *nar = data + HEADER;
  size_t nar_len = size - HEADER;
  int expected = verdict(nar, nar_len, limits);
  if (expected == -1000)
    return 0;
  CHECK(expected == 0 || expected == NARCACHE_EBADNAR || expected == NARCACHE_ELIMIT);

  const char *base = getenv("TMPDIR");
  char dest[2100];
  snprintf(tmp, sizeof tmp, "%s/fuzz_nar_restore.XXXXXX",
           base != NULL && base[0] != '\0' ? base : "/tmp");
  CHECK(mkdtemp(tmp) != NULL);
  snprintf(dest, sizeof dest, "%s/dest", tmp);
  int tmpfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  CHECK(tmpfd >= 0);
  CHECK(mkdirat(tmpfd, "sentinel", 0755) == 0);

  narcache_nar_restorer *r = NULL;
  CHECK(narcache_nar_restorer_new(&r) == 0);
  set_limits(set_restorer, r, limits);
  CHECK(narcache_nar_restorer_open(r, absolute ? NARCACHE_AT_FDCWD : tmpfd,
                                   absolute ? dest : "dest") == 0);

  size_t split = (size_t)((uint64_t)nar_len * param / 256);
  size_t stop = abandon ? split : nar_len, fed = 0, empties = 0;
  uint32_t rng = 0x9e3779b9u ^ param;
  unsigned call = 0;
  int rc = 0, complete = 0;
  while (rc >= 0 && (fed < stop || (call == 0 && !abandon))) {
    size_t n = next_chunk(mode, param, &rng, call++, split, stop - fed);
    if (n != 0 && n < nar_len / 1024) /* a write(2) per piece of file data */
      n = nar_len / 1024 < stop - fed ? nar_len / 1024 : stop - fed;
    if (n == 0 && fed < stop && ++empties > 4096)
      n = 1;
    uint8_t *buf = n != 0 ? malloc(n) : NULL; /* exact size: reads past it are caught */
    CHECK(n == 0 || buf != NULL);
    if (n != 0)
      memcpy(buf, nar + fed, n);
    narcache_inbuf in = {buf, n, 0};
    rc = narcache_nar_restorer_write(r, &in);
    free(buf);
    fed += n;
    if (rc >= 0) {
      CHECK(in.pos == n && (rc == 0 || rc == 1));
      CHECK(!complete || n == 0); /* bytes after the end are an error */
      complete = rc;
    }
  }
  if (abandon) {
    CHECK(rc >= 0 || rc == expected);
    if (rc < 0)
      check_tmp(tmpfd, 0); /* already undone */
    narcache_nar_restorer_free(r);
    check_tmp(tmpfd, 0);
  } else {
    if (rc >= 0) {
      CHECK(complete == (expected == 0));
      rc = narcache_nar_restorer_finish(r);
    } else {
      CHECK(narcache_nar_restorer_finish(r) == rc); /* sticky */
    }
    CHECK(rc == expected);
    if (rc < 0) {
      CHECK(narcache_nar_restorer_errmsg(r)[0] != '\0');
      check_tmp(tmpfd, 0); /* already undone, before free() */
      narcache_nar_restorer_free(r);
      check_tmp(tmpfd, 0);
    } else {
      check_tmp(tmpfd, 1);
      narcache_nar_restorer_free(r);
      check_tmp(tmpfd, 1);
      check_restored(tmpfd, dest, nar, nar_len);
      check_tmp(tmpfd, 1);
      remove_tree(tmpfd, "dest", 1);
    }
  }
  close(tmpfd);
  remove_tree(AT_FDCWD, tmp, 0);
  tmp[0] = '\0';
  return 0;
}
