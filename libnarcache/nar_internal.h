/* Internal interface shared by the NAR module's files. Not installed. */
#ifndef NARCACHE_NAR_INTERNAL_H
#define NARCACHE_NAR_INTERNAL_H

#include "buffer_internal.h"
#include "narcache/nar.h"
#include "common_internal.h"

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

/* write(2) all of `data`, retrying on EINTR and short writes. 0, or -1
 * with errno set. */
int narcache__write_all(int fd, const void *data, size_t len);

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

/* ---- reading ahead (one-pass helpers) ------------------------------------- */

/* Directory descriptors on the way to a node, cached per thread. */
typedef struct narcache__open_dir {
  uint32_t node;
  int fd;
} narcache__open_dir;

typedef struct narcache__dir_chain {
  narcache__open_dir *dirs;
  size_t n, cap;
} narcache__dir_chain;

void narcache__dir_chain_close(narcache__dir_chain *c);

/* Read-only queries on an open dumper's index; safe from several threads
 * while the owner emits. */
uint32_t narcache__nar_dumper_nodes(const narcache_nar_dumper *d);
/* 1 and *size for a regular file, else 0. */
int narcache__nar_dumper_file_size(const narcache_nar_dumper *d, uint32_t i, uint64_t *size);
/* Open node i's file read-only through `c`. 0 or an errno value. */
int narcache__nar_dumper_open_node(const narcache_nar_dumper *d, narcache__dir_chain *c,
                                   uint32_t i, int *fd_out);

/* A source of file contents read ahead by other threads. get() returns 0
 * with *data pointing at exactly the file's indexed size in bytes, or an
 * errno value (-1: the file's size changed); release() says the bytes are
 * no longer needed. Files of 1..max_size bytes are taken from it, in NAR
 * order, each exactly once (no seeking while it is set). */
typedef struct narcache__nar_content_fn_table {
  int (*get)(void *ctx, uint32_t node, const char **data);
  void (*release)(void *ctx, uint32_t node);
} narcache__nar_content_fn_table;
typedef const narcache__nar_content_fn_table *narcache__nar_content_fn;
void narcache__nar_dumper_set_content_source(narcache_nar_dumper *d, narcache__nar_content_fn fn,
                                             void *ctx, uint64_t max_size);

/* narcache_nar_dumper_read, but returns 2 instead of reading a file of at
 * least `stop_size` bytes (0: never), so the caller can take it as a FILE
 * segment with narcache_nar_dumper_next (e.g. to sendfile it). */
int narcache__nar_dumper_read_upto(narcache_nar_dumper *d, narcache_outbuf *out,
                                   uint64_t stop_size);

/* Read small files ahead on narcache__io_threads() worker threads and
 * feed them to `d` as its content source. `d` must be open and must not
 * seek afterwards. 0, or an error (then nothing was started). */
typedef struct narcache__readahead narcache__readahead;
int narcache__readahead_start(narcache__readahead **out, narcache_nar_dumper *d);
/* Stop and join the workers; call before freeing the dumper. NULL is fine. */
void narcache__readahead_stop(narcache__readahead *ra);

/* Let open() stat large directories on up to `threads` threads. */
void narcache__nar_dumper_set_walk_threads(narcache_nar_dumper *d, int threads);
/* Threads worth using for I/O-bound helpers: two per online CPU, 2..8. */
int narcache__io_threads(void);

/* The next span of NAR bytes, without copying where possible: headers and
 * read-ahead contents are returned in place (valid until the next call),
 * other contents are read into `scratch`. 1 with *data and *len set, 0 at
 * the end, or an error (as narcache_nar_dumper_read). */
int narcache__nar_dumper_read_span(narcache_nar_dumper *d, const char **data, size_t *len,
                                   char *scratch, size_t scratch_size);

#endif
