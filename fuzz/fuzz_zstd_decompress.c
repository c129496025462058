/* The zstd decompressor (compress.h) on arbitrary bytes, fed in chunks.
 *
 * Input layout: 6 header bytes, then the compressed bytes (at most 1 MiB).
 *   [0] input chunking, [1] output chunking: b >> 6 picks the mode (fixed
 *       size N, random 1..N, alternating 1 and N, random 0..N with empty
 *       calls), N = 1 + (b & 63). After 16384 chunks they grow to 64 KiB,
 *       so that large outputs stay quick.
 *   [2] output limit, b & 3: none; b >> 2 bytes (0..63); 64 + 1000 * (b >> 2);
 *       128 KiB * (1 + (b >> 2)) (at most 8 MiB). Without a limit the
 *       harness stops a run itself after 8 MiB + 1 bytes ("capped").
 *   [3] window_log_max 10 + b % 18 (10..27); compressor level for the round
 *       trip -5 + (b / 18) % 9 (-5..3, 0 being the default).
 *   [4] b % 3: the (ignored) flush argument given to the decompressor;
 *       bit 2: the one-piece run goes first; bit 3: the round trip pledges
 *       its size; b >> 4 seeds the random chunk sizes.
 *   [5] an action before call number b >> 3 of the chunked run, b & 7:
 *       0-3 none; 4 narcache_codec_set_window_log_max with the same value
 *       (must return 0 or NARCACHE_EMISUSE and change nothing); 5
 *       narcache_codec_set_max_output with the same limit; 6 lower the limit
 *       to half the bytes given so far (no further byte may be given; the
 *       run may then fail with NARCACHE_ELIMIT alone); 7
 *       narcache_codec_reset, and the run starts over.
 * Every input chunk and every output chunk is an exact-size heap block (the
 * one-piece run writes straight into a static buffer that ends where its
 * output space ends), so sanitizers see accesses past them.
 *
 * The same decompressor decodes the body twice, once in chunks as above
 * and once (after narcache_codec_reset) in one piece with all the output
 * space at once; which goes first is chosen by [4]. Each run calls
 * narcache_codec_process until its input chunk is used up, then with empty
 * input until a call with output space makes no progress, then
 * narcache_codec_end.
 *
 * Checked on every call: the result is >= 0, NARCACHE_ECOMPRESS or
 * NARCACHE_ELIMIT; cursors never move backwards nor beyond their size; a
 * call given input and output space makes progress; total_in/total_out
 * are the bytes taken and given; the output never exceeds the limit.
 * After an error: a message is set, and further calls (process, end)
 * return the same code without moving cursors or changing the message.
 * end() succeeds exactly when the last call returned 0 after some input;
 * the message is "" after success and after a reset.
 *
 * Between the two runs: both succeed or both fail (only after [5] lowered
 * the limit may the chunked run alone fail, with NARCACHE_ELIMIT); on
 * success the outputs are identical, on failure one is a prefix of the
 * other. The error codes may differ: a run that gives output early can
 * cross the limit before the frame turns out corrupt.
 *
 * On success (output of L bytes): with the limit set to L the body decodes
 * again; with L - 1 it fails with NARCACHE_ELIMIT. The output is compressed
 * again (random pieces, some FLUSH_BLOCK, without a pledged size some
 * FLUSH_END that start a new frame; every result >= 0, and a further call
 * is needed only while it is > 0; end() is NARCACHE_EMISUSE while a frame
 * is open and 0 at the end) and must decode, in chunks, to itself.
 *
 * Once per process: argument checks of the setters and constructors. */
#include <narcache.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      fprintf(stderr, "fuzz_zstd_decompress: invariant failed at line %d: %s\n",   \
              __LINE__, #cond);                                                    \
      abort();                                                                     \
    }                                                                              \
  } while (0)

#define HEADER 6
#define MAX_INPUT ((size_t)1 << 20)
#define OUT_CAP ((size_t)8 << 20) /* a run keeps at most OUT_CAP + 1 bytes */
#define CHUNK_BUDGET 16384        /* chunks before they grow to BIG_CHUNK */
#define BIG_CHUNK ((size_t)65536)
#define CAPPED 1 /* run result: the harness stopped it after OUT_CAP + 1 bytes */

/* Actions in the middle of the chunked run (header byte 5). */
enum { OP_NONE = 3, OP_SAME_WINDOW, OP_SAME_LIMIT, OP_LOWER_LIMIT, OP_RESET };

/* ---- chunking ------------------------------------------------------------ */

enum { CHUNK_FIXED, CHUNK_RANDOM, CHUNK_ALTERNATE, CHUNK_RANDOM_EMPTY, CHUNK_WHOLE };

typedef struct chunker {
  unsigned mode;
  size_t n;
  uint32_t rng;
  unsigned calls;
} chunker;

static uint32_t rng_next(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return *s >> 8;
}

static chunker make_chunker(uint8_t b, uint32_t seed) {
  chunker ch = {(unsigned)(b >> 6), 1 + (size_t)(b & 63), seed, 0};
  return ch;
}

/* Size of the next chunk, at most `left`. */
static size_t next_chunk(chunker *ch, size_t left) {
  size_t n;
  unsigned call = ch->calls++;
  switch (ch->mode) {
  case CHUNK_FIXED:
    n = ch->n;
    break;
  case CHUNK_RANDOM:
    n = 1 + rng_next(&ch->rng) % ch->n;
    break;
  case CHUNK_ALTERNATE:
    n = call % 2 ? ch->n : 1;
    break;
  case CHUNK_RANDOM_EMPTY:
    n = rng_next(&ch->rng) % (ch->n + 1); /* may be 0 */
    break;
  default:
    n = left;
    break;
  }
  if (call >= CHUNK_BUDGET && n < BIG_CHUNK)
    n = BIG_CHUNK;
  return n < left ? n : left;
}

/* ---- one decoding run ---------------------------------------------------- */

typedef struct run {
  narcache_codec *c;
  uint8_t *acc;     /* all output so far; OUT_CAP + 1 bytes */
  size_t len;       /* bytes in acc */
  uint64_t taken;   /* input bytes consumed */
  uint64_t max;     /* the limit set, UINT64_MAX if none */
  int flush;        /* passed to process(), ignored by a decompressor */
  chunker in_ch, out_ch;
  uint8_t *obuf;    /* the current output chunk if allocated (NULL: in acc) */
  narcache_outbuf out;
  int window_log;   /* set on the codec */
  int op;           /* OP_*, done before call number op_at */
  unsigned op_at, calls;
  int lowered;      /* OP_LOWER_LIMIT was done */
  int restart;      /* OP_RESET was done: the run must start over */
  int last_rc;      /* of the last successful process() call */
  int result;       /* 0, the error code, or CAPPED */
  char msg[512];    /* the error message */
} run;

static void run_init(run *r, narcache_codec *c, uint8_t *acc, int window_log, uint64_t max,
                     int flush, chunker in_ch, chunker out_ch) {
  memset(r, 0, sizeof *r);
  r->c = c;
  r->acc = acc;
  r->window_log = window_log;
  r->op = OP_NONE;
  r->max = max;
  r->flush = flush;
  r->in_ch = in_ch;
  r->out_ch = out_ch;
  r->last_rc = -1000;
}

/* Give the run an output chunk with room, or sometimes none (random mode).
 * Returns 0 when the harness's own cap is reached. */
static int ensure_out(run *r) {
  if (r->out.pos < r->out.size)
    return 1;
  free(r->obuf);
  r->obuf = NULL;
  size_t left = OUT_CAP + 1 - r->len;
  if (left == 0)
    return 0;
  size_t n = next_chunk(&r->out_ch, left);
  if (r->out_ch.mode == CHUNK_WHOLE) {
    /* All the room left, straight in `acc`: its end is the chunk's end. */
    r->out.data = r->acc + r->len;
    r->out.size = n;
    r->out.pos = 0;
    return 1;
  }
  if (n != 0) {
    r->obuf = malloc(n);
    CHECK(r->obuf != NULL);
  }
  r->out.data = r->obuf;
  r->out.size = n;
  r->out.pos = 0;
  return 1;
}

/* After error `err`: a message, and every further call returns the error
 * and changes nothing. */
static void check_sticky(run *r, const narcache_inbuf *in, int err) {
  const char *msg = narcache_codec_errmsg(r->c);
  CHECK(msg != NULL && msg[0] != '\0');
  CHECK(strlen(msg) < sizeof r->msg);
  strcpy(r->msg, msg);
  const char *saved = r->msg;
  uint64_t total_in = narcache_codec_total_in(r->c), total_out = narcache_codec_total_out(r->c);
  narcache_inbuf in2 = *in;
  narcache_outbuf out2 = r->out;
  CHECK(narcache_codec_process(r->c, &out2, &in2, r->flush) == err);
  CHECK(in2.pos == in->pos && out2.pos == r->out.pos);
  CHECK(narcache_codec_end(r->c) == err);
  uint8_t byte = 0;
  narcache_inbuf in3 = {&byte, 1, 0};
  CHECK(narcache_codec_process(r->c, &out2, &in3, NARCACHE_FLUSH_END) == err);
  CHECK(in3.pos == 0 && out2.pos == r->out.pos);
  CHECK(strcmp(narcache_codec_errmsg(r->c), saved) == 0);
  CHECK(narcache_codec_total_in(r->c) == total_in && narcache_codec_total_out(r->c) == total_out);
}

/* The action of header byte 5. */
static void do_op(run *r) {
  int rc;
  switch (r->op) {
  case OP_SAME_WINDOW:
    rc = narcache_codec_set_window_log_max(r->c, r->window_log);
    CHECK(rc == 0 || rc == NARCACHE_EMISUSE);
    break;
  case OP_SAME_LIMIT:
    if (r->max != UINT64_MAX)
      CHECK(narcache_codec_set_max_output(r->c, r->max) == 0);
    break;
  case OP_LOWER_LIMIT: /* below what was given: not one more byte */
    CHECK(narcache_codec_set_max_output(r->c, r->len / 2) == 0);
    r->max = r->len;
    r->lowered = 1;
    break;
  case OP_RESET:
    CHECK(narcache_codec_reset(r->c) == 0);
    CHECK(narcache_codec_total_in(r->c) == 0 && narcache_codec_total_out(r->c) == 0);
    CHECK(strcmp(narcache_codec_errmsg(r->c), "") == 0);
    r->restart = 1;
    break;
  default:
    break;
  }
}

/* One process() call. Returns the progress (bytes taken plus bytes given),
 * or -1 when the run ends (an error, or a reset by OP_RESET). */
static long call(run *r, narcache_inbuf *in) {
  if (r->calls++ == r->op_at && r->op != OP_NONE) {
    do_op(r);
    if (r->restart)
      return -1;
  }
  size_t in_before = in->pos, out_before = r->out.pos;
  int rc = narcache_codec_process(r->c, &r->out, in, r->flush);
  CHECK(in->pos >= in_before && in->pos <= in->size);
  CHECK(r->out.pos >= out_before && r->out.pos <= r->out.size);
  size_t taken = in->pos - in_before, given = r->out.pos - out_before;
  if (given != 0 && r->obuf != NULL)
    memcpy(r->acc + r->len, r->obuf + out_before, given);
  r->len += given;
  r->taken += taken;
  CHECK(narcache_codec_total_in(r->c) == r->taken);
  CHECK(narcache_codec_total_out(r->c) == r->len);
  CHECK(r->len <= r->max);
  if (rc < 0) {
    CHECK(rc == NARCACHE_ECOMPRESS || rc == NARCACHE_ELIMIT);
    check_sticky(r, in, rc);
    r->result = rc;
    return -1;
  }
  r->last_rc = rc;
  return (long)(taken + given);
}

/* Decode `len` bytes at `body` as the run's chunkers say; sets r->result. */
static void drive(run *r, const uint8_t *body, size_t len) {
  size_t fed = 0;
  int stop = 0;
  while (fed < len && !stop) {
    size_t n = next_chunk(&r->in_ch, len - fed);
    uint8_t *buf = NULL;
    if (n != 0) {
      buf = malloc(n);
      CHECK(buf != NULL);
      memcpy(buf, body + fed, n);
    }
    narcache_inbuf in = {buf, n, 0};
    do {
      if (!ensure_out(r)) {
        r->result = CAPPED;
        stop = 1;
        break;
      }
      size_t room = r->out.size - r->out.pos;
      long progress = call(r, &in);
      if (progress < 0) {
        stop = 1;
        break;
      }
      /* Given input and output space, a call must do something. */
      CHECK(progress > 0 || room == 0 || in.pos == in.size);
    } while (in.pos < in.size);
    free(buf);
    fed += n;
  }
  /* Drain with empty input until a call with output space does nothing. */
  while (!stop) {
    if (!ensure_out(r)) {
      r->result = CAPPED;
      stop = 1;
      break;
    }
    size_t room = r->out.size - r->out.pos;
    narcache_inbuf in = {NULL, 0, 0};
    long progress = call(r, &in);
    if (progress < 0) {
      stop = 1;
      break;
    }
    if (progress == 0 && room > 0)
      break;
  }
  if (!stop) {
    int end = narcache_codec_end(r->c);
    /* end() succeeds exactly when the input ended at a frame end. */
    CHECK((end == 0) == (r->last_rc == 0 && r->taken > 0));
    if (end == 0) {
      CHECK(r->taken == len);
      CHECK(strcmp(narcache_codec_errmsg(r->c), "") == 0);
      CHECK(narcache_codec_end(r->c) == 0);
    } else {
      CHECK(end == NARCACHE_ECOMPRESS);
      narcache_inbuf in = {NULL, 0, 0};
      check_sticky(r, &in, end);
    }
    r->result = end;
  }
  free(r->obuf);
  r->obuf = NULL;
  r->out.data = NULL;
  r->out.size = r->out.pos = 0;
}

static narcache_codec *new_decompressor(int window_log, uint64_t max) {
  narcache_codec *c = NULL;
  CHECK(narcache_codec_new_decompressor(&c, NARCACHE_CODEC_ZSTD) == 0 && c != NULL);
  CHECK(strcmp(narcache_codec_errmsg(c), "") == 0);
  CHECK(narcache_codec_set_window_log_max(c, window_log) == 0);
  if (max != UINT64_MAX)
    CHECK(narcache_codec_set_max_output(c, max) == 0);
  return c;
}

static const chunker whole = {CHUNK_WHOLE, 0, 0, 0};

/* ---- the round trip -------------------------------------------------------- */

typedef struct bytes {
  uint8_t *p;
  size_t len, cap;
} bytes;

static void bytes_reserve(bytes *b, size_t extra) {
  if (b->cap - b->len >= extra)
    return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < extra)
    cap *= 2;
  uint8_t *p = realloc(b->p, cap);
  CHECK(p != NULL);
  b->p = p;
  b->cap = cap;
}

/* Compress `plain` at `level` in random pieces; returns the frames. */
static bytes compress(const uint8_t *plain, size_t len, int level, int pledge, uint32_t seed) {
  narcache_codec *z = NULL;
  CHECK(narcache_codec_new_compressor(&z, NARCACHE_CODEC_ZSTD, level) == 0 && z != NULL);
  if (pledge)
    CHECK(narcache_codec_set_pledged_size(z, len) == 0);
  CHECK(narcache_codec_end(z) == 0);
  bytes comp = {NULL, 0, 0};
  size_t fed = 0;
  uint32_t rng = seed;
  do {
    size_t n = 1 + rng_next(&rng) % (rng_next(&rng) % 4 == 0 ? 65536 : 1024);
    if (n > len - fed)
      n = len - fed;
    int last = fed + n == len;
    uint32_t pick = rng_next(&rng) % 16;
    int flush = last                ? NARCACHE_FLUSH_END
                : pick == 0 && !pledge ? NARCACHE_FLUSH_END
                : pick < 3             ? NARCACHE_FLUSH_BLOCK
                                       : NARCACHE_FLUSH_NONE;
    narcache_inbuf in = {plain + fed, n, 0};
    int rc;
    do {
      bytes_reserve(&comp, 1 + rng_next(&rng) % 16384);
      narcache_outbuf out = {comp.p, comp.cap, comp.len};
      size_t in_before = in.pos;
      rc = narcache_codec_process(z, &out, &in, flush);
      CHECK(rc >= 0);
      CHECK(in.pos >= in_before && in.pos <= in.size);
      CHECK(out.pos >= comp.len && out.pos <= out.size);
      /* "Keep calling with more output space while it is > 0." */
      CHECK(rc == 0 || in.pos > in_before || out.pos > comp.len);
      comp.len = out.pos;
    } while (in.pos < in.size || rc > 0);
    if (flush != NARCACHE_FLUSH_END && fed + n > 0)
      CHECK(narcache_codec_end(z) == NARCACHE_EMISUSE); /* a frame is open */
    fed += n;
  } while (fed < len);
  CHECK(narcache_codec_end(z) == 0);
  CHECK(narcache_codec_total_in(z) == len && narcache_codec_total_out(z) == comp.len);
  narcache_codec_free(z);
  return comp;
}

/* ---- once per process ------------------------------------------------------ */

static void check_api_once(void) {
  static int done;
  if (done)
    return;
  done = 1;
  narcache_codec *d = NULL, *z = NULL, *x = (narcache_codec *)&done;
  CHECK(narcache_codec_new_decompressor(&x, 99) == NARCACHE_EINVAL && x == NULL);
  CHECK(narcache_codec_new_compressor(&x, NARCACHE_CODEC_ZSTD, narcache_codec_max_level() + 1) ==
            NARCACHE_EINVAL &&
        x == NULL);
  CHECK(narcache_codec_new_decompressor(&d, NARCACHE_CODEC_ZSTD) == 0);
  CHECK(narcache_codec_set_window_log_max(d, 9) == NARCACHE_EINVAL);
  CHECK(narcache_codec_set_window_log_max(d, 32) == NARCACHE_EINVAL);
  CHECK(narcache_codec_set_pledged_size(d, 1) == NARCACHE_EMISUSE);
  CHECK(narcache_codec_new_compressor(&z, NARCACHE_CODEC_ZSTD, 0) == 0);
  CHECK(narcache_codec_set_max_output(z, 1) == NARCACHE_EMISUSE);
  CHECK(narcache_codec_set_window_log_max(z, 20) == NARCACHE_EMISUSE);
  narcache_outbuf out = {NULL, 0, 1};
  narcache_inbuf in = {NULL, 0, 0};
  CHECK(narcache_codec_process(d, &out, &in, 0) == NARCACHE_EINVAL); /* pos > size */
  narcache_codec_free(d);
  narcache_codec_free(z);
  narcache_codec_free(NULL);
}

/* ---- the target ------------------------------------------------------------ */

static uint8_t acc_a[OUT_CAP + 1], acc_b[OUT_CAP + 1];

static uint64_t choose_max(uint8_t b) {
  uint64_t v = b >> 2;
  switch (b & 3) {
  case 0:
    return UINT64_MAX;
  case 1:
    return v;
  case 2:
    return 64 + 1000 * v;
  default:
    return (v + 1) * 131072; /* up to OUT_CAP */
  }
}

static int same_prefix(const run *a, const run *b) {
  size_t n = a->len < b->len ? a->len : b->len;
  return n == 0 || memcmp(a->acc, b->acc, n) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < HEADER || size - HEADER > MAX_INPUT)
    return 0;
  check_api_once();
  const uint8_t *body = data + HEADER;
  size_t len = size - HEADER;
  uint64_t max = choose_max(data[2]);
  int window_log = 10 + data[3] % 18;
  int level = -5 + (data[3] / 18) % 9;
  int flush = data[4] % 3;
  int whole_first = (data[4] >> 2) & 1;
  int pledge = (data[4] >> 3) & 1;
  int op = data[5] & 7;
  unsigned op_at = data[5] >> 3;
  uint32_t seed =
      0x9e3779b9u ^ (((uint32_t)data[4] >> 4) << 16) ^ ((uint32_t)data[0] << 8) ^ data[1];

  /* The chunked run (a) and the one-piece run (b) on one decompressor,
   * reset in between. */
  narcache_codec *c = new_decompressor(window_log, max);
  static run a, b;
  run_init(&a, c, acc_a, window_log, max, flush, make_chunker(data[0], seed),
           make_chunker(data[1], ~seed));
  if (op > OP_NONE) {
    a.op = op;
    a.op_at = op_at;
  }
  run_init(&b, c, acc_b, window_log, max, flush, whole, whole);
  if (whole_first) {
    drive(&b, body, len);
    CHECK(narcache_codec_reset(c) == 0);
    CHECK(narcache_codec_total_in(c) == 0 && narcache_codec_total_out(c) == 0);
    CHECK(strcmp(narcache_codec_errmsg(c), "") == 0);
  }
  drive(&a, body, len);
  if (a.restart) { /* OP_RESET: start over on the reset codec */
    run_init(&a, c, acc_a, window_log, max, flush, make_chunker(data[0], seed),
             make_chunker(data[1], ~seed));
    drive(&a, body, len);
  }
  if (!whole_first) {
    CHECK(narcache_codec_reset(c) == 0);
    CHECK(narcache_codec_total_in(c) == 0 && narcache_codec_total_out(c) == 0);
    CHECK(strcmp(narcache_codec_errmsg(c), "") == 0);
    /* limits outlive a reset: undo a limit the chunked run lowered */
    CHECK(narcache_codec_set_max_output(c, max) == 0);
    drive(&b, body, len);
  }
  narcache_codec_free(c);

  /* A limit lowered in the middle may stop the chunked run alone. */
  int lowered_stop = a.lowered && a.result == NARCACHE_ELIMIT && b.result == 0;
  if ((a.result != 0 || b.result != 0) && !lowered_stop) {
    /* Both fail; what each produced before failing is decoded data. */
    if (a.result == 0 || b.result == 0) {
      fprintf(stderr,
              "fuzz_zstd_decompress: chunked run %s (%zu bytes out) \"%s\", "
              "one piece %s (%zu) \"%s\"\n",
              a.result == CAPPED ? "capped" : narcache_errname(a.result), a.len, a.msg,
              b.result == CAPPED ? "capped" : narcache_errname(b.result), b.len, b.msg);
      CHECK(a.result != 0 && b.result != 0);
    }
    CHECK(same_prefix(&a, &b));
    return 0;
  }
  CHECK(same_prefix(&a, &b));
  if (a.result == 0)
    CHECK(a.len == b.len);
  size_t out_len = b.len; /* reference: acc_b */

  /* The limit is exact: L bytes pass, L - 1 do not. */
  c = new_decompressor(window_log, out_len);
  run_init(&a, c, acc_a, window_log, out_len, flush, whole, whole);
  drive(&a, body, len);
  CHECK(a.result == 0 && a.len == out_len && same_prefix(&a, &b));
  narcache_codec_free(c);
  if (out_len > 0) {
    c = new_decompressor(window_log, out_len - 1);
    run_init(&a, c, acc_a, window_log, out_len - 1, flush, whole, whole);
    drive(&a, body, len);
    CHECK(a.result == NARCACHE_ELIMIT && same_prefix(&a, &b));
    narcache_codec_free(c);
  }

  /* Round trip through the compressor, decoded in chunks. */
  bytes comp = compress(acc_b, out_len, level, pledge, seed);
  c = new_decompressor(27, UINT64_MAX);
  run_init(&a, c, acc_a, 27, UINT64_MAX, flush, make_chunker(data[0], ~seed),
           make_chunker(data[1], seed));
  drive(&a, comp.p, comp.len);
  CHECK(a.result == 0 && a.len == out_len && same_prefix(&a, &b));
  narcache_codec_free(c);
  free(comp.p);
  return 0;
}
