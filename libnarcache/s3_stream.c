/* GETs answered on a socket of our own (see s3_stream_internal.h): a
 * minimal HTTP/1.1 client for one request per connection. The request
 * asks for "Connection: close", so the body ends where the connection
 * does, and nothing has to be pooled. */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common_internal.h"
#include "narcache/common.h"
#include "s3_stream_internal.h"

/* ---- the response head ---------------------------------------------------- */

static int is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Field values: visible bytes, spaces and tabs (no controls, no DEL). */
static int value_ok(const char *v, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)v[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return 0;
  }
  return 1;
}

static void copy_value(char *out, size_t size, const char *v, size_t len) {
  size_t n = len < size - 1 ? len : size - 1; /* cut to fit, as the libcurl path does */
  memcpy(out, v, n);
  out[n] = '\0';
}

/* A decimal number of at most 19 digits (no sign, no spaces). */
static int parse_u64(const char *v, size_t len, uint64_t *out) {
  if (len == 0 || len > 19)
    return -1;
  uint64_t n = 0;
  for (size_t i = 0; i < len; i++) {
    if (!is_digit(v[i]))
      return -1;
    n = n * 10 + (uint64_t)(v[i] - '0');
  }
  *out = n;
  return 0;
}

static int name_is(const char *name, size_t len, const char *want) {
  return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

/* One "name: value" line (without its CRLF) into *head. */
static int parse_field(const char *line, size_t len, narcache__s3_head *head, int *chunked) {
  const char *colon = memchr(line, ':', len);
  if (colon == NULL || colon == line)
    return NARCACHE_EIO;
  size_t name_len = (size_t)(colon - line);
  for (size_t i = 0; i < name_len; i++)
    if (!is_tchar((unsigned char)line[i]))
      return NARCACHE_EIO; /* also a folded line, which starts with a space */
  const char *v = colon + 1, *end = line + len;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  size_t vlen = (size_t)(end - v);
  if (!value_ok(v, vlen))
    return NARCACHE_EIO;
  if (name_is(line, name_len, "content-length")) {
    uint64_t n;
    if (parse_u64(v, vlen, &n) < 0)
      return NARCACHE_EIO;
    if (head->content_length != UINT64_MAX && head->content_length != n)
      return NARCACHE_EIO; /* two lengths: which body is it? */
    head->content_length = n;
  } else if (name_is(line, name_len, "transfer-encoding")) {
    *chunked = 1;
  } else if (name_is(line, name_len, "content-range")) {
    copy_value(head->content_range, sizeof head->content_range, v, vlen);
  } else if (name_is(line, name_len, "etag")) {
    copy_value(head->etag, sizeof head->etag, v, vlen);
  } else if (name_is(line, name_len, "content-encoding")) {
    copy_value(head->content_encoding, sizeof head->content_encoding, v, vlen);
  } else if (name_is(line, name_len, "retry-after")) {
    uint64_t n;
    head->retry_after_s = parse_u64(v, vlen, &n) == 0 && n < 86400 ? (uint32_t)n : 0;
  }
  return NARCACHE_OK;
}

/* "HTTP/1.x NNN[ reason]" */
static int parse_status_line(const char *line, size_t len, long *status) {
  if (len < 12 || memcmp(line, "HTTP/1.", 7) != 0 || !is_digit(line[7]) || line[8] != ' ' ||
      !is_digit(line[9]) || !is_digit(line[10]) || !is_digit(line[11]) ||
      (len > 12 && line[12] != ' ') || !value_ok(line, len) || line[9] == '0')
    return NARCACHE_EIO;
  *status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  return NARCACHE_OK;
}

int narcache__s3_response_head_parse(const char *data, size_t len, long *status,
                                     narcache__s3_head *head) {
  memset(head, 0, sizeof *head);
  head->content_length = UINT64_MAX;
  *status = 0;
  if (len < 4 || memcmp(data + len - 4, "\r\n\r\n", 4) != 0)
    return NARCACHE_EIO;
  const char *p = data, *end = data + len - 2; /* the blank line's CRLF stays out */
  const char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
  int rc = parse_status_line(p, (size_t)(eol - p), status);
  int chunked = 0;
  for (p = eol + 2; rc == 0 && p < end; p = eol + 2) {
    eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
    rc = parse_field(p, (size_t)(eol - p), head, &chunked);
  }
  if (rc == 0 && chunked && *status >= 200)
    rc = NARCACHE_ENOTSUP;
  if (rc < 0) {
    memset(head, 0, sizeof *head);
    head->content_length = UINT64_MAX;
    *status = 0;
  }
  return rc;
}

/* ---- the connection -------------------------------------------------------- */

/* Wait for `events` on fd until the deadline: 0, or NARCACHE_EUNAVAIL. */
static int wait_fd(int fd, short events, uint64_t deadline_ms) {
  for (;;) {
    uint64_t now = narcache__s3_now_ms();
    if (now >= deadline_ms)
      return NARCACHE_EUNAVAIL;
    uint64_t left = deadline_ms - now;
    struct pollfd p = {.fd = fd, .events = events};
    int rc = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (rc > 0)
      return NARCACHE_OK; /* errors and hang-ups show in the next call */
    if (rc < 0 && errno != EINTR)
      return NARCACHE_EUNAVAIL;
  }
}

static int connect_one(const struct addrinfo *ai, uint64_t deadline_ms) {
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0)
    return -1;
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
    int err = errno != EINPROGRESS ? errno : wait_fd(fd, POLLOUT, deadline_ms) < 0 ? ETIMEDOUT : 0;
    socklen_t l = sizeof err;
    if (err != 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err != 0) {
      close(fd);
      return -1;
    }
  }
  int one = 1; /* the request head goes out in one piece anyway */
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* Connect to a numeric address: no name lookup here, which could block
 * past every timeout (see narcache__s3_io_last_peer). */
static int connect_to(const char *ip, long port, uint64_t deadline_ms, int *out) {
  char service[8];
  if (port <= 0 || port > 65535)
    return NARCACHE_EINVAL;
  snprintf(service, sizeof service, "%ld", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
  struct addrinfo *list = NULL;
  if (getaddrinfo(ip, service, &hints, &list) != 0)
    return NARCACHE_EINVAL;
  int fd = -1;
  for (struct addrinfo *ai = list; ai != NULL && fd < 0; ai = ai->ai_next)
    fd = connect_one(ai, deadline_ms);
  freeaddrinfo(list);
  *out = fd;
  return fd >= 0 ? NARCACHE_OK : NARCACHE_EUNAVAIL;
}

static int send_all(int fd, const char *data, size_t len, uint64_t deadline_ms) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n > 0) {
      data += n;
      len -= (size_t)n;
    } else if (n < 0 && errno == EAGAIN) {
      if (wait_fd(fd, POLLOUT, deadline_ms) < 0)
        return NARCACHE_EUNAVAIL;
    } else if (n == 0 || errno != EINTR) {
      return NARCACHE_EUNAVAIL; /* the connection failed: worth another try */
    }
  }
  return NARCACHE_OK;
}

/* Read until a final (non-1xx) head is complete; keep the body bytes that
 * came with it. */
static int read_head(narcache__s3_stream *st, uint64_t deadline_ms) {
  size_t len = 0, searched = 0;
  for (;;) {
    const uint8_t *blank = len >= 4 ? memmem(st->buf + searched, len - searched, "\r\n\r\n", 4)
                                    : NULL;
    if (blank != NULL) {
      size_t head_len = (size_t)(blank - st->buf) + 4;
      int rc = narcache__s3_response_head_parse((const char *)st->buf, head_len, &st->status,
                                                &st->head);
      if (rc < 0)
        return rc;
      memmove(st->buf, st->buf + head_len, len - head_len);
      len -= head_len;
      searched = 0;
      if (st->status >= 200) {
        st->buffered_pos = 0;
        st->buffered_len = len;
        return NARCACHE_OK;
      }
      continue; /* 100 Continue and friends: the real answer follows */
    }
    searched = len >= 3 ? len - 3 : 0;
    if (len == sizeof st->buf)
      return NARCACHE_EIO; /* no S3 head is this large */
    ssize_t n = recv(st->fd, st->buf + len, sizeof st->buf - len, 0);
    if (n > 0) {
      len += (size_t)n;
    } else if (n < 0 && errno == EAGAIN) {
      if (wait_fd(st->fd, POLLIN, deadline_ms) < 0)
        return NARCACHE_EUNAVAIL;
    } else if (n == 0 || errno != EINTR) {
      return NARCACHE_EUNAVAIL; /* closed before it answered */
    }
  }
}

int narcache__s3_stream_get(narcache__s3_stream **out, const char *ip, long port,
                            const char *request, size_t request_len,
                            uint32_t connect_timeout_ms, uint64_t deadline_ms) {
  *out = NULL;
  narcache__s3_stream *st = narcache__malloc(sizeof *st);
  if (st == NULL)
    return NARCACHE_ENOMEM;
  memset(st, 0, offsetof(narcache__s3_stream, buf));
  st->fd = -1;
  uint64_t connect_deadline = narcache__s3_now_ms() + connect_timeout_ms;
  int rc = connect_to(ip, port, connect_deadline < deadline_ms ? connect_deadline : deadline_ms,
                      &st->fd);
  if (rc == 0)
    rc = send_all(st->fd, request, request_len, deadline_ms);
  if (rc == 0)
    rc = read_head(st, deadline_ms);
  if (rc < 0) {
    narcache__s3_stream_free(st);
    return rc;
  }
  *out = st;
  return NARCACHE_OK;
}

int narcache__s3_stream_read(narcache__s3_stream *st, void *buf, size_t len, size_t *got,
                             uint32_t stall_ms) {
  *got = 0;
  if (st->buffered_pos < st->buffered_len) {
    size_t n = st->buffered_len - st->buffered_pos;
    if (n > len)
      n = len;
    memcpy(buf, st->buf + st->buffered_pos, n);
    st->buffered_pos += n;
    *got = n;
    return NARCACHE_OK;
  }
  uint64_t deadline = narcache__s3_now_ms() + stall_ms;
  for (;;) {
    ssize_t n = recv(st->fd, buf, len, 0);
    if (n >= 0) {
      *got = (size_t)n;
      return NARCACHE_OK;
    }
    if (errno == EAGAIN) {
      if (wait_fd(st->fd, POLLIN, deadline) < 0)
        return NARCACHE_EUNAVAIL;
    } else if (errno != EINTR) {
      return NARCACHE_EIO;
    }
  }
}

size_t narcache__s3_stream_buffered(const narcache__s3_stream *st, const void **data) {
  *data = st->buf + st->buffered_pos;
  return st->buffered_len - st->buffered_pos;
}

int narcache__s3_stream_fill(narcache__s3_stream *st, uint32_t stall_ms) {
  if (st->buffered_pos < st->buffered_len)
    return NARCACHE_OK;
  size_t got = 0;
  int rc = narcache__s3_stream_read(st, st->buf, sizeof st->buf, &got, stall_ms);
  st->buffered_pos = 0;
  st->buffered_len = got;
  return rc;
}

void narcache__s3_stream_drop(narcache__s3_stream *st, size_t n) {
  size_t left = st->buffered_len - st->buffered_pos;
  st->buffered_pos += n < left ? n : left;
}

void narcache__s3_stream_free(narcache__s3_stream *st) {
  if (st == NULL)
    return;
  if (st->fd >= 0)
    close(st->fd);
  narcache__free(st);
}
