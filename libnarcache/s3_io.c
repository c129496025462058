/* The S3 transport: one I/O thread per store runs a private libuv loop that
 * drives a libcurl multi handle (socket and timer callbacks), so every
 * transfer of the store -- hundreds at once if need be -- shares one thread
 * and a pool of kept-alive connections.
 *
 * The store's callbacks run on the server's worker threads (or the CLI's
 * main thread) and may block, so the calling side is synchronous: a caller
 * starts a transfer, then waits on the transfer's condition variable for
 * its response head, body bytes, room for request bytes, or the end. Every
 * wait has a deadline, so nothing waits forever on a wedged object store.
 *
 * Bodies move through bounded rings in both directions. When the response
 * ring is full the transfer is paused (CURL_WRITEFUNC_PAUSE) until the
 * reader has taken bytes; when the request ring is empty the upload is
 * paused (CURL_READFUNC_PAUSE) until the writer adds some. A NAR of any
 * size thus needs two rings of memory, whatever the speeds at either end.
 *
 * Cross-thread requests (new transfers, unpause, cancel) are queued under
 * the engine's lock and delivered by a uv_async_t; a queued transfer holds
 * a reference so it cannot be freed under the I/O thread. Each transfer's
 * own state (rings, head, result) has a lock of its own, so transfers do
 * not contend with each other; when both are needed, a transfer's lock is
 * taken first. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common_internal.h"
#include "s3_io_internal.h"

/* A reader waits for this many body bytes, or GATHER_MS with fewer, before
 * it takes them (see wait_for_body). */
#define GATHER_BYTES (64 * 1024)
#define GATHER_MS 5
/* libcurl's receive buffer: larger pieces, fewer recv calls and callbacks. */
#define RECEIVE_BUFFER (128 * 1024)

typedef struct ring {
  uint8_t *buf;
  size_t cap, head, len;
} ring;

struct narcache__s3_io {
  pthread_t thread;
  int thread_started;
  uv_loop_t loop;
  uv_async_t wake;
  uv_timer_t timer;
  CURLM *multi;
  pthread_mutex_t lock;        /* the two lists and `stopping` */
  narcache__s3_xfer *incoming; /* lock: to add to the multi */
  narcache__s3_xfer *poked;    /* lock: to unpause or cancel */
  int stopping;                /* lock */
  narcache__s3_xfer *active;   /* I/O thread: in the multi */
  char peer_ip[64];            /* lock: who answered last ("" before any) */
  long peer_port;              /* lock */
};

struct narcache__s3_xfer {
  narcache__s3_io *io;
  CURL *easy;
  struct curl_slist *headers;
  pthread_mutex_t lock; /* "lock" below: this transfer's state */
  pthread_cond_t cond;
  int waiters;      /* lock: callers blocked on cond (no signal needed without) */
  atomic_int refs;  /* the caller, the I/O thread, a pending poke */
  /* request body: memory, or a stream fed by _write */
  const uint8_t *body;
  size_t body_len, body_pos;
  int streaming;
  ring send;     /* lock */
  int send_eof;  /* lock */
  int send_paused;
  /* response */
  ring recv; /* lock */
  int recv_paused;
  size_t recv_wake_at; /* lock: the waiting reader wants this many bytes */
  int ready_fd;        /* eventfd for a reader that waits elsewhere (-1: none yet) */
  int ready_armed;     /* lock: signal ready_fd at the next wake */
  long status;    /* lock */
  int head_done;  /* lock */
  int done;       /* lock */
  int result;     /* lock: 0 or NARCACHE_E* once done */
  int cancel;     /* lock */
  int in_poke_list; /* the engine's lock */
  int in_multi; /* I/O thread */
  narcache__s3_xfer *next_incoming, *next_poke, *prev_active, *next_active;
  narcache__s3_head head; /* lock: filled while the head arrives */
  char error_body[NARCACHE__S3_ERROR_BODY_MAX + 1];
  size_t error_body_len;
  char curl_error[CURL_ERROR_SIZE];
};

/* ---- rings --------------------------------------------------------------- */

static int ring_init(ring *r, size_t cap) {
  r->buf = narcache__malloc(cap);
  r->cap = cap;
  r->head = r->len = 0;
  return r->buf != NULL ? 0 : NARCACHE_ENOMEM;
}

static size_t ring_room(const ring *r) { return r->cap - r->len; }

static void ring_push(ring *r, const uint8_t *data, size_t n) {
  size_t tail = (r->head + r->len) % r->cap;
  size_t first = n < r->cap - tail ? n : r->cap - tail;
  memcpy(r->buf + tail, data, first);
  memcpy(r->buf, data + first, n - first);
  r->len += n;
}

static void ring_drop(ring *r, size_t n) {
  r->head = (r->head + n) % r->cap;
  r->len -= n;
}

static size_t ring_pop(ring *r, uint8_t *out, size_t n) {
  if (n > r->len)
    n = r->len;
  size_t first = n < r->cap - r->head ? n : r->cap - r->head;
  memcpy(out, r->buf + r->head, first);
  memcpy(out + first, r->buf, n - first);
  ring_drop(r, n);
  return n;
}

/* The unread bytes that follow each other in memory, from the first on. */
static size_t ring_span(const ring *r) {
  return r->len < r->cap - r->head ? r->len : r->cap - r->head;
}

/* ---- time ---------------------------------------------------------------- */

uint64_t narcache__s3_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Wait on x->cond (lock held) until `deadline_ms`; ETIMEDOUT when it passed. */
static int wait_until(narcache__s3_xfer *x, uint64_t deadline_ms) {
  struct timespec ts = {.tv_sec = (time_t)(deadline_ms / 1000),
                        .tv_nsec = (long)(deadline_ms % 1000) * 1000000L};
  if (narcache__s3_now_ms() >= deadline_ms)
    return ETIMEDOUT;
  x->waiters++;
  int rc = pthread_cond_timedwait(&x->cond, &x->lock, &ts);
  x->waiters--;
  return rc;
}

/* Wake the caller if it waits (lock held): bodies arrive in 16 KiB pieces,
 * and a futex call per piece would cost more than the copy. */
static void wake_caller(narcache__s3_xfer *x) {
  if (x->waiters > 0)
    pthread_cond_broadcast(&x->cond);
  if (x->ready_armed) {
    x->ready_armed = 0;
    uint64_t one = 1;
    (void)!write(x->ready_fd, &one, sizeof one); /* cannot fill: drained when armed */
  }
}

/* ---- references and requests to the I/O thread ---------------------------- */

static void xfer_destroy(narcache__s3_xfer *x) {
  if (x->easy != NULL)
    curl_easy_cleanup(x->easy);
  curl_slist_free_all(x->headers);
  if (x->ready_fd >= 0)
    close(x->ready_fd);
  pthread_cond_destroy(&x->cond);
  pthread_mutex_destroy(&x->lock);
  narcache__free(x->send.buf);
  narcache__free(x->recv.buf);
  narcache__free(x);
}

/* Drop a reference; the last one frees the transfer. No lock held. */
static void unref(narcache__s3_xfer *x) {
  if (atomic_fetch_sub(&x->refs, 1) == 1)
    xfer_destroy(x);
}

/* Ask the I/O thread to look at `x` (unpause, or cancel). x->lock held. */
static void poke_locked(narcache__s3_xfer *x) {
  if (x->done)
    return;
  narcache__s3_io *io = x->io;
  pthread_mutex_lock(&io->lock);
  if (!x->in_poke_list) {
    x->in_poke_list = 1;
    atomic_fetch_add(&x->refs, 1);
    x->next_poke = io->poked;
    io->poked = x;
    uv_async_send(&io->wake);
  }
  pthread_mutex_unlock(&io->lock);
}

/* The transfer is over (I/O thread): record, wake the caller, drop the I/O
 * thread's reference. */
static void finish(narcache__s3_xfer *x, int result) {
  pthread_mutex_lock(&x->lock);
  if (!x->done) {
    x->done = 1;
    x->result = result;
  }
  wake_caller(x);
  pthread_mutex_unlock(&x->lock);
  unref(x);
}

static int result_of(CURLcode code, long status) {
  switch (code) {
  case CURLE_OK: return status > 0 ? 0 : NARCACHE_EIO;
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_OUT_OF_MEMORY:
  /* a certificate we do not trust, a TLS failure: not an answer either */
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM: return NARCACHE_EUNAVAIL;
  case CURLE_ABORTED_BY_CALLBACK:
  case CURLE_WRITE_ERROR:
  case CURLE_READ_ERROR: return NARCACHE_ECANCELED;
  default: return NARCACHE_EIO;
  }
}

/* ---- the I/O thread: libcurl's socket and timer callbacks ------------------ */

typedef struct sock_watch {
  uv_poll_t poll;
  curl_socket_t fd;
  narcache__s3_io *io;
} sock_watch;

static void unlink_active(narcache__s3_xfer *x) {
  if (x->prev_active != NULL)
    x->prev_active->next_active = x->next_active;
  else
    x->io->active = x->next_active;
  if (x->next_active != NULL)
    x->next_active->prev_active = x->prev_active;
  x->prev_active = x->next_active = NULL;
}

static void remove_from_multi(narcache__s3_xfer *x) {
  if (!x->in_multi)
    return;
  curl_multi_remove_handle(x->io->multi, x->easy);
  x->in_multi = 0;
  unlink_active(x);
}

/* Remember the address of a server that answers (I/O thread, at a
 * response's status line). */
static void note_peer(narcache__s3_io *io, CURL *easy) {
  char *ip = NULL;
  long port = 0;
  if (curl_easy_getinfo(easy, CURLINFO_PRIMARY_IP, &ip) != CURLE_OK || ip == NULL ||
      ip[0] == '\0' || strlen(ip) >= sizeof io->peer_ip ||
      curl_easy_getinfo(easy, CURLINFO_PRIMARY_PORT, &port) != CURLE_OK || port <= 0 ||
      port > 65535)
    return;
  pthread_mutex_lock(&io->lock);
  memcpy(io->peer_ip, ip, strlen(ip) + 1);
  io->peer_port = port;
  pthread_mutex_unlock(&io->lock);
}

int narcache__s3_io_last_peer(narcache__s3_io *io, char *ip, size_t ip_size, long *port) {
  pthread_mutex_lock(&io->lock);
  size_t len = strlen(io->peer_ip);
  int known = len > 0 && len < ip_size;
  if (known) {
    memcpy(ip, io->peer_ip, len + 1);
    *port = io->peer_port;
  }
  pthread_mutex_unlock(&io->lock);
  return known ? NARCACHE_OK : NARCACHE_ENOTFOUND;
}

static void check_finished(narcache__s3_io *io) {
  CURLMsg *msg;
  int pending;
  while ((msg = curl_multi_info_read(io->multi, &pending)) != NULL) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    narcache__s3_xfer *x = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    CURLcode code = msg->data.result;
    remove_from_multi(x);
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    pthread_mutex_lock(&x->lock);
    if (x->status == 0)
      x->status = status;
    int cancelled = x->cancel;
    pthread_mutex_unlock(&x->lock);
    finish(x, cancelled ? NARCACHE_ECANCELED : result_of(code, status));
  }
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  sock_watch *w = handle->data;
  int flags = 0, running = 0;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(w->io->multi, w->fd, flags, &running);
  check_finished(w->io);
}

static void free_watch(uv_handle_t *h) { narcache__free(h->data); }

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)easy;
  narcache__s3_io *io = userp;
  sock_watch *w = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (w != NULL) {
      uv_poll_stop(&w->poll);
      uv_close((uv_handle_t *)&w->poll, free_watch);
      curl_multi_assign(io->multi, fd, NULL);
    }
    return 0;
  }
  if (w == NULL) {
    w = narcache__calloc(1, sizeof *w);
    if (w == NULL)
      return -1;
    if (uv_poll_init_socket(&io->loop, &w->poll, fd) != 0) {
      narcache__free(w);
      return -1;
    }
    w->fd = fd;
    w->io = io;
    w->poll.data = w;
    curl_multi_assign(io->multi, fd, w);
  }
  int events = 0;
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  return uv_poll_start(&w->poll, events, on_poll) == 0 ? 0 : -1;
}

static void on_timer(uv_timer_t *t) {
  narcache__s3_io *io = t->data;
  int running = 0;
  curl_multi_socket_action(io->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_finished(io);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  narcache__s3_io *io = userp;
  if (timeout_ms < 0)
    uv_timer_stop(&io->timer);
  else /* 0 too goes through the loop: never re-enter libcurl from here */
    uv_timer_start(&io->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ---- the I/O thread: requests from callers -------------------------------- */

static void cancel_everything(narcache__s3_io *io) {
  while (io->active != NULL) {
    narcache__s3_xfer *x = io->active;
    remove_from_multi(x);
    finish(x, NARCACHE_ECANCELED);
  }
}

static void close_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, h->type == UV_POLL ? free_watch : NULL);
}

static void on_wake(uv_async_t *a) {
  narcache__s3_io *io = a->data;
  pthread_mutex_lock(&io->lock);
  narcache__s3_xfer *incoming = io->incoming, *poked = io->poked;
  io->incoming = io->poked = NULL;
  int stopping = io->stopping;
  pthread_mutex_unlock(&io->lock);

  while (incoming != NULL) {
    narcache__s3_xfer *x = incoming;
    incoming = x->next_incoming;
    pthread_mutex_lock(&x->lock);
    int cancelled = x->cancel || stopping;
    pthread_mutex_unlock(&x->lock);
    if (cancelled || curl_multi_add_handle(io->multi, x->easy) != CURLM_OK) {
      finish(x, cancelled ? NARCACHE_ECANCELED : NARCACHE_ENOMEM);
      continue;
    }
    x->in_multi = 1;
    x->next_active = io->active;
    if (io->active != NULL)
      io->active->prev_active = x;
    io->active = x;
  }
  while (poked != NULL) {
    narcache__s3_xfer *x = poked;
    poked = x->next_poke;
    pthread_mutex_lock(&io->lock);
    x->in_poke_list = 0;
    pthread_mutex_unlock(&io->lock);
    pthread_mutex_lock(&x->lock);
    int cancel = x->cancel || stopping;
    pthread_mutex_unlock(&x->lock);
    if (x->in_multi) {
      if (cancel) {
        remove_from_multi(x);
        finish(x, NARCACHE_ECANCELED); /* drops the I/O thread's reference */
      } else {
        /* May call the write or read callback at once: no lock held. */
        curl_easy_pause(x->easy, CURLPAUSE_CONT);
      }
    }
    unref(x); /* the poke's reference */
  }
  if (stopping) {
    cancel_everything(io);
    curl_multi_cleanup(io->multi);
    io->multi = NULL;
    uv_walk(&io->loop, close_handle, NULL);
    return;
  }
  check_finished(io);
}

static void *io_thread(void *arg) {
  narcache__s3_io *io = arg;
  uv_run(&io->loop, UV_RUN_DEFAULT);
  return NULL;
}

/* ---- libcurl's data callbacks (I/O thread) ------------------------------- */

static int header_is(const char *line, size_t len, const char *name) {
  size_t n = strlen(name);
  return len > n && line[n] == ':' && strncasecmp(line, name, n) == 0;
}

/* The value of a header line, trimmed, into `out` (cut to fit). */
static void header_value(char *out, size_t size, const char *line, size_t len) {
  const char *v = (const char *)memchr(line, ':', len) + 1, *end = line + len;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
    end--;
  size_t n = (size_t)(end - v) < size - 1 ? (size_t)(end - v) : size - 1;
  memcpy(out, v, n);
  out[n] = '\0';
}

static size_t on_header(char *line, size_t size, size_t nitems, void *userdata) {
  narcache__s3_xfer *x = userdata;
  size_t len = size * nitems;
  int status_line = len >= 12 && memcmp(line, "HTTP/", 5) == 0;
  if (status_line)
    note_peer(x->io, x->easy); /* outside x->lock: no lock order to keep */
  pthread_mutex_lock(&x->lock);
  if (status_line) {
    /* A new head (after a 100 Continue, too): forget the previous one. */
    const char *sp = memchr(line, ' ', len);
    x->status = sp != NULL ? strtol(sp + 1, NULL, 10) : 0;
    memset(&x->head, 0, sizeof x->head);
    x->head.content_length = UINT64_MAX;
  } else if (len <= 2 && (line[0] == '\r' || line[0] == '\n')) {
    if (x->status >= 200) {
      x->head_done = 1;
      wake_caller(x);
    }
  } else if (header_is(line, len, "content-length")) {
    char v[32];
    header_value(v, sizeof v, line, len);
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (*v >= '0' && *v <= '9' && *end == '\0')
      x->head.content_length = n;
  } else if (header_is(line, len, "content-range")) {
    header_value(x->head.content_range, sizeof x->head.content_range, line, len);
  } else if (header_is(line, len, "etag")) {
    header_value(x->head.etag, sizeof x->head.etag, line, len);
  } else if (header_is(line, len, "retry-after")) {
    char v[32];
    header_value(v, sizeof v, line, len);
    x->head.retry_after_s = (uint32_t)strtoul(v, NULL, 10);
  } else if (header_is(line, len, "content-encoding")) {
    header_value(x->head.content_encoding, sizeof x->head.content_encoding, line, len);
  }
  pthread_mutex_unlock(&x->lock);
  return len;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata) {
  narcache__s3_xfer *x = userdata;
  size_t len = size * nmemb;
  pthread_mutex_lock(&x->lock);
  if (x->cancel) {
    pthread_mutex_unlock(&x->lock);
    return 0; /* CURLE_WRITE_ERROR: the transfer ends */
  }
  if (x->status >= 300) { /* an error document: keep its start for messages */
    size_t room = NARCACHE__S3_ERROR_BODY_MAX - x->error_body_len;
    size_t n = len < room ? len : room;
    memcpy(x->error_body + x->error_body_len, data, n);
    x->error_body_len += n;
    x->error_body[x->error_body_len] = '\0';
    pthread_mutex_unlock(&x->lock);
    return len;
  }
  if (ring_room(&x->recv) < len) {
    x->recv_paused = 1;
    wake_caller(x); /* a full ring is all the reader can get */
    pthread_mutex_unlock(&x->lock);
    return CURL_WRITEFUNC_PAUSE;
  }
  ring_push(&x->recv, (const uint8_t *)data, len);
  if (x->recv.len >= x->recv_wake_at)
    wake_caller(x);
  pthread_mutex_unlock(&x->lock);
  return len;
}

static size_t on_send(char *buffer, size_t size, size_t nitems, void *userdata) {
  narcache__s3_xfer *x = userdata;
  size_t max = size * nitems;
  if (!x->streaming) {
    size_t n = x->body_len - x->body_pos < max ? x->body_len - x->body_pos : max;
    memcpy(buffer, x->body + x->body_pos, n);
    x->body_pos += n;
    return n;
  }
  pthread_mutex_lock(&x->lock);
  size_t n = 0;
  if (x->cancel) {
    n = CURL_READFUNC_ABORT;
  } else if (x->send.len > 0) {
    n = ring_pop(&x->send, (uint8_t *)buffer, max);
    wake_caller(x);
  } else if (!x->send_eof) {
    x->send_paused = 1;
    n = CURL_READFUNC_PAUSE;
  }
  pthread_mutex_unlock(&x->lock);
  return n;
}

static int on_seek(void *userdata, curl_off_t offset, int origin) {
  narcache__s3_xfer *x = userdata;
  if (x->streaming || origin != SEEK_SET || offset < 0 || (uint64_t)offset > x->body_len)
    return CURL_SEEKFUNC_CANTSEEK;
  x->body_pos = (size_t)offset;
  return CURL_SEEKFUNC_OK;
}

/* ---- the engine ------------------------------------------------------------ */

int narcache__s3_io_new(narcache__s3_io **out, long max_connections) {
  *out = NULL;
  narcache__s3_io *io = narcache__calloc(1, sizeof *io);
  if (io == NULL)
    return NARCACHE_ENOMEM;
  if (pthread_mutex_init(&io->lock, NULL) != 0) {
    narcache__free(io);
    return NARCACHE_ENOMEM;
  }
  int rc = NARCACHE_ENOMEM;
  if (uv_loop_init(&io->loop) != 0)
    goto fail_loop;
  io->multi = curl_multi_init();
  if (io->multi == NULL || uv_async_init(&io->loop, &io->wake, on_wake) != 0)
    goto fail;
  uv_timer_init(&io->loop, &io->timer);
  io->wake.data = io->timer.data = io;
  curl_multi_setopt(io->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(io->multi, CURLMOPT_SOCKETDATA, io);
  curl_multi_setopt(io->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(io->multi, CURLMOPT_TIMERDATA, io);
  curl_multi_setopt(io->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_connections);
  curl_multi_setopt(io->multi, CURLMOPT_MAXCONNECTS, max_connections);
  if (pthread_create(&io->thread, NULL, io_thread, io) != 0)
    goto fail;
  io->thread_started = 1;
  *out = io;
  return NARCACHE_OK;
fail:
  if (io->multi != NULL)
    curl_multi_cleanup(io->multi);
  uv_walk(&io->loop, close_handle, NULL);
  uv_run(&io->loop, UV_RUN_DEFAULT);
  uv_loop_close(&io->loop);
fail_loop:
  pthread_mutex_destroy(&io->lock);
  narcache__free(io);
  return rc;
}

void narcache__s3_io_free(narcache__s3_io *io) {
  if (io == NULL)
    return;
  pthread_mutex_lock(&io->lock);
  io->stopping = 1;
  uv_async_send(&io->wake);
  pthread_mutex_unlock(&io->lock);
  pthread_join(io->thread, NULL);
  uv_loop_close(&io->loop);
  pthread_mutex_destroy(&io->lock);
  narcache__free(io);
}

static int set_method(narcache__s3_xfer *x, const narcache__s3_request *r) {
  CURL *e = x->easy;
  if (strcmp(r->method, "HEAD") == 0)
    return curl_easy_setopt(e, CURLOPT_NOBODY, 1L) == CURLE_OK ? 0 : NARCACHE_EINVAL;
  if (strcmp(r->method, "GET") == 0)
    return 0;
  if (strcmp(r->method, "PUT") == 0 || strcmp(r->method, "POST") == 0) {
    if (strcmp(r->method, "PUT") == 0)
      curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    else {
      curl_easy_setopt(e, CURLOPT_POST, 1L);
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_size);
    }
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_size);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_send);
    curl_easy_setopt(e, CURLOPT_READDATA, x);
    curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
    return 0;
  }
  return curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method) == CURLE_OK ? 0 : NARCACHE_EINVAL;
}

static int configure(narcache__s3_xfer *x, const narcache__s3_request *r) {
  CURL *e = x->easy;
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
  curl_easy_setopt(e, CURLOPT_URL, r->url);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->curl_error);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  /* A piece must always fit in the ring once the reader emptied it. */
  size_t receive = x->recv.cap / 2 < RECEIVE_BUFFER ? x->recv.cap / 2 : RECEIVE_BUFFER;
  curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)receive);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)r->connect_timeout_ms);
  /* A transfer moving nothing (not paused by us) for stall_ms is dead. */
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)((r->stall_timeout_ms + 999) / 1000));
  if (r->total_timeout_ms > 0)
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)r->total_timeout_ms);
  if (r->ca_file != NULL)
    curl_easy_setopt(e, CURLOPT_CAINFO, r->ca_file);
  if (r->insecure_tls) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  return set_method(x, r);
}

int narcache__s3_xfer_start(narcache__s3_xfer **out, narcache__s3_io *io,
                            const narcache__s3_request *r, struct curl_slist *headers) {
  *out = NULL;
  narcache__s3_xfer *x = narcache__calloc(1, sizeof *x);
  if (x == NULL) {
    curl_slist_free_all(headers);
    return NARCACHE_ENOMEM;
  }
  x->ready_fd = -1;
  x->io = io;
  x->headers = headers;
  x->body = r->body;
  x->body_len = r->body != NULL ? (size_t)r->body_size : 0;
  x->streaming = r->body == NULL && r->body_size > 0;
  x->head.content_length = UINT64_MAX;
  x->recv_wake_at = 1;
  if (pthread_mutex_init(&x->lock, NULL) != 0) {
    curl_slist_free_all(headers);
    narcache__free(x);
    return NARCACHE_ENOMEM;
  }
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  int cond_ok = pthread_cond_init(&x->cond, &attr) == 0;
  pthread_condattr_destroy(&attr);
  if (!cond_ok) {
    pthread_mutex_destroy(&x->lock);
    curl_slist_free_all(headers);
    narcache__free(x);
    return NARCACHE_ENOMEM;
  }
  int rc = ring_init(&x->recv, r->response_buffer > 0 ? r->response_buffer : 65536);
  if (rc == 0 && x->streaming)
    rc = ring_init(&x->send, r->request_buffer > 0 ? r->request_buffer : 65536);
  if (rc == 0 && (x->easy = curl_easy_init()) == NULL)
    rc = NARCACHE_ENOMEM;
  if (rc == 0)
    rc = configure(x, r);
  if (rc != 0) {
    xfer_destroy(x);
    return rc;
  }
  atomic_init(&x->refs, 2); /* the caller and the I/O thread */
  pthread_mutex_lock(&io->lock);
  x->next_incoming = io->incoming;
  io->incoming = x;
  uv_async_send(&io->wake);
  pthread_mutex_unlock(&io->lock);
  *out = x;
  return NARCACHE_OK;
}

int narcache__s3_xfer_wait_head(narcache__s3_xfer *x, uint64_t deadline_ms, long *status) {
  pthread_mutex_lock(&x->lock);
  int timed_out = 0;
  while (!x->head_done && !x->done && !timed_out)
    timed_out = wait_until(x, deadline_ms) == ETIMEDOUT;
  int rc = x->head_done ? 0 : x->done ? (x->result != 0 ? x->result : NARCACHE_EIO)
                                      : NARCACHE_EUNAVAIL;
  *status = x->status;
  pthread_mutex_unlock(&x->lock);
  return rc;
}

void narcache__s3_xfer_head(narcache__s3_xfer *x, narcache__s3_head *head) {
  pthread_mutex_lock(&x->lock);
  *head = x->head;
  pthread_mutex_unlock(&x->lock);
}

/* Wait (lock held) until the reader has enough to make a handoff worth it:
 * `mark` bytes, or any bytes once GATHER_MS went by, or the end, or a full
 * ring. Waking the reader for every 16 KiB piece would cost a futex call
 * and a small send each; waiting for a slow trickle must not hold back
 * what arrived either. */
static void wait_for_body(narcache__s3_xfer *x, size_t mark, uint64_t deadline_ms) {
  if (mark == 0)
    mark = 1;
  if (mark > x->recv.cap / 2)
    mark = x->recv.cap / 2; /* a ring this full may pause: never wait past it */
  uint64_t gather_until = narcache__s3_now_ms() + GATHER_MS;
  while (!x->done && !x->recv_paused && x->recv.len < mark) {
    uint64_t now = narcache__s3_now_ms();
    if (now >= deadline_ms)
      break;
    int gathering = now < gather_until;
    if (!gathering && x->recv.len > 0)
      break;
    x->recv_wake_at = gathering ? mark : 1;
    wait_until(x, gathering && gather_until < deadline_ms ? gather_until : deadline_ms);
  }
  x->recv_wake_at = 1;
}

/* Resume a paused transfer once a good share of its ring is free, not for
 * every byte taken (lock held). */
static void taken_from_ring(narcache__s3_xfer *x) {
  if (x->recv_paused && ring_room(&x->recv) >= x->recv.cap / 2) {
    x->recv_paused = 0;
    poke_locked(x);
  }
}

/* What a reader gets once wait_for_body returned (lock held). */
static int body_result(narcache__s3_xfer *x) {
  if (x->recv.len > 0)
    return NARCACHE_OK;
  if (x->done)
    return x->result;
  return NARCACHE_EUNAVAIL; /* nothing arrived in time */
}

int narcache__s3_xfer_read(narcache__s3_xfer *x, void *buf, size_t len, size_t *got,
                           uint64_t deadline_ms) {
  *got = 0;
  pthread_mutex_lock(&x->lock);
  wait_for_body(x, len < GATHER_BYTES ? len : GATHER_BYTES, deadline_ms);
  int rc = body_result(x);
  if (x->recv.len > 0) {
    *got = ring_pop(&x->recv, buf, len);
    taken_from_ring(x);
  }
  pthread_mutex_unlock(&x->lock);
  return rc;
}

int narcache__s3_xfer_peek(narcache__s3_xfer *x, size_t want, const void **data, size_t *len,
                           uint64_t deadline_ms) {
  *data = NULL;
  *len = 0;
  pthread_mutex_lock(&x->lock);
  wait_for_body(x, want < GATHER_BYTES ? want : GATHER_BYTES, deadline_ms);
  int rc = body_result(x);
  if (x->recv.len > 0) {
    /* Only the I/O thread writes the ring, and only into its free part:
     * these bytes stay put until _consume. */
    *data = x->recv.buf + x->recv.head;
    *len = ring_span(&x->recv);
  }
  pthread_mutex_unlock(&x->lock);
  return rc;
}

int narcache__s3_xfer_arm(narcache__s3_xfer *x, int *fd) {
  *fd = -1;
  pthread_mutex_lock(&x->lock);
  int rc = 0;
  if (x->recv.len == 0 && !x->done && !x->recv_paused) {
    if (x->ready_fd < 0)
      x->ready_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    rc = x->ready_fd < 0 ? -1 : 1;
  }
  if (rc == 1) {
    uint64_t count;
    (void)!read(x->ready_fd, &count, sizeof count); /* a wake of an earlier wait */
    x->ready_armed = 1; /* recv_wake_at is 1 outside wait_for_body: the first byte wakes */
    *fd = x->ready_fd;
  }
  pthread_mutex_unlock(&x->lock);
  return rc;
}

void narcache__s3_xfer_consume(narcache__s3_xfer *x, size_t n) {
  pthread_mutex_lock(&x->lock);
  ring_drop(&x->recv, n <= ring_span(&x->recv) ? n : ring_span(&x->recv));
  taken_from_ring(x);
  pthread_mutex_unlock(&x->lock);
}

int narcache__s3_xfer_write(narcache__s3_xfer *x, const void *data, size_t len,
                            uint64_t deadline_ms) {
  const uint8_t *p = data;
  pthread_mutex_lock(&x->lock);
  int rc = NARCACHE_OK;
  while (len > 0) {
    if (x->done) {
      rc = x->result != 0 ? x->result : NARCACHE_EIO; /* answered before the body ended */
      break;
    }
    size_t room = ring_room(&x->send);
    if (room == 0) {
      if (wait_until(x, deadline_ms) == ETIMEDOUT) {
        rc = NARCACHE_EUNAVAIL;
        break;
      }
      continue;
    }
    size_t n = len < room ? len : room;
    ring_push(&x->send, p, n);
    p += n;
    len -= n;
    if (x->send_paused) {
      x->send_paused = 0;
      poke_locked(x);
    }
  }
  pthread_mutex_unlock(&x->lock);
  return rc;
}

void narcache__s3_xfer_end_body(narcache__s3_xfer *x) {
  pthread_mutex_lock(&x->lock);
  x->send_eof = 1;
  if (x->send_paused) {
    x->send_paused = 0;
    poke_locked(x);
  }
  pthread_mutex_unlock(&x->lock);
}

int narcache__s3_xfer_wait_done(narcache__s3_xfer *x, uint64_t deadline_ms, long *status) {
  pthread_mutex_lock(&x->lock);
  int timed_out = 0;
  while (!x->done && !timed_out)
    timed_out = wait_until(x, deadline_ms) == ETIMEDOUT;
  int rc = x->done ? x->result : NARCACHE_EUNAVAIL;
  *status = x->status;
  pthread_mutex_unlock(&x->lock);
  return rc;
}

const char *narcache__s3_xfer_error_body(narcache__s3_xfer *x) {
  pthread_mutex_lock(&x->lock);
  const char *body = x->error_body; /* written only before done / status >= 300 */
  pthread_mutex_unlock(&x->lock);
  return body;
}

const char *narcache__s3_xfer_curl_error(narcache__s3_xfer *x) { return x->curl_error; }

void narcache__s3_xfer_free(narcache__s3_xfer *x) {
  if (x == NULL)
    return;
  pthread_mutex_lock(&x->lock);
  if (!x->done) {
    x->cancel = 1;
    poke_locked(x);
  }
  pthread_mutex_unlock(&x->lock);
  unref(x);
}
