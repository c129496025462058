/* narcache-load's HTTP/1.1 response parser (examples/narcache-load/
 * response.c): framing by Content-Length, chunked and close; interim
 * responses; bodyless statuses; refusals of broken framing. Every case is
 * fed whole and one byte at a time, with the same outcome. */
#define _GNU_SOURCE
#include "load.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

typedef struct outcome {
  response_state state;
  int status;
  int keep_alive;
  uint64_t body_bytes;
  size_t consumed; /* bytes taken before RESP_DONE / RESP_ERROR */
  char body[256];
  size_t body_len;
} outcome;

/* Feed `text` in pieces of `step` bytes (0: all at once), then EOF if
 * `eof`. */
static outcome feed(const char *text, size_t len, size_t step, int head_only, int eof) {
  response r = {0};
  assert_int_equal(response_init(&r, head_only, 256), 0);
  outcome o = {0};
  size_t pos = 0;
  while (pos < len && r.state != RESP_DONE && r.state != RESP_ERROR) {
    size_t n = step == 0 || len - pos < step ? len - pos : step;
    pos += response_feed(&r, text + pos, n);
  }
  if (eof)
    response_eof(&r);
  o.state = r.state;
  o.status = r.status;
  o.keep_alive = r.keep_alive;
  o.body_bytes = r.body_bytes;
  o.consumed = pos;
  o.body_len = r.body_len;
  memcpy(o.body, r.body, r.body_len);
  response_fini(&r);
  return o;
}

/* The outcome, checked to be the same whole and byte by byte. */
static outcome both_ways(const char *text, int head_only, int eof) {
  size_t len = strlen(text);
  outcome whole = feed(text, len, 0, head_only, eof);
  outcome bytewise = feed(text, len, 1, head_only, eof);
  assert_int_equal(whole.state, bytewise.state);
  assert_int_equal(whole.status, bytewise.status);
  assert_int_equal(whole.body_bytes, bytewise.body_bytes);
  assert_int_equal(whole.consumed, bytewise.consumed);
  assert_int_equal(whole.body_len, bytewise.body_len);
  assert_memory_equal(whole.body, bytewise.body, whole.body_len);
  return whole;
}

static void test_content_length(void **state) {
  (void)state;
  const char *text = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhelloNEXT";
  outcome o = both_ways(text, 0, 0);
  assert_int_equal(o.state, RESP_DONE);
  assert_int_equal(o.status, 200);
  assert_true(o.keep_alive);
  assert_int_equal(o.body_bytes, 5);
  assert_memory_equal(o.body, "hello", 5);
  assert_int_equal(o.consumed, strlen(text) - 4); /* the next response is left */
}

static void test_chunked(void **state) {
  (void)state;
  outcome o = both_ways("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5;ext=1\r\nhello\r\nA\r\n 0123456\r\n\r\n0\r\nTrailer: t\r\n\r\n",
                        0, 0);
  assert_int_equal(o.state, RESP_DONE);
  assert_int_equal(o.body_bytes, 15);
  assert_memory_equal(o.body, "hello 0123456\r\n", 15);
}

static void test_close_delimited(void **state) {
  (void)state;
  outcome o = both_ways("HTTP/1.1 200 OK\r\n\r\nuntil the end", 0, 1);
  assert_int_equal(o.state, RESP_DONE);
  assert_false(o.keep_alive);
  assert_int_equal(o.body_bytes, 13);
  o = both_ways("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 0, 1);
  assert_int_equal(o.state, RESP_BODY_LENGTH); /* EOF does not complete it */
}

static void test_no_body(void **state) {
  (void)state;
  outcome o = both_ways("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 1, 0);
  assert_int_equal(o.state, RESP_DONE); /* HEAD */
  assert_int_equal(o.body_bytes, 0);
  o = both_ways("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", 0, 0);
  assert_int_equal(o.state, RESP_DONE);
  o = both_ways("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n",
                0, 0);
  assert_int_equal(o.state, RESP_DONE);
  assert_int_equal(o.status, 201);
  assert_false(o.keep_alive);
  o = both_ways("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0);
  assert_false(o.keep_alive);
}

static void test_refusals(void **state) {
  (void)state;
  static const char *const bad[] = {
      "HTTP/2 200 OK\r\n\r\n",
      "HTTP/1.1 20 OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
      "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
      "HTTP/1.1 200 OK\r\n: x\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    outcome o = both_ways(bad[i], 0, 0);
    if (o.state != RESP_ERROR)
      fail_msg("accepted: %s", bad[i]);
  }
  /* a head that never ends is refused at 16 KiB, not buffered for ever */
  size_t len = 20000;
  char *big = malloc(len + 1);
  memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
  memset(big + 20, 'a', len - 20);
  big[len] = '\0';
  outcome o = both_ways(big, 0, 0);
  assert_int_equal(o.state, RESP_ERROR);
  assert_true(o.consumed <= 16384);
  free(big);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_content_length), cmocka_unit_test(test_chunked),
      cmocka_unit_test(test_close_delimited), cmocka_unit_test(test_no_body),
      cmocka_unit_test(test_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
