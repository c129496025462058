/* The s3 store's HTTP/1.1 response head parser (the GETs it answers on
 * connections of its own, s3_stream.c) on arbitrary bytes. Accepted, a
 * head is well formed: "HTTP/1.x NNN" with the status it reports, lines
 * ending in CRLF only, no control bytes in them, the blank line last, and
 * fields that fit their buffers; a Content-Length it reports appears in
 * the text. Refused, nothing of it is left in the outputs. Parsing twice
 * gives the same. */
#define _GNU_SOURCE /* strcasestr */
#include "s3_stream_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "narcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "fuzz_s3_response: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                      \
    }                                                                               \
  } while (0)

static int fits(const char *field, size_t size) { return memchr(field, '\0', size) != NULL; }

static void check_well_formed(const char *text, size_t len, long status) {
  CHECK(len >= 16 && memcmp(text, "HTTP/1.", 7) == 0);
  CHECK(memcmp(text + len - 4, "\r\n\r\n", 4) == 0);
  CHECK(status >= 100 && status <= 999);
  CHECK(status == (text[9] - '0') * 100 + (text[10] - '0') * 10 + (text[11] - '0'));
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c == '\r') {
      CHECK(i + 1 < len && text[i + 1] == '\n');
    } else if (c == '\n') {
      CHECK(i > 0 && text[i - 1] == '\r');
    } else {
      CHECK(c >= 0x20 || c == '\t');
      CHECK(c != 0x7f);
    }
  }
  /* the first blank line is the last one */
  const char *blank = strstr(text, "\r\n\r\n");
  CHECK(blank == text + len - 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 2 * NARCACHE__S3_STREAM_HEAD_MAX)
    return 0;
  char *text = malloc(size + 1); /* NUL-terminated for the checks' strstr */
  if (text == NULL)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  long status = -1;
  narcache__s3_head head;
  int rc = narcache__s3_response_head_parse(text, size, &status, &head);
  CHECK(rc == 0 || rc == NARCACHE_EIO || rc == NARCACHE_ENOTSUP);
  CHECK(fits(head.etag, sizeof head.etag) && fits(head.content_range, sizeof head.content_range) &&
        fits(head.content_encoding, sizeof head.content_encoding));
  if (rc < 0) {
    CHECK(status == 0 && head.content_length == UINT64_MAX && head.etag[0] == '\0' &&
          head.retry_after_s == 0);
    if (rc == NARCACHE_ENOTSUP) /* well formed, but the body is not length-delimited */
      CHECK(strcasestr(text, "transfer-encoding:") != NULL);
  } else {
    CHECK(memchr(text, '\0', size) == NULL); /* NUL is a control byte */
    check_well_formed(text, size, status);
    if (head.content_length != UINT64_MAX)
      CHECK(strcasestr(text, "content-length:") != NULL);
  }
  long status2 = -1;
  narcache__s3_head head2;
  CHECK(narcache__s3_response_head_parse(text, size, &status2, &head2) == rc);
  CHECK(status2 == status && memcmp(&head, &head2, sizeof head) == 0);
  free(text);
  return 0;
}
