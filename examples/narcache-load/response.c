/* An incremental HTTP/1.1 response parser, strict enough to notice a
 * server that breaks framing (the load generator's job is to find those),
 * lenient only where RFC 9112 asks recipients to be. */
#define _GNU_SOURCE
#include "load.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int response_init(response *r, int head_only, size_t body_cap) {
  char *body = r->body;
  size_t alloc = r->body_alloc;
  memset(r, 0, offsetof(response, head));
  r->head_len = 0;
  r->error = NULL;
  r->state = RESP_HEAD;
  r->head_only = head_only;
  r->body = body;
  r->body_alloc = alloc;
  r->body_len = 0;
  r->body_cap = 0;
  if (body_cap > alloc) {
    char *bigger = realloc(body, body_cap);
    if (bigger == NULL)
      return -1;
    r->body = bigger;
    r->body_alloc = body_cap;
  }
  r->body_cap = body_cap;
  return 0;
}

void response_fini(response *r) {
  free(r->body);
  r->body = NULL;
  r->body_alloc = 0;
  r->body_cap = 0;
}

static void fail(response *r, const char *why) {
  r->state = RESP_ERROR;
  r->error = why;
}

static int token_equals(const char *p, size_t len, const char *word) {
  return strlen(word) == len && strncasecmp(p, word, len) == 0;
}

/* Does the comma-separated list [p, p+len) contain `word`? */
static int list_contains(const char *p, size_t len, const char *word) {
  const char *end = p + len;
  while (p < end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
      p++;
    const char *start = p;
    while (p < end && *p != ',')
      p++;
    const char *stop = p;
    while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
      stop--;
    if (token_equals(start, (size_t)(stop - start), word))
      return 1;
  }
  return 0;
}

static int parse_decimal(const char *p, size_t len, uint64_t *out) {
  uint64_t n = 0;
  if (len == 0 || len > 19)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (p[i] < '0' || p[i] > '9')
      return -1;
    n = n * 10 + (uint64_t)(p[i] - '0');
  }
  *out = n;
  return 0;
}

static void header(response *r, const char *name, size_t nlen, const char *value, size_t vlen,
                   int *chunked) {
  if (token_equals(name, nlen, "content-length")) {
    uint64_t n;
    if (parse_decimal(value, vlen, &n) != 0)
      return fail(r, "bad Content-Length");
    if (r->has_length && n != r->content_length)
      return fail(r, "conflicting Content-Length");
    r->has_length = 1;
    r->content_length = n;
  } else if (token_equals(name, nlen, "transfer-encoding")) {
    *chunked = list_contains(value, vlen, "chunked");
    if (!*chunked)
      return fail(r, "Transfer-Encoding without chunked");
  } else if (token_equals(name, nlen, "connection")) {
    if (list_contains(value, vlen, "close"))
      r->keep_alive = 0;
    else if (list_contains(value, vlen, "keep-alive"))
      r->keep_alive = 1;
  }
}

/* The head is complete in r->head[0..head_len). */
static void parse_head(response *r) {
  const char *p = r->head, *end = r->head + r->head_len;
  const char *eol = memchr(p, '\r', (size_t)(end - p));
  if (eol == NULL || (size_t)(eol - p) < 12 || memcmp(p, "HTTP/1.", 7) != 0 ||
      (p[7] != '0' && p[7] != '1') || p[8] != ' ' || !isdigit((unsigned char)p[9]) ||
      !isdigit((unsigned char)p[10]) || !isdigit((unsigned char)p[11]) ||
      (eol - p > 12 && p[12] != ' '))
    return fail(r, "bad status line");
  r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
  if (r->status < 100 || r->status > 599)
    return fail(r, "bad status code");
  r->keep_alive = p[7] == '1';
  int chunked = 0;
  p = eol + 2;
  while (p < end) {
    eol = memchr(p, '\r', (size_t)(end - p));
    if (eol == NULL || eol + 1 >= end || eol[1] != '\n')
      return fail(r, "bare CR in head");
    if (eol == p)
      break; /* the empty line */
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    if (colon == NULL || colon == p)
      return fail(r, "header line without a name");
    for (const char *q = p; q < colon; q++)
      if (*q == ' ' || *q == '\t')
        return fail(r, "space in a header name");
    const char *v = colon + 1, *vend = eol;
    while (v < vend && (*v == ' ' || *v == '\t'))
      v++;
    while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
      vend--;
    header(r, p, (size_t)(colon - p), v, (size_t)(vend - v), &chunked);
    if (r->state == RESP_ERROR)
      return;
    p = eol + 2;
  }
  if (chunked && r->has_length)
    return fail(r, "both Content-Length and chunked");
  if (r->status < 200) {
    /* 100 Continue and friends: the real response follows. */
    r->head_len = 0;
    r->has_length = 0;
    return;
  }
  if (r->head_only || r->status == 204 || r->status == 304) {
    r->state = RESP_DONE;
  } else if (chunked) {
    r->state = RESP_CHUNK_SIZE;
  } else if (r->has_length) {
    r->remaining = r->content_length;
    r->state = r->remaining ? RESP_BODY_LENGTH : RESP_DONE;
  } else {
    r->keep_alive = 0;
    r->state = RESP_BODY_EOF;
  }
}

static size_t feed_head(response *r, const char *data, size_t len) {
  size_t used = 0;
  while (used < len && r->state == RESP_HEAD) {
    if (r->head_len == sizeof r->head) {
      fail(r, "response head over 16 KiB");
      break;
    }
    char ch = data[used++];
    r->head[r->head_len++] = ch;
    if (ch == '\n' && r->head_len >= 4 && memcmp(r->head + r->head_len - 4, "\r\n\r\n", 4) == 0)
      parse_head(r);
  }
  return used;
}

static void keep_body(response *r, const char *data, size_t n) {
  r->body_bytes += n;
  if (r->body_len < r->body_cap) {
    size_t room = r->body_cap - r->body_len;
    size_t k = n < room ? n : room;
    memcpy(r->body + r->body_len, data, k);
    r->body_len += k;
  }
}

/* Chunk-size and trailer lines are short; they are kept in `head`, which
 * is no longer needed once the head has been parsed. */
static size_t feed_line(response *r, const char *data, size_t len, int *complete) {
  size_t used = 0;
  *complete = 0;
  while (used < len) {
    if (r->head_len == 256) {
      fail(r, "chunk line over 256 bytes");
      return used;
    }
    char ch = data[used++];
    r->head[r->head_len++] = ch;
    if (ch == '\n') {
      if (r->head_len < 2 || r->head[r->head_len - 2] != '\r') {
        fail(r, "chunk line without CRLF");
        return used;
      }
      *complete = 1;
      return used;
    }
  }
  return used;
}

static void chunk_size_line(response *r) {
  uint64_t n = 0;
  size_t i = 0, digits = 0;
  size_t len = r->head_len - 2;
  for (; i < len && isxdigit((unsigned char)r->head[i]); i++, digits++) {
    if (digits == 15)
      return fail(r, "chunk size too large");
    int c = r->head[i];
    n = n * 16 + (uint64_t)(isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10));
  }
  if (digits == 0 || (i < len && r->head[i] != ';' && r->head[i] != ' ' && r->head[i] != '\t'))
    return fail(r, "bad chunk size");
  r->remaining = n;
  r->state = n ? RESP_CHUNK_DATA : RESP_TRAILERS;
}

size_t response_feed(response *r, const char *data, size_t len) {
  size_t used = 0;
  while (used < len) {
    int complete;
    switch (r->state) {
    case RESP_HEAD: {
      size_t n = feed_head(r, data + used, len - used);
      used += n;
      if (r->state != RESP_HEAD)
        r->head_len = 0; /* the line buffer for chunked framing */
      break;
    }
    case RESP_BODY_LENGTH:
    case RESP_CHUNK_DATA: {
      size_t n = len - used;
      if (n > r->remaining)
        n = (size_t)r->remaining;
      keep_body(r, data + used, n);
      used += n;
      r->remaining -= n;
      if (r->remaining == 0)
        r->state = r->state == RESP_BODY_LENGTH ? RESP_DONE : RESP_CHUNK_END;
      break;
    }
    case RESP_BODY_EOF:
      keep_body(r, data + used, len - used);
      used = len;
      break;
    case RESP_CHUNK_SIZE:
      used += feed_line(r, data + used, len - used, &complete);
      if (complete) {
        chunk_size_line(r);
        r->head_len = 0;
      }
      break;
    case RESP_CHUNK_END:
      used += feed_line(r, data + used, len - used, &complete);
      if (complete) {
        if (r->head_len != 2) {
          fail(r, "chunk data longer than its size");
          return used;
        }
        r->head_len = 0;
        r->state = RESP_CHUNK_SIZE;
      }
      break;
    case RESP_TRAILERS:
      used += feed_line(r, data + used, len - used, &complete);
      if (complete) {
        if (r->head_len == 2)
          r->state = RESP_DONE;
        r->head_len = 0;
      }
      break;
    case RESP_DONE:
    case RESP_ERROR:
      return used;
    }
  }
  return used;
}

void response_eof(response *r) {
  if (r->state == RESP_BODY_EOF)
    r->state = RESP_DONE;
}
