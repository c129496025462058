/* The s3 store's own HTTP/1.1 GETs (libnarcache/s3_stream.c): the response
 * head parser on well-formed and hostile heads, and the connection against
 * a scripted peer on 127.0.0.1 (a thread of this test): informational
 * heads, body bytes that come with the head, a peer that hangs up, one
 * that never answers, one whose head never ends; a session token sent
 * signed with requests and presigned URLs. The happy path against a
 * real gateway is the s3 test's. Internal API: links the static library. */
#define _GNU_SOURCE
#include "s3_stream_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h> /* after the headers it needs */

#include "narcache.h"

/* ---- the parser ------------------------------------------------------------ */

static int parse(const char *text, long *status, narcache__s3_head *head) {
  return narcache__s3_response_head_parse(text, strlen(text), status, head);
}

static void test_gateway_heads(void **state) {
  (void)state;
  long status;
  narcache__s3_head h;
  assert_int_equal(parse("HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\n"
                         "Content-Range: bytes 100-199/268435456\r\nAccept-Ranges: bytes\r\n"
                         "ETag: \"6f395e1be507eff9f4937ba3e37275fc\"\r\n"
                         "Content-Type: binary/octet-stream\r\nConnection: close\r\n\r\n",
                         &status, &h),
                   0);
  assert_int_equal(status, 206);
  assert_int_equal(h.content_length, 100);
  assert_string_equal(h.content_range, "bytes 100-199/268435456");
  assert_string_equal(h.etag, "\"6f395e1be507eff9f4937ba3e37275fc\"");
  /* no reason phrase, names in any case, spaces and tabs around values */
  assert_int_equal(parse("HTTP/1.0 503\r\ncontent-LENGTH:\t7 \r\nretry-after: 12\r\n\r\n", &status,
                         &h),
                   0);
  assert_int_equal(status, 503);
  assert_int_equal(h.content_length, 7);
  assert_int_equal(h.retry_after_s, 12);
  /* a date in Retry-After is not a number of seconds */
  assert_int_equal(parse("HTTP/1.1 503 Slow Down\r\nRetry-After: Fri, 27 Nov 2026 20:11:35 GMT\r\n"
                         "Content-Length: 0\r\n\r\n",
                         &status, &h),
                   0);
  assert_int_equal(h.retry_after_s, 0);
  /* no length at all (the caller decides), and the same length twice */
  assert_int_equal(parse("HTTP/1.1 200 OK\r\n\r\n", &status, &h), 0);
  assert_true(h.content_length == UINT64_MAX);
  assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                         &status, &h),
                   0);
  assert_int_equal(h.content_length, 5);
  assert_int_equal(parse("HTTP/1.1 100 Continue\r\n\r\n", &status, &h), 0);
  assert_int_equal(status, 100);
}

static void test_hostile_heads(void **state) {
  (void)state;
  static const char *const bad[] = {
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", /* no blank line */
      "HTTP/1.1 200 OK\nContent-Length: 5\n\n",   /* bare LF */
      "HTTP/1.1 200 OK\r\nContent-Length: 5\nX: y\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
      "HTTP/2 200 OK\r\n\r\n",
      "HTTP/1.1 20 OK\r\n\r\n",
      "HTTP/1.1 2000 OK\r\n\r\n",
      "HTTP/1.1 099 Low\r\n\r\n",
      "HTTP/1.1  200 OK\r\n\r\n",
      "http/1.1 200 OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\n folded: line\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX: y\r\n\tcontinued\r\n\r\n",
      "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
      "HTTP/1.1 200 OK\r\n: nameless\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n", /* space before the colon */
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX: \x7f\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX: \x01\r\n\r\n",
      "HTTP/1.1 200 OK\r\n\r\n\r\n", /* a blank line before the end */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    long status = -1;
    narcache__s3_head h;
    int rc = parse(bad[i], &status, &h);
    if (rc != NARCACHE_EIO)
      fail_msg("accepted (%d): %s", rc, bad[i]);
    assert_int_equal(status, 0);
    assert_true(h.content_length == UINT64_MAX);
  }
  long status;
  narcache__s3_head h;
  /* a NUL inside: the length says where the head ends, not the NUL */
  static const char nul[] = "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n";
  assert_int_equal(narcache__s3_response_head_parse(nul, sizeof nul - 1, &status, &h),
                   NARCACHE_EIO);
  /* a body not delimited by its length is refused as such */
  assert_int_equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &status, &h),
                   NARCACHE_ENOTSUP);
  assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                         &status, &h),
                   NARCACHE_ENOTSUP);
}

/* ---- the connection against a scripted peer ----------------------------------- */

typedef struct peer {
  int listener;
  int port;
  const char *const *replies; /* sent one by one, NULL-terminated */
  int hang;                   /* then keep the connection open, silent */
  char request[4096];         /* what the client sent */
  pthread_t thread;
} peer;

static void *peer_main(void *arg) {
  peer *p = arg;
  int fd = accept(p->listener, NULL, NULL);
  if (fd < 0)
    return NULL;
  size_t len = 0;
  while (len < sizeof p->request - 1 && strstr(p->request, "\r\n\r\n") == NULL) {
    ssize_t n = recv(fd, p->request + len, sizeof p->request - 1 - len, 0);
    if (n <= 0)
      break;
    len += (size_t)n;
    p->request[len] = '\0';
  }
  for (const char *const *r = p->replies; r != NULL && *r != NULL; r++) {
    if (send(fd, *r, strlen(*r), MSG_NOSIGNAL) < 0)
      break;
    usleep(20000); /* separate pieces on the wire */
  }
  if (p->hang) {
    char c;
    (void)recv(fd, &c, 1, 0); /* until the client gives up */
  }
  close(fd);
  return NULL;
}

static void peer_start(peer *p, const char *const *replies, int hang) {
  memset(p, 0, sizeof *p);
  p->replies = replies;
  p->hang = hang;
  p->listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(p->listener >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof a;
  assert_int_equal(bind(p->listener, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(p->listener, 1), 0);
  assert_int_equal(getsockname(p->listener, (struct sockaddr *)&a, &l), 0);
  p->port = ntohs(a.sin_port);
  assert_int_equal(pthread_create(&p->thread, NULL, peer_main, p), 0);
}

static void peer_stop(peer *p) {
  pthread_join(p->thread, NULL);
  close(p->listener);
}

static const char request[] = "GET /b/nar/x.nar HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";

static int get(peer *p, narcache__s3_stream **st, uint32_t wait_ms) {
  return narcache__s3_stream_get(st, "127.0.0.1", p->port, request, sizeof request - 1, 2000,
                                 narcache__s3_now_ms() + wait_ms);
}

static void test_body_after_informational_head(void **state) {
  (void)state;
  static const char *const replies[] = {
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-",
      "Length: 10\r\nETag: \"e\"\r\n\r\n0123", "456789", NULL};
  peer p;
  peer_start(&p, replies, 0);
  narcache__s3_stream *st = NULL;
  assert_int_equal(get(&p, &st, 5000), 0);
  assert_int_equal(st->status, 200);
  assert_int_equal(st->head.content_length, 10);
  assert_string_equal(st->head.etag, "\"e\"");
  const void *data = NULL;
  assert_int_equal(narcache__s3_stream_buffered(st, &data), 4);
  assert_memory_equal(data, "0123", 4);
  narcache__s3_stream_drop(st, 1); /* used in place */
  char buf[64];
  size_t got = 0, total = 0;
  assert_int_equal(narcache__s3_stream_read(st, buf, sizeof buf, &got, 2000), 0);
  assert_int_equal(got, 3);
  assert_memory_equal(buf, "123", 3);
  while (narcache__s3_stream_read(st, buf + total, sizeof buf - total, &got, 2000) == 0 && got > 0)
    total += got;
  assert_int_equal(total, 6);
  assert_memory_equal(buf, "456789", 6);
  narcache__s3_stream_free(st);
  peer_stop(&p);
  assert_string_equal(p.request, request); /* sent as given */
}

static void test_peer_hangs_up_before_answering(void **state) {
  (void)state;
  static const char *const replies[] = {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n", NULL};
  peer p;
  peer_start(&p, replies, 0);
  narcache__s3_stream *st = NULL;
  assert_int_equal(get(&p, &st, 5000), NARCACHE_EUNAVAIL);
  assert_null(st);
  peer_stop(&p);
}

static void test_silent_peer_times_out(void **state) {
  (void)state;
  peer p;
  peer_start(&p, NULL, 1);
  narcache__s3_stream *st = NULL;
  uint64_t t0 = narcache__s3_now_ms();
  assert_int_equal(get(&p, &st, 300), NARCACHE_EUNAVAIL);
  uint64_t took = narcache__s3_now_ms() - t0;
  assert_true(took >= 290 && took < 5000);
  assert_null(st);
  peer_stop(&p); /* the peer sees our close */
}

static void test_endless_head_is_refused(void **state) {
  (void)state;
  static char line[2000];
  memset(line, 'a', sizeof line - 3);
  memcpy(line, "X-Pad: ", 7);
  memcpy(line + sizeof line - 3, "\r\n", 3);
  const char *replies[20] = {"HTTP/1.1 200 OK\r\n"};
  for (int i = 1; i < 19; i++)
    replies[i] = line; /* 36 KB of fields: more than any S3 head */
  peer p;
  peer_start(&p, replies, 1);
  narcache__s3_stream *st = NULL;
  assert_int_equal(get(&p, &st, 10000), NARCACHE_EIO);
  assert_null(st);
  peer_stop(&p);
}

static void test_stalled_body_and_unreachable_host(void **state) {
  (void)state;
  static const char *const replies[] = {"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", NULL};
  peer p;
  peer_start(&p, replies, 1);
  narcache__s3_stream *st = NULL;
  assert_int_equal(get(&p, &st, 5000), 0);
  char buf[16];
  size_t got = 1;
  assert_int_equal(narcache__s3_stream_read(st, buf, sizeof buf, &got, 200), NARCACHE_EUNAVAIL);
  assert_int_equal(got, 0);
  narcache__s3_stream_free(st);
  peer_stop(&p);
  /* nobody listens there any more */
  assert_int_equal(narcache__s3_stream_get(&st, "127.0.0.1", p.port, request, sizeof request - 1,
                                           2000, narcache__s3_now_ms() + 2000),
                   NARCACHE_EUNAVAIL);
  assert_null(st);
}

/* Names are not looked up on this path (a lookup can block past every
 * timeout): only numeric addresses and ports in range are taken. */
static void test_only_numeric_addresses(void **state) {
  (void)state;
  static const char *const names[] = {"localhost", "s3.example.org", "[::1]", "127.0.0.1:80",
                                      ""};
  narcache__s3_stream *st = NULL;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    assert_int_equal(narcache__s3_stream_get(&st, names[i], 80, request, sizeof request - 1, 2000,
                                             narcache__s3_now_ms() + 2000),
                     NARCACHE_EINVAL);
    assert_null(st);
  }
  static const long bad_ports[] = {0, -1, 65536};
  for (size_t i = 0; i < sizeof bad_ports / sizeof bad_ports[0]; i++)
    assert_int_equal(narcache__s3_stream_get(&st, "127.0.0.1", bad_ports[i], request,
                                             sizeof request - 1, 2000,
                                             narcache__s3_now_ms() + 2000),
                     NARCACHE_EINVAL);
  /* IPv6 literals are numeric too: ::1 refuses (no listener on port 1) or
   * is absent on this machine, never a lookup */
  int rc = narcache__s3_stream_get(&st, "::1", 1, request, sizeof request - 1, 2000,
                                   narcache__s3_now_ms() + 2000);
  assert_true(rc == NARCACHE_EUNAVAIL);
  assert_null(st);
}

/* A session token (from the options, or AWS_SESSION_TOKEN with the keys
 * from the environment) goes with every request, signed, and into
 * presigned URLs. The gateway of the s3 test ignores tokens it did not
 * issue, so the request is looked at here, as the scripted peer got it. */
static void probe_sends_token(const narcache_s3_options *o, const char *token) {
  static const char *const replies[] = {
      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", NULL};
  peer p;
  peer_start(&p, replies, 0);
  char endpoint[64], error[256] = "";
  snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", p.port);
  narcache_s3_options opts = *o;
  opts.version = NARCACHE_S3_OPTIONS_VERSION;
  opts.bucket = "bkt";
  opts.endpoint = endpoint;
  opts.max_attempts = 1;
  opts.flags = NARCACHE_STORE_S3_REDIRECT;
  opts.error = error;
  opts.error_size = sizeof error;
  narcache_store *s = NULL;
  if (narcache_store_s3_new(&s, &opts) != 0)
    fail_msg("narcache_store_s3_new: %s", error);
  char message[256];
  int rc = narcache_store_s3_check(s, message, sizeof message);
  if (rc != 0) /* a HEAD of the bucket */
    fail_msg("check: %s (%s)", narcache_strerror(rc), message);
  char *url = NULL;
  assert_int_equal(narcache_store_redirect(&url, s, NARCACHE_OBJECT_NAR, "x.nar", 5), 1);
  narcache_store_free(s);
  peer_stop(&p);
  char header[160], query[160];
  snprintf(header, sizeof header, "\r\nx-amz-security-token: %s\r\n", token);
  snprintf(query, sizeof query, "&X-Amz-Security-Token=%s&", token);
  if (strcasestr(p.request, header) == NULL)
    fail_msg("no %s in the request:\n%s", token, p.request);
  const char *signed_headers = strstr(p.request, "SignedHeaders=");
  assert_non_null(signed_headers);
  assert_non_null(strstr(signed_headers, "x-amz-security-token"));
  if (strstr(url, query) == NULL)
    fail_msg("no %s in the presigned URL %s", token, url);
  narcache_free(url);
}

static void test_session_token_is_sent(void **state) {
  (void)state;
  narcache_s3_options by_options = {.access_key = "AKIDEXAMPLE", .secret_key = "secret",
                                    .session_token = "token-from-options"};
  probe_sends_token(&by_options, "token-from-options");
  setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "secret", 1);
  setenv("AWS_SESSION_TOKEN", "token-from-environment", 1);
  narcache_s3_options by_environment = {0};
  probe_sends_token(&by_environment, "token-from-environment");
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  unsetenv("AWS_SESSION_TOKEN");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gateway_heads),
      cmocka_unit_test(test_hostile_heads),
      cmocka_unit_test(test_body_after_informational_head),
      cmocka_unit_test(test_peer_hangs_up_before_answering),
      cmocka_unit_test(test_silent_peer_times_out),
      cmocka_unit_test(test_endless_head_is_refused),
      cmocka_unit_test(test_stalled_body_and_unreachable_host),
      cmocka_unit_test(test_only_numeric_addresses),
      cmocka_unit_test(test_session_token_is_sent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
