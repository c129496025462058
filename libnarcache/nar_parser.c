/* Strict, incremental, non-recursive NAR parser (pull events).
 *
 * The archive is a sequence of STR() frames: an 8-byte little-endian
 * length, the bytes, zero padding to a multiple of 8. The parser reads one
 * frame at a time in three phases (length, body, padding), any of which may
 * be split across input buffers, and moves a grammar state machine on each
 * complete frame. File contents are never copied: they are returned as
 * spans of the caller's input. Memory is bounded by the limits: one string
 * buffer plus the last entry name of each open directory. */
#include "common_internal.h"
#include "nar_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef enum grammar_state {
  S_MAGIC,        /* "nix-archive-1" */
  S_NODE_OPEN,    /* "(" */
  S_TYPE_KW,      /* "type" */
  S_TYPE_VALUE,   /* "regular" | "symlink" | "directory" */
  S_REG_TAG,      /* "executable" | "contents" */
  S_EXEC_VALUE,   /* "" */
  S_CONTENTS_KW,  /* "contents" (after the executable marker) */
  S_CONTENTS,     /* the file contents frame */
  S_NODE_CLOSE,   /* ")" ending a regular or symlink node */
  S_TARGET_KW,    /* "target" */
  S_TARGET_VALUE, /* the symlink target */
  S_DIR_ITEM,     /* "entry" | ")" */
  S_ENTRY_OPEN,   /* "(" */
  S_NAME_KW,      /* "name" */
  S_NAME_VALUE,   /* the entry name */
  S_NODE_KW,      /* "node" */
  S_ENTRY_CLOSE,  /* ")" ending an entry */
  S_DONE
} grammar_state;

typedef enum frame_phase { PHASE_LEN, PHASE_BODY, PHASE_PAD } frame_phase;

/* step() result meaning "progress made, no event yet". */
#define CONTINUE (-1000)

/* What each state expects, for messages. */
static const char *const expectation[] = {
    [S_MAGIC] = "\"nix-archive-1\"",
    [S_NODE_OPEN] = "\"(\"",
    [S_TYPE_KW] = "\"type\"",
    [S_TYPE_VALUE] = "\"regular\", \"symlink\" or \"directory\"",
    [S_REG_TAG] = "\"executable\" or \"contents\"",
    [S_EXEC_VALUE] = "\"\" after \"executable\"",
    [S_CONTENTS_KW] = "\"contents\"",
    [S_CONTENTS] = "file contents",
    [S_NODE_CLOSE] = "\")\"",
    [S_TARGET_KW] = "\"target\"",
    [S_TARGET_VALUE] = "a symlink target",
    [S_DIR_ITEM] = "\"entry\" or \")\"",
    [S_ENTRY_OPEN] = "\"(\"",
    [S_NAME_KW] = "\"name\"",
    [S_NAME_VALUE] = "an entry name",
    [S_NODE_KW] = "\"node\"",
    [S_ENTRY_CLOSE] = "\")\"",
    [S_DONE] = "the end of the archive",
};

/* The last name seen in an open directory, for the ordering check. */
typedef struct dir_frame {
  char *last_name;
  size_t last_len;
  int has_last;
} dir_frame;

struct narcache_nar_parser {
  narcache__nar_limits limits;
  grammar_state state;
  frame_phase phase;
  uint64_t offset;       /* bytes consumed */
  uint64_t frame_start;  /* offset of the current frame's length field */
  uint64_t frame_len;    /* body length of the current frame */
  uint64_t frame_got;    /* body bytes seen */
  unsigned pad_left;
  unsigned char len_bytes[8];
  unsigned len_got;
  char *str;             /* body of non-content frames */
  size_t str_cap;
  dir_frame *dirs;       /* open directories, innermost last */
  size_t ndirs, dirs_cap;
  int executable;
  int end_pending;       /* END still to be reported after the root closed */
  int started;
  int error;
  uint64_t error_offset;
  char errmsg[NAR_ERRMSG_SIZE];
};

/* ---- lifecycle ----------------------------------------------------------- */

int narcache_nar_parser_new(narcache_nar_parser **out) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = narcache__calloc(1, sizeof **out);
  if (*out == NULL)
    return NARCACHE_ENOMEM;
  narcache__nar_limits_init(&(*out)->limits);
  return NARCACHE_OK;
}

int narcache_nar_parser_set_limit(narcache_nar_parser *p, int limit,
                                  uint64_t value) {
  if (p == NULL)
    return NARCACHE_EINVAL;
  if (p->started)
    return NARCACHE_EMISUSE;
  return narcache__nar_limits_set(&p->limits, limit, value);
}

void narcache_nar_parser_reset(narcache_nar_parser *p) {
  if (p == NULL)
    return;
  for (size_t i = 0; i < p->dirs_cap; i++)
    narcache__free(p->dirs[i].last_name);
  narcache__free(p->dirs);
  narcache__free(p->str);
  narcache__nar_limits limits = p->limits;
  memset(p, 0, sizeof *p);
  p->limits = limits;
}

void narcache_nar_parser_free(narcache_nar_parser *p) {
  if (p == NULL)
    return;
  narcache_nar_parser_reset(p);
  narcache__free(p);
}

const char *narcache_nar_parser_errmsg(const narcache_nar_parser *p) {
  return p != NULL ? p->errmsg : "";
}

uint64_t narcache_nar_parser_erroffset(const narcache_nar_parser *p) {
  return p != NULL ? p->error_offset : 0;
}

uint64_t narcache_nar_parser_offset(const narcache_nar_parser *p) {
  return p != NULL ? p->offset : 0;
}

/* ---- errors -------------------------------------------------------------- */

static int fail(narcache_nar_parser *p, int code, uint64_t offset,
                const char *fmt, ...) NARCACHE_PRINTF(4, 5);

static int fail(narcache_nar_parser *p, int code, uint64_t offset,
                const char *fmt, ...) {
  int n = snprintf(p->errmsg, sizeof p->errmsg, "bad NAR at offset %llu: ",
                   (unsigned long long)offset);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->errmsg + n, sizeof p->errmsg - (size_t)n, fmt, ap);
  va_end(ap);
  p->error = code;
  p->error_offset = offset;
  return code;
}

static int fail_token(narcache_nar_parser *p) {
  char shown[NAR_ERRMSG_SIZE];
  narcache__nar_quote(shown, sizeof shown, p->str, (size_t)p->frame_len);
  return fail(p, NARCACHE_EBADNAR, p->frame_start, "expected %s, found \"%s\"",
              expectation[p->state], shown);
}

/* ---- setup --------------------------------------------------------------- */

/* Allocate the string buffer once the limits are final. */
static int start(narcache_nar_parser *p) {
  uint64_t cap = p->limits.name_len;
  if (p->limits.target_len > cap)
    cap = p->limits.target_len;
  if (cap < NAR_KEYWORD_MAX)
    cap = NAR_KEYWORD_MAX;
  p->str_cap = (size_t)cap + 1;
  p->str = narcache__malloc(p->str_cap);
  if (p->str == NULL)
    return fail(p, NARCACHE_ENOMEM, 0, "out of memory");
  p->started = 1;
  return NARCACHE_OK;
}

static int push_dir(narcache_nar_parser *p) {
  if (p->ndirs == p->dirs_cap) {
    size_t cap = p->dirs_cap != 0 ? p->dirs_cap * 2 : 8;
    dir_frame *dirs = narcache__realloc(p->dirs, cap * sizeof *dirs);
    if (dirs == NULL)
      return fail(p, NARCACHE_ENOMEM, p->frame_start, "out of memory");
    memset(dirs + p->dirs_cap, 0, (cap - p->dirs_cap) * sizeof *dirs);
    p->dirs = dirs;
    p->dirs_cap = cap;
  }
  dir_frame *d = &p->dirs[p->ndirs++];
  d->has_last = 0;
  d->last_len = 0;
  return NARCACHE_OK;
}

/* ---- frame limits ---------------------------------------------------------- */

/* Largest body the current state accepts; longer frames fail at once,
 * before anything is read or allocated. */
static int check_frame_length(narcache_nar_parser *p) {
  uint64_t len = p->frame_len;
  switch (p->state) {
  case S_CONTENTS:
    break;
  case S_NAME_VALUE:
    if (len == 0)
      return fail(p, NARCACHE_EBADNAR, p->frame_start, "empty entry name");
    if (len > p->limits.name_len)
      return fail(p, NARCACHE_ELIMIT, p->frame_start,
                  "entry name of %llu bytes exceeds the limit of %llu",
                  (unsigned long long)len, (unsigned long long)p->limits.name_len);
    break;
  case S_TARGET_VALUE:
    if (len == 0)
      return fail(p, NARCACHE_EBADNAR, p->frame_start, "empty symlink target");
    if (len > p->limits.target_len)
      return fail(p, NARCACHE_ELIMIT, p->frame_start,
                  "symlink target of %llu bytes exceeds the limit of %llu",
                  (unsigned long long)len, (unsigned long long)p->limits.target_len);
    break;
  default:
    if (len > NAR_KEYWORD_MAX)
      return fail(p, NARCACHE_EBADNAR, p->frame_start,
                  "expected %s, found a string of %llu bytes",
                  expectation[p->state], (unsigned long long)len);
  }
  /* The whole frame must fit below the size limit (and in 64 bits). */
  uint64_t body_and_pad = len + (8 - len % 8) % 8;
  if (len > UINT64_MAX - 8 || body_and_pad < len ||
      body_and_pad > p->limits.size || p->offset > p->limits.size - body_and_pad)
    return fail(p, NARCACHE_ELIMIT, p->frame_start,
                "a frame of %llu bytes exceeds the NAR size limit of %llu",
                (unsigned long long)len, (unsigned long long)p->limits.size);
  return NARCACHE_OK;
}

/* ---- grammar ------------------------------------------------------------- */

static int is_token(const narcache_nar_parser *p, const char *keyword) {
  size_t n = strlen(keyword);
  return p->frame_len == n && memcmp(p->str, keyword, n) == 0;
}

static void emit(narcache_nar_parser *p, narcache_nar_event *ev, int type) {
  ev->type = (uint32_t)type;
  ev->depth = (uint32_t)p->ndirs;
  ev->executable = 0;
  ev->name = NULL;
  ev->name_len = 0;
  ev->data = NULL;
  ev->len = 0;
  ev->size = 0;
  ev->offset = p->frame_start;
}

/* A node just closed: back to its directory, or the end of the archive. */
static void node_closed(narcache_nar_parser *p) {
  if (p->ndirs == 0) {
    p->state = S_DONE;
    p->end_pending = 1;
  } else {
    p->state = S_ENTRY_CLOSE;
  }
}

static int take_type(narcache_nar_parser *p, narcache_nar_event *ev) {
  if (is_token(p, "regular")) {
    p->executable = 0;
    p->state = S_REG_TAG;
    return 0;
  }
  if (is_token(p, "symlink")) {
    p->state = S_TARGET_KW;
    return 0;
  }
  if (is_token(p, "directory")) {
    int rc = push_dir(p);
    if (rc < 0)
      return rc;
    emit(p, ev, NARCACHE_NAR_DIR_BEGIN);
    ev->depth = (uint32_t)(p->ndirs - 1);
    p->state = S_DIR_ITEM;
    return NARCACHE_NAR_DIR_BEGIN;
  }
  return fail_token(p);
}

static int take_name(narcache_nar_parser *p, narcache_nar_event *ev) {
  size_t len = (size_t)p->frame_len;
  char shown[NAR_ERRMSG_SIZE];
  const char *problem = narcache__nar_name_problem(p->str, len, p->limits.name_len);
  if (problem != NULL) {
    narcache__nar_quote(shown, sizeof shown, p->str, len);
    return fail(p, NARCACHE_EBADNAR, p->frame_start, "%s: \"%s\"", problem, shown);
  }
  dir_frame *d = &p->dirs[p->ndirs - 1];
  if (d->has_last && narcache__nar_name_cmp(d->last_name, d->last_len, p->str, len) >= 0) {
    char previous[NAR_ERRMSG_SIZE];
    narcache__nar_quote(shown, sizeof shown, p->str, len);
    narcache__nar_quote(previous, sizeof previous, d->last_name, d->last_len);
    return fail(p, NARCACHE_EBADNAR, p->frame_start,
                "entry \"%s\" is not after \"%s\" (names must be unique and sorted)",
                shown, previous);
  }
  if (d->last_name == NULL) {
    d->last_name = narcache__malloc((size_t)p->limits.name_len + 1);
    if (d->last_name == NULL)
      return fail(p, NARCACHE_ENOMEM, p->frame_start, "out of memory");
  }
  memcpy(d->last_name, p->str, len);
  d->last_len = len;
  d->has_last = 1;
  emit(p, ev, NARCACHE_NAR_ENTRY);
  ev->depth = (uint32_t)p->ndirs;
  ev->name = p->str;
  ev->name_len = len;
  p->state = S_NODE_KW;
  return NARCACHE_NAR_ENTRY;
}

static int take_target(narcache_nar_parser *p, narcache_nar_event *ev) {
  size_t len = (size_t)p->frame_len;
  const char *problem = narcache__nar_target_problem(p->str, len, p->limits.target_len);
  if (problem != NULL)
    return fail(p, NARCACHE_EBADNAR, p->frame_start, "%s", problem);
  emit(p, ev, NARCACHE_NAR_SYMLINK);
  ev->name = p->str;
  ev->name_len = len;
  p->state = S_NODE_CLOSE;
  return NARCACHE_NAR_SYMLINK;
}

/* Advance the grammar on a complete non-content frame. Returns an event
 * type, 0 for "no event", or an error. */
static int take_frame(narcache_nar_parser *p, narcache_nar_event *ev) {
  p->str[p->frame_len] = '\0';
  switch (p->state) {
  case S_MAGIC:
    if (!is_token(p, NAR_MAGIC))
      return fail(p, NARCACHE_EBADNAR, 0, "not a NAR archive (bad magic)");
    p->state = S_NODE_OPEN;
    return 0;
  case S_NODE_OPEN:
  case S_ENTRY_OPEN:
    if (!is_token(p, "("))
      return fail_token(p);
    p->state = p->state == S_NODE_OPEN ? S_TYPE_KW : S_NAME_KW;
    return 0;
  case S_TYPE_KW:
    if (!is_token(p, "type"))
      return fail_token(p);
    p->state = S_TYPE_VALUE;
    return 0;
  case S_TYPE_VALUE:
    return take_type(p, ev);
  case S_REG_TAG:
    if (is_token(p, "executable")) {
      p->state = S_EXEC_VALUE;
      return 0;
    }
    if (!is_token(p, "contents"))
      return fail_token(p);
    p->state = S_CONTENTS;
    return 0;
  case S_EXEC_VALUE:
    if (p->frame_len != 0)
      return fail_token(p);
    p->executable = 1;
    p->state = S_CONTENTS_KW;
    return 0;
  case S_CONTENTS_KW:
    if (!is_token(p, "contents"))
      return fail_token(p);
    p->state = S_CONTENTS;
    return 0;
  case S_NODE_CLOSE:
    if (!is_token(p, ")"))
      return fail_token(p);
    node_closed(p);
    return 0;
  case S_TARGET_KW:
    if (!is_token(p, "target"))
      return fail_token(p);
    p->state = S_TARGET_VALUE;
    return 0;
  case S_TARGET_VALUE:
    return take_target(p, ev);
  case S_DIR_ITEM:
    if (is_token(p, ")")) {
      emit(p, ev, NARCACHE_NAR_DIR_END);
      p->ndirs--;
      ev->depth = (uint32_t)p->ndirs;
      node_closed(p);
      return NARCACHE_NAR_DIR_END;
    }
    if (!is_token(p, "entry"))
      return fail_token(p);
    if (p->ndirs >= p->limits.depth)
      return fail(p, NARCACHE_ELIMIT, p->frame_start,
                  "nesting deeper than the limit of %llu",
                  (unsigned long long)p->limits.depth);
    p->state = S_ENTRY_OPEN;
    return 0;
  case S_NAME_KW:
    if (!is_token(p, "name"))
      return fail_token(p);
    p->state = S_NAME_VALUE;
    return 0;
  case S_NAME_VALUE:
    return take_name(p, ev);
  case S_NODE_KW:
    if (!is_token(p, "node"))
      return fail_token(p);
    p->state = S_NODE_OPEN;
    return 0;
  case S_ENTRY_CLOSE:
    if (!is_token(p, ")"))
      return fail_token(p);
    p->state = S_DIR_ITEM;
    return 0;
  case S_CONTENTS:
  case S_DONE:
    break;
  }
  return fail(p, NARCACHE_EBADNAR, p->frame_start, "internal parser state error");
}

/* ---- frame reading --------------------------------------------------------- */

static size_t available(const narcache_inbuf *in) { return in->size - in->pos; }

static const unsigned char *cursor(const narcache_inbuf *in) {
  return (const unsigned char *)in->data + in->pos;
}

static void consume(narcache_nar_parser *p, narcache_inbuf *in, size_t n) {
  in->pos += n;
  p->offset += n;
}

/* Read the 8-byte length. Returns 1 when complete, 0 if input ran out. */
static int read_length(narcache_nar_parser *p, narcache_inbuf *in) {
  if (p->len_got == 0)
    p->frame_start = p->offset;
  size_t n = available(in);
  if (n > 8 - p->len_got)
    n = 8 - p->len_got;
  memcpy(p->len_bytes + p->len_got, cursor(in), n);
  p->len_got += (unsigned)n;
  consume(p, in, n);
  if (p->len_got < 8)
    return 0;
  uint64_t len = 0;
  for (int i = 7; i >= 0; i--)
    len = (len << 8) | p->len_bytes[i];
  p->len_got = 0;
  p->frame_len = len;
  p->frame_got = 0;
  p->pad_left = (unsigned)((8 - len % 8) % 8);
  return 1;
}

/* Check and skip padding. Returns 1 when complete, 0 if input ran out,
 * or an error. */
static int read_padding(narcache_nar_parser *p, narcache_inbuf *in) {
  while (p->pad_left > 0) {
    if (available(in) == 0)
      return 0;
    if (*cursor(in) != 0)
      return fail(p, NARCACHE_EBADNAR, p->offset, "non-zero padding byte");
    consume(p, in, 1);
    p->pad_left--;
  }
  return 1;
}

/* Copy a string body into p->str. Returns 1 when complete, 0 if input ran out. */
static int read_string(narcache_nar_parser *p, narcache_inbuf *in) {
  size_t want = (size_t)(p->frame_len - p->frame_got);
  size_t n = available(in) < want ? available(in) : want;
  memcpy(p->str + p->frame_got, cursor(in), n);
  p->frame_got += n;
  consume(p, in, n);
  return p->frame_got == p->frame_len;
}

/* File contents: hand out spans of the input. */
static int read_contents(narcache_nar_parser *p, narcache_inbuf *in,
                         narcache_nar_event *ev) {
  uint64_t want = p->frame_len - p->frame_got;
  size_t n = available(in);
  if (n > want)
    n = (size_t)want;
  if (n == 0)
    return 0;
  emit(p, ev, NARCACHE_NAR_FILE_DATA);
  ev->data = cursor(in);
  ev->len = n;
  ev->offset = p->offset;
  p->frame_got += n;
  consume(p, in, n);
  return NARCACHE_NAR_FILE_DATA;
}

/* One step: returns an event type, 0 when input is exhausted, or an error. */
static int step(narcache_nar_parser *p, narcache_inbuf *in, narcache_nar_event *ev) {
  int rc;
  switch (p->phase) {
  case PHASE_LEN:
    if (!read_length(p, in))
      return 0;
    if ((rc = check_frame_length(p)) < 0)
      return rc;
    p->phase = PHASE_BODY;
    if (p->state == S_CONTENTS) {
      emit(p, ev, NARCACHE_NAR_FILE_BEGIN);
      ev->size = p->frame_len;
      ev->executable = (uint32_t)p->executable;
      ev->offset = p->offset;
      return NARCACHE_NAR_FILE_BEGIN;
    }
    return CONTINUE;
  case PHASE_BODY:
    if (p->state == S_CONTENTS) {
      if (p->frame_got < p->frame_len)
        return read_contents(p, in, ev);
    } else if (!read_string(p, in)) {
      return 0;
    }
    p->phase = PHASE_PAD;
    return CONTINUE;
  case PHASE_PAD:
    if ((rc = read_padding(p, in)) <= 0)
      return rc;
    p->phase = PHASE_LEN;
    if (p->state == S_CONTENTS) {
      emit(p, ev, NARCACHE_NAR_FILE_END);
      ev->offset = p->offset;
      p->state = S_NODE_CLOSE;
      return NARCACHE_NAR_FILE_END;
    }
    rc = take_frame(p, ev);
    return rc == 0 ? CONTINUE : rc;
  }
  return fail(p, NARCACHE_EBADNAR, p->offset, "internal parser phase error");
}

int narcache_nar_parser_next(narcache_nar_parser *p, narcache_inbuf *in,
                             narcache_nar_event *ev) {
  if (p == NULL || in == NULL || ev == NULL || in->pos > in->size ||
      (in->data == NULL && in->size != 0) ||
      ev->version != NARCACHE_NAR_EVENT_VERSION)
    return NARCACHE_EINVAL;
  if (p->error != 0)
    return p->error;
  narcache_inbuf empty;
  if (in->data == NULL) { /* size is 0: never do arithmetic on NULL */
    empty = *in;
    empty.data = "";
    in = &empty;
  }
  if (!p->started) {
    int rc = start(p);
    if (rc < 0)
      return rc;
  }
  for (;;) {
    if (p->state == S_DONE) {
      if (p->end_pending) {
        p->end_pending = 0;
        emit(p, ev, NARCACHE_NAR_END);
        ev->offset = p->offset;
        return NARCACHE_NAR_END;
      }
      if (available(in) != 0)
        return fail(p, NARCACHE_EBADNAR, p->offset, "trailing data after the end of the archive");
      return 0;
    }
    int rc = step(p, in, ev);
    if (rc != CONTINUE)
      return rc;
  }
}

int narcache_nar_parser_finish(narcache_nar_parser *p) {
  if (p == NULL)
    return NARCACHE_EINVAL;
  if (p->error != 0)
    return p->error;
  if (p->state != S_DONE)
    return fail(p, NARCACHE_EBADNAR, p->offset, "truncated archive: expected %s",
                expectation[p->state]);
  return NARCACHE_OK;
}
