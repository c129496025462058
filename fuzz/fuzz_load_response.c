/* narcache-load's HTTP/1.1 response parser (examples/narcache-load/
 * response.c) on arbitrary bytes. Header byte: bit 0 the request was
 * HEAD, bit 7 the connection ends after the bytes (EOF), bits 1-6 a piece
 * size 1..64. The input is fed whole and in pieces of that size: both
 * must end in the same state with the same status, body and bytes
 * consumed. A kept body never exceeds its cap; a response completed by
 * Content-Length has exactly that many body bytes; the parser never takes
 * a byte past the end of a response, nor more than 16 KiB of head. */
#define _GNU_SOURCE
#include "load.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BODY_CAP 64

typedef struct outcome {
  response_state state;
  int status, keep_alive, has_length;
  uint64_t body_bytes, content_length;
  size_t consumed, body_len;
  char body[BODY_CAP];
} outcome;

static void check(int ok) {
  if (!ok)
    abort();
}

static outcome run(const char *text, size_t len, size_t step, int head_only, int eof) {
  response r;
  memset(&r, 0, sizeof r);
  check(response_init(&r, head_only, BODY_CAP) == 0);
  size_t pos = 0;
  while (pos < len && r.state != RESP_DONE && r.state != RESP_ERROR) {
    size_t n = step == 0 || len - pos < step ? len - pos : step;
    size_t used = response_feed(&r, text + pos, n);
    check(used <= n);
    check(used > 0 || r.state == RESP_DONE || r.state == RESP_ERROR);
    pos += used;
  }
  if (eof && r.state != RESP_ERROR)
    response_eof(&r);
  outcome o;
  memset(&o, 0, sizeof o);
  o.state = r.state;
  o.status = r.status;
  o.keep_alive = r.keep_alive;
  o.has_length = r.has_length;
  o.content_length = r.content_length;
  o.body_bytes = r.body_bytes;
  o.consumed = pos;
  o.body_len = r.body_len;
  check(r.body_len <= BODY_CAP && r.body_len <= r.body_bytes);
  memcpy(o.body, r.body, r.body_len);
  response_fini(&r);
  return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  int head_only = data[0] & 1, eof = data[0] >> 7;
  size_t step = (size_t)((data[0] >> 1) & 63) + 1;
  const char *text = (const char *)data + 1;
  size_t len = size - 1;
  outcome whole = run(text, len, 0, head_only, eof);
  outcome pieces = run(text, len, step, head_only, eof);
  check(whole.state == pieces.state && whole.status == pieces.status);
  check(whole.consumed == pieces.consumed && whole.body_bytes == pieces.body_bytes);
  check(whole.body_len == pieces.body_len);
  check(memcmp(whole.body, pieces.body, whole.body_len) == 0);
  if (whole.state == RESP_DONE) {
    check(whole.status >= 200 && whole.status <= 599);
    if (whole.has_length && !head_only && whole.status != 204 && whole.status != 304)
      check(whole.body_bytes == whole.content_length);
    if (head_only || whole.status == 204 || whole.status == 304)
      check(whole.body_bytes == 0);
  }
  if (whole.state == RESP_HEAD)
    check(whole.consumed == len); /* waiting for more: it took everything */
  return 0;
}
