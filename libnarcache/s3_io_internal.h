/* The S3 transport (s3_io.c): HTTP transfers on one I/O thread that drives
 * libcurl's multi interface from a private libuv loop. Callers on any other
 * thread start transfers and wait for them with deadlines. Not installed. */
#ifndef NARCACHE_S3_IO_INTERNAL_H
#define NARCACHE_S3_IO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

struct curl_slist;

#define NARCACHE__S3_ERROR_BODY_MAX 2048

typedef struct narcache__s3_io narcache__s3_io;
typedef struct narcache__s3_xfer narcache__s3_xfer;

/* One HTTP exchange. Strings are copied by libcurl or used only during the
 * call, except `body`, which must stay valid until the transfer is freed. */
typedef struct narcache__s3_request {
  const char *method; /* GET, HEAD, PUT, POST, DELETE */
  const char *url;
  /* Request body: `body_size` bytes at `body`, or, with `body` NULL and
   * body_size > 0, streamed through narcache__s3_xfer_write. */
  const void *body;
  uint64_t body_size;
  size_t request_buffer;  /* ring for a streamed body; 0: 64 KiB */
  size_t response_buffer; /* ring for the response body; 0: 64 KiB */
  uint32_t connect_timeout_ms;
  uint32_t stall_timeout_ms; /* nothing moved (and not paused) for this long */
  uint32_t total_timeout_ms; /* 0: none (streams) */
  int insecure_tls;
  const char *ca_file; /* NULL: the system's */
} narcache__s3_request;

/* What the response head said. */
typedef struct narcache__s3_head {
  uint64_t content_length; /* UINT64_MAX: not given */
  char content_range[80];
  char etag[96];
  char content_encoding[32];
  uint32_t retry_after_s;
} narcache__s3_head;

/* Milliseconds of CLOCK_MONOTONIC, the clock of every deadline below. */
uint64_t narcache__s3_now_ms(void);

/* Start the I/O thread. 0 or NARCACHE_ENOMEM. */
int narcache__s3_io_new(narcache__s3_io **out, long max_connections);

/* Cancel every transfer, stop and join the thread. Every transfer must have
 * been freed by its caller first. */
void narcache__s3_io_free(narcache__s3_io *io);

/* The numeric address and the port of the server that answered the last
 * finished transfer: 0, or NARCACHE_ENOTFOUND before any answered (or when
 * the address does not fit in ip_size). Connections of our own
 * (s3_stream.c) go there, so they need no name lookup of their own: libcurl
 * resolves, with its timeouts and its cache, and each of its answers keeps
 * the address fresh. Any thread. */
int narcache__s3_io_last_peer(narcache__s3_io *io, char *ip, size_t ip_size, long *port);

/* Queue a transfer; `headers` are taken (freed with the transfer, also on
 * failure). 0, NARCACHE_ENOMEM or NARCACHE_EINVAL. */
int narcache__s3_xfer_start(narcache__s3_xfer **out, narcache__s3_io *io,
                            const narcache__s3_request *r, struct curl_slist *headers);

/* Wait for the response head (a final status, >= 200). 0 with *status
 * set; NARCACHE_EUNAVAIL (deadline, or the endpoint unreachable);
 * NARCACHE_EIO or NARCACHE_ECANCELED (the transfer failed). */
int narcache__s3_xfer_wait_head(narcache__s3_xfer *x, uint64_t deadline_ms, long *status);

/* Copy the head's fields (call after _wait_head). */
void narcache__s3_xfer_head(narcache__s3_xfer *x, narcache__s3_head *head);

/* Take response body bytes: *got > 0, or *got == 0 at the end. Waits until
 * enough bytes arrived to be worth a handoff (min(len, 64 KiB), or fewer
 * after a few milliseconds), the transfer ends, or the deadline
 * (NARCACHE_EUNAVAIL). A failed transfer gives its error after the bytes
 * that did arrive. */
int narcache__s3_xfer_read(narcache__s3_xfer *x, void *buf, size_t len, size_t *got,
                           uint64_t deadline_ms);

/* Like _read, without the copy: *data and *len (> 0) are the unread bytes
 * that lie next to each other in the response ring, *len == 0 at the end.
 * `want` is how many the caller could use. The span stays valid and
 * unchanged until _consume or _free; one reader at a time. */
int narcache__s3_xfer_peek(narcache__s3_xfer *x, size_t want, const void **data, size_t *len,
                           uint64_t deadline_ms);

/* For a reader that waits elsewhere (an event loop): 1 with *fd, an
 * eventfd that becomes readable at the next body bytes, a full ring or the
 * end (poll it; never read it: the next _arm drains it); 0 if one of those
 * is there already (peek now); -1 if no descriptor could be made (wait in
 * _peek instead). *fd belongs to the transfer. One reader at a time. */
int narcache__s3_xfer_arm(narcache__s3_xfer *x, int *fd);

/* Mark the first `n` bytes of the last peeked span as taken. */
void narcache__s3_xfer_consume(narcache__s3_xfer *x, size_t n);

/* Feed a streamed request body; waits for room until the deadline
 * (NARCACHE_EUNAVAIL). A transfer that ended early gives its error. */
int narcache__s3_xfer_write(narcache__s3_xfer *x, const void *data, size_t len,
                            uint64_t deadline_ms);

/* The streamed body is complete. */
void narcache__s3_xfer_end_body(narcache__s3_xfer *x);

/* Wait for the end: 0 (a response was received, see *status) or an error. */
int narcache__s3_xfer_wait_done(narcache__s3_xfer *x, uint64_t deadline_ms, long *status);

/* The start of an error response's body (S3's XML), or "". Valid until
 * the transfer is freed; complete once the transfer is done. */
const char *narcache__s3_xfer_error_body(narcache__s3_xfer *x);

/* libcurl's message for a failed transfer, or "". */
const char *narcache__s3_xfer_curl_error(narcache__s3_xfer *x);

/* Release the caller's hold; a running transfer is cancelled. NULL: no-op. */
void narcache__s3_xfer_free(narcache__s3_xfer *x);

#endif
