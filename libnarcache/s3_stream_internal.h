/* A GET whose body is read straight off the socket (s3_stream.c).
 *
 * Over plain http, a NAR can go from the object store's socket to the
 * client's without passing through user space: the server splices the one
 * into the other. libcurl cannot hand its socket over mid-response, so for
 * these GETs the store speaks HTTP/1.1 itself: connect, send the signed
 * request head, read and parse the response head; the body is then the
 * socket's remaining bytes (after the few that arrived with the head).
 * Everything here blocks, with deadlines: it runs on the store caller's
 * thread, like the waits on libcurl transfers. */
#ifndef NARCACHE_S3_STREAM_INTERNAL_H
#define NARCACHE_S3_STREAM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "s3_io_internal.h"

/* The largest response head accepted. */
#define NARCACHE__S3_STREAM_HEAD_MAX 16384

typedef struct narcache__s3_stream {
  int fd;
  long status;
  narcache__s3_head head;
  size_t buffered_pos, buffered_len; /* body bytes that came with the head */
  uint8_t buf[NARCACHE__S3_STREAM_HEAD_MAX];
} narcache__s3_stream;

/* Parse a response head: `data` holds `len` bytes from the status line up
 * to and including the blank line. 0 with *status and *head filled;
 * NARCACHE_EIO if it is not a well-formed HTTP/1.x head (a folded or
 * nameless line, a bad or conflicting Content-Length, ...);
 * NARCACHE_ENOTSUP if the body is not delimited by Content-Length
 * (Transfer-Encoding). Informational (1xx) heads parse too: the caller
 * skips them. */
int narcache__s3_response_head_parse(const char *data, size_t len, long *status,
                                     narcache__s3_head *head);

/* Connect to `ip` (a numeric IPv4 or IPv6 address: no name lookup) and
 * `port`, send the `request_len` bytes of `request` (a complete head, no
 * body), and read the final response head. 0 with *out; the caller frees
 * it with _free whatever the status. NARCACHE_EINVAL for an address that
 * is not numeric or a port out of range; NARCACHE_EUNAVAIL for a server
 * that does not answer, a connection that fails, or the deadline;
 * NARCACHE_EIO and NARCACHE_ENOTSUP as for _parse; NARCACHE_ENOMEM. */
int narcache__s3_stream_get(narcache__s3_stream **out, const char *ip, long port,
                            const char *request, size_t request_len,
                            uint32_t connect_timeout_ms, uint64_t deadline_ms);

/* Read body bytes (those buffered first): *got > 0, or 0 at the end of the
 * stream. Waits up to `stall_ms` for bytes (NARCACHE_EUNAVAIL); NARCACHE_EIO
 * for a failed connection. */
int narcache__s3_stream_read(narcache__s3_stream *st, void *buf, size_t len, size_t *got,
                             uint32_t stall_ms);

/* The buffered body bytes: their count, and where they are. */
size_t narcache__s3_stream_buffered(const narcache__s3_stream *st, const void **data);

/* With nothing buffered, wait for bytes and buffer them (none at the end
 * of the stream); errors as for _read. */
int narcache__s3_stream_fill(narcache__s3_stream *st, uint32_t stall_ms);

/* Mark `n` buffered bytes as taken (a caller that used them in place). */
void narcache__s3_stream_drop(narcache__s3_stream *st, size_t n);

/* Close the connection and free. NULL is fine. */
void narcache__s3_stream_free(narcache__s3_stream *st);

#endif
