/* NAR writer: structure calls in, canonical NAR bytes out.
 *
 * Structure calls append whole frames to an internal queue; drain() and
 * data() move bytes to the caller. The same name rules and limits as the
 * parser are checked on every call, so the output always parses. */
#include "common_internal.h"
#include "nar_internal.h"

#include <string.h>

typedef enum writer_state {
  W_NODE,       /* a node must come next (root, or after entry()) */
  W_DIR,        /* inside a directory: entry() or dir_end() */
  W_FILE_DATA,  /* file contents still owed */
  W_AFTER_ROOT, /* the root node is complete: finish() */
  W_FINISHED,
  W_FAILED
} writer_state;

typedef struct writer_dir {
  char *last_name;
  size_t last_len;
  int has_last;
} writer_dir;

struct narcache_nar_writer {
  narcache__nar_limits limits;
  writer_state state;
  narcache__buf queue;
  size_t queue_pos;      /* bytes of `queue` already drained */
  uint64_t drained;      /* bytes handed to the caller (queue + file data) */
  uint64_t file_left;    /* contents still owed for the open file */
  uint64_t file_size;
  writer_dir *dirs;
  size_t ndirs, dirs_cap;
  int started;
};

int narcache_nar_writer_new(narcache_nar_writer **out) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  narcache_nar_writer *w = narcache__calloc(1, sizeof *w);
  if (w == NULL)
    return NARCACHE_ENOMEM;
  narcache__nar_limits_init(&w->limits);
  if (narcache__nar_put_token(&w->queue, NAR_MAGIC) < 0) {
    narcache__free(w);
    return NARCACHE_ENOMEM;
  }
  *out = w;
  return NARCACHE_OK;
}

int narcache_nar_writer_set_limit(narcache_nar_writer *w, int limit, uint64_t value) {
  if (w == NULL)
    return NARCACHE_EINVAL;
  if (w->started)
    return NARCACHE_EMISUSE;
  return narcache__nar_limits_set(&w->limits, limit, value);
}

void narcache_nar_writer_free(narcache_nar_writer *w) {
  if (w == NULL)
    return;
  for (size_t i = 0; i < w->dirs_cap; i++)
    narcache__free(w->dirs[i].last_name);
  narcache__free(w->dirs);
  narcache__buf_free(&w->queue);
  narcache__free(w);
}

uint64_t narcache_nar_writer_offset(const narcache_nar_writer *w) {
  if (w == NULL)
    return 0;
  return w->drained + (w->queue.len - w->queue_pos);
}

/* ---- helpers -------------------------------------------------------------- */

/* Every structure call starts here: the writer must be in `expected`. */
static int enter(narcache_nar_writer *w, writer_state expected) {
  if (w == NULL)
    return NARCACHE_EINVAL;
  if (w->state != expected)
    return NARCACHE_EMISUSE;
  w->started = 1;
  return NARCACHE_OK;
}

static int failed(narcache_nar_writer *w, int rc) {
  w->state = W_FAILED;
  return rc;
}

/* The NAR so far (and, for a file, the contents and padding still owed)
 * must stay within the size limit, as the parser would require. */
static int check_size(narcache_nar_writer *w, uint64_t still_owed) {
  uint64_t offset = narcache_nar_writer_offset(w);
  if (offset > w->limits.size || still_owed > w->limits.size - offset)
    return failed(w, NARCACHE_ELIMIT);
  return NARCACHE_OK;
}

static int put_tokens(narcache_nar_writer *w, const char *const *tokens, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (narcache__nar_put_token(&w->queue, tokens[i]) < 0)
      return NARCACHE_ENOMEM;
  return NARCACHE_OK;
}

/* A node is complete: close its entry, or end the archive at the root. */
static int node_done(narcache_nar_writer *w) {
  if (w->ndirs == 0) {
    w->state = W_AFTER_ROOT;
    return NARCACHE_OK;
  }
  w->state = W_DIR;
  return narcache__nar_put_token(&w->queue, ")");
}

/* ---- structure calls -------------------------------------------------------- */

int narcache_nar_writer_dir_begin(narcache_nar_writer *w) {
  static const char *const open[] = {"(", "type", "directory"};
  int rc = enter(w, W_NODE);
  if (rc < 0)
    return rc;
  if (w->ndirs == w->dirs_cap) {
    size_t cap = w->dirs_cap != 0 ? w->dirs_cap * 2 : 8;
    writer_dir *dirs = narcache__realloc(w->dirs, cap * sizeof *dirs);
    if (dirs == NULL)
      return failed(w, NARCACHE_ENOMEM);
    memset(dirs + w->dirs_cap, 0, (cap - w->dirs_cap) * sizeof *dirs);
    w->dirs = dirs;
    w->dirs_cap = cap;
  }
  w->dirs[w->ndirs].has_last = 0;
  w->ndirs++;
  if (put_tokens(w, open, 3) < 0)
    return failed(w, NARCACHE_ENOMEM);
  w->state = W_DIR;
  return check_size(w, 0);
}

int narcache_nar_writer_entry(narcache_nar_writer *w, const char *name, size_t len) {
  static const char *const open[] = {"entry", "(", "name"};
  int rc = enter(w, W_DIR);
  if (rc < 0)
    return rc;
  if (name == NULL && len != 0)
    return failed(w, NARCACHE_EINVAL);
  if (len > w->limits.name_len)
    return failed(w, NARCACHE_ELIMIT);
  if (narcache__nar_name_problem(name, len, w->limits.name_len) != NULL)
    return failed(w, NARCACHE_EINVAL);
  if (w->ndirs >= w->limits.depth)
    return failed(w, NARCACHE_ELIMIT);
  writer_dir *d = &w->dirs[w->ndirs - 1];
  if (d->has_last && narcache__nar_name_cmp(d->last_name, d->last_len, name, len) >= 0)
    return failed(w, NARCACHE_EINVAL);
  if (d->last_name == NULL) {
    d->last_name = narcache__malloc((size_t)w->limits.name_len + 1);
    if (d->last_name == NULL)
      return failed(w, NARCACHE_ENOMEM);
  }
  memcpy(d->last_name, name, len);
  d->last_len = len;
  d->has_last = 1;
  if (put_tokens(w, open, 3) < 0 || narcache__nar_put_str(&w->queue, name, len) < 0 ||
      narcache__nar_put_token(&w->queue, "node") < 0)
    return failed(w, NARCACHE_ENOMEM);
  w->state = W_NODE;
  return check_size(w, 0);
}

int narcache_nar_writer_file_begin(narcache_nar_writer *w, uint64_t size, int executable) {
  static const char *const open[] = {"(", "type", "regular"};
  static const char *const exec[] = {"executable", ""};
  int rc = enter(w, W_NODE);
  if (rc < 0)
    return rc;
  if (size > UINT64_MAX - 64 - narcache_nar_writer_offset(w))
    return failed(w, NARCACHE_ELIMIT);
  if (put_tokens(w, open, 3) < 0 || (executable && put_tokens(w, exec, 2) < 0) ||
      narcache__nar_put_token(&w->queue, "contents") < 0 ||
      narcache__nar_put_len(&w->queue, size) < 0)
    return failed(w, NARCACHE_ENOMEM);
  w->file_size = w->file_left = size;
  w->state = W_FILE_DATA;
  if (size == 0) {
    if (narcache__nar_put_token(&w->queue, ")") < 0 || node_done(w) < 0)
      return failed(w, NARCACHE_ENOMEM);
  }
  return check_size(w, size + (8 - size % 8) % 8);
}

int narcache_nar_writer_symlink(narcache_nar_writer *w, const char *target, size_t len) {
  static const char *const open[] = {"(", "type", "symlink", "target"};
  int rc = enter(w, W_NODE);
  if (rc < 0)
    return rc;
  if (target == NULL && len != 0)
    return failed(w, NARCACHE_EINVAL);
  if (len > w->limits.target_len)
    return failed(w, NARCACHE_ELIMIT);
  if (narcache__nar_target_problem(target, len, w->limits.target_len) != NULL)
    return failed(w, NARCACHE_EINVAL);
  if (put_tokens(w, open, 4) < 0 || narcache__nar_put_str(&w->queue, target, len) < 0 ||
      narcache__nar_put_token(&w->queue, ")") < 0 || node_done(w) < 0)
    return failed(w, NARCACHE_ENOMEM);
  return check_size(w, 0);
}

int narcache_nar_writer_dir_end(narcache_nar_writer *w) {
  int rc = enter(w, W_DIR);
  if (rc < 0)
    return rc;
  w->ndirs--;
  if (narcache__nar_put_token(&w->queue, ")") < 0 || node_done(w) < 0)
    return failed(w, NARCACHE_ENOMEM);
  return check_size(w, 0);
}

int narcache_nar_writer_finish(narcache_nar_writer *w) {
  int rc = enter(w, W_AFTER_ROOT);
  if (rc < 0)
    return rc;
  w->state = W_FINISHED;
  return NARCACHE_OK;
}

/* ---- output ----------------------------------------------------------------- */

static int valid_outbuf(const narcache_outbuf *out) {
  return out != NULL && out->pos <= out->size && (out->data != NULL || out->size == 0);
}

int narcache_nar_writer_drain(narcache_nar_writer *w, narcache_outbuf *out) {
  if (w == NULL || !valid_outbuf(out))
    return NARCACHE_EINVAL;
  size_t queued = w->queue.len - w->queue_pos;
  size_t n = out->size - out->pos < queued ? out->size - out->pos : queued;
  memcpy((char *)out->data + out->pos, w->queue.data + w->queue_pos, n);
  out->pos += n;
  w->queue_pos += n;
  w->drained += n;
  if (w->queue_pos < w->queue.len)
    return 1;
  w->queue.len = w->queue_pos = 0;
  return 0;
}

int narcache_nar_writer_data(narcache_nar_writer *w, narcache_outbuf *out,
                             narcache_inbuf *in) {
  if (w == NULL || !valid_outbuf(out) || in == NULL || in->pos > in->size ||
      (in->data == NULL && in->size != 0))
    return NARCACHE_EINVAL;
  if (w->state != W_FILE_DATA)
    return NARCACHE_EMISUSE;
  if (narcache_nar_writer_drain(w, out) != 0)
    return 1; /* the header is not out yet */
  size_t n = in->size - in->pos;
  if (n > out->size - out->pos)
    n = out->size - out->pos;
  if (n > w->file_left)
    n = (size_t)w->file_left;
  memcpy((char *)out->data + out->pos, (const char *)in->data + in->pos, n);
  out->pos += n;
  in->pos += n;
  w->file_left -= n;
  w->drained += n;
  if (w->file_left > 0)
    return 1;
  uint64_t size = w->file_size;
  w->file_size = 0;
  if (narcache__nar_put_padding(&w->queue, size) < 0 ||
      narcache__nar_put_token(&w->queue, ")") < 0 || node_done(w) < 0)
    return failed(w, NARCACHE_ENOMEM);
  return check_size(w, 0);
}
