/* One client connection: reading and parsing requests (pipelined, one at
 * a time), asking the store on the threadpool, and writing responses.
 *
 * The socket is a plain non-blocking fd watched by a uv_poll_t, so that
 * the body of a response can be moved by a threadpool task with
 * sendfile() (zero copy, and a slow disk never stalls the loop) or read
 * from the store there and written: the loop itself only writes response
 * heads and small bodies. While a task pumps the body, the loop leaves the
 * socket alone; the task stops when the socket is full (EAGAIN) and the
 * loop waits for it to drain before queueing the next one, so memory per
 * connection is one pump buffer at most, whatever the client's speed.
 * File contents go from the page cache into a pipe and from it into the
 * socket with splice(), uncopied. */
#define _GNU_SOURCE
#include "server_internal.h"
#include "narcache/narinfo.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Objects up to this size are read completely by the store task and sent
 * from memory with the head; larger files go out with sendfile(). */
#define SMALL_OBJECT_MAX (256 * 1024)
#define SMALL_FILE_MAX (64 * 1024)
/* Buffer of a task reading a generated body (a NAR dumped on the fly). */
#define PUMP_BUFFER (256 * 1024)
/* Most bytes one pump task moves before letting others have the pool. */
#define PUMP_BUDGET (16u * 1024 * 1024)
/* File contents from this size on are spliced (no copy); below, copying
 * them into the pump buffer with their neighbours makes fewer, fuller
 * TCP segments and fewer syscalls. */
#define SPLICE_MIN (128 * 1024)
/* A BYTES piece at least this large is sent from where it lies (a store's
 * receive ring) rather than gathered into the pump buffer. */
#define SEND_IN_PLACE_MIN (16 * 1024)
/* How long a STREAM segment may keep us waiting for bytes when its
 * producer does not say: never for ever. */
#define STREAM_WAIT_DEFAULT_MS 60000
/* How long a pool task waits for a STREAM source before handing the wait
 * to the loop: long enough that a source keeping up (an object store on
 * the LAN) is read without a trip through the loop, short enough that a
 * slow one does not hold the pool's threads. */
#define STREAM_GRACE_MS 5
/* Capacity asked for a response's pipe (file pages go from the page cache
 * through it into the socket): 1 MiB per splice into the socket, where
 * sendfile() moves 64 KiB at a time. Best effort (pipe-max-size and the
 * per-user pipe quota may refuse it). */
#define PIPE_CAPACITY (1024 * 1024)
/* An upload's body goes to the store in pieces of this size. */
#define UPLOAD_BUFFER (256 * 1024)
/* Bytes read from the socket at a time beyond the head limit. */
#define READ_CHUNK 4096
/* The window over which NARCACHE_OPT_MIN_BODY_RATE is judged. */
#define MIN_RATE_WINDOW_MS 30000

enum phase {
  PHASE_IDLE,    /* waiting for the first byte of a request */
  PHASE_HEAD,    /* part of a head received */
  PHASE_STORE,   /* a store task is opening the object */
  PHASE_SEND,    /* the loop writes the head (and a memory body) */
  PHASE_PUMP,    /* a task moves the body */
  PHASE_BLOCKED, /* the body waits for the socket to drain */
  PHASE_SOURCE,  /* the body waits for its STREAM source or WAIT descriptor */
  PHASE_RECEIVE, /* an upload's body is being read from the socket */
};

enum pump_result { PUMP_DONE, PUMP_AGAIN, PUMP_BLOCKED, PUMP_STARVED, PUMP_FAILED };

/* Longest Location a 307 carries (the head buffer holds 1536 bytes). */
#define REDIRECT_URL_MAX 1100

/* What only a request being answered needs: kept out of idle connections,
 * which are most of them (10,000 idle keep-alive clients are normal). */
typedef struct srv_scratch {
  char head[1536];  /* the response head */
  char name[600];   /* the object name, percent-decoded */
  char target[1025]; /* the request target, for logs (truncated) */
  /* The response's pipe: its last pipe_pending body bytes are in it.
   * `seg` is a generated body's current piece, `seg_used` bytes of it
   * already taken. */
  int pipe_state; /* 0 not tried, 1 open, -1 unavailable: sendfile() */
  int pipe_fds[2];
  size_t pipe_pending;
  narcache_nar_segment seg;
  uint64_t seg_used;
  /* Watches seg.fd while the body waits for it (PHASE_SOURCE). */
  uv_poll_t source;
  int source_open; /* from uv_poll_init until its close callback */
  /* An upload (PUT): its store side, the body bytes not yet handed to it,
   * the bytes still to read, and the outcome of the last task. */
  srv_upload *upload;
  int counted_upload; /* holds a place in server->uploads_active */
  int upload_counted; /* its outcome is in the metrics */
  int upload_kind;
  char *up_buf;
  size_t up_len;
  uint64_t up_left, up_received;
  uint64_t up_started_ms;
  int up_status;
  char up_why[256];
} srv_scratch;

typedef struct srv_conn {
  struct srv_conn *next, *prev;
  srv_t *server;
  uv_poll_t poll;
  uv_timer_t timer;
  int fd;
  int polling_events;
  int closing;       /* close requested; done once no task runs */
  int handles_open;  /* poll and timer (and x->source while set up) not yet closed */
  char peer[80];

  /* input */
  char *in;
  size_t in_len, in_cap;
  narcache__http_head_scanner scan;

  /* the request being answered */
  int phase;
  narcache__http_request req;
  size_t head_len;
  int route;
  char method[16];
  struct srv_scratch *x; /* while a request is answered; NULL when idle */
  uint64_t started_ns;
  int keep_alive;
  int head_only;

  /* the store task */
  uv_work_t work;
  int work_busy;
  int kind;
  size_t name_len;
  int open_rc;
  narcache_reader reader;
  int reader_open;
  char *small; /* whole object read by the task (narcache__malloc) */
  char *redirect; /* the store said: fetch it there (307); narcache_free */
  size_t small_len;
  int from_cache; /* small came from the memory cache */
  int store_deadline; /* the timer runs NARCACHE_OPT_STORE_TIMEOUT_MS for it */
  int answered_early; /* a 503 went out while the task ran (store_overdue) */

  /* the response */
  int status;
  size_t head_out, head_pos;
  char *body_mem; /* memory body, owned (narcache__malloc) */
  size_t body_mem_len, body_mem_pos;
  int streaming; /* a body to pump from `reader` */
  uint64_t body_pos, body_end;
  char *pump_buf;
  size_t pump_len, pump_pos;
  int pump_result;
  int pump_errno;
  uint64_t pump_moved;
  uint64_t body_sent;
  uint64_t body_started_ms, last_progress_ms;
  int aborted;
} srv_conn;

static void on_poll(uv_poll_t *h, int status, int events);
static void process_input(srv_conn *c);
static void write_out(srv_conn *c);
static void queue_pump(srv_conn *c);
static void wait_for_source(srv_conn *c);
static void on_source_ready(uv_poll_t *h, int status, int events);
static void on_source_closed(uv_handle_t *h);
static void close_conn(srv_conn *c);
static int upload_too_slow(srv_conn *c);
static void stop_waiting_for_source(srv_conn *c);
static void on_handle_closed(uv_handle_t *h);

srv_conn *narcache__srv_conn_next(srv_conn *c) { return c->next; }

/* ------------------------------------------------------------------ */
/* Polling and timers                                                  */
/* ------------------------------------------------------------------ */

static void watch(srv_conn *c, int events) {
  if (c->closing || events == c->polling_events)
    return;
  c->polling_events = events;
  if (events == 0)
    uv_poll_stop(&c->poll);
  else
    uv_poll_start(&c->poll, events, on_poll);
}

static void on_timer(uv_timer_t *t);
static void store_overdue(srv_conn *c);

static void arm_timer(srv_conn *c, int64_t ms) {
  if (!c->closing)
    uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
}

static void on_timer(uv_timer_t *t) {
  srv_conn *c = t->data;
  srv_t *s = c->server;
  switch (c->phase) {
  case PHASE_IDLE:
    close_conn(c); /* idle keep-alive connection */
    return;
  case PHASE_HEAD:
    narcache__srv_log(s, NARCACHE_LOG_DEBUG, "header_timeout", "request head too slow",
                      (narcache_log_field[]){{"peer", c->peer}}, 1);
    c->aborted = 1;
    close_conn(c);
    return;
  case PHASE_RECEIVE:
    if (upload_too_slow(c)) {
      narcache__srv_log(s, NARCACHE_LOG_INFO, "upload_stalled",
                        "upload body too slow or stopped: dropped",
                        (narcache_log_field[]){{"peer", c->peer}, {"target", c->x->target}}, 2);
      c->aborted = 1;
      close_conn(c);
      return;
    }
    arm_timer(c, s->opt[NARCACHE_OPT_BODY_STALL_MS] / 4 + 1);
    return;
  case PHASE_SEND:
  case PHASE_BLOCKED: {
    uint64_t now = narcache__srv_now_ms(s);
    if ((int64_t)(now - c->last_progress_ms) >= s->opt[NARCACHE_OPT_BODY_STALL_MS]) {
      narcache__srv_log(s, NARCACHE_LOG_INFO, "send_stalled",
                        "client stopped reading: response aborted",
                        (narcache_log_field[]){{"peer", c->peer}, {"target", c->x->target}}, 2);
      c->aborted = 1;
      close_conn(c);
      return;
    }
    arm_timer(c, s->opt[NARCACHE_OPT_BODY_STALL_MS] - (int64_t)(now - c->last_progress_ms));
    return;
  }
  case PHASE_STORE:
    if (c->store_deadline)
      store_overdue(c);
    return;
  case PHASE_SOURCE:
    narcache__srv_log(s, NARCACHE_LOG_ERROR, "body_failed",
                      "the store stopped sending the body: connection aborted",
                      (narcache_log_field[]){{"peer", c->peer}, {"target", c->x->target}}, 2);
    c->aborted = 1;
    close_conn(c);
    return;
  default:
    return; /* a task runs: its completion re-arms */
  }
}

/* ------------------------------------------------------------------ */
/* Creating and closing                                                */
/* ------------------------------------------------------------------ */

int narcache__srv_conn_start(srv_t *s, int fd, const char *peer) {
  srv_conn *c = narcache__calloc(1, sizeof *c);
  if (c == NULL)
    return NARCACHE_ENOMEM;
  if (uv_poll_init(s->loop, &c->poll, fd) != 0) {
    narcache__free(c);
    return NARCACHE_EIO;
  }
  uv_timer_init(s->loop, &c->timer);
  c->poll.data = c->timer.data = c;
  /* Heads and small bodies are complete when written: waiting for an ACK
   * (Nagle) would add the client's delayed-ACK time, ~40 ms, to the next
   * response on the connection. Fails harmlessly on unix sockets. */
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->handles_open = 2;
  c->server = s;
  c->fd = fd;
  c->reader.fd = -1;
  snprintf(c->peer, sizeof c->peer, "%s", peer);
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  s->conns = c;
  s->n_conns++;
  c->phase = PHASE_IDLE;
  watch(c, UV_READABLE);
  /* A connection that never sends a byte is held to the header timeout. */
  arm_timer(c, s->opt[NARCACHE_OPT_HEADER_TIMEOUT_MS]);
  return NARCACHE_OK;
}

typedef struct abort_job {
  uv_work_t work;
  srv_t *server;
  srv_upload *upload;
} abort_job;

static void abort_upload_work(uv_work_t *w) {
  narcache__srv_upload_abort(((abort_job *)w->data)->upload);
}

static void abort_upload_done(uv_work_t *w, int status) {
  (void)status;
  abort_job *job = w->data;
  srv_t *s = job->server;
  s->work_in_flight--;
  narcache__free(job);
  narcache__srv_maybe_stopped(s);
}

/* Drop an unfinished upload on the pool (removing its temporary file is
 * file I/O: not on the loop); inline only if no task can be queued. */
static void abort_upload(srv_t *s, srv_upload *u) {
  abort_job *job = narcache__malloc(sizeof *job);
  if (job != NULL) {
    *job = (abort_job){.server = s, .upload = u};
    job->work.data = job;
    if (uv_queue_work(s->loop, &job->work, abort_upload_work, abort_upload_done) == 0) {
      s->work_in_flight++;
      return;
    }
    narcache__free(job);
  }
  narcache__srv_upload_abort(u);
}

static void release_upload(srv_conn *c) {
  srv_scratch *x = c->x;
  if (x == NULL)
    return;
  if (x->counted_upload && !x->upload_counted) /* it ended without an answer */
    narcache__srv_count_upload(c->server, 0, x->up_received);
  if (x->upload != NULL)
    abort_upload(c->server, x->upload);
  x->upload = NULL;
  if (x->counted_upload)
    c->server->uploads_active--;
  x->counted_upload = 0;
  narcache__free(x->up_buf);
  x->up_buf = NULL;
}

static void release_reader(srv_conn *c) {
  release_upload(c);
  if (c->x != NULL && c->x->pipe_state == 1) {
    close(c->x->pipe_fds[0]);
    close(c->x->pipe_fds[1]);
    c->x->pipe_state = 0;
  }
  if (c->reader_open) {
    narcache_reader_close(&c->reader);
    c->reader_open = 0;
  }
  narcache__free(c->small);
  c->small = NULL;
  narcache_free(c->redirect);
  c->redirect = NULL;
  narcache__free(c->body_mem);
  c->body_mem = NULL;
  c->body_mem_len = c->body_mem_pos = 0;
}

static void on_handle_closed(uv_handle_t *h) {
  srv_conn *c = h->data;
  if (--c->handles_open > 0)
    return;
  srv_t *s = c->server;
  close(c->fd);
  release_reader(c);
  narcache__free(c->pump_buf);
  narcache__free(c->in);
  narcache__free(c->x);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  narcache__free(c);
  narcache__srv_conn_closed(s, NULL);
}

static void report_access(srv_conn *c);

/* Close now, or as soon as the running task ends (it may be using the
 * socket). */
static void close_conn(srv_conn *c) {
  if (c->work_busy) {
    c->closing = 1; /* after_work comes back here */
    return;
  }
  if (c->handles_open < 2 || uv_is_closing((uv_handle_t *)&c->poll))
    return;
  if (c->phase != PHASE_IDLE && c->phase != PHASE_HEAD)
    report_access(c);
  c->phase = PHASE_IDLE;
  c->closing = 1;
  stop_waiting_for_source(c);
  uv_close((uv_handle_t *)&c->poll, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

void narcache__srv_conn_abort(srv_conn *c) {
  c->aborted = 1;
  close_conn(c);
}

/* Stopping: idle connections go now; a request in progress finishes and
 * its connection closes after it. */
void narcache__srv_conn_stop_gracefully(srv_conn *c) {
  c->keep_alive = 0;
  if (c->phase == PHASE_IDLE || c->phase == PHASE_HEAD)
    close_conn(c);
}

/* ------------------------------------------------------------------ */
/* Finishing a request                                                 */
/* ------------------------------------------------------------------ */

static void report_access(srv_conn *c) {
  srv_t *s = c->server;
  double seconds = (double)(uv_hrtime() - c->started_ns) / 1e9;
  int status = c->aborted && c->head_pos < c->head_out ? 0 : c->status;
  narcache__srv_count_request(s, c->route, status, seconds);
  s->metrics.body_bytes += c->body_sent;
  if (c->aborted)
    s->metrics.aborted++;
  if (s->hooks.access == NULL)
    return;
  narcache_access_record r = {1,
                              c->method[0] ? c->method : "-",
                              c->x->target,
                              narcache__srv_route_name(c->route),
                              status,
                              c->body_sent,
                              (uint64_t)(seconds * 1e6),
                              c->peer,
                              c->aborted};
  s->hooks.access(s->userdata, &r);
}

/* The response is out: report it, then wait for the next request (which
 * may already be in the buffer) or close. */
static void finish_request(srv_conn *c) {
  srv_t *s = c->server;
  report_access(c);
  release_reader(c);
  c->streaming = 0;
  c->head_out = c->head_pos = 0;
  if (!c->keep_alive || s->stopping) {
    c->phase = PHASE_IDLE;
    close_conn(c);
    return;
  }
  /* Drop the request's bytes; keep what follows (pipelining). */
  memmove(c->in, c->in + c->head_len, c->in_len - c->head_len);
  c->in_len -= c->head_len;
  c->head_len = 0;
  memset(&c->scan, 0, sizeof c->scan);
  c->phase = PHASE_IDLE;
  c->status = 0;
  c->body_sent = 0;
  c->aborted = 0;
  c->head_only = 0; /* a refused request after a HEAD gets its body */
  c->method[0] = '\0';
  narcache__free(c->x);
  c->x = NULL;
  narcache__free(c->pump_buf);
  c->pump_buf = NULL;
  if (c->in_len == 0) {
    narcache__free(c->in); /* idle connections hold no buffer */
    c->in = NULL;
    c->in_cap = 0;
  }
  watch(c, UV_READABLE);
  arm_timer(c, c->in_len > 0 ? s->opt[NARCACHE_OPT_HEADER_TIMEOUT_MS]
                             : s->opt[NARCACHE_OPT_IDLE_TIMEOUT_MS]);
  if (c->in_len > 0)
    process_input(c);
}

/* ------------------------------------------------------------------ */
/* Response heads                                                      */
/* ------------------------------------------------------------------ */

static const char *reason_phrase(int status) {
  switch (status) {
  case 200: return "OK";
  case 206: return "Partial Content";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 411: return "Length Required";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 416: return "Range Not Satisfiable";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 505: return "HTTP Version Not Supported";
  case 507: return "Insufficient Storage";
  default: return "Unknown";
  }
}

/* "Date:" value, formatted once per second. */
static const char *http_date(void) {
  static _Thread_local time_t cached_at = -1;
  static _Thread_local char text[64];
  time_t now = time(NULL);
  if (now != cached_at) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    cached_at = now;
  }
  return text;
}

/* Start the head: status line and the fields every response has. */
static int head_begin(srv_conn *c, int status) {
  c->status = status;
  return snprintf(c->x->head, sizeof c->x->head, "HTTP/1.1 %d %s\r\nServer: narcache\r\nDate: %s\r\n",
                  status, reason_phrase(status), http_date());
}

/* Append raw text (complete "Name: value\r\n" lines). */
static void head_add(srv_conn *c, int *n, const char *lines) {
  if (*n >= 0 && (size_t)*n < sizeof c->x->head)
    *n += snprintf(c->x->head + *n, sizeof c->x->head - (size_t)*n, "%s", lines);
}

static void head_add_field(srv_conn *c, int *n, const char *name, const char *value) {
  if (*n >= 0 && (size_t)*n < sizeof c->x->head)
    *n += snprintf(c->x->head + *n, sizeof c->x->head - (size_t)*n, "%s: %s\r\n", name, value);
}

/* End the head: Content-Length, Connection, blank line. */
static void head_end(srv_conn *c, int n, uint64_t content_length) {
  if (n >= 0 && (size_t)n < sizeof c->x->head)
    n += snprintf(c->x->head + n, sizeof c->x->head - (size_t)n, "Content-Length: %llu\r\n%s\r\n",
                  (unsigned long long)content_length, c->keep_alive ? "" : "Connection: close\r\n");
  c->head_out = n > 0 && (size_t)n < sizeof c->x->head ? (size_t)n : 0;
  c->head_pos = 0;
}

/* A response with a short text body (errors, /healthz, small objects). */
static void respond_text(srv_conn *c, int status, const char *content_type, const char *text,
                         size_t len, const char *extra_fields) {
  srv_t *s = c->server;
  int n = head_begin(c, status);
  head_add_field(c, &n, "Content-Type", content_type);
  if (status == 503) {
    char retry[64];
    snprintf(retry, sizeof retry, "%lld", (long long)s->opt[NARCACHE_OPT_RETRY_AFTER]);
    head_add_field(c, &n, "Retry-After", retry);
  }
  if (extra_fields != NULL)
    head_add(c, &n, extra_fields);
  head_end(c, n, len);
  narcache__free(c->body_mem);
  c->body_mem = NULL;
  c->body_mem_len = c->body_mem_pos = 0;
  if (!c->head_only && len > 0) {
    c->body_mem = narcache__malloc(len);
    if (c->body_mem == NULL) {
      c->aborted = 1;
      close_conn(c);
      return;
    }
    memcpy(c->body_mem, text, len);
    c->body_mem_len = len;
  }
  c->phase = PHASE_SEND;
  c->last_progress_ms = c->body_started_ms = narcache__srv_now_ms(s);
  write_out(c);
}

/* A refusal of the request itself: the connection cannot be trusted to
 * be in step any more (unread body, bad framing), so it closes. */
static void refuse(srv_conn *c, int status, const char *why) {
  c->keep_alive = 0;
  char body[300];
  int n = snprintf(body, sizeof body, "%d %s: %s\n", status, reason_phrase(status), why);
  const char *extra = NULL;
  if (status == 405)
    extra = c->server->opt[NARCACHE_OPT_MAX_UPLOAD_BYTES] > 0 ? "Allow: GET, HEAD, PUT\r\n"
                                                             : "Allow: GET, HEAD\r\n";
  else if (status == 401)
    extra = "WWW-Authenticate: Basic realm=\"narcache\", Bearer\r\n";
  respond_text(c, status, "text/plain; charset=utf-8", body, (size_t)n, extra);
}

/* ------------------------------------------------------------------ */
/* Writing from the loop                                               */
/* ------------------------------------------------------------------ */

static void note_progress(srv_conn *c, size_t body_bytes) {
  srv_t *s = c->server;
  uint64_t now = narcache__srv_now_ms(s);
  c->last_progress_ms = now;
  c->body_sent += body_bytes;
}

/* The body's average rate fell below the minimum: a client trickling a
 * large NAR would hold its resources for ever. */
static int below_min_rate(srv_conn *c, uint64_t bytes, uint64_t since_ms) {
  srv_t *s = c->server;
  uint64_t elapsed = narcache__srv_now_ms(s) - since_ms;
  int64_t min_rate = s->opt[NARCACHE_OPT_MIN_BODY_RATE];
  return min_rate > 0 && elapsed > MIN_RATE_WINDOW_MS &&
         (double)bytes * 1000.0 / (double)elapsed < (double)min_rate;
}

static int too_slow(srv_conn *c) { return below_min_rate(c, c->body_sent, c->body_started_ms); }

/* No body byte went out for the stall timeout, however often the socket
 * claimed to be writable. */
static int stalled(srv_conn *c) {
  srv_t *s = c->server;
  return (int64_t)(narcache__srv_now_ms(s) - c->last_progress_ms) >= s->opt[NARCACHE_OPT_BODY_STALL_MS];
}

/* Write the head and memory body; then start pumping or finish. */
static void write_out(srv_conn *c) {
  while (c->head_pos < c->head_out || c->body_mem_pos < c->body_mem_len) {
    struct iovec iov[2];
    int n = 0;
    if (c->head_pos < c->head_out)
      iov[n++] = (struct iovec){c->x->head + c->head_pos, c->head_out - c->head_pos};
    if (c->body_mem_pos < c->body_mem_len)
      iov[n++] = (struct iovec){c->body_mem + c->body_mem_pos, c->body_mem_len - c->body_mem_pos};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      c->phase = PHASE_SEND;
      watch(c, UV_WRITABLE);
      arm_timer(c, c->server->opt[NARCACHE_OPT_BODY_STALL_MS]);
      return;
    }
    if (w < 0) {
      c->aborted = 1;
      close_conn(c);
      return;
    }
    size_t done = (size_t)w, from_head = c->head_out - c->head_pos;
    if (done < from_head) {
      c->head_pos += done;
      note_progress(c, 0);
      continue;
    }
    c->head_pos = c->head_out;
    c->body_mem_pos += done - from_head;
    note_progress(c, done - from_head);
  }
  if (c->streaming && c->body_pos < c->body_end) {
    queue_pump(c);
    return;
  }
  finish_request(c);
}

/* ------------------------------------------------------------------ */
/* Pumping a body on the threadpool                                    */
/* ------------------------------------------------------------------ */

/* Hand the connection to a pool task (the loop leaves its socket alone
 * meanwhile). -1 if the task cannot be queued. */
static int queue_task(srv_conn *c, int phase, uv_work_cb work, uv_after_work_cb done) {
  watch(c, 0);
  uv_timer_stop(&c->timer);
  c->phase = phase;
  c->work.data = c;
  if (uv_queue_work(c->server->loop, &c->work, work, done) != 0)
    return -1;
  c->work_busy = 1;
  c->server->work_in_flight++;
  return 0;
}

/* The pool task ended; 1 if the connection was closed meanwhile (or the
 * task cancelled): then it is closed now and the caller stops. */
static int task_ended(srv_conn *c, int status) {
  c->work_busy = 0;
  c->server->work_in_flight--;
  if (!c->closing && status == 0)
    return 0;
  c->closing = 0;
  if (!c->answered_early)
    c->aborted = 1;
  close_conn(c);
  return 1;
}

static int socket_would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

/* sendfile() has no MSG_NOSIGNAL: writing to a connection the client
 * reset raises SIGPIPE, which would kill an embedding program that did
 * not ignore it. Pool threads block it, and a SIGPIPE left pending by
 * such a write is taken back at once. */
static void block_sigpipe(void) {
  static _Thread_local int blocked;
  if (blocked)
    return;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  blocked = 1;
}

static void discard_sigpipe(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  struct timespec zero = {0, 0};
  while (sigtimedwait(&set, NULL, &zero) == SIGPIPE)
    continue;
}

/* The pipe through which file contents go to the socket, made at the
 * first file region of a response. 0 if it is open; -1 if not (out of
 * descriptors): sendfile() is used instead. */
static int pipe_ready(srv_conn *c) {
  srv_scratch *x = c->x;
  if (x->pipe_state == 0) {
    x->pipe_state = pipe2(x->pipe_fds, O_NONBLOCK | O_CLOEXEC) == 0 ? 1 : -1;
    if (x->pipe_state == 1)
      (void)fcntl(x->pipe_fds[1], F_SETPIPE_SZ, PIPE_CAPACITY); /* the default works too */
  }
  return x->pipe_state == 1 ? 0 : -1;
}

/* A write to the socket failed: stop for EAGAIN (wait for the socket to
 * drain), abort for anything else. errno is judged before
 * discard_sigpipe() replaces it: reading EPIPE as "socket full" once
 * retried a dead connection for ever. Returns -1. */
static int socket_failed(srv_conn *c, ssize_t n) {
  c->pump_errno = n < 0 ? errno : 0;
  c->pump_result = n < 0 && socket_would_block(c->pump_errno) ? PUMP_BLOCKED : PUMP_FAILED;
  if (c->pump_errno == EPIPE)
    discard_sigpipe();
  return -1;
}

static int body_failed(srv_conn *c, int err) {
  c->pump_errno = err;
  c->pump_result = PUMP_FAILED;
  return -1;
}

/* Move the pipe's contents into the socket. 0 once it is empty; -1 with
 * pump_result set to stop. */
static int drain_pipe(srv_conn *c) {
  srv_scratch *x = c->x;
  while (x->pipe_pending > 0) {
    ssize_t n = splice(x->pipe_fds[0], NULL, c->fd, NULL, x->pipe_pending,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return socket_failed(c, n);
    x->pipe_pending -= (size_t)n;
    c->pump_moved += (uint64_t)n;
  }
  return 0;
}

/* Send up to `want` bytes of `file` at `offset` as the next body bytes,
 * without copying them: spliced into the pipe (drained by the caller's
 * next turn), or with sendfile() when there is no pipe. Returns the
 * bytes taken; -1 with pump_result set to stop (socket full, client gone,
 * or the file shorter than announced: never a short body). */
static ssize_t send_file_region(srv_conn *c, int file, uint64_t offset, uint64_t want) {
  ssize_t n = -1;
  if (pipe_ready(c) == 0) {
    if (want > PIPE_CAPACITY)
      want = PIPE_CAPACITY;
    loff_t from = (loff_t)offset;
    while ((n = splice(file, &from, c->x->pipe_fds[1], NULL, (size_t)want, SPLICE_F_MOVE)) < 0 &&
           errno == EINTR)
      continue;
    if (n > 0)
      c->x->pipe_pending += (size_t)n;
    /* an empty pipe that takes nothing (EAGAIN) falls through to sendfile */
  }
  if (n < 0 && (c->x->pipe_state != 1 || errno == EAGAIN)) {
    if (want > (1u << 22))
      want = 1u << 22;
    off_t from = (off_t)offset;
    while ((n = sendfile(c->fd, file, &from, (size_t)want)) < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return socket_failed(c, n);
    c->pump_moved += (uint64_t)n;
  }
  if (n <= 0)
    return body_failed(c, n < 0 ? errno : 0);
  c->body_pos += (uint64_t)n;
  return n;
}

/* The pump buffer, allocated when a body first needs it (bodies sent
 * from files, pipes or a store's memory never do). 0, or -1 with
 * pump_result set. */
static int need_pump_buf(srv_conn *c) {
  if (c->pump_buf == NULL && (c->pump_buf = narcache__malloc(PUMP_BUFFER)) == NULL)
    return body_failed(c, ENOMEM);
  return 0;
}

/* Send from a segment's own memory; the pipe and the pump buffer are empty. */
static int send_in_place(srv_conn *c, const char *data, uint64_t want) {
  if (want > (1u << 22))
    want = 1u << 22;
  ssize_t n;
  while ((n = send(c->fd, data, (size_t)want, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno == EINTR)
    continue;
  if (n <= 0)
    return socket_failed(c, n);
  c->x->seg_used += (uint64_t)n;
  c->body_pos += (uint64_t)n;
  c->pump_moved += (uint64_t)n;
  return 0;
}

/* Take the next bytes of a STREAM segment (a store's socket): spliced into
 * the pipe, or read into the pump buffer without one. The pipe and the pump
 * buffer are empty. Waits up to the segment's wait_ms for bytes. */
static int take_from_stream(srv_conn *c, const narcache_nar_segment *seg, uint64_t want) {
  int use_pipe = pipe_ready(c) == 0;
  if (!use_pipe && need_pump_buf(c) < 0)
    return -1;
  uint64_t cap = use_pipe ? PIPE_CAPACITY : PUMP_BUFFER;
  if (want > cap)
    want = cap;
  ssize_t n;
  for (;;) {
    n = use_pipe ? splice(seg->fd, NULL, c->x->pipe_fds[1], NULL, (size_t)want,
                          SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
                 : read(seg->fd, c->pump_buf, (size_t)want);
    if (n > 0)
      break;
    if (n == 0)
      return body_failed(c, 0); /* the stream ended early */
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN)
      return body_failed(c, errno);
    struct pollfd p = {.fd = seg->fd, .events = POLLIN};
    int ready = poll(&p, 1, STREAM_GRACE_MS);
    if (ready == 0) {
      c->pump_result = PUMP_STARVED; /* the loop waits for it */
      return -1;
    }
    if (ready < 0 && errno != EINTR)
      return body_failed(c, errno);
  }
  if (use_pipe) {
    c->x->pipe_pending += (size_t)n;
  } else {
    c->pump_len = (size_t)n;
    c->pump_pos = 0;
  }
  c->x->seg_used += (uint64_t)n;
  c->body_pos += (uint64_t)n;
  return 0;
}

/* A segment the reader may give for `pos`: a known kind, where it was
 * asked for, with bytes -- except WAIT, which has none. */
static int segment_valid(const narcache_nar_segment *seg, uint64_t pos) {
  if (seg->nar_offset != pos)
    return 0;
  switch (seg->kind) {
  case NARCACHE_NAR_SEG_BYTES:
  case NARCACHE_NAR_SEG_FILE:
  case NARCACHE_NAR_SEG_STREAM:
    return seg->length > 0;
  case NARCACHE_NAR_SEG_WAIT:
    return seg->length == 0;
  default:
    return 0;
  }
}

/* The generated body's piece at body_pos: the current one until it is
 * used up (so a large file is not reopened for every pipe load). */
static narcache_nar_segment *current_segment(srv_conn *c) {
  srv_scratch *x = c->x;
  narcache_nar_segment *seg = &x->seg;
  if (x->seg_used < seg->length && seg->nar_offset + x->seg_used == c->body_pos)
    return seg;
  memset(seg, 0, sizeof *seg);
  seg->version = NARCACHE_NAR_SEGMENT_VERSION;
  x->seg_used = 0;
  if (c->reader.segment(c->reader.ctx, c->body_pos, seg) < 0 || !segment_valid(seg, c->body_pos)) {
    memset(seg, 0, sizeof *seg);
    return NULL;
  }
  return seg;
}

static int read_exactly(int fd, void *buf, size_t len, uint64_t offset) {
  while (len > 0) {
    ssize_t n = pread(fd, buf, len, (off_t)offset);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return n < 0 ? errno : EIO; /* EOF: the file shrank */
    buf = (char *)buf + n;
    len -= (size_t)n;
    offset += (uint64_t)n;
  }
  return 0;
}

/* Next bytes of a body made of segments (a NAR made on the fly, a
 * store's receive ring): header bytes and small files are copied together
 * into the pump buffer, in order, so one send carries many of them; the
 * contents of a large file are sent from the file, large byte spans from
 * where they lie. 0 to go on; -1 with pump_result set to stop. */
static int next_segments(srv_conn *c) {
  size_t len = 0;
  while (len < PUMP_BUFFER && c->body_pos < c->body_end) {
    narcache_nar_segment *seg = current_segment(c);
    if (seg == NULL)
      return body_failed(c, 0);
    if (seg->kind == NARCACHE_NAR_SEG_WAIT) { /* asked again once its fd is readable */
      if (len > 0)
        break;
      c->pump_result = PUMP_STARVED;
      return -1;
    }
    uint64_t want = seg->length - c->x->seg_used;
    if (want > c->body_end - c->body_pos)
      want = c->body_end - c->body_pos;
    uint64_t at = seg->file_offset + c->x->seg_used;
    if (seg->kind == NARCACHE_NAR_SEG_FILE && want >= SPLICE_MIN) {
      if (len > 0)
        break; /* send what is gathered first */
      ssize_t n = send_file_region(c, seg->fd, at, want);
      if (n < 0)
        return -1;
      c->x->seg_used += (uint64_t)n;
      return 0;
    }
    if (seg->kind == NARCACHE_NAR_SEG_STREAM) {
      if (len > 0)
        break;
      return take_from_stream(c, seg, want);
    }
    if (seg->kind == NARCACHE_NAR_SEG_BYTES && want >= SEND_IN_PLACE_MIN) {
      if (len > 0)
        break;
      return send_in_place(c, (const char *)seg->data + c->x->seg_used, want);
    }
    if (need_pump_buf(c) < 0)
      return -1;
    if (want > PUMP_BUFFER - len)
      want = PUMP_BUFFER - len;
    if (seg->kind == NARCACHE_NAR_SEG_BYTES) {
      memcpy(c->pump_buf + len, (const char *)seg->data + c->x->seg_used, (size_t)want);
    } else {
      int err = read_exactly(seg->fd, c->pump_buf + len, (size_t)want, at);
      if (err != 0)
        return body_failed(c, err);
    }
    c->x->seg_used += want;
    c->body_pos += want;
    len += (size_t)want;
  }
  c->pump_len = len;
  c->pump_pos = 0;
  return 0;
}

/* Next bytes of a body the reader can only copy out. */
static int next_read(srv_conn *c) {
  if (need_pump_buf(c) < 0)
    return -1;
  uint64_t left = c->body_end - c->body_pos;
  size_t got = 0;
  int rc = narcache_reader_read(&c->reader, c->body_pos, c->pump_buf,
                                left < PUMP_BUFFER ? (size_t)left : PUMP_BUFFER, &got);
  if (rc < 0 || got == 0)
    return body_failed(c, 0);
  c->body_pos += got;
  c->pump_len = got;
  c->pump_pos = 0;
  return 0;
}

/* Runs on a pool thread. The loop does not touch the socket meanwhile.
 * body_pos counts the bytes taken from the reader; those in the pipe or
 * the pump buffer go out first. */
static void pump_work(uv_work_t *w) {
  srv_conn *c = w->data;
  block_sigpipe();
  c->pump_moved = 0;
  c->pump_errno = 0;
  for (;;) {
    if (c->x->pipe_pending > 0) {
      if (drain_pipe(c) < 0)
        return;
    } else if (c->pump_pos < c->pump_len) {
      ssize_t n = send(c->fd, c->pump_buf + c->pump_pos, c->pump_len - c->pump_pos,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        socket_failed(c, n);
        return;
      }
      c->pump_pos += (size_t)n;
      c->pump_moved += (uint64_t)n;
    } else if (c->body_pos >= c->body_end) {
      c->pump_result = PUMP_DONE;
      return;
    } else if (c->reader.fd >= 0) {
      if (send_file_region(c, c->reader.fd, c->reader.fd_offset + c->body_pos,
                           c->body_end - c->body_pos) < 0)
        return;
    } else if (c->reader.segment != NULL) {
      if (next_segments(c) < 0)
        return;
    } else if (next_read(c) < 0) {
      return;
    }
    if (c->pump_moved >= PUMP_BUDGET) {
      c->pump_result = PUMP_AGAIN;
      return;
    }
  }
}

static void pump_done(uv_work_t *w, int status) {
  srv_conn *c = w->data;
  srv_t *s = c->server;
  if (c->pump_moved > 0)
    note_progress(c, (size_t)c->pump_moved);
  if (task_ended(c, status))
    return;
  switch (c->pump_result) {
  case PUMP_DONE:
    finish_request(c);
    return;
  case PUMP_AGAIN:
    queue_pump(c);
    return;
  case PUMP_BLOCKED:
    if (too_slow(c) || stalled(c)) {
      narcache__srv_log(s, NARCACHE_LOG_INFO, "send_too_slow",
                        "client below the minimum rate: response aborted",
                        (narcache_log_field[]){{"peer", c->peer}, {"target", c->x->target}}, 2);
      c->aborted = 1;
      close_conn(c);
      return;
    }
    c->phase = PHASE_BLOCKED;
    watch(c, UV_WRITABLE);
    arm_timer(c, s->opt[NARCACHE_OPT_BODY_STALL_MS]);
    return;
  case PUMP_STARVED:
    wait_for_source(c);
    return;
  default:
    if (c->pump_errno != EPIPE && c->pump_errno != ECONNRESET) {
      narcache__srv_log(s, NARCACHE_LOG_ERROR, "body_failed",
                        "the body could not be produced: connection aborted",
                        (narcache_log_field[]){{"peer", c->peer},
                                               {"target", c->x->target},
                                               {"error", c->pump_errno ? strerror(c->pump_errno)
                                                                       : "object shorter than announced"}},
                        3);
    }
    c->aborted = 1;
    close_conn(c);
    return;
  }
}

static void queue_pump(srv_conn *c) {
  if (queue_task(c, PHASE_PUMP, pump_work, pump_done) != 0) {
    c->aborted = 1;
    close_conn(c);
  }
}

/* Waiting for a STREAM source (a store's socket to the object store) or
 * for a WAIT segment's descriptor (the s3 store's https ring) is the
 * loop's job, under the segment's wait_ms: a slow or wedged store then
 * holds no pool thread, which the other requests need. The watcher
 * is closed before the pump goes on (the segment's descriptor may be
 * closed by the next task; libuv must not see it again after that). */
static void wait_for_source(srv_conn *c) {
  srv_scratch *x = c->x;
  int rc = uv_poll_init(c->server->loop, &x->source, x->seg.fd);
  if (rc != 0) { /* not a socket or pipe: the store broke the STREAM contract */
    narcache__srv_log(c->server, NARCACHE_LOG_ERROR, "body_failed",
                      "the store's stream cannot be waited for: connection aborted",
                      (narcache_log_field[]){{"peer", c->peer},
                                             {"target", x->target},
                                             {"error", uv_strerror(rc)}},
                      3);
    c->aborted = 1;
    close_conn(c);
    return;
  }
  x->source.data = c;
  x->source_open = 1;
  c->handles_open++;
  c->phase = PHASE_SOURCE;
  uv_poll_start(&x->source, UV_READABLE | UV_DISCONNECT, on_source_ready);
  arm_timer(c, x->seg.wait_ms > 0 ? x->seg.wait_ms : STREAM_WAIT_DEFAULT_MS);
}

/* Readable, hung up or failed: the pump's next read tells which. */
static void on_source_ready(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  srv_conn *c = h->data;
  uv_timer_stop(&c->timer);
  stop_waiting_for_source(c);
}

static void stop_waiting_for_source(srv_conn *c) {
  if (c->x != NULL && c->x->source_open && !uv_is_closing((uv_handle_t *)&c->x->source))
    uv_close((uv_handle_t *)&c->x->source, on_source_closed);
}

static void on_source_closed(uv_handle_t *h) {
  srv_conn *c = h->data;
  c->x->source_open = 0;
  if (c->closing) {
    on_handle_closed(h); /* the connection goes once its handles are closed */
    return;
  }
  c->handles_open--;
  queue_pump(c);
}

/* ------------------------------------------------------------------ */
/* The store task                                                      */
/* ------------------------------------------------------------------ */

static void open_work(uv_work_t *w) {
  srv_conn *c = w->data;
  srv_t *s = c->server;
  if (c->kind == NARCACHE_OBJECT_NAR) {
    /* A store may send clients elsewhere (an object store's presigned URL).
     * A URL too long for the response head is served here instead. */
    int rc = narcache_store_redirect(&c->redirect, s->store, c->kind, c->x->name, c->name_len);
    if (rc == 1 && strlen(c->redirect) <= REDIRECT_URL_MAX)
      return;
    narcache_free(c->redirect);
    c->redirect = NULL;
    if (rc < 0) {
      c->open_rc = rc;
      return;
    }
  }
  c->open_rc = narcache_store_open(&c->reader, s->store, c->kind, c->x->name, c->name_len);
  if (c->open_rc < 0)
    return;
  c->reader_open = 1;
  /* Small objects (narinfo, listings, small NARs) are read here and go out
   * with the head in one write: no second trip through the pool. */
  uint64_t small_max = c->reader.fd >= 0 ? SMALL_FILE_MAX : SMALL_OBJECT_MAX;
  if (c->reader.size <= small_max && !c->head_only) {
    size_t len = (size_t)c->reader.size, off = 0;
    c->small = narcache__malloc(len > 0 ? len : 1);
    if (c->small == NULL) {
      c->open_rc = NARCACHE_EUNAVAIL;
      return;
    }
    while (off < len) {
      size_t got = 0;
      int rc = narcache_reader_read(&c->reader, off, c->small + off, len - off, &got);
      if (rc < 0 || got == 0) {
        c->open_rc = rc < 0 ? rc : NARCACHE_EIO;
        return;
      }
      off += got;
    }
    c->small_len = len;
  }
}

static const char *content_type_of(int kind) {
  switch (kind) {
  case NARCACHE_OBJECT_CACHE_INFO: return "text/x-nix-cache-info";
  case NARCACHE_OBJECT_NARINFO: return "text/x-nix-narinfo";
  case NARCACHE_OBJECT_LISTING: return "application/json";
  case NARCACHE_OBJECT_NAR: return "application/x-nix-nar";
  default: return "text/plain; charset=utf-8";
  }
}

/* nix-cache-info with the server's Priority and WantMassQuery. */
static int override_cache_info(srv_conn *c) {
  srv_t *s = c->server;
  if (s->opt[NARCACHE_OPT_PRIORITY] < 0 && s->opt[NARCACHE_OPT_WANT_MASS_QUERY] < 0)
    return NARCACHE_OK;
  narcache_cache_info *ci = NULL;
  int rc = narcache_cache_info_new(&ci);
  if (rc == 0)
    rc = narcache_cache_info_parse(ci, c->small, c->small_len);
  if (rc == 0 && s->opt[NARCACHE_OPT_PRIORITY] >= 0)
    rc = narcache_cache_info_set_priority(ci, 1, (int32_t)s->opt[NARCACHE_OPT_PRIORITY]);
  if (rc == 0 && s->opt[NARCACHE_OPT_WANT_MASS_QUERY] >= 0)
    rc = narcache_cache_info_set_want_mass_query(ci, 1, (int)s->opt[NARCACHE_OPT_WANT_MASS_QUERY]);
  char *text = NULL;
  size_t len = 0;
  if (rc == 0)
    rc = narcache_cache_info_format(&text, &len, ci);
  narcache_cache_info_free(ci);
  if (rc < 0)
    return rc;
  narcache__free(c->small);
  c->small = narcache__malloc(len > 0 ? len : 1);
  if (c->small == NULL) {
    narcache_free(text);
    return NARCACHE_ENOMEM;
  }
  memcpy(c->small, text, len);
  c->small_len = len;
  narcache_free(text);
  return NARCACHE_OK;
}

/* "ETag" of a NAR: its name is its content hash. */
static int etag_matches(const narcache__http_span *inm, const char *name, size_t len) {
  if (inm->len == 0)
    return 0;
  if (inm->len == 1 && inm->p[0] == '*')
    return 1;
  for (size_t i = 0; i + len + 2 <= inm->len; i++)
    if (inm->p[i] == '"' && memcmp(inm->p + i + 1, name, len) == 0 && inm->p[i + 1 + len] == '"')
      return 1;
  return 0;
}

static int cacheable(int kind) {
  return kind == NARCACHE_OBJECT_NARINFO || kind == NARCACHE_OBJECT_CACHE_INFO;
}

static uint64_t cache_expiry(srv_t *s) {
  return narcache__srv_now_ms(s) + (uint64_t)s->opt[NARCACHE_OPT_MEMORY_CACHE_MS];
}

static void respond_object(srv_conn *c) {
  srv_t *s = c->server;
  if (c->kind == NARCACHE_OBJECT_CACHE_INFO && c->small != NULL && !c->from_cache) {
    int rc = override_cache_info(c);
    if (rc < 0) {
      respond_text(c, 500, "text/plain", "bad nix-cache-info in the store\n", 32, NULL);
      return;
    }
  }
  if (!c->from_cache && c->small != NULL && cacheable(c->kind))
    narcache__srv_cache_put(s->cache, c->kind, c->x->name, c->name_len, c->small, c->small_len,
                            cache_expiry(s));
  int is_nar = c->kind == NARCACHE_OBJECT_NAR;
  uint64_t size = c->small != NULL ? c->small_len : c->reader.size;
  char etag[700] = "";
  if (is_nar)
    snprintf(etag, sizeof etag, "ETag: \"%.*s\"\r\n", (int)c->name_len, c->x->name);
  if (is_nar && etag_matches(&c->req.if_none_match, c->x->name, c->name_len)) {
    int n = head_begin(c, 304);
    head_add(c, &n, etag);
    if (n >= 0 && (size_t)n < sizeof c->x->head)
      n += snprintf(c->x->head + n, sizeof c->x->head - (size_t)n, "%s\r\n",
                    c->keep_alive ? "" : "Connection: close\r\n");
    c->head_out = n > 0 && (size_t)n < sizeof c->x->head ? (size_t)n : 0;
    c->head_pos = 0;
    release_reader(c);
    c->phase = PHASE_SEND;
    c->last_progress_ms = c->body_started_ms = narcache__srv_now_ms(s);
    write_out(c);
    return;
  }
  uint64_t first = 0, last = size > 0 ? size - 1 : 0;
  int ranged = 0;
  if ((is_nar || c->kind == NARCACHE_OBJECT_LOG) && c->req.range.len > 0 &&
      c->req.method == NARCACHE__HTTP_GET) {
    ranged = narcache__http_parse_range(c->req.range.p, c->req.range.len, size, &first, &last);
    if (ranged < 0) {
      char field[80];
      snprintf(field, sizeof field, "Content-Range: bytes */%llu\r\n", (unsigned long long)size);
      release_reader(c);
      respond_text(c, 416, "text/plain", "416 Range Not Satisfiable\n", 26, field);
      return;
    }
  }
  int n = head_begin(c, ranged ? 206 : 200);
  head_add_field(c, &n, "Content-Type", content_type_of(c->kind));
  if (is_nar || c->kind == NARCACHE_OBJECT_LOG)
    head_add(c, &n, "Accept-Ranges: bytes\r\n");
  if (is_nar) {
    head_add(c, &n, etag);
    head_add(c, &n, "Cache-Control: public, max-age=31536000, immutable\r\n");
  } else if (c->kind == NARCACHE_OBJECT_NARINFO) {
    char cc[80];
    snprintf(cc, sizeof cc, "Cache-Control: public, max-age=%lld\r\n",
             (long long)s->opt[NARCACHE_OPT_NARINFO_MAX_AGE]);
    head_add(c, &n, cc);
  }
  if (ranged) {
    char cr[100];
    snprintf(cr, sizeof cr, "Content-Range: bytes %llu-%llu/%llu\r\n", (unsigned long long)first,
             (unsigned long long)last, (unsigned long long)size);
    head_add(c, &n, cr);
  }
  uint64_t length = size > 0 ? last - first + 1 : 0;
  head_end(c, n, length);
  c->phase = PHASE_SEND;
  c->last_progress_ms = c->body_started_ms = narcache__srv_now_ms(s);
  if (c->head_only) {
    release_reader(c);
  } else if (c->small != NULL) {
    c->body_mem = c->small; /* ownership moves */
    c->small = NULL;
    c->body_mem_pos = (size_t)first;
    c->body_mem_len = (size_t)(first + length);
  } else if (length > 0) {
    c->streaming = 1;
    c->body_pos = first;
    c->body_end = first + length;
    c->pump_len = c->pump_pos = 0;
  }
  write_out(c);
}

/* 307 to where the store said; not cached by anyone (the URL expires). */
static void respond_redirect(srv_conn *c) {
  char fields[REDIRECT_URL_MAX + 64];
  snprintf(fields, sizeof fields, "Location: %s\r\nCache-Control: no-store\r\n", c->redirect);
  narcache_free(c->redirect);
  c->redirect = NULL;
  respond_text(c, 307, "text/plain", "307 Temporary Redirect\n", 23, fields);
}

static void open_done(uv_work_t *w, int status) {
  srv_conn *c = w->data;
  srv_t *s = c->server;
  if (c->store_deadline) {
    c->store_deadline = 0;
    uv_timer_stop(&c->timer);
  }
  if (task_ended(c, status))
    return;
  int rc = c->open_rc;
  if (rc == 0 && c->redirect != NULL) {
    respond_redirect(c);
    return;
  }
  if (rc == 0) {
    respond_object(c);
    return;
  }
  release_reader(c);
  if (rc == NARCACHE_ENOTFOUND) {
    if (cacheable(c->kind))
      narcache__srv_cache_put(s->cache, c->kind, c->x->name, c->name_len, NULL, 0, cache_expiry(s));
    respond_text(c, 404, "text/plain", "404 Not Found\n", 14, NULL);
    return;
  }
  const char *what = narcache_strerror(rc);
  narcache__srv_log(s, rc == NARCACHE_EUNAVAIL ? NARCACHE_LOG_WARNING : NARCACHE_LOG_ERROR,
                    "store_error", "the store could not answer",
                    (narcache_log_field[]){{"target", c->x->target},
                                           {"error", narcache_errname(rc)},
                                           {"message", what}},
                    3);
  /* Anything but a genuine absence must not look like one: the Nix client
   * remembers a 404 for an hour. */
  char body[200];
  int n = snprintf(body, sizeof body, "%d %s: %s\n", rc == NARCACHE_EUNAVAIL ? 503 : 500,
                   rc == NARCACHE_EUNAVAIL ? "Service Unavailable" : "Internal Server Error", what);
  respond_text(c, rc == NARCACHE_EUNAVAIL ? 503 : 500, "text/plain", body, (size_t)n, NULL);
}

/* A fresh answer in the memory cache: sent without a trip to the pool. */
static int answer_from_cache(srv_conn *c, int kind) {
  srv_t *s = c->server;
  const char *data = NULL;
  size_t len = 0;
  int found = narcache__srv_cache_get(s->cache, kind, c->x->name, c->name_len,
                                      narcache__srv_now_ms(s), &data, &len);
  if (found == SRV_CACHE_MISS)
    return 0;
  s->metrics.cache_hits++;
  if (found == SRV_CACHE_ABSENT) {
    respond_text(c, 404, "text/plain", "404 Not Found\n", 14, NULL);
    return 1;
  }
  c->small = c->head_only ? NULL : narcache__malloc(len > 0 ? len : 1);
  if (!c->head_only && c->small == NULL)
    return 0; /* no memory for the copy: ask the store */
  if (c->small != NULL)
    memcpy(c->small, data, len);
  c->small_len = len;
  c->reader.size = len;
  c->from_cache = 1;
  respond_object(c);
  return 1;
}

static void ask_store(srv_conn *c, int kind) {
  c->kind = kind;
  c->from_cache = 0;
  memset(&c->reader, 0, sizeof c->reader);
  c->reader.fd = -1;
  if (cacheable(kind) && answer_from_cache(c, kind))
    return;
  c->open_rc = 0;
  if (queue_task(c, PHASE_STORE, open_work, open_done) != 0) {
    respond_text(c, 503, "text/plain", "503 Service Unavailable\n", 24, NULL);
    return;
  }
  int64_t deadline = c->server->opt[NARCACHE_OPT_STORE_TIMEOUT_MS];
  if (deadline > 0) {
    c->store_deadline = 1;
    arm_timer(c, deadline);
  }
}

/* The store has not answered within NARCACHE_OPT_STORE_TIMEOUT_MS. The
 * client gets its 503 now, written here in one non-blocking send (the
 * task does not touch the socket, the head buffer or these fields), and
 * the socket is shut down. A pool task cannot be interrupted: it is
 * cancelled if it has not started, else its result is dropped when it
 * returns; either way task_ended() then closes the connection. */
static void store_overdue(srv_conn *c) {
  srv_t *s = c->server;
  static const char body[] = "503 Service Unavailable: the store did not answer in time\n";
  narcache__srv_log(s, NARCACHE_LOG_WARNING, "store_timeout", "the store did not answer in time",
                    (narcache_log_field[]){{"target", c->x->target}}, 1);
  c->store_deadline = 0;
  c->keep_alive = 0;
  int n = head_begin(c, 503);
  head_add_field(c, &n, "Content-Type", "text/plain");
  char retry[32];
  snprintf(retry, sizeof retry, "%lld", (long long)s->opt[NARCACHE_OPT_RETRY_AFTER]);
  head_add_field(c, &n, "Retry-After", retry);
  head_end(c, n, sizeof body - 1);
  size_t body_len = c->head_only ? 0 : sizeof body - 1;
  struct iovec iov[2] = {{c->x->head, c->head_out}, {(void *)body, body_len}};
  struct msghdr msg = {.msg_iov = iov, .msg_iovlen = body_len ? 2 : 1};
  ssize_t sent = c->head_out ? sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) : -1;
  if (sent == (ssize_t)(c->head_out + body_len)) {
    c->answered_early = 1;
    c->head_pos = c->head_out;
    c->body_sent = body_len;
  }
  shutdown(c->fd, SHUT_RDWR);
  c->closing = 1;
  uv_cancel((uv_req_t *)&c->work); /* fails harmlessly once the task runs */
}

/* ------------------------------------------------------------------ */
/* Routing                                                             */
/* ------------------------------------------------------------------ */

/* Percent-decode `in` into c->x->name. 0, or -1 if it does not fit. */
static int set_name(srv_conn *c, const char *in, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    char ch = in[i];
    int hi, lo;
    if (ch == '%' && i + 2 < len && (hi = narcache__hex_value((unsigned char)in[i + 1])) >= 0 &&
        (lo = narcache__hex_value((unsigned char)in[i + 2])) >= 0) {
      ch = (char)(hi * 16 + lo);
      i += 2;
    }
    if (n + 1 >= sizeof c->x->name)
      return -1;
    c->x->name[n++] = ch;
  }
  c->x->name[n] = '\0';
  c->name_len = n;
  return 0;
}

static int has_prefix(const narcache__http_span *p, const char *prefix) {
  size_t n = strlen(prefix);
  return p->len >= n && memcmp(p->p, prefix, n) == 0;
}

static int has_suffix(const narcache__http_span *p, const char *suffix) {
  size_t n = strlen(suffix);
  return p->len >= n && memcmp(p->p + p->len - n, suffix, n) == 0;
}

static void respond_healthz(srv_conn *c) {
  srv_t *s = c->server;
  if (s->healthy && s->not_ready == NULL) {
    respond_text(c, 200, "text/plain", "ok\n", 3, "Cache-Control: no-store\r\n");
    return;
  }
  char body[300];
  int n = snprintf(body, sizeof body, "unhealthy: %s\n",
                   s->not_ready != NULL ? s->not_ready : s->health_reason);
  respond_text(c, 503, "text/plain", body, (size_t)n, "Cache-Control: no-store\r\n");
}

static void respond_metrics(srv_conn *c) {
  char *text = NULL;
  size_t len = 0;
  if (narcache__srv_metrics_text(c->server, &text, &len) < 0) {
    respond_text(c, 503, "text/plain", "503 out of memory\n", 18, NULL);
    return;
  }
  respond_text(c, 200, "text/plain; version=0.0.4", text, len, "Cache-Control: no-store\r\n");
  narcache_free(text);
}

/* Map the path to an object and ask the store, or answer directly. */
/* The object a request's target names (NARCACHE_OBJECT_*; its name in
 * c->x->name), or -1 if none. Sets c->route. */
static int object_of(srv_conn *c) {
  const narcache__http_span *path = &c->req.path;
  int kind = -1;
  c->route = ROUTE_OTHER;
  if (path->len == 15 && memcmp(path->p, "/nix-cache-info", 15) == 0) {
    c->route = ROUTE_CACHE_INFO;
    kind = NARCACHE_OBJECT_CACHE_INFO;
    c->name_len = 0;
    c->x->name[0] = '\0';
  } else if (has_prefix(path, "/nar/")) {
    c->route = ROUTE_NAR;
    kind = NARCACHE_OBJECT_NAR;
    const narcache__http_span *q = &c->req.query;
    if (path->len == 5 + 52 + 4 && q->len == 5 + 32 && memcmp(q->p, "hash=", 5) == 0) {
      /* harmonia's "nar/<NarHash>.nar?hash=<hash part>": the same object
       * as nix-serve's "nar/<hash part>-<NarHash>.nar" */
      char joined[100];
      memcpy(joined, q->p + 5, 32);
      joined[32] = '-';
      memcpy(joined + 33, path->p + 5, 56);
      set_name(c, joined, 89);
    } else if (set_name(c, path->p + 5, path->len - 5) < 0) {
      kind = -1;
    }
  } else if (has_prefix(path, "/log/")) {
    c->route = ROUTE_LOG;
    kind = NARCACHE_OBJECT_LOG;
    /* A derivation name may contain '?', which the client sends raw: the
     * "query" is then part of the name. */
    char joined[600];
    size_t n = path->len - 5;
    if (n + 1 + c->req.query.len >= sizeof joined)
      kind = -1;
    else {
      memcpy(joined, path->p + 5, n);
      if (c->req.query.len > 0 || (c->req.target.len > path->len && c->req.target.p[path->len] == '?')) {
        joined[n++] = '?';
        memcpy(joined + n, c->req.query.p, c->req.query.len);
        n += c->req.query.len;
      }
      if (set_name(c, joined, n) < 0)
        kind = -1;
    }
  } else if (path->len == 1 + 32 + 8 && has_suffix(path, ".narinfo")) {
    c->route = ROUTE_NARINFO;
    kind = NARCACHE_OBJECT_NARINFO;
    set_name(c, path->p + 1, 32);
  } else if (path->len == 1 + 32 + 3 && has_suffix(path, ".ls")) {
    c->route = ROUTE_LS;
    kind = NARCACHE_OBJECT_LISTING;
    set_name(c, path->p + 1, 32);
  }
  if (kind >= 0 && narcache_object_name_check(kind, c->x->name, c->name_len) < 0)
    kind = -1;
  return kind;
}

static void start_upload(srv_conn *c, int kind);
static int require_scope(srv_conn *c, int kind, int need);

/* PUT to a route that takes no uploads: 405, allowing what it does. */
static void refuse_put_here(srv_conn *c) {
  static const char text[] = "405 Method Not Allowed: nothing can be uploaded here\n";
  c->keep_alive = 0;
  respond_text(c, 405, "text/plain; charset=utf-8", text, sizeof text - 1, "Allow: GET, HEAD\r\n");
}

static void route_request(srv_conn *c) {
  const narcache__http_span *path = &c->req.path;
  int put = c->req.method == NARCACHE__HTTP_PUT;
  if (path->len == 8 && memcmp(path->p, "/healthz", 8) == 0) {
    c->route = ROUTE_HEALTHZ;
    if (put)
      refuse_put_here(c);
    else
      respond_healthz(c);
    return;
  }
  if (path->len == 8 && memcmp(path->p, "/metrics", 8) == 0) {
    c->route = ROUTE_METRICS;
    if (put)
      refuse_put_here(c);
    else
      respond_metrics(c);
    return;
  }
  int kind = object_of(c);
  if (kind < 0 && put) {
    refuse(c, 404, "not a binary-cache object name");
    return;
  }
  if (kind < 0) {
    respond_text(c, 404, "text/plain", "404 Not Found\n", 14, NULL);
    return;
  }
  if (put) {
    start_upload(c, kind);
    return;
  }
  if (c->server->opt[NARCACHE_OPT_PRIVATE] && require_scope(c, kind, NARCACHE_SCOPE_READ) != 0)
    return;
  ask_store(c, kind);
}

/* ------------------------------------------------------------------ */
/* Access                                                              */
/* ------------------------------------------------------------------ */

/* The scope the request's credential grants: the embedder's authorize
 * hook decides, or else the token table. */
static int granted_scope(srv_conn *c, int kind) {
  srv_t *s = c->server;
  char credential[300];
  int len = 0;
  if (c->req.authorization.len > 0)
    len = narcache_auth_credential(credential, sizeof credential, c->req.authorization.p,
                                   c->req.authorization.len);
  if (len < 0)
    len = 0;
  int scope = NARCACHE_SCOPE_NONE;
  if (s->hooks.authorize != NULL) {
    narcache_auth_request r = {.version = 1,
                               .method = c->method,
                               .target = c->x->target,
                               .kind = kind,
                               .credential = len > 0 ? credential : NULL,
                               .credential_len = (size_t)len,
                               .peer = c->peer};
    scope = s->hooks.authorize(s->userdata, &r);
  } else if (s->tokens != NULL && len > 0) {
    scope = narcache_tokens_check(s->tokens, credential, (size_t)len, NULL);
  }
  explicit_bzero(credential, sizeof credential);
  return scope;
}

/* 0 if the request may go on; otherwise the status it was refused with:
 * 401 without a usable credential, 403 with one that grants too little. */
static int require_scope(srv_conn *c, int kind, int need) {
  int got = granted_scope(c, kind);
  if (got >= need)
    return 0;
  int status = got == NARCACHE_SCOPE_NONE ? 401 : 403;
  narcache__srv_log(c->server, NARCACHE_LOG_INFO, "access_denied",
                    status == 401 ? "no valid token" : "the token does not allow this",
                    (narcache_log_field[]){{"peer", c->peer},
                                           {"method", c->method},
                                           {"target", c->x->target}},
                    3);
  refuse(c, status,
         status == 401 ? "a token is needed (Authorization: Bearer TOKEN, or the password of Basic auth)"
         : need == NARCACHE_SCOPE_WRITE ? "this token may not upload"
                                        : "this token may not read");
  return status;
}

/* ------------------------------------------------------------------ */
/* Uploads                                                             */
/* ------------------------------------------------------------------ */

static void receive_body(srv_conn *c);
static void upload_refused(srv_conn *c, int status, const char *why);
static void upload_begun(srv_conn *c);

static void upload_begin_work(uv_work_t *w) {
  srv_conn *c = w->data;
  srv_scratch *x = c->x;
  x->up_status = narcache__srv_upload_begin(&x->upload, c->server, x->upload_kind, x->name,
                                            c->name_len, c->req.content_length, x->up_why,
                                            sizeof x->up_why);
}

static void upload_write_work(uv_work_t *w) {
  srv_conn *c = w->data;
  srv_scratch *x = c->x;
  x->up_status = narcache__srv_upload_write(x->upload, x->up_buf, x->up_len, x->up_why,
                                            sizeof x->up_why);
  x->up_len = 0;
}

static void upload_commit_work(uv_work_t *w) {
  srv_conn *c = w->data;
  srv_scratch *x = c->x;
  x->up_status = narcache__srv_upload_commit(x->upload, x->up_why, sizeof x->up_why);
  x->upload = NULL; /* committed or dropped: either way gone */
}

static void upload_task_done(uv_work_t *w, int status);

static void queue_upload_task(srv_conn *c, uv_work_cb work) {
  if (queue_task(c, PHASE_STORE, work, upload_task_done) != 0) {
    c->aborted = 1;
    close_conn(c);
  }
}

static void upload_stored(srv_conn *c) {
  srv_t *s = c->server;
  srv_scratch *x = c->x;
  if (s->cache != NULL && (x->upload_kind == NARCACHE_OBJECT_NARINFO ||
                           x->upload_kind == NARCACHE_OBJECT_CACHE_INFO))
    narcache__srv_cache_forget(s->cache, x->upload_kind, x->name, c->name_len);
  char bytes[32];
  snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)x->up_received);
  narcache__srv_count_upload(s, 200, x->up_received);
  x->upload_counted = 1;
  narcache__srv_log(s, NARCACHE_LOG_INFO, "upload_stored", "upload published",
                    (narcache_log_field[]){{"peer", c->peer}, {"target", x->target}, {"bytes", bytes}},
                    3);
  respond_text(c, 200, "text/plain", "stored\n", 7, NULL);
}

/* A task of the upload ended: go on with the body, commit, or answer. */
static void upload_task_done(uv_work_t *w, int status) {
  srv_conn *c = w->data;
  if (task_ended(c, status))
    return;
  srv_scratch *x = c->x;
  if (x->up_status != 0) {
    upload_refused(c, x->up_status, x->up_why);
    return;
  }
  if (x->upload == NULL) { /* the commit went through */
    upload_stored(c);
    return;
  }
  if (x->up_started_ms == 0) { /* the store took the upload: now its body */
    upload_begun(c);
    return;
  }
  if (x->up_left == 0 && x->up_len == 0) {
    queue_upload_task(c, upload_commit_work);
    return;
  }
  receive_body(c);
}

static void upload_refused(srv_conn *c, int status, const char *why) {
  narcache__srv_count_upload(c->server, status, c->x->up_received);
  c->x->upload_counted = 1;
  narcache__srv_log(c->server, status >= 500 ? NARCACHE_LOG_ERROR : NARCACHE_LOG_INFO,
                    "upload_refused", why,
                    (narcache_log_field[]){{"peer", c->peer}, {"target", c->x->target}}, 2);
  refuse(c, status, why);
}

/* The store accepted the upload: say 100 Continue if asked, then take the
 * body, starting with what arrived with the head. */
static void upload_begun(srv_conn *c) {
  srv_scratch *x = c->x;
  if (c->req.expect_continue) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    ssize_t n;
    while ((n = send(c->fd, cont, sizeof cont - 1, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 &&
           errno == EINTR)
      continue;
    if (n != (ssize_t)(sizeof cont - 1)) { /* an idle socket takes 25 bytes, or is dead */
      c->aborted = 1;
      close_conn(c);
      return;
    }
  }
  x->up_started_ms = c->last_progress_ms = narcache__srv_now_ms(c->server);
  size_t early = c->in_len - c->head_len;
  if (early > x->up_left)
    early = (size_t)x->up_left;
  memcpy(x->up_buf, c->in + c->head_len, early);
  x->up_len = early;
  x->up_left -= early;
  x->up_received = early;
  c->head_len += early; /* finish_request drops them with the head */
  receive_body(c);
}

static void start_upload(srv_conn *c, int kind) {
  srv_t *s = c->server;
  srv_scratch *x = c->x;
  int64_t max = s->opt[NARCACHE_OPT_MAX_UPLOAD_BYTES];
  if (max == 0) {
    refuse(c, 405, "uploads are not enabled on this server");
    return;
  }
  int denied = require_scope(c, kind, NARCACHE_SCOPE_WRITE);
  if (denied != 0) {
    narcache__srv_count_upload(s, denied, 0);
    return;
  }
  if (c->req.chunked || !c->req.has_content_length) {
    upload_refused(c, 411, "an upload needs Content-Length (chunked bodies are not taken)");
    return;
  }
  if (c->req.content_length > (uint64_t)max) {
    upload_refused(c, 413, "larger than the upload limit");
    return;
  }
  if (s->uploads_active >= (size_t)s->opt[NARCACHE_OPT_MAX_UPLOADS]) {
    upload_refused(c, 503, "too many uploads at once; try again");
    return;
  }
  if ((x->up_buf = narcache__malloc(UPLOAD_BUFFER)) == NULL) {
    upload_refused(c, 503, "out of memory");
    return;
  }
  s->uploads_active++;
  x->counted_upload = 1;
  x->upload_kind = kind;
  x->up_left = c->req.content_length;
  queue_upload_task(c, upload_begin_work);
}

/* Read body bytes until the buffer is full or the body complete, then
 * hand them to the store. Called again on every readable event. */
static void receive_body(srv_conn *c) {
  srv_scratch *x = c->x;
  while (x->up_left > 0 && x->up_len < UPLOAD_BUFFER) {
    size_t room = UPLOAD_BUFFER - x->up_len;
    if (room > x->up_left)
      room = (size_t)x->up_left;
    ssize_t n = recv(c->fd, x->up_buf + x->up_len, room, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      c->phase = PHASE_RECEIVE;
      watch(c, UV_READABLE);
      arm_timer(c, c->server->opt[NARCACHE_OPT_BODY_STALL_MS]);
      return;
    }
    if (n <= 0) { /* the client went away: the upload leaves no trace */
      c->aborted = 1;
      close_conn(c);
      return;
    }
    x->up_len += (size_t)n;
    x->up_left -= (uint64_t)n;
    x->up_received += (uint64_t)n;
    c->last_progress_ms = narcache__srv_now_ms(c->server);
  }
  if (x->up_len > 0)
    queue_upload_task(c, upload_write_work);
  else
    queue_upload_task(c, upload_commit_work);
}

/* An upload's body stopped or crawls: drop it (nothing is published). */
static int upload_too_slow(srv_conn *c) {
  return stalled(c) || below_min_rate(c, c->x->up_received, c->x->up_started_ms);
}

/* ------------------------------------------------------------------ */
/* Reading requests                                                    */
/* ------------------------------------------------------------------ */

static void copy_span(char *out, size_t size, const narcache__http_span *sp) {
  size_t n = sp->len < size - 1 ? sp->len : size - 1;
  memcpy(out, sp->p, n);
  out[n] = '\0';
}

static void handle_request(srv_conn *c) {
  srv_t *s = c->server;
  c->started_ns = uv_hrtime();
  copy_span(c->method, sizeof c->method, &c->req.method_name);
  copy_span(c->x->target, sizeof c->x->target, &c->req.target);
  c->keep_alive = c->req.keep_alive && !s->stopping;
  c->head_only = c->req.method == NARCACHE__HTTP_HEAD;
  c->route = ROUTE_OTHER;
  c->body_sent = 0;
  c->aborted = 0;
  uv_timer_stop(&c->timer);
  watch(c, 0);
  int has_body = c->req.chunked || (c->req.has_content_length && c->req.content_length > 0);
  int method = c->req.method;
  if (method != NARCACHE__HTTP_GET && method != NARCACHE__HTTP_HEAD && method != NARCACHE__HTTP_PUT) {
    if (method == NARCACHE__HTTP_OTHER)
      refuse(c, 501, "method not implemented");
    else
      refuse(c, 405, "only GET, HEAD and PUT");
    return;
  }
  if (has_body && method != NARCACHE__HTTP_PUT) {
    refuse(c, 400, "GET and HEAD requests have no body here");
    return;
  }
  route_request(c);
}

static const narcache__http_limits *limits_of(srv_t *s, narcache__http_limits *l) {
  l->max_head_bytes = (size_t)s->opt[NARCACHE_OPT_MAX_HEAD_BYTES];
  l->max_target_bytes = (size_t)s->opt[NARCACHE_OPT_MAX_TARGET_BYTES];
  l->max_headers = (size_t)s->opt[NARCACHE_OPT_MAX_HEADERS];
  return l;
}

/* Handle the next request in the buffer, if it is complete. */
static void process_input(srv_conn *c) {
  srv_t *s = c->server;
  if (c->phase != PHASE_IDLE && c->phase != PHASE_HEAD)
    return;
  if (c->in_len == 0)
    return;
  narcache__http_limits limits;
  const char *why = "";
  long r = narcache__http_head_scan(&c->scan, c->in, c->in_len, limits_of(s, &limits), &why);
  if (r == 0) {
    if (c->phase == PHASE_IDLE) {
      c->phase = PHASE_HEAD; /* the header timeout runs from the first byte */
      arm_timer(c, s->opt[NARCACHE_OPT_HEADER_TIMEOUT_MS]);
    }
    return;
  }
  c->started_ns = uv_hrtime();
  if (c->x == NULL && (c->x = narcache__calloc(1, sizeof *c->x)) == NULL) {
    close_conn(c); /* out of memory: this client has to come back */
    return;
  }
  if (r < 0) {
    c->head_len = c->in_len;
    snprintf(c->method, sizeof c->method, "-");
    c->x->target[0] = '\0';
    c->route = ROUTE_OTHER;
    watch(c, 0);
    uv_timer_stop(&c->timer);
    refuse(c, (int)-r, why);
    return;
  }
  c->head_len = (size_t)r;
  int status = narcache__http_parse_head(&c->req, c->in, c->head_len, &limits, &why);
  if (status != 0) {
    snprintf(c->method, sizeof c->method, "-");
    c->x->target[0] = '\0';
    c->route = ROUTE_OTHER;
    watch(c, 0);
    uv_timer_stop(&c->timer);
    refuse(c, status, why);
    return;
  }
  handle_request(c);
}

static void read_input(srv_conn *c) {
  srv_t *s = c->server;
  size_t limit = (size_t)s->opt[NARCACHE_OPT_MAX_HEAD_BYTES] + READ_CHUNK;
  for (;;) {
    if (c->in_cap - c->in_len < READ_CHUNK / 2) {
      if (c->in_cap >= limit)
        break; /* full: handle what is here (a head, pipelined requests,
                  the start of an upload's body, or a 431) first */
      size_t cap = c->in_cap == 0 ? READ_CHUNK : c->in_cap * 2;
      if (cap > limit)
        cap = limit;
      char *grown = narcache__realloc(c->in, cap);
      if (grown == NULL) {
        close_conn(c);
        return;
      }
      c->in = grown;
      c->in_cap = cap;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (n <= 0) {
      close_conn(c); /* the client closed (or reset) */
      return;
    }
    c->in_len += (size_t)n;
    if ((size_t)n < READ_CHUNK / 2)
      break;
  }
  process_input(c);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  srv_conn *c = h->data;
  if (c->closing)
    return;
  if (status < 0) {
    c->aborted = 1;
    close_conn(c);
    return;
  }
  if ((events & UV_WRITABLE) && c->phase == PHASE_SEND) {
    write_out(c);
    return;
  }
  if ((events & UV_WRITABLE) && c->phase == PHASE_BLOCKED) {
    queue_pump(c);
    return;
  }
  if ((events & UV_READABLE) && c->phase == PHASE_RECEIVE) {
    receive_body(c);
    return;
  }
  if ((events & UV_READABLE) && (c->phase == PHASE_IDLE || c->phase == PHASE_HEAD))
    read_input(c);
}
