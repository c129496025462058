/* Access tokens (auth.h): the token file's grammar and its errors, the
 * check (right scope, right name, nothing for near misses), the
 * Authorization header forms Nix and other clients send. */
#define _GNU_SOURCE
#include <narcache.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#define TOKEN_A "6b1f0c0e5d0a4e3c9a7f21d4c8e2b9a1"
#define TOKEN_B "0f9e8d7c6b5a49382716a5b4c3d2e1f0"

static narcache_tokens *parse_ok(const char *text) {
  narcache_tokens *t = NULL;
  char err[200] = "";
  int rc = narcache_tokens_parse(&t, text, strlen(text), err, sizeof err);
  if (rc != 0)
    fail_msg("parse failed (%d): %s", rc, err);
  return t;
}

static void test_parse_and_check(void **state) {
  (void)state;
  narcache_tokens *t = parse_ok("# NAME SCOPE TOKEN\n"
                                "\n"
                                "ci-main\twrite  " TOKEN_A "   # the CI runner\r\n"
                                "   laptop read " TOKEN_B "\n"
                                "# a comment at the end, no newline");
  assert_int_equal(narcache_tokens_count(t), 2);
  const char *name = NULL;
  assert_int_equal(narcache_tokens_check(t, TOKEN_A, strlen(TOKEN_A), &name), NARCACHE_SCOPE_WRITE);
  assert_string_equal(name, "ci-main");
  assert_int_equal(narcache_tokens_check(t, TOKEN_B, strlen(TOKEN_B), &name), NARCACHE_SCOPE_READ);
  assert_string_equal(name, "laptop");
  /* near misses: a prefix, one more character, one changed character,
   * empty, the name instead of the token */
  const char *misses[] = {"6b1f0c0e5d0a4e3c9a7f21d4c8e2b9a", TOKEN_A "x",
                          "6b1f0c0e5d0a4e3c9a7f21d4c8e2b9a2", "", "ci-main"};
  for (size_t i = 0; i < sizeof misses / sizeof misses[0]; i++) {
    name = "unchanged?";
    assert_int_equal(narcache_tokens_check(t, misses[i], strlen(misses[i]), &name),
                     NARCACHE_SCOPE_NONE);
    assert_null(name);
  }
  narcache_tokens_free(t);

  /* an empty file is a valid table that grants nothing */
  t = parse_ok("");
  assert_int_equal(narcache_tokens_count(t), 0);
  assert_int_equal(narcache_tokens_check(t, TOKEN_A, strlen(TOKEN_A), NULL), NARCACHE_SCOPE_NONE);
  narcache_tokens_free(t);
}

static void test_parse_errors(void **state) {
  (void)state;
  static const struct {
    const char *text;
    const char *message; /* a part of the error */
  } rows[] = {
      {"a write\n", "line 1: expected NAME SCOPE TOKEN"},
      {"a write " TOKEN_A " extra\n", "line 1: expected"},
      {"\n\na admin " TOKEN_A "\n", "line 3: scope must be"},
      {"a write short\n", "line 1: a token has 16 to 256"},
      {"a/b write " TOKEN_A "\n", "line 1: name may only"},
      {"a write " TOKEN_A "\nb read " TOKEN_A "\n", "line 2: the same token as 'a'"},
      {"a write " TOKEN_A "\na read " TOKEN_B "\n", "line 2: name 'a' used twice"},
      {"a write 6b1f0c0e5d0a4e3c\x01" "9a7f21\n", "line 1: a token is printable ASCII"},
      {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa write " TOKEN_A,
       "line 1: name longer than 64"},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    narcache_tokens *t = (narcache_tokens *)&t;
    char err[200] = "";
    assert_int_equal(narcache_tokens_parse(&t, rows[i].text, strlen(rows[i].text), err, sizeof err),
                     NARCACHE_EINVAL);
    assert_null(t);
    if (strstr(err, rows[i].message) == NULL)
      fail_msg("row %zu: error '%s' lacks '%s'", i, err, rows[i].message);
  }
  /* a NUL inside a line */
  narcache_tokens *t = NULL;
  char err[200] = "";
  const char nul[] = "a write " TOKEN_A "\0\n";
  assert_int_equal(narcache_tokens_parse(&t, nul, sizeof nul - 1, err, sizeof err), NARCACHE_EINVAL);
  assert_non_null(strstr(err, "line 1: NUL"));
  /* too large */
  size_t big = NARCACHE_TOKENS_MAX_BYTES + 1;
  char *text = malloc(big);
  memset(text, '#', big);
  assert_int_equal(narcache_tokens_parse(&t, text, big, err, sizeof err), NARCACHE_ELIMIT);
  free(text);
}

static void test_load(void **state) {
  (void)state;
  char path[] = "/tmp/narcache-tokens-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  const char *text = "ci write " TOKEN_A "\n";
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  narcache_tokens *t = NULL;
  char err[300] = "";
  assert_int_equal(narcache_tokens_load(&t, path, err, sizeof err), 0);
  assert_int_equal(narcache_tokens_check(t, TOKEN_A, strlen(TOKEN_A), NULL), NARCACHE_SCOPE_WRITE);
  narcache_tokens_free(t);
  unlink(path);
  assert_int_equal(narcache_tokens_load(&t, path, err, sizeof err), NARCACHE_EIO);
  assert_non_null(strstr(err, "No such file"));
}

static void test_credential(void **state) {
  (void)state;
  char out[300];
  static const struct {
    const char *header;
    const char *credential; /* NULL: refused */
  } rows[] = {
      {"Bearer " TOKEN_A, TOKEN_A},
      {"bearer   " TOKEN_A "  ", TOKEN_A},
      /* netrc "login nix password TOKEN_A" -> base64("nix:" TOKEN_A) */
      {"Basic bml4OjZiMWYwYzBlNWQwYTRlM2M5YTdmMjFkNGM4ZTJiOWEx", TOKEN_A},
      {"BASIC OnNlY3JldDpjb2xvbg==", "secret:colon"}, /* ":secret:colon": empty user */
      {"Basic bml4", NULL},                           /* "nix": no ':' */
      {"Basic bml4Og==", NULL},                       /* "nix:": empty password */
      {"Basic !!!!", NULL},
      {"Bearer", NULL},
      {"Bearer ", NULL},
      {"Digest abc", NULL},
      {"BearerX abc", NULL},
      {"", NULL},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    int rc = narcache_auth_credential(out, sizeof out, rows[i].header, strlen(rows[i].header));
    if (rows[i].credential == NULL) {
      if (rc != NARCACHE_EINVAL)
        fail_msg("row %zu ('%s'): %d, expected EINVAL", i, rows[i].header, rc);
    } else {
      if (rc != (int)strlen(rows[i].credential) || strcmp(out, rows[i].credential) != 0)
        fail_msg("row %zu ('%s'): %d '%s'", i, rows[i].header, rc, out);
    }
  }
  char small[8];
  assert_int_equal(narcache_auth_credential(small, sizeof small, "Bearer " TOKEN_A,
                                            strlen("Bearer " TOKEN_A)),
                   NARCACHE_EBUFS);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_and_check),
      cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_load),
      cmocka_unit_test(test_credential),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
