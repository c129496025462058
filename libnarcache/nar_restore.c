/* NAR restorer: a NAR stream -> a new tree, all or nothing.
 *
 * The tree is built under a hidden temporary name in the destination's
 * parent directory. Every object is created with an *at() call relative to
 * a directory descriptor the restorer opened itself right after creating
 * that directory, with O_EXCL / O_NOFOLLOW, so no symlink -- whether it
 * was in the NAR or planted by someone else -- can redirect a write. Names
 * come from the strict parser (no "/", ".", "..", NUL). finish() renames
 * the finished tree into place with RENAME_NOREPLACE; any failure removes
 * the temporary tree. */
#define _GNU_SOURCE
#include "common_internal.h"
#include "nar_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MODE_DIR 0755
#define MODE_FILE 0644
#define MODE_EXEC 0755

struct narcache_nar_restorer {
  narcache_nar_parser *parser;
  int parent_fd;        /* the destination's parent directory */
  char *dest_name;      /* final base name */
  char temp_name[64];   /* hidden name the tree is built under */
  int created;          /* the temporary root exists */
  int *dir_fds;         /* open directories, the temporary root first */
  size_t ndirs, dirs_cap;
  int umask_known;      /* the process umask, when readable, lets us skip */
  mode_t umask;         /* fchmod where creation already gives the mode */
  char *entry_name;     /* name of the node that follows an ENTRY event */
  size_t entry_len;
  int file_fd;
  int done, finished;
  int error, syserr;
  char errmsg[NAR_ERRMSG_SIZE];
};

static int fail(narcache_nar_restorer *r, int code, int err, const char *fmt, ...)
    NARCACHE_PRINTF(4, 5);

static int fail(narcache_nar_restorer *r, int code, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->errmsg, sizeof r->errmsg, fmt, ap);
  va_end(ap);
  if (err != 0) {
    size_t len = strlen(r->errmsg);
    snprintf(r->errmsg + len, sizeof r->errmsg - len, ": %s", strerror(err));
  }
  r->error = code;
  r->syserr = err;
  return code;
}

/* ---- removal of a partial tree --------------------------------------------- */

typedef struct removal_level {
  int fd;
  DIR *dir;
  char *name; /* name in the level above */
} removal_level;

/* Remove `name` in `parent_fd` and everything under it, without following
 * symlinks and without recursion. Best effort: used to undo a failure. */
static void remove_tree(int parent_fd, const char *name) {
  if (unlinkat(parent_fd, name, 0) == 0 || (errno != EISDIR && errno != EPERM))
    return;
  removal_level *stack = NULL;
  size_t depth = 0, cap = 0;
  const char *next_name = name;
  int next_parent = parent_fd;
  for (;;) {
    if (next_name != NULL) { /* descend into next_name */
      if (depth == cap) {
        size_t bigger = cap != 0 ? cap * 2 : 16;
        removal_level *grown = realloc(stack, bigger * sizeof *stack);
        if (grown == NULL)
          break;
        stack = grown;
        cap = bigger;
      }
      int fd = openat(next_parent, next_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
      if (dir == NULL) {
        if (fd >= 0)
          close(fd);
        break;
      }
      char *copy = strdup(next_name);
      if (copy == NULL) {
        closedir(dir);
        break;
      }
      stack[depth].fd = fd;
      stack[depth].dir = dir;
      stack[depth].name = copy;
      depth++;
      next_name = NULL;
    }
    removal_level *top = &stack[depth - 1];
    struct dirent *entry;
    while ((entry = readdir(top->dir)) != NULL) {
      const char *nm = entry->d_name;
      if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
        continue;
      if (unlinkat(top->fd, nm, 0) == 0)
        continue;
      if (errno == EISDIR || errno == EPERM) {
        next_parent = top->fd;
        next_name = nm;
        break;
      }
    }
    if (next_name != NULL)
      continue;
    /* The directory is empty now: remove it and resume its parent. */
    int above = depth > 1 ? stack[depth - 2].fd : parent_fd;
    closedir(top->dir);
    if (top->name != NULL)
      unlinkat(above, top->name, AT_REMOVEDIR);
    free(top->name);
    depth--;
    if (depth == 0)
      break;
    rewinddir(stack[depth - 1].dir);
  }
  while (depth > 0) {
    depth--;
    closedir(stack[depth].dir);
    free(stack[depth].name);
  }
  free(stack);
}

static void undo(narcache_nar_restorer *r) {
  if (r->file_fd >= 0)
    close(r->file_fd);
  r->file_fd = -1;
  while (r->ndirs > 0)
    close(r->dir_fds[--r->ndirs]);
  if (r->created && !r->finished)
    remove_tree(r->parent_fd, r->temp_name);
  r->created = 0;
}

/* Fail and undo: nothing half-restored stays behind. */
static int abort_restore(narcache_nar_restorer *r, int code, int err, const char *what) {
  if (r->error == 0) {
    char shown[NAR_ERRMSG_SIZE];
    narcache__nar_quote(shown, sizeof shown, r->entry_name != NULL ? r->entry_name : "",
                        r->entry_len);
    fail(r, code, err, "%s \"%s\"", what, shown);
  }
  undo(r);
  return r->error;
}

/* ---- lifecycle ----------------------------------------------------------------- */

static int split_path(narcache_nar_restorer *r, int dirfd, const char *path) {
  size_t len = strlen(path);
  while (len > 1 && path[len - 1] == '/')
    len--;
  const char *slash = NULL;
  for (size_t i = len; i > 0; i--)
    if (path[i - 1] == '/') {
      slash = path + i - 1;
      break;
    }
  const char *base = slash != NULL ? slash + 1 : path;
  size_t base_len = (size_t)(path + len - base);
  if (base_len == 0 || (base_len == 1 && base[0] == '.') ||
      (base_len == 2 && base[0] == '.' && base[1] == '.'))
    return fail(r, NARCACHE_EINVAL, 0, "%s: not a usable destination name", path);
  r->dest_name = narcache__malloc(base_len + 1);
  if (r->dest_name == NULL)
    return fail(r, NARCACHE_ENOMEM, 0, "out of memory");
  memcpy(r->dest_name, base, base_len);
  r->dest_name[base_len] = '\0';
  char *parent = NULL;
  if (slash != NULL) {
    size_t parent_len = slash == path ? 1 : (size_t)(slash - path);
    parent = narcache__malloc(parent_len + 1);
    if (parent == NULL)
      return fail(r, NARCACHE_ENOMEM, 0, "out of memory");
    memcpy(parent, path, parent_len);
    parent[parent_len] = '\0';
  }
  r->parent_fd = openat(dirfd == NARCACHE_AT_FDCWD ? AT_FDCWD : dirfd,
                        parent != NULL ? parent : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int err = errno;
  narcache__free(parent);
  if (r->parent_fd < 0)
    return fail(r, NARCACHE_EIO, err, "%s: cannot open the parent directory", path);
  struct stat st;
  if (fstatat(r->parent_fd, r->dest_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
    return fail(r, NARCACHE_EIO, EEXIST, "%s: cannot restore", path);
  return NARCACHE_OK;
}

int narcache_nar_restorer_new(narcache_nar_restorer **out) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  narcache_nar_restorer *r = narcache__calloc(1, sizeof *r);
  if (r == NULL)
    return NARCACHE_ENOMEM;
  r->parent_fd = -1;
  r->file_fd = -1;
  int rc = narcache_nar_parser_new(&r->parser);
  if (rc < 0) {
    narcache__free(r);
    return rc;
  }
  *out = r;
  return NARCACHE_OK;
}

/* The umask without changing it (umask(2) cannot read it atomically in a
 * threaded program): Linux reports it in /proc/self/status. */
static int read_umask(mode_t *out) {
  FILE *f = fopen("/proc/self/status", "re");
  if (f == NULL)
    return 0;
  char line[256];
  int found = 0;
  while (!found && fgets(line, sizeof line, f) != NULL) {
    unsigned value;
    if (sscanf(line, "Umask: %o", &value) == 1) {
      *out = (mode_t)value;
      found = 1;
    }
  }
  fclose(f);
  return found;
}

int narcache_nar_restorer_open(narcache_nar_restorer *r, int dirfd, const char *path) {
  if (r == NULL || path == NULL)
    return NARCACHE_EINVAL;
  if (r->parent_fd >= 0 || r->error != 0)
    return NARCACHE_EMISUSE;
  r->umask_known = read_umask(&r->umask);
  return split_path(r, dirfd, path);
}

/* Whether creating with `mode` may have lost bits to the umask. */
static int needs_chmod(const narcache_nar_restorer *r, mode_t mode) {
  return !r->umask_known || (mode & r->umask) != 0;
}

int narcache_nar_restorer_set_limit(narcache_nar_restorer *r, int limit, uint64_t value) {
  if (r == NULL)
    return NARCACHE_EINVAL;
  return narcache_nar_parser_set_limit(r->parser, limit, value);
}

const char *narcache_nar_restorer_errmsg(const narcache_nar_restorer *r) {
  return r != NULL ? r->errmsg : "";
}

int narcache_nar_restorer_syserr(const narcache_nar_restorer *r) {
  return r != NULL ? r->syserr : 0;
}

void narcache_nar_restorer_free(narcache_nar_restorer *r) {
  if (r == NULL)
    return;
  undo(r);
  if (r->parent_fd >= 0)
    close(r->parent_fd);
  narcache_nar_parser_free(r->parser);
  narcache__free(r->dir_fds);
  narcache__free(r->entry_name);
  narcache__free(r->dest_name);
  narcache__free(r);
}

/* ---- creating nodes --------------------------------------------------------------- */

/* Where the next node goes: (directory fd, name). The root node goes to
 * the parent under a fresh hidden name. */
static void pick_temp_name(narcache_nar_restorer *r) {
  static atomic_uint counter;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  snprintf(r->temp_name, sizeof r->temp_name, ".narcache-restore-%ld-%u-%lx", (long)getpid(),
           atomic_fetch_add(&counter, 1), (unsigned long)ts.tv_nsec);
}

typedef int (*create_fn)(narcache_nar_restorer *r, int dirfd, const char *name, const void *arg);

/* Create the current node with `create`, retrying fresh temporary names
 * for the root should one already exist. */
static int create_node(narcache_nar_restorer *r, create_fn create, const void *arg) {
  if (r->ndirs > 0)
    return create(r, r->dir_fds[r->ndirs - 1], r->entry_name, arg);
  for (int attempt = 0; attempt < 16; attempt++) {
    pick_temp_name(r);
    int rc = create(r, r->parent_fd, r->temp_name, arg);
    if (rc >= 0) {
      r->created = 1;
      return rc;
    }
    if (errno != EEXIST)
      return rc;
  }
  return -1;
}

static int create_file(narcache_nar_restorer *r, int dirfd, const char *name, const void *arg) {
  int executable = *(const int *)arg;
  int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                  executable ? MODE_EXEC : MODE_FILE);
  if (fd < 0)
    return -1;
  /* Exact modes whatever the umask, as nix-store --restore leaves them. */
  mode_t mode = executable ? MODE_EXEC : MODE_FILE;
  if (needs_chmod(r, mode) && fchmod(fd, mode) != 0) {
    int err = errno;
    close(fd);
    unlinkat(dirfd, name, 0); /* the caller does not know it exists */
    errno = err;
    return -1;
  }
  r->file_fd = fd;
  return 0;
}

static int create_symlink(narcache_nar_restorer *r, int dirfd, const char *name,
                          const void *arg) {
  (void)r;
  return symlinkat((const char *)arg, dirfd, name);
}

static int push_dir_fd(narcache_nar_restorer *r, int fd) {
  if (r->ndirs == r->dirs_cap) {
    size_t cap = r->dirs_cap != 0 ? r->dirs_cap * 2 : 16;
    int *fds = narcache__realloc(r->dir_fds, cap * sizeof *fds);
    if (fds == NULL)
      return -1;
    r->dir_fds = fds;
    r->dirs_cap = cap;
  }
  r->dir_fds[r->ndirs++] = fd;
  return 0;
}

static int create_dir(narcache_nar_restorer *r, int dirfd, const char *name, const void *arg) {
  (void)arg;
  if (mkdirat(dirfd, name, MODE_DIR) != 0)
    return -1;
  int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int err = fd < 0                                                ? errno
            : needs_chmod(r, MODE_DIR) && fchmod(fd, MODE_DIR) != 0 ? errno
            : push_dir_fd(r, fd) != 0                               ? ENOMEM
                                                                    : 0;
  if (err != 0) {
    if (fd >= 0)
      close(fd);
    unlinkat(dirfd, name, AT_REMOVEDIR); /* the caller does not know it exists */
    errno = err;
    return -1;
  }
  return 0;
}

static int remember_name(narcache_nar_restorer *r, const narcache_nar_event *ev) {
  char *copy = narcache__realloc(r->entry_name, ev->name_len + 1);
  if (copy == NULL)
    return NARCACHE_ENOMEM;
  memcpy(copy, ev->name, ev->name_len + 1);
  r->entry_name = copy;
  r->entry_len = ev->name_len;
  return NARCACHE_OK;
}

static int apply_event(narcache_nar_restorer *r, const narcache_nar_event *ev) {
  int exec = (int)ev->executable;
  switch (ev->type) {
  case NARCACHE_NAR_ENTRY:
    if (remember_name(r, ev) < 0)
      return abort_restore(r, NARCACHE_ENOMEM, 0, "out of memory at");
    return 0;
  case NARCACHE_NAR_FILE_BEGIN:
    errno = 0;
    if (create_node(r, create_file, &exec) < 0)
      return abort_restore(r, NARCACHE_EIO, errno, "cannot create file");
    return 0;
  case NARCACHE_NAR_FILE_DATA:
    if (narcache__write_all(r->file_fd, ev->data, ev->len) < 0)
      return abort_restore(r, NARCACHE_EIO, errno, "cannot write file");
    return 0;
  case NARCACHE_NAR_FILE_END: {
    int rc = close(r->file_fd);
    r->file_fd = -1;
    if (rc != 0)
      return abort_restore(r, NARCACHE_EIO, errno, "cannot write file");
    return 0;
  }
  case NARCACHE_NAR_SYMLINK:
    errno = 0;
    if (create_node(r, create_symlink, ev->name) < 0)
      return abort_restore(r, NARCACHE_EIO, errno, "cannot create symlink");
    return 0;
  case NARCACHE_NAR_DIR_BEGIN:
    errno = 0;
    if (create_node(r, create_dir, NULL) < 0)
      return abort_restore(r, NARCACHE_EIO, errno, "cannot create directory");
    return 0;
  case NARCACHE_NAR_DIR_END:
    close(r->dir_fds[--r->ndirs]);
    return 0;
  case NARCACHE_NAR_END:
    r->done = 1;
    return 0;
  default:
    return 0;
  }
}

/* ---- feeding ------------------------------------------------------------------------- */

static int parse_failed(narcache_nar_restorer *r, int rc) {
  if (r->error == 0)
    fail(r, rc, 0, "%s", narcache_nar_parser_errmsg(r->parser));
  undo(r);
  return r->error;
}

int narcache_nar_restorer_write(narcache_nar_restorer *r, narcache_inbuf *in) {
  if (r == NULL || in == NULL)
    return NARCACHE_EINVAL;
  if (r->error != 0)
    return r->error;
  if (r->finished || r->parent_fd < 0)
    return NARCACHE_EMISUSE;
  narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
  int rc;
  while ((rc = narcache_nar_parser_next(r->parser, in, &ev)) > 0)
    if ((rc = apply_event(r, &ev)) < 0)
      return rc;
  if (rc < 0)
    return rc == NARCACHE_EINVAL ? rc : parse_failed(r, rc);
  return r->done;
}

/* Rename the finished tree to its destination, never replacing anything. */
static int move_into_place(narcache_nar_restorer *r) {
  if (renameat2(r->parent_fd, r->temp_name, r->parent_fd, r->dest_name, RENAME_NOREPLACE) == 0)
    return 0;
  if (errno != EINVAL && errno != ENOSYS)
    return -1;
  /* File systems without RENAME_NOREPLACE: check, then rename. */
  struct stat st;
  if (fstatat(r->parent_fd, r->dest_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    errno = EEXIST;
    return -1;
  }
  return renameat(r->parent_fd, r->temp_name, r->parent_fd, r->dest_name);
}

int narcache_nar_restorer_finish(narcache_nar_restorer *r) {
  if (r == NULL)
    return NARCACHE_EINVAL;
  if (r->error != 0)
    return r->error;
  if (r->finished || r->parent_fd < 0)
    return NARCACHE_EMISUSE;
  int rc = narcache_nar_parser_finish(r->parser);
  if (rc < 0)
    return parse_failed(r, rc);
  if (!r->done) { /* the END event was not pulled yet */
    narcache_inbuf empty = {"", 0, 0};
    if ((rc = narcache_nar_restorer_write(r, &empty)) < 0)
      return rc;
  }
  if (move_into_place(r) != 0) {
    int err = errno;
    fail(r, NARCACHE_EIO, err, "cannot move the restored tree to \"%s\"", r->dest_name);
    undo(r);
    return r->error;
  }
  r->finished = 1;
  return NARCACHE_OK;
}
