/* Store paths, keys and signatures (narinfo.h). The key and signature
 * vectors are the spec's (shared/spec §3.1, §4), made with Nix 2.8. */
#include <narcache.h>

#include <stdarg.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test_support.h"

static const char spec_secret[] =
    "test-cache-1:3dfLNFVyLthTKIgut25Nd00T49HQBwTSlW/Kch8mYhvr2TqLi8rvdhWuGwp/9pAGMPYOM94TVjz3RZ7MRziNQQ==";
static const char spec_public[] = "test-cache-1:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE=";
static const char fp_ref_demo[] =
    "1;/nix/store/96ywgx8im2h56whq2l0w5qsi9kbm5dwj-ref-demo;sha256:06x5ipmbsj5wpplssfwsz8qqf5qyfjalyqpkxxfyzp4lz7lsjrq6;992;"
    "/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1,/nix/store/96ywgx8im2h56whq2l0w5qsi9kbm5dwj-ref-demo";
static const char sig_ref_demo[] =
    "Y4cSUFCL00xqgqk7B8XtWorQzc9tGvAzxeCVIeWZbh+DWuHkx7u52J++G+yOkSQwOnJaLxEUBve0GO0YAreeAw==";
static const char fp_f1[] =
    "1;/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1;sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa;120;";
static const char sig_f1[] =
    "u6Nhn1VixEFfC9rolgnYspG1sgvzCNVPbNXC1cYCPPxpN8+tNEFFV2run0QEgV8zRTt0Aknjqzkrq8hboFEhBg==";

static narcache_key *parse_or_fail(int secret, const char *text) {
  narcache_key *k = NULL;
  size_t where = 99;
  char *copy = exact_copy(text, strlen(text));
  int rc = secret ? narcache_key_parse_secret(&k, copy, strlen(text), &where)
                  : narcache_key_parse_public(&k, copy, strlen(text), &where);
  free(copy);
  if (rc != 0)
    fail_msg("parse of key failed: %s at %zu", narcache_errname(rc), where);
  return k;
}

static void check_sig(const narcache_key *k, const char *fingerprint, const char *sig_b64, int want) {
  uint8_t sig[64];
  size_t n = 0;
  assert_int_equal(narcache_base64_decode(sig, sizeof sig, &n, sig_b64, strlen(sig_b64), NULL), 0);
  assert_int_equal(n, 64);
  assert_int_equal(narcache_key_verify(k, sig, n, fingerprint, strlen(fingerprint)), want);
}

static void test_spec_keys_and_signatures(void **state) {
  (void)state;
  narcache_key *sk = parse_or_fail(1, spec_secret);
  narcache_key *pk = parse_or_fail(0, spec_public);
  assert_true(narcache_key_is_secret(sk));
  assert_false(narcache_key_is_secret(pk));
  size_t name_len;
  assert_string_equal(narcache_key_name(pk, &name_len), "test-cache-1");
  assert_int_equal(name_len, 12);
  /* The public half derived from the secret formats as Nix's public file. */
  narcache_key *derived = NULL;
  assert_int_equal(narcache_key_public(&derived, sk), 0);
  char text[512];
  size_t len;
  assert_int_equal(narcache_key_format(text, sizeof text, &len, derived), 0);
  assert_string_equal(text, spec_public);
  assert_int_equal(narcache_key_format(text, sizeof text, &len, sk), 0);
  assert_string_equal(text, spec_secret);
  assert_int_equal(narcache_key_format(text, len, NULL, sk), NARCACHE_EBUFS);
  /* Nix's signatures verify, and ed25519 being deterministic, ours are
   * byte-identical to them. */
  check_sig(pk, fp_ref_demo, sig_ref_demo, 0);
  check_sig(pk, fp_f1, sig_f1, 0);
  check_sig(pk, fp_f1, sig_ref_demo, NARCACHE_EBADSIG);
  uint8_t sig[64];
  char b64[128];
  assert_int_equal(narcache_key_sign(sig, sizeof sig, sk, fp_ref_demo, strlen(fp_ref_demo)), 0);
  assert_int_equal(narcache_base64_encode(b64, sizeof b64, NULL, sig, 64), 0);
  assert_string_equal(b64, sig_ref_demo);
  assert_int_equal(narcache_key_sign(sig, sizeof sig, pk, "x", 1), NARCACHE_EINVAL);
  assert_int_equal(narcache_key_verify(pk, sig, 63, "x", 1), NARCACHE_EBADSIG);
  /* Any change to the signed text breaks the signature. */
  char changed[sizeof fp_ref_demo];
  memcpy(changed, fp_ref_demo, sizeof fp_ref_demo);
  for (size_t i = 0; i < strlen(changed); i += 7) {
    changed[i] ^= 1;
    check_sig(pk, changed, sig_ref_demo, NARCACHE_EBADSIG);
    changed[i] ^= 1;
  }
  narcache_key_free(derived);
  narcache_key_free(pk);
  narcache_key_free(sk);
  narcache_key_free(NULL);
}

static void test_generated_keys_round_trip(void **state) {
  (void)state;
  narcache_key *sk = NULL;
  assert_int_equal(narcache_key_generate(&sk, "cache.example.org-1", 19), 0);
  char text[512];
  size_t len;
  assert_int_equal(narcache_key_format(text, sizeof text, &len, sk), 0);
  narcache_key *again = parse_or_fail(1, text);
  uint8_t sig[64];
  assert_int_equal(narcache_key_sign(sig, sizeof sig, again, "msg", 3), 0);
  assert_int_equal(narcache_key_verify(sk, sig, 64, "msg", 3), 0);
  narcache_key_free(again);
  narcache_key_free(sk);
  assert_int_equal(narcache_key_generate(&sk, "", 0), NARCACHE_EBADKEY);
  assert_int_equal(narcache_key_generate(&sk, "a:b", 3), NARCACHE_EBADKEY);
  assert_null(sk);
}

static void test_malformed_keys(void **state) {
  (void)state;
  static const struct {
    int secret;
    const char *text;
  } bad[] = {
      {0, ""},
      {0, "no-colon"},
      {0, ":69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE="},           /* empty name */
      {0, "test-cache-1:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jU="}, /* 31 bytes */
      {0, "test-cache-1:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE=AAAA"},
      {0, "test-cache-1:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y8*0WezEc4jUE="}, /* bad char */
      {0, "test-cache-1:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE=\r\n"},
      /* names that could not survive a "Sig: name:..." line or a
       * space-separated trusted-public-keys list */
      {0, "test cache:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE="},
      {0, "evil\nCA:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE="},
      {0, "t\xc3\xa9st:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE="},
      {0, "tab\tname:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE="},
      {1, "test-cache-1:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE="}, /* public as secret */
      /* secret whose public half does not match its seed */
      {1, "test-cache-1:3dfLNFVyLthTKIgut25Nd00T49HQBwTSlW/Kch8mYhvr2TqLi8rvdhWuGwp/9pAGMPYOM94TVjz3RZ7MRziNQA=="},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    narcache_key *k = (narcache_key *)&bad;
    size_t where = (size_t)-1;
    size_t len = strlen(bad[i].text);
    char *copy = exact_copy(bad[i].text, len);
    int rc = bad[i].secret ? narcache_key_parse_secret(&k, copy, len, &where)
                           : narcache_key_parse_public(&k, copy, len, &where);
    free(copy);
    if (rc != NARCACHE_EBADKEY)
      fail_msg("key #%zu: got %s", i, narcache_errname(rc));
    assert_null(k);
    assert_true(where <= len);
  }
  static const char *const bad_names[] = {"", "a b", "a:b", "a\nb", "\x7f", "caf\xc3\xa9"};
  for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
    narcache_key *g = (narcache_key *)&bad;
    assert_int_equal(narcache_key_generate(&g, bad_names[i], strlen(bad_names[i])),
                     NARCACHE_EBADKEY);
    assert_null(g);
  }
  /* A trailing newline, as in a key file written by an editor, is fine;
   * so is missing '=' padding (Nix accepts it). */
  narcache_key *k = parse_or_fail(0, "test-cache-1:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE=\n");
  narcache_key_free(k);
  k = parse_or_fail(0, "test-cache-1:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE");
  narcache_key_free(k);
}

static void test_store_paths(void **state) {
  (void)state;
  static const char *good[] = {
      "/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1",
      "/nix/store/96ywgx8im2h56whq2l0w5qsi9kbm5dwj-ref-demo",
      "/nix/store/96ywgx8im2h56whq2l0w5qsi9kbm5dwj-a+b.c_d?e=f-1.2",
      "/nix/store/96ywgx8im2h56whq2l0w5qsi9kbm5dwj-...",
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    const char *base = NULL;
    size_t len = strlen(good[i]);
    char *copy = exact_copy(good[i], len);
    assert_int_equal(narcache_store_path_parse(&base, copy, len, NULL, NULL), 0);
    assert_ptr_equal(base, copy + 11);
    const char *name = NULL;
    assert_int_equal(narcache_store_path_parse_base(&name, base, len - 11, NULL), 0);
    assert_ptr_equal(name, base + 33);
    free(copy);
  }
  static const struct {
    const char *path;
    size_t offset;
  } bad[] = {
      {"/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0f1", 43},  /* no dash */
      {"/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s-f1", 42},  /* short hash: "-" at 42 */
      {"/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8se-f1", 42}, /* 'e' */
      {"/nix/store/2X2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1", 12}, /* upper case */
      {"/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-", 44},   /* empty name */
      {"/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-.", 44},
      {"/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-..", 44},
      {"/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-.-x", 44},
      {"/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-a b", 45},
      {"/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-a/b", 45},
      {"/nix/store//2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1", 11},
      {"/nix/stor/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1", 9},
      {"/gnu/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1", 1},
      {"/nix/store", 10},
      {"", 0},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    size_t len = strlen(bad[i].path), where = 999;
    char *copy = exact_copy(bad[i].path, len);
    int rc = narcache_store_path_parse(NULL, copy, len, NULL, &where);
    free(copy);
    if (rc != NARCACHE_EBADSTOREPATH || where != bad[i].offset)
      fail_msg("'%s': %s at %zu, want offset %zu", bad[i].path, narcache_errname(rc), where,
               bad[i].offset);
  }
  /* Names: 211 bytes are allowed, 212 are not. */
  char name[213];
  memset(name, 'a', sizeof name);
  assert_int_equal(narcache_store_path_check_name(name, 211, NULL), 0);
  size_t where = 0;
  assert_int_equal(narcache_store_path_check_name(name, 212, &where), NARCACHE_EBADSTOREPATH);
  assert_int_equal(where, 211);
  /* Another store directory. */
  assert_int_equal(narcache_store_path_parse(NULL, "/gnu/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1", 46,
                                             "/gnu/store", NULL),
                   0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spec_keys_and_signatures),
      cmocka_unit_test(test_generated_keys_round_trip),
      cmocka_unit_test(test_malformed_keys),
      cmocka_unit_test(test_store_paths),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
