/* One simulated client: a TCP connection (reused while the server keeps it
 * alive) and the requests of its kind, one at a time, as a Nix client or a
 * hostile one sends them. */
#define _GNU_SOURCE
#include "load.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_BACKOFF_MS 50

typedef enum client_phase {
  PHASE_IDLE,       /* between requests */
  PHASE_CONNECTING, /* uv_tcp_connect pending */
  PHASE_SENDING,    /* request going out (slow-headers: byte by byte) */
  PHASE_WAITING,    /* reading the response, or waiting for the server to close */
  PHASE_CLOSING     /* connection handle closing */
} client_phase;

struct load_client {
  load_run *run;
  load_kind kind;
  size_t index;
  client_phase phase;
  int stopped;     /* no more requests; free once the handles are closed */
  int handles;     /* open libuv handles (tcp, timeout, pace) */
  int tcp_open;    /* tcp handle initialised and not closed */
  int connected;
  int reused;      /* the connection served a request before this one */
  int retried;     /* this request was already retried after a stale keep-alive */
  int retry_pending; /* resend it on the new connection */
  int backoff;     /* the last connect failed: wait before the next */
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_write_t write_req;
  int writing;
  uv_timer_t timeout; /* of the current request */
  uv_timer_t pace;    /* slow-headers bytes, slow-read pauses, backoff */
  uint64_t request_start_ns;
  /* the current request */
  char head[1024];
  size_t head_len;
  size_t head_sent; /* slow-headers */
  const char *body; /* upload body (owned by upload_buf/narinfo_text) */
  size_t body_len;
  int is_nar;       /* closure/slow-read/reset: fetching a NAR */
  size_t path;      /* catalog index */
  response resp;
  narcache_narinfo *narinfo; /* closure: parses each narinfo fetched */
  uint64_t reset_after; /* reset: body bytes to take before the reset */
  /* uploads: the NAR, then its narinfo */
  int upload_step;
  char *upload_buf;
  size_t upload_len;
  char *narinfo_text;
  size_t narinfo_len;
  char upload_hash[33];
  char nar_name[128];
  /* slow-read */
  uint64_t read_allowance;
  char read_buf[64 * 1024];
};

static size_t open_connections;

size_t load_clients_open(void) { return open_connections; }

uint64_t load_now_ns(void) { return uv_hrtime(); }

static void next_request(load_client *c);
static void close_connection(load_client *c);
static void retry_later(uv_timer_t *t);

/* ---- bookkeeping -------------------------------------------------------------- */

static load_stats *stats(load_client *c) { return &c->run->stats[c->kind]; }

static void count_done(load_client *c) {
  load_run *run = c->run;
  if (load_kind_is_hostile(c->kind))
    return;
  run->completed++;
  if (run->opt->max_requests && run->completed == run->opt->max_requests)
    load_run_stop(run);
}

static void record_ok(load_client *c) {
  uint64_t us = (load_now_ns() - c->request_start_ns) / 1000;
  stats(c)->ok++;
  load_hist_add(&stats(c)->latency, us);
  count_done(c);
}

static void record_error(load_client *c, load_error e) {
  stats(c)->errors[e]++;
  count_done(c);
}

/* The current request failed: count it, drop the connection, go on. */
static void fail_request(load_client *c, load_error e) {
  record_error(c, e);
  uv_timer_stop(&c->timeout);
  close_connection(c);
}

static void handle_closed(uv_handle_t *h) {
  load_client *c = h->data;
  if (h == (uv_handle_t *)&c->tcp) {
    open_connections--;
    c->tcp_open = 0;
    c->connected = 0;
    c->reused = 0;
    if (!c->stopped) {
      c->phase = PHASE_IDLE;
      if (c->backoff) {
        c->backoff = 0;
        uv_timer_start(&c->pace, retry_later, CONNECT_BACKOFF_MS, 0);
      } else {
        next_request(c);
      }
    }
  }
  if (--c->handles == 0 && c->stopped) {
    c->run->clients[c->index] = NULL;
    response_fini(&c->resp);
    narcache_narinfo_free(c->narinfo);
    free(c->upload_buf);
    free(c->narinfo_text);
    free(c);
  }
}

static void close_connection(load_client *c) {
  uv_timer_stop(&c->pace);
  if (!c->tcp_open || uv_is_closing((uv_handle_t *)&c->tcp)) {
    if (!c->tcp_open && !c->stopped) {
      c->phase = PHASE_IDLE;
      uv_timer_start(&c->pace, retry_later, 0, 0); /* not recursively */
    }
    return;
  }
  c->phase = PHASE_CLOSING;
  uv_close((uv_handle_t *)&c->tcp, handle_closed);
}

/* ---- requests ---------------------------------------------------------------- */

static void format_get(load_client *c, const char *path, int head_only) {
  load_run *run = c->run;
  int n = snprintf(c->head, sizeof c->head,
                   "%s %s/%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: narcache-load\r\n"
                   "Accept: */*\r\n\r\n",
                   head_only ? "HEAD" : "GET", run->prefix, path, run->host_header);
  c->head_len = n > 0 && (size_t)n < sizeof c->head ? (size_t)n : 0;
}

static void format_put(load_client *c, const char *path, size_t len, const char *type) {
  load_run *run = c->run;
  char auth[600] = "";
  if (run->opt->token)
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", run->opt->token);
  int n = snprintf(c->head, sizeof c->head,
                   "PUT %s/%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: narcache-load\r\n%s"
                   "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                   run->prefix, path, run->host_header, auth, type, len);
  c->head_len = n > 0 && (size_t)n < sizeof c->head ? (size_t)n : 0;
}

static size_t random_nar_path(load_client *c) {
  load_run *run = c->run;
  return run->nar_paths[load_random(&run->rng) % run->n_nar_paths];
}

static void prepare_narinfo_storm(load_client *c) {
  load_run *run = c->run;
  char hash[33], path[64];
  double draw = (double)(load_random(&run->rng) >> 11) / 9007199254740992.0;
  if (run->catalog.count > 0 && draw < run->opt->hit_ratio)
    memcpy(hash, run->catalog.paths[load_random(&run->rng) % run->catalog.count].hash, 33);
  else
    load_random_hash(&run->rng, hash);
  snprintf(path, sizeof path, "%s.narinfo", hash);
  format_get(c, path, 0);
  response_init(&c->resp, 0, 0);
}

static void prepare_nar_get(load_client *c, size_t path) {
  c->path = path;
  c->is_nar = 1;
  format_get(c, c->run->catalog.paths[path].nar_url, 0);
  response_init(&c->resp, 0, 0);
}

static void prepare_closure(load_client *c) {
  int is_nar = 0;
  size_t path = load_walk_next(c->run, &is_nar);
  if (is_nar) {
    prepare_nar_get(c, path);
    return;
  }
  char name[64];
  c->path = path;
  c->is_nar = 0;
  snprintf(name, sizeof name, "%s.narinfo", c->run->catalog.paths[path].hash);
  format_get(c, name, 0);
  response_init(&c->resp, 0, NARCACHE_NARINFO_MAX_BYTES);
}

/* Slowloris and half-open clients send this head; half-open stops before
 * its end, slow-headers sends it a byte at a time. */
static void prepare_slow_head(load_client *c) {
  int n = snprintf(c->head, sizeof c->head,
                   "GET %s/nix-cache-info HTTP/1.1\r\nHost: %s\r\nUser-Agent: narcache-load\r\n"
                   "X-Slow: %s\r\n\r\n",
                   c->run->prefix, c->run->host_header, load_kind_name(c->kind));
  c->head_len = n > 0 && (size_t)n < sizeof c->head ? (size_t)n : 0;
  if (c->kind == KIND_HALF_OPEN && c->head_len > 8)
    c->head_len -= 8; /* inside the last header line: the head never ends */
  c->head_sent = 0;
  response_init(&c->resp, 0, 0);
}

/* A NAR of one regular file of random bytes, its narinfo, both as Nix
 * uploads them (NAR first: a narinfo must not name a missing NAR). */
static int make_upload(load_client *c) {
  load_run *run = c->run;
  uint64_t size = run->opt->upload_size;
  narcache_nar_writer *w = NULL;
  free(c->upload_buf);
  c->upload_buf = malloc((size_t)size + 256);
  char *data = malloc(size ? (size_t)size : 1);
  int rc = c->upload_buf && data ? narcache_nar_writer_new(&w) : NARCACHE_ENOMEM;
  for (uint64_t i = 0; rc == 0 && i < size; i += 8) {
    uint64_t r = load_random(&run->rng);
    memcpy(data + i, &r, size - i < 8 ? (size_t)(size - i) : 8);
  }
  narcache_outbuf out = {c->upload_buf, (size_t)size + 256, 0};
  narcache_inbuf in = {data, (size_t)size, 0};
  if (rc == 0)
    rc = narcache_nar_writer_file_begin(w, size, 0);
  while (rc == 0 && (rc = narcache_nar_writer_data(w, &out, &in)) == 1)
    rc = 0;
  if (rc == 0)
    rc = narcache_nar_writer_finish(w);
  if (rc == 0 && narcache_nar_writer_drain(w, &out) != 0)
    rc = NARCACHE_EBUFS;
  narcache_nar_writer_free(w);
  free(data);
  if (rc != 0)
    return rc;
  c->upload_len = out.pos;
  narcache_hash nar_hash;
  rc = narcache_hash_buffer(&nar_hash, NARCACHE_HASH_SHA256, c->upload_buf, c->upload_len);
  char nix32[64];
  size_t nix32_len = 0;
  if (rc == 0)
    rc = narcache_hash_format(nix32, sizeof nix32, &nix32_len, &nar_hash, NARCACHE_HASH_NIX32, 0);
  if (rc != 0)
    return rc;
  snprintf(c->nar_name, sizeof c->nar_name, "nar/%s.nar", nix32);
  load_random_hash(&run->rng, c->upload_hash);

  narcache_narinfo *ni = NULL;
  char store_path[512];
  int n = snprintf(store_path, sizeof store_path, "%s/%s-narcache-load-upload", run->opt->store_dir,
                   c->upload_hash);
  rc = narcache_narinfo_new(&ni, run->opt->store_dir);
  if (rc == 0)
    rc = narcache_narinfo_set_store_path(ni, store_path, (size_t)n);
  if (rc == 0)
    rc = narcache_narinfo_set_url(ni, c->nar_name, strlen(c->nar_name));
  if (rc == 0)
    rc = narcache_narinfo_set_compression(ni, "none", 4);
  if (rc == 0)
    rc = narcache_narinfo_set_file_hash(ni, &nar_hash);
  if (rc == 0)
    rc = narcache_narinfo_set_file_size(ni, 1, c->upload_len);
  if (rc == 0)
    rc = narcache_narinfo_set_nar_hash(ni, &nar_hash);
  if (rc == 0)
    rc = narcache_narinfo_set_nar_size(ni, c->upload_len);
  if (rc == 0 && run->opt->secret_key)
    rc = narcache_narinfo_sign(ni, run->opt->secret_key);
  char *text = NULL;
  size_t text_len = 0;
  if (rc == 0)
    rc = narcache_narinfo_format(&text, &text_len, ni);
  narcache_narinfo_free(ni);
  free(c->narinfo_text);
  c->narinfo_text = NULL;
  if (rc == 0) {
    c->narinfo_text = malloc(text_len);
    if (c->narinfo_text == NULL)
      rc = NARCACHE_ENOMEM;
    else
      memcpy(c->narinfo_text, text, text_len);
    c->narinfo_len = text_len;
  }
  narcache_free(text);
  return rc;
}

static int prepare_upload(load_client *c) {
  if (c->upload_step == 0) {
    int rc = make_upload(c);
    if (rc != 0) {
      fprintf(stderr, "narcache-load: cannot make an upload: %s\n", narcache_strerror(rc));
      return -1;
    }
    format_put(c, c->nar_name, c->upload_len, "application/x-nix-nar");
    c->body = c->upload_buf;
    c->body_len = c->upload_len;
  } else {
    char name[64];
    snprintf(name, sizeof name, "%s.narinfo", c->upload_hash);
    format_put(c, name, c->narinfo_len, "text/x-nix-narinfo");
    c->body = c->narinfo_text;
    c->body_len = c->narinfo_len;
  }
  response_init(&c->resp, 0, 0);
  return 0;
}

static int prepare(load_client *c) {
  c->body = NULL;
  c->body_len = 0;
  c->is_nar = 0;
  switch (c->kind) {
  case KIND_NARINFO:
    prepare_narinfo_storm(c);
    break;
  case KIND_CLOSURE:
    prepare_closure(c);
    break;
  case KIND_UPLOAD:
    if (prepare_upload(c) != 0)
      return -1;
    break;
  case KIND_SLOW_READ:
    prepare_nar_get(c, random_nar_path(c));
    c->read_allowance = 0;
    break;
  case KIND_RESET: {
    prepare_nar_get(c, random_nar_path(c));
    uint64_t size = c->run->catalog.paths[c->path].file_size;
    c->reset_after = size > 1 ? load_random(&c->run->rng) % size : 0;
    break;
  }
  case KIND_SLOW_HEADERS:
  case KIND_HALF_OPEN:
    prepare_slow_head(c);
    break;
  case KIND_COUNT:
    return -1;
  }
  return c->head_len > 0 ? 0 : -1;
}

/* ---- writing ---------------------------------------------------------------- */

static void peer_closed(load_client *c, ssize_t why);

static void on_written(uv_write_t *req, int status) {
  load_client *c = req->data;
  c->writing = 0;
  if (c->phase == PHASE_CLOSING || !c->tcp_open)
    return;
  if (status == 0 || status == UV_ECANCELED)
    return;
  if (c->kind == KIND_SLOW_HEADERS || c->kind == KIND_HALF_OPEN) {
    peer_closed(c, status); /* the server let go while we were sending */
    return;
  }
  fail_request(c, status == UV_ECONNRESET || status == UV_EPIPE ? ERR_RESET : ERR_LOCAL);
}

static int write_bytes(load_client *c, const char *data, size_t len, const char *body,
                       size_t body_len) {
  uv_buf_t bufs[2] = {uv_buf_init((char *)data, (unsigned)len),
                      uv_buf_init((char *)body, (unsigned)body_len)};
  c->write_req.data = c;
  int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs, body_len ? 2 : 1, on_written);
  if (rc == 0) {
    c->writing = 1;
    stats(c)->bytes_out += len + body_len;
  }
  return rc;
}

static void send_slow_byte(uv_timer_t *t);

static void schedule_slow_byte(load_client *c) {
  uint64_t ms = (uint64_t)(c->run->opt->byte_interval_s * 1000.0);
  uv_timer_start(&c->pace, send_slow_byte, ms, 0);
}

static void send_slow_byte(uv_timer_t *t) {
  load_client *c = t->data;
  if (c->phase != PHASE_SENDING)
    return;
  if (c->writing) {
    schedule_slow_byte(c); /* the last byte is still queued */
    return;
  }
  if (write_bytes(c, c->head + c->head_sent, 1, NULL, 0) != 0) {
    fail_request(c, ERR_RESET);
    return;
  }
  c->head_sent++;
  if (c->head_sent < c->head_len)
    schedule_slow_byte(c);
  else
    c->phase = PHASE_WAITING;
}

/* ---- reading ----------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  load_client *c = h->data;
  size_t size = sizeof c->read_buf;
  (void)suggested;
  if (c->kind == KIND_SLOW_READ && c->read_allowance < size)
    size = c->read_allowance ? (size_t)c->read_allowance : 1;
  *buf = uv_buf_init(c->read_buf, (unsigned)size);
}

static void slow_read_resume(uv_timer_t *t);

/* Slow readers take what a token bucket of --read-rate bytes/s allows,
 * refilled ten times a second; the rest waits in the kernel's buffers. */
static void slow_read_account(load_client *c, size_t n) {
  c->read_allowance = c->read_allowance > n ? c->read_allowance - n : 0;
  if (c->read_allowance == 0 && c->resp.state != RESP_DONE) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_start(&c->pace, slow_read_resume, 100, 0);
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_timeout(uv_timer_t *t) {
  load_client *c = t->data;
  int hostile_wait = c->kind == KIND_SLOW_HEADERS || c->kind == KIND_HALF_OPEN;
  fail_request(c, hostile_wait ? ERR_NOT_CLOSED : ERR_TIMEOUT);
}

static void arm_timeout(load_client *c) {
  uint64_t ms = (uint64_t)(c->run->opt->timeout_s * 1000.0);
  uv_timer_start(&c->timeout, on_timeout, ms ? ms : 1, 0);
}

static void slow_read_resume(uv_timer_t *t) {
  load_client *c = t->data;
  if (c->phase != PHASE_WAITING)
    return;
  c->read_allowance = c->run->opt->read_rate / 10 ? c->run->opt->read_rate / 10 : 1;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* What a complete response means for this kind of request. */
static void response_complete(load_client *c) {
  response *r = &c->resp;
  int status = r->status;
  uv_timer_stop(&c->timeout);
  stats(c)->status[status]++;
  load_error err = ERR_COUNT;
  switch (c->kind) {
  case KIND_NARINFO:
    if (status != 200 && status != 404)
      err = ERR_STATUS;
    break;
  case KIND_CLOSURE:
  case KIND_SLOW_READ:
  case KIND_RESET:
    if (status != 200) {
      err = ERR_STATUS;
    } else if (c->is_nar) {
      uint64_t want = c->run->catalog.paths[c->path].file_size;
      if (want != 0 && r->body_bytes != want)
        err = ERR_CONTENT;
    } else {
      if ((c->narinfo == NULL && narcache_narinfo_new(&c->narinfo, NULL) != 0) ||
          narcache_narinfo_parse(c->narinfo, r->body, r->body_len) != 0)
        err = ERR_CONTENT;
    }
    break;
  case KIND_UPLOAD:
    if (status < 200 || status > 299)
      err = ERR_STATUS;
    break;
  case KIND_SLOW_HEADERS:
  case KIND_HALF_OPEN:
    break; /* answered (408, 400...): the server dealt with it */
  case KIND_COUNT:
    break;
  }
  if (err != ERR_COUNT) {
    fail_request(c, err);
    return;
  }
  record_ok(c);
  if (c->kind == KIND_UPLOAD)
    c->upload_step ^= 1;
  c->reused = 1;
  c->phase = PHASE_IDLE;
  /* A response that came before the whole request was written (an early
   * refusal of an upload) leaves the connection out of step: a new one. */
  if (!r->keep_alive || load_kind_is_hostile(c->kind) || c->writing)
    close_connection(c);
  else
    next_request(c);
}

/* The server closed the connection (or reset it). */
static void peer_closed(load_client *c, ssize_t why) {
  if (c->kind == KIND_SLOW_HEADERS || c->kind == KIND_HALF_OPEN) {
    record_ok(c); /* what the scenario wants: the server let go */
    uv_timer_stop(&c->timeout);
    close_connection(c);
    return;
  }
  response_eof(&c->resp);
  if (c->resp.state == RESP_DONE) {
    response_complete(c);
    return;
  }
  /* A keep-alive connection the server closed while idle: retry once on a
   * new connection, as curl does, without counting an error. */
  if (c->reused && !c->retried && c->resp.state == RESP_HEAD && c->resp.head_len == 0) {
    c->retried = 1;
    c->retry_pending = 1;
    stats(c)->retries++;
    uv_timer_stop(&c->timeout);
    c->phase = PHASE_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
    return;
  }
  fail_request(c, why == UV_EOF ? ERR_EOF : ERR_RESET);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  load_client *c = s->data;
  if (c->phase == PHASE_CLOSING)
    return;
  if (nread < 0) {
    peer_closed(c, nread);
    return;
  }
  if (nread == 0)
    return;
  stats(c)->bytes_in += (uint64_t)nread;
  if (c->kind == KIND_SLOW_READ) /* a slow read times out when idle, not when long */
    arm_timeout(c);
  if (c->phase != PHASE_WAITING && c->phase != PHASE_SENDING) {
    fail_request(c, ERR_PROTOCOL); /* bytes nobody asked for */
    return;
  }
  size_t used = response_feed(&c->resp, buf->base, (size_t)nread);
  if (c->kind == KIND_SLOW_READ)
    slow_read_account(c, (size_t)nread);
  if (c->resp.state == RESP_ERROR) {
    fail_request(c, ERR_PROTOCOL);
  } else if (c->kind == KIND_RESET && c->resp.state != RESP_HEAD && c->resp.status == 200 &&
             c->resp.body_bytes >= c->reset_after && c->resp.state != RESP_DONE) {
    record_ok(c); /* the reset is the request's end */
    uv_timer_stop(&c->timeout);
    c->phase = PHASE_CLOSING;
    if (uv_tcp_close_reset(&c->tcp, handle_closed) != 0)
      uv_close((uv_handle_t *)&c->tcp, handle_closed);
  } else if (c->resp.state == RESP_DONE) {
    if (used < (size_t)nread) {
      fail_request(c, ERR_PROTOCOL); /* more than one response */
      return;
    }
    response_complete(c);
  }
}

/* ---- connecting and sending ----------------------------------------------------- */


static void send_request(load_client *c) {
  c->phase = PHASE_SENDING;
  if (c->kind == KIND_SLOW_HEADERS) {
    send_slow_byte(&c->pace);
    return;
  }
  if (write_bytes(c, c->head, c->head_len, c->body, c->body_len) != 0) {
    fail_request(c, ERR_RESET);
    return;
  }
  c->phase = PHASE_WAITING;
}

static void start_reading(load_client *c) {
  if (c->kind == KIND_SLOW_READ) {
    int small = 4096; /* so that the server, not our kernel, holds the NAR */
    uv_recv_buffer_size((uv_handle_t *)&c->tcp, &small);
    c->read_allowance = c->run->opt->read_rate / 10 ? c->run->opt->read_rate / 10 : 1;
  }
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void retry_later(uv_timer_t *t) {
  load_client *c = t->data;
  next_request(c);
}

static void on_connect(uv_connect_t *req, int status) {
  load_client *c = req->data;
  if (status == UV_ECANCELED || c->phase == PHASE_CLOSING)
    return;
  if (status != 0) {
    record_error(c, ERR_CONNECT);
    c->backoff = 1; /* a refused connect returns at once: no busy loop */
    uv_timer_stop(&c->timeout);
    c->phase = PHASE_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
    return;
  }
  c->connected = 1;
  uv_tcp_nodelay(&c->tcp, 1);
  start_reading(c);
  send_request(c);
}

static int open_connection(load_client *c) {
  if (uv_tcp_init(c->run->loop, &c->tcp) != 0)
    return -1;
  c->tcp.data = c;
  c->tcp_open = 1;
  c->handles++;
  open_connections++;
  c->connect_req.data = c;
  int rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&c->run->addr,
                          on_connect);
  if (rc != 0) {
    c->phase = PHASE_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
    return -1;
  }
  c->phase = PHASE_CONNECTING;
  return 0;
}

static int run_over(load_run *run) {
  return run->stopping ||
         (run->opt->max_requests && run->completed >= run->opt->max_requests);
}

static void next_request(load_client *c) {
  if (c->stopped || c->phase == PHASE_CLOSING)
    return;
  if (run_over(c->run)) {
    load_client_stop(c);
    return;
  }
  if (c->tcp_open && !c->connected)
    return; /* still connecting */
  if (c->retry_pending) {
    c->retry_pending = 0;
  } else {
    c->retried = 0;
    if (prepare(c) != 0) {
      load_client_stop(c);
      return;
    }
    c->request_start_ns = load_now_ns();
    stats(c)->started++;
  }
  arm_timeout(c);
  if (c->connected) {
    send_request(c);
    return;
  }
  if (open_connection(c) != 0) {
    record_error(c, ERR_LOCAL);
    uv_timer_stop(&c->timeout);
    uv_timer_start(&c->pace, retry_later, CONNECT_BACKOFF_MS, 0);
  }
}

/* ---- lifecycle --------------------------------------------------------------------- */

int load_client_start(load_run *run, load_kind kind, size_t index, load_client **out) {
  load_client *c = calloc(1, sizeof *c);
  if (c == NULL)
    return -1;
  if (load_kind_needs_paths(kind) && run->n_nar_paths == 0) {
    free(c);
    return -1;
  }
  c->run = run;
  c->kind = kind;
  c->index = index;
  uv_timer_init(run->loop, &c->timeout);
  uv_timer_init(run->loop, &c->pace);
  c->timeout.data = c;
  c->pace.data = c;
  c->handles = 2;
  stats(c)->clients++;
  *out = c;
  next_request(c);
  return 0;
}

void load_client_stop(load_client *c) {
  if (c->stopped)
    return;
  c->stopped = 1;
  uv_timer_stop(&c->timeout);
  uv_close((uv_handle_t *)&c->timeout, handle_closed);
  uv_close((uv_handle_t *)&c->pace, handle_closed);
  if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
}
