/* Internal interface shared by the NAR module's files. Not installed. */
#ifndef NARCACHE_NAR_INTERNAL_H
#define NARCACHE_NAR_INTERNAL_H

#include "buffer_internal.h"
#include "narcache/nar.h"


#if defined(__GNUC__) || defined(__clang__)
#define NARCACHE_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define NARCACHE_PRINTF(fmt, args)
#endif

#define NAR_MAGIC "nix-archive-1"
/* Longest keyword of the grammar ("nix-archive-1"). */
#define NAR_KEYWORD_MAX 13
#define NAR_ERRMSG_SIZE 256

typedef struct narcache__nar_limits {
  uint64_t name_len;
  uint64_t target_len;
  uint64_t depth;
  uint64_t size;
} narcache__nar_limits;

/* Parser/writer defaults (newest Nix). */
void narcache__nar_limits_init(narcache__nar_limits *l);
/* 0, or NARCACHE_EINVAL for an unknown limit or a zero value. */
int narcache__nar_limits_set(narcache__nar_limits *l, int limit, uint64_t value);

/* Bytes a STR() frame of `len` content bytes occupies: 8 + len + padding. */
static inline uint64_t narcache__nar_frame_size(uint64_t len) {
  return 8 + len + ((8 - len % 8) % 8);
}

/* Append STR(s) to `b`. 0 or NARCACHE_ENOMEM. */
int narcache__nar_put_str(narcache__buf *b, const void *s, size_t len);
int narcache__nar_put_token(narcache__buf *b, const char *keyword);
/* Append only the 8-byte little-endian length of a frame. */
int narcache__nar_put_len(narcache__buf *b, uint64_t len);
/* Append the zero padding that follows `len` content bytes. */
int narcache__nar_put_padding(narcache__buf *b, uint64_t len);

/* Why `name` is not a valid entry name, or NULL if it is. */
const char *narcache__nar_name_problem(const char *name, size_t len,
                                       uint64_t max_len);
/* Why `target` is not a valid symlink target, or NULL if it is. */
const char *narcache__nar_target_problem(const char *target, size_t len,
                                         uint64_t max_len);
/* memcmp order with the shorter string first on a common prefix. */
int narcache__nar_name_cmp(const char *a, size_t alen, const char *b,
                           size_t blen);

/* Render `s` for an error message: printable ASCII as is, other bytes as
 * \xNN, cut with "..." past about 48 bytes. Always NUL terminates. */
void narcache__nar_quote(char *dst, size_t cap, const char *s, size_t len);

/* ---- listings ------------------------------------------------------------ */

/* Builds `.ls` JSON from NAR events (from the parser, or synthesised from a
 * dumper's index). */
typedef struct narcache__nar_listing {
  narcache__buf json;
  narcache__buf first; /* per open directory: 1 until its first entry */
} narcache__nar_listing;

int narcache__nar_listing_event(narcache__nar_listing *l, const narcache_nar_event *ev);
void narcache__nar_listing_free(narcache__nar_listing *l);

/* Feed `cb` the events of the dumper's index: DIR_BEGIN, ENTRY, FILE_BEGIN
 * (size, executable, offset of the contents), SYMLINK, DIR_END, END. No
 * FILE_DATA or FILE_END. Stops at the first negative return. */
typedef int (*narcache__nar_event_cb)(void *ctx, const narcache_nar_event *ev);
int narcache__nar_dumper_events(narcache_nar_dumper *d, narcache__nar_event_cb cb, void *ctx);

#endif
