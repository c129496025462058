/* The s3 store's text inputs on arbitrary bytes (internal APIs, static
 * library). The first byte picks what the rest is:
 *   0  an s3:// URL for narcache__s3_config_init: accepted, it gives a
 *      configuration obeying its own rules (http/https, a host without
 *      spaces or '@', a valid bucket name, a prefix that is empty or ends in
 *      one '/' and starts without one); refused, it says why;
 *   1  an AWS credentials file (read through a memfd), with the profile the
 *      second byte picks: accepted keys are non-empty, single-line, the
 *      access key without '/' or spaces; refused, it says why;
 *   2  a request to sign (path, query, header name, header value separated
 *      by NUL bytes; the second byte: normalise the path, and a method):
 *      a relative path is refused;
 *      the canonical path holds only unreserved bytes, '/' and %XX, and
 *      when normalised no empty, "." or ".." segment; the canonical query
 *      is canonical (canonicalising it again changes nothing); header names
 *      are lower case; the Authorization value and a presigned query end in
 *      a 64-digit lowercase hex signature, and the presigned query is the
 *      third line of the canonical request it signed. */
#define _GNU_SOURCE
#include "s3_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "narcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
  do {                                                                                             \
    if (!(x))                                                                                      \
      abort();                                                                                     \
  } while (0)

static char *cstring(const uint8_t *p, size_t n) {
  char *s = malloc(n + 1);
  CHECK(s != NULL);
  memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

static int bucket_ok(const char *b) {
  size_t n = strlen(b);
  if (n < 3 || n > 63)
    return 0;
  return strspn(b, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") == n;
}

static void check_config_result(int rc, const narcache__s3_config *c, const char *error) {
  CHECK(rc == 0 || rc == NARCACHE_EINVAL || rc == NARCACHE_ENOMEM);
  if (rc == NARCACHE_EINVAL) {
    CHECK(error[0] != '\0');
    return;
  }
  if (rc != 0)
    return;
  CHECK(strcmp(c->scheme, "http") == 0 || strcmp(c->scheme, "https") == 0);
  CHECK(c->host[0] != '\0' && strpbrk(c->host, " @\r\n\t") == NULL);
  CHECK(strcmp(c->redirect_scheme, "http") == 0 || strcmp(c->redirect_scheme, "https") == 0);
  CHECK(bucket_ok(c->bucket));
  size_t p = strlen(c->prefix);
  CHECK(p == 0 || (c->prefix[0] != '/' && c->prefix[p - 1] == '/' &&
                   (p < 2 || c->prefix[p - 2] != '/')));
  CHECK(c->region[0] != '\0');
  CHECK(c->access_key[0] != '\0' && c->secret_key[0] != '\0');
  CHECK(c->part_size >= 5u << 20);
}

static void fuzz_url(const uint8_t *data, size_t size) {
  char *url = cstring(data, size);
  char error[256] = "";
  narcache_s3_options o = {.version = NARCACHE_S3_OPTIONS_VERSION, .url = url,
                           .access_key = "AKIDEXAMPLE", .secret_key = "secret",
                           .error = error, .error_size = sizeof error};
  narcache__s3_config c;
  memset(&c, 0, sizeof c);
  check_config_result(narcache__s3_config_init(&c, &o), &c, error);
  narcache__s3_config_free(&c);
  free(url);
}

static void fuzz_credentials(const uint8_t *data, size_t size) {
  static const char *const profiles[] = {"default", "ci", "a b", ""};
  if (size < 1)
    return;
  const char *profile = profiles[data[0] % 4];
  int fd = memfd_create("credentials", MFD_CLOEXEC);
  CHECK(fd >= 0);
  CHECK(write(fd, data + 1, size - 1) == (ssize_t)(size - 1));
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  char error[256] = "";
  narcache_s3_options o = {.version = NARCACHE_S3_OPTIONS_VERSION, .url = "s3://fuzz-bucket",
                           .credentials_file = path, .profile = profile,
                           .error = error, .error_size = sizeof error};
  narcache__s3_config c;
  memset(&c, 0, sizeof c);
  int rc = narcache__s3_config_init(&c, &o);
  check_config_result(rc, &c, error);
  if (rc == 0) {
    CHECK(strchr(c.access_key, '\n') == NULL && strchr(c.secret_key, '\n') == NULL);
    CHECK(strpbrk(c.access_key, "/ ") == NULL);
  }
  narcache__s3_config_free(&c);
  close(fd);
}

/* The i-th line of `text` (0-based). */
static const char *line_at(const char *text, int i, size_t *len) {
  const char *p = text;
  for (; i > 0; i--) {
    p = strchr(p, '\n');
    CHECK(p != NULL);
    p++;
  }
  const char *nl = strchr(p, '\n');
  *len = nl != NULL ? (size_t)(nl - p) : strlen(p);
  return p;
}

static int hex64_at_end(const char *s) {
  size_t n = strlen(s);
  return n >= 64 && strspn(s + n - 64, "0123456789abcdef") == 64;
}

static void check_canonical_path(const char *p, size_t len, int normalized) {
  CHECK(len >= 1 && p[0] == '/');
  for (size_t i = 0; i < len; i++) {
    char c = p[i];
    int unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                     (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (c == '%') {
      CHECK(i + 2 < len && strchr("0123456789ABCDEF", p[i + 1]) && strchr("0123456789ABCDEF", p[i + 2]));
      i += 2;
    } else {
      CHECK(unreserved || c == '/');
    }
  }
  if (!normalized)
    return;
  /* no empty, "." or ".." segment (a final '/' aside) */
  for (size_t i = 0; i < len; i++) {
    if (p[i] != '/')
      continue;
    size_t j = i + 1;
    while (j < len && p[j] != '/')
      j++;
    size_t seg = j - i - 1;
    if (j == len && seg == 0)
      break; /* the trailing slash */
    CHECK(seg > 0 || len == 1);
    CHECK(!(seg == 1 && p[i + 1] == '.'));
    CHECK(!(seg == 2 && p[i + 1] == '.' && p[i + 2] == '.'));
  }
}

static void fuzz_signing(const uint8_t *data, size_t size) {
  if (size < 1)
    return;
  static const char *const methods[] = {"GET", "PUT", "HEAD", "POST"};
  int normalize = data[0] & 1;
  const char *method = methods[(data[0] >> 1) & 3];
  /* path \0 query \0 header name \0 header value */
  const char *parts[4] = {"", "", "x-fuzz", ""};
  size_t lens[4] = {0, 0, 6, 0};
  char *text = cstring(data + 1, size - 1);
  size_t at = 0, n = size - 1;
  for (int i = 0; i < 4 && at <= n; i++) {
    const char *end = memchr(text + at, '\0', n - at);
    size_t l = end != NULL ? (size_t)(end - (text + at)) : n - at;
    if (i != 2 || l > 0) { /* an empty header name keeps x-fuzz */
      parts[i] = text + at;
      lens[i] = l;
    }
    at += l + 1;
  }
  narcache__s3_field headers[2] = {
      {"Host", 4, "fuzz.example", 12},
      {parts[2], lens[2], parts[3], lens[3]},
  };
  narcache__sigv4_request r = {.method = method,
                               .path = parts[0],
                               .path_len = lens[0],
                               .query = parts[1],
                               .query_len = lens[1],
                               .headers = headers,
                               .n_headers = 2,
                               .payload_hash = "UNSIGNED-PAYLOAD",
                               .normalize_path = normalize};
  narcache__sigv4_scope s = {.access_key = "AKIDEXAMPLE", .secret_key = "secret",
                             .region = "us-east-1", .service = "s3"};
  narcache__sigv4_amz_date(s.amz_date, 1440938160);
  narcache__buf creq = {0}, names = {0}, again = {0}, auth = {0}, pre = {0}, pre_creq = {0};
  int rc = narcache__sigv4_canonical_request(&creq, &names, &r);
  int relative = lens[0] > 0 && parts[0][0] != '/';
  CHECK(rc == (relative ? NARCACHE_EINVAL : 0) || rc == NARCACHE_ENOMEM);
  if (rc == 0) {
    size_t l;
    const char *m = line_at(creq.data, 0, &l);
    CHECK(l == strlen(method) && memcmp(m, method, l) == 0);
    const char *path = line_at(creq.data, 1, &l);
    check_canonical_path(path, l, normalize);
    const char *query = line_at(creq.data, 2, &l);
    /* canonical stays canonical */
    narcache__sigv4_request q = r;
    q.query = query;
    q.query_len = l;
    CHECK(narcache__sigv4_canonical_request(&again, NULL, &q) == 0);
    size_t l2;
    const char *query2 = line_at(again.data, 2, &l2);
    CHECK(l2 == l && memcmp(query, query2, l) == 0);
    for (size_t i = 0; i < names.len; i++)
      CHECK(!(names.data[i] >= 'A' && names.data[i] <= 'Z'));
    CHECK(narcache__sigv4_authorization(&auth, &r, &s) == 0);
    CHECK(hex64_at_end(auth.data));
    CHECK(narcache__sigv4_presign(&pre, &pre_creq, &r, &s, NULL, 3600) == 0);
    CHECK(hex64_at_end(pre.data));
    const char *signed_query = line_at(pre_creq.data, 2, &l);
    /* the signature is appended last (the request's own query may hold
     * anything, even another X-Amz-Signature) */
    static const char tag[] = "&X-Amz-Signature=";
    CHECK(pre.len == l + sizeof tag - 1 + 64);
    CHECK(memcmp(pre.data, signed_query, l) == 0 && memcmp(pre.data + l, tag, sizeof tag - 1) == 0);
  }
  narcache__buf_free(&creq);
  narcache__buf_free(&names);
  narcache__buf_free(&again);
  narcache__buf_free(&auth);
  narcache__buf_free(&pre);
  narcache__buf_free(&pre_creq);
  free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int initialized;
  if (!initialized) {
    /* Credentials come from the options or the file under test only. */
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_PROFILE");
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    initialized = 1;
  }
  if (size < 1 || size > 65536)
    return 0;
  switch (data[0] % 3) {
  case 0: fuzz_url(data + 1, size - 1); break;
  case 1: fuzz_credentials(data + 1, size - 1); break;
  default: fuzz_signing(data + 1, size - 1); break;
  }
  return 0;
}
