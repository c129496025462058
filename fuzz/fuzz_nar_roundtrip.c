/* The NAR writer driven by a program read from the input; whatever it
 * finishes must parse back to exactly what was written.
 *
 * Input layout: 3 header bytes, then opcodes with their operands.
 *   [0] flags: bit0 depth limit 1 + [1] % 64; bit1 name limit 1 + [2] % 32;
 *       bit2 target limit 1 + 16 * ([2] % 64 / 16); bit3 size limit
 *       64 + 16 * [1] + [2];
 *       bits4-5 output window (4096, 1, 1 + [2] % 13, 64 bytes);
 *       bit6 file data handed over in pieces of 1 + [1] % 7 bytes;
 *       bit7 the output is parsed back one byte at a time.
 *   [1] bit7: drain only when needed (the queue grows), not after each call.
 *   Opcodes < 0xF0 mean the natural next call for the writer's state:
 *       a node: dir_begin, file_begin (+ data), symlink; in a directory:
 *       entry (generated, increasing names, or raw bytes) or dir_end; an
 *       open file: data; after the root: finish.
 *   Opcodes >= 0xF0 make any call regardless of state (misuse).
 *   At the end of the input the program completes the archive itself.
 *
 * A model of the writer predicts each result: 0 when the call is valid,
 * EMISUSE out of order, EINVAL/ELIMIT for the documented reasons (where
 * several apply, any of them). The first error ends the program; a writer
 * that failed must then refuse everything with EMISUSE. After finish():
 * the drained bytes must parse (default limits, and the writer's own
 * limits) to the very events that were written, end exactly at the end of
 * the output, and the lister must produce JSON. Building with
 * -DFUZZ_NAR_ROUNDTRIP_IGNORE_SIZE_LIMIT leaves the size limit out of the
 * parse with the writer's own limits (the writer checks it only against
 * file sizes, so its output can exceed it). */
#include <narcache.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "fuzz_nar_roundtrip: invariant failed at line %d: %s\n", \
              __LINE__, #cond);                                                \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define HEADER 3
#define MAX_DEPTH 64   /* writer depth limits stay <= the parser default */
#define NAME_CAP 272   /* longest name the program builds (265) + slack */
#define STOP (-1)

/* Allowed results. */
#define A_OK 1u
#define A_MISUSE 2u
#define A_INVAL 4u
#define A_LIMIT 8u

typedef struct bytes {
  uint8_t *p;
  size_t len, cap;
} bytes;

static void bytes_append(bytes *b, const void *data, size_t len) {
  if (b->cap - b->len < len) {
    size_t cap = b->cap != 0 ? b->cap : 256;
    while (cap - b->len < len)
      cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    CHECK(p != NULL);
    b->p = p;
    b->cap = cap;
  }
  if (len != 0)
    memcpy(b->p + b->len, data, len);
  b->len += len;
}

enum mstate { M_NODE, M_DIR, M_FILE, M_AFTER_ROOT, M_FINISHED };

/* One expected parser event (FILE_DATA/FILE_END folded into FILE_BEGIN).
 * off/len locate the name, target or contents in the arena. */
typedef struct exp_event {
  uint32_t type, depth, executable;
  uint64_t size;
  size_t off, len;
} exp_event;

typedef struct prog {
  const uint8_t *in;
  size_t n, i;
  narcache_nar_writer *w;
  uint64_t lim_name, lim_target, lim_depth, lim_size;
  int limits_changed;
  int started; /* a structure call succeeded: limits are frozen */
  enum mstate state;
  size_t ndirs;
  struct {
    uint8_t last[NAME_CAP];
    size_t last_len;
    int has_last;
  } dirs[MAX_DEPTH + 1];
  uint64_t file_left;
  size_t window, piece;
  int lazy_drain, bytewise_parse;
  bytes out, arena;
  exp_event *ev;
  size_t nev, ev_cap;
} prog;

/* ---- reading the program ----------------------------------------------------- */

static int at_end(const prog *g) { return g->i >= g->n; }

static uint8_t get(prog *g) { return g->i < g->n ? g->in[g->i++] : 0; }

/* `len` bytes from the program; past its end a fixed pattern. */
static void take(prog *g, uint8_t *dst, size_t len) {
  for (size_t k = 0; k < len; k++)
    dst[k] = g->i < g->n ? g->in[g->i++] : (uint8_t)(k * 31 + 7);
}

/* ---- the model ------------------------------------------------------------------ */

static void push_event(prog *g, uint32_t type, uint32_t depth, const void *bytes_,
                       size_t len) {
  if (g->nev == g->ev_cap) {
    size_t cap = g->ev_cap != 0 ? g->ev_cap * 2 : 64;
    exp_event *ev = realloc(g->ev, cap * sizeof *ev);
    CHECK(ev != NULL);
    g->ev = ev;
    g->ev_cap = cap;
  }
  exp_event *e = &g->ev[g->nev++];
  memset(e, 0, sizeof *e);
  e->type = type;
  e->depth = depth;
  e->off = g->arena.len;
  e->len = len;
  bytes_append(&g->arena, bytes_, len);
}

static void node_done(prog *g) { g->state = g->ndirs == 0 ? M_AFTER_ROOT : M_DIR; }

static unsigned bit_of(int rc) {
  switch (rc) {
  case 0:
    return A_OK;
  case NARCACHE_EMISUSE:
    return A_MISUSE;
  case NARCACHE_EINVAL:
    return A_INVAL;
  case NARCACHE_ELIMIT:
    return A_LIMIT;
  default:
    return 0;
  }
}

/* Check a structure call's result. STOP on any error. */
static int outcome(prog *g, int rc, unsigned allowed) {
  if (rc == NARCACHE_ENOMEM)
    return STOP;
  /* Any call that would be accepted may still exceed a NAR size limit. */
  if ((allowed & A_OK) != 0 && g->lim_size != UINT64_MAX)
    allowed |= A_LIMIT;
  CHECK((bit_of(rc) & allowed) != 0);
  if (rc == 0)
    return 0;
  if (rc != NARCACHE_EMISUSE) {
    /* The writer is unusable after a failure. */
    CHECK(narcache_nar_writer_dir_end(g->w) == NARCACHE_EMISUSE);
    CHECK(narcache_nar_writer_finish(g->w) == NARCACHE_EMISUSE);
    CHECK(narcache_nar_writer_dir_begin(g->w) == NARCACHE_EMISUSE);
  }
  return STOP;
}

static void drain(prog *g) {
  int rc;
  do {
    uint8_t *win = malloc(g->window); /* exact size: overruns are caught */
    CHECK(win != NULL);
    narcache_outbuf o = {win, g->window, 0};
    rc = narcache_nar_writer_drain(g->w, &o);
    CHECK(rc == 0 || rc == 1);
    CHECK(o.pos <= o.size);
    if (rc == 1)
      CHECK(o.pos == o.size);
    bytes_append(&g->out, win, o.pos);
    free(win);
  } while (rc == 1);
  CHECK(narcache_nar_writer_offset(g->w) == g->out.len);
}

static void maybe_drain(prog *g) {
  if (!g->lazy_drain)
    drain(g);
}

/* ---- parsing the result back ------------------------------------------------------- */

static void parse_back(prog *g, int own_limits) {
  narcache_nar_parser *p = NULL;
  if (narcache_nar_parser_new(&p) != 0)
    return;
  if (own_limits) {
    CHECK(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_NAME_LEN, g->lim_name) == 0);
    CHECK(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_TARGET_LEN, g->lim_target) == 0);
    CHECK(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_DEPTH, g->lim_depth) == 0);
#ifndef FUZZ_NAR_ROUNDTRIP_IGNORE_SIZE_LIMIT
    CHECK(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_SIZE, g->lim_size) == 0);
#endif
  }
  size_t len = g->out.len, fed = 0, idx = 0;
  uint64_t file_got = 0;
  const exp_event *file = NULL;
  int ended = 0, rc = 0;
  do {
    size_t n = g->bytewise_parse ? (len - fed != 0) : len - fed;
    narcache_inbuf in = {n != 0 ? g->out.p + fed : NULL, n, 0};
    narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
    while ((rc = narcache_nar_parser_next(p, &in, &ev)) > 0) {
      if (rc == NARCACHE_NAR_FILE_DATA) {
        CHECK(file != NULL && ev.len <= file->size - file_got);
        CHECK(memcmp(g->arena.p + file->off + file_got, ev.data, ev.len) == 0);
        file_got += ev.len;
        continue;
      }
      if (rc == NARCACHE_NAR_FILE_END) {
        CHECK(file != NULL && file_got == file->size);
        file = NULL;
        continue;
      }
      CHECK(idx < g->nev);
      const exp_event *e = &g->ev[idx++];
      CHECK((int)e->type == rc && ev.type == e->type && ev.depth == e->depth);
      switch (rc) {
      case NARCACHE_NAR_ENTRY:
      case NARCACHE_NAR_SYMLINK:
        CHECK(ev.name_len == e->len && memcmp(ev.name, g->arena.p + e->off, e->len) == 0);
        break;
      case NARCACHE_NAR_FILE_BEGIN:
        CHECK(ev.size == e->size && ev.executable == e->executable);
        file = e;
        file_got = 0;
        break;
      case NARCACHE_NAR_END:
        CHECK(ev.offset == len);
        ended = 1;
        break;
      default:
        break;
      }
    }
    if (rc < 0)
      fprintf(stderr, "fuzz_nar_roundtrip: parse error %d (%s) on the writer's output\n",
              rc, narcache_nar_parser_errmsg(p));
    CHECK(rc == 0);
    CHECK(in.pos == in.size);
    fed += n;
  } while (fed < len);
  CHECK(ended && idx == g->nev && file == NULL);
  CHECK(narcache_nar_parser_finish(p) == 0);
  CHECK(narcache_nar_parser_offset(p) == len);
  narcache_nar_parser_free(p);
}

static void list_back(prog *g) {
  narcache_nar_lister *l = NULL;
  if (narcache_nar_lister_new(&l) != 0)
    return;
  narcache_inbuf in = {g->out.p, g->out.len, 0};
  int rc = narcache_nar_lister_write(l, &in);
  CHECK(rc == 1 && in.pos == in.size);
  char *json = NULL;
  size_t json_len = 0;
  rc = narcache_nar_lister_finish(l, &json, &json_len);
  if (rc != NARCACHE_ENOMEM) {
    CHECK(rc == 0 && json != NULL && json_len == strlen(json));
    CHECK(json_len > 20 && memcmp(json, "{\"version\":1,\"root\":", 20) == 0);
  }
  narcache_free(json);
  narcache_nar_lister_free(l);
}

/* ---- calls ---------------------------------------------------------------------- */

static int call_dir_begin(prog *g) {
  int rc = narcache_nar_writer_dir_begin(g->w);
  if (outcome(g, rc, g->state == M_NODE ? A_OK : A_MISUSE) < 0)
    return STOP;
  g->started = 1;
  push_event(g, NARCACHE_NAR_DIR_BEGIN, (uint32_t)g->ndirs, NULL, 0);
  g->dirs[g->ndirs++].has_last = 0;
  g->state = M_DIR;
  maybe_drain(g);
  return 0;
}

static int name_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  int c = memcmp(a, b, alen < blen ? alen : blen);
  if (c != 0)
    return c;
  return alen < blen ? -1 : alen > blen;
}

static int call_entry(prog *g, const uint8_t *name, size_t len) {
  unsigned allowed = A_MISUSE;
  if (g->state == M_DIR) {
    allowed = 0;
    if (len > g->lim_name)
      allowed |= A_LIMIT;
    if (len == 0 || (len == 1 && name[0] == '.') ||
        (len == 2 && name[0] == '.' && name[1] == '.') || memchr(name, '/', len) != NULL ||
        memchr(name, '\0', len) != NULL)
      allowed |= A_INVAL;
    if (g->ndirs >= g->lim_depth)
      allowed |= A_LIMIT;
    const uint8_t *last = g->dirs[g->ndirs - 1].last;
    if (g->dirs[g->ndirs - 1].has_last &&
        name_cmp(last, g->dirs[g->ndirs - 1].last_len, name, len) >= 0)
      allowed |= A_INVAL;
    if (allowed == 0)
      allowed = A_OK;
  }
  int rc = narcache_nar_writer_entry(g->w, (const char *)name, len);
  if (outcome(g, rc, allowed) < 0)
    return STOP;
  g->started = 1;
  CHECK(len < NAME_CAP);
  memcpy(g->dirs[g->ndirs - 1].last, name, len);
  g->dirs[g->ndirs - 1].last_len = len;
  g->dirs[g->ndirs - 1].has_last = 1;
  push_event(g, NARCACHE_NAR_ENTRY, (uint32_t)g->ndirs, name, len);
  g->state = M_NODE;
  maybe_drain(g);
  return 0;
}

/* Hand `len` bytes to data(), in pieces, through small output windows. */
static int call_data(prog *g, const uint8_t *src, size_t len) {
  if (g->state != M_FILE) {
    uint8_t tmp[8];
    narcache_outbuf o = {tmp, sizeof tmp, 0};
    narcache_inbuf i = {src, len, 0};
    int rc = narcache_nar_writer_data(g->w, &o, &i);
    CHECK(rc == NARCACHE_EMISUSE && o.pos == 0 && i.pos == 0);
    return STOP;
  }
  size_t fed = 0;
  int rc = 1;
  while (fed < len && rc == 1) {
    size_t piece = len - fed < g->piece ? len - fed : g->piece;
    narcache_inbuf in = {src + fed, piece, 0};
    for (;;) {
      uint8_t *win = malloc(g->window);
      CHECK(win != NULL);
      narcache_outbuf o = {win, g->window, 0};
      size_t before = in.pos;
      rc = narcache_nar_writer_data(g->w, &o, &in);
      if (rc == NARCACHE_ENOMEM || (rc == NARCACHE_ELIMIT && g->lim_size != UINT64_MAX)) {
        free(win);
        return STOP; /* closing the file would pass the size limit */
      }
      CHECK(rc == 0 || rc == 1);
      CHECK(o.pos <= o.size && in.pos >= before && in.pos <= in.size);
      size_t took = in.pos - before;
      CHECK(took <= g->file_left);
      bytes_append(&g->out, win, o.pos);
      free(win);
      bytes_append(&g->arena, src + fed + before, took);
      g->file_left -= took;
      CHECK(rc == (g->file_left > 0 ? 1 : 0));
      if (rc == 0 || (in.pos == in.size && o.pos < o.size))
        break;
    }
    fed += in.pos;
  }
  if (g->file_left == 0) {
    node_done(g);
    maybe_drain(g);
  }
  return 0;
}

static int call_file_begin(prog *g, uint64_t size, int executable) {
  unsigned allowed = A_MISUSE;
  if (g->state == M_NODE)
    allowed = g->lim_size != UINT64_MAX ? A_OK | A_LIMIT : A_OK;
  int rc = narcache_nar_writer_file_begin(g->w, size, executable);
  if (outcome(g, rc, allowed) < 0)
    return STOP;
  g->started = 1;
  push_event(g, NARCACHE_NAR_FILE_BEGIN, (uint32_t)g->ndirs, NULL, 0);
  g->ev[g->nev - 1].size = size;
  g->ev[g->nev - 1].len = (size_t)size;
  g->ev[g->nev - 1].executable = executable != 0;
  g->file_left = size;
  if (size == 0)
    node_done(g);
  else
    g->state = M_FILE;
  maybe_drain(g);
  return 0;
}

static int call_symlink(prog *g, const uint8_t *target, size_t len) {
  unsigned allowed = A_MISUSE;
  if (g->state == M_NODE) {
    allowed = 0;
    if (len > g->lim_target)
      allowed |= A_LIMIT;
    if (len == 0 || memchr(target, '\0', len) != NULL)
      allowed |= A_INVAL;
    if (allowed == 0)
      allowed = A_OK;
  }
  int rc = narcache_nar_writer_symlink(g->w, (const char *)target, len);
  if (outcome(g, rc, allowed) < 0)
    return STOP;
  g->started = 1;
  push_event(g, NARCACHE_NAR_SYMLINK, (uint32_t)g->ndirs, target, len);
  node_done(g);
  maybe_drain(g);
  return 0;
}

static int call_dir_end(prog *g) {
  int rc = narcache_nar_writer_dir_end(g->w);
  if (outcome(g, rc, g->state == M_DIR ? A_OK : A_MISUSE) < 0)
    return STOP;
  g->ndirs--;
  push_event(g, NARCACHE_NAR_DIR_END, (uint32_t)g->ndirs, NULL, 0);
  node_done(g);
  maybe_drain(g);
  return 0;
}

static int call_finish(prog *g) {
  int rc = narcache_nar_writer_finish(g->w);
  if (outcome(g, rc, g->state == M_AFTER_ROOT ? A_OK : A_MISUSE) < 0)
    return STOP;
  push_event(g, NARCACHE_NAR_END, 0, NULL, 0);
  g->state = M_FINISHED;
  drain(g);
  /* Nothing more comes out. */
  uint8_t tmp[1];
  narcache_outbuf o = {tmp, sizeof tmp, 0};
  CHECK(narcache_nar_writer_drain(g->w, &o) == 0 && o.pos == 0);
  parse_back(g, 0);
  if (g->limits_changed)
    parse_back(g, 1);
  list_back(g);
  return 0;
}

static int call_set_limit(prog *g, uint8_t kind, uint8_t v) {
  int limit = kind % 4 + 1;
  uint64_t value;
  switch (limit) {
  case NARCACHE_NAR_LIMIT_NAME_LEN:
    value = 1 + v % 255;
    break;
  case NARCACHE_NAR_LIMIT_TARGET_LEN:
    value = 1 + (uint64_t)v * 16;
    break;
  case NARCACHE_NAR_LIMIT_DEPTH:
    value = 1 + v % 64;
    break;
  default:
    value = 64 + (uint64_t)v * 8;
    break;
  }
  int rc = narcache_nar_writer_set_limit(g->w, limit, value);
  CHECK(rc == (g->started ? NARCACHE_EMISUSE : 0));
  if (rc != 0)
    return STOP;
  switch (limit) {
  case NARCACHE_NAR_LIMIT_NAME_LEN:
    g->lim_name = value;
    break;
  case NARCACHE_NAR_LIMIT_TARGET_LEN:
    g->lim_target = value;
    break;
  case NARCACHE_NAR_LIMIT_DEPTH:
    g->lim_depth = value;
    break;
  default:
    g->lim_size = value;
    break;
  }
  g->limits_changed = 1;
  return 0;
}

/* ---- operand builders ---------------------------------------------------------- */

/* Raw bytes, usually short; 0xF0.. give 250..265 bytes. */
static size_t raw_string(prog *g, uint8_t *dst) {
  uint8_t b = get(g);
  size_t len = b < 0xF0 ? b % 48 : 250 + (size_t)(b - 0xF0);
  take(g, dst, len);
  return len;
}

/* A valid name greater than the directory's last one (if it fits). */
static size_t next_name(prog *g, uint8_t c, uint8_t *dst) {
  size_t d = g->ndirs > 0 ? g->ndirs - 1 : 0;
  size_t len;
  uint64_t max = g->lim_name < 255 ? g->lim_name : 255;
  if (!g->dirs[d].has_last) {
    uint8_t b = get(g);
    dst[0] = b == 0 || b == '/' || b == '.' ? 'a' : b;
    return 1;
  }
  len = g->dirs[d].last_len;
  memcpy(dst, g->dirs[d].last, len);
  if ((c & 4) && len < max) {
    uint8_t b = get(g);
    dst[len++] = b == 0 || b == '/' ? 'a' : b;
    return len;
  }
  for (int tries = 0; tries < 3; tries++) {
    size_t k = len;
    while (k > 0 && dst[k - 1] == 0xFF)
      k--;
    if (k == 0) { /* all 0xFF: only a longer name is greater */
      dst[len++] = 1;
      return len;
    }
    uint8_t x = (uint8_t)(dst[k - 1] + 1);
    if (x == '/')
      x++;
    dst[k - 1] = x;
    len = k;
    if (!((len == 1 && dst[0] == '.') || (len == 2 && dst[0] == '.' && dst[1] == '.')))
      break;
  }
  return len;
}

static int op_file(prog *g, uint8_t c) {
  uint8_t s = get(g);
  int executable = (c >> 2) & 1;
  uint64_t size = (c & 0x40) ? s : s % 16;
  int pattern = (c & 0x50) == 0x50; /* large, contents not from the input */
  if (pattern)
    size = (uint64_t)s * 37;
  if (call_file_begin(g, size, executable) < 0)
    return STOP;
  if (size == 0 || (c & 0x20))
    return 0; /* data comes from later opcodes */
  uint8_t *buf = malloc((size_t)size);
  CHECK(buf != NULL);
  if (pattern)
    for (size_t k = 0; k < size; k++)
      buf[k] = (uint8_t)(k * 131 + s);
  else
    take(g, buf, (size_t)size);
  int rc = call_data(g, buf, (size_t)size);
  free(buf);
  return rc;
}

static int op_data(prog *g) {
  uint8_t buf[256];
  size_t len = get(g);
  take(g, buf, len);
  return call_data(g, buf, len);
}

static int op_symlink(prog *g, uint8_t c) {
  uint8_t buf[NAME_CAP];
  size_t len = raw_string(g, buf);
  if (!(c & 0x10)) { /* make it valid */
    for (size_t k = 0; k < len; k++)
      if (buf[k] == 0)
        buf[k] = 'x';
    if (len == 0)
      buf[len++] = 't';
  }
  return call_symlink(g, buf, len);
}

static int op_entry_raw(prog *g) {
  uint8_t buf[NAME_CAP];
  size_t len = raw_string(g, buf);
  return call_entry(g, buf, len);
}

static int op_entry_next(prog *g, uint8_t c) {
  uint8_t buf[NAME_CAP];
  size_t len = next_name(g, c, buf);
  return call_entry(g, buf, len);
}

/* Any call, whatever the state. */
static int op_wild(prog *g, uint8_t c) {
  switch ((c & 15) % 9) {
  case 0:
    return call_dir_begin(g);
  case 1:
    return op_entry_raw(g);
  case 2:
    return op_entry_next(g, c);
  case 3:
    return call_file_begin(g, get(g) % 16, c & 1);
  case 4:
    return op_symlink(g, 0x10);
  case 5:
    return call_dir_end(g);
  case 6:
    return call_finish(g);
  case 7:
    return op_data(g);
  default: {
    uint8_t kind = get(g);
    return call_set_limit(g, kind, get(g));
  }
  }
}

static int step(prog *g) {
  uint8_t c = get(g);
  if (c >= 0xF0)
    return op_wild(g, c);
  switch (g->state) {
  case M_NODE:
    switch (c % 4) {
    case 1:
      return op_file(g, c);
    case 2:
      return op_symlink(g, c);
    default:
      return call_dir_begin(g);
    }
  case M_DIR:
    switch (c % 4) {
    case 0:
      return call_dir_end(g);
    case 3:
      return op_entry_raw(g);
    default:
      return op_entry_next(g, c);
    }
  case M_FILE:
    return op_data(g);
  case M_AFTER_ROOT:
    return call_finish(g);
  default:
    return STOP;
  }
}

/* Close whatever is open and finish. */
static void complete(prog *g) {
  while (g->state != M_FINISHED) {
    int rc;
    switch (g->state) {
    case M_NODE:
      rc = call_file_begin(g, 0, 0);
      break;
    case M_FILE: {
      uint8_t buf[256];
      size_t len = g->file_left < sizeof buf ? (size_t)g->file_left : sizeof buf;
      take(g, buf, len);
      rc = call_data(g, buf, len);
      break;
    }
    case M_DIR:
      rc = call_dir_end(g);
      break;
    default:
      rc = call_finish(g);
      break;
    }
    if (rc < 0)
      return;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < HEADER)
    return 0;
  static prog g; /* large: keep it off the stack */
  memset(&g, 0, sizeof g);
  g.in = data;
  g.n = size;
  g.i = HEADER;
  uint8_t flags = data[0], v1 = data[1], v2 = data[2];
  g.lim_name = narcache_nar_limit_default(NARCACHE_NAR_LIMIT_NAME_LEN);
  g.lim_target = narcache_nar_limit_default(NARCACHE_NAR_LIMIT_TARGET_LEN);
  g.lim_depth = narcache_nar_limit_default(NARCACHE_NAR_LIMIT_DEPTH);
  g.lim_size = narcache_nar_limit_default(NARCACHE_NAR_LIMIT_SIZE);
  CHECK(g.lim_name == 255 && g.lim_target == 4095 && g.lim_depth == MAX_DEPTH &&
        g.lim_size == UINT64_MAX);
  static const size_t windows[4] = {4096, 1, 0, 64};
  g.window = (flags >> 4 & 3) == 2 ? 1 + v2 % 13u : windows[flags >> 4 & 3];
  g.piece = (flags & 0x40) ? 1 + v1 % 7u : 4096;
  g.bytewise_parse = (flags & 0x80) != 0;
  g.lazy_drain = (v1 & 0x80) != 0;
  if (narcache_nar_writer_new(&g.w) != 0)
    return 0;
  if (flags & 1)
    CHECK(call_set_limit(&g, NARCACHE_NAR_LIMIT_DEPTH - 1, v1) == 0);
  if (flags & 2)
    CHECK(call_set_limit(&g, NARCACHE_NAR_LIMIT_NAME_LEN - 1, (uint8_t)(v2 % 32)) == 0);
  if (flags & 4)
    CHECK(call_set_limit(&g, NARCACHE_NAR_LIMIT_TARGET_LEN - 1, (uint8_t)(v2 % 64 / 16)) == 0);
  if (flags & 8) {
    CHECK(narcache_nar_writer_set_limit(g.w, NARCACHE_NAR_LIMIT_SIZE,
                                        64 + 16 * (uint64_t)v1 + v2) == 0);
    g.lim_size = 64 + 16 * (uint64_t)v1 + v2;
    g.limits_changed = 1;
  }

  int rc = 0;
  while (rc == 0 && !at_end(&g) && g.state != M_FINISHED)
    rc = step(&g);
  if (rc == 0 && g.state == M_FINISHED) {
    /* Misuse after the end is refused and changes nothing. */
    while (!at_end(&g) && op_wild(&g, get(&g)) == 0) {
    }
  } else if (rc == 0) {
    complete(&g);
  }

  narcache_nar_writer_free(g.w);
  free(g.out.p);
  free(g.arena.p);
  free(g.ev);
  return 0;
}
