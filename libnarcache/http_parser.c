/* Strict HTTP/1.1 request parsing (RFC 9112, RFC 9110): the end-of-head
 * scanner, the head parser, the chunked body decoder and the Range header.
 * The contract is in http_internal.h.
 *
 * Everything here faces hostile clients in front of a binary cache, so the
 * rule is: one reading of the bytes, and anything two implementations
 * could read differently (the stuff request smuggling is made of) is
 * refused rather than guessed at. */
#include "http_internal.h"
#include "common_internal.h"

#include <limits.h>
#include <string.h>

/* ---- shared ---------------------------------------------------------------------- */

/* Used when the caller passes no limits (documented in the header). */
static const narcache__http_limits default_limits = {
    .max_head_bytes = 16 * 1024,
    .max_target_bytes = 4096,
    .max_headers = 64,
};

/* The request line may exceed the target limit by this much before the
 * scanner answers 414: "OPTIONS" + 2 spaces + "HTTP/1.1" is 17 bytes, so a
 * longer method than about 20 bytes counts as part of an overlong line. */
#define REQUEST_LINE_SLACK 32

/* The chunked decoder walks size lines (with their extensions) and the
 * trailer byte by byte and keeps none of it: these bounds stop a client
 * from feeding it an endless line that is never a body. */
#define CHUNK_LINE_MAX 4096
#define TRAILER_MAX 4096

/* Content-Length and chunk sizes fit an off_t (and a signed 64-bit type in
 * whatever the server hands them to). */
#define BODY_SIZE_MAX ((uint64_t)INT64_MAX)

static const narcache__http_limits *limits_or_default(const narcache__http_limits *limits) {
  return limits != NULL ? limits : &default_limits;
}

static void set_why(const char **why, const char *reason) {
  if (why != NULL)
    *why = reason;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* tchar of RFC 9110 5.6.2: what methods, header names and list tokens are
 * made of. */
static int is_tchar(unsigned char c) {
  return is_alpha(c) || is_digit(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

/* Field value bytes (RFC 9110 5.5): VCHAR, obs-text, SP and HTAB. */
static int is_field_byte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static int lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

/* `s` equals the lowercase literal `lit`, ignoring ASCII case. */
static int equals_nocase(const char *s, size_t len, const char *lit) {
  size_t n = strlen(lit);
  if (len != n)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (lower((unsigned char)s[i]) != (unsigned char)lit[i])
      return 0;
  return 1;
}

static narcache__http_span span_of(const char *p, size_t len) {
  narcache__http_span s = {p, len};
  return s;
}

static narcache__http_span trim_ows(const char *p, size_t len) {
  while (len > 0 && is_ows((unsigned char)p[0])) {
    p++;
    len--;
  }
  while (len > 0 && is_ows((unsigned char)p[len - 1]))
    len--;
  return span_of(p, len);
}

static size_t saturating_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

/* ---- head scanner ---------------------------------------------------------------- */

/* The scanner's automaton. Zero is the state of a fresh scanner; negative
 * states are sticky errors (minus one minus an index in scan_errors[]). */
enum scan_state {
  SCAN_START = 0,        /* nothing seen yet */
  SCAN_LEADING_CR,       /* a CR as the very first byte */
  SCAN_AFTER_LEADING,    /* one empty line seen, request line not started */
  SCAN_AFTER_LEADING_CR, /* a CR right after that empty line */
  SCAN_LINE,             /* inside a non-empty line */
  SCAN_LINE_CR,          /* the CR ending a non-empty line */
  SCAN_LINE_START,       /* start of a field line, or of the final CRLF */
  SCAN_END_CR,           /* the CR of the empty line ending the head */
  SCAN_DONE,             /* complete: scanned is the head length */
};

enum scan_error {
  SCAN_E_BARE_LF,
  SCAN_E_BARE_CR,
  SCAN_E_NUL,
  SCAN_E_CONTROL,
  SCAN_E_EMPTY_LINES,
  SCAN_E_LINE_TOO_LONG,
  SCAN_E_HEAD_TOO_LARGE,
};

static const struct {
  int status;
  const char *why;
} scan_errors[] = {
    [SCAN_E_BARE_LF] = {400, "bare LF in request head"},
    [SCAN_E_BARE_CR] = {400, "bare CR in request head"},
    [SCAN_E_NUL] = {400, "NUL byte in request head"},
    [SCAN_E_CONTROL] = {400, "control byte in request head"},
    [SCAN_E_EMPTY_LINES] = {400, "more than one empty line before the request line"},
    [SCAN_E_LINE_TOO_LONG] = {414, "request line longer than the target limit allows"},
    [SCAN_E_HEAD_TOO_LARGE] = {431, "request head larger than the limit"},
};

static long scan_fail(narcache__http_head_scanner *s, enum scan_error e, const char **why) {
  s->state = -1 - (int)e;
  set_why(why, scan_errors[e].why);
  return -(long)scan_errors[e].status;
}

/* Bytes that may sit inside a head line: everything but CR, LF and the
 * control bytes other than HTAB. Whether a byte suits the part of the line
 * it is in (token, target, value) is the parser's business. */
static int is_line_byte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

/* The error for a byte that cannot be inside a line (CR handled apart). */
static enum scan_error line_byte_error(unsigned char c) {
  if (c == '\n')
    return SCAN_E_BARE_LF;
  return c == 0 ? SCAN_E_NUL : SCAN_E_CONTROL;
}

/* Start the request line or a field line at buf[i] (not a CR). */
static int scan_line_begins(narcache__http_head_scanner *s, unsigned char c, size_t i,
                            int request_line, enum scan_error *err) {
  if (!is_line_byte(c)) {
    *err = line_byte_error(c);
    return -1;
  }
  s->state = SCAN_LINE;
  s->line_start = i;
  s->in_request_line = request_line;
  return 0;
}

/* Examine the bytes [*pos, end) of a line body in one go (the hot loop).
 * Stops at the first byte that is not a plain line byte, leaving it to the
 * caller, or fails with 414 once the request line is too long. */
static int scan_line_body(narcache__http_head_scanner *s, const char *buf, size_t *pos, size_t end,
                          size_t max_line) {
  size_t i = *pos;
  while (i < end && is_line_byte((unsigned char)buf[i]))
    i++;
  if (s->in_request_line && i - s->line_start > max_line) {
    /* The first byte past the allowance is where it went wrong, whatever
     * follows: the same answer however the bytes were split. */
    *pos = s->line_start + max_line + 1;
    return -1;
  }
  *pos = i;
  return 0;
}

/* One step of the automaton on the byte buf[i], for the states other than
 * SCAN_LINE's plain bytes. Returns 1 when the head is complete, 0 to go
 * on, -1 with *err set on a malformed head. */
static int scan_step(narcache__http_head_scanner *s, unsigned char c, size_t i,
                     enum scan_error *err) {
  switch (s->state) {
  case SCAN_START:
    if (c == '\r') {
      s->state = SCAN_LEADING_CR;
      return 0;
    }
    return scan_line_begins(s, c, i, 1, err);
  case SCAN_LEADING_CR:
    if (c != '\n') {
      *err = SCAN_E_BARE_CR;
      return -1;
    }
    s->state = SCAN_AFTER_LEADING;
    return 0;
  case SCAN_AFTER_LEADING:
    if (c == '\r') {
      s->state = SCAN_AFTER_LEADING_CR;
      return 0;
    }
    return scan_line_begins(s, c, i, 1, err);
  case SCAN_AFTER_LEADING_CR:
    /* RFC 9112 2.2 asks servers to ignore "at least one" empty line; a
     * second one is either a broken client or someone probing. */
    *err = c == '\n' ? SCAN_E_EMPTY_LINES : SCAN_E_BARE_CR;
    return -1;
  case SCAN_LINE:
    if (c == '\r') {
      s->state = SCAN_LINE_CR;
      return 0;
    }
    *err = line_byte_error(c);
    return -1;
  case SCAN_LINE_CR:
    if (c != '\n') {
      *err = SCAN_E_BARE_CR;
      return -1;
    }
    s->state = SCAN_LINE_START;
    s->in_request_line = 0;
    return 0;
  case SCAN_LINE_START:
    if (c == '\r') {
      s->state = SCAN_END_CR;
      return 0;
    }
    return scan_line_begins(s, c, i, 0, err);
  default: /* SCAN_END_CR (DONE and errors never get here) */
    if (c != '\n') {
      *err = SCAN_E_BARE_CR;
      return -1;
    }
    s->state = SCAN_DONE;
    return 1;
  }
}

long narcache__http_head_scan(narcache__http_head_scanner *s, const char *buf, size_t len,
                              const narcache__http_limits *limits, const char **why) {
  set_why(why, NULL);
  limits = limits_or_default(limits);
  if (s->state < 0) {
    enum scan_error e = (enum scan_error)(-1 - s->state);
    set_why(why, scan_errors[e].why);
    return -(long)scan_errors[e].status;
  }
  if (s->state == SCAN_DONE)
    return (long)s->scanned;

  /* A head may be exactly max_head_bytes long: never look further. The
   * return type caps it too. */
  size_t max_head =
      limits->max_head_bytes < (size_t)LONG_MAX ? limits->max_head_bytes : (size_t)LONG_MAX;
  size_t max_line = saturating_add(limits->max_target_bytes, REQUEST_LINE_SLACK);
  size_t end = len < max_head ? len : max_head;
  size_t i = s->scanned;
  while (i < end) {
    if (s->state == SCAN_LINE) {
      if (scan_line_body(s, buf, &i, end, max_line) != 0) {
        s->scanned = i;
        return scan_fail(s, SCAN_E_LINE_TOO_LONG, why);
      }
      if (i == end)
        break;
    }
    enum scan_error err = SCAN_E_CONTROL;
    int r = scan_step(s, (unsigned char)buf[i], i, &err);
    i++;
    s->scanned = i;
    if (r < 0)
      return scan_fail(s, err, why);
    if (r > 0)
      return (long)i;
  }
  s->scanned = i;
  if (i >= max_head)
    return scan_fail(s, SCAN_E_HEAD_TOO_LARGE, why);
  return 0;
}

/* ---- head parser: lines ---------------------------------------------------------- */

static int reject(const char **why, int status, const char *reason) {
  set_why(why, reason);
  return status;
}

/* The line starting at *pos, without its CRLF; *pos moves past the CRLF.
 * The parser does not trust that the scanner delimited the head, so line
 * ends are checked again here. */
static int next_line(const char *head, size_t len, size_t *pos, narcache__http_span *line,
                     const char **why) {
  size_t start = *pos;
  for (size_t i = start; i < len; i++) {
    if (head[i] == '\n')
      return reject(why, 400, "bare LF in request head");
    if (head[i] == '\r') {
      if (i + 1 >= len || head[i + 1] != '\n')
        return reject(why, 400, "bare CR in request head");
      *line = span_of(head + start, i - start);
      *pos = i + 2;
      return 0;
    }
  }
  return reject(why, 400, "request head does not end with an empty line");
}

/* ---- head parser: request line --------------------------------------------------- */

static int method_from_name(const char *p, size_t len) {
  static const struct {
    const char *name;
    int method;
  } methods[] = {
      {"GET", NARCACHE__HTTP_GET},       {"HEAD", NARCACHE__HTTP_HEAD},
      {"PUT", NARCACHE__HTTP_PUT},       {"POST", NARCACHE__HTTP_POST},
      {"DELETE", NARCACHE__HTTP_DELETE}, {"OPTIONS", NARCACHE__HTTP_OPTIONS},
  };
  /* Methods are case-sensitive (RFC 9110 9.1): "get" is some other one. */
  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
    if (strlen(methods[i].name) == len && memcmp(methods[i].name, p, len) == 0)
      return methods[i].method;
  return NARCACHE__HTTP_OTHER;
}

/* pchar of RFC 3986 without pct-encoded, plus '/' and '?' (allowed in
 * both the path and the query of an origin-form target). */
static int is_target_byte(unsigned char c) {
  static const char punctuation[] = "-._~"        /* unreserved */
                                    "!$&'()*+,;=" /* sub-delims */
                                    ":@/?";
  return is_alpha(c) || is_digit(c) || (c != 0 && strchr(punctuation, c) != NULL);
}

/* Only origin-form (RFC 9112 3.2.1): absolute-form is for proxies,
 * authority-form for CONNECT and asterisk-form for OPTIONS *; a cache
 * server has no use for them and each is one more way to be confused. */
static int check_target(const char *t, size_t len, const char **why) {
  if (t[0] == '*')
    return reject(why, 400, "asterisk-form request-target");
  if (t[0] != '/') {
    for (size_t i = 0; i + 2 < len; i++)
      if (memcmp(t + i, "://", 3) == 0)
        return reject(why, 400, "absolute-form request-target");
    return reject(why, 400, "request-target not in origin-form");
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)t[i];
    if (c == '%') {
      if (i + 2 >= len || narcache__hex_value((unsigned char)t[i + 1]) < 0 ||
          narcache__hex_value((unsigned char)t[i + 2]) < 0)
        return reject(why, 400, "'%' in request-target not followed by two hex digits");
      i += 2;
    } else if (c == '#') {
      return reject(why, 400, "fragment ('#') in request-target");
    } else if (!is_target_byte(c)) {
      return reject(why, 400, "invalid byte in request-target");
    }
  }
  return 0;
}

/* "HTTP/1.1" or "HTTP/1.0"; any other "HTTP/d.d" is a version we do not
 * speak (505), anything else is not a version at all (400), including
 * "HTTP/1.10": the grammar has exactly one digit on each side. */
static int parse_version(narcache__http_request *req, const char *v, size_t len, const char **why) {
  if (len != 8 || memcmp(v, "HTTP/", 5) != 0 || !is_digit((unsigned char)v[5]) || v[6] != '.' ||
      !is_digit((unsigned char)v[7]))
    return reject(why, 400, "malformed HTTP version");
  if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
    return reject(why, 505, "HTTP version other than 1.0 and 1.1");
  req->minor_version = v[7] - '0';
  return 0;
}

static void split_target(narcache__http_request *req) {
  const char *t = req->target.p;
  const char *q = memchr(t, '?', req->target.len);
  if (q == NULL) {
    req->path = req->target;
    req->query = span_of(t + req->target.len, 0);
    return;
  }
  req->path = span_of(t, (size_t)(q - t));
  req->query = span_of(q + 1, req->target.len - req->path.len - 1);
}

/* method SP request-target SP HTTP-version, single spaces only. */
static int parse_request_line(narcache__http_request *req, narcache__http_span line,
                              const narcache__http_limits *limits, const char **why) {
  const char *p = line.p;
  size_t len = line.len, i = 0;
  if (len == 0)
    return reject(why, 400, "empty request line");
  while (i < len && is_tchar((unsigned char)p[i]))
    i++;
  if (i == 0)
    return reject(why, 400, "request method is not a token");
  if (i == len || p[i] != ' ')
    return reject(why, 400, "request method not followed by a single space");
  req->method_name = span_of(p, i);
  req->method = method_from_name(p, i);

  size_t target_start = ++i;
  while (i < len && p[i] != ' ')
    i++;
  size_t target_len = i - target_start;
  if (target_len == 0)
    return reject(why, 400, "empty request-target (or two spaces)");
  if (target_len > limits->max_target_bytes)
    return reject(why, 414, "request-target longer than the limit");
  int rc = check_target(p + target_start, target_len, why);
  if (rc != 0)
    return rc;
  req->target = span_of(p + target_start, target_len);
  split_target(req);
  if (i == len)
    return reject(why, 400, "request line without HTTP version");
  i++;
  return parse_version(req, p + i, len - i, why);
}

/* ---- head parser: fields --------------------------------------------------------- */

enum known_field {
  FIELD_OTHER,
  FIELD_HOST,
  FIELD_CONTENT_LENGTH,
  FIELD_TRANSFER_ENCODING,
  FIELD_CONNECTION,
  FIELD_EXPECT,
  FIELD_RANGE,
  FIELD_AUTHORIZATION,
  FIELD_IF_NONE_MATCH,
  FIELD_CONTENT_TYPE,
  FIELD_USER_AGENT,
};

static enum known_field field_from_name(narcache__http_span name) {
  static const struct {
    const char *name; /* lowercase */
    enum known_field field;
  } fields[] = {
      {"host", FIELD_HOST},
      {"content-length", FIELD_CONTENT_LENGTH},
      {"transfer-encoding", FIELD_TRANSFER_ENCODING},
      {"connection", FIELD_CONNECTION},
      {"expect", FIELD_EXPECT},
      {"range", FIELD_RANGE},
      {"authorization", FIELD_AUTHORIZATION},
      {"if-none-match", FIELD_IF_NONE_MATCH},
      {"content-type", FIELD_CONTENT_TYPE},
      {"user-agent", FIELD_USER_AGENT},
  };
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (equals_nocase(name.p, name.len, fields[i].name))
      return fields[i].field;
  return FIELD_OTHER;
}

/* What the fields seen so far say, beyond the spans in the request. */
typedef struct field_facts {
  int host_seen;
  int content_length_seen;
  int transfer_encoding_seen;
  int transfer_encoding_is_chunked;
  int connection_close;
  int connection_keep_alive;
  int range_seen, authorization_seen, content_type_seen;
} field_facts;

/* "name: value" with the name a token right against the colon and the
 * value trimmed of OWS (RFC 9112 5). */
static int split_field_line(narcache__http_span line, narcache__http_span *name,
                            narcache__http_span *value, const char **why) {
  const char *p = line.p;
  size_t len = line.len, i = 0;
  if (is_ows((unsigned char)p[0]))
    return reject(why, 400, "obs-fold (field line starting with whitespace)");
  while (i < len && is_tchar((unsigned char)p[i]))
    i++;
  if (i == len)
    return reject(why, 400, "field line without ':'");
  if (p[i] != ':') {
    if (is_ows((unsigned char)p[i]))
      return reject(why, 400, "whitespace between field name and ':'");
    return reject(why, 400, "field name is not a token");
  }
  if (i == 0)
    return reject(why, 400, "empty field name");
  *name = span_of(p, i);
  *value = trim_ows(p + i + 1, len - i - 1);
  for (size_t k = 0; k < value->len; k++)
    if (!is_field_byte((unsigned char)value->p[k]))
      return reject(why, 400, "control byte in field value");
  return 0;
}

/* 1*DIGIT, at most 2^63-1: no sign, no spaces, no "5, 5" lists (RFC 9110
 * 8.6 lets a recipient accept identical lists; being strict costs nothing
 * with real clients and removes one disagreement between parsers). */
static int parse_content_length(const char *p, size_t len, uint64_t *out, const char **why) {
  if (len == 0)
    return reject(why, 400, "empty Content-Length");
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)p[i];
    if (!is_digit(c))
      return reject(why, 400, "Content-Length is not a plain decimal number");
    unsigned d = c - '0';
    if (v > (BODY_SIZE_MAX - d) / 10)
      return reject(why, 400, "Content-Length larger than 2^63-1");
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

/* uri-host [ ":" port ] (RFC 9110 7.2): IP-literal in brackets, or
 * reg-name / IPv4address (unreserved, sub-delims, pct-encoded). An
 * invalid Host must get 400 (RFC 9112 3.2). */
static int is_host_byte(unsigned char c) {
  return is_target_byte(c) && c != '/' && c != '?' && c != ':' && c != '@';
}

static int check_host(narcache__http_span v, const char **why) {
  const char *p = v.p;
  size_t len = v.len, i = 0;
  if (len > 0 && p[0] == '[') {
    for (i = 1; i < len && p[i] != ']'; i++)
      if (!is_host_byte((unsigned char)p[i]) && p[i] != ':')
        return reject(why, 400, "invalid Host");
    if (i == len)
      return reject(why, 400, "invalid Host");
    i++;
  } else {
    for (; i < len && p[i] != ':'; i++) {
      if (p[i] == '%') {
        if (i + 2 >= len || narcache__hex_value((unsigned char)p[i + 1]) < 0 ||
            narcache__hex_value((unsigned char)p[i + 2]) < 0)
          return reject(why, 400, "invalid Host");
        i += 2;
      } else if (!is_host_byte((unsigned char)p[i])) {
        return reject(why, 400, "invalid Host");
      }
    }
  }
  if (i == len)
    return 0;
  if (p[i] != ':')
    return reject(why, 400, "invalid Host");
  for (i++; i < len; i++)
    if (!is_digit((unsigned char)p[i]))
      return reject(why, 400, "invalid Host port");
  return 0;
}

/* Connection = #connection-option: tokens separated by commas with OWS,
 * empty elements ignored (RFC 9110 5.6.1.2). */
static int parse_connection(field_facts *f, narcache__http_span v, const char **why) {
  size_t i = 0;
  while (i <= v.len) {
    size_t start = i;
    while (i < v.len && v.p[i] != ',')
      i++;
    narcache__http_span option = trim_ows(v.p + start, i - start);
    for (size_t k = 0; k < option.len; k++)
      if (!is_tchar((unsigned char)option.p[k]))
        return reject(why, 400, "Connection option is not a token");
    if (equals_nocase(option.p, option.len, "close"))
      f->connection_close = 1;
    else if (equals_nocase(option.p, option.len, "keep-alive"))
      f->connection_keep_alive = 1;
    i++; /* past the comma, or past the end to stop */
  }
  return 0;
}

/* Fill a span field that may be given only once. */
static int set_once(narcache__http_span *dst, int *seen, narcache__http_span v, const char *twice,
                    const char **why) {
  if (*seen)
    return reject(why, 400, twice);
  *seen = 1;
  *dst = v;
  return 0;
}

/* A present field always has p != NULL (it points into the head), even
 * with an empty value. */
static void keep_first(narcache__http_span *dst, narcache__http_span v) {
  if (dst->p == NULL)
    *dst = v;
}

static int apply_field(narcache__http_request *req, field_facts *f, narcache__http_span name,
                       narcache__http_span v, const char **why) {
  switch (field_from_name(name)) {
  case FIELD_HOST:
    if (f->host_seen)
      return reject(why, 400, "two Host headers");
    f->host_seen = 1;
    req->host = v;
    return check_host(v, why);
  case FIELD_CONTENT_LENGTH:
    if (f->content_length_seen)
      return reject(why, 400, "two Content-Length headers");
    f->content_length_seen = 1;
    req->has_content_length = 1;
    return parse_content_length(v.p, v.len, &req->content_length, why);
  case FIELD_TRANSFER_ENCODING:
    /* Judged once all fields are in (see check_framing): a smuggling
     * pattern must be a 400 even when the coding alone would be a 501. */
    if (f->transfer_encoding_seen)
      return reject(why, 400, "two Transfer-Encoding headers");
    f->transfer_encoding_seen = 1;
    f->transfer_encoding_is_chunked = equals_nocase(v.p, v.len, "chunked");
    return 0;
  case FIELD_CONNECTION:
    return parse_connection(f, v, why);
  case FIELD_EXPECT:
    /* 100-continue is ignored in HTTP/1.0 (RFC 9110 10.1.1); other
     * expectations are left for the server (417 if it wants). */
    if (req->minor_version == 1 && equals_nocase(v.p, v.len, "100-continue"))
      req->expect_continue = 1;
    return 0;
  case FIELD_RANGE:
    return set_once(&req->range, &f->range_seen, v, "two Range headers", why);
  case FIELD_AUTHORIZATION:
    return set_once(&req->authorization, &f->authorization_seen, v, "two Authorization headers",
                    why);
  case FIELD_CONTENT_TYPE:
    return set_once(&req->content_type, &f->content_type_seen, v, "two Content-Type headers", why);
  case FIELD_IF_NONE_MATCH:
    /* A list field: a second line could be combined, but only the first is
     * kept. Harmless: ignoring tags can only turn a 304 into a 200. */
    keep_first(&req->if_none_match, v);
    return 0;
  case FIELD_USER_AGENT:
    keep_first(&req->user_agent, v); /* informational only */
    return 0;
  default: /* FIELD_OTHER */
    return 0;
  }
}

/* How the body is delimited (RFC 9112 6.1-6.3), and the version rules. */
static int check_framing(narcache__http_request *req, const field_facts *f, const char **why) {
  if (req->minor_version == 1 && !f->host_seen)
    return reject(why, 400, "missing Host header");
  if (f->transfer_encoding_seen) {
    if (req->minor_version == 0)
      return reject(why, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (f->content_length_seen)
      return reject(why, 400, "both Transfer-Encoding and Content-Length");
    if (!f->transfer_encoding_is_chunked)
      return reject(why, 501, "transfer coding other than exactly \"chunked\"");
    req->chunked = 1;
  }
  if (f->connection_close)
    req->keep_alive = 0;
  else if (f->connection_keep_alive)
    req->keep_alive = 1;
  return 0;
}

int narcache__http_parse_head(narcache__http_request *req, const char *head, size_t len,
                              const narcache__http_limits *limits, const char **why) {
  memset(req, 0, sizeof *req);
  set_why(why, NULL);
  limits = limits_or_default(limits);
  if (len > limits->max_head_bytes)
    return reject(why, 431, "request head larger than the limit");
  size_t pos = 0;
  if (len >= 2 && head[0] == '\r' && head[1] == '\n')
    pos = 2; /* the one tolerated empty line */
  narcache__http_span line;
  int rc = next_line(head, len, &pos, &line, why);
  if (rc == 0)
    rc = parse_request_line(req, line, limits, why);
  if (rc != 0)
    return rc;
  req->keep_alive = req->minor_version == 1; /* before Connection */

  field_facts facts;
  memset(&facts, 0, sizeof facts);
  for (;;) {
    if ((rc = next_line(head, len, &pos, &line, why)) != 0)
      return rc;
    if (line.len == 0)
      break;
    if (++req->n_headers > limits->max_headers)
      return reject(why, 431, "more header fields than the limit");
    narcache__http_span name, value;
    if ((rc = split_field_line(line, &name, &value, why)) != 0)
      return rc;
    if ((rc = apply_field(req, &facts, name, value, why)) != 0)
      return rc;
  }
  if (pos != len)
    return reject(why, 400, "bytes after the end of the request head");
  return check_framing(req, &facts, why);
}

/* ---- chunked body ---------------------------------------------------------------- */

/* The decoder's automaton (RFC 9112 7.1). Zero starts a chunk-size line;
 * negative states are sticky errors (minus one minus an index in
 * chunk_errors[]). */
enum chunk_state {
  CHUNK_SIZE_START = 0, /* first hex digit of a chunk-size */
  CHUNK_SIZE,           /* more hex digits */
  CHUNK_SIZE_BWS,       /* whitespace after the size: only ';' or more may follow */
  CHUNK_EXT,            /* a chunk extension, read loosely up to the CR */
  CHUNK_SIZE_LF,        /* the LF ending the size line */
  CHUNK_DATA,
  CHUNK_DATA_CR, /* the CRLF after the data */
  CHUNK_DATA_LF,
  CHUNK_TRAILER_START, /* start of a trailer field line, or the final CRLF */
  CHUNK_TRAILER_NAME,
  CHUNK_TRAILER_VALUE,
  CHUNK_TRAILER_LF,
  CHUNK_FINAL_LF,
  CHUNK_DONE,
};

enum chunk_error {
  CHUNK_E_NOT_HEX,
  CHUNK_E_SIZE_OVERFLOW,
  CHUNK_E_AFTER_SIZE,
  CHUNK_E_EXT_CONTROL,
  CHUNK_E_LINE_TOO_LONG,
  CHUNK_E_BARE_LF,
  CHUNK_E_BARE_CR,
  CHUNK_E_NO_CRLF_AFTER_DATA,
  CHUNK_E_TRAILER_NAME,
  CHUNK_E_TRAILER_CONTROL,
  CHUNK_E_TRAILER_TOO_LONG,
  CHUNK_E_BAD_INPUT,
};

static const char *const chunk_errors[] = {
    [CHUNK_E_NOT_HEX] = "chunk size is not a hexadecimal number",
    [CHUNK_E_SIZE_OVERFLOW] = "chunk size larger than 2^63-1",
    [CHUNK_E_AFTER_SIZE] = "unexpected byte after chunk size",
    [CHUNK_E_EXT_CONTROL] = "control byte in chunk extension",
    [CHUNK_E_LINE_TOO_LONG] = "chunk size line (with extensions) longer than 4096 bytes",
    [CHUNK_E_BARE_LF] = "bare LF in chunked body",
    [CHUNK_E_BARE_CR] = "bare CR in chunked body",
    [CHUNK_E_NO_CRLF_AFTER_DATA] = "chunk data not followed by CRLF",
    [CHUNK_E_TRAILER_NAME] = "malformed trailer field name",
    [CHUNK_E_TRAILER_CONTROL] = "control byte in trailer field",
    [CHUNK_E_TRAILER_TOO_LONG] = "trailer section longer than 4096 bytes",
    [CHUNK_E_BAD_INPUT] = "chunked decoder called with an inconsistent input buffer",
};

static int chunk_fail(narcache__http_chunked *c, enum chunk_error e, const char **why) {
  c->state = -1 - (int)e;
  set_why(why, chunk_errors[e]);
  return -400;
}

/* What may follow the chunk-size digits: BWS, ';' and an extension, or
 * the CR ending the line. */
static int chunk_after_size(narcache__http_chunked *c, unsigned char b, enum chunk_error *err) {
  if (b == '\r')
    c->state = CHUNK_SIZE_LF;
  else if (b == ';')
    c->state = CHUNK_EXT;
  else if (is_ows(b))
    c->state = CHUNK_SIZE_BWS;
  else {
    *err = b == '\n' ? CHUNK_E_BARE_LF : CHUNK_E_AFTER_SIZE;
    return -1;
  }
  return 0;
}

/* Size line: chunk-size [ BWS ";" ext ] CRLF; at most CHUNK_LINE_MAX
 * bytes before the CRLF, so leading zeros and extensions stay bounded. */
static int chunk_size_step(narcache__http_chunked *c, unsigned char b, enum chunk_error *err) {
  if (c->state == CHUNK_SIZE_LF) {
    if (b != '\n') {
      *err = CHUNK_E_BARE_CR;
      return -1;
    }
    c->line_bytes = 0;
    c->state = c->remaining == 0 ? CHUNK_TRAILER_START : CHUNK_DATA;
    return 0;
  }
  if (b != '\r' && ++c->line_bytes > CHUNK_LINE_MAX) {
    *err = CHUNK_E_LINE_TOO_LONG;
    return -1;
  }
  int h = narcache__hex_value(b);
  switch (c->state) {
  case CHUNK_SIZE_START:
    if (h < 0) {
      *err = b == '\n' ? CHUNK_E_BARE_LF : CHUNK_E_NOT_HEX;
      return -1;
    }
    c->remaining = (uint64_t)h;
    c->state = CHUNK_SIZE;
    return 0;
  case CHUNK_SIZE:
    if (h < 0)
      return chunk_after_size(c, b, err);
    if (c->remaining > (BODY_SIZE_MAX - (uint64_t)h) / 16) {
      *err = CHUNK_E_SIZE_OVERFLOW;
      return -1;
    }
    c->remaining = c->remaining * 16 + (uint64_t)h;
    return 0;
  case CHUNK_SIZE_BWS:
    return chunk_after_size(c, b, err);
  default: /* CHUNK_EXT */
    /* Extensions mean nothing to us: only what could change where the
     * line ends is checked. */
    if (b == '\r')
      c->state = CHUNK_SIZE_LF;
    else if (!is_field_byte(b)) {
      *err = b == '\n' ? CHUNK_E_BARE_LF : CHUNK_E_EXT_CONTROL;
      return -1;
    }
    return 0;
  }
}

/* The CRLF after chunk data: anything else means the size lied. */
static int chunk_data_end_step(narcache__http_chunked *c, unsigned char b, enum chunk_error *err) {
  if (c->state == CHUNK_DATA_CR && b == '\r') {
    c->state = CHUNK_DATA_LF;
    return 0;
  }
  if (c->state == CHUNK_DATA_LF && b == '\n') {
    c->state = CHUNK_SIZE_START;
    return 0;
  }
  *err = CHUNK_E_NO_CRLF_AFTER_DATA;
  return -1;
}

/* Trailer section: field lines, read loosely (a token, ':', field bytes)
 * since they are dropped, then the final CRLF. Returns 1 at the end. */
static int chunk_trailer_step(narcache__http_chunked *c, unsigned char b, enum chunk_error *err) {
  /* Field lines with their CRLFs count, the final CRLF does not. */
  int final_crlf = c->state == CHUNK_FINAL_LF || (c->state == CHUNK_TRAILER_START && b == '\r');
  if (!final_crlf && ++c->trailer_bytes > TRAILER_MAX) {
    *err = CHUNK_E_TRAILER_TOO_LONG;
    return -1;
  }
  switch (c->state) {
  case CHUNK_TRAILER_START:
    if (b == '\r') {
      c->state = CHUNK_FINAL_LF;
      return 0;
    }
    if (!is_tchar(b)) {
      *err = b == '\n' ? CHUNK_E_BARE_LF : CHUNK_E_TRAILER_NAME;
      return -1;
    }
    c->state = CHUNK_TRAILER_NAME;
    return 0;
  case CHUNK_TRAILER_NAME:
    if (b == ':')
      c->state = CHUNK_TRAILER_VALUE;
    else if (!is_tchar(b)) {
      *err = b == '\n' ? CHUNK_E_BARE_LF : CHUNK_E_TRAILER_NAME;
      return -1;
    }
    return 0;
  case CHUNK_TRAILER_VALUE:
    if (b == '\r')
      c->state = CHUNK_TRAILER_LF;
    else if (!is_field_byte(b)) {
      *err = b == '\n' ? CHUNK_E_BARE_LF : CHUNK_E_TRAILER_CONTROL;
      return -1;
    }
    return 0;
  case CHUNK_TRAILER_LF:
    if (b != '\n') {
      *err = CHUNK_E_BARE_CR;
      return -1;
    }
    c->state = CHUNK_TRAILER_START;
    return 0;
  default: /* CHUNK_FINAL_LF */
    if (b != '\n') {
      *err = CHUNK_E_BARE_CR;
      return -1;
    }
    c->state = CHUNK_DONE;
    return 1;
  }
}

/* One framing byte in whatever state is current. */
static int chunk_step(narcache__http_chunked *c, unsigned char b, enum chunk_error *err) {
  switch (c->state) {
  case CHUNK_SIZE_START:
  case CHUNK_SIZE:
  case CHUNK_SIZE_BWS:
  case CHUNK_EXT:
  case CHUNK_SIZE_LF:
    return chunk_size_step(c, b, err);
  case CHUNK_DATA_CR:
  case CHUNK_DATA_LF:
    return chunk_data_end_step(c, b, err);
  default:
    return chunk_trailer_step(c, b, err);
  }
}

int narcache__http_chunked_next(narcache__http_chunked *c, narcache_inbuf *in, const char **data,
                                size_t *data_len, const char **why) {
  const char *no_data = NULL;
  size_t no_len = 0;
  if (data == NULL)
    data = &no_data;
  if (data_len == NULL)
    data_len = &no_len;
  *data = NULL;
  *data_len = 0;
  set_why(why, NULL);
  if (c->state < 0) {
    set_why(why, chunk_errors[-1 - c->state]);
    return -400;
  }
  if (c->state == CHUNK_DONE)
    return 1;
  if (in == NULL || in->pos > in->size || (in->data == NULL && in->size != 0))
    return chunk_fail(c, CHUNK_E_BAD_INPUT, why);

  const unsigned char *p = in->data;
  while (in->pos < in->size) {
    if (c->state == CHUNK_DATA) {
      size_t avail = in->size - in->pos;
      size_t n = c->remaining < avail ? (size_t)c->remaining : avail;
      *data = (const char *)p + in->pos;
      *data_len = n;
      in->pos += n;
      c->remaining -= n;
      if (c->remaining == 0)
        c->state = CHUNK_DATA_CR;
      return 0; /* one span per call: the caller consumes it first */
    }
    enum chunk_error err = CHUNK_E_BAD_INPUT;
    int r = chunk_step(c, p[in->pos], &err);
    in->pos++;
    if (r < 0)
      return chunk_fail(c, err, why);
    if (r > 0)
      return 1;
  }
  return 0;
}

/* ---- Range ------------------------------------------------------------------------ */

/* 1*DIGIT at p[*i], saturating at UINT64_MAX (a huge position is still a
 * valid one, just past any object). Returns the number of digits. */
static size_t parse_position(const char *p, size_t len, size_t *i, uint64_t *out) {
  size_t start = *i;
  uint64_t v = 0;
  for (; *i < len && is_digit((unsigned char)p[*i]); (*i)++) {
    unsigned d = (unsigned char)p[*i] - '0';
    v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
  }
  *out = v;
  return *i - start;
}

int narcache__http_parse_range(const char *value, size_t len, uint64_t size, uint64_t *first,
                               uint64_t *last) {
  if (value == NULL || first == NULL || last == NULL)
    return 0;
  narcache__http_span v = trim_ows(value, len);
  const char *eq = memchr(v.p, '=', v.len);
  /* Range units are case-insensitive (RFC 9110 14.1). */
  if (eq == NULL || !equals_nocase(v.p, (size_t)(eq - v.p), "bytes"))
    return 0;
  narcache__http_span set = trim_ows(eq + 1, v.len - (size_t)(eq - v.p) - 1);
  if (set.len == 0 || memchr(set.p, ',', set.len) != NULL)
    return 0; /* several ranges (or a list with empty elements): whole object */

  size_t i = 0;
  uint64_t a = 0, b = 0;
  int suffix = set.p[0] == '-';
  size_t a_digits = suffix ? 0 : parse_position(set.p, set.len, &i, &a);
  if ((!suffix && a_digits == 0) || i == set.len || set.p[i] != '-')
    return 0;
  i++;
  size_t b_digits = parse_position(set.p, set.len, &i, &b);
  if (i != set.len || (suffix && b_digits == 0))
    return 0;
  if (!suffix && b_digits > 0 && a > b)
    return 0; /* invalid range-spec: ignored (RFC 9110 14.1.1) */

  if (size == 0)
    return -416; /* nothing in an empty representation can be selected */
  if (suffix) {
    if (b == 0)
      return -416;
    *first = b >= size ? 0 : size - b;
    *last = size - 1;
    return 1;
  }
  if (a >= size)
    return -416;
  *first = a;
  *last = b_digits == 0 || b >= size ? size - 1 : b;
  return 1;
}
