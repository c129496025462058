/* NAR dumper: a file-system tree -> NAR, as `nix-store --dump`.
 *
 * open() walks the tree once, with openat/fstatat/fdopendir relative to
 * directory descriptors, and records every node (name, type, size,
 * executable bit, symlink target) in preorder with names sorted by unsigned
 * bytes. From that index alone the NAR layout is known: each node i owns a
 * "header" -- the bytes between the previous node's contents and its own
 * contents (closing parentheses of what ended, padding, the entry prefix,
 * the node's opening tokens) -- followed by its file contents, and a tail
 * closes what is still open after the last node. So the size is known
 * before any content is read, seeking is a binary search, and contents can
 * be handed out as (fd, offset, length) regions. */
#define _GNU_SOURCE
#include "common_internal.h"
#include "nar_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NO_NODE UINT32_MAX
#define DUMPER_DEFAULT_DEPTH 256

enum node_type { NODE_FILE = 1, NODE_SYMLINK = 2, NODE_DIR = 3 };

typedef struct index_node {
  uint64_t start;      /* NAR offset of this node's header */
  uint64_t size;       /* file size */
  size_t name_off;     /* entry name in the arena (root: none) */
  size_t target_off;   /* symlink target in the arena */
  uint32_t name_len;
  uint32_t target_len;
  uint32_t parent;     /* NO_NODE for the root */
  uint32_t end;        /* one past the last node of this subtree */
  uint32_t header_len;
  uint16_t depth;
  uint8_t type;
  uint8_t executable;
} index_node;

enum emit_phase { P_HEADER, P_DATA, P_DONE };

struct narcache_nar_dumper {
  narcache__nar_limits limits;
  int opened;
  int error;
  int syserr;
  char errmsg[NAR_ERRMSG_SIZE];
  /* index */
  char *root_path;
  int root_dirfd;
  index_node *nodes;
  uint32_t nnodes, nodes_cap;
  narcache__buf arena;
  uint64_t tail_start, size;
  /* emission */
  uint64_t position;   /* NAR offset of the next byte handed out */
  uint32_t cur;        /* node being emitted; nnodes means the tail */
  int phase;
  uint64_t skip;       /* header bytes to skip after a seek */
  uint64_t data_pos;   /* next content byte of the current file */
  narcache__buf header;
  int file_fd;
  narcache__dir_chain chain; /* directories on the path to the current file */
  /* optional source of small files' contents (read ahead by helpers) */
  narcache__nar_content_fn content_fn;
  void *content_ctx;
  uint64_t content_max;
  int content_held; /* the current file's contents came from content_fn */
  int walk_threads; /* threads open() may use to stat large directories */
  const char *content;
};

/* ---- errors ------------------------------------------------------------- */

static void node_path(const narcache_nar_dumper *d, uint32_t node, char *out, size_t cap);

static int fail(narcache_nar_dumper *d, int code, int err, uint32_t node,
                const char *fmt, ...) NARCACHE_PRINTF(5, 6);

static int fail(narcache_nar_dumper *d, int code, int err, uint32_t node,
                const char *fmt, ...) {
  char path[NAR_ERRMSG_SIZE];
  node_path(d, node, path, sizeof path);
  int n = snprintf(d->errmsg, sizeof d->errmsg, "%s: ", path);
  if (n < 0 || (size_t)n >= sizeof d->errmsg)
    n = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->errmsg + n, sizeof d->errmsg - (size_t)n, fmt, ap);
  va_end(ap);
  if (err != 0) {
    size_t len = strlen(d->errmsg);
    snprintf(d->errmsg + len, sizeof d->errmsg - len, ": %s", strerror(err));
  }
  d->error = code;
  d->syserr = err;
  return code;
}

static const char *arena_str(const narcache_nar_dumper *d, size_t off) {
  return d->arena.data + off;
}

/* The path of `node` as given by the caller plus the entry names. */
static void node_path(const narcache_nar_dumper *d, uint32_t node, char *out, size_t cap) {
  uint32_t chain[64];
  size_t depth = 0;
  /* Parents always precede their children, which bounds this walk. */
  for (uint32_t n = node; n != NO_NODE && n < d->nnodes && d->nodes[n].parent < n;
       n = d->nodes[n].parent)
    if (depth < 64)
      chain[depth++] = n;
  size_t o = (size_t)snprintf(out, cap, "%s", d->root_path != NULL ? d->root_path : "");
  if (node != NO_NODE && depth == 64 && o + 4 < cap) {
    memcpy(out + o, "/...", 5);
    o += 4;
  }
  while (depth > 0 && o + 1 < cap) {
    const index_node *n = &d->nodes[chain[--depth]];
    char quoted[NAR_ERRMSG_SIZE];
    narcache__nar_quote(quoted, sizeof quoted, arena_str(d, n->name_off), n->name_len);
    o += (size_t)snprintf(out + o, cap - o, "/%s", quoted);
  }
}

/* ---- lifecycle ------------------------------------------------------------ */

int narcache_nar_dumper_new(narcache_nar_dumper **out) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  narcache_nar_dumper *d = narcache__calloc(1, sizeof *d);
  if (d == NULL)
    return NARCACHE_ENOMEM;
  narcache__nar_limits_init(&d->limits);
  d->limits.depth = DUMPER_DEFAULT_DEPTH;
  d->file_fd = -1;
  *out = d;
  return NARCACHE_OK;
}

int narcache_nar_dumper_set_limit(narcache_nar_dumper *d, int limit, uint64_t value) {
  if (d == NULL)
    return NARCACHE_EINVAL;
  if (d->opened)
    return NARCACHE_EMISUSE;
  return narcache__nar_limits_set(&d->limits, limit, value);
}

static void close_file(narcache_nar_dumper *d) {
  if (d->file_fd >= 0)
    close(d->file_fd);
  d->file_fd = -1;
}

void narcache__dir_chain_close(narcache__dir_chain *c) {
  while (c->n > 0)
    close(c->dirs[--c->n].fd);
  narcache__free(c->dirs);
  c->dirs = NULL;
  c->cap = 0;
}

void narcache_nar_dumper_free(narcache_nar_dumper *d) {
  if (d == NULL)
    return;
  close_file(d);
  narcache__dir_chain_close(&d->chain);
  narcache__free(d->nodes);
  narcache__free(d->root_path);
  narcache__buf_free(&d->arena);
  narcache__buf_free(&d->header);
  narcache__free(d);
}

const char *narcache_nar_dumper_errmsg(const narcache_nar_dumper *d) {
  return d != NULL ? d->errmsg : "";
}

int narcache_nar_dumper_syserr(const narcache_nar_dumper *d) {
  return d != NULL ? d->syserr : 0;
}

uint64_t narcache_nar_dumper_size(const narcache_nar_dumper *d) {
  return d != NULL && d->opened ? d->size : 0;
}

/* ---- header bytes ------------------------------------------------------------ */

/* Close node `x`: its own node (files: padding and ")"; directories: ")";
 * symlinks closed themselves) and then its entry. */
static int put_close(narcache_nar_dumper *d, narcache__buf *b, const index_node *x) {
  int rc = 0;
  if (x->type == NODE_FILE)
    rc |= narcache__nar_put_padding(b, x->size);
  if (x->type != NODE_SYMLINK)
    rc |= narcache__nar_put_token(b, ")");
  if (x->parent != NO_NODE)
    rc |= narcache__nar_put_token(b, ")");
  (void)d;
  return rc < 0 ? NARCACHE_ENOMEM : NARCACHE_OK;
}

/* Everything still open after node `last` up to (not including) `stop`. */
static int put_closes(narcache_nar_dumper *d, narcache__buf *b, uint32_t last, uint32_t stop) {
  for (uint32_t x = last; x != stop; x = d->nodes[x].parent)
    if (put_close(d, b, &d->nodes[x]) < 0)
      return NARCACHE_ENOMEM;
  return NARCACHE_OK;
}

static int put_open(narcache_nar_dumper *d, narcache__buf *b, const index_node *n) {
  int rc = 0;
  if (n->parent != NO_NODE) {
    rc |= narcache__nar_put_token(b, "entry");
    rc |= narcache__nar_put_token(b, "(");
    rc |= narcache__nar_put_token(b, "name");
    rc |= narcache__nar_put_str(b, arena_str(d, n->name_off), n->name_len);
    rc |= narcache__nar_put_token(b, "node");
  }
  rc |= narcache__nar_put_token(b, "(");
  rc |= narcache__nar_put_token(b, "type");
  switch (n->type) {
  case NODE_FILE:
    rc |= narcache__nar_put_token(b, "regular");
    if (n->executable) {
      rc |= narcache__nar_put_token(b, "executable");
      rc |= narcache__nar_put_token(b, "");
    }
    rc |= narcache__nar_put_token(b, "contents");
    rc |= narcache__nar_put_len(b, n->size);
    break;
  case NODE_SYMLINK:
    rc |= narcache__nar_put_token(b, "symlink");
    rc |= narcache__nar_put_token(b, "target");
    rc |= narcache__nar_put_str(b, arena_str(d, n->target_off), n->target_len);
    rc |= narcache__nar_put_token(b, ")");
    break;
  default:
    rc |= narcache__nar_put_token(b, "directory");
  }
  return rc < 0 ? NARCACHE_ENOMEM : NARCACHE_OK;
}

/* The header of node `i`, or the tail when i == nnodes. */
static int build_header(narcache_nar_dumper *d, narcache__buf *b, uint32_t i) {
  b->len = 0;
  if (i == 0)
    return narcache__nar_put_token(b, NAR_MAGIC) < 0 ? NARCACHE_ENOMEM
                                                    : put_open(d, b, &d->nodes[0]);
  uint32_t stop = i < d->nnodes ? d->nodes[i].parent : NO_NODE;
  int rc = put_closes(d, b, i - 1, stop);
  if (rc < 0 || i == d->nnodes)
    return rc;
  return put_open(d, b, &d->nodes[i]);
}

/* ---- indexing ------------------------------------------------------------------ */

/* A directory being read during the walk: its children, sorted. */
/* lstat results gathered ahead of the walk (see prestat_level). */
typedef struct child_stat {
  uint64_t size;
  uint32_t mode;
  int err;
} child_stat;

typedef struct walk_level {
  uint32_t node;
  DIR *dir;
  narcache__buf names; /* NUL-terminated names back to back */
  size_t *order;       /* offsets into names, sorted */
  size_t count, next;
  child_stat *stats;   /* per sorted child, when gathered in parallel */
} walk_level;

static int compare_names(const void *a, const void *b, void *names) {
  const char *base = names;
  /* strcmp compares as unsigned char, which is Nix's order. */
  return strcmp(base + *(const size_t *)a, base + *(const size_t *)b);
}

static int append_node(narcache_nar_dumper *d, uint32_t *index_out) {
  if (d->nnodes == NO_NODE - 1)
    return fail(d, NARCACHE_ELIMIT, 0, NO_NODE, "too many entries");
  if (d->nnodes == d->nodes_cap) {
    uint32_t cap = d->nodes_cap != 0 ? d->nodes_cap * 2 : 64;
    index_node *nodes = narcache__realloc(d->nodes, (size_t)cap * sizeof *nodes);
    if (nodes == NULL)
      return fail(d, NARCACHE_ENOMEM, 0, NO_NODE, "out of memory");
    d->nodes = nodes;
    d->nodes_cap = cap;
  }
  *index_out = d->nnodes;
  memset(&d->nodes[d->nnodes], 0, sizeof(index_node));
  d->nodes[d->nnodes++].parent = NO_NODE;
  return NARCACHE_OK;
}

static int arena_put(narcache_nar_dumper *d, const char *s, size_t len, size_t *off) {
  *off = d->arena.len;
  if (narcache__buf_append(&d->arena, s, len) < 0 ||
      narcache__buf_append(&d->arena, "", 1) < 0)
    return fail(d, NARCACHE_ENOMEM, 0, NO_NODE, "out of memory");
  return NARCACHE_OK;
}

/* Record the node for `name` in `dirfd` (already appended as `i`). */
/* `pre` (optional) holds an lstat result gathered earlier. */
static int stat_node(narcache_nar_dumper *d, uint32_t i, int dirfd, const char *name,
                     const child_stat *pre) {
  child_stat cs;
  if (pre == NULL) {
    struct stat st;
    cs.err = fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 ? errno : 0;
    cs.mode = (uint32_t)st.st_mode;
    cs.size = (uint64_t)st.st_size;
    pre = &cs;
  }
  if (pre->err != 0)
    return fail(d, NARCACHE_EIO, pre->err, i, "cannot stat");
  index_node *n = &d->nodes[i];
  mode_t mode = (mode_t)pre->mode;
  if (S_ISREG(mode)) {
    n->type = NODE_FILE;
    n->size = pre->size;
    n->executable = (mode & S_IXUSR) != 0;
  } else if (S_ISDIR(mode)) {
    n->type = NODE_DIR;
  } else if (S_ISLNK(mode)) {
    char target[8192];
    ssize_t len = readlinkat(dirfd, name, target, sizeof target);
    if (len < 0)
      return fail(d, NARCACHE_EIO, errno, i, "cannot read symlink");
    if ((uint64_t)len > d->limits.target_len || (size_t)len == sizeof target)
      return fail(d, NARCACHE_ELIMIT, 0, i, "symlink target longer than %llu bytes",
                  (unsigned long long)d->limits.target_len);
    if (len == 0)
      return fail(d, NARCACHE_ENOTSUP, 0, i, "empty symlink target");
    size_t off;
    int rc = arena_put(d, target, (size_t)len, &off);
    if (rc < 0)
      return rc;
    n = &d->nodes[i];
    n->type = NODE_SYMLINK;
    n->target_off = off;
    n->target_len = (uint32_t)len;
  } else {
    return fail(d, NARCACHE_ENOTSUP, 0, i,
                "has an unsupported type (not a regular file, directory or symlink)");
  }
  return NARCACHE_OK;
}

/* Lay node `i` out after node i-1: its start and header length. The header
 * is built here only to measure it and built again when emitted: keeping
 * the bytes would cost ~200 bytes per node, rebuilding costs a few
 * hundred nanoseconds. */
static int place_node(narcache_nar_dumper *d, uint32_t i) {
  int rc = build_header(d, &d->header, i);
  if (rc < 0)
    return fail(d, rc, 0, NO_NODE, "out of memory");
  uint64_t start = 0;
  if (i > 0) {
    const index_node *prev = &d->nodes[i - 1];
    start = prev->start + prev->header_len + (prev->type == NODE_FILE ? prev->size : 0);
  }
  if (i < d->nnodes) {
    d->nodes[i].start = start;
    d->nodes[i].header_len = (uint32_t)d->header.len;
    uint64_t body = d->nodes[i].type == NODE_FILE ? d->nodes[i].size : 0;
    if (start > d->limits.size || d->header.len + body > d->limits.size - start)
      return fail(d, NARCACHE_ELIMIT, 0, i, "NAR would exceed the size limit of %llu bytes",
                  (unsigned long long)d->limits.size);
  } else {
    d->tail_start = start;
    if (start > d->limits.size || d->header.len > d->limits.size - start)
      return fail(d, NARCACHE_ELIMIT, 0, NO_NODE, "NAR would exceed the size limit");
    d->size = start + d->header.len;
  }
  return NARCACHE_OK;
}

/* Read and sort the names of an opened directory. */
static int read_level(narcache_nar_dumper *d, walk_level *lv) {
  struct dirent *entry;
  size_t cap = 0;
  errno = 0;
  while ((entry = readdir(lv->dir)) != NULL) {
    const char *nm = entry->d_name;
    if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
      continue;
    size_t len = strlen(nm);
    if (len > d->limits.name_len)
      return fail(d, NARCACHE_ELIMIT, 0, lv->node, "entry name longer than %llu bytes",
                  (unsigned long long)d->limits.name_len);
    if (lv->count == cap) {
      cap = cap != 0 ? cap * 2 : 16;
      size_t *order = narcache__realloc(lv->order, cap * sizeof *order);
      if (order == NULL)
        return fail(d, NARCACHE_ENOMEM, 0, lv->node, "out of memory");
      lv->order = order;
    }
    lv->order[lv->count++] = lv->names.len;
    if (narcache__buf_append(&lv->names, nm, len + 1) < 0)
      return fail(d, NARCACHE_ENOMEM, 0, lv->node, "out of memory");
    errno = 0;
  }
  if (errno != 0)
    return fail(d, NARCACHE_EIO, errno, lv->node, "cannot read directory");
  if (lv->count > 1)
    qsort_r(lv->order, lv->count, sizeof *lv->order, compare_names, lv->names.data);
  return NARCACHE_OK;
}

static void free_level(walk_level *lv) {
  if (lv->dir != NULL)
    closedir(lv->dir);
  narcache__buf_free(&lv->names);
  narcache__free(lv->order);
  narcache__free(lv->stats);
  memset(lv, 0, sizeof *lv);
}

/* ---- gathering lstat results on several threads ---- */

/* Below this many entries a directory is stat'ed on the walking thread. */
#define PRESTAT_MIN 64
#define PRESTAT_MAX_THREADS 8

typedef struct prestat_job {
  walk_level *lv;
  size_t first, stride;
} prestat_job;

static void *prestat_range(void *arg) {
  prestat_job *job = arg;
  walk_level *lv = job->lv;
  int fd = dirfd(lv->dir);
  for (size_t k = job->first; k < lv->count; k += job->stride) {
    struct stat st;
    child_stat *cs = &lv->stats[k];
    cs->err = fstatat(fd, lv->names.data + lv->order[k], &st, AT_SYMLINK_NOFOLLOW) != 0 ? errno : 0;
    cs->mode = (uint32_t)st.st_mode;
    cs->size = (uint64_t)st.st_size;
  }
  return NULL;
}

/* The lstat calls of a large directory dominate a walk over small files
 * and are independent, so spread them over the CPUs (only when the owner
 * asked for it: a dumper run on someone else's thread pool stays on its
 * thread). Any failure here just leaves the walk to stat sequentially. */
static void prestat_level(narcache_nar_dumper *d, walk_level *lv) {
  if (d->walk_threads < 2 || lv->count < PRESTAT_MIN)
    return;
  lv->stats = narcache__malloc(lv->count * sizeof *lv->stats);
  if (lv->stats == NULL)
    return;
  int n = d->walk_threads > PRESTAT_MAX_THREADS ? PRESTAT_MAX_THREADS : d->walk_threads;
  prestat_job jobs[PRESTAT_MAX_THREADS];
  pthread_t threads[PRESTAT_MAX_THREADS];
  int started[PRESTAT_MAX_THREADS] = {0};
  for (int t = 0; t < n; t++)
    jobs[t] = (prestat_job){lv, (size_t)t, (size_t)n};
  for (int t = 1; t < n; t++)
    started[t] = pthread_create(&threads[t], NULL, prestat_range, &jobs[t]) == 0;
  prestat_range(&jobs[0]);
  for (int t = 1; t < n; t++) {
    if (started[t])
      pthread_join(threads[t], NULL);
    else
      prestat_range(&jobs[t]); /* no thread: do its share here */
  }
}

/* Open directory node `node` (named `name` in `dirfd`) for the walk. */
static int open_level(narcache_nar_dumper *d, walk_level *lv, uint32_t node, int dirfd,
                      const char *name) {
  lv->node = node;
  int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return fail(d, NARCACHE_EIO, errno, node, "cannot open directory");
  lv->dir = fdopendir(fd);
  if (lv->dir == NULL) {
    int err = errno;
    close(fd);
    return fail(d, NARCACHE_EIO, err, node, "cannot open directory");
  }
  int rc = read_level(d, lv);
  if (rc == 0)
    prestat_level(d, lv);
  return rc;
}

/* Iterative preorder walk: the stack holds one walk_level per open
 * directory, so the depth of the tree never turns into C recursion. */
static int walk(narcache_nar_dumper *d, int root_dirfd, const char *path) {
  uint32_t root;
  int rc = append_node(d, &root);
  if (rc < 0 || (rc = stat_node(d, root, root_dirfd, path, NULL)) < 0 || (rc = place_node(d, root)) < 0)
    return rc;
  if (d->nodes[root].type != NODE_DIR) {
    d->nodes[root].end = 1;
    return NARCACHE_OK;
  }
  size_t cap = (size_t)(d->limits.depth < 64 ? d->limits.depth : 64);
  walk_level *stack = narcache__calloc(cap, sizeof *stack);
  if (stack == NULL)
    return fail(d, NARCACHE_ENOMEM, 0, NO_NODE, "out of memory");
  size_t depth = 1;
  rc = open_level(d, &stack[0], root, root_dirfd, path);
  while (rc >= 0 && depth > 0) {
    walk_level *lv = &stack[depth - 1];
    if (lv->next == lv->count) {
      d->nodes[lv->node].end = d->nnodes;
      free_level(lv);
      depth--;
      continue;
    }
    const child_stat *pre = lv->stats != NULL ? &lv->stats[lv->next] : NULL;
    const char *name = lv->names.data + lv->order[lv->next++];
    uint32_t i;
    size_t name_off;
    if ((rc = append_node(d, &i)) < 0 || (rc = arena_put(d, name, strlen(name), &name_off)) < 0)
      break;
    index_node *n = &d->nodes[i];
    n->parent = lv->node;
    n->depth = (uint16_t)depth;
    n->name_off = name_off;
    n->name_len = (uint32_t)strlen(name);
    n->end = i + 1;
    if ((rc = stat_node(d, i, dirfd(lv->dir), name, pre)) < 0 || (rc = place_node(d, i)) < 0)
      break;
    /* Every node, not only directories: the parser and the writer refuse
     * a file or symlink at depth == limit too. */
    if (depth >= d->limits.depth) {
      rc = fail(d, NARCACHE_ELIMIT, 0, i, "nested deeper than the limit of %llu",
                (unsigned long long)d->limits.depth);
      break;
    }
    if (d->nodes[i].type != NODE_DIR)
      continue;
    if (depth == cap) {
      size_t bigger = cap * 2;
      walk_level *grown = narcache__realloc(stack, bigger * sizeof *stack);
      if (grown == NULL) {
        rc = fail(d, NARCACHE_ENOMEM, 0, NO_NODE, "out of memory");
        break;
      }
      memset(grown + cap, 0, (bigger - cap) * sizeof *grown);
      stack = grown;
      cap = bigger;
    }
    rc = open_level(d, &stack[depth], i, dirfd(stack[depth - 1].dir), name);
    depth++;
  }
  while (depth > 0)
    free_level(&stack[--depth]);
  narcache__free(stack);
  return rc;
}

int narcache_nar_dumper_open(narcache_nar_dumper *d, int dirfd, const char *path) {
  if (d == NULL || path == NULL)
    return NARCACHE_EINVAL;
  if (d->opened || d->error != 0)
    return NARCACHE_EMISUSE;
  size_t len = strlen(path);
  d->root_path = narcache__malloc(len + 1);
  if (d->root_path == NULL)
    return NARCACHE_ENOMEM;
  memcpy(d->root_path, path, len + 1);
  d->root_dirfd = dirfd == NARCACHE_AT_FDCWD ? AT_FDCWD : dirfd;
  int rc = walk(d, d->root_dirfd, path);
  if (rc < 0)
    return rc;
  rc = place_node(d, d->nnodes); /* the tail */
  if (rc < 0)
    return rc;
  d->opened = 1;
  d->cur = 0;
  d->phase = P_HEADER;
  return NARCACHE_OK;
}

/* ---- emission ---------------------------------------------------------------- */

static int is_ancestor(const narcache_nar_dumper *d, uint32_t a, uint32_t n) {
  return a <= n && n < d->nodes[a].end;
}

/* A descriptor for directory node `dir`, reusing the descriptors `c`
 * already holds. Returns 0, or an errno value (the chain's owner reports
 * it); touches nothing in `d`, so any thread may call it with its own
 * chain. */
static int chain_dir_fd(const narcache_nar_dumper *d, narcache__dir_chain *c, uint32_t dir,
                        int *fd_out) {
  while (c->n > 0 && !is_ancestor(d, c->dirs[c->n - 1].node, dir))
    close(c->dirs[--c->n].fd);
  /* Collect the nodes between the deepest open ancestor and `dir`. */
  uint32_t top = c->n > 0 ? c->dirs[c->n - 1].node : NO_NODE;
  size_t missing = 0;
  for (uint32_t x = dir; x != top; x = d->nodes[x].parent)
    missing++;
  if (c->n + missing > c->cap) {
    size_t cap = c->n + missing + 8;
    narcache__open_dir *dirs = narcache__realloc(c->dirs, cap * sizeof *dirs);
    if (dirs == NULL)
      return ENOMEM;
    c->dirs = dirs;
    c->cap = cap;
  }
  size_t base = c->n;
  uint32_t x = dir;
  for (size_t k = missing; k > 0; k--, x = d->nodes[x].parent)
    c->dirs[base + k - 1].node = x;
  for (size_t k = 0; k < missing; k++) {
    uint32_t node = c->dirs[base + k].node;
    int parent = c->n > 0 ? c->dirs[c->n - 1].fd : d->root_dirfd;
    const char *name = node == 0 ? d->root_path : arena_str(d, d->nodes[node].name_off);
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
      return errno;
    c->dirs[c->n++].fd = fd;
  }
  *fd_out = c->n > 0 ? c->dirs[c->n - 1].fd : d->root_dirfd;
  return 0;
}

int narcache__nar_dumper_open_node(const narcache_nar_dumper *d, narcache__dir_chain *c,
                                   uint32_t i, int *fd_out) {
  const index_node *n = &d->nodes[i];
  int parent = d->root_dirfd;
  const char *name = d->root_path;
  if (n->parent != NO_NODE) {
    int err = chain_dir_fd(d, c, n->parent, &parent);
    if (err != 0)
      return err;
    name = arena_str(d, n->name_off);
  }
  /* O_NONBLOCK: should the file have been replaced by a FIFO, opening it
   * must not hang; reading it then fails. */
  int fd = openat(parent, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0)
    return errno;
  *fd_out = fd;
  return 0;
}

uint32_t narcache__nar_dumper_nodes(const narcache_nar_dumper *d) { return d->nnodes; }

void narcache__nar_dumper_set_walk_threads(narcache_nar_dumper *d, int threads) {
  d->walk_threads = threads;
}

int narcache__nar_dumper_file_size(const narcache_nar_dumper *d, uint32_t i, uint64_t *size) {
  if (i >= d->nnodes || d->nodes[i].type != NODE_FILE)
    return 0;
  *size = d->nodes[i].size;
  return 1;
}

void narcache__nar_dumper_set_content_source(narcache_nar_dumper *d, narcache__nar_content_fn fn,
                                             void *ctx, uint64_t max_size) {
  d->content_fn = fn;
  d->content_ctx = ctx;
  d->content_max = max_size;
  d->content_held = 0;
  d->content = NULL;
}

/* Open the current file. With `verify`, check right away that it still
 * matches the index (needed before handing the descriptor to someone
 * else); the copying path instead verifies the size with its reads, which
 * fail for anything that is not a regular file of exactly that size. */
static int open_file(narcache_nar_dumper *d, int verify) {
  /* _read may have this file open already when _next hands it out: one
   * descriptor per dumper, never two. */
  close_file(d);
  uint32_t i = d->cur;
  const index_node *n = &d->nodes[i];
  int fd = -1;
  int err = narcache__nar_dumper_open_node(d, &d->chain, i, &fd);
  if (err != 0)
    return fail(d, err == ENOMEM ? NARCACHE_ENOMEM : NARCACHE_EIO, err, i,
                "cannot open (changed while being dumped?)");
  d->file_fd = fd;
  if (!verify)
    return NARCACHE_OK;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    err = errno;
    close_file(d);
    return fail(d, NARCACHE_EIO, err, i, "cannot stat file");
  }
  if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != n->size ||
      ((st.st_mode & S_IXUSR) != 0) != n->executable) {
    close_file(d);
    return fail(d, NARCACHE_EIO, 0, i,
                "changed while being dumped (indexed as a %s%llu-byte file)",
                n->executable ? "executable " : "", (unsigned long long)n->size);
  }
  return NARCACHE_OK;
}

static void advance(narcache_nar_dumper *d) {
  close_file(d);
  if (d->cur == d->nnodes) {
    d->phase = P_DONE;
    narcache__dir_chain_close(&d->chain);
    return;
  }
  d->cur++;
  d->phase = P_HEADER;
  d->data_pos = 0;
}

static int check_ready(narcache_nar_dumper *d) {
  if (d == NULL)
    return NARCACHE_EINVAL;
  if (d->error != 0)
    return d->error;
  if (!d->opened)
    return NARCACHE_EMISUSE;
  return NARCACHE_OK;
}

int narcache_nar_dumper_next(narcache_nar_dumper *d, narcache_nar_segment *seg) {
  int rc = check_ready(d);
  if (rc < 0)
    return rc;
  if (seg == NULL || seg->version < 1 || seg->version > NARCACHE_NAR_SEGMENT_VERSION)
    return NARCACHE_EINVAL; /* both versions get the same: BYTES and FILE */
  for (;;) {
    if (d->phase == P_DONE)
      return 0;
    if (d->phase == P_DATA) {
      const index_node *n = &d->nodes[d->cur];
      if (d->data_pos >= n->size) {
        advance(d); /* the previous FILE segment has been consumed */
        continue;
      }
      if ((rc = open_file(d, 1)) < 0)
        return rc;
      seg->kind = NARCACHE_NAR_SEG_FILE;
      seg->nar_offset = n->start + n->header_len + d->data_pos;
      seg->length = n->size - d->data_pos;
      seg->data = NULL;
      seg->fd = d->file_fd;
      seg->file_offset = d->data_pos;
      d->position = seg->nar_offset + seg->length;
      d->data_pos = n->size; /* handed out; the descriptor stays open until the next call */
      return 1;
    }
    if ((rc = build_header(d, &d->header, d->cur)) < 0)
      return fail(d, rc, 0, NO_NODE, "out of memory");
    uint64_t start = d->cur < d->nnodes ? d->nodes[d->cur].start : d->tail_start;
    uint64_t skip = d->skip;
    d->skip = 0;
    if (d->cur < d->nnodes && d->nodes[d->cur].type == NODE_FILE && d->nodes[d->cur].size > 0)
      d->phase = P_DATA;
    else
      advance(d);
    if (skip < d->header.len) {
      seg->kind = NARCACHE_NAR_SEG_BYTES;
      seg->nar_offset = start + skip;
      seg->length = d->header.len - skip;
      seg->data = d->header.data + skip;
      seg->fd = -1;
      seg->file_offset = 0;
      d->position = seg->nar_offset + seg->length;
      return 1;
    }
  }
}

int narcache_nar_dumper_seek(narcache_nar_dumper *d, uint64_t offset) {
  int rc = check_ready(d);
  if (rc < 0)
    return rc;
  if (offset > d->size)
    return NARCACHE_EINVAL;
  close_file(d);
  d->data_pos = 0;
  d->skip = 0;
  d->position = offset;
  if (offset == d->size) {
    d->cur = d->nnodes;
    d->phase = P_DONE;
    return NARCACHE_OK;
  }
  if (offset >= d->tail_start) {
    d->cur = d->nnodes;
    d->phase = P_HEADER;
    d->skip = offset - d->tail_start;
    return NARCACHE_OK;
  }
  /* The last node starting at or before `offset`. */
  uint32_t lo = 0, hi = d->nnodes - 1;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo + 1) / 2;
    if (d->nodes[mid].start <= offset)
      lo = mid;
    else
      hi = mid - 1;
  }
  const index_node *n = &d->nodes[lo];
  d->cur = lo;
  if (offset < n->start + n->header_len) {
    d->phase = P_HEADER;
    d->skip = offset - n->start;
  } else {
    d->phase = P_DATA;
    d->data_pos = offset - n->start - n->header_len;
  }
  return NARCACHE_OK;
}

/* Copy up to `room` content bytes of the current file into `dst`.
 * The final read asks for one byte more when there is room, so a file
 * that grew is noticed without another system call. */
static int read_file_bytes(narcache_nar_dumper *d, char *dst, size_t room, size_t *got) {
  const index_node *n = &d->nodes[d->cur];
  uint64_t left = n->size - d->data_pos;
  size_t want = room < left ? room : (size_t)left;
  int probe = room > left;
  size_t total = 0;
  while (total < want + (size_t)probe) {
    size_t asked = want + (size_t)probe - total;
    ssize_t r = pread(d->file_fd, dst + total, asked, (off_t)(d->data_pos + total));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return fail(d, NARCACHE_EIO, errno, d->cur, "cannot read file (changed while being dumped?)");
    total += (size_t)r;
    if ((size_t)r < asked) /* a short read of a regular file is its end */
      break;
  }
  if (total < want)
    return fail(d, NARCACHE_EIO, 0, d->cur, "changed while being dumped: the file shrank");
  if (total > want)
    return fail(d, NARCACHE_EIO, 0, d->cur, "changed while being dumped: the file grew");
  if (!probe && want == left) {
    struct stat st;
    if (fstat(d->file_fd, &st) != 0 || (uint64_t)st.st_size != n->size)
      return fail(d, NARCACHE_EIO, 0, d->cur, "changed while being dumped: the file changed size");
  }
  d->data_pos += want;
  *got = want;
  return NARCACHE_OK;
}

/* Make sure the current file's read-ahead contents are held. */
static int hold_provided(narcache_nar_dumper *d) {
  if (d->content_held)
    return NARCACHE_OK;
  int err = d->content_fn->get(d->content_ctx, d->cur, &d->content);
  if (err != 0)
    return fail(d, NARCACHE_EIO, err > 0 ? err : 0, d->cur,
                err > 0 ? "cannot read (changed while being dumped?)"
                        : "changed while being dumped: the file changed size");
  d->content_held = 1;
  return NARCACHE_OK;
}

static void release_provided(narcache_nar_dumper *d) {
  d->content_fn->release(d->content_ctx, d->cur);
  d->content_held = 0;
}

/* Copy the current file's contents from the read-ahead source. */
static int copy_provided(narcache_nar_dumper *d, char *dst, narcache_outbuf *out) {
  const index_node *n = &d->nodes[d->cur];
  int rc = hold_provided(d);
  if (rc < 0)
    return rc;
  uint64_t left = n->size - d->data_pos;
  size_t room = out->size - out->pos;
  size_t len = left < room ? (size_t)left : room;
  memcpy(dst + out->pos, d->content + d->data_pos, len);
  out->pos += len;
  d->data_pos += len;
  d->position += len;
  if (d->data_pos == n->size)
    release_provided(d);
  return NARCACHE_OK;
}

int narcache__nar_dumper_read_span(narcache_nar_dumper *d, const char **data, size_t *len,
                                   char *scratch, size_t scratch_size) {
  int rc = check_ready(d);
  if (rc < 0)
    return rc;
  for (;;) {
    if (d->phase == P_DONE)
      return 0;
    if (d->phase != P_DATA) {
      narcache_nar_segment seg = {NARCACHE_NAR_SEGMENT_VERSION, 0, 0, 0, NULL, -1, 0, 0};
      rc = narcache_nar_dumper_next(d, &seg);
      if (rc <= 0)
        return rc;
      *data = seg.data; /* a header: next() keeps it until the next call */
      *len = (size_t)seg.length;
      return 1;
    }
    const index_node *n = &d->nodes[d->cur];
    if (d->content_held && d->data_pos >= n->size) /* the caller is done with it */
      release_provided(d);
    if (d->data_pos >= n->size) {
      advance(d);
      continue;
    }
    if (d->content_fn != NULL && n->size <= d->content_max) {
      if ((rc = hold_provided(d)) < 0)
        return rc;
      *data = d->content + d->data_pos; /* in place: no copy */
      *len = (size_t)(n->size - d->data_pos);
      d->data_pos = n->size;
      d->position += *len;
      return 1;
    }
    if (d->file_fd < 0 && (rc = open_file(d, 0)) < 0)
      return rc;
    size_t got = 0;
    if ((rc = read_file_bytes(d, scratch, scratch_size, &got)) < 0)
      return rc;
    d->position += got;
    *data = scratch;
    *len = got;
    return 1;
  }
}

int narcache_nar_dumper_read(narcache_nar_dumper *d, narcache_outbuf *out) {
  return narcache__nar_dumper_read_upto(d, out, 0);
}

int narcache__nar_dumper_read_upto(narcache_nar_dumper *d, narcache_outbuf *out,
                                   uint64_t stop_size) {
  int rc = check_ready(d);
  if (rc < 0)
    return rc;
  if (out == NULL || out->pos > out->size || (out->data == NULL && out->size != 0))
    return NARCACHE_EINVAL;
  char *dst = out->data;
  while (out->pos < out->size && d->phase != P_DONE) {
    if (d->phase == P_DATA) {
      uint64_t size = d->nodes[d->cur].size;
      if (d->data_pos >= size) {
        advance(d);
        continue;
      }
      if (stop_size != 0 && size >= stop_size && d->data_pos == 0 && d->file_fd < 0)
        return 2; /* the caller takes this file with narcache_nar_dumper_next */
      if (d->content_fn != NULL && size <= d->content_max) {
        if ((rc = copy_provided(d, dst, out)) < 0)
          return rc;
        continue;
      }
      if (d->file_fd < 0 && (rc = open_file(d, 0)) < 0)
        return rc;
      size_t got = 0;
      if ((rc = read_file_bytes(d, dst + out->pos, out->size - out->pos, &got)) < 0)
        return rc;
      out->pos += got;
      d->position += got;
      continue;
    }
    narcache_nar_segment seg = {NARCACHE_NAR_SEGMENT_VERSION, 0, 0, 0, NULL, -1, 0, 0};
    rc = narcache_nar_dumper_next(d, &seg);
    if (rc <= 0)
      return rc;
    /* A header: copy what fits; if it does not all fit, reposition so the
     * next call continues inside it. */
    size_t room = out->size - out->pos;
    size_t n = room < seg.length ? room : (size_t)seg.length;
    memcpy(dst + out->pos, seg.data, n);
    out->pos += n;
    if (n < seg.length)
      narcache_nar_dumper_seek(d, seg.nar_offset + n);
  }
  return d->position < d->size ? 1 : 0;
}

/* ---- index as events (listings) ------------------------------------------------ */

int narcache__nar_dumper_events(narcache_nar_dumper *d, narcache__nar_event_cb cb, void *ctx) {
  int rc = check_ready(d);
  if (rc < 0)
    return rc;
  narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
  for (uint32_t i = 0; i < d->nnodes; i++) {
    const index_node *n = &d->nodes[i];
    memset(&ev, 0, sizeof ev);
    ev.version = NARCACHE_NAR_EVENT_VERSION;
    ev.depth = n->depth;
    if (n->parent != NO_NODE) {
      ev.type = NARCACHE_NAR_ENTRY;
      ev.name = arena_str(d, n->name_off);
      ev.name_len = n->name_len;
      ev.offset = n->start;
      if ((rc = cb(ctx, &ev)) < 0)
        return rc;
      ev.name = NULL;
      ev.name_len = 0;
    }
    ev.offset = n->start + n->header_len;
    if (n->type == NODE_FILE) {
      ev.type = NARCACHE_NAR_FILE_BEGIN;
      ev.size = n->size;
      ev.executable = n->executable;
    } else if (n->type == NODE_SYMLINK) {
      ev.type = NARCACHE_NAR_SYMLINK;
      ev.name = arena_str(d, n->target_off);
      ev.name_len = n->target_len;
    } else {
      ev.type = NARCACHE_NAR_DIR_BEGIN;
    }
    if ((rc = cb(ctx, &ev)) < 0)
      return rc;
    /* Close the directories that end after this node. */
    for (uint32_t x = i; x != NO_NODE && d->nodes[x].end == i + 1; x = d->nodes[x].parent) {
      if (d->nodes[x].type != NODE_DIR)
        continue;
      memset(&ev, 0, sizeof ev);
      ev.version = NARCACHE_NAR_EVENT_VERSION;
      ev.type = NARCACHE_NAR_DIR_END;
      ev.depth = d->nodes[x].depth;
      if ((rc = cb(ctx, &ev)) < 0)
        return rc;
    }
  }
  memset(&ev, 0, sizeof ev);
  ev.version = NARCACHE_NAR_EVENT_VERSION;
  ev.type = NARCACHE_NAR_END;
  ev.offset = d->size;
  return cb(ctx, &ev);
}
