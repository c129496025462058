/* The strict HTTP/1.1 request parser (libnarcache/http_internal.h): head
 * scanner and parser, chunked decoder, Range. The symbols are internal, so
 * this test links the static library.
 *
 * Every head in the table is fed to the scanner whole, split in two at
 * every byte boundary and one byte at a time; every prefix is an
 * exact-size heap copy, so ASan sees any look past what has "arrived".
 * The answers must be identical. Chunked bodies get the same treatment,
 * each piece in its own buffer (the decoder keeps no pointer across
 * calls). */
#include "http_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it needs */

static const narcache__http_limits limits = {
    .max_head_bytes = 4096,
    .max_target_bytes = 256,
    .max_headers = 16,
};

/* Tight limits for the 414/431 boundaries. */
static const narcache__http_limits tiny = {
    .max_head_bytes = 128,
    .max_target_bytes = 32,
    .max_headers = 3,
};

/* ---- helpers -------------------------------------------------------------------- */

static char *copy_exact(const char *p, size_t len) {
  char *c = malloc(len ? len : 1);
  assert_non_null(c);
  if (len)
    memcpy(c, p, len);
  return c;
}

/* Offset of the first CRLFCRLF's end, or 0. */
static size_t head_end(const char *raw, size_t len) {
  for (size_t i = 0; i + 4 <= len; i++)
    if (memcmp(raw + i, "\r\n\r\n", 4) == 0)
      return i + 4;
  return 0;
}

typedef struct scan_result {
  long rc;
  const char *why;
  size_t scanned;
} scan_result;

/* Feed raw[0..len) to a fresh scanner: first `first` bytes, then `step`
 * more at a time, each call on an exact-size copy of everything so far,
 * until it answers. */
static scan_result scan_fed(const char *raw, size_t len, const narcache__http_limits *l,
                            size_t first, size_t step) {
  narcache__http_head_scanner s;
  memset(&s, 0, sizeof s);
  scan_result r = {0, NULL, 0};
  size_t have = first < len ? first : len;
  for (;;) {
    char *buf = copy_exact(raw, have);
    r.rc = narcache__http_head_scan(&s, buf, have, l, &r.why);
    free(buf);
    assert_true(s.scanned <= have);
    if (r.rc != 0 || have == len)
      break;
    have = len - have < step ? len : have + step;
  }
  r.scanned = s.scanned;
  return r;
}

/* Failures name the table row. */
static void expect_span(size_t row, narcache__http_span s, const char *want, const char *field) {
  if (want == NULL) {
    if (s.p != NULL || s.len != 0)
      fail_msg("row %zu: %s: expected absent, got \"%.*s\"", row, field, (int)s.len, s.p);
    return;
  }
  if (s.p == NULL || s.len != strlen(want) || memcmp(s.p, want, s.len) != 0)
    fail_msg("row %zu: %s: expected \"%s\", got \"%.*s\"%s", row, field, want, (int)s.len,
             s.p ? s.p : "", s.p ? "" : " (absent)");
}

#define EXPECT_EQ(row, got, want)                                                                  \
  do {                                                                                             \
    if ((uintmax_t)(got) != (uintmax_t)(want))                                                     \
      fail_msg("row %zu: %s is %ju, expected %ju", (size_t)(row), #got, (uintmax_t)(got),          \
               (uintmax_t)(want));                                                                 \
  } while (0)

/* ---- the head table ---------------------------------------------------------------- */

typedef struct head_case {
  const char *raw;
  size_t raw_len; /* 0: strlen(raw) */
  int status;     /* 0 accepted; else the status answered (scanner or parser) */
  const char *why;
  const narcache__http_limits *limits; /* NULL: `limits` */
  /* For accepted heads. content_length: NULL when absent. Span fields:
   * NULL when absent. */
  int method;
  const char *method_name, *path, *query;
  int minor, keep_alive;
  const char *content_length;
  int chunked, expect_continue;
  const char *host, *range, *authorization, *if_none_match, *content_type, *user_agent;
  size_t n_headers;
} head_case;

#define NIX_UA "curl/7.85.0 Nix/2.8.0"
#define H11 " HTTP/1.1\r\nHost: h\r\n"

static const head_case head_cases[] = {
    /* ---- accepted ---- */
    {.raw = "GET /nix-cache-info HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nUser-Agent: " NIX_UA
            "\r\nAccept: */*\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/nix-cache-info",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "127.0.0.1:5000",
     .user_agent = NIX_UA,
     .n_headers = 3},
    {.raw = "HEAD /0wz9g3bqkm36q065ilrgx921761k3yi3.narinfo HTTP/1.1\r\nHost: cache\r\n"
            "Connection: close\r\n\r\n",
     .method = NARCACHE__HTTP_HEAD,
     .method_name = "HEAD",
     .path = "/0wz9g3bqkm36q065ilrgx921761k3yi3.narinfo",
     .query = "",
     .minor = 1,
     .keep_alive = 0,
     .host = "cache",
     .n_headers = 2},
    {.raw = "GET /nar/x.nar.xz?foo=bar&x=%2F;y:@!$'()*+,= HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/nar/x.nar.xz",
     .query = "foo=bar&x=%2F;y:@!$'()*+,=",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .n_headers = 1},
    {.raw = "GET /a%2fb?x?y/z HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/a%2fb",
     .query = "x?y/z",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .n_headers = 1},
    {.raw = "GET /? HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .n_headers = 1},
    {.raw = "PUT /nar/abc.nar.xz HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n"
            "Expect: 100-continue\r\nContent-Type: application/x-nix-nar\r\n"
            "Authorization: Bearer s3cr3t\r\n\r\nhello world",
     .method = NARCACHE__HTTP_PUT,
     .method_name = "PUT",
     .path = "/nar/abc.nar.xz",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .content_length = "11",
     .expect_continue = 1,
     .host = "h",
     .content_type = "application/x-nix-nar",
     .authorization = "Bearer s3cr3t",
     .n_headers = 5},
    {.raw = "PUT /x.narinfo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n",
     .method = NARCACHE__HTTP_PUT,
     .method_name = "PUT",
     .path = "/x.narinfo",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .chunked = 1,
     .host = "h",
     .n_headers = 2},
    {.raw = "PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  CHUNKED \t\r\n\r\n",
     .method = NARCACHE__HTTP_PUT,
     .method_name = "PUT",
     .path = "/x",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .chunked = 1,
     .host = "h",
     .n_headers = 2},
    {.raw = "GET /nar/a.nar HTTP/1.1\r\nHost: h\r\nRange: bytes=0-99\r\n"
            "If-None-Match: \"abc\", W/\"def\"\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/nar/a.nar",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .range = "bytes=0-99",
     .if_none_match = "\"abc\", W/\"def\"",
     .n_headers = 3},
    {.raw = "GET / HTTP/1.0\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 0,
     .keep_alive = 0},
    {.raw = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nExpect: 100-continue\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 0,
     .keep_alive = 1,
     .n_headers = 2},
    {.raw = "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 0,
     .keep_alive = 0,
     .n_headers = 1},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nConnection: ,, Upgrade ,\t,\r\nConnection: te\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .n_headers = 3},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nconnection: CLOSE\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 0,
     .host = "h",
     .n_headers = 3},
    /* one leading empty line is tolerated */
    {.raw = "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .n_headers = 1},
    /* names are case-insensitive; values trimmed of OWS only */
    {.raw = "GET / HTTP/1.1\r\nHOST: \t example.org \t\r\ncontent-LENGTH: 007\r\n"
            "user-agent: a\tb  c\r\nX-Obs: caf\xc3\xa9\r\nX-Empty:\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .content_length = "7",
     .host = "example.org",
     .user_agent = "a\tb  c",
     .n_headers = 5},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n",
     .method = NARCACHE__HTTP_PUT,
     .method_name = "PUT",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .content_length = "9223372036854775807",
     .host = "h",
     .n_headers = 2},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nExpect: 201-whatever\r\n\r\n",
     .method = NARCACHE__HTTP_PUT,
     .method_name = "PUT",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .content_length = "0",
     .host = "h",
     .n_headers = 3},
    {.raw = "PATCH /x HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = NARCACHE__HTTP_OTHER,
     .method_name = "PATCH",
     .path = "/x",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .n_headers = 1},
    {.raw = "get /x HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = NARCACHE__HTTP_OTHER,
     .method_name = "get",
     .path = "/x",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .n_headers = 1},
    {.raw = "DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = NARCACHE__HTTP_DELETE,
     .method_name = "DELETE",
     .path = "/x",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .n_headers = 1},
    {.raw = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
     .method = NARCACHE__HTTP_POST,
     .method_name = "POST",
     .path = "/x",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .content_length = "0",
     .host = "h",
     .n_headers = 2},
    {.raw = "OPTIONS /x HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = NARCACHE__HTTP_OPTIONS,
     .method_name = "OPTIONS",
     .path = "/x",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .n_headers = 1},
    /* Host: empty is valid grammar; IPv6 literal with port; pct-encoded */
    {.raw = "GET / HTTP/1.1\r\nHost:\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "",
     .n_headers = 1},
    {.raw = "GET / HTTP/1.1\r\nHost: [::1]:5000\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "[::1]:5000",
     .n_headers = 1},
    {.raw = "GET / HTTP/1.1\r\nHost: my%2dcache.example:\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "my%2dcache.example:",
     .n_headers = 1},
    /* If-None-Match and User-Agent: the first is kept */
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"a\"\r\nUser-Agent: one\r\n"
            "If-None-Match: \"b\"\r\nUser-Agent: two\r\n\r\n",
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .if_none_match = "\"a\"",
     .user_agent = "one",
     .n_headers = 5},
    /* exactly max_headers (3 with `tiny`) */
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n",
     .limits = &tiny,
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .n_headers = 3},
    /* a target of exactly max_target_bytes (32 with `tiny`) */
    {.raw = "GET /1234567890123456789012345678901 HTTP/1.1\r\nHost: h\r\n\r\n",
     .limits = &tiny,
     .method = NARCACHE__HTTP_GET,
     .method_name = "GET",
     .path = "/1234567890123456789012345678901",
     .query = "",
     .minor = 1,
     .keep_alive = 1,
     .host = "h",
     .n_headers = 1},

    /* ---- the scanner refuses ---- */
    {.raw = "GET / HTTP/1.1\nHost: h\r\n\r\n", .status = 400, .why = "bare LF in request head"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\n\r\n", .status = 400, .why = "bare LF in request head"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\n\n", .status = 400, .why = "bare LF in request head"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\n\n\r\n", .status = 400, .why = "bare LF in request head"},
    {.raw = "\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", .status = 400, .why = "bare LF in request head"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n",
     .status = 400,
     .why = "bare CR in request head"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\n\r\r\n", .status = 400, .why = "bare CR in request head"},
    {.raw = "GET / HTTP/1.1\r\r\nHost: h\r\n\r\n", .status = 400, .why = "bare CR in request head"},
    {.raw = "\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", .status = 400, .why = "bare CR in request head"},
    {.raw = "\r\n\rGET / HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "bare CR in request head"},
    {.raw = "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n",
     .raw_len = 27,
     .status = 400,
     .why = "NUL byte in request head"},
    {.raw = "GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n",
     .raw_len = 28,
     .status = 400,
     .why = "NUL byte in request head"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nX: \x01\r\n\r\n",
     .status = 400,
     .why = "control byte in request head"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n",
     .status = 400,
     .why = "control byte in request head"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nX\x1b: a\r\n\r\n",
     .status = 400,
     .why = "control byte in request head"},
    {.raw = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "more than one empty line before the request line"},
    /* request line of max_target + 32 + 1 bytes (with `tiny`: 65) */
    {.raw = "GET /12345678901234567890123456789012345678901234567890123 HTTP/1.1\r\n"
            "Host: h\r\n\r\n",
     .limits = &tiny,
     .status = 414,
     .why = "request line longer than the target limit allows"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nX: 12345678901234567890123456789012345678901234567890"
            "1234567890123456789012345678901234567890123456789012345678901234567890\r\n\r\n",
     .limits = &tiny,
     .status = 431,
     .why = "request head larger than the limit"},
    /* the first error in the byte stream wins */
    {.raw = "GET / HTTP/1.1\r\nHost: \x01h\n\r\n",
     .status = 400,
     .why = "control byte in request head"},

    /* ---- the request line ---- */
    {.raw = "GET /123456789012345678901234567890123 HTTP/1.1\r\nHost: h\r\n\r\n",
     .limits = &tiny,
     .status = 414,
     .why = "request-target longer than the limit"},
    {.raw = "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
     .status = 505,
     .why = "HTTP version other than 1.0 and 1.1"},
    {.raw = "GET / HTTP/1.2\r\nHost: h\r\n\r\n",
     .status = 505,
     .why = "HTTP version other than 1.0 and 1.1"},
    {.raw = "GET / HTTP/0.9\r\n\r\n", .status = 505, .why = "HTTP version other than 1.0 and 1.1"},
    /* HTTP/1.10 is not the grammar's DIGIT "." DIGIT: malformed, not unsupported */
    {.raw = "GET / HTTP/1.10\r\nHost: h\r\n\r\n", .status = 400, .why = "malformed HTTP version"},
    {.raw = "GET / http/1.1\r\nHost: h\r\n\r\n", .status = 400, .why = "malformed HTTP version"},
    {.raw = "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", .status = 400, .why = "malformed HTTP version"},
    {.raw = "GET / HTTP/1\r\nHost: h\r\n\r\n", .status = 400, .why = "malformed HTTP version"},
    {.raw = "GET /  HTTP/1.1\r\nHost: h\r\n\r\n", .status = 400, .why = "malformed HTTP version"},
    {.raw = "GET /\r\nHost: h\r\n\r\n", .status = 400, .why = "request line without HTTP version"},
    {.raw = "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "empty request-target (or two spaces)"},
    {.raw = "GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "request method not followed by a single space"},
    {.raw = " GET / HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "request method is not a token"},
    {.raw = "G(ET / HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "request method not followed by a single space"},
    {.raw = "\r\n \r\nHost: h\r\n\r\n", .status = 400, .why = "request method is not a token"},
    {.raw = "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
     .status = 400,
     .why = "absolute-form request-target"},
    {.raw = "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "asterisk-form request-target"},
    {.raw = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
     .status = 400,
     .why = "request-target not in origin-form"},
    {.raw = "GET /x#frag HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "fragment ('#') in request-target"},
    {.raw = "GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "'%' in request-target not followed by two hex digits"},
    {.raw = "GET /%4 HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "'%' in request-target not followed by two hex digits"},
    {.raw = "GET /<script> HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "invalid byte in request-target"},
    {.raw = "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "invalid byte in request-target"},
    {.raw = "GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "invalid byte in request-target"},
    {.raw = "GET /a\\b HTTP/1.1\r\nHost: h\r\n\r\n",
     .status = 400,
     .why = "invalid byte in request-target"},

    /* ---- field lines ---- */
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
     .status = 400,
     .why = "obs-fold (field line starting with whitespace)"},
    {.raw = "GET / HTTP/1.1\r\n\tHost: h\r\n\r\n",
     .status = 400,
     .why = "obs-fold (field line starting with whitespace)"},
    {.raw = "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
     .status = 400,
     .why = "whitespace between field name and ':'"},
    {.raw = "GET / HTTP/1.1\r\nHost\t: h\r\n\r\n",
     .status = 400,
     .why = "whitespace between field name and ':'"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\nhello",
     .status = 400,
     .why = "whitespace between field name and ':'"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
     .status = 400,
     .why = "field line without ':'"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", .status = 400, .why = "empty field name"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nX(y): v\r\n\r\n",
     .status = 400,
     .why = "field name is not a token"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: v\r\n\r\n",
     .status = 400,
     .why = "field name is not a token"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
     .limits = &tiny,
     .status = 431,
     .why = "more header fields than the limit"},

    /* ---- Host ---- */
    {.raw = "GET / HTTP/1.1\r\n\r\n", .status = 400, .why = "missing Host header"},
    {.raw = "GET / HTTP/1.1\r\nX-Host: h\r\n\r\n", .status = 400, .why = "missing Host header"},
    {.raw = "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
     .status = 400,
     .why = "two Host headers"},
    {.raw = "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
     .status = 400,
     .why = "two Host headers"},
    {.raw = "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", .status = 400, .why = "invalid Host"},
    {.raw = "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", .status = 400, .why = "invalid Host"},
    {.raw = "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", .status = 400, .why = "invalid Host"},
    {.raw = "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", .status = 400, .why = "invalid Host"},
    {.raw = "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", .status = 400, .why = "invalid Host"},
    {.raw = "GET / HTTP/1.1\r\nHost: [::1/]\r\n\r\n", .status = 400, .why = "invalid Host"},
    {.raw = "GET / HTTP/1.1\r\nHost: a%2\r\n\r\n", .status = 400, .why = "invalid Host"},
    {.raw = "GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", .status = 400, .why = "invalid Host port"},
    {.raw = "GET / HTTP/1.1\r\nHost: a:80:80\r\n\r\n", .status = 400, .why = "invalid Host port"},

    /* ---- smuggling: Content-Length ---- */
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
     .status = 400,
     .why = "two Content-Length headers"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello",
     .status = 400,
     .why = "Content-Length is not a plain decimal number"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello",
     .status = 400,
     .why = "Content-Length is not a plain decimal number"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\nhello",
     .status = 400,
     .why = "Content-Length is not a plain decimal number"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 5\r\n\r\nhello",
     .status = 400,
     .why = "Content-Length is not a plain decimal number"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\nhello",
     .status = 400,
     .why = "Content-Length is not a plain decimal number"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\xc2\xa0\r\n\r\nhello",
     .status = 400,
     .why = "Content-Length is not a plain decimal number"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n",
     .status = 400,
     .why = "empty Content-Length"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n",
     .status = 400,
     .why = "Content-Length larger than 2^63-1"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
     .status = 400,
     .why = "Content-Length larger than 2^63-1"},

    /* ---- smuggling: Transfer-Encoding ---- */
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
     .status = 400,
     .why = "both Transfer-Encoding and Content-Length"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
     .status = 400,
     .why = "both Transfer-Encoding and Content-Length"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n",
     .status = 400,
     .why = "both Transfer-Encoding and Content-Length"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
     .status = 501,
     .why = "transfer coding other than exactly \"chunked\""},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
     .status = 501,
     .why = "transfer coding other than exactly \"chunked\""},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
     .status = 501,
     .why = "transfer coding other than exactly \"chunked\""},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,\r\n\r\n",
     .status = 501,
     .why = "transfer coding other than exactly \"chunked\""},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
     .status = 501,
     .why = "transfer coding other than exactly \"chunked\""},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n",
     .status = 501,
     .why = "transfer coding other than exactly \"chunked\""},
    {.raw = "PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
     .status = 400,
     .why = "Transfer-Encoding in an HTTP/1.0 request"},
    {.raw = "PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
     .status = 400,
     .why = "Transfer-Encoding in an HTTP/1.0 request"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            "Transfer-Encoding: chunked\r\n\r\n",
     .status = 400,
     .why = "two Transfer-Encoding headers"},

    /* ---- other fields given twice ---- */
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n",
     .status = 400,
     .why = "two Range headers"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nAuthorization: a\r\n\r\n",
     .status = 400,
     .why = "two Authorization headers"},
    {.raw = "PUT / HTTP/1.1\r\nHost: h\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n",
     .status = 400,
     .why = "two Content-Type headers"},
    {.raw = "GET / HTTP/1.1\r\nHost: h\r\nConnection: close;x\r\n\r\n",
     .status = 400,
     .why = "Connection option is not a token"},
};

/* What a head case gives, fed whole. */
typedef struct head_outcome {
  scan_result scan;
  int status;
  const char *why;
  narcache__http_request req;
} head_outcome;

static head_outcome run_head(const char *raw, size_t len, const narcache__http_limits *l) {
  head_outcome o;
  memset(&o, 0, sizeof o);
  o.scan = scan_fed(raw, len, l, len, len);
  if (o.scan.rc < 0) {
    o.status = (int)-o.scan.rc;
    o.why = o.scan.why;
  } else if (o.scan.rc > 0) {
    o.status = narcache__http_parse_head(&o.req, raw, (size_t)o.scan.rc, l, &o.why);
  }
  return o;
}

static void check_accepted_fields(const head_case *c, const narcache__http_request *r, size_t row) {
  EXPECT_EQ(row, r->method, c->method);
  expect_span(row, r->method_name, c->method_name, "method_name");
  expect_span(row, r->path, c->path, "path");
  expect_span(row, r->query, c->query, "query");
  /* target = path [ "?" query ] */
  EXPECT_EQ(row, r->path.p == r->target.p, 1);
  EXPECT_EQ(row,
            r->target.len == r->path.len || (r->target.len == r->path.len + 1 + r->query.len &&
                                             r->query.p == r->path.p + r->path.len + 1),
            1);
  EXPECT_EQ(row, r->minor_version, c->minor);
  EXPECT_EQ(row, r->keep_alive, c->keep_alive);
  EXPECT_EQ(row, r->has_content_length, c->content_length != NULL);
  EXPECT_EQ(row, r->content_length,
            c->content_length != NULL ? strtoull(c->content_length, NULL, 10) : 0);
  EXPECT_EQ(row, r->chunked, c->chunked);
  EXPECT_EQ(row, r->expect_continue, c->expect_continue);
  expect_span(row, r->host, c->host, "host");
  expect_span(row, r->range, c->range, "range");
  expect_span(row, r->authorization, c->authorization, "authorization");
  expect_span(row, r->if_none_match, c->if_none_match, "if_none_match");
  expect_span(row, r->content_type, c->content_type, "content_type");
  expect_span(row, r->user_agent, c->user_agent, "user_agent");
  EXPECT_EQ(row, r->n_headers, c->n_headers);
}

static void check_head_case(const head_case *c, size_t index) {
  size_t len = c->raw_len ? c->raw_len : strlen(c->raw);
  const narcache__http_limits *l = c->limits ? c->limits : &limits;
  head_outcome o = run_head(c->raw, len, l);
  if (o.status != c->status || (c->why != NULL && (o.why == NULL || strcmp(o.why, c->why) != 0)))
    fail_msg("head case %zu (%.40s...): expected %d \"%s\", got %d \"%s\"", index, c->raw,
             c->status, c->why ? c->why : "", o.status, o.why ? o.why : "(none)");
  if (c->status == 0)
    assert_null(o.why);
  else
    assert_non_null(o.why);
  if (o.scan.rc > 0) /* the scanner stops right after the head, never later */
    assert_int_equal((size_t)o.scan.rc, head_end(c->raw, len));
  if (c->status == 0)
    check_accepted_fields(c, &o.req, index);

  /* The same answer from the scanner however the bytes arrive. */
  for (size_t cut = 0; cut <= len; cut++) {
    scan_result split = scan_fed(c->raw, len, l, cut, len);
    assert_int_equal(split.rc, o.scan.rc);
    assert_ptr_equal(split.why, o.scan.why);
    assert_int_equal(split.scanned, o.scan.scanned);
  }
  scan_result bytewise = scan_fed(c->raw, len, l, 0, 1);
  assert_int_equal(bytewise.rc, o.scan.rc);
  assert_ptr_equal(bytewise.why, o.scan.why);
  assert_int_equal(bytewise.scanned, o.scan.scanned);
}

static void test_head_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof head_cases / sizeof head_cases[0]; i++)
    check_head_case(&head_cases[i], i);
  print_message("%zu head cases, each whole, split at every byte and byte by byte\n",
                sizeof head_cases / sizeof head_cases[0]);
}

/* ---- generated heads: limits at their exact boundaries ------------------------------ */

static char *repeat(char *dst, char c, size_t n) {
  memset(dst, c, n);
  return dst + n;
}

/* The scanner allows the request line max_target_bytes + 32 bytes. */
static void test_request_line_limit(void **state) {
  (void)state;
  const narcache__http_limits l = {
      .max_head_bytes = 1 << 16, .max_target_bytes = 100, .max_headers = 10};
  char raw[512];
  for (size_t line_len = 110; line_len <= 140; line_len++) {
    /* "GET /xxx HTTP/1.1" with the target padded to make line_len */
    char *p = raw;
    memcpy(p, "GET /", 5);
    p = repeat(p + 5, 'x', line_len - 5 - 9);
    memcpy(p, " HTTP/1.1\r\nHost: h\r\n\r\n", 22);
    size_t len = (size_t)(p + 22 - raw);
    head_outcome o = run_head(raw, len, &l);
    if (line_len > 132) {
      assert_int_equal(o.scan.rc, -414);
      assert_string_equal(o.why, "request line longer than the target limit allows");
      assert_int_equal(o.scan.scanned, 133); /* the first byte too many */
    } else {
      /* the scanner lets it through, the parser counts the target */
      assert_true(o.scan.rc > 0);
      size_t target_len = line_len - 13;
      assert_int_equal(o.status, target_len > 100 ? 414 : 0);
    }
    /* the error comes without waiting for the rest of the line */
    if (line_len > 132)
      assert_int_equal(scan_fed(raw, 133, &l, 0, 1).rc, -414);
  }
}

/* A head of exactly max_head_bytes is accepted; one byte more is 431, as
 * soon as that many bytes are in without the end. */
static void test_head_size_limit(void **state) {
  (void)state;
  char raw[300];
  for (size_t max = 40; max <= 256; max += 7) {
    const narcache__http_limits l = {
        .max_head_bytes = max, .max_target_bytes = 100, .max_headers = 10};
    /* GET / HTTP/1.1\r\nHost: h\r\nX: <pad>\r\n\r\n, total max bytes */
    static const char start[] = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
    size_t fixed = sizeof start - 1 + 4;
    if (max < fixed)
      continue;
    memcpy(raw, start, sizeof start - 1);
    char *p = repeat(raw + sizeof start - 1, 'v', max - fixed);
    memcpy(p, "\r\n\r\n", 4);
    head_outcome o = run_head(raw, max, &l);
    assert_int_equal(o.scan.rc, (long)max);
    assert_int_equal(o.status, 0);

    /* one more byte of value */
    memcpy(raw, start, sizeof start - 1);
    p = repeat(raw + sizeof start - 1, 'v', max - fixed + 1);
    memcpy(p, "\r\n\r\n", 4);
    o = run_head(raw, max + 1, &l);
    assert_int_equal(o.scan.rc, -431);
    assert_int_equal(o.scan.scanned, max);
    /* no need to wait for the byte past the limit */
    scan_result r = scan_fed(raw, max, &l, 0, 1);
    assert_int_equal(r.rc, -431);
    /* the parser alone refuses it too */
    narcache__http_request req;
    const char *why = NULL;
    assert_int_equal(narcache__http_parse_head(&req, raw, max + 1, &l, &why), 431);
  }
}

static void test_too_many_headers(void **state) {
  (void)state;
  char raw[2048];
  for (size_t n = 1; n <= 20; n++) {
    size_t len = (size_t)snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (size_t i = 1; i < n; i++)
      len += (size_t)snprintf(raw + len, sizeof raw - len, "X-%zu: %zu\r\n", i, i);
    len += (size_t)snprintf(raw + len, sizeof raw - len, "\r\n");
    head_outcome o = run_head(raw, len, &limits);
    if (n <= limits.max_headers) {
      assert_int_equal(o.status, 0);
      assert_int_equal(o.req.n_headers, n);
    } else {
      assert_int_equal(o.status, 431);
      assert_string_equal(o.why, "more header fields than the limit");
    }
  }
}

/* ---- scanner state ------------------------------------------------------------------ */

static void test_scanner_sticky(void **state) {
  (void)state;
  static const char ok[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /next";
  narcache__http_head_scanner s;
  memset(&s, 0, sizeof s);
  const char *why = "x";
  long rc = narcache__http_head_scan(&s, ok, sizeof ok - 1, &limits, &why);
  assert_int_equal(rc, 27);
  assert_null(why);
  assert_int_equal(s.scanned, 27); /* nothing past the head looked at */
  /* asked again: the same answer, nothing re-examined */
  assert_int_equal(narcache__http_head_scan(&s, ok, sizeof ok - 1, &limits, &why), 27);

  static const char bad[] = "GET / HTTP/1.1\nHost: h\r\n\r\n";
  memset(&s, 0, sizeof s);
  assert_int_equal(narcache__http_head_scan(&s, bad, sizeof bad - 1, &limits, &why), -400);
  assert_string_equal(why, "bare LF in request head");
  why = NULL;
  assert_int_equal(narcache__http_head_scan(&s, bad, sizeof bad - 1, &limits, &why), -400);
  assert_string_equal(why, "bare LF in request head");

  /* no bytes yet; NULL `why` and NULL limits (the defaults) are fine */
  memset(&s, 0, sizeof s);
  assert_int_equal(narcache__http_head_scan(&s, ok, 0, NULL, NULL), 0);
  assert_int_equal(narcache__http_head_scan(&s, ok, sizeof ok - 1, NULL, NULL), 27);
}

/* The parser does not rely on the scanner: it checks line ends itself. */
static void test_parse_alone(void **state) {
  (void)state;
  static const struct {
    const char *raw;
    int status;
    const char *why;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: h\r\n\r\nX", 400, "bytes after the end of the request head"},
      {"GET / HTTP/1.1\r\nHost: h\r\n", 400, "request head does not end with an empty line"},
      {"GET / HTTP/1.1\r\nHost: h", 400, "request head does not end with an empty line"},
      {"", 400, "request head does not end with an empty line"},
      {"GET / HTTP/1.1\nHost: h\r\n\r\n", 400, "bare LF in request head"},
      {"GET / HTTP/1.1\r\nHost: h\r\r\n\r\n", 400, "bare CR in request head"},
      {"GET / HTTP/1.1\r\nHost: h\r", 400, "bare CR in request head"},
      {"GET / HTTP/1.1\r\nX: \x01\r\nHost: h\r\n\r\n", 400, "control byte in field value"},
      {"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "empty request line"},
      {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 0, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    narcache__http_request req;
    const char *why = NULL;
    size_t len = strlen(cases[i].raw);
    char *buf = copy_exact(cases[i].raw, len);
    int rc = narcache__http_parse_head(&req, buf, len, &limits, &why);
    free(buf);
    if (rc != cases[i].status)
      fail_msg("parse case %zu: expected %d, got %d (%s)", i, cases[i].status, rc, why ? why : "");
    if (cases[i].why)
      assert_string_equal(why, cases[i].why);
  }
}

/* ---- chunked bodies ----------------------------------------------------------------- */

typedef struct chunk_case {
  const char *raw;
  int result;       /* 1 complete, 0 incomplete, -400 refused */
  const char *body; /* decoded body when complete */
  const char *why;
  size_t consumed; /* where a complete body ends; 0: at the end of raw */
  size_t raw_len;  /* 0: strlen(raw) */
} chunk_case;

static const chunk_case chunk_cases[] = {
    {.raw = "0\r\n\r\n", .result = 1, .body = ""},
    {.raw = "5\r\nhello\r\n0\r\n\r\n", .result = 1, .body = "hello"},
    {.raw = "5;name=value\r\nhello\r\n6 ; a ; b=\"q;uoted\"\r\n world\r\n0\r\n\r\n",
     .result = 1,
     .body = "hello world"},
    {.raw = "A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n",
     .result = 1,
     .body = "0123456789abcdefghij"},
    {.raw = "0005\r\nhello\r\n0000\r\n\r\n", .result = 1, .body = "hello"},
    {.raw = "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nY:\r\n\r\n", .result = 1, .body = "hello"},
    {.raw = "1\r\n\r\r\n1\r\n\n\r\n0;last\r\nT: a\tb\xc3\xa9\r\n\r\n", .result = 1, .body = "\r\n"},
    {.raw = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", .result = 1, .body = "abc", .consumed = 13},
    {.raw = "5\r\nhel", .result = 0},
    {.raw = "5\r\nhello\r\n0\r\nX: y\r\n", .result = 0},
    {.raw = "7fffffffffffffff\r\n", .result = 0},
    {.raw = "", .result = 0},

    {.raw = "x\r\n", .result = -400, .why = "chunk size is not a hexadecimal number"},
    {.raw = "-5\r\nhello\r\n0\r\n\r\n",
     .result = -400,
     .why = "chunk size is not a hexadecimal number"},
    {.raw = " 5\r\nhello\r\n0\r\n\r\n",
     .result = -400,
     .why = "chunk size is not a hexadecimal number"},
    {.raw = "\r\n", .result = -400, .why = "chunk size is not a hexadecimal number"},
    {.raw = "0x5\r\nhello\r\n0\r\n\r\n", .result = -400, .why = "unexpected byte after chunk size"},
    {.raw = "5 x\r\nhello\r\n0\r\n\r\n", .result = -400, .why = "unexpected byte after chunk size"},
    {.raw = "8000000000000000\r\n", .result = -400, .why = "chunk size larger than 2^63-1"},
    {.raw = "ffffffffffffffffff\r\n", .result = -400, .why = "chunk size larger than 2^63-1"},
    {.raw = "5\nhello\r\n0\r\n\r\n", .result = -400, .why = "bare LF in chunked body"},
    {.raw = "5;a\nhello\r\n0\r\n\r\n", .result = -400, .why = "bare LF in chunked body"},
    {.raw = "5\rhello\r\n0\r\n\r\n", .result = -400, .why = "bare CR in chunked body"},
    {.raw = "5;a\rhello\r\n0\r\n\r\n", .result = -400, .why = "bare CR in chunked body"},
    {.raw = "5;a\x01\r\nhello\r\n0\r\n\r\n",
     .result = -400,
     .why = "control byte in chunk extension"},
    {.raw = "5\r\nhelloX\r\n0\r\n\r\n", .result = -400, .why = "chunk data not followed by CRLF"},
    {.raw = "5\r\nhello\n0\r\n\r\n", .result = -400, .why = "chunk data not followed by CRLF"},
    {.raw = "5\r\nhello\r0\r\n\r\n", .result = -400, .why = "chunk data not followed by CRLF"},
    {.raw = "5\r\nhell\r\n0\r\n\r\n", .result = -400, .why = "chunk data not followed by CRLF"},
    {.raw = "0\r\nX: a\n\r\n", .result = -400, .why = "bare LF in chunked body"},
    {.raw = "0\r\n\n", .result = -400, .why = "bare LF in chunked body"},
    {.raw = "0\r\nX: a\rb\r\n\r\n", .result = -400, .why = "bare CR in chunked body"},
    {.raw = "0\r\n\r\r", .result = -400, .why = "bare CR in chunked body"},
    {.raw = "0\r\n: a\r\n\r\n", .result = -400, .why = "malformed trailer field name"},
    {.raw = "0\r\n X: a\r\n\r\n", .result = -400, .why = "malformed trailer field name"},
    {.raw = "0\r\nX a\r\n\r\n", .result = -400, .why = "malformed trailer field name"},
    {.raw = "0\r\nX: \x7f\r\n\r\n", .result = -400, .why = "control byte in trailer field"},
    {.raw = "0\r\nX: \0\r\n\r\n",
     .result = -400,
     .why = "control byte in trailer field",
     .consumed = 0,
     .raw_len = 11},
};

typedef struct chunk_outcome {
  int result;
  const char *why;
  size_t consumed;
  char *body;
  size_t body_len;
} chunk_outcome;

/* Decode raw[0..len) arriving in pieces: the first `first` bytes, then
 * `step` at a time, each piece in its own exact-size buffer. */
static chunk_outcome decode_fed(const char *raw, size_t len, size_t first, size_t step) {
  chunk_outcome o = {0, NULL, 0, malloc(len + 1), 0};
  assert_non_null(o.body);
  narcache__http_chunked c;
  memset(&c, 0, sizeof c);
  size_t at = 0, piece = first < len ? first : len;
  for (;;) {
    char *buf = copy_exact(raw + at, piece);
    narcache_inbuf in = {buf, piece, 0};
    int r;
    do {
      const char *data = NULL;
      size_t data_len = 0;
      size_t before = in.pos;
      r = narcache__http_chunked_next(&c, &in, &data, &data_len, &o.why);
      assert_true(in.pos >= before && in.pos <= in.size);
      if (data_len > 0) {
        /* zero copy: the bytes just consumed, inside the input */
        assert_true(data >= buf + before && data + data_len <= buf + in.pos);
        memcpy(o.body + o.body_len, data, data_len);
        o.body_len += data_len;
      }
      if (r == 0 && data_len == 0)
        assert_int_equal(in.pos, in.size); /* asks for more only when all is used */
    } while (r == 0 && in.pos < in.size);
    free(buf);
    o.result = r;
    o.consumed = at + in.pos;
    at += piece;
    if (r != 0 || at == len)
      break;
    piece = len - at < step ? len - at : step;
  }
  return o;
}

static void check_chunk_outcome(const chunk_outcome *got, const chunk_outcome *want) {
  assert_int_equal(got->result, want->result);
  assert_ptr_equal(got->why, want->why);
  assert_int_equal(got->consumed, want->consumed);
  assert_int_equal(got->body_len, want->body_len);
  assert_memory_equal(got->body, want->body, want->body_len);
}

static void check_chunk_case(const char *raw, size_t len, const chunk_case *c, size_t index) {
  chunk_outcome whole = decode_fed(raw, len, len, len);
  if (whole.result != c->result)
    fail_msg("chunk case %zu: expected %d, got %d (%s)", index, c->result, whole.result,
             whole.why ? whole.why : "");
  if (c->why != NULL)
    assert_string_equal(whole.why, c->why);
  if (c->result == -400)
    assert_non_null(whole.why);
  if (c->result == 1) {
    assert_null(whole.why);
    assert_int_equal(whole.body_len, strlen(c->body));
    assert_memory_equal(whole.body, c->body, whole.body_len);
    assert_int_equal(whole.consumed, c->consumed ? c->consumed : len);
  }
  for (size_t cut = 0; cut <= len; cut++) {
    chunk_outcome split = decode_fed(raw, len, cut, len);
    check_chunk_outcome(&split, &whole);
    free(split.body);
  }
  chunk_outcome bytewise = decode_fed(raw, len, 1, 1);
  check_chunk_outcome(&bytewise, &whole);
  free(bytewise.body);
  free(whole.body);
}

static void test_chunked_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof chunk_cases / sizeof chunk_cases[0]; i++) {
    const chunk_case *c = &chunk_cases[i];
    check_chunk_case(c->raw, c->raw_len ? c->raw_len : strlen(c->raw), c, i);
  }
}

/* Size lines and trailers up to 4096 bytes pass, one more fails. */
static void test_chunked_limits(void **state) {
  (void)state;
  char *raw = malloc(8192);
  assert_non_null(raw);
  static const chunk_case ok = {.result = 1, .body = "hello"};
  static const chunk_case too_long = {
      .result = -400, .why = "chunk size line (with extensions) longer than 4096 bytes"};
  static const chunk_case trailer_ok = {.result = 1, .body = ""};
  static const chunk_case trailer_long = {.result = -400,
                                          .why = "trailer section longer than 4096 bytes"};
  for (size_t extra = 0; extra <= 1; extra++) {
    /* leading zeros: 4095 + "5" */
    char *p = repeat(raw, '0', 4095 + extra);
    static const char rest[] = "5\r\nhello\r\n0\r\n\r\n";
    memcpy(p, rest, sizeof rest - 1);
    size_t len = (size_t)(p + sizeof rest - 1 - raw);
    check_chunk_case(raw, len, extra ? &too_long : &ok, 1000 + extra);

    /* an extension: "5;" + pad */
    memcpy(raw, "5;", 2);
    p = repeat(raw + 2, 'e', 4094 + extra);
    memcpy(p, rest + 1, sizeof rest - 2);
    len = (size_t)(p + sizeof rest - 2 - raw);
    check_chunk_case(raw, len, extra ? &too_long : &ok, 1002 + extra);

    /* a trailer of 4096 bytes: "X: " + pad + CRLF */
    memcpy(raw, "0\r\nX: ", 6);
    p = repeat(raw + 6, 't', 4096 - 5 + extra);
    memcpy(p, "\r\n\r\n", 4);
    len = (size_t)(p + 4 - raw);
    check_chunk_case(raw, len, extra ? &trailer_long : &trailer_ok, 1004 + extra);

    /* the same bytes over many short trailer lines */
    memcpy(raw, "0\r\n", 3);
    p = raw + 3;
    for (size_t i = 0; i < 4096 / 8; i++) {
      memcpy(p, i == 0 && extra ? "XY: abc\r\n" : "X: abc\r\n", 8 + (i == 0 && extra));
      p += 8 + (i == 0 && extra);
    }
    memcpy(p, "\r\n", 2);
    len = (size_t)(p + 2 - raw);
    check_chunk_case(raw, len, extra ? &trailer_long : &trailer_ok, 1006 + extra);
  }
  free(raw);
}

static void test_chunked_state(void **state) {
  (void)state;
  narcache__http_chunked c;
  memset(&c, 0, sizeof c);
  static const char big[] = "7fffffffffffffff;x\r\nabc";
  narcache_inbuf in = {big, sizeof big - 1, 0};
  const char *data = NULL, *why = NULL;
  size_t n = 0;
  assert_int_equal(narcache__http_chunked_next(&c, &in, &data, &n, &why), 0);
  assert_int_equal(n, 3);
  assert_ptr_equal(data, big + 20);
  assert_int_equal(c.remaining, 0x7fffffffffffffffULL - 3);

  /* errors are sticky */
  memset(&c, 0, sizeof c);
  static const char bad[] = "5\nhello";
  in = (narcache_inbuf){bad, sizeof bad - 1, 0};
  assert_int_equal(narcache__http_chunked_next(&c, &in, &data, &n, &why), -400);
  size_t pos = in.pos;
  why = NULL;
  assert_int_equal(narcache__http_chunked_next(&c, &in, &data, &n, &why), -400);
  assert_string_equal(why, "bare LF in chunked body");
  assert_int_equal(in.pos, pos);

  /* and so is the end: nothing more is consumed */
  memset(&c, 0, sizeof c);
  static const char done[] = "0\r\n\r\nGET";
  in = (narcache_inbuf){done, sizeof done - 1, 0};
  assert_int_equal(narcache__http_chunked_next(&c, &in, &data, &n, &why), 1);
  assert_int_equal(in.pos, 5);
  assert_int_equal(narcache__http_chunked_next(&c, &in, &data, &n, &why), 1);
  assert_int_equal(in.pos, 5);
  assert_int_equal(n, 0);
}

/* Optional out-parameters, and a caller's inconsistent input buffer. */
static void test_chunked_api_edges(void **state) {
  (void)state;
  narcache__http_chunked c;
  memset(&c, 0, sizeof c);
  static const char body[] = "3\r\nabc\r\n0\r\n\r\n";
  narcache_inbuf in = {body, sizeof body - 1, 0};
  int r;
  while ((r = narcache__http_chunked_next(&c, &in, NULL, NULL, NULL)) == 0)
    ;
  assert_int_equal(r, 1);
  assert_int_equal(in.pos, in.size);

  memset(&c, 0, sizeof c);
  narcache_inbuf past = {body, 3, 4};
  const char *why = NULL;
  assert_int_equal(narcache__http_chunked_next(&c, &past, NULL, NULL, &why), -400);
  assert_string_equal(why, "chunked decoder called with an inconsistent input buffer");
  assert_int_equal(past.pos, 4);
  memset(&c, 0, sizeof c);
  narcache_inbuf null_data = {NULL, 3, 0};
  assert_int_equal(narcache__http_chunked_next(&c, &null_data, NULL, NULL, &why), -400);
  memset(&c, 0, sizeof c);
  assert_int_equal(narcache__http_chunked_next(&c, NULL, NULL, NULL, &why), -400);
}

/* ---- a connection: pipelined requests with bodies --------------------------------- */

typedef struct served {
  char text[2048]; /* one line per request: method path status body keep_alive */
  size_t len;
} served;

__attribute__((format(printf, 2, 3))) static void served_add(served *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(s->text + s->len, sizeof s->text - s->len, fmt, ap);
  va_end(ap);
  assert_true(n >= 0 && (size_t)n < sizeof s->text - s->len);
  s->len += (size_t)n;
}

/* A client's bytes arriving `step` at a time into a server's buffer: an
 * exact-size copy of everything received so far. */
typedef struct conn {
  const char *stream;
  size_t len, step;
  char *buf;
  size_t received;
} conn;

/* More bytes arrive (the buffer moves); 0 at the end of the stream. */
static int conn_receive(conn *c) {
  if (c->received == c->len)
    return 0;
  c->received = c->len - c->received < c->step ? c->len : c->received + c->step;
  free(c->buf);
  c->buf = copy_exact(c->stream, c->received);
  return 1;
}

/* The body of a chunked request from `*start`; 1 complete, else an error
 * was written. */
static int serve_chunked(conn *c, size_t *start, served *out) {
  narcache__http_chunked dec;
  memset(&dec, 0, sizeof dec);
  for (;;) {
    narcache_inbuf in = {c->buf + *start, c->received - *start, 0};
    const char *data, *why;
    size_t n;
    int r = narcache__http_chunked_next(&dec, &in, &data, &n, &why);
    served_add(out, "%.*s", (int)n, data ? data : "");
    *start += in.pos;
    if (r == 1)
      return 1;
    if (r < 0) {
      served_add(out, " chunked %s\n", why);
      return 0;
    }
    if (n == 0 && !conn_receive(c)) {
      served_add(out, " chunked eof\n");
      return 0;
    }
  }
}

/* Serve a byte stream: scan, parse, read the body, go on with the next
 * request, as a server would; one line per request in `out`. */
static void serve(served *out, const char *stream, size_t len, size_t step) {
  out->len = 0;
  out->text[0] = '\0';
  conn c = {stream, len, step, copy_exact(stream, 0), 0};
  conn_receive(&c);
  size_t start = 0;
  for (;;) {
    narcache__http_head_scanner s;
    memset(&s, 0, sizeof s);
    const char *why = NULL;
    long head;
    while ((head = narcache__http_head_scan(&s, c.buf + start, c.received - start, &limits,
                                            &why)) == 0)
      if (!conn_receive(&c))
        break;
    if (head == 0) {
      served_add(out, "eof%s\n", start == c.received ? "" : " in head");
      break;
    }
    if (head < 0) {
      served_add(out, "%ld %s\n", -head, why);
      break;
    }
    narcache__http_request req;
    int status = narcache__http_parse_head(&req, c.buf + start, (size_t)head, &limits, &why);
    if (status != 0) {
      served_add(out, "%d %s\n", status, why);
      break;
    }
    served_add(out, "%.*s %.*s ka=%d body=", (int)req.method_name.len, req.method_name.p,
               (int)req.path.len, req.path.p, req.keep_alive);
    start += (size_t)head;
    if (req.chunked) {
      if (!serve_chunked(&c, &start, out))
        break;
    } else if (req.has_content_length) {
      while (c.received - start < req.content_length && conn_receive(&c))
        ;
      if (c.received - start < req.content_length) {
        served_add(out, " eof in body\n");
        break;
      }
      served_add(out, "%.*s", (int)req.content_length, c.buf + start);
      start += req.content_length;
    }
    served_add(out, "\n");
  }
  free(c.buf);
}

static void test_pipelined(void **state) {
  (void)state;
  static const char stream[] =
      "GET /nix-cache-info HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nUser-Agent: " NIX_UA
      "\r\nAccept: */*\r\n\r\n"
      "PUT /nar/a.nar HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
      "hello"
      "PUT /b.narinfo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n"
      "\r\nHEAD /c.narinfo HTTP/1.0\r\n\r\n"
      "GET /nar/d.nar HTTP/1.1\r\nHost: h\r\nRange: bytes=0-\r\nConnection: close\r\n\r\n";
  static const char want[] = "GET /nix-cache-info ka=1 body=\n"
                             "PUT /nar/a.nar ka=1 body=hello\n"
                             "PUT /b.narinfo ka=1 body=hello world\n"
                             "HEAD /c.narinfo ka=0 body=\n"
                             "GET /nar/d.nar ka=0 body=\n"
                             "eof\n";
  served whole, piecewise;
  serve(&whole, stream, sizeof stream - 1, sizeof stream - 1);
  assert_string_equal(whole.text, want);
  for (size_t step = 1; step <= 64; step++) {
    serve(&piecewise, stream, sizeof stream - 1, step);
    assert_string_equal(piecewise.text, want);
  }

  /* a smuggling attempt stops the connection at the bad request */
  static const char smuggle[] =
      "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n";
  serve(&whole, smuggle, sizeof smuggle - 1, sizeof smuggle - 1);
  assert_string_equal(whole.text, "GET / ka=1 body=\n"
                                  "400 both Transfer-Encoding and Content-Length\n");
  for (size_t step = 1; step <= 16; step++) {
    serve(&piecewise, smuggle, sizeof smuggle - 1, step);
    assert_string_equal(piecewise.text, whole.text);
  }
}

/* ---- Range -------------------------------------------------------------------------- */

typedef struct range_case {
  const char *value;
  uint64_t size;
  int result;
  uint64_t first, last;
} range_case;

static const range_case range_cases[] = {
    {.value = "bytes=0-99", .size = 1000, .result = 1, .first = 0, .last = 99},
    {.value = "bytes=0-0", .size = 1, .result = 1, .first = 0, .last = 0},
    {.value = "bytes=999-999", .size = 1000, .result = 1, .first = 999, .last = 999},
    {.value = "bytes=100-", .size = 1000, .result = 1, .first = 100, .last = 999},
    {.value = "bytes=0-", .size = 1000, .result = 1, .first = 0, .last = 999},
    {.value = "bytes=-100", .size = 1000, .result = 1, .first = 900, .last = 999},
    {.value = "bytes=-1", .size = 1000, .result = 1, .first = 999, .last = 999},
    {.value = "bytes=-1000",
     .size = 1000,
     .result = 1,
     .first = 0,
     .last = 999}, /* suffix as long as the object */
    {.value = "bytes=-5000",
     .size = 1000,
     .result = 1,
     .first = 0,
     .last = 999}, /* suffix longer: the whole object */
    {.value = "bytes=0-5000",
     .size = 1000,
     .result = 1,
     .first = 0,
     .last = 999}, /* last clamped */
    {.value = "bytes=500-99999999999999999999999",
     .size = 1000,
     .result = 1,
     .first = 500,
     .last = 999},
    {.value = "bytes=-99999999999999999999999", .size = 1000, .result = 1, .first = 0, .last = 999},
    {.value = " bytes=0-99 ",
     .size = 1000,
     .result = 1,
     .first = 0,
     .last = 99}, /* OWS around the value */
    {.value = "\tbytes= 0-99\t",
     .size = 1000,
     .result = 1,
     .first = 0,
     .last = 99}, /* and around the range-set */
    {.value = "Bytes=0-99",
     .size = 1000,
     .result = 1,
     .first = 0,
     .last = 99}, /* units are case-insensitive */
    {.value = "BYTES=5-", .size = 6, .result = 1, .first = 5, .last = 5},
    {.value = "bytes=18446744073709551614-",
     .size = UINT64_MAX,
     .result = 1,
     .first = UINT64_MAX - 1,
     .last = UINT64_MAX - 1},
    {.value = "bytes=0-18446744073709551615",
     .size = UINT64_MAX,
     .result = 1,
     .first = 0,
     .last = UINT64_MAX - 1},
    /* unsatisfiable */
    {.value = "bytes=1000-", .size = 1000, .result = -416},
    {.value = "bytes=1000-2000", .size = 1000, .result = -416},
    {.value = "bytes=5000-", .size = 1000, .result = -416},
    {.value = "bytes=99999999999999999999999-", .size = 1000, .result = -416},
    {.value = "bytes=-0", .size = 1000, .result = -416},
    {.value = "bytes=0-", .size = 0, .result = -416}, /* nothing in an empty object */
    {.value = "bytes=0-0", .size = 0, .result = -416},
    {.value = "bytes=-5", .size = 0, .result = -416},
    {.value = "bytes=-0", .size = 0, .result = -416},
    /* ignored: the whole object */
    {.value = "bytes=5-4", .size = 1000, .result = 0},
    {.value = "bytes=5-4", .size = 0, .result = 0},
    {.value = "bytes=0-1,5-6", .size = 1000, .result = 0},
    {.value = "bytes=0-1, 5-6", .size = 1000, .result = 0},
    {.value = "bytes=0-1,", .size = 1000, .result = 0},
    {.value = "bytes=,0-1", .size = 1000, .result = 0},
    {.value = "items=0-99", .size = 1000, .result = 0},
    {.value = "bytes 0-99", .size = 1000, .result = 0},
    {.value = "bytes =0-99", .size = 1000, .result = 0},
    {.value = "bytes==0-99", .size = 1000, .result = 0},
    {.value = "bytes=", .size = 1000, .result = 0},
    {.value = "bytes=-", .size = 1000, .result = 0},
    {.value = "bytes=a-b", .size = 1000, .result = 0},
    {.value = "bytes=0 - 99", .size = 1000, .result = 0},
    {.value = "bytes=0-99x", .size = 1000, .result = 0},
    {.value = "bytes=1-2-3", .size = 1000, .result = 0},
    {.value = "bytes=+1-2", .size = 1000, .result = 0},
    {.value = "bytes=1", .size = 1000, .result = 0},
    {.value = "bytes=--1", .size = 1000, .result = 0},
    {.value = "bytes=0x10-", .size = 1000, .result = 0},
    {.value = "", .size = 1000, .result = 0},
    {.value = "=0-1", .size = 1000, .result = 0},
};

static void test_range_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof range_cases / sizeof range_cases[0]; i++) {
    const range_case *c = &range_cases[i];
    size_t len = strlen(c->value);
    char *value = copy_exact(c->value, len);
    uint64_t first = 12345, last = 67890;
    int r = narcache__http_parse_range(value, len, c->size, &first, &last);
    free(value);
    if (r != c->result)
      fail_msg("range case %zu \"%s\" size %llu: expected %d, got %d", i, c->value,
               (unsigned long long)c->size, c->result, r);
    if (r == 1) {
      assert_int_equal(first, c->first);
      assert_int_equal(last, c->last);
      assert_true(first <= last && last < c->size);
    } else {
      assert_int_equal(first, 12345); /* untouched */
      assert_int_equal(last, 67890);
    }
  }
  uint64_t first = 1, last = 2;
  assert_int_equal(narcache__http_parse_range(NULL, 0, 100, &first, &last), 0);
  assert_int_equal(narcache__http_parse_range("bytes=0-1", 9, 100, NULL, &last), 0);
  assert_int_equal(narcache__http_parse_range("bytes=0-1", 9, 100, &first, NULL), 0);
  assert_true(first == 1 && last == 2);
  /* the length counts, not a terminator */
  assert_int_equal(narcache__http_parse_range("bytes=0-19", 9, 100, &first, &last), 1);
  assert_true(first == 0 && last == 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_head_table),      cmocka_unit_test(test_request_line_limit),
      cmocka_unit_test(test_head_size_limit), cmocka_unit_test(test_too_many_headers),
      cmocka_unit_test(test_scanner_sticky),  cmocka_unit_test(test_parse_alone),
      cmocka_unit_test(test_chunked_table),   cmocka_unit_test(test_chunked_limits),
      cmocka_unit_test(test_chunked_state),   cmocka_unit_test(test_chunked_api_edges),
      cmocka_unit_test(test_pipelined),       cmocka_unit_test(test_range_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
