/* What the NAR parser, writer, dumper and restorer share: limits, framing,
 * name rules, message formatting. */
#include "common_internal.h"
#include "nar_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void narcache__nar_limits_init(narcache__nar_limits *l) {
  l->name_len = 255;
  l->target_len = 4095;
  l->depth = 64;
  l->size = UINT64_MAX;
}

int narcache__nar_limits_set(narcache__nar_limits *l, int limit,
                             uint64_t value) {
  if (value == 0)
    return NARCACHE_EINVAL;
  switch (limit) {
  case NARCACHE_NAR_LIMIT_NAME_LEN:
    /* Names and targets are held in memory: keep them below 1 MiB. */
    if (value > (1u << 20))
      return NARCACHE_EINVAL;
    l->name_len = value;
    return NARCACHE_OK;
  case NARCACHE_NAR_LIMIT_TARGET_LEN:
    if (value > (1u << 20))
      return NARCACHE_EINVAL;
    l->target_len = value;
    return NARCACHE_OK;
  case NARCACHE_NAR_LIMIT_DEPTH:
    if (value > UINT32_MAX)
      return NARCACHE_EINVAL;
    l->depth = value;
    return NARCACHE_OK;
  case NARCACHE_NAR_LIMIT_SIZE:
    l->size = value;
    return NARCACHE_OK;
  default:
    return NARCACHE_EINVAL;
  }
}

uint64_t narcache_nar_limit_default(int limit) {
  narcache__nar_limits l;
  narcache__nar_limits_init(&l);
  switch (limit) {
  case NARCACHE_NAR_LIMIT_NAME_LEN:
    return l.name_len;
  case NARCACHE_NAR_LIMIT_TARGET_LEN:
    return l.target_len;
  case NARCACHE_NAR_LIMIT_DEPTH:
    return l.depth;
  case NARCACHE_NAR_LIMIT_SIZE:
    return l.size;
  default:
    return 0;
  }
}

/* Headers are built for every node of every dump, so these write straight
 * into reserved space instead of going through several appends. */
static void store_le64(char *dst, uint64_t v) {
  for (int i = 0; i < 8; i++)
    dst[i] = (char)(unsigned char)(v >> (8 * i));
}

int narcache__nar_put_len(narcache__buf *b, uint64_t len) {
  if (narcache__buf_reserve(b, 8) < 0)
    return NARCACHE_ENOMEM;
  store_le64(b->data + b->len, len);
  b->len += 8;
  return NARCACHE_OK;
}

int narcache__nar_put_padding(narcache__buf *b, uint64_t len) {
  size_t pad = (size_t)((8 - len % 8) % 8);
  if (narcache__buf_reserve(b, pad) < 0)
    return NARCACHE_ENOMEM;
  memset(b->data + b->len, 0, pad);
  b->len += pad;
  return NARCACHE_OK;
}

int narcache__nar_put_str(narcache__buf *b, const void *s, size_t len) {
  size_t frame = (size_t)narcache__nar_frame_size(len);
  if (narcache__buf_reserve(b, frame) < 0)
    return NARCACHE_ENOMEM;
  char *dst = b->data + b->len;
  store_le64(dst, len);
  if (len > 0)
    memcpy(dst + 8, s, len);
  memset(dst + 8 + len, 0, frame - 8 - len);
  b->len += frame;
  return NARCACHE_OK;
}

int narcache__nar_put_token(narcache__buf *b, const char *keyword) {
  return narcache__nar_put_str(b, keyword, strlen(keyword));
}

const char *narcache__nar_name_problem(const char *name, size_t len,
                                       uint64_t max_len) {
  if (len == 0)
    return "empty entry name";
  if (len > max_len)
    return "entry name too long";
  if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
    return "entry name is '.' or '..'";
  if (memchr(name, '/', len) != NULL)
    return "entry name contains '/'";
  if (memchr(name, '\0', len) != NULL)
    return "entry name contains a NUL byte";
  return NULL;
}

const char *narcache__nar_target_problem(const char *target, size_t len,
                                         uint64_t max_len) {
  if (len == 0)
    return "empty symlink target";
  if (len > max_len)
    return "symlink target too long";
  if (memchr(target, '\0', len) != NULL)
    return "symlink target contains a NUL byte";
  return NULL;
}

int narcache__nar_name_cmp(const char *a, size_t alen, const char *b,
                           size_t blen) {
  int c = memcmp(a, b, alen < blen ? alen : blen);
  if (c != 0)
    return c;
  return alen < blen ? -1 : alen > blen;
}

void narcache__nar_quote(char *dst, size_t cap, const char *s, size_t len) {
  size_t o = 0;
  size_t shown = len > 48 ? 48 : len;
  for (size_t i = 0; i < shown && o + 5 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
      dst[o++] = (char)c;
    else
      o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
  }
  if (shown < len && o + 4 < cap) {
    memcpy(dst + o, "...", 3);
    o += 3;
  }
  dst[o < cap ? o : cap - 1] = '\0';
}

int narcache__write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}
