/* The strict HTTP/1.1 request parser (libnarcache/http_internal.h) on a
 * byte stream of pipelined requests.
 *
 * The input is served as a connection would be: scan the head, parse it,
 * read the body (Content-Length bytes, or the chunked decoder), go on with
 * the next request right after; stop at the first refusal or at the end
 * of the stream. Everything that happens goes into a transcript.
 *
 * The stream is served three ways, under two sets of limits (roomy, and
 * tight enough for 414/431 to happen): in one piece; arriving in two
 * pieces split at a point derived from the input, each time as a fresh
 * exact-size heap copy of everything received (so ASan sees any look past
 * it, and spans must follow the moving buffer); one byte at a time. The
 * three transcripts must be identical.
 *
 * Checked on the way: the scanner never answers past max_head_bytes and
 * stops right after CRLF CRLF; refusals have a status from the contract
 * and a reason; after the scanner accepted a head the parser never
 * disagrees about where lines end; every span of a parsed request lies in
 * its head, path and query make up the target, the fields are consistent
 * (chunked excludes Content-Length and HTTP/1.0, keep-alive and version
 * are 0/1, n_headers within the limit, Content-Length within 2^63-1);
 * chunked data spans are inside the bytes consumed by that call, and the
 * decoder asks for more only with its input used up. Range values found
 * in requests, and the raw input, go through the Range parser against a
 * few sizes; a satisfiable range lies inside the object and reads back the
 * same when written as "bytes=first-last".
 *
 * The raw input is also handed directly to the head parser (which must
 * agree with the scanner when it accepts) and to the chunked decoder
 * (whole and byte by byte, with the same result). */
#include "http_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fuzz_http_request: invariant failed at line %d: %s\n", __LINE__, #cond);    \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static const narcache__http_limits roomy = {
    .max_head_bytes = 8192,
    .max_target_bytes = 1024,
    .max_headers = 32,
};
static const narcache__http_limits tight = {
    .max_head_bytes = 160,
    .max_target_bytes = 40,
    .max_headers = 4,
};

/* ---- transcript ------------------------------------------------------------------- */

typedef struct transcript {
  uint64_t *w;
  size_t n, cap;
} transcript;

static void put(transcript *t, uint64_t v) {
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    uint64_t *w = realloc(t->w, cap * sizeof *w);
    CHECK(w != NULL);
    t->w = w;
    t->cap = cap;
  }
  t->w[t->n++] = v;
}

/* Reasons are static strings: the same refusal is the same pointer. */
static void put_why(transcript *t, const char *why) { put(t, (uint64_t)(uintptr_t)why); }

static int same_transcript(const transcript *a, const transcript *b) {
  return a->n == b->n && (a->n == 0 || memcmp(a->w, b->w, a->n * sizeof *a->w) == 0);
}

enum event {
  EV_EOF_IN_HEAD = 1,
  EV_SCAN_REFUSED,
  EV_HEAD,
  EV_PARSE_REFUSED,
  EV_REQUEST,
  EV_RANGE,
  EV_BODY,
  EV_EOF_IN_BODY,
  EV_CHUNKED_REFUSED,
};

static uint64_t fnv1a(uint64_t h, const void *p, size_t len) {
  const unsigned char *b = p;
  for (size_t i = 0; i < len; i++)
    h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}
#define FNV_START 0xcbf29ce484222325ULL

/* ---- the bytes arriving ----------------------------------------------------------- */

enum feed_mode { FEED_WHOLE, FEED_SPLIT, FEED_BYTEWISE };

typedef struct conn {
  const uint8_t *stream;
  size_t len;
  enum feed_mode mode;
  size_t split;    /* FEED_SPLIT: bytes in the first piece */
  const char *buf; /* everything received so far */
  char *owned;     /* FEED_SPLIT: buf is this exact-size copy */
  size_t received;
} conn;

static void conn_set(conn *c, size_t received) {
  c->received = received;
  if (c->mode != FEED_SPLIT) {
    c->buf = (const char *)c->stream;
    return;
  }
  free(c->owned);
  c->owned = malloc(received ? received : 1);
  CHECK(c->owned != NULL);
  if (received)
    memcpy(c->owned, c->stream, received);
  c->buf = c->owned;
}

static void conn_open(conn *c, const uint8_t *stream, size_t len, enum feed_mode mode,
                      size_t split) {
  memset(c, 0, sizeof *c);
  c->stream = stream;
  c->len = len;
  c->mode = mode;
  c->split = split;
  conn_set(c, mode == FEED_WHOLE ? len : mode == FEED_SPLIT ? split : (len > 0));
}

/* More bytes arrive; 0 at the end of the stream. The buffer may move. */
static int conn_receive(conn *c) {
  if (c->received == c->len)
    return 0;
  conn_set(c, c->mode == FEED_BYTEWISE ? c->received + 1 : c->len);
  return 1;
}

/* ---- checks on a parsed request ---------------------------------------------------- */

static void check_span_inside(narcache__http_span s, const char *head, size_t len) {
  if (s.p == NULL) {
    CHECK(s.len == 0);
    return;
  }
  CHECK(s.p >= head && s.len <= len && (size_t)(s.p - head) <= len - s.len);
}

/* A span as an offset in its head (the buffer moves between feeds). */
static void put_span(transcript *t, narcache__http_span s, const char *head) {
  put(t, s.p == NULL ? UINT64_MAX : (uint64_t)(s.p - head));
  put(t, s.len);
}

static int is_token(narcache__http_span s) {
  if (s.len == 0)
    return 0;
  for (size_t i = 0; i < s.len; i++) {
    unsigned char c = (unsigned char)s.p[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL)))
      return 0;
  }
  return 1;
}

/* No surrounding OWS left in a field value. */
static void check_trimmed(narcache__http_span s) {
  if (s.len > 0) {
    CHECK(s.p[0] != ' ' && s.p[0] != '\t');
    CHECK(s.p[s.len - 1] != ' ' && s.p[s.len - 1] != '\t');
  }
}

static void check_request(const narcache__http_request *r, const char *head, size_t len,
                          const narcache__http_limits *l) {
  const narcache__http_span spans[] = {
      r->method_name, r->target,        r->path,          r->query,        r->host,
      r->range,       r->authorization, r->if_none_match, r->content_type, r->user_agent};
  for (size_t i = 0; i < sizeof spans / sizeof spans[0]; i++)
    check_span_inside(spans[i], head, len);
  const narcache__http_span values[] = {r->host,          r->range,        r->authorization,
                                        r->if_none_match, r->content_type, r->user_agent};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
    check_trimmed(values[i]);

  CHECK(r->method >= NARCACHE__HTTP_OTHER && r->method <= NARCACHE__HTTP_OPTIONS);
  CHECK(is_token(r->method_name));
  CHECK(r->target.len > 0 && r->target.len <= l->max_target_bytes && r->target.p[0] == '/');
  CHECK(memchr(r->target.p, '#', r->target.len) == NULL);
  CHECK(memchr(r->target.p, ' ', r->target.len) == NULL);
  /* target = path [ "?" query ], the path without '?' */
  CHECK(r->path.p == r->target.p && r->path.len <= r->target.len);
  CHECK(memchr(r->path.p, '?', r->path.len) == NULL);
  if (r->path.len < r->target.len) {
    CHECK(r->query.p == r->path.p + r->path.len + 1 && r->path.p[r->path.len] == '?');
    CHECK(r->path.len + 1 + r->query.len == r->target.len);
  } else {
    CHECK(r->query.len == 0);
  }
  CHECK(r->minor_version == 0 || r->minor_version == 1);
  CHECK(r->keep_alive == 0 || r->keep_alive == 1);
  CHECK(r->expect_continue == 0 || (r->expect_continue == 1 && r->minor_version == 1));
  CHECK(r->has_content_length == 0 || r->has_content_length == 1);
  CHECK(r->content_length <= (uint64_t)INT64_MAX);
  CHECK(r->has_content_length || r->content_length == 0);
  CHECK(r->chunked == 0 || r->chunked == 1);
  if (r->chunked)
    CHECK(!r->has_content_length && r->minor_version == 1);
  if (r->minor_version == 1)
    CHECK(r->host.p != NULL); /* Host is required */
  CHECK(r->n_headers <= l->max_headers);
}

/* ---- Range ------------------------------------------------------------------------ */

static int range_of(const char *value, size_t len, uint64_t size, uint64_t *first, uint64_t *last) {
  *first = 0xdead;
  *last = 0xbeef;
  int r = narcache__http_parse_range(value, len, size, first, last);
  CHECK(r == 1 || r == 0 || r == -416);
  if (r != 1) {
    CHECK(*first == 0xdead && *last == 0xbeef); /* untouched */
    return r;
  }
  CHECK(size > 0 && *first <= *last && *last < size);
  return r;
}

/* The value against a few object sizes; results into the transcript. */
static void check_range(transcript *t, const char *value, size_t len, uint64_t derived) {
  const uint64_t sizes[] = {0, 1, 1000, derived, UINT64_MAX};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    uint64_t first, last;
    int r = range_of(value, len, sizes[i], &first, &last);
    if (t != NULL) {
      put(t, EV_RANGE);
      put(t, (uint64_t)(int64_t)r);
      put(t, r == 1 ? first : 0);
      put(t, r == 1 ? last : 0);
    }
    if (r == 1) {
      /* the same range spelled out is read the same */
      char again[64];
      int n = snprintf(again, sizeof again, "bytes=%llu-%llu", (unsigned long long)first,
                       (unsigned long long)last);
      uint64_t f2, l2;
      CHECK(range_of(again, (size_t)n, sizes[i], &f2, &l2) == 1 && f2 == first && l2 == last);
    }
  }
}

/* ---- serving ------------------------------------------------------------------------ */

/* A final answer of the decoder is repeated, consuming nothing. */
static void check_chunked_repeats(narcache__http_chunked *dec, narcache_inbuf in, int answer,
                                  const char *why) {
  const char *data = "x", *why2 = "x";
  size_t n = 1, pos = in.pos;
  CHECK(narcache__http_chunked_next(dec, &in, &data, &n, &why2) == answer);
  CHECK(why2 == why && data == NULL && n == 0 && in.pos == pos);
}

/* A chunked body from *start. 1 complete; 0 the stream ended; -1 refused.
 * The body's length and hash go into the transcript at the end. */
static int serve_chunked(conn *c, size_t *start, transcript *t) {
  narcache__http_chunked dec;
  memset(&dec, 0, sizeof dec);
  uint64_t hash = FNV_START, total = 0;
  for (;;) {
    narcache_inbuf in = {c->buf + *start, c->received - *start, 0};
    const char *data = NULL, *why = NULL;
    size_t n = 0;
    int r = narcache__http_chunked_next(&dec, &in, &data, &n, &why);
    CHECK(in.pos <= in.size);
    if (n > 0) {
      /* zero copy: inside the bytes this call consumed */
      CHECK(data >= (const char *)in.data && data + n <= (const char *)in.data + in.pos);
      hash = fnv1a(hash, data, n);
      total += n;
    } else {
      CHECK(data == NULL);
    }
    *start += in.pos;
    if (r < 0) {
      CHECK(r == -400 && why != NULL && n == 0);
      check_chunked_repeats(&dec, in, r, why);
      put(t, EV_CHUNKED_REFUSED);
      put_why(t, why);
      return -1;
    }
    CHECK(why == NULL);
    if (r == 1) {
      CHECK(n == 0);
      check_chunked_repeats(&dec, in, r, NULL);
      put(t, EV_BODY);
      put(t, total);
      put(t, hash);
      return 1;
    }
    CHECK(r == 0);
    if (n == 0) {
      CHECK(in.pos == in.size); /* asks for more only with everything used */
      if (!conn_receive(c)) {
        put(t, EV_EOF_IN_BODY);
        put(t, total);
        return 0;
      }
    }
  }
}

/* A Content-Length body from *start. */
static int serve_sized(conn *c, size_t *start, uint64_t length, transcript *t) {
  while (c->received - *start < length)
    if (!conn_receive(c)) {
      put(t, EV_EOF_IN_BODY);
      put(t, c->received - *start);
      return 0;
    }
  put(t, EV_BODY);
  put(t, length);
  put(t, fnv1a(FNV_START, c->buf + *start, (size_t)length));
  *start += (size_t)length;
  return 1;
}

/* Once the scanner has delimited a head, the parser agrees on its lines. */
static void check_parse_refusal(int status, const char *why) {
  CHECK(why != NULL);
  CHECK(status == 400 || status == 414 || status == 431 || status == 501 || status == 505);
  CHECK(status != 431 || strcmp(why, "more header fields than the limit") == 0);
  CHECK(strcmp(why, "bare LF in request head") != 0);
  CHECK(strcmp(why, "bare CR in request head") != 0);
  CHECK(strcmp(why, "request head does not end with an empty line") != 0);
  CHECK(strcmp(why, "bytes after the end of the request head") != 0);
}

/* A final answer is repeated, without looking at anything. */
static void check_scan_repeats(narcache__http_head_scanner *s, const char *buf, size_t len,
                               const narcache__http_limits *l, long answer, const char *why) {
  narcache__http_head_scanner before = *s;
  const char *why2 = "x";
  CHECK(narcache__http_head_scan(s, buf, len, l, &why2) == answer && why2 == why);
  CHECK(before.scanned == s->scanned && before.state == s->state &&
        before.line_start == s->line_start && before.in_request_line == s->in_request_line);
}

/* The head at *start: its length (> 0), or 0 when the connection ends. */
static long serve_head(conn *c, size_t start, const narcache__http_limits *l, transcript *t) {
  narcache__http_head_scanner s;
  memset(&s, 0, sizeof s);
  const char *why = NULL;
  long head;
  while ((head = narcache__http_head_scan(&s, c->buf + start, c->received - start, l, &why)) == 0) {
    CHECK(why == NULL && s.scanned == c->received - start && s.scanned < l->max_head_bytes);
    if (!conn_receive(c)) {
      put(t, EV_EOF_IN_HEAD);
      put(t, c->received - start);
      return 0;
    }
  }
  if (head < 0) {
    CHECK(why != NULL && (head == -400 || head == -414 || head == -431));
    CHECK(s.scanned <= c->received - start && s.scanned <= l->max_head_bytes);
    check_scan_repeats(&s, c->buf + start, c->received - start, l, head, why);
    put(t, EV_SCAN_REFUSED);
    put(t, (uint64_t)-head);
    put_why(t, why);
    return 0;
  }
  CHECK(why == NULL);
  size_t n = (size_t)head;
  CHECK(n <= l->max_head_bytes && n <= c->received - start && s.scanned == n);
  CHECK(n >= 4 && memcmp(c->buf + start + n - 4, "\r\n\r\n", 4) == 0);
  check_scan_repeats(&s, c->buf + start, c->received - start, l, head, NULL);
  put(t, EV_HEAD);
  put(t, n);
  return head;
}

static void serve(const uint8_t *data, size_t size, enum feed_mode mode, size_t split,
                  const narcache__http_limits *l, transcript *t) {
  conn c;
  conn_open(&c, data, size, mode, split);
  size_t start = 0;
  for (;;) {
    long head = serve_head(&c, start, l, t);
    if (head <= 0)
      break;
    const char *h = c.buf + start, *why = NULL;
    narcache__http_request req;
    int status = narcache__http_parse_head(&req, h, (size_t)head, l, &why);
    if (status != 0) {
      check_parse_refusal(status, why);
      put(t, EV_PARSE_REFUSED);
      put(t, (uint64_t)status);
      put_why(t, why);
      break;
    }
    CHECK(why == NULL);
    check_request(&req, h, (size_t)head, l);
    put(t, EV_REQUEST);
    put(t, (uint64_t)req.method);
    put(t, (uint64_t)req.minor_version << 8 | (uint64_t)req.keep_alive << 4 |
               (uint64_t)req.chunked << 2 | (uint64_t)req.expect_continue << 1 |
               (uint64_t)req.has_content_length);
    put(t, req.content_length);
    put(t, req.n_headers);
    const narcache__http_span spans[] = {
        req.method_name, req.target,        req.path,          req.query,        req.host,
        req.range,       req.authorization, req.if_none_match, req.content_type, req.user_agent};
    for (size_t i = 0; i < sizeof spans / sizeof spans[0]; i++)
      put_span(t, spans[i], h);
    if (req.range.p != NULL)
      check_range(t, req.range.p, req.range.len, req.content_length + 7);

    start += (size_t)head;
    int body = 1;
    if (req.chunked)
      body = serve_chunked(&c, &start, t);
    else if (req.has_content_length)
      body = serve_sized(&c, &start, req.content_length, t);
    if (body != 1)
      break;
  }
  free(c.owned);
}

/* ---- the raw input, directly ------------------------------------------------------ */

/* Length of the request line (after the one tolerated empty line). */
static size_t request_line_length(const uint8_t *data, size_t size) {
  size_t start = size >= 2 && data[0] == '\r' && data[1] == '\n' ? 2 : 0;
  const uint8_t *cr = memchr(data + start, '\r', size - start);
  return cr == NULL ? size - start : (size_t)(cr - data) - start;
}

/* When the parser takes the whole input as a head, the scanner must find
 * that same head (unless its request-line allowance, which the parser
 * does not have, is what stops it). */
static void parse_raw(const uint8_t *data, size_t size, const narcache__http_limits *l) {
  narcache__http_request req;
  const char *why = NULL;
  int status = narcache__http_parse_head(&req, (const char *)data, size, l, &why);
  if (status != 0) {
    CHECK(why != NULL);
    return;
  }
  check_request(&req, (const char *)data, size, l);
  if (request_line_length(data, size) > l->max_target_bytes + 32)
    return;
  narcache__http_head_scanner s;
  memset(&s, 0, sizeof s);
  CHECK(narcache__http_head_scan(&s, (const char *)data, size, l, &why) == (long)size);
}

/* The input as a chunked body: whole and byte by byte agree. */
static void decode_raw(const uint8_t *data, size_t size, int bytewise, transcript *t) {
  narcache__http_chunked dec;
  memset(&dec, 0, sizeof dec);
  size_t at = 0;
  uint64_t hash = FNV_START, total = 0;
  int r = 0;
  const char *why = NULL;
  do {
    size_t piece = bytewise && size - at > 1 ? 1 : size - at;
    narcache_inbuf in = {data + at, piece, 0};
    do {
      const char *d = NULL;
      size_t n = 0;
      size_t before = in.pos;
      r = narcache__http_chunked_next(&dec, &in, &d, &n, &why);
      CHECK(in.pos <= in.size);
      if (n > 0) {
        CHECK(d >= (const char *)data + at + before && d + n <= (const char *)data + at + in.pos);
        hash = fnv1a(hash, d, n);
        total += n;
      }
    } while (r == 0 && in.pos < in.size);
    at += in.pos;
  } while (r == 0 && at < size);
  put(t, (uint64_t)(int64_t)r);
  put(t, at);
  put(t, total);
  put(t, hash);
  put_why(t, why);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* Where the split feed cuts: anywhere, chosen by the input itself. */
  size_t split = size ? (size_t)(fnv1a(FNV_START, data, size) % (size + 1)) : 0;
  const narcache__http_limits *sets[] = {&roomy, &tight};
  for (size_t k = 0; k < 2; k++) {
    transcript whole = {0}, cut = {0}, bytes = {0};
    serve(data, size, FEED_WHOLE, 0, sets[k], &whole);
    serve(data, size, FEED_SPLIT, split, sets[k], &cut);
    serve(data, size, FEED_BYTEWISE, 0, sets[k], &bytes);
    CHECK(same_transcript(&whole, &cut));
    CHECK(same_transcript(&whole, &bytes));
    free(whole.w);
    free(cut.w);
    free(bytes.w);
    parse_raw(data, size, sets[k]);
  }

  transcript whole = {0}, bytes = {0};
  decode_raw(data, size, 0, &whole);
  decode_raw(data, size, 1, &bytes);
  CHECK(same_transcript(&whole, &bytes));
  free(whole.w);
  free(bytes.w);

  check_range(NULL, (const char *)data, size, size);
  return 0;
}
