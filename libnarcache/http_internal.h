/* Strict HTTP/1.1 request parsing for the server (internal to the library).
 *
 * Zero-copy: every span points into the caller's buffer, which must stay
 * unchanged while the spans are used. No lenient mode: anything RFC 9112
 * does not allow, and every request-smuggling pattern, is refused with the
 * HTTP status to answer (400, 414, 431, 501, 505) and a static reason.
 *
 * Usage by a connection:
 *   1. feed the received bytes to narcache__http_head_scan() (incremental,
 *      each byte looked at once) until it returns the head length;
 *   2. narcache__http_parse_head() on exactly that many bytes;
 *   3. the body: Content-Length bytes as they come, or
 *      narcache__http_chunked_next() for Transfer-Encoding: chunked;
 *   4. the next request (pipelining) starts right after.
 *
 * `limits` may be NULL for the defaults (16 KiB head, 4 KiB target, 64
 * header fields). `why` may be NULL; on success it is set to NULL. The
 * reasons are static strings naming the problem ("bare LF in request
 * head", "two Content-Length headers", ...). Implemented in http_parser.c.
 */
#ifndef NARCACHE_HTTP_INTERNAL_H
#define NARCACHE_HTTP_INTERNAL_H

#include "narcache/common.h"

#include <stddef.h>
#include <stdint.h>

typedef struct narcache__http_span {
  const char *p;
  size_t len;
} narcache__http_span;

enum narcache__http_method {
  NARCACHE__HTTP_OTHER = 0, /* a valid token we do not know: 501 or 405 */
  NARCACHE__HTTP_GET,
  NARCACHE__HTTP_HEAD,
  NARCACHE__HTTP_PUT,
  NARCACHE__HTTP_POST,
  NARCACHE__HTTP_DELETE,
  NARCACHE__HTTP_OPTIONS,
};

typedef struct narcache__http_limits {
  size_t max_head_bytes;   /* request line + headers + blank line: 431 */
  size_t max_target_bytes; /* request-target: 414 */
  size_t max_headers;      /* header field lines: 431 */
} narcache__http_limits;

typedef struct narcache__http_request {
  int method;                      /* enum narcache__http_method */
  narcache__http_span method_name; /* as sent (case-sensitive token) */
  narcache__http_span target;      /* origin-form, as sent */
  narcache__http_span path;        /* target up to '?' (still percent-encoded) */
  narcache__http_span query;       /* after '?', without it; len 0 if none */
  int minor_version;               /* HTTP/1.0 or HTTP/1.1 */
  int keep_alive;                  /* after version defaults and Connection */
  int has_content_length;
  uint64_t content_length;
  int chunked;         /* Transfer-Encoding: chunked */
  int expect_continue; /* Expect: 100-continue */
  /* Headers the server looks at (len 0 when absent), values trimmed of
   * surrounding spaces and tabs. */
  narcache__http_span host, range, authorization, if_none_match, content_type, user_agent;
  size_t n_headers;
} narcache__http_request;

/* Incremental end-of-head finder. Zero-initialise; keep it with the buffer
 * and call again with the whole buffer (old bytes + new) each time more
 * arrives: only bytes not seen before are examined, so a head costs O(n)
 * however it is split. The buffer may move between calls (only offsets
 * are kept). Answers are final: once a head length or an error has been
 * returned, further calls return the same without examining anything. */
typedef struct narcache__http_head_scanner {
  size_t scanned; /* bytes examined so far */
  int state;      /* position in the CR LF CR LF automaton */
  size_t line_start;
  int in_request_line;
} narcache__http_head_scanner;

/* > 0: a complete head of that many bytes (ending with the first CRLF
 * CRLF) is at the start of `buf`; nothing after it is looked at. 0: need
 * more bytes. < 0: minus the status to answer:
 *   400  bare LF, bare CR, NUL or another control byte (only HTAB is
 *        allowed besides CRLF), or more than one empty line (CRLF) before
 *        the request line (one is tolerated, RFC 9112 2.2);
 *   414  request line (without its CRLF) longer than max_target_bytes + 32
 *        (room for the method, the spaces and the version);
 *   431  no end within max_head_bytes: returned as soon as that many bytes
 *        are in without one (a head of exactly max_head_bytes is fine).
 * The first offending byte decides, so the answer does not depend on how
 * the bytes were split. Whether bytes suit their place (token, target,
 * value) is left to narcache__http_parse_head(). `why` gets a static
 * reason on error. */
long narcache__http_head_scan(narcache__http_head_scanner *s, const char *buf, size_t len,
                              const narcache__http_limits *limits, const char **why);

/* Parse a complete head (as delimited by the scanner; the parser checks
 * line ends, controls and the final empty line again and does not rely on
 * it). 0 on success, or the status to answer:
 *   400  malformed request line (exactly "method SP target SP version",
 *        method a token) or field line ("name: value", name a token, no
 *        whitespace before ':', value VCHAR / obs-text / SP / HTAB);
 *        obs-fold; target not in origin-form (absolute-, authority- and
 *        asterisk-form are refused; bytes limited to RFC 3986 pchar, '/'
 *        and '?', '%' followed by two hex digits, no '#'); "HTTP/1.10" and
 *        other non-"HTTP/d.d" versions; Content-Length not 1*DIGIT, above
 *        2^63-1 or given twice (even if equal); Transfer-Encoding given
 *        twice, with Content-Length, or in HTTP/1.0; missing Host in
 *        HTTP/1.1, Host given twice (either version) or not a valid
 *        uri-host[:port]; Range, Authorization or Content-Type given
 *        twice; a Connection option that is not a token; bytes after the
 *        empty line ending the head;
 *   414  request-target longer than max_target_bytes;
 *   431  more than max_headers field lines, or len > max_head_bytes;
 *   501  Transfer-Encoding other than exactly "chunked" (any case; lists
 *        such as "chunked, identity" included) -- but the 400 cases above
 *        win, so a smuggling attempt is always a 400;
 *   505  "HTTP/d.d" other than 1.0 and 1.1.
 * Fields given twice where only the first is kept: If-None-Match and
 * User-Agent. Expect: "100-continue" (any case) sets expect_continue in
 * HTTP/1.1 only (HTTP/1.0 must ignore it, RFC 9110 10.1.1); other
 * expectations are accepted and left for the server (417 if it wants).
 * Connection: "close" anywhere wins; else "keep-alive" makes an HTTP/1.0
 * request keep-alive. *req is zeroed first; after an error it holds only
 * what was parsed before the problem. */
int narcache__http_parse_head(narcache__http_request *req, const char *head, size_t len,
                              const narcache__http_limits *limits, const char **why);

/* Chunked request-body decoder (RFC 9112 7.1). Zero-initialise per body.
 * It keeps no pointer into the input: each call may be given a different
 * buffer holding the bytes that follow. */
typedef struct narcache__http_chunked {
  int state;
  uint64_t remaining; /* bytes left in the current chunk */
  size_t line_bytes;  /* bytes of the current size/extension/trailer line */
  size_t trailer_bytes;
} narcache__http_chunked;

/* Consume from `in`. Sets *data and *data_len to body bytes inside `in` (zero
 * copy; NULL and 0 when this call produced none; at most one span per
 * call). Returns 1 once the last chunk and the trailer section are
 * complete (in->pos is then just past them, so the next request starts
 * there), 0 to be called again (data produced, or all of `in` used and
 * more input needed), or -400 on a malformed body: chunk-size not 1*HEXDIG
 * or above 2^63-1, bare LF or bare CR, data not followed by CRLF, a size
 * line with its extensions longer than 4096 bytes (before the CRLF),
 * a control byte in an extension or trailer, a trailer line not starting
 * with "token:", or trailer field lines longer than 4096 bytes in all
 * (with their CRLFs). Extensions (BWS ";" ...) are skipped, trailer fields
 * dropped. 1 and -400 are final: later calls repeat them (with `why`) and
 * consume nothing. */
int narcache__http_chunked_next(narcache__http_chunked *c, narcache_inbuf *in, const char **data,
                                size_t *data_len, const char **why);

/* A Range header value against an object of `size` bytes. Only one range
 * of unit "bytes" (any case) is honoured: "bytes=A-B", "bytes=A-",
 * "bytes=-N", with optional whitespace around the value and around the
 * range after '='. Returns 1 with [*first, *last] (inclusive) for a
 * satisfiable range (B clamped to size-1; a suffix longer than the object
 * is the whole object); 0 to ignore the header and send the whole object
 * (malformed, other unit, A > B, or a list: any comma); -416 when the
 * range is valid but unsatisfiable: A >= size, "-0", or any range of an
 * empty object (RFC 9110 14.1.1). Huge numbers saturate (a position past
 * any object). *first and *last are only written when returning 1. */
int narcache__http_parse_range(const char *value, size_t len, uint64_t size, uint64_t *first,
                               uint64_t *last);

#endif /* NARCACHE_HTTP_INTERNAL_H */
