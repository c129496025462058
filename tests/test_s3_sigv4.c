/* AWS Signature Version 4 (libnarcache/s3_internal.h) against AWS's
 * published vectors:
 *  - the signing test suite (tests/data/sigv4/aws/, copied by import.py):
 *    every case is signed in header form and in query (presigned) form and
 *    must give exactly the published canonical request, string to sign and
 *    signature;
 *  - the S3 examples of AWS's "Signature Calculations for the Authorization
 *    Header" and "Query String Authentication" pages (S3 signs the path as
 *    given, with x-amz-content-sha256).
 * The signer is internal, so this test links the static library. */
#include "s3_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it needs */
#include <sodium.h>

#include "narcache/common.h"
#include "test_support.h"

/* ---- helpers -------------------------------------------------------------------- */

static void sha256_hex(char out[65], const void *data, size_t len) {
  uint8_t d[32];
  crypto_hash_sha256(d, data, len);
  for (size_t i = 0; i < 32; i++)
    snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* The string value of "key": "..." in the suite's flat context.json (no
 * escapes occur there); NULL when absent. Malloc'd, NUL-terminated. */
static char *json_string(const char *json, const char *key) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\"", key);
  const char *p = strstr(json, pattern);
  if (p == NULL)
    return NULL;
  p = strchr(p + strlen(pattern), ':');
  assert_non_null(p);
  p = strchr(p, '"');
  assert_non_null(p);
  const char *end = strchr(p + 1, '"');
  assert_non_null(end);
  size_t len = (size_t)(end - p - 1);
  char *z = malloc(len + 1);
  assert_non_null(z);
  memcpy(z, p + 1, len);
  z[len] = '\0';
  return z;
}

static int json_true(const char *json, const char *key) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\"", key);
  const char *p = strstr(json, pattern);
  if (p == NULL)
    return 0;
  p = strchr(p, ':') + 1;
  while (*p == ' ')
    p++;
  return strncmp(p, "true", 4) == 0;
}

static long json_number(const char *json, const char *key) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\"", key);
  const char *p = strstr(json, pattern);
  assert_non_null(p);
  return strtol(strchr(p, ':') + 1, NULL, 10);
}

/* "2015-08-30T12:36:00Z" -> "20150830T123600Z" */
static void amz_date_of(char out[17], const char *iso) {
  size_t n = 0;
  for (const char *p = iso; *p && n < 16; p++)
    if (*p != '-' && *p != ':')
      out[n++] = *p;
  out[n] = '\0';
  assert_int_equal(n, 16);
}

/* A request.txt: request line, headers (a line starting with whitespace
 * continues the previous value), blank line, body. */
typedef struct parsed_request {
  char *text;
  char method[8];
  const char *path;
  size_t path_len;
  const char *query;
  size_t query_len;
  narcache__s3_field headers[16];
  size_t n_headers;
  const char *body;
  size_t body_len;
} parsed_request;

static void parse_request(parsed_request *r, const char *relpath) {
  memset(r, 0, sizeof *r);
  size_t len;
  r->text = test_data_slurp(relpath, &len);
  char *p = r->text, *end = r->text + len;
  char *sp = strchr(p, ' ');
  assert_non_null(sp);
  assert_true((size_t)(sp - p) < sizeof r->method);
  memcpy(r->method, p, (size_t)(sp - p));
  char *target = sp + 1;
  char *line_end = strchr(target, '\n');
  char *target_end = line_end;
  while (target_end > target && memcmp(target_end - 9, " HTTP/1.1", 9) != 0)
    target_end--;
  target_end -= 9;
  char *q = memchr(target, '?', (size_t)(target_end - target));
  r->path = target;
  r->path_len = (size_t)((q ? q : target_end) - target);
  if (q != NULL) {
    r->query = q + 1;
    r->query_len = (size_t)(target_end - q - 1);
  }
  p = line_end + 1;
  while (p < end && *p != '\n') {
    char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL)
      eol = end;
    if (*p == ' ' || *p == '\t') { /* folded: extend the previous value */
      assert_true(r->n_headers > 0);
      narcache__s3_field *h = &r->headers[r->n_headers - 1];
      h->value_len = (size_t)(eol - h->value);
    } else {
      char *colon = memchr(p, ':', (size_t)(eol - p));
      assert_non_null(colon);
      assert_true(r->n_headers < 14);
      r->headers[r->n_headers++] = (narcache__s3_field){p, (size_t)(colon - p), colon + 1,
                                                         (size_t)(eol - colon - 1)};
    }
    p = eol < end ? eol + 1 : end;
  }
  if (p < end) {
    r->body = p + 1;
    r->body_len = (size_t)(end - p - 1);
  }
}

static void add_header(parsed_request *r, const char *name, const char *value) {
  assert_true(r->n_headers < 16);
  r->headers[r->n_headers++] = (narcache__s3_field){name, strlen(name), value, strlen(value)};
}

static void assert_buf_equals_file(const narcache__buf *b, const char *relpath) {
  size_t len;
  char *want = test_data_slurp(relpath, &len);
  if (b->len != len || memcmp(b->data, want, len) != 0) {
    print_error("%s differs:\n--- want\n%s\n--- got\n%.*s\n", relpath, want, (int)b->len,
                b->data ? b->data : "");
    fail();
  }
  free(want);
}

static void assert_text_equals_file(const char *got, const char *relpath) {
  size_t len;
  char *want = test_data_slurp(relpath, &len);
  while (len > 0 && (want[len - 1] == '\n' || want[len - 1] == ' '))
    want[--len] = '\0';
  assert_string_equal(got, want);
  free(want);
}

/* ---- AWS's signing test suite ------------------------------------------------------ */

typedef struct suite_case {
  char *context;
  char *access_key, *secret_key, *token;
  narcache__sigv4_scope scope;
  char payload_hash[65];
  int normalize, sign_body, omit_token;
  long expires;
} suite_case;

static void load_case(suite_case *c, parsed_request *r, const char *name) {
  char path[256];
  memset(c, 0, sizeof *c);
  snprintf(path, sizeof path, "sigv4/aws/%s/context.json", name);
  c->context = test_data_slurp(path, NULL);
  c->access_key = json_string(c->context, "access_key_id");
  c->secret_key = json_string(c->context, "secret_access_key");
  c->token = json_string(c->context, "token");
  char *region = json_string(c->context, "region");
  char *service = json_string(c->context, "service");
  char *timestamp = json_string(c->context, "timestamp");
  c->scope.access_key = c->access_key;
  c->scope.secret_key = c->secret_key;
  c->scope.region = region;
  c->scope.service = service;
  amz_date_of(c->scope.amz_date, timestamp);
  free(timestamp);
  c->normalize = json_true(c->context, "normalize");
  c->sign_body = json_true(c->context, "sign_body");
  c->omit_token = json_true(c->context, "omit_session_token");
  c->expires = json_number(c->context, "expiration_in_seconds");
  snprintf(path, sizeof path, "sigv4/aws/%s/request.txt", name);
  parse_request(r, path);
  sha256_hex(c->payload_hash, r->body ? r->body : "", r->body_len);
}

static void free_case(suite_case *c, parsed_request *r) {
  free(c->context);
  free(c->access_key);
  free(c->secret_key);
  free(c->token);
  free((char *)c->scope.region);
  free((char *)c->scope.service);
  free(r->text);
}

static narcache__sigv4_request request_of(const parsed_request *r, const suite_case *c) {
  return (narcache__sigv4_request){
      .method = r->method,
      .path = r->path,
      .path_len = r->path_len,
      .query = r->query,
      .query_len = r->query_len,
      .headers = r->headers,
      .n_headers = r->n_headers,
      .payload_hash = c->payload_hash,
      .normalize_path = c->normalize,
  };
}

static void check_header_form(const char *name) {
  suite_case c;
  parsed_request r;
  load_case(&c, &r, name);
  add_header(&r, "X-Amz-Date", c.scope.amz_date);
  if (c.token != NULL && !c.omit_token)
    add_header(&r, "X-Amz-Security-Token", c.token);
  if (c.sign_body)
    add_header(&r, "X-Amz-Content-Sha256", c.payload_hash);
  narcache__sigv4_request req = request_of(&r, &c);

  char path[256];
  narcache__buf creq = {0}, names = {0}, sts = {0}, auth = {0};
  assert_int_equal(narcache__sigv4_canonical_request(&creq, &names, &req), 0);
  snprintf(path, sizeof path, "sigv4/aws/%s/header-canonical-request.txt", name);
  assert_buf_equals_file(&creq, path);
  assert_int_equal(narcache__sigv4_string_to_sign(&sts, &c.scope, creq.data, creq.len), 0);
  snprintf(path, sizeof path, "sigv4/aws/%s/header-string-to-sign.txt", name);
  assert_buf_equals_file(&sts, path);

  assert_int_equal(narcache__sigv4_authorization(&auth, &req, &c.scope), 0);
  const char *sig = strstr(auth.data, ", Signature=");
  assert_non_null(sig);
  snprintf(path, sizeof path, "sigv4/aws/%s/header-signature.txt", name);
  assert_text_equals_file(sig + strlen(", Signature="), path);
  char prefix[256];
  snprintf(prefix, sizeof prefix, "AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/%s/aws4_request, SignedHeaders=%s, ",
           c.access_key, c.scope.amz_date, c.scope.region, c.scope.service, names.data);
  assert_int_equal(strncmp(auth.data, prefix, strlen(prefix)), 0);

  narcache__buf_free(&creq);
  narcache__buf_free(&names);
  narcache__buf_free(&sts);
  narcache__buf_free(&auth);
  free_case(&c, &r);
}

static void check_query_form(const char *name) {
  suite_case c;
  parsed_request r;
  load_case(&c, &r, name);
  narcache__sigv4_request req = request_of(&r, &c);

  char path[256];
  narcache__buf query = {0}, creq = {0};
  assert_int_equal(narcache__sigv4_presign(&query, &creq, &req, &c.scope,
                                           c.omit_token ? NULL : c.token, (uint32_t)c.expires),
                   0);
  snprintf(path, sizeof path, "sigv4/aws/%s/query-canonical-request.txt", name);
  assert_buf_equals_file(&creq, path);
  const char *sig = strstr(query.data, "&X-Amz-Signature=");
  assert_non_null(sig);
  snprintf(path, sizeof path, "sigv4/aws/%s/query-signature.txt", name);
  assert_text_equals_file(sig + strlen("&X-Amz-Signature="), path);
  /* The query sent is the canonical query that was signed, then the
   * signature: the third line of the canonical request. */
  const char *line3 = strchr(strchr(creq.data, '\n') + 1, '\n') + 1;
  size_t line3_len = (size_t)(strchr(line3, '\n') - line3);
  assert_int_equal((size_t)(sig - query.data), line3_len);
  assert_memory_equal(query.data, line3, line3_len);

  narcache__buf_free(&query);
  narcache__buf_free(&creq);
  free_case(&c, &r);
}

static void test_aws_suite(void **state) {
  (void)state;
  char *cases = test_data_slurp("sigv4/aws/CASES", NULL);
  size_t n = 0;
  for (char *name = strtok(cases, "\n"); name != NULL; name = strtok(NULL, "\n")) {
    check_header_form(name);
    check_query_form(name);
    n++;
  }
  assert_int_equal(n, 38); /* every case of the suite, none skipped */
  free(cases);
}

/* ---- S3's published examples --------------------------------------------------- */

#define S3_EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static narcache__sigv4_scope s3_example_scope(void) {
  narcache__sigv4_scope s = {
      .access_key = "AKIAIOSFODNN7EXAMPLE",
      .secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
      .region = "us-east-1",
      .service = "s3",
  };
  narcache__sigv4_amz_date(s.amz_date, 1369353600); /* 2013-05-24T00:00:00Z */
  assert_string_equal(s.amz_date, "20130524T000000Z");
  return s;
}

#define FIELD(n, v) {n, sizeof n - 1, v, sizeof v - 1}

static void check_s3_authorization(const char *method, const char *path, const char *query,
                                   const narcache__s3_field *h, size_t n, const char *payload,
                                   const char *want_signed_headers, const char *want_signature) {
  narcache__sigv4_scope s = s3_example_scope();
  narcache__sigv4_request r = {
      .method = method,
      .path = path,
      .path_len = strlen(path),
      .query = query,
      .query_len = query ? strlen(query) : 0,
      .headers = h,
      .n_headers = n,
      .payload_hash = payload,
  };
  narcache__buf auth = {0};
  assert_int_equal(narcache__sigv4_authorization(&auth, &r, &s), 0);
  char want[512];
  snprintf(want, sizeof want,
           "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
           "SignedHeaders=%s, Signature=%s",
           want_signed_headers, want_signature);
  assert_string_equal(auth.data, want);
  narcache__buf_free(&auth);
}

static void test_s3_get_object(void **state) {
  (void)state;
  const narcache__s3_field h[] = {
      FIELD("Host", "examplebucket.s3.amazonaws.com"),
      FIELD("Range", "bytes=0-9"),
      FIELD("x-amz-content-sha256", S3_EMPTY_SHA),
      FIELD("x-amz-date", "20130524T000000Z"),
  };
  check_s3_authorization("GET", "/test.txt", NULL, h, 4, S3_EMPTY_SHA,
                         "host;range;x-amz-content-sha256;x-amz-date",
                         "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

static void test_s3_put_object(void **state) {
  (void)state;
  const char body[] = "Welcome to Amazon S3.";
  char payload[65];
  sha256_hex(payload, body, sizeof body - 1);
  assert_string_equal(payload, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  const narcache__s3_field h[] = {
      FIELD("Host", "examplebucket.s3.amazonaws.com"),
      FIELD("Date", "Fri, 24 May 2013 00:00:00 GMT"),
      FIELD("x-amz-date", "20130524T000000Z"),
      FIELD("x-amz-storage-class", "REDUCED_REDUNDANCY"),
      {"x-amz-content-sha256", 20, payload, 64},
  };
  /* '$' in the key is escaped once: "/test%24file.text". */
  check_s3_authorization("PUT", "/test$file.text", NULL, h, 5, payload,
                         "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                         "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

static void test_s3_bucket_queries(void **state) {
  (void)state;
  const narcache__s3_field h[] = {
      FIELD("Host", "examplebucket.s3.amazonaws.com"),
      FIELD("x-amz-content-sha256", S3_EMPTY_SHA),
      FIELD("x-amz-date", "20130524T000000Z"),
  };
  /* A parameter without a value signs as "lifecycle=". */
  check_s3_authorization("GET", "/", "lifecycle", h, 3, S3_EMPTY_SHA,
                         "host;x-amz-content-sha256;x-amz-date",
                         "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
  check_s3_authorization("GET", "/", "max-keys=2&prefix=J", h, 3, S3_EMPTY_SHA,
                         "host;x-amz-content-sha256;x-amz-date",
                         "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

static void test_s3_presigned_get(void **state) {
  (void)state;
  narcache__sigv4_scope s = s3_example_scope();
  const narcache__s3_field h[] = {FIELD("Host", "examplebucket.s3.amazonaws.com")};
  narcache__sigv4_request r = {
      .method = "GET",
      .path = "/test.txt",
      .path_len = 9,
      .headers = h,
      .n_headers = 1,
      .payload_hash = "UNSIGNED-PAYLOAD",
  };
  narcache__buf q = {0};
  assert_int_equal(narcache__sigv4_presign(&q, NULL, &r, &s, NULL, 86400), 0);
  assert_string_equal(
      q.data, "X-Amz-Algorithm=AWS4-HMAC-SHA256"
              "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
              "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
              "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
  narcache__buf_free(&q);
}

/* ---- edges ------------------------------------------------------------------- */

static void test_escaping_and_limits(void **state) {
  (void)state;
  narcache__buf b = {0};
  const char raw[] = "a b/\xe1\x88\xb4~%+";
  assert_int_equal(narcache__sigv4_uri_encode(&b, raw, sizeof raw - 1, 1), 0);
  assert_string_equal(b.data, "a%20b/%E1%88%B4~%25%2B");
  narcache__buf_free(&b);

  /* Query: escapes decoded then re-encoded, broken escapes kept literal,
   * empty pairs dropped, sorted by name then value. */
  const narcache__s3_field h[] = {FIELD("Host", "h")};
  narcache__sigv4_request r = {.method = "GET", .path = "/k", .path_len = 2,
                               .query = "b=2&&a=%7e&a=%zz&c", .query_len = 18,
                               .headers = h, .n_headers = 1, .payload_hash = "UNSIGNED-PAYLOAD"};
  assert_int_equal(narcache__sigv4_canonical_request(&b, NULL, &r), 0);
  assert_string_equal(b.data, "GET\n/k\na=%25zz&a=~&b=2&c=\nhost:h\n\nhost\nUNSIGNED-PAYLOAD");
  narcache__buf_free(&b);

  /* A secret longer than the limit is refused, not truncated. */
  char *long_secret = malloc(NARCACHE__SIGV4_SECRET_MAX + 2);
  assert_non_null(long_secret);
  memset(long_secret, 'k', NARCACHE__SIGV4_SECRET_MAX + 1);
  long_secret[NARCACHE__SIGV4_SECRET_MAX + 1] = '\0';
  narcache__sigv4_scope s = s3_example_scope();
  s.secret_key = long_secret;
  assert_int_equal(narcache__sigv4_authorization(&b, &r, &s), NARCACHE_EINVAL);
  narcache__buf_free(&b);
  long_secret[NARCACHE__SIGV4_SECRET_MAX] = '\0';
  assert_int_equal(narcache__sigv4_authorization(&b, &r, &s), 0);
  narcache__buf_free(&b);
  free(long_secret);

  r.method = NULL;
  assert_int_equal(narcache__sigv4_canonical_request(&b, NULL, &r), NARCACHE_EINVAL);
  narcache__buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_aws_suite),        cmocka_unit_test(test_s3_get_object),
      cmocka_unit_test(test_s3_put_object),    cmocka_unit_test(test_s3_bucket_queries),
      cmocka_unit_test(test_s3_presigned_get), cmocka_unit_test(test_escaping_and_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
