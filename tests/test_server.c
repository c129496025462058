/* The HTTP server (server.h) over real sockets on 127.0.0.1: a server on
 * its own loop in a thread, serving the Nix-written golden cache through
 * the dir backend or test backends that fail on purpose; raw requests
 * from a table, pipelining, keep-alive, HEAD, Range, refusals, timeouts,
 * store errors, a body failing in the middle, health and stopping, and
 * running out of file descriptors (in a child process). */
#define _GNU_SOURCE
#include <narcache.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "test_support.h"

#define REF_HASH "dyfyrpszi87hixnk6as80dh2j3vy31yh"
#define REF_NAR "05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir.nar"

/* ------------------------------------------------------------------ */
/* A server in a thread                                                */
/* ------------------------------------------------------------------ */

typedef struct running {
  narcache_store *store;
  narcache_server *server;
  pthread_t thread;
  int port;
  atomic_int healthy_calls;
  atomic_int access_calls;
  atomic_int last_status;
  atomic_int stopped;
} running;

static void on_healthy(void *ud, narcache_server *s) {
  (void)s;
  atomic_fetch_add(&((running *)ud)->healthy_calls, 1);
}

static void on_access(void *ud, const narcache_access_record *r) {
  running *run = ud;
  atomic_fetch_add(&run->access_calls, 1);
  atomic_store(&run->last_status, r->status);
}

static void on_stopped(void *ud, narcache_server *s) {
  (void)s;
  atomic_store(&((running *)ud)->stopped, 1);
}

/* TEST_SERVER_LOG=1 shows the server's log records. */
static void on_log(void *ud, const narcache_log_record *r) {
  (void)ud;
  if (getenv("TEST_SERVER_LOG") == NULL)
    return;
  fprintf(stderr, "server log: %s: %s", r->event, r->message);
  for (size_t i = 0; i < r->n_fields; i++)
    fprintf(stderr, " %s=%s", r->fields[i].key, r->fields[i].value);
  fputc('\n', stderr);
}

static void *serve(void *p) {
  running *run = p;
  narcache_server_run(run->server);
  return NULL;
}

typedef struct option_value {
  int option;
  int64_t value;
} option_value;

/* When set, start() installs it as the `authorize` hook. */
static int (*test_authorize)(void *ud, const narcache_auth_request *r);

/* Start a server on a free port with `opts` (terminated by option 0). */
static void start(running *run, narcache_store *store, const option_value *opts) {
  memset(run, 0, sizeof *run);
  run->store = store;
  assert_int_equal(narcache_server_new(&run->server, NULL, store), 0);
  narcache_server_hooks h = {.version = NARCACHE_SERVER_HOOKS_VERSION,
                             .healthy = on_healthy,
                             .access = on_access,
                             .stopped = on_stopped,
                             .log = on_log,
                             .authorize = test_authorize};
  assert_int_equal(narcache_server_set_hooks(run->server, &h, run), 0);
  assert_int_equal(narcache_server_set_option(run->server, NARCACHE_OPT_PROBE_INTERVAL_MS, 50), 0);
  for (; opts != NULL && opts->option != 0; opts++)
    assert_int_equal(narcache_server_set_option(run->server, opts->option, opts->value), 0);
  assert_int_equal(narcache_server_listen(run->server, "127.0.0.1:0", 0), 0);
  run->port = narcache_server_port(run->server, 0);
  assert_true(run->port > 0);
  assert_int_equal(narcache_server_start(run->server), 0);
  assert_int_equal(pthread_create(&run->thread, NULL, serve, run), 0);
}

static void stop(running *run) {
  assert_int_equal(narcache_server_stop(run->server), 0);
  pthread_join(run->thread, NULL);
  assert_int_equal(atomic_load(&run->stopped), 1);
  narcache_server_free(run->server);
  narcache_store_free(run->store);
}

static narcache_store *golden_store(void) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/narinfo/caches/none", test_data_dir());
  narcache_store *s = NULL;
  assert_int_equal(narcache_store_dir_new(&s, dir, 0), 0);
  return s;
}

/* ------------------------------------------------------------------ */
/* A client                                                            */
/* ------------------------------------------------------------------ */

static int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static void send_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    assert_true(n > 0);
    data += n;
    len -= (size_t)n;
  }
}

/* Read until the server closes (or 5 s pass). */
static char *read_to_close(int fd, size_t *len) {
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap + 1);
  for (;;) {
    if (n == cap)
      buf = realloc(buf, (cap *= 2) + 1);
    ssize_t got = recv(fd, buf + n, cap - n, 0);
    if (got <= 0)
      break;
    n += (size_t)got;
  }
  buf[n] = '\0';
  *len = n;
  return buf;
}

/* One parsed response. */
typedef struct response {
  int status;
  char head[4096];
  const char *body;
  size_t body_len;
  size_t total; /* bytes of head + body */
} response;

static const char *field(const response *r, const char *name) {
  static char value[512];
  size_t n = strlen(name);
  for (const char *p = strstr(r->head, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n")) {
    if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
      const char *v = p + 2 + n + 1;
      while (*v == ' ')
        v++;
      const char *end = strstr(v, "\r\n");
      snprintf(value, sizeof value, "%.*s", (int)(end - v), v);
      return value;
    }
  }
  return NULL;
}

/* Parse the response at `data` (one of a sequence). `head_only`: a HEAD
 * response, whose Content-Length announces a body that is not sent. */
static int parse_response(response *r, const char *data, size_t len, int head_only) {
  memset(r, 0, sizeof *r);
  const char *end = memmem(data, len, "\r\n\r\n", 4);
  if (end == NULL || sscanf(data, "HTTP/1.1 %d ", &r->status) != 1)
    return -1;
  size_t head_len = (size_t)(end - data) + 4;
  snprintf(r->head, sizeof r->head, "%.*s", (int)head_len, data);
  const char *cl = field(r, "Content-Length");
  size_t body = cl != NULL && !head_only && r->status != 304 ? (size_t)strtoull(cl, NULL, 10) : 0;
  r->body = data + head_len;
  r->body_len = body;
  r->total = head_len + body;
  return head_len + body <= len ? 0 : -1;
}

/* Send `raw`, read to close, parse exactly `count` responses. */
static char *exchange(int port, const char *raw, response *rs, int count, const int *head_only) {
  int fd = connect_to(port);
  send_all(fd, raw, strlen(raw));
  size_t len = 0;
  char *buf = read_to_close(fd, &len);
  close(fd);
  size_t off = 0;
  for (int i = 0; i < count; i++) {
    int rc = parse_response(&rs[i], buf + off, len - off, head_only != NULL && head_only[i]);
    if (rc != 0)
      fail_msg("response %d of %d missing or short in:\n%s", i + 1, count, buf);
    off += rs[i].total;
  }
  assert_int_equal(off, len); /* nothing after the last response */
  return buf;
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"
#define GET_CLOSE(path) "GET " path " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"

/* ------------------------------------------------------------------ */
/* Tests                                                               */
/* ------------------------------------------------------------------ */

static void test_objects_keepalive_pipelining(void **state) {
  (void)state;
  running run;
  start(&run, golden_store(), NULL);
  size_t nar_len = 0, ni_len = 0;
  char *nar = test_data_slurp("narinfo/caches/none/nar/" REF_NAR, &nar_len);
  char *ni = test_data_slurp("narinfo/caches/none/" REF_HASH ".narinfo", &ni_len);
  response rs[5];
  const int head_only[5] = {0, 1, 0, 0, 0};
  /* five requests in one write: answered in order on one connection */
  char *buf = exchange(run.port,
                       GET("/nix-cache-info") "HEAD /" REF_HASH ".narinfo HTTP/1.1\r\nHost: t\r\n\r\n"
                       GET("/" REF_HASH ".narinfo") GET("/nar/" REF_NAR)
                       GET_CLOSE("/00000000000000000000000000000000.narinfo"),
                       rs, 5, head_only);
  assert_int_equal(rs[0].status, 200);
  assert_string_equal(field(&rs[0], "Content-Type"), "text/x-nix-cache-info");
  assert_memory_equal(rs[0].body, "StoreDir: /nix/store\n", 21);
  assert_int_equal(rs[1].status, 200);
  assert_int_equal(strtoull(field(&rs[1], "Content-Length"), NULL, 10), ni_len);
  assert_int_equal(rs[2].status, 200);
  assert_int_equal(rs[2].body_len, ni_len);
  assert_memory_equal(rs[2].body, ni, ni_len);
  assert_int_equal(rs[3].status, 200);
  assert_int_equal(rs[3].body_len, nar_len);
  assert_memory_equal(rs[3].body, nar, nar_len);
  assert_string_equal(field(&rs[3], "Accept-Ranges"), "bytes");
  assert_non_null(field(&rs[3], "ETag"));
  assert_int_equal(rs[4].status, 404); /* genuine absence */
  assert_non_null(strstr(rs[4].head, "Connection: close"));
  free(buf);
  assert_int_equal(atomic_load(&run.access_calls), 5);

  /* keep-alive: a second request on the same connection later */
  int fd = connect_to(run.port);
  for (int i = 0; i < 2; i++) {
    const char *req = GET("/" REF_HASH ".narinfo");
    send_all(fd, req, strlen(req));
    char got[4096];
    size_t n = 0;
    response r;
    while (parse_response(&r, got, n, 0) != 0) {
      ssize_t k = recv(fd, got + n, sizeof got - n, 0);
      assert_true(k > 0);
      n += (size_t)k;
    }
    assert_int_equal(r.status, 200);
    assert_int_equal(n, r.total);
  }
  close(fd);
  free(nar);
  free(ni);
  stop(&run);
}

/* More pipelined requests than the read buffer holds (16 KiB of head
 * limit + 4 KiB) in one write: all are answered, in order, at once (the
 * server once stopped reading with a full buffer and waited for the
 * header timeout). */
static void test_pipelined_beyond_buffer(void **state) {
  (void)state;
  running run;
  start(&run, golden_store(), NULL);
  enum { N = 400 };
  size_t cap = (size_t)N * 128, len = 0;
  char *raw = malloc(cap);
  for (int i = 0; i < N; i++)
    len += (size_t)snprintf(raw + len, cap - len, "%s",
                            i < N - 1 ? GET("/" REF_HASH ".narinfo") : GET_CLOSE("/" REF_HASH ".narinfo"));
  assert_true(len > 24 * 1024);
  response *rs = calloc(N, sizeof *rs);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int fd = connect_to(run.port);
  send_all(fd, raw, len);
  size_t got = 0;
  char *buf = read_to_close(fd, &got);
  close(fd);
  size_t off = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(parse_response(&rs[i], buf + off, got - off, 0), 0);
    assert_int_equal(rs[i].status, 200);
    off += rs[i].total;
  }
  assert_int_equal(off, got);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  assert_true(t1.tv_sec - t0.tv_sec < 3); /* far below the 10 s header timeout */
  free(buf);
  free(rs);
  free(raw);
  stop(&run);
}

static void test_ranges(void **state) {
  (void)state;
  running run;
  start(&run, golden_store(), NULL);
  size_t nar_len = 0;
  char *nar = test_data_slurp("narinfo/caches/none/nar/" REF_NAR, &nar_len);
  char req[600];
  response r;
  struct {
    const char *range;
    int status;
    size_t first, len;
  } cases[] = {
      {"bytes=10-19", 206, 10, 10},
      {"bytes=200-", 206, 200, 16},
      {"bytes=-5", 206, 211, 5},
      {"bytes=0-100000", 206, 0, 216},
      {"bytes=216-", 416, 0, 0},
      {"bytes=5-1", 200, 0, 216},     /* invalid: ignored */
      {"bytes=0-1,5-6", 200, 0, 216}, /* several: the whole object */
      {"items=0-1", 200, 0, 216},
  };
  assert_int_equal(nar_len, 216);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    snprintf(req, sizeof req,
             "GET /nar/" REF_NAR " HTTP/1.1\r\nHost: t\r\nRange: %s\r\nConnection: close\r\n\r\n",
             cases[i].range);
    char *buf = exchange(run.port, req, &r, 1, NULL);
    assert_int_equal(r.status, cases[i].status);
    if (r.status == 416) {
      assert_string_equal(field(&r, "Content-Range"), "bytes */216");
    } else {
      assert_int_equal(r.body_len, cases[i].len);
      assert_memory_equal(r.body, nar + cases[i].first, cases[i].len);
      if (r.status == 206) {
        char want[80];
        snprintf(want, sizeof want, "bytes %zu-%zu/216", cases[i].first,
                 cases[i].first + cases[i].len - 1);
        assert_string_equal(field(&r, "Content-Range"), want);
      }
    }
    free(buf);
  }
  /* If-None-Match with the ETag: 304, no body */
  char *buf = exchange(run.port,
                       "GET /nar/" REF_NAR " HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"" REF_NAR
                       "\"\r\nConnection: close\r\n\r\n",
                       &r, 1, NULL);
  assert_int_equal(r.status, 304);
  free(buf);
  free(nar);
  stop(&run);
}

/* Requests refused as such: the status, and the connection closes. */
static void test_refusals(void **state) {
  (void)state;
  running run;
  option_value opts[] = {{NARCACHE_OPT_MAX_TARGET_BYTES, 100}, {NARCACHE_OPT_MAX_HEADERS, 8}, {0, 0}};
  start(&run, golden_store(), opts);
  char long_target[400] = "GET /";
  memset(long_target + 5, 'a', 200);
  strcpy(long_target + 205, " HTTP/1.1\r\nHost: t\r\n\r\n");
  char many_headers[1000] = "GET / HTTP/1.1\r\nHost: t\r\n";
  for (int i = 0; i < 10; i++)
    sprintf(many_headers + strlen(many_headers), "X-%d: y\r\n", i);
  strcat(many_headers, "\r\n");
  struct {
    const char *raw;
    int status;
  } cases[] = {
      {"GET / HTTP/1.1\nHost: t\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400},
      {"PUT /nix-cache-info HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", 405},
      {"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n", 501},
      {"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505},
      {"GET / HTTP/1.1\r\n\r\n", 400}, /* no Host */
      {"GET http://t/nix-cache-info HTTP/1.1\r\nHost: t\r\n\r\n", 400},
      {long_target, 414},
      {many_headers, 431},
      {"GET /nar/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 404},
      {"GET /nar/../nix-cache-info HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 404},
      {"GET /" REF_HASH ".narinfo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab", 400},
  };
  /* A refused request right after a HEAD on the same connection gets its
   * body: the HEAD's "no body" must not carry over (found by fuzzing). */
  response two[2];
  const int head_only[2] = {1, 0};
  char *piped = exchange(run.port,
                         "HEAD /nix-cache-info HTTP/1.1\r\nHost: t\r\n\r\n"
                         "HEAD\xff /x HTTP/1.1\r\nHost: t\r\n\r\n",
                         two, 2, head_only);
  assert_int_equal(two[0].status, 200);
  assert_int_equal(two[1].status, 400);
  assert_int_equal(two[1].body_len, (size_t)atoi(field(&two[1], "Content-Length")));
  assert_true(two[1].body_len > 0);
  free(piped);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    response r;
    char *buf = exchange(run.port, cases[i].raw, &r, 1, NULL);
    if (r.status != cases[i].status)
      fail_msg("case %zu: status %d, want %d:\n%s", i, r.status, cases[i].status, buf);
    if (r.status == 405)
      assert_string_equal(field(&r, "Allow"), "GET, HEAD");
    free(buf);
  }
  stop(&run);
}

/* A connection that sends half a head is closed by the header timeout;
 * an idle keep-alive one by the idle timeout. */
static void test_timeouts(void **state) {
  (void)state;
  running run;
  option_value opts[] = {{NARCACHE_OPT_HEADER_TIMEOUT_MS, 200}, {NARCACHE_OPT_IDLE_TIMEOUT_MS, 300}, {0, 0}};
  start(&run, golden_store(), opts);
  int fd = connect_to(run.port);
  send_all(fd, "GET /nix-cache-info HTTP/1.1\r\nHo", 32);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  char c;
  assert_int_equal(recv(fd, &c, 1, 0), 0); /* closed, nothing sent */
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  assert_true(waited >= 0.15 && waited < 3.0);
  close(fd);

  fd = connect_to(run.port);
  const char *req = GET("/nix-cache-info");
  send_all(fd, req, strlen(req));
  size_t len = 0;
  char *buf = read_to_close(fd, &len); /* the response, then the idle close */
  response r;
  assert_int_equal(parse_response(&r, buf, len, 0), 0);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.total, len);
  free(buf);
  close(fd);
  stop(&run);
}

/* ------------------------------------------------------------------ */
/* Backends that fail                                                  */
/* ------------------------------------------------------------------ */

static atomic_int probe_rc;

static int failing_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out);

typedef struct broken_body {
  uint64_t fail_at;
} broken_body;

static int broken_read(void *ctx, uint64_t offset, void *buf, size_t len, size_t *got) {
  broken_body *b = ctx;
  if (offset >= b->fail_at)
    return NARCACHE_EIO;
  size_t n = len < b->fail_at - offset ? len : (size_t)(b->fail_at - offset);
  memset(buf, 'x', n);
  *got = n;
  return 0;
}

static void broken_close(void *ctx) { free(ctx); }

/* narinfo names pick the outcome: "unavail..." (503), "broken..." (500);
 * NAR "big.nar" announces 8 MiB and fails after 1 MiB. */
static int failing_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  (void)ctx;
  if (kind == NARCACHE_OBJECT_NARINFO && len == 32 && name[0] == 'v')
    return NARCACHE_EUNAVAIL;
  if (kind == NARCACHE_OBJECT_NARINFO && len == 32 && name[0] == 'b')
    return NARCACHE_EIO;
  if (kind == NARCACHE_OBJECT_NAR && len == 8 && memcmp(name, "slow.nar", 8) == 0) {
    broken_body *b = malloc(sizeof *b);
    b->fail_at = 32 << 20; /* never fails: 32 MiB announced */
    out->size = 32 << 20;
    out->fd = -1;
    out->read = broken_read;
    out->close = broken_close;
    out->ctx = b;
    return 0;
  }
  if (kind == NARCACHE_OBJECT_NAR && len == 7 && memcmp(name, "big.nar", 7) == 0) {
    broken_body *b = malloc(sizeof *b);
    b->fail_at = 1 << 20;
    out->size = 8 << 20;
    out->fd = -1;
    out->read = broken_read;
    out->close = broken_close;
    out->ctx = b;
    return 0;
  }
  return NARCACHE_ENOTFOUND;
}

static int failing_probe(void *ctx) {
  (void)ctx;
  return atomic_load(&probe_rc);
}

static narcache_store *failing_store(void) {
  narcache_store_methods m = {.version = NARCACHE_STORE_METHODS_VERSION,
                              .open = failing_open,
                              .probe = failing_probe};
  narcache_store *s = NULL;
  assert_int_equal(narcache_store_new(&s, &m, NULL), 0);
  return s;
}

static void test_store_errors(void **state) {
  (void)state;
  atomic_store(&probe_rc, 0);
  running run;
  start(&run, failing_store(), NULL);
  response r;
  char *buf = exchange(run.port, GET_CLOSE("/vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv.narinfo"), &r, 1, NULL);
  assert_int_equal(r.status, 503); /* transient: never 404 */
  assert_non_null(field(&r, "Retry-After"));
  free(buf);
  buf = exchange(run.port, GET_CLOSE("/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.narinfo"), &r, 1, NULL);
  assert_int_equal(r.status, 500);
  free(buf);
  buf = exchange(run.port, GET_CLOSE("/00000000000000000000000000000000.narinfo"), &r, 1, NULL);
  assert_int_equal(r.status, 404);
  free(buf);

  /* a body that fails after 1 MiB: the connection is cut, never a
   * complete-looking short 200 */
  int fd = connect_to(run.port);
  const char *req = GET_CLOSE("/nar/big.nar");
  send_all(fd, req, strlen(req));
  size_t len = 0;
  buf = read_to_close(fd, &len);
  close(fd);
  assert_int_equal(parse_response(&r, buf, len, 0), -1); /* short */
  assert_int_equal(r.status, 200);
  assert_string_equal(field(&r, "Content-Length"), "8388608");
  assert_true(len < (8u << 20));
  free(buf);
  stop(&run);
}

/* A backend wedged as a whole: while `wedged` is set, every open blocks. */
static atomic_int wedged;

static int wedged_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  while (atomic_load(&wedged))
    usleep(1000);
  return failing_open(ctx, kind, name, len, out);
}

static double ms_since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Requests waiting on a wedged store get 503 + Retry-After once
 * NARCACHE_OPT_STORE_TIMEOUT_MS has passed, whether their store call is
 * running (blocked) or still queued behind the blocked ones; their late
 * results are dropped, and the server serves normally once it recovers. */
static void test_store_timeout(void **state) {
  (void)state;
  atomic_store(&probe_rc, 0);
  narcache_store_methods m = {.version = NARCACHE_STORE_METHODS_VERSION,
                              .open = wedged_open,
                              .probe = failing_probe};
  narcache_store *st = NULL;
  assert_int_equal(narcache_store_new(&st, &m, NULL), 0);
  option_value opts[] = {
      {NARCACHE_OPT_STORE_TIMEOUT_MS, 300}, {NARCACHE_OPT_MEMORY_CACHE_MS, 0}, {0, 0}};
  running run;
  start(&run, st, opts);
  atomic_store(&wedged, 1);
  enum { N = 10 }; /* more than the pool's threads: some tasks only queue */
  int fds[N];
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < N; i++) {
    fds[i] = connect_to(run.port);
    const char *req = GET_CLOSE("/00000000000000000000000000000000.narinfo");
    send_all(fds[i], req, strlen(req));
  }
  for (int i = 0; i < N; i++) {
    size_t len = 0;
    char *buf = read_to_close(fds[i], &len);
    close(fds[i]);
    response r;
    assert_int_equal(parse_response(&r, buf, len, 0), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(field(&r, "Retry-After"));
    assert_non_null(strstr(r.body, "did not answer in time"));
    assert_int_equal(r.total, len);
    free(buf);
  }
  double took = ms_since(&t0);
  assert_true(took >= 290);
  assert_true(took < 5000); /* not waiting for the store */
  response r;
  char *buf = exchange(run.port,
                       "HEAD /00000000000000000000000000000000.narinfo HTTP/1.1\r\nHost: t\r\n\r\n",
                       &r, 1, (const int[]){1});
  assert_int_equal(r.status, 503);
  assert_string_equal(field(&r, "Connection"), "close");
  free(buf);
  atomic_store(&wedged, 0);
  buf = exchange(run.port, GET_CLOSE("/00000000000000000000000000000000.narinfo"), &r, 1, NULL);
  assert_int_equal(r.status, 404);
  free(buf);
  /* every request is accounted for, the blocked ones once their call
   * returned (which may be just after the 404) */
  int counted = 0;
  for (int i = 0; i < 200 && !counted; i++) {
    buf = exchange(run.port, GET_CLOSE("/metrics"), &r, 1, NULL);
    counted = strstr(r.body, "narcache_http_requests_total{route=\"narinfo\",status=\"503\"} 11") != NULL;
    free(buf);
    if (!counted)
      usleep(10000);
  }
  assert_true(counted);
  stop(&run);
}

static void test_health(void **state) {
  (void)state;
  atomic_store(&probe_rc, 0);
  running run;
  start(&run, failing_store(), NULL);
  /* the probe runs every 50 ms: healthy within a second */
  for (int i = 0; i < 100 && atomic_load(&run.healthy_calls) == 0; i++)
    usleep(10000);
  assert_true(atomic_load(&run.healthy_calls) > 0);
  response r;
  char *buf = exchange(run.port, GET_CLOSE("/healthz"), &r, 1, NULL);
  assert_int_equal(r.status, 200);
  free(buf);
  /* the store's probe fails: /healthz says so, the hook stops */
  atomic_store(&probe_rc, NARCACHE_EUNAVAIL);
  usleep(200000);
  int calls = atomic_load(&run.healthy_calls);
  usleep(300000);
  assert_int_equal(atomic_load(&run.healthy_calls), calls);
  buf = exchange(run.port, GET_CLOSE("/healthz"), &r, 1, NULL);
  assert_int_equal(r.status, 503);
  assert_non_null(strstr(r.body, "store probe failed"));
  free(buf);
  /* recovers */
  atomic_store(&probe_rc, 0);
  usleep(300000);
  assert_true(atomic_load(&run.healthy_calls) > calls);
  buf = exchange(run.port, GET_CLOSE("/metrics"), &r, 1, NULL);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "narcache_http_requests_total{route=\"healthz\",status=\"503\"} 1"));
  assert_non_null(strstr(r.body, "process_open_fds"));
  free(buf);
  /* not ready for the embedder's reason */
  stop(&run);
}

static int status_on(int fd);

/* nix-cache-info as the store has it, or with the server's Priority and
 * WantMassQuery put over it. */
static void test_cache_info_overrides(void **state) {
  (void)state;
  for (int override = 0; override < 2; override++) {
    running run;
    option_value opts[] = {{NARCACHE_OPT_PRIORITY, 42}, {NARCACHE_OPT_WANT_MASS_QUERY, 1}, {0, 0}};
    start(&run, golden_store(), override ? opts : NULL);
    response r;
    char *buf = exchange(run.port, GET_CLOSE("/nix-cache-info"), &r, 1, NULL);
    assert_int_equal(r.status, 200);
    char body[256];
    snprintf(body, sizeof body, "%.*s", (int)r.body_len, r.body);
    if (override) {
      assert_non_null(strstr(body, "StoreDir: /nix/store\n"));
      assert_non_null(strstr(body, "Priority: 42\n"));
      assert_non_null(strstr(body, "WantMassQuery: 1\n"));
    } else {
      assert_string_equal(body, "StoreDir: /nix/store\n"); /* the file, as stored */
    }
    free(buf);
    stop(&run);
  }
}

/* narinfo answers, present and absent, are kept in memory for
 * NARCACHE_OPT_MEMORY_CACHE_MS and then asked from the store again; 0
 * turns that off. */
static int narinfo_status(int port) {
  response r;
  char *buf = exchange(port, GET_CLOSE("/" REF_HASH ".narinfo"), &r, 1, NULL);
  free(buf);
  return r.status;
}

static void test_memory_cache(void **state) {
  (void)state;
  char dir[] = "/tmp/narcache-server-cache-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char file[600];
  snprintf(file, sizeof file, "%s/%s.narinfo", dir, REF_HASH);
  size_t ni_len = 0;
  char *ni = test_data_slurp("narinfo/caches/none/" REF_HASH ".narinfo", &ni_len);
  for (int ttl_ms = 400; ttl_ms >= 0; ttl_ms -= 400) {
    narcache_store *st = NULL;
    assert_int_equal(narcache_store_dir_new(&st, dir, 0), 0);
    running run;
    option_value opts[] = {{NARCACHE_OPT_MEMORY_CACHE_MS, ttl_ms}, {0, 0}};
    start(&run, st, opts);
    assert_int_equal(narinfo_status(run.port), 404); /* absent ... */
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(ni, 1, ni_len, f), ni_len);
    fclose(f);
    /* ... and still absent from the cache, until it expires */
    assert_int_equal(narinfo_status(run.port), ttl_ms > 0 ? 404 : 200);
    usleep((useconds_t)ttl_ms * 1000 + 100000);
    assert_int_equal(narinfo_status(run.port), 200);
    unlink(file);
    assert_int_equal(narinfo_status(run.port), ttl_ms > 0 ? 200 : 404);
    usleep((useconds_t)ttl_ms * 1000 + 100000);
    assert_int_equal(narinfo_status(run.port), 404);
    response r;
    char *buf = exchange(run.port, GET_CLOSE("/metrics"), &r, 1, NULL);
    assert_non_null(strstr(r.body, ttl_ms > 0 ? "narcache_memory_cache_hits_total 2\n"
                                              : "narcache_memory_cache_hits_total 0\n"));
    free(buf);
    stop(&run);
  }
  free(ni);
  rmdir(dir);
}

/* ------------------------------------------------------------------ */
/* A NAR made on the fly (a reader with segments)                      */
/* ------------------------------------------------------------------ */

/* A backend serving one tree as a NAR dumped on the fly, as the nixstore
 * backend does: read() copies, segment() hands out header bytes and file
 * regions. "gen.nar" is the tree; "shrunk.nar" is the tree whose large
 * file loses half its bytes once it has been indexed. */
typedef struct gen_tree {
  char root[64];
  char big[128];
} gen_tree;

static int gen_read(void *ctx, uint64_t offset, void *buf, size_t len, size_t *got) {
  narcache_nar_dumper *d = ctx;
  if (narcache_nar_dumper_seek(d, offset) < 0)
    return NARCACHE_EIO;
  narcache_outbuf out = {buf, len, 0};
  if (narcache_nar_dumper_read(d, &out) < 0 || out.pos == 0)
    return NARCACHE_EIO;
  *got = out.pos;
  return 0;
}

static int gen_segment(void *ctx, uint64_t offset, narcache_nar_segment *seg) {
  narcache_nar_dumper *d = ctx;
  if (narcache_nar_dumper_seek(d, offset) < 0 || narcache_nar_dumper_next(d, seg) <= 0)
    return NARCACHE_EIO;
  return 1;
}

static void gen_close(void *ctx) { narcache_nar_dumper_free(ctx); }

static int gen_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  gen_tree *t = ctx;
  int shrunk = len == 10 && memcmp(name, "shrunk.nar", 10) == 0;
  if (kind != NARCACHE_OBJECT_NAR || !(shrunk || (len == 7 && memcmp(name, "gen.nar", 7) == 0)))
    return NARCACHE_ENOTFOUND;
  narcache_nar_dumper *d = NULL;
  if (narcache_nar_dumper_new(&d) != 0)
    return NARCACHE_ENOMEM;
  if (narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, t->root) != 0) {
    narcache_nar_dumper_free(d);
    return NARCACHE_EIO;
  }
  if (shrunk && truncate(t->big, 3 << 19) != 0) { /* 1.5 MiB of 3 */
    narcache_nar_dumper_free(d);
    return NARCACHE_EIO;
  }
  out->size = narcache_nar_dumper_size(d);
  out->fd = -1;
  out->read = gen_read;
  out->segment = gen_segment;
  out->close = gen_close;
  out->ctx = d;
  return 0;
}

static void write_pattern(const char *path, size_t size, unsigned seed) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  for (size_t i = 0; i < size; i++)
    fputc((int)((i * 131 + seed * 7 + i / 4099) & 0xff), f);
  fclose(f);
}

/* A tree with one 3 MiB file (spliced), 300 small ones of 0-20 KiB
 * (gathered), an executable and a symlink. */
static void make_gen_tree(gen_tree *t) {
  snprintf(t->root, sizeof t->root, "/tmp/narcache-server-gen-XXXXXX");
  assert_non_null(mkdtemp(t->root));
  char path[256];
  snprintf(t->big, sizeof t->big, "%s/big", t->root);
  write_pattern(t->big, 3 << 20, 1);
  snprintf(path, sizeof path, "%s/small", t->root);
  assert_int_equal(mkdir(path, 0755), 0);
  for (unsigned i = 0; i < 300; i++) {
    snprintf(path, sizeof path, "%s/small/f%03u", t->root, i);
    write_pattern(path, (i * 7919u) % 20481u, i);
  }
  snprintf(path, sizeof path, "%s/small/run", t->root);
  write_pattern(path, 5000, 9);
  assert_int_equal(chmod(path, 0755), 0);
  snprintf(path, sizeof path, "%s/link", t->root);
  assert_int_equal(symlink("small/f001", path), 0);
}

static void remove_gen_tree(gen_tree *t) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", t->root);
  assert_int_equal(system(cmd), 0);
}

/* The whole NAR as the dumper copies it out. */
static char *expected_nar(const gen_tree *t, size_t *len) {
  narcache_nar_dumper *d = NULL;
  assert_int_equal(narcache_nar_dumper_new(&d), 0);
  assert_int_equal(narcache_nar_dumper_open(d, NARCACHE_AT_FDCWD, t->root), 0);
  *len = (size_t)narcache_nar_dumper_size(d);
  char *nar = malloc(*len);
  narcache_outbuf out = {nar, *len, 0};
  assert_int_equal(narcache_nar_dumper_read(d, &out), 0);
  assert_int_equal(out.pos, *len);
  narcache_nar_dumper_free(d);
  return nar;
}

static void test_generated_nar(void **state) {
  (void)state;
  gen_tree t;
  make_gen_tree(&t);
  size_t nar_len = 0;
  char *nar = expected_nar(&t, &nar_len);
  narcache_store_methods m = {.version = NARCACHE_STORE_METHODS_VERSION, .open = gen_open};
  narcache_store *st = NULL;
  assert_int_equal(narcache_store_new(&st, &m, &t), 0);
  running run;
  start(&run, st, NULL);

  /* twice on one keep-alive connection: both whole */
  response r[2];
  char *buf = exchange(run.port, GET("/nar/gen.nar") GET_CLOSE("/nar/gen.nar"), r, 2, NULL);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(r[i].status, 200);
    assert_int_equal(r[i].body_len, nar_len);
    assert_memory_equal(r[i].body, nar, nar_len);
  }
  free(buf);

  /* ranges starting in headers, in small files, in the large file and
   * across the large file's end */
  const uint64_t big_at = 200; /* the large file's contents start early */
  const uint64_t ranges[][2] = {{0, 99},           {1, 4096},
                                {big_at, 1 << 20}, {(3 << 20) - 5000, 70000},
                                {nar_len / 2, 12345}, {nar_len - 777, 777}};
  for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
    uint64_t first = ranges[i][0], count = ranges[i][1];
    char req[160];
    snprintf(req, sizeof req,
             "GET /nar/gen.nar HTTP/1.1\r\nHost: t\r\nRange: bytes=%llu-%llu\r\nConnection: close\r\n\r\n",
             (unsigned long long)first, (unsigned long long)(first + count - 1));
    buf = exchange(run.port, req, r, 1, NULL);
    assert_int_equal(r[0].status, 206);
    assert_int_equal(r[0].body_len, count);
    assert_memory_equal(r[0].body, nar + first, count);
    free(buf);
  }

  /* the large file shrinks after indexing: the body is cut, never a
   * complete-looking short 200 */
  int fd = connect_to(run.port);
  const char *req = GET_CLOSE("/nar/shrunk.nar");
  send_all(fd, req, strlen(req));
  size_t len = 0;
  buf = read_to_close(fd, &len);
  close(fd);
  assert_int_equal(parse_response(&r[0], buf, len, 0), -1); /* short */
  assert_int_equal(r[0].status, 200);
  free(buf);

  stop(&run);
  free(nar);
  remove_gen_tree(&t);
}

/* A NAR whose body comes from a STREAM segment (a pipe here, an object
 * store's socket in the s3 store) that is slow: waiting for it must hold
 * no pool thread. More downloads than the pool has threads all start,
 * and a narinfo lookup (a pool task) answers while they all wait; the
 * bodies arrive whole over several stalls; a source that stops for
 * longer than the segment's wait_ms has its response cut, never
 * completed short. The same with WAIT segments (bytes lent from the
 * reader's buffer, WAIT on the pipe while it is empty). */
enum { SLOW_N = 8, SLOW_SIZE = 300000 };
static int slow_pipes[SLOW_N][2];
static atomic_int slow_opened;
static atomic_int slow_wait_ms;

/* The other way a store can make the server wait: WAIT segments (the
 * s3 store's https ring). The reader copies what the pipe has into its
 * buffer and lends it as BYTES; with nothing there it answers WAIT on the
 * pipe. */
static atomic_int slow_by_wait;

typedef struct slow_reader {
  int fd;
  uint64_t at; /* NAR offset of buf[0] */
  size_t len;
  char buf[65536];
} slow_reader;

static int slow_segment(void *ctx, uint64_t offset, narcache_nar_segment *seg) {
  slow_reader *r = ctx;
  seg->nar_offset = offset;
  seg->fd = r->fd;
  seg->wait_ms = atomic_load(&slow_wait_ms);
  if (!atomic_load(&slow_by_wait)) {
    seg->kind = NARCACHE_NAR_SEG_STREAM;
    seg->length = SLOW_SIZE - offset;
    return 1;
  }
  if (seg->version < 3)
    return NARCACHE_EIO;
  if (offset < r->at || offset > r->at + r->len)
    return NARCACHE_EIO; /* the server goes forward only */
  if (offset == r->at + r->len) { /* all lent bytes were taken: refill */
    ssize_t n = read(r->fd, r->buf, sizeof r->buf);
    if (n == 0 || (n < 0 && errno != EAGAIN))
      return NARCACHE_EIO;
    r->at = offset;
    r->len = n > 0 ? (size_t)n : 0;
    if (n < 0) {
      seg->kind = NARCACHE_NAR_SEG_WAIT;
      seg->length = 0;
      return 1;
    }
  }
  seg->kind = NARCACHE_NAR_SEG_BYTES;
  seg->data = r->buf + (offset - r->at);
  seg->length = r->at + r->len - offset;
  seg->fd = -1;
  return 1;
}

static int slow_read(void *ctx, uint64_t offset, void *buf, size_t len, size_t *got) {
  (void)ctx, (void)offset, (void)buf, (void)len, (void)got;
  return NARCACHE_EIO; /* bodies are taken by segments */
}

static void slow_close(void *ctx) { free(ctx); /* the test owns the pipes */ }

static int slow_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  (void)ctx;
  if (kind != NARCACHE_OBJECT_NAR || len != 9 || memcmp(name, "slow", 4) != 0 ||
      name[4] < '0' || name[4] >= '0' + SLOW_N)
    return NARCACHE_ENOTFOUND;
  out->size = SLOW_SIZE;
  out->fd = -1;
  out->read = slow_read;
  out->segment = slow_segment;
  out->close = slow_close;
  slow_reader *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NARCACHE_ENOMEM;
  r->fd = slow_pipes[name[4] - '0'][0];
  out->ctx = r;
  atomic_fetch_add(&slow_opened, 1);
  return 0;
}

static void slow_pattern(char *buf, size_t len, int i) {
  for (size_t k = 0; k < len; k++)
    buf[k] = (char)((k * 7 + (size_t)i * 13 + k / 1021) & 0xff);
}

static int slow_request(int port, int i) {
  int fd = connect_to(port);
  char req[128];
  snprintf(req, sizeof req, GET_CLOSE("/nar/slow%d.nar"), i);
  send_all(fd, req, strlen(req));
  return fd;
}

static void slow_source_round(int by_wait) {
  atomic_store(&slow_by_wait, by_wait);
  for (int i = 0; i < SLOW_N; i++) {
    assert_int_equal(pipe2(slow_pipes[i], O_CLOEXEC), 0);
    assert_int_equal(fcntl(slow_pipes[i][0], F_SETFL, O_NONBLOCK), 0);
  }
  atomic_store(&slow_opened, 0);
  atomic_store(&slow_wait_ms, 5000);
  narcache_store_methods m = {.version = NARCACHE_STORE_METHODS_VERSION, .open = slow_open};
  narcache_store *st = NULL;
  assert_int_equal(narcache_store_new(&st, &m, NULL), 0);
  option_value opts[] = {{NARCACHE_OPT_MEMORY_CACHE_MS, 0}, {0, 0}};
  running run;
  start(&run, st, opts);

  int fds[SLOW_N];
  for (int i = 0; i < SLOW_N; i++)
    fds[i] = slow_request(run.port, i);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (atomic_load(&slow_opened) < SLOW_N && ms_since(&t0) < 3000)
    usleep(1000);
  assert_int_equal(atomic_load(&slow_opened), SLOW_N); /* none waits for a thread */
  clock_gettime(CLOCK_MONOTONIC, &t0);
  response r;
  char *buf = exchange(run.port, GET_CLOSE("/00000000000000000000000000000000.narinfo"), &r, 1, NULL);
  assert_int_equal(r.status, 404);
  free(buf);
  assert_true(ms_since(&t0) < 2000);

  /* the bodies, in four pieces with pauses between them */
  char *body = malloc(SLOW_SIZE);
  assert_non_null(body);
  for (int piece = 0; piece < 4; piece++) {
    usleep(30000);
    for (int i = 0; i < SLOW_N; i++) {
      slow_pattern(body, SLOW_SIZE, i);
      size_t from = (size_t)piece * SLOW_SIZE / 4, to = (size_t)(piece + 1) * SLOW_SIZE / 4;
      while (from < to) { /* blocks while the server has not taken enough */
        ssize_t n = write(slow_pipes[i][1], body + from, to - from);
        assert_true(n > 0);
        from += (size_t)n;
      }
    }
  }
  for (int i = 0; i < SLOW_N; i++) {
    size_t len = 0;
    buf = read_to_close(fds[i], &len);
    close(fds[i]);
    assert_int_equal(parse_response(&r, buf, len, 0), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, SLOW_SIZE);
    slow_pattern(body, SLOW_SIZE, i);
    assert_memory_equal(r.body, body, SLOW_SIZE);
    free(buf);
  }

  /* a source that stops: the response is cut once wait_ms has passed */
  atomic_store(&slow_wait_ms, 300);
  int fd = slow_request(run.port, 0);
  assert_int_equal(write(slow_pipes[0][1], body, 1000), 1000);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  size_t len = 0;
  buf = read_to_close(fd, &len);
  close(fd);
  double took = ms_since(&t0);
  assert_int_equal(parse_response(&r, buf, len, 0), -1); /* short */
  assert_int_equal(r.status, 200);
  assert_true(took >= 250 && took < 4000);
  free(buf);

  /* the client leaves while its source is silent; the server goes on */
  fd = slow_request(run.port, 1);
  usleep(50000);
  close(fd);
  assert_int_equal(write(slow_pipes[1][1], body, 1000), 1000);
  buf = exchange(run.port, GET_CLOSE("/00000000000000000000000000000000.narinfo"), &r, 1, NULL);
  assert_int_equal(r.status, 404);
  free(buf);

  stop(&run);
  free(body);
  for (int i = 0; i < SLOW_N; i++) {
    close(slow_pipes[i][0]);
    close(slow_pipes[i][1]);
  }
}

static void test_slow_stream_source(void **state) {
  (void)state;
  slow_source_round(0);
}

static void test_slow_wait_segments(void **state) {
  (void)state;
  slow_source_round(1);
}

/* ------------------------------------------------------------------ */
/* Uploads                                                             */
/* ------------------------------------------------------------------ */

#define WRITE_TOKEN "w-6b1f0c0e5d0a4e3c9a7f21d4c8e2b9a1"
#define READ_TOKEN "r-0f9e8d7c6b5a49382716a5b4c3d2e1f0"
/* "Authorization: Basic" of nix:WRITE_TOKEN, as Nix sends it from netrc */
#define BASIC_WRITE "Basic bml4OnctNmIxZjBjMGU1ZDBhNGUzYzlhN2YyMWQ0YzhlMmI5YTE="

/* PUT `len` bytes of `body` to `path` with an optional Authorization value.
 * With `expect`, wait for "100 Continue" before sending the body (and fail
 * if a final answer comes instead, which is then returned). `send_len`
 * bytes of the body are sent (< len: the client gives up half-way). The
 * response is parsed into *r; the raw bytes are returned (free them). */
static char *put_object(int port, const char *path, const char *auth, const void *body, size_t len,
                        size_t send_len, int expect, response *r) {
  int fd = connect_to(port);
  char head[1024];
  int n = snprintf(head, sizeof head,
                   "PUT %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n"
                   "Content-Length: %zu\r\n%s%s%s%sConnection: close\r\n\r\n",
                   path, len, auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "",
                   expect ? "Expect: 100-continue\r\n" : "");
  send_all(fd, head, (size_t)n);
  if (expect) {
    char interim[64];
    ssize_t got = recv(fd, interim, 25, MSG_PEEK);
    assert_true(got > 0);
    if (got >= 25 && memcmp(interim, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0) {
      assert_int_equal(recv(fd, interim, 25, 0), 25);
    } else { /* a final answer instead: the body is not sent */
      send_len = 0;
      shutdown(fd, SHUT_WR);
    }
  }
  if (send_len > 0)
    send_all(fd, body, send_len);
  if (send_len < len)
    shutdown(fd, SHUT_WR);
  size_t got_len = 0;
  char *buf = read_to_close(fd, &got_len);
  close(fd);
  if (parse_response(r, buf, got_len, 0) != 0)
    r->status = -1;
  return buf;
}

static int put_status(int port, const char *path, const char *auth, const char *body,
                      int expect) {
  response r;
  free(put_object(port, path, auth, body, strlen(body), strlen(body), expect, &r));
  return r.status;
}

static int get_status(int port, const char *path, const char *auth, char **body, size_t *len) {
  int fd = connect_to(port);
  char req[512];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n%s%s%sConnection: close\r\n\r\n",
                   path, auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "");
  send_all(fd, req, (size_t)n);
  size_t got = 0;
  char *buf = read_to_close(fd, &got);
  close(fd);
  response r;
  int status = parse_response(&r, buf, got, 0) == 0 ? r.status : -1;
  if (body != NULL && status > 0) {
    *body = malloc(r.body_len + 1);
    memcpy(*body, r.body, r.body_len);
    *len = r.body_len;
  }
  free(buf);
  return status;
}

/* No ".tmp-" file anywhere under `dir`: a refused or broken upload left
 * no trace. */
static void assert_no_temp_files(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "test -z \"$(find '%s' -name '.tmp-*')\"", dir);
  assert_int_equal(system(cmd), 0);
}

#define F1_HASH "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0"
#define F1_NAR "0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa.nar"

/* Upload f1 (no references) and check what a NAR upload refuses. */
static void upload_f1(int port) {
  size_t nar_len = 0, ni_len = 0;
  char *nar = test_data_slurp("narinfo/caches/none/nar/" F1_NAR, &nar_len);
  char *ni = test_data_slurp("narinfo/caches/none/" F1_HASH ".narinfo", &ni_len);
  response r;
  /* under a name that is not the hash of its bytes */
  free(put_object(port, "/nar/" REF_NAR, BASIC_WRITE, nar, nar_len, nar_len, 1, &r));
  assert_int_equal(r.status, 400);
  /* a form that cannot be checked here */
  free(put_object(port, "/nar/" F1_NAR ".xz", BASIC_WRITE, nar, nar_len, nar_len, 1, &r));
  assert_int_equal(r.status, 415);
  /* not a NAR, named by its own hash */
  const char junk[] = "this is not a NAR archive at all";
  narcache_hash h;
  assert_int_equal(narcache_hash_buffer(&h, NARCACHE_HASH_SHA256, junk, sizeof junk - 1), 0);
  char path[128] = "/nar/";
  size_t n = 0;
  assert_int_equal(narcache_nix32_encode(path + 5, sizeof path - 10, &n, h.digest, h.len), 0);
  memcpy(path + 5 + n, ".nar", 5);
  char *buf = put_object(port, path, BASIC_WRITE, junk, sizeof junk - 1, sizeof junk - 1, 1, &r);
  assert_int_equal(r.status, 400);
  assert_non_null(memmem(r.body, r.body_len, "not a valid NAR", 15));
  free(buf);
  assert_int_equal(get_status(port, path, NULL, NULL, NULL), 404);
  /* a narinfo whose NarHash is not its NAR's */
  free(put_object(port, "/nar/" F1_NAR, BASIC_WRITE, nar, nar_len, nar_len, 1, &r));
  assert_int_equal(r.status, 200);
  char *bad = strdup(ni);
  char *digit = strstr(bad, "NarHash: sha256:") + 16;
  *digit = *digit == '0' ? '1' : '0';
  assert_int_equal(put_status(port, "/" F1_HASH ".narinfo", "Bearer " WRITE_TOKEN, bad, 1), 400);
  free(bad);
  /* NarSize off by one */
  bad = strdup(ni);
  memcpy(strstr(bad, "NarSize: 120"), "NarSize: 121", 12);
  assert_int_equal(put_status(port, "/" F1_HASH ".narinfo", "Bearer " WRITE_TOKEN, bad, 1), 400);
  free(bad);
  /* a signature by the trusted key that does not verify */
  bad = strdup(ni);
  char *sig = strstr(bad, "Sig: test-cache-1:") + 18;
  *sig = *sig == 'A' ? 'B' : 'A';
  assert_int_equal(put_status(port, "/" F1_HASH ".narinfo", "Bearer " WRITE_TOKEN, bad, 1), 403);
  free(bad);
  /* a narinfo under another path's hash part */
  assert_int_equal(put_status(port, "/" REF_HASH ".narinfo", "Bearer " WRITE_TOKEN, ni, 1), 400);
  /* corrupt zstd, named by the hash of its bytes */
  const char zjunk[] = "\x28\xb5\x2f\xfd this is not a zstd frame";
  assert_int_equal(narcache_hash_buffer(&h, NARCACHE_HASH_SHA256, zjunk, sizeof zjunk - 1), 0);
  assert_int_equal(narcache_nix32_encode(path + 5, sizeof path - 14, &n, h.digest, h.len), 0);
  memcpy(path + 5 + n, ".nar.zst", 9);
  buf = put_object(port, path, BASIC_WRITE, zjunk, sizeof zjunk - 1, sizeof zjunk - 1, 1, &r);
  assert_int_equal(r.status, 400);
  assert_non_null(memmem(r.body, r.body_len, "zstd", 4));
  free(buf);
  assert_int_equal(get_status(port, path, NULL, NULL, NULL), 404);
  assert_int_equal(put_status(port, "/" F1_HASH ".narinfo", "Bearer " WRITE_TOKEN, ni, 1), 200);
  free(nar);
  free(ni);
}

static void test_uploads(void **state) {
  (void)state;
  char dir[] = "/tmp/narcache-server-up-XXXXXX";
  assert_non_null(mkdtemp(dir));
  narcache_store *st = NULL;
  assert_int_equal(narcache_store_dir_new(&st, dir, NARCACHE_STORE_DIR_WRITABLE), 0);
  narcache_tokens *tokens = NULL;
  const char *table = "ci write " WRITE_TOKEN "\nlaptop read " READ_TOKEN "\n";
  assert_int_equal(narcache_tokens_parse(&tokens, table, strlen(table), NULL, 0), 0);
  size_t key_len = 0;
  char *key_text = test_data_slurp("narinfo/keys/test-cache-1.pub", &key_len);
  while (key_len > 0 && (key_text[key_len - 1] == '\n' || key_text[key_len - 1] == ' '))
    key_len--;
  narcache_key *trusted = NULL;
  assert_int_equal(narcache_key_parse_public(&trusted, key_text, key_len, NULL), 0);
  free(key_text);
  running run;
  start(&run, st, (option_value[]){{NARCACHE_OPT_MAX_UPLOAD_BYTES, 1 << 20}, {0, 0}});
  assert_int_equal(narcache_server_set_tokens(run.server, tokens), 0); /* loop idle: safe */
  const narcache_key *keys[] = {trusted};
  assert_int_equal(narcache_server_set_upload_keys(run.server, keys, 1, NULL), 0);

  size_t nar_len = 0, ni_len = 0;
  char *nar = test_data_slurp("narinfo/caches/none/nar/" REF_NAR, &nar_len);
  char *ni = test_data_slurp("narinfo/caches/none/" REF_HASH ".narinfo", &ni_len);
  response r;
  char *buf;

  /* refusals first, each leaving nothing behind */
  buf = put_object(run.port, "/nar/" REF_NAR, NULL, nar, nar_len, nar_len, 1, &r);
  assert_int_equal(r.status, 401); /* no token: refused before the body */
  assert_non_null(field(&r, "WWW-Authenticate"));
  free(buf);
  assert_int_equal(put_status(run.port, "/nar/" REF_NAR, "Bearer " READ_TOKEN, "x", 1), 403);
  assert_int_equal(put_status(run.port, "/nar/" REF_NAR, "Bearer wrong-token-0123456789", "x", 1),
                   401);
  buf = put_object(run.port, "/healthz", "Bearer " WRITE_TOKEN, "x", 1, 1, 0, &r);
  assert_int_equal(r.status, 405);
  assert_string_equal(field(&r, "Allow"), "GET, HEAD"); /* uploads go elsewhere */
  free(buf);
  assert_int_equal(put_status(run.port, "/nar/..%2Fx.nar", "Bearer " WRITE_TOKEN, "x", 0), 404);
  /* over the limit (1 MiB): 413 at once, from the announced length */
  int fd = connect_to(run.port);
  const char *big = "PUT /nar/" REF_NAR " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " WRITE_TOKEN
                    "\r\nContent-Length: 1048577\r\nExpect: 100-continue\r\n\r\n";
  send_all(fd, big, strlen(big));
  size_t len = 0;
  buf = read_to_close(fd, &len);
  close(fd);
  assert_int_equal(parse_response(&r, buf, len, 0), 0);
  assert_int_equal(r.status, 413);
  free(buf);
  /* no length: chunked is not taken */
  fd = connect_to(run.port);
  const char *chunked = "PUT /nar/" REF_NAR " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " WRITE_TOKEN
                        "\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
  send_all(fd, chunked, strlen(chunked));
  buf = read_to_close(fd, &len);
  close(fd);
  assert_int_equal(parse_response(&r, buf, len, 0), 0);
  assert_int_equal(r.status, 411);
  free(buf);
  /* the narinfo before its NAR: refused, 4xx */
  assert_int_equal(put_status(run.port, "/" REF_HASH ".narinfo", "Bearer " WRITE_TOKEN, ni, 1), 409);
  /* a body cut short: dropped */
  buf = put_object(run.port, "/nar/" REF_NAR, BASIC_WRITE, nar, nar_len, nar_len / 2, 0, &r);
  free(buf);
  for (int i = 0; i < 100 && get_status(run.port, "/nar/" REF_NAR, NULL, NULL, NULL) != 404; i++)
    usleep(10000);
  assert_int_equal(get_status(run.port, "/nar/" REF_NAR, NULL, NULL, NULL), 404);
  usleep(100000); /* the dropped upload's file goes on a pool thread */
  assert_no_temp_files(dir);

  /* the real sequence: nix-cache-info, then per path, dependencies
   * first, the NAR (Basic auth from netrc, 100-continue) and the narinfo;
   * each readable afterwards */
  const char *info = "StoreDir: /nix/store\n";
  assert_int_equal(put_status(run.port, "/nix-cache-info", "Bearer " WRITE_TOKEN, "StoreDir: /gnu/store\n", 1),
                   400); /* another store directory */
  assert_int_equal(put_status(run.port, "/nix-cache-info", "Bearer " WRITE_TOKEN, info, 1), 200);
  buf = put_object(run.port, "/nar/" REF_NAR, BASIC_WRITE, nar, nar_len, nar_len, 1, &r);
  assert_int_equal(r.status, 200);
  free(buf);
  /* its reference f1 is not in the cache yet */
  assert_int_equal(put_status(run.port, "/" REF_HASH ".narinfo", "Bearer " WRITE_TOKEN, ni, 1), 409);
  upload_f1(run.port);
  assert_int_equal(put_status(run.port, "/" REF_HASH ".narinfo", "Bearer " WRITE_TOKEN, ni, 1), 200);
  /* the same again is fine; a different one for the same path is not */
  assert_int_equal(put_status(run.port, "/" REF_HASH ".narinfo", "Bearer " WRITE_TOKEN, ni, 1), 200);
  char *other = strdup(ni);
  *strstr(other, "Deriver: ") = '\0'; /* the narinfo without its Deriver and Sig lines */
  assert_int_equal(put_status(run.port, "/" REF_HASH ".narinfo", "Bearer " WRITE_TOKEN, other, 1), 403);
  free(other);
  char *got = NULL;
  size_t got_len = 0;
  assert_int_equal(get_status(run.port, "/nar/" REF_NAR, NULL, &got, &got_len), 200);
  assert_int_equal(got_len, nar_len);
  assert_memory_equal(got, nar, nar_len);
  free(got);
  assert_int_equal(get_status(run.port, "/" REF_HASH ".narinfo", NULL, &got, &got_len), 200);
  assert_int_equal(got_len, ni_len);
  assert_memory_equal(got, ni, ni_len);
  free(got);
  assert_int_equal(get_status(run.port, "/nix-cache-info", NULL, &got, &got_len), 200);
  assert_int_equal(got_len, strlen(info));
  free(got);

  /* pipelined: an upload and a read on one connection, answered in order */
  fd = connect_to(run.port);
  char two[1024];
  int n = snprintf(two, sizeof two,
                   "PUT /log/ba703j8axyq4wqbbwjh4vw23rslsrwhw-ref-demo.drv HTTP/1.1\r\nHost: t\r\n"
                   "Authorization: Bearer " WRITE_TOKEN "\r\nContent-Length: 9\r\n\r\nbuilt ok\n"
                   "GET /log/ba703j8axyq4wqbbwjh4vw23rslsrwhw-ref-demo.drv HTTP/1.1\r\nHost: t\r\n"
                   "Connection: close\r\n\r\n");
  send_all(fd, two, (size_t)n);
  buf = read_to_close(fd, &len);
  close(fd);
  assert_int_equal(parse_response(&r, buf, len, 0), 0);
  assert_int_equal(r.status, 200);
  response r2;
  assert_int_equal(parse_response(&r2, buf + r.total, len - r.total, 0), 0);
  assert_int_equal(r2.status, 200);
  assert_int_equal(r2.body_len, 9);
  assert_memory_equal(r2.body, "built ok\n", 9);
  free(buf);
  assert_no_temp_files(dir);
  /* the outcomes are counted */
  char *metrics = NULL;
  size_t metrics_len = 0;
  assert_int_equal(get_status(run.port, "/metrics", NULL, &metrics, &metrics_len), 200);
  metrics[metrics_len] = '\0';
  assert_non_null(strstr(metrics, "narcache_uploads_stored_total 7\n"));
  assert_non_null(strstr(metrics, "narcache_uploads_refused_total{status=\"401\"} 2\n"));
  assert_non_null(strstr(metrics, "narcache_uploads_refused_total{status=\"403\"} 3\n"));
  assert_non_null(strstr(metrics, "narcache_uploads_dropped_total 1\n"));
  free(metrics);
  stop(&run);

  /* below the free-space floor: 507 before anything is written */
  char full_dir[] = "/tmp/narcache-server-full-XXXXXX";
  assert_non_null(mkdtemp(full_dir));
  assert_int_equal(narcache_store_dir_new(&st, full_dir, NARCACHE_STORE_DIR_WRITABLE), 0);
  assert_int_equal(narcache_store_dir_set_min_free(st, (uint64_t)1 << 62), 0);
  start(&run, st, (option_value[]){{NARCACHE_OPT_MAX_UPLOAD_BYTES, 1 << 20}, {0, 0}});
  assert_int_equal(narcache_server_set_tokens(run.server, tokens), 0);
  buf = put_object(run.port, "/nar/" REF_NAR, BASIC_WRITE, nar, nar_len, nar_len, 1, &r);
  assert_int_equal(r.status, 507);
  free(buf);
  assert_no_temp_files(full_dir);
  stop(&run);
  rmdir(full_dir);

  /* a private cache: reads need a token too */
  assert_int_equal(narcache_store_dir_new(&st, dir, 0), 0);
  start(&run, st,
        (option_value[]){{NARCACHE_OPT_PRIVATE, 1}, {NARCACHE_OPT_MAX_UPLOAD_BYTES, 1 << 20}, {0, 0}});
  assert_int_equal(narcache_server_set_tokens(run.server, tokens), 0);
  assert_int_equal(get_status(run.port, "/" REF_HASH ".narinfo", NULL, NULL, NULL), 401);
  assert_int_equal(get_status(run.port, "/" REF_HASH ".narinfo", "Bearer " READ_TOKEN, NULL, NULL), 200);
  assert_int_equal(get_status(run.port, "/" REF_HASH ".narinfo", BASIC_WRITE, NULL, NULL), 200);
  assert_int_equal(get_status(run.port, "/healthz", NULL, NULL, NULL), 200); /* not an object */
  /* a read-only store: an upload is refused even with a write token */
  assert_int_equal(put_status(run.port, "/log/ba703j8axyq4wqbbwjh4vw23rslsrwhw-ref-demo.drv",
                              "Bearer " WRITE_TOKEN, "log\n", 1),
                   405);
  /* (the same nix-cache-info again is a no-op, fine even there) */
  assert_int_equal(put_status(run.port, "/nix-cache-info", "Bearer " WRITE_TOKEN, info, 1), 200);
  stop(&run);

  narcache_tokens_free(tokens);
  narcache_key_free(trusted);
  free(nar);
  free(ni);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* Limits of uploads: a body that stalls is dropped after the stall
 * timeout, uploads beyond NARCACHE_OPT_MAX_UPLOADS get 503 with
 * Retry-After, and a different narinfo for a path already there is a
 * conflict (409) unless NARCACHE_OPT_ALLOW_OVERWRITE; here the server
 * signs uploads itself. */
static void test_upload_limits(void **state) {
  (void)state;
  char dir[] = "/tmp/narcache-server-uplim-XXXXXX";
  assert_non_null(mkdtemp(dir));
  narcache_tokens *tokens = NULL;
  const char *table = "ci write " WRITE_TOKEN "\n";
  assert_int_equal(narcache_tokens_parse(&tokens, table, strlen(table), NULL, 0), 0);
  size_t key_len = 0;
  char *key_text = test_data_slurp("narinfo/keys/test-cache-1.sec", &key_len);
  while (key_len > 0 && (key_text[key_len - 1] == '\n' || key_text[key_len - 1] == ' '))
    key_len--;
  narcache_key *signing = NULL;
  assert_int_equal(narcache_key_parse_secret(&signing, key_text, key_len, NULL), 0);
  free(key_text);
  size_t nar_len = 0, ni_len = 0;
  char *nar = test_data_slurp("narinfo/caches/none/nar/" F1_NAR, &nar_len);
  char *ni = test_data_slurp("narinfo/caches/none/" F1_HASH ".narinfo", &ni_len);
  char *unsigned_ni = strdup(ni);
  *strstr(unsigned_ni, "Sig: ") = '\0';

  for (int overwrite = 0; overwrite < 2; overwrite++) {
    narcache_store *st = NULL;
    assert_int_equal(narcache_store_dir_new(&st, dir, NARCACHE_STORE_DIR_WRITABLE), 0);
    running run;
    start(&run, st,
          (option_value[]){{NARCACHE_OPT_MAX_UPLOAD_BYTES, 1 << 20},
                           {NARCACHE_OPT_MAX_UPLOADS, 1},
                           {NARCACHE_OPT_BODY_STALL_MS, 300},
                           {NARCACHE_OPT_ALLOW_OVERWRITE, overwrite},
                           {0, 0}});
    assert_int_equal(narcache_server_set_tokens(run.server, tokens), 0);
    assert_int_equal(narcache_server_set_upload_keys(run.server, NULL, 0, signing), 0);

    /* one upload sends half its body and stops: it holds the only slot */
    int slow = connect_to(run.port);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "PUT /nar/" F1_NAR " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " WRITE_TOKEN
                     "\r\nContent-Length: %zu\r\n\r\n",
                     nar_len);
    send_all(slow, head, (size_t)n);
    send_all(slow, nar, nar_len / 2);
    usleep(100000);
    response r;
    char *buf = put_object(run.port, "/nar/" F1_NAR, BASIC_WRITE, nar, nar_len, nar_len, 1, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(field(&r, "Retry-After"));
    free(buf);
    /* the stall timeout drops it: the server closes, nothing is left */
    size_t len = 0;
    buf = read_to_close(slow, &len);
    close(slow);
    assert_int_equal(len, 0); /* no answer: the connection is cut */
    free(buf);
    if (!overwrite) {
      assert_int_equal(get_status(run.port, "/nar/" F1_NAR, NULL, NULL, NULL), 404);
    } else { /* a dropped upload of an object already there left it whole */
      char *whole = NULL;
      size_t whole_len = 0;
      assert_int_equal(get_status(run.port, "/nar/" F1_NAR, NULL, &whole, &whole_len), 200);
      assert_int_equal(whole_len, nar_len);
      assert_memory_equal(whole, nar, nar_len);
      free(whole);
    }
    usleep(100000);
    assert_no_temp_files(dir);

    /* the slot is free again; the unsigned narinfo gets the server's key */
    if (!overwrite) {
      buf = put_object(run.port, "/nar/" F1_NAR, BASIC_WRITE, nar, nar_len, nar_len, 1, &r);
      assert_int_equal(r.status, 200);
      free(buf);
      assert_int_equal(put_status(run.port, "/" F1_HASH ".narinfo", "Bearer " WRITE_TOKEN,
                                  unsigned_ni, 1),
                       200);
    }
    /* a different narinfo for the same path (another Deriver line) */
    char *changed = malloc(strlen(unsigned_ni) + 64);
    sprintf(changed, "%sDeriver: ba703j8axyq4wqbbwjh4vw23rslsrwhw-other.drv\n", unsigned_ni);
    assert_int_equal(put_status(run.port, "/" F1_HASH ".narinfo", "Bearer " WRITE_TOKEN, changed, 1),
                     overwrite ? 200 : 409);
    char *got = NULL;
    size_t got_len = 0;
    assert_int_equal(get_status(run.port, "/" F1_HASH ".narinfo", NULL, &got, &got_len), 200);
    got[got_len] = '\0';
    assert_true((strstr(got, "Deriver: ") != NULL) == overwrite);
    assert_non_null(strstr(got, "Sig: test-cache-1:")); /* signed by the server */
    free(got);
    free(changed);
    stop(&run);
  }
  narcache_key_free(signing);
  narcache_tokens_free(tokens);
  free(nar);
  free(ni);
  free(unsigned_ni);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* The embedder's authorize hook decides instead of the token table. */
static atomic_int authorize_calls;
static atomic_int authorize_kind;

static int let_me_in(void *ud, const narcache_auth_request *r) {
  (void)ud;
  atomic_fetch_add(&authorize_calls, 1);
  atomic_store(&authorize_kind, r->kind);
  if (r->credential != NULL && r->credential_len == 21 &&
      memcmp(r->credential, "let-me-in-0123456789a", 21) == 0)
    return NARCACHE_SCOPE_WRITE;
  return NARCACHE_SCOPE_NONE;
}

static void test_authorize_hook(void **state) {
  (void)state;
  char dir[] = "/tmp/narcache-server-authz-XXXXXX";
  assert_non_null(mkdtemp(dir));
  narcache_store *st = NULL;
  assert_int_equal(narcache_store_dir_new(&st, dir, NARCACHE_STORE_DIR_WRITABLE), 0);
  test_authorize = let_me_in;
  running run;
  start(&run, st, (option_value[]){{NARCACHE_OPT_MAX_UPLOAD_BYTES, 4096}, {0, 0}});
  test_authorize = NULL;
  const char *info = "StoreDir: /nix/store\n";
  assert_int_equal(put_status(run.port, "/nix-cache-info", "Bearer " WRITE_TOKEN, info, 1), 401);
  assert_int_equal(atomic_load(&authorize_calls), 1);
  assert_int_equal(put_status(run.port, "/nix-cache-info", "Bearer let-me-in-0123456789a", info, 1),
                   200);
  assert_int_equal(atomic_load(&authorize_calls), 2);
  assert_int_equal(atomic_load(&authorize_kind), NARCACHE_OBJECT_CACHE_INFO);
  assert_int_equal(get_status(run.port, "/nix-cache-info", NULL, NULL, NULL), 200);
  assert_int_equal(atomic_load(&authorize_calls), 2); /* a public cache: reads are not asked */
  stop(&run);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static long cpu_ticks(pid_t pid);

/* Close a connection in the middle of a body. Even rounds reset it
 * (SO_LINGER 0: the server's next send fails with ECONNRESET); odd rounds
 * half-close it first and close with nothing unread, so the server, in
 * CLOSE_WAIT, meets the client's RST as EPIPE on its next send. */
static void leave_mid_body(int fd, int round) {
  if (round % 2 == 0) {
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  } else {
    shutdown(fd, SHUT_WR);
    char buf[65536];
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
      continue;
  }
  close(fd);
}

/* A client that leaves in the middle of a file body sent with sendfile()
 * must not kill a program that left SIGPIPE at its default (an embedder),
 * and the server must give up the connection at once: each request gets
 * its access record, and nothing keeps retrying the dead socket. */
static void test_reset_mid_body_without_sigpipe_handler(void **state) {
  (void)state;
  char dir[] = "/tmp/narcache-server-pipe-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[600];
  snprintf(path, sizeof path, "%s/nar", dir);
  assert_int_equal(mkdir(path, 0755), 0);
  snprintf(path, sizeof path, "%s/nar/big.nar", dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  static char chunk[1 << 16];
  for (int i = 0; i < 256; i++) /* 16 MiB */
    assert_int_equal(fwrite(chunk, 1, sizeof chunk, f), sizeof chunk);
  fclose(f);
  signal(SIGPIPE, SIG_DFL);
  narcache_store *st = NULL;
  assert_int_equal(narcache_store_dir_new(&st, dir, 0), 0);
  running run;
  start(&run, st, NULL);
  for (int round = 0; round < 20; round++) {
    int fd = connect_to(run.port);
    const char *req = GET("/nar/big.nar");
    send_all(fd, req, strlen(req));
    char buf[4096];
    assert_true(recv(fd, buf, sizeof buf, 0) > 0);
    leave_mid_body(fd, round);
  }
  for (int i = 0; i < 300 && atomic_load(&run.access_calls) < 20; i++)
    usleep(10000);
  assert_int_equal(atomic_load(&run.access_calls), 20);
  long busy_before = cpu_ticks(getpid());
  usleep(500000);
  long busy = cpu_ticks(getpid()) - busy_before;
  assert_true(busy >= 0 && busy < 10); /* ticks of 10 ms: not spinning */
  assert_int_equal(status_on(connect_to(run.port)), 404); /* alive; no nix-cache-info here */
  stop(&run);
  signal(SIGPIPE, SIG_IGN);
  unlink(path);
  snprintf(path, sizeof path, "%s/nar", dir);
  rmdir(path);
  rmdir(dir);
}

/* IPv6 and unix listeners; two servers on two loops sharing one port. */
static int connect_unix(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

static int status_on(int fd) {
  const char *q = GET_CLOSE("/nix-cache-info");
  send_all(fd, q, strlen(q));
  size_t len = 0;
  char *buf = read_to_close(fd, &len);
  close(fd);
  response r;
  int status = parse_response(&r, buf, len, 0) == 0 ? r.status : -1;
  free(buf);
  return status;
}

static void test_listeners(void **state) {
  (void)state;
  running run;
  memset(&run, 0, sizeof run);
  run.store = golden_store();
  assert_int_equal(narcache_server_new(&run.server, NULL, run.store), 0);
  narcache_server_hooks h = {.version = NARCACHE_SERVER_HOOKS_VERSION, .stopped = on_stopped};
  assert_int_equal(narcache_server_set_hooks(run.server, &h, &run), 0);
  char sock[64];
  snprintf(sock, sizeof sock, "/tmp/narcache-test-%d.sock", (int)getpid());
  char addr[128];
  snprintf(addr, sizeof addr, "unix:%s", sock);
  assert_int_equal(narcache_server_listen(run.server, "127.0.0.1:0", NARCACHE_LISTEN_REUSEPORT), 0);
  int v6 = narcache_server_listen(run.server, "[::1]:0", 0);
  assert_int_equal(narcache_server_listen(run.server, addr, 0), 0);
  assert_int_equal(narcache_server_listen(run.server, "nonsense", 0), NARCACHE_EINVAL);
  assert_int_equal(narcache_server_listen(run.server, "127.0.0.1:99999", 0), NARCACHE_EINVAL);
  size_t n = narcache_server_listener_count(run.server);
  assert_int_equal(n, v6 == 0 ? 3 : 2);
  char got[160];
  assert_int_equal(narcache_server_address(run.server, n - 1, got, sizeof got), 0);
  assert_string_equal(got, addr);
  int port = narcache_server_port(run.server, 0);
  assert_int_equal(narcache_server_start(run.server), 0);
  assert_int_equal(pthread_create(&run.thread, NULL, serve, &run), 0);

  /* a second server on its own loop, same port (SO_REUSEPORT) */
  running second;
  memset(&second, 0, sizeof second);
  second.store = golden_store();
  assert_int_equal(narcache_server_new(&second.server, NULL, second.store), 0);
  assert_int_equal(narcache_server_set_hooks(second.server, &h, &second), 0);
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  assert_int_equal(narcache_server_listen(second.server, addr, NARCACHE_LISTEN_REUSEPORT), 0);
  assert_int_equal(narcache_server_start(second.server), 0);
  assert_int_equal(pthread_create(&second.thread, NULL, serve, &second), 0);

  for (int i = 0; i < 20; i++)
    assert_int_equal(status_on(connect_to(port)), 200);
  assert_int_equal(status_on(connect_unix(sock)), 200);
  if (v6 == 0) {
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6,
                             .sin6_port = htons((uint16_t)narcache_server_port(run.server, 1))};
    a.sin6_addr = in6addr_loopback;
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(status_on(fd), 200);
  } else {
    print_message("no IPv6 loopback here: [::1] not tested\n");
  }
  stop(&second);
  stop(&run);
  struct stat st;
  assert_int_equal(stat(sock, &st), -1); /* the socket file is removed */
}

/* A stop while a client downloads: the response completes, then the
 * server stops. */
static void test_graceful_stop(void **state) {
  (void)state;
  running run;
  start(&run, failing_store(), NULL);
  int fd = connect_to(run.port);
  /* not read yet: the socket buffers fill and the server waits */
  const char *req = GET("/nar/slow.nar");
  send_all(fd, req, strlen(req));
  usleep(100000);
  assert_int_equal(narcache_server_stop(run.server), 0);
  usleep(100000);
  assert_int_equal(atomic_load(&run.stopped), 0); /* still sending */
  size_t len = 0;
  char *buf = read_to_close(fd, &len);
  close(fd);
  response r;
  assert_int_equal(parse_response(&r, buf, len, 0), 0);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 32u << 20);
  assert_int_equal(r.total, len); /* then the server closed the connection */
  free(buf);
  pthread_join(run.thread, NULL);
  assert_int_equal(atomic_load(&run.stopped), 1);
  narcache_server_free(run.server);
  narcache_store_free(run.store);
}

/* ------------------------------------------------------------------ */
/* Out of file descriptors                                             */
/* ------------------------------------------------------------------ */

static long cpu_ticks(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  char buf[1024];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  long utime = 0, stime = 0;
  /* fields after the name: state is 3rd; utime 14th, stime 15th */
  if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime, &stime) != 2)
    return -1;
  return utime + stime;
}

/* With RLIMIT_NOFILE 128 and 1000 connection attempts, the server keeps
 * answering a client that already holds a connection, does not spin, and
 * accepts again once the pressure is gone. */
static void test_fd_exhaustion(void **state) {
  (void)state;
  int ready[2];
  assert_int_equal(pipe(ready), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* A fresh process (exec): the server must not start its threads in
     * a fork of this multi-threaded one. */
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    close(ready[0]);
    char fd_arg[16];
    snprintf(fd_arg, sizeof fd_arg, "%d", ready[1]);
    execl("/proc/self/exe", "test_server", "--serve-with-128-fds", fd_arg, (char *)NULL);
    _exit(5);
  }
  close(ready[1]);
  int port = 0;
  assert_int_equal(read(ready[0], &port, sizeof port), sizeof port);
  close(ready[0]);
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);

  int keeper = connect_to(port); /* accepted before the storm */
  const char *req = GET("/" REF_HASH ".narinfo");
  usleep(100000);
  enum { STORM = 1000 };
  int *storm = malloc(STORM * sizeof *storm);
  int opened = 0;
  for (int i = 0; i < STORM; i++) {
    storm[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (storm[i] < 0)
      break;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(storm[i], (struct sockaddr *)&a, sizeof a); /* EINPROGRESS is fine */
    opened++;
  }
  assert_true(opened > 500);
  usleep(300000);
  long before = cpu_ticks(pid);
  /* the held connection is served, several times, under the storm */
  for (int i = 0; i < 5; i++) {
    send_all(keeper, req, strlen(req));
    char got[4096];
    size_t n = 0;
    response r;
    while (parse_response(&r, got, n, 0) != 0) {
      ssize_t k = recv(keeper, got + n, sizeof got - n, 0);
      if (k <= 0)
        fail_msg("the held connection got no answer under fd exhaustion");
      n += (size_t)k;
    }
    assert_int_equal(r.status, 200);
  }
  usleep(1000000);
  long after = cpu_ticks(pid);
  long hz = sysconf(_SC_CLK_TCK);
  /* no busy loop: well under half a CPU over the ~1 s window */
  if (after - before > hz / 2)
    fail_msg("server used %ld ticks of CPU in ~1 s under fd exhaustion (spinning?)", after - before);
  for (int i = 0; i < opened; i++)
    close(storm[i]);
  free(storm);
  close(keeper);
  usleep(300000);
  /* accepts again */
  response r;
  char *buf = NULL;
  for (int attempt = 0; attempt < 30; attempt++) {
    int fd = connect_to(port);
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const char *q = GET_CLOSE("/nix-cache-info");
    send_all(fd, q, strlen(q));
    size_t len = 0;
    buf = read_to_close(fd, &len);
    close(fd);
    if (parse_response(&r, buf, len, 0) == 0 && r.status == 200)
      break;
    free(buf);
    buf = NULL;
    usleep(200000);
  }
  assert_non_null(buf);
  assert_int_equal(r.status, 200);
  free(buf);
  kill(pid, SIGTERM);
  int status = 0;
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
}

/* The server process of test_fd_exhaustion: RLIMIT_NOFILE 128, the port
 * written to fd `argv[2]`, then serving until killed. */
static int serve_with_128_fds(const char *fd_arg) {
  struct rlimit rl = {128, 128};
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
    return 3;
  running run;
  start(&run, golden_store(), NULL);
  int fd = atoi(fd_arg);
  if (write(fd, &run.port, sizeof run.port) != sizeof run.port)
    return 4;
  close(fd);
  pthread_join(run.thread, NULL);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 3 && strcmp(argv[1], "--serve-with-128-fds") == 0)
    return serve_with_128_fds(argv[2]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_objects_keepalive_pipelining),
      cmocka_unit_test(test_pipelined_beyond_buffer),
      cmocka_unit_test(test_ranges),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_timeouts),
      cmocka_unit_test(test_store_errors),
      cmocka_unit_test(test_store_timeout),
      cmocka_unit_test(test_generated_nar),
      cmocka_unit_test(test_slow_stream_source),
      cmocka_unit_test(test_slow_wait_segments),
      cmocka_unit_test(test_uploads),
      cmocka_unit_test(test_upload_limits),
      cmocka_unit_test(test_authorize_hook),
      cmocka_unit_test(test_health),
      cmocka_unit_test(test_memory_cache),
      cmocka_unit_test(test_cache_info_overrides),
      cmocka_unit_test(test_reset_mid_body_without_sigpipe_handler),
      cmocka_unit_test(test_listeners),
      cmocka_unit_test(test_graceful_stop),
      cmocka_unit_test(test_fd_exhaustion),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
