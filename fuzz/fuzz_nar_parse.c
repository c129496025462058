/* The NAR parser on arbitrary bytes, fed in chunks.
 *
 * Input layout: 4 header bytes, then the NAR bytes.
 *   [0] limits: depth limit 1 + b % 80; b / 80 picks the other limits
 *       (0: defaults; 1: names 16, targets 32; 2: size 32 * depth;
 *        3: names 1, targets 3, size 101 + 8 * depth).
 *   [1] chunking mode (low 3 bits), [2] [3] its parameters: one piece,
 *       1-byte chunks, fixed, alternating, random (with empty chunks), one
 *       split point, random 1..17, 1-byte chunks with empty calls between.
 * Every chunk is an exact-size heap copy, so sanitizers see reads past it.
 *
 * Checked on every call: the parser's offset is the number of bytes taken
 * from the buffers; 0 is returned only when the buffer is used up; events
 * form the grammar of nar.h (balanced directories, depths below the limit,
 * valid sorted names, valid targets); event offsets never go backwards;
 * FILE_DATA spans lie in the part of the current buffer the call consumed,
 * are contiguous and add up to FILE_BEGIN.size; errors are sticky with a
 * message; finish() agrees with END. Then the same bytes in one piece
 * through a lister and through the reset parser must give the same result
 * (code and error offset), and a NAR that parsed is re-serialised by a
 * writer with the same limits from the events: the output must be the
 * input byte for byte (the parser only accepts canonical NARs). */
#include <narcache.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "fuzz_nar_parse: invariant failed at line %d: %s\n",   \
              __LINE__, #cond);                                              \
      abort();                                                               \
    }                                                                        \
  } while (0)

#define HEADER 4

/* Empty buffers are passed as {NULL, 0, 0}, which nar.h allows. Building
 * with -DFUZZ_NAR_NONNULL_EMPTY passes a non-NULL pointer instead. */
#ifdef FUZZ_NAR_NONNULL_EMPTY
static const uint8_t empty_byte[1];
#define EMPTY_DATA ((const void *)empty_byte)
#else
#define EMPTY_DATA NULL
#endif
#define DEPTH_CAP 80 /* largest depth limit chosen below */
#define NAME_CAP 256 /* largest name limit chosen below, plus one */

typedef struct limits {
  uint64_t name, target, depth, size;
} limits;

static void choose_limits(uint8_t b, limits *l) {
  l->depth = 1 + b % 80;
  l->name = 255;
  l->target = 4095;
  l->size = UINT64_MAX;
  switch (b / 80) {
  case 1:
    l->name = 16;
    l->target = 32;
    break;
  case 2:
    l->size = 32 * l->depth;
    break;
  case 3:
    l->name = 1;
    l->target = 3;
    l->size = 101 + 8 * l->depth;
    break;
  default:
    break;
  }
}

/* ---- chunking ------------------------------------------------------------ */

typedef struct chunker {
  unsigned mode;
  uint8_t a, b;
  uint32_t rng;
  unsigned calls;
  size_t empties;
} chunker;

static uint32_t xorshift(uint32_t *s) {
  uint32_t x = *s;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *s = x;
}

/* Size of the next chunk, at most `left` (which is > 0). */
static size_t next_chunk(chunker *c, size_t left) {
  size_t n;
  unsigned call = c->calls++;
  switch (c->mode) {
  case 0:
    n = left;
    break;
  case 1:
    n = 1;
    break;
  case 2:
    n = (size_t)c->a + 1;
    break;
  case 3:
    n = (size_t)(call % 2 ? c->b : c->a) + 1;
    break;
  case 4:
    n = xorshift(&c->rng) % ((uint32_t)c->a + 2); /* may be 0 */
    break;
  case 5:
    n = call == 0 ? (((size_t)c->a << 8) | c->b) % (left + 1) : left;
    break;
  case 6:
    n = 1 + xorshift(&c->rng) % 17;
    break;
  default:
    n = call % 2; /* an empty call before every byte */
    break;
  }
  if (n == 0 && ++c->empties > 4096)
    n = 1;
  return n < left ? n : left;
}

/* ---- a growable byte buffer ------------------------------------------------ */

typedef struct bytes {
  uint8_t *p;
  size_t len, cap;
} bytes;

static void bytes_reserve(bytes *b, size_t extra) {
  if (b->cap - b->len >= extra)
    return;
  size_t cap = b->cap != 0 ? b->cap : 256;
  while (cap - b->len < extra)
    cap *= 2;
  uint8_t *p = realloc(b->p, cap);
  CHECK(p != NULL);
  b->p = p;
  b->cap = cap;
}

/* ---- the mirror writer ------------------------------------------------------- */

static void drain_all(narcache_nar_writer *w, bytes *out) {
  int rc;
  do {
    bytes_reserve(out, 512);
    narcache_outbuf o = {out->p + out->len, out->cap - out->len, 0};
    rc = narcache_nar_writer_drain(w, &o);
    CHECK(rc == 0 || rc == 1);
    CHECK(o.pos <= o.size);
    out->len += o.pos;
  } while (rc == 1);
  CHECK(narcache_nar_writer_offset(w) == out->len);
}

/* ---- event checking ------------------------------------------------------------ */

enum expect { X_NODE, X_DIR_ITEM, X_FILE, X_END, X_DONE };

typedef struct state {
  limits lim;
  enum expect expect;
  uint32_t ndirs;
  uint8_t last[DEPTH_CAP][NAME_CAP]; /* last entry name per open directory */
  size_t last_len[DEPTH_CAP];
  int has_last[DEPTH_CAP];
  uint64_t last_offset;
  uint64_t file_size, file_got, file_next, file_offset;
  int ended;
  narcache_nar_writer *w; /* re-serialises the events */
  bytes out;
  int writer_over; /* the writer refused the size limit first (see below) */
} state;

static int name_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  int c = memcmp(a, b, alen < blen ? alen : blen);
  if (c != 0)
    return c;
  return alen < blen ? -1 : alen > blen;
}

static void node_done(state *s) { s->expect = s->ndirs == 0 ? X_END : X_DIR_ITEM; }

/* The writer queues a node's closing tokens as soon as it knows them (the
 * ")" of an empty file or a symlink), so under a size limit it may refuse
 * one event before the parser, which reaches those bytes only later. That
 * is allowed when the parser never accepts the archive: END checks it. */
static void writer_result(state *s, int rc) {
  if (rc == NARCACHE_ELIMIT && s->lim.size != UINT64_MAX) {
    s->writer_over = 1;
    return;
  }
  CHECK(rc == 0);
}

#define WRITER(s, call)                                                      \
  do {                                                                       \
    if (!(s)->writer_over)                                                   \
      writer_result((s), (call));                                            \
  } while (0)

/* `buf` is the current chunk, `base` its NAR offset, `pos_before` where the
 * call started reading; `in->pos` is where it stopped. */
static void check_event(state *s, const narcache_nar_event *ev, const narcache_inbuf *in,
                        const uint8_t *buf, uint64_t base, size_t pos_before) {
  uint64_t off_after = base + in->pos;
  CHECK(ev->version == NARCACHE_NAR_EVENT_VERSION);
  CHECK(ev->offset <= off_after);
  /* FILE_END reports the offset of the contents frame, i.e. 8 bytes before
   * the FILE_BEGIN offset; every other event moves forward. */
  if (ev->type == NARCACHE_NAR_FILE_END)
    CHECK(ev->offset + 8 == s->file_offset || ev->offset >= s->last_offset);
  else {
    CHECK(ev->offset >= s->last_offset);
    s->last_offset = ev->offset;
  }
  if (ev->type != NARCACHE_NAR_DIR_BEGIN && ev->type != NARCACHE_NAR_DIR_END &&
      ev->type != NARCACHE_NAR_END)
    CHECK(ev->depth == s->ndirs);
  int rc;
  switch (ev->type) {
  case NARCACHE_NAR_DIR_BEGIN:
    CHECK(s->expect == X_NODE);
    CHECK(ev->depth == s->ndirs && ev->depth < s->lim.depth && s->ndirs < DEPTH_CAP);
    s->has_last[s->ndirs++] = 0;
    s->expect = X_DIR_ITEM;
    WRITER(s, narcache_nar_writer_dir_begin(s->w));
    break;
  case NARCACHE_NAR_ENTRY: {
    CHECK(s->expect == X_DIR_ITEM && s->ndirs > 0);
    CHECK(ev->depth < s->lim.depth); /* the depth of the node that follows */
    const uint8_t *name = (const uint8_t *)ev->name;
    size_t len = ev->name_len;
    CHECK(name != NULL && len >= 1 && len <= s->lim.name && len < NAME_CAP);
    CHECK(name[len] == '\0');
    CHECK(memchr(name, '/', len) == NULL && memchr(name, '\0', len) == NULL);
    CHECK(!(len == 1 && name[0] == '.') && !(len == 2 && name[0] == '.' && name[1] == '.'));
    uint32_t d = s->ndirs - 1;
    if (s->has_last[d])
      CHECK(name_cmp(s->last[d], s->last_len[d], name, len) < 0);
    memcpy(s->last[d], name, len);
    s->last_len[d] = len;
    s->has_last[d] = 1;
    s->expect = X_NODE;
    WRITER(s, narcache_nar_writer_entry(s->w, ev->name, len));
    break;
  }
  case NARCACHE_NAR_FILE_BEGIN:
    CHECK(s->expect == X_NODE && ev->depth < s->lim.depth);
    CHECK(ev->executable == 0 || ev->executable == 1);
    CHECK(ev->size <= s->lim.size && ev->offset <= s->lim.size - ev->size);
    CHECK(ev->offset >= 8);
    s->file_size = ev->size;
    s->file_got = 0;
    s->file_next = s->file_offset = ev->offset;
    s->expect = X_FILE;
    WRITER(s, narcache_nar_writer_file_begin(s->w, ev->size, (int)ev->executable));
    break;
  case NARCACHE_NAR_FILE_DATA: {
    CHECK(s->expect == X_FILE);
    const uint8_t *d = ev->data;
    CHECK(d != NULL && ev->len > 0 && buf != NULL);
    /* Inside what this call consumed of the current buffer. */
    CHECK(d >= buf + pos_before && ev->len <= in->pos && d <= buf + in->pos - ev->len);
    CHECK(ev->offset == base + (uint64_t)(d - buf));
    CHECK(ev->offset == s->file_next);
    CHECK(ev->len <= s->file_size - s->file_got);
    s->file_got += ev->len;
    s->file_next += ev->len;
    if (s->writer_over)
      break;
    drain_all(s->w, &s->out);
    bytes_reserve(&s->out, ev->len);
    narcache_outbuf o = {s->out.p + s->out.len, s->out.cap - s->out.len, 0};
    narcache_inbuf win = {d, ev->len, 0};
    rc = narcache_nar_writer_data(s->w, &o, &win);
    CHECK(rc == (s->file_got < s->file_size ? 1 : 0));
    CHECK(win.pos == ev->len && o.pos == ev->len);
    s->out.len += o.pos;
    break;
  }
  case NARCACHE_NAR_FILE_END:
    CHECK(s->expect == X_FILE);
    CHECK(s->file_got == s->file_size);
    node_done(s);
    break;
  case NARCACHE_NAR_SYMLINK: {
    CHECK(s->expect == X_NODE && ev->depth < s->lim.depth);
    const char *t = ev->name;
    CHECK(t != NULL && ev->name_len >= 1 && ev->name_len <= s->lim.target);
    CHECK(t[ev->name_len] == '\0' && memchr(t, '\0', ev->name_len) == NULL);
    node_done(s);
    WRITER(s, narcache_nar_writer_symlink(s->w, t, ev->name_len));
    break;
  }
  case NARCACHE_NAR_DIR_END:
    CHECK(s->expect == X_DIR_ITEM && s->ndirs > 0);
    s->ndirs--;
    CHECK(ev->depth == s->ndirs);
    node_done(s);
    WRITER(s, narcache_nar_writer_dir_end(s->w));
    break;
  case NARCACHE_NAR_END:
    CHECK(s->expect == X_END && s->ndirs == 0 && ev->depth == 0);
    CHECK(ev->offset == off_after);
    s->expect = X_DONE;
    s->ended = 1;
    CHECK(!s->writer_over); /* accepted, yet the writer found it too large */
    CHECK(narcache_nar_writer_finish(s->w) == 0);
    break;
  default:
    CHECK(!"unknown event type");
  }
  if (ev->type != NARCACHE_NAR_FILE_DATA && !s->writer_over)
    drain_all(s->w, &s->out);
}

/* ---- helpers ------------------------------------------------------------------- */

static void set_limits_parser(narcache_nar_parser *p, const limits *l) {
  CHECK(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_NAME_LEN, l->name) == 0);
  CHECK(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_TARGET_LEN, l->target) == 0);
  CHECK(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_DEPTH, l->depth) == 0);
  CHECK(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_SIZE, l->size) == 0);
}

static int is_parse_error(int rc) {
  return rc == NARCACHE_EBADNAR || rc == NARCACHE_ELIMIT || rc == NARCACHE_ENOMEM;
}

/* After an error: every call repeats it, nothing more is consumed. */
static void check_sticky(narcache_nar_parser *p, int err, uint64_t consumed,
                         narcache_inbuf *rest) {
  narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
  size_t pos = rest->pos;
  CHECK(narcache_nar_parser_next(p, rest, &ev) == err);
  CHECK(rest->pos == pos);
  narcache_inbuf empty = {EMPTY_DATA, 0, 0};
  CHECK(narcache_nar_parser_next(p, &empty, &ev) == err);
  CHECK(narcache_nar_parser_finish(p) == err);
  CHECK(narcache_nar_parser_offset(p) == consumed);
  CHECK(narcache_nar_parser_erroffset(p) <= consumed);
  const char *msg = narcache_nar_parser_errmsg(p);
  CHECK(msg != NULL && msg[0] != '\0');
}

/* ---- the target ------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < HEADER)
    return 0;
  static state s; /* large: keep it off the stack */
  memset(&s, 0, sizeof s);
  choose_limits(data[0], &s.lim);
  chunker ch = {(unsigned)(data[1] & 7), data[2], data[3],
                0x9e3779b9u ^ ((uint32_t)data[2] << 8 | data[3]), 0, 0};
  const uint8_t *nar = data + HEADER;
  size_t nar_len = size - HEADER;

  narcache_nar_parser *p = NULL;
  if (narcache_nar_parser_new(&p) != 0)
    return 0;
  CHECK(narcache_nar_parser_set_limit(p, NARCACHE_NAR_LIMIT_DEPTH, 0) == NARCACHE_EINVAL);
  CHECK(narcache_nar_parser_set_limit(p, 99, 1) == NARCACHE_EINVAL);
  set_limits_parser(p, &s.lim);
  CHECK(narcache_nar_writer_new(&s.w) == 0);
  CHECK(narcache_nar_writer_set_limit(s.w, NARCACHE_NAR_LIMIT_NAME_LEN, s.lim.name) == 0);
  CHECK(narcache_nar_writer_set_limit(s.w, NARCACHE_NAR_LIMIT_TARGET_LEN, s.lim.target) == 0);
  CHECK(narcache_nar_writer_set_limit(s.w, NARCACHE_NAR_LIMIT_DEPTH, s.lim.depth) == 0);
  CHECK(narcache_nar_writer_set_limit(s.w, NARCACHE_NAR_LIMIT_SIZE, s.lim.size) == 0);

  /* Chunked parse. */
  size_t fed = 0;
  uint64_t consumed = 0;
  int err = 0;
  do {
    size_t n = fed < nar_len ? next_chunk(&ch, nar_len - fed) : 0;
    uint8_t *buf = NULL;
    if (n != 0) {
      buf = malloc(n);
      CHECK(buf != NULL);
      memcpy(buf, nar + fed, n);
    }
    narcache_inbuf in = {n != 0 ? (const void *)buf : EMPTY_DATA, n, 0};
    for (;;) {
      size_t pos_before = in.pos;
      narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
      int rc = narcache_nar_parser_next(p, &in, &ev);
      CHECK(in.pos >= pos_before && in.pos <= in.size);
      consumed += in.pos - pos_before;
      CHECK(narcache_nar_parser_offset(p) == consumed);
      if (rc < 0) {
        CHECK(is_parse_error(rc));
        err = rc;
        check_sticky(p, err, consumed, &in);
        break;
      }
      if (rc == 0) {
        CHECK(in.pos == in.size);
        break;
      }
      check_event(&s, &ev, &in, buf, fed, pos_before);
    }
    free(buf);
    fed += n;
  } while (fed < nar_len && err == 0);

  if (err == 0) {
    CHECK(consumed == nar_len);
    int rc = narcache_nar_parser_finish(p);
    if (s.ended) {
      CHECK(rc == 0);
      CHECK(narcache_nar_parser_finish(p) == 0);
      CHECK(narcache_nar_parser_errmsg(p)[0] == '\0');
    } else {
      CHECK(rc == NARCACHE_EBADNAR); /* truncated */
      err = rc;
      narcache_inbuf empty = {EMPTY_DATA, 0, 0};
      check_sticky(p, err, consumed, &empty);
    }
  }
  uint64_t erroffset = err != 0 ? narcache_nar_parser_erroffset(p) : 0;

  if (err == 0) {
    /* Accepted NARs are canonical: the writer must reproduce them. */
    CHECK(s.ended && s.out.len == nar_len);
    CHECK(nar_len == 0 || memcmp(s.out.p, nar, nar_len) == 0);
  }

  /* The same bytes in one piece: through the lister... */
  narcache_nar_lister *l = NULL;
  if (narcache_nar_lister_new(&l) == 0) {
    CHECK(narcache_nar_lister_set_limit(l, NARCACHE_NAR_LIMIT_NAME_LEN, s.lim.name) == 0);
    CHECK(narcache_nar_lister_set_limit(l, NARCACHE_NAR_LIMIT_TARGET_LEN, s.lim.target) == 0);
    CHECK(narcache_nar_lister_set_limit(l, NARCACHE_NAR_LIMIT_DEPTH, s.lim.depth) == 0);
    CHECK(narcache_nar_lister_set_limit(l, NARCACHE_NAR_LIMIT_SIZE, s.lim.size) == 0);
    narcache_inbuf in = {nar_len != 0 ? (const void *)nar : EMPTY_DATA, nar_len, 0};
    int lrc = narcache_nar_lister_write(l, &in);
    char *json = NULL;
    size_t json_len = 0;
    if (lrc >= 0) {
      CHECK(lrc == (err == 0 ? 1 : 0) || err != 0);
      lrc = narcache_nar_lister_finish(l, &json, &json_len);
    }
    if (lrc != NARCACHE_ENOMEM && err != NARCACHE_ENOMEM) {
      CHECK(lrc == err);
      if (err == 0) {
        CHECK(json != NULL && json_len == strlen(json));
        CHECK(json_len > 21 && memcmp(json, "{\"version\":1,\"root\":", 20) == 0);
        CHECK(json[json_len - 1] == '}');
      } else {
        CHECK(json == NULL);
        CHECK(narcache_nar_lister_erroffset(l) == erroffset);
        CHECK(narcache_nar_lister_errmsg(l)[0] != '\0');
      }
    }
    narcache_free(json);
    narcache_nar_lister_free(l);
  }

  /* ...and through the parser again after a reset (limits are kept). */
  narcache_nar_parser_reset(p);
  CHECK(narcache_nar_parser_offset(p) == 0 && narcache_nar_parser_errmsg(p)[0] == '\0');
  {
    narcache_inbuf in = {nar_len != 0 ? (const void *)nar : EMPTY_DATA, nar_len, 0};
    narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
    int rc;
    while ((rc = narcache_nar_parser_next(p, &in, &ev)) > 0) {
    }
    if (rc == 0)
      rc = narcache_nar_parser_finish(p);
    if (rc != NARCACHE_ENOMEM && err != NARCACHE_ENOMEM) {
      CHECK(rc == err);
      if (err != 0)
        CHECK(narcache_nar_parser_erroffset(p) == erroffset);
      else
        CHECK(narcache_nar_parser_offset(p) == nar_len);
    }
  }

  narcache_nar_parser_free(p);
  narcache_nar_writer_free(s.w);
  free(s.out.p);
  return 0;
}
