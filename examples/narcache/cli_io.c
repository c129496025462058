/* narcache CLI: reading key and narinfo files, creating files without ever
 * overwriting, replacing files atomically. */
#define _XOPEN_SOURCE 700
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A call through a volatile function pointer cannot be proven dead, so
 * the compiler keeps the wipe even right before the buffer goes away. */
static void *(*const volatile wipe_memset)(void *, int, size_t) = memset;

void cli_wipe(void *p, size_t len) {
  if (p != NULL && len > 0)
    wipe_memset(p, 0, len);
}

const char *cli_option_value(int argc, char **argv, int *i, const char *name, int *missing) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (strncmp(a, name, n) != 0)
    return NULL;
  if (a[n] == '=')
    return a + n + 1;
  if (a[n] != '\0')
    return NULL;
  if (*i + 1 >= argc) {
    *missing = 1;
    return NULL;
  }
  return argv[++*i];
}

int cli_flush_stdout(void) {
  if (fflush(stdout) != 0 || ferror(stdout)) {
    cli_error("cannot write to stdout: %s", strerror(errno));
    return -1;
  }
  return 0;
}

/* ---- reading ------------------------------------------------------------------ */

static int open_for_reading(const char *path, struct stat *st) {
  int fd;
  do
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  while (fd < 0 && errno == EINTR);
  if (fd < 0)
    return -1;
  if (fstat(fd, st) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  if (S_ISDIR(st->st_mode)) {
    close(fd);
    errno = EISDIR;
    return -1;
  }
  return fd;
}

/* Read until EOF or `cap` bytes. Returns the count, or -1 (errno set). */
static ssize_t read_upto(int fd, char *buf, size_t cap) {
  size_t got = 0;
  while (got < cap) {
    ssize_t n = read(fd, buf + got, cap - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

char *cli_read_file(const char *path, size_t max, size_t *len, struct stat *st_out, char *err,
                    size_t err_size) {
  struct stat st;
  int fd = open_for_reading(path, &st);
  if (fd < 0) {
    snprintf(err, err_size, "%s", strerror(errno));
    return NULL;
  }
  if (S_ISREG(st.st_mode) && st.st_size > 0 && (uintmax_t)st.st_size > max) {
    close(fd);
    snprintf(err, err_size, "file is larger than %zu bytes", max);
    return NULL;
  }
  /* Regular files: their size plus one byte to see EOF; others grow. */
  size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 4096;
  size_t got = 0;
  char *buf = NULL;
  for (;;) {
    if (cap > max + 1)
      cap = max + 1;
    char *p = realloc(buf, cap + 1);
    if (p == NULL) {
      snprintf(err, err_size, "out of memory");
      goto fail;
    }
    buf = p;
    ssize_t n = read_upto(fd, buf + got, cap - got);
    if (n < 0) {
      snprintf(err, err_size, "%s", strerror(errno));
      goto fail;
    }
    got += (size_t)n;
    if (got > max) {
      snprintf(err, err_size, "file is larger than %zu bytes", max);
      goto fail;
    }
    if (got < cap)
      break; /* EOF */
    cap *= 2;
  }
  close(fd);
  buf[got] = '\0';
  *len = got;
  if (st_out != NULL)
    *st_out = st;
  return buf;
fail:
  close(fd);
  free(buf);
  return NULL;
}

int cli_load_key_file(narcache_key **out, const char *path, int secret) {
  *out = NULL;
  const char *what = secret ? "secret" : "public";
  struct stat st;
  int fd = open_for_reading(path, &st);
  if (fd < 0) {
    cli_error("%s: %s", path, strerror(errno));
    return -1;
  }
  /* One byte more than allowed, to tell "exactly at the limit" from "over". */
  char text[CLI_KEY_FILE_MAX + 1];
  ssize_t n = (S_ISREG(st.st_mode) && st.st_size > CLI_KEY_FILE_MAX)
                  ? CLI_KEY_FILE_MAX + 1
                  : read_upto(fd, text, sizeof text);
  int e = errno;
  close(fd);
  int ret = -1;
  if (n < 0) {
    cli_error("%s: %s", path, strerror(e));
  } else if (n > CLI_KEY_FILE_MAX) {
    cli_error("%s: key file is larger than %d bytes", path, CLI_KEY_FILE_MAX);
  } else if (n == 0) {
    cli_error("%s: empty key file", path);
  } else {
    size_t len = (size_t)n, at = 0;
    int rc = secret ? narcache_key_parse_secret(out, text, len, &at)
                    : narcache_key_parse_public(out, text, len, &at);
    if (rc == 0) {
      ret = 0;
    } else if (rc == NARCACHE_EBADKEY) {
      /* Say what the file is if it is the other kind of key. */
      narcache_key *other = NULL;
      size_t ignored = 0;
      int is_other = (secret ? narcache_key_parse_public(&other, text, len, &ignored)
                             : narcache_key_parse_secret(&other, text, len, &ignored)) == 0;
      narcache_key_free(other);
      if (is_other)
        cli_error("%s: this is a %s key; a %s key is needed", path, secret ? "public" : "secret",
                  what);
      else
        cli_error("%s: not a %s key in Nix's format NAME:BASE64 (error at byte %zu)", path, what,
                  at);
    } else {
      cli_error("%s: %s", path, narcache_strerror(rc));
    }
  }
  cli_wipe(text, sizeof text);
  return ret;
}

/* ---- writing ------------------------------------------------------------------ */

/* The directory part of `path` ("." if none), malloc'd. */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL)
    return strdup(".");
  size_t n = slash == path ? 1 : (size_t)(slash - path);
  char *d = malloc(n + 1);
  if (d != NULL) {
    memcpy(d, path, n);
    d[n] = '\0';
  }
  return d;
}

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int sync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  if (rc != 0 && e == EINVAL) /* file system without directory sync */
    rc = 0;
  errno = e;
  return rc;
}

/* Write a new temp file in `dir` holding `data` with mode `mode` (and
 * owner uid/gid unless (uid_t)-1), synced and closed. Its name goes to
 * `tmp` (PATH_MAX bytes). Returns 0 or -1 (errno set, nothing left). */
static int write_temp(char *tmp, const char *dir, const void *data, size_t len, mode_t mode,
                      uid_t uid, gid_t gid, struct stat *st) {
  if (snprintf(tmp, PATH_MAX, "%s/.narcache-tmp-XXXXXX", dir) >= PATH_MAX) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int fd = mkstemp(tmp); /* O_CREAT | O_EXCL, mode 0600 */
  if (fd < 0)
    return -1;
  int rc = 0;
  if (uid != (uid_t)-1 && fchown(fd, uid, gid) != 0 && errno != EPERM)
    rc = -1; /* only root may give a file away; otherwise it stays ours */
  if (rc == 0 && fchmod(fd, mode) != 0)
    rc = -1;
  if (rc == 0 && write_all(fd, data, len) != 0)
    rc = -1;
  if (rc == 0 && fsync(fd) != 0)
    rc = -1;
  if (rc == 0 && st != NULL && fstat(fd, st) != 0)
    rc = -1;
  int e = errno;
  if (close(fd) != 0 && rc == 0) {
    rc = -1;
    e = errno;
  }
  if (rc != 0) {
    unlink(tmp);
    errno = e;
  }
  return rc;
}

int cli_create_file(const char *path, const void *data, size_t len, mode_t mode, dev_t *dev,
                    ino_t *ino) {
  char *dir = dir_of(path);
  char tmp[PATH_MAX];
  struct stat st;
  if (dir == NULL) {
    cli_error("out of memory");
    return -1;
  }
  int ret = -1;
  if (write_temp(tmp, dir, data, len, mode, (uid_t)-1, (gid_t)-1, &st) != 0) {
    cli_error("%s: cannot write a temporary file in %s: %s", path, dir, strerror(errno));
    goto out;
  }
  /* link() never replaces an existing name, unlike rename(). */
  int linked = link(tmp, path) == 0;
  int e = errno;
  unlink(tmp);
  if (!linked) {
    if (e == EEXIST)
      cli_error("%s: already exists; not overwritten", path);
    else
      cli_error("%s: cannot create: %s", path, strerror(e));
    goto out;
  }
  if (sync_dir(dir) != 0) {
    cli_error("%s: cannot sync directory %s: %s", path, dir, strerror(errno));
    unlink(path); /* the name was ours a moment ago */
    goto out;
  }
  if (dev != NULL)
    *dev = st.st_dev;
  if (ino != NULL)
    *ino = st.st_ino;
  ret = 0;
out:
  free(dir);
  return ret;
}

int cli_replace_file(const char *path, const void *data, size_t len, const struct stat *orig) {
  /* Replace the file a symlink points at, not the symlink. */
  char *real = realpath(path, NULL);
  if (real == NULL) {
    cli_error("%s: %s", path, strerror(errno));
    return -1;
  }
  char *dir = dir_of(real);
  char tmp[PATH_MAX];
  int ret = -1;
  if (dir == NULL) {
    cli_error("out of memory");
    goto out;
  }
  uid_t uid = orig->st_uid != geteuid() || orig->st_gid != getegid() ? orig->st_uid : (uid_t)-1;
  if (write_temp(tmp, dir, data, len, orig->st_mode & 07777, uid, orig->st_gid, NULL) != 0) {
    cli_error("%s: cannot write a temporary file in %s: %s", path, dir, strerror(errno));
    goto out;
  }
  if (rename(tmp, real) != 0) {
    cli_error("%s: cannot replace: %s", path, strerror(errno));
    unlink(tmp);
    goto out;
  }
  if (sync_dir(dir) != 0) {
    cli_error("%s: replaced, but syncing directory %s failed: %s", path, dir, strerror(errno));
    goto out;
  }
  ret = 0;
out:
  free(dir);
  free(real);
  return ret;
}
