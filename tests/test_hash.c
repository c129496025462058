/* Hashing, encodings, hash strings and store-path hash parts, checked
 * against golden tables produced by Nix 2.8 (tests/data/hash/generate.py). */
#include <narcache.h>

#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test_support.h"

typedef struct golden {
  tsv_table contents, encodings, paths, malformed;
} golden;

static int load_golden(void **state) {
  golden *g = calloc(1, sizeof *g);
  tsv_load(&g->contents, "hash/contents.tsv");
  tsv_load(&g->encodings, "hash/encodings.tsv");
  tsv_load(&g->paths, "hash/paths.tsv");
  tsv_load(&g->malformed, "hash/malformed.tsv");
  *state = g;
  return 0;
}

static int free_golden(void **state) {
  golden *g = *state;
  tsv_free(&g->contents);
  tsv_free(&g->encodings);
  tsv_free(&g->paths);
  tsv_free(&g->malformed);
  free(g);
  return 0;
}

static uint8_t *content_of(golden *g, const char *id, size_t *len) {
  size_t index = strtoul(id, NULL, 10);
  assert_true(index < g->contents.nrows);
  assert_string_equal(g->contents.rows[index].field[0], id);
  return test_hex_decode(g->contents.rows[index].field[1], len);
}

/* Parse `text` from an exact-length heap copy and expect `want`. */
static void expect_parse(const char *text, int algo_for_bare,
                         const narcache_hash *want) {
  size_t len = strlen(text);
  char *copy = exact_copy(text, len);
  narcache_hash got;
  size_t where = 99;
  int rc = algo_for_bare != 0
               ? narcache_hash_parse_as(&got, algo_for_bare, copy, len, &where)
               : narcache_hash_parse(&got, copy, len, &where);
  if (rc != 0)
    fail_msg("parse of '%s' failed: %s at %zu", text, narcache_errname(rc), where);
  assert_int_equal(got.algo, want->algo);
  assert_int_equal(got.len, want->len);
  assert_memory_equal(got.digest, want->digest, want->len);
  free(copy);
}

static void expect_format(const narcache_hash *h, int encoding, int with_algo,
                          const char *want) {
  char out[NARCACHE_HASH_STRING_MAX];
  size_t len = 0;
  assert_int_equal(narcache_hash_format(out, sizeof out, &len, h, encoding, with_algo), 0);
  assert_string_equal(out, want);
  assert_int_equal(len, strlen(want));
  /* Every buffer one byte too small (no room for the NUL) must be refused
   * without writing: exact-size heap buffers make ASan watch the edges. */
  char *tight = malloc(len);
  assert_int_equal(narcache_hash_format(tight, len, NULL, h, encoding, with_algo),
                   NARCACHE_EBUFS);
  free(tight);
}

static void hash_in_chunks(narcache_hash *out, int algo, const uint8_t *data,
                           size_t len, size_t chunk) {
  narcache_hasher *h = NULL;
  assert_int_equal(narcache_hasher_new(&h, algo), 0);
  for (size_t off = 0; off < len; off += chunk) {
    size_t n = len - off < chunk ? len - off : chunk;
    assert_int_equal(narcache_hasher_update(h, data + off, n), 0);
  }
  assert_int_equal(narcache_hasher_bytes(h), len);
  assert_int_equal(narcache_hasher_final(h, out), 0);
  narcache_hasher_free(h);
}

static void test_golden_encodings(void **state) {
  golden *g = *state;
  assert_true(g->encodings.nrows >= 200);
  for (size_t r = 0; r < g->encodings.nrows; r++) {
    tsv_row *row = &g->encodings.rows[r];
    const char *algo_name = row->field[1];
    const char *b16 = row->field[2], *b32 = row->field[3];
    const char *b64 = row->field[4], *sri = row->field[5];
    int algo = narcache_hash_algo_from_name(algo_name, strlen(algo_name));
    assert_true(algo > 0);

    size_t len;
    uint8_t *data = content_of(g, row->field[0], &len);
    narcache_hash oneshot, chunked;
    assert_int_equal(narcache_hash_buffer(&oneshot, algo, data, len), 0);
    hash_in_chunks(&chunked, algo, data, len, 1 + r % 97);
    assert_memory_equal(&oneshot, &chunked, sizeof oneshot);
    free(data);

    expect_format(&oneshot, NARCACHE_HASH_BASE16, 0, b16);
    expect_format(&oneshot, NARCACHE_HASH_NIX32, 0, b32);
    expect_format(&oneshot, NARCACHE_HASH_BASE64, 0, b64);
    expect_format(&oneshot, NARCACHE_HASH_SRI, 0, sri);
    expect_format(&oneshot, NARCACHE_HASH_SRI, 1, sri);

    char typed[NARCACHE_HASH_STRING_MAX];
    snprintf(typed, sizeof typed, "%s:%s", algo_name, b32);
    expect_format(&oneshot, NARCACHE_HASH_NIX32, 1, typed);
    expect_parse(typed, 0, &oneshot);
    snprintf(typed, sizeof typed, "%s:%s", algo_name, b16);
    expect_format(&oneshot, NARCACHE_HASH_BASE16, 1, typed);
    expect_parse(typed, 0, &oneshot);
    for (char *p = typed; *p; p++) /* Nix accepts upper-case hex */
      if (*p >= 'a' && *p <= 'f' && p > typed + strlen(algo_name))
        *p = (char)(*p - 'a' + 'A');
    expect_parse(typed, 0, &oneshot);
    snprintf(typed, sizeof typed, "%s:%s", algo_name, b64);
    expect_parse(typed, 0, &oneshot);
    expect_parse(sri, 0, &oneshot);
    /* SRI may drop its '=' padding (Nix 2.8 accepts that). */
    snprintf(typed, sizeof typed, "%s", sri);
    typed[strcspn(typed, "=")] = '\0';
    expect_parse(typed, 0, &oneshot);

    /* Bare digits of a known algorithm, and typed forms through _as. */
    expect_parse(b16, algo, &oneshot);
    expect_parse(b32, algo, &oneshot);
    expect_parse(b64, algo, &oneshot);
    expect_parse(sri, algo, &oneshot);
    narcache_hash other;
    int wrong = algo == NARCACHE_HASH_SHA256 ? NARCACHE_HASH_SHA512 : NARCACHE_HASH_SHA256;
    assert_int_equal(narcache_hash_parse_as(&other, wrong, sri, strlen(sri), NULL),
                     NARCACHE_EHASHALGO);
  }
}

static void test_golden_store_paths(void **state) {
  golden *g = *state;
  assert_true(g->paths.nrows >= 50);
  int kinds_seen[3] = {0, 0, 0};
  for (size_t r = 0; r < g->paths.nrows; r++) {
    tsv_row *row = &g->paths.rows[r];
    const char *kind = row->field[1], *name = row->field[2];
    const char *inner = row->field[3], *store_path = row->field[4];
    char preimage[512];
    if (strcmp(kind, "source") == 0) {
      kinds_seen[0]++;
      snprintf(preimage, sizeof preimage, "source:sha256:%s:/nix/store:%s", inner, name);
    } else if (strcmp(kind, "text") == 0) {
      kinds_seen[1]++;
      snprintf(preimage, sizeof preimage, "text:sha256:%s:/nix/store:%s", inner, name);
    } else {
      /* Flat fixed-output: the inner hash is itself a digest of a
       * description of the fixed hash. */
      assert_string_equal(kind, "fixed");
      kinds_seen[2]++;
      char fixed[128], fixed_hex[NARCACHE_HASH_STRING_MAX];
      snprintf(fixed, sizeof fixed, "fixed:out:sha256:%s:", inner);
      narcache_hash h;
      assert_int_equal(narcache_hash_buffer(&h, NARCACHE_HASH_SHA256, fixed, strlen(fixed)), 0);
      assert_int_equal(narcache_hash_format(fixed_hex, sizeof fixed_hex, NULL, &h,
                                            NARCACHE_HASH_BASE16, 0), 0);
      snprintf(preimage, sizeof preimage, "output:out:sha256:%s:/nix/store:%s",
               fixed_hex, name);
    }
    char part[NARCACHE_STORE_HASH_CHARS + 1];
    char *copy = exact_copy(preimage, strlen(preimage));
    assert_int_equal(narcache_store_path_hash_part(part, sizeof part, copy, strlen(preimage)), 0);
    free(copy);
    char expected[512];
    snprintf(expected, sizeof expected, "/nix/store/%s-%s", part, name);
    assert_string_equal(expected, store_path);
    assert_int_equal(narcache_store_path_hash_part(part, NARCACHE_STORE_HASH_CHARS,
                                                   preimage, strlen(preimage)),
                     NARCACHE_EBUFS);
  }
  assert_true(kinds_seen[0] > 0 && kinds_seen[1] > 0 && kinds_seen[2] > 0);
}

static void test_spec_worked_example(void **state) {
  (void)state;
  /* nix-store --add of a file "f1" containing "hello" (spec 2.4). */
  const char *preimage = "source:sha256:0a430879c266f8b57f4092a0f935cf3facd48bbccde5760d4748ca405171e969:/nix/store:f1";
  char part[33];
  assert_int_equal(narcache_store_path_hash_part(part, sizeof part, preimage, strlen(preimage)), 0);
  assert_string_equal(part, "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0");
}

static void test_golden_malformed(void **state) {
  golden *g = *state;
  assert_true(g->malformed.nrows >= 30);
  for (size_t r = 0; r < g->malformed.nrows; r++) {
    tsv_row *row = &g->malformed.rows[r];
    const char *text = row->field[0];
    size_t len = row->len[0];
    char *copy = exact_copy(text, len);
    narcache_hash h;
    memset(&h, 0xAA, sizeof h);
    size_t where = (size_t)-1;
    int rc = narcache_hash_parse(&h, copy, len, &where);
    if (strcmp(narcache_errname(rc), row->field[2]) != 0)
      fail_msg("'%s': got %s, want %s", text, narcache_errname(rc), row->field[2]);
    assert_true(where <= len);
    free(copy);
  }
}

/* Every proper prefix of a valid hash string is rejected, and never read
 * past its end. */
static void test_truncations_rejected(void **state) {
  golden *g = *state;
  for (size_t r = 0; r < g->encodings.nrows; r += 7) {
    tsv_row *row = &g->encodings.rows[r];
    char typed[NARCACHE_HASH_STRING_MAX];
    snprintf(typed, sizeof typed, "%s:%s", row->field[1], row->field[3]);
    for (size_t cut = 0; cut < strlen(typed); cut++) {
      char *copy = exact_copy(typed, cut);
      narcache_hash h;
      assert_true(narcache_hash_parse(&h, copy, cut, NULL) < 0);
      free(copy);
    }
  }
}

static void test_nix32_spec_vectors(void **state) {
  (void)state;
  static const struct {
    const char *hex, *nix32;
  } vectors[] = {{"00", "00"},   {"01", "01"},     {"1f", "0z"}, {"20", "10"},
                 {"ff", "7z"},   {"0100", "0001"}, {"0001", "0080"}};
  for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
    size_t n;
    uint8_t *bytes = test_hex_decode(vectors[i].hex, &n);
    char out[16];
    size_t out_len;
    assert_int_equal(narcache_nix32_encode(out, sizeof out, &out_len, bytes, n), 0);
    assert_string_equal(out, vectors[i].nix32);
    uint8_t back[8];
    char *copy = exact_copy(vectors[i].nix32, out_len);
    assert_int_equal(narcache_nix32_decode(back, n, copy, out_len, NULL), 0);
    assert_memory_equal(back, bytes, n);
    free(copy);
    free(bytes);
  }
  assert_int_equal(narcache_nix32_encoded_len(32), 52);
  assert_int_equal(narcache_nix32_encoded_len(20), 32);
  assert_int_equal(narcache_nix32_encoded_len(16), 26);
  assert_int_equal(narcache_nix32_encoded_len(64), 103);
  assert_int_equal(narcache_nix32_encoded_len(0), 0);
}

static void test_nix32_high_bits(void **state) {
  (void)state;
  uint8_t out[1];
  size_t where = 9;
  /* One byte takes two digits; the top digit may only use 3 bits. */
  assert_int_equal(narcache_nix32_decode(out, 1, "7z", 2, &where), 0);
  assert_int_equal(out[0], 0xff);
  assert_int_equal(narcache_nix32_decode(out, 1, "8z", 2, &where), NARCACHE_ENONCANONICAL);
  assert_int_equal(where, 0);
  assert_int_equal(narcache_nix32_decode(out, 1, "0E", 2, &where), NARCACHE_EBADCHAR);
  assert_int_equal(where, 1);
  assert_int_equal(narcache_nix32_decode(out, 1, "000", 3, &where), NARCACHE_EBADLENGTH);
  char nul[2] = {'0', '\0'};
  assert_int_equal(narcache_nix32_decode(out, 1, nul, 2, &where), NARCACHE_EBADCHAR);
}

static void test_base16_raw(void **state) {
  (void)state;
  uint8_t out[2];
  size_t where;
  assert_int_equal(narcache_base16_decode(out, 2, "aBcD", 4, NULL), 0);
  assert_int_equal(out[0], 0xab);
  assert_int_equal(out[1], 0xcd);
  assert_int_equal(narcache_base16_decode(out, 2, "abc", 3, NULL), NARCACHE_EBADLENGTH);
  assert_int_equal(narcache_base16_decode(out, 2, "ab-d", 4, &where), NARCACHE_EBADCHAR);
  assert_int_equal(where, 2);
  char text[5];
  assert_int_equal(narcache_base16_encode(text, sizeof text, NULL, out, 2), 0);
  assert_string_equal(text, "abcd");
  assert_int_equal(narcache_base16_encode(text, 4, NULL, out, 2), NARCACHE_EBUFS);
}

static void test_base64_raw(void **state) {
  (void)state;
  /* RFC 4648 section 10 vectors. */
  static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  static const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (size_t i = 0; i < 7; i++) {
    char text[16];
    size_t n;
    assert_int_equal(narcache_base64_encode(text, sizeof text, &n, plain[i], strlen(plain[i])), 0);
    assert_string_equal(text, coded[i]);
    assert_int_equal(n, narcache_base64_encoded_len(strlen(plain[i])));
    char *copy = exact_copy(coded[i], n);
    uint8_t back[8];
    size_t back_len = 99;
    assert_int_equal(narcache_base64_decode(back, sizeof back, &back_len, copy, n, NULL), 0);
    assert_int_equal(back_len, strlen(plain[i]));
    assert_memory_equal(back, plain[i], back_len);
    if (back_len > 0) /* too small an output buffer is refused */
      assert_int_equal(narcache_base64_decode(back, back_len - 1, NULL, copy, n, NULL),
                       NARCACHE_EBUFS);
    free(copy);
  }
  static const struct {
    const char *text;
    int rc;
    size_t where;
  } bad[] = {{"Zg=", NARCACHE_EBADLENGTH, 3},   {"Zg", NARCACHE_EBADLENGTH, 2},
             {"Zh==", NARCACHE_ENONCANONICAL, 1}, {"Z===", NARCACHE_ENONCANONICAL, 1},
             {"Z=g=", NARCACHE_ENONCANONICAL, 1}, {"Zm9v\n", NARCACHE_EBADLENGTH, 5},
             {"Zm-v", NARCACHE_EBADCHAR, 2},      {"Zm9_", NARCACHE_EBADCHAR, 3},
             {"=Zm9", NARCACHE_ENONCANONICAL, 0}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint8_t back[8];
    size_t where = 99;
    char *copy = exact_copy(bad[i].text, strlen(bad[i].text));
    int rc = narcache_base64_decode(back, sizeof back, NULL, copy, strlen(bad[i].text), &where);
    if (rc != bad[i].rc || where != bad[i].where)
      fail_msg("'%s': got %s at %zu", bad[i].text, narcache_errname(rc), where);
    free(copy);
  }
}

static void test_algorithms(void **state) {
  (void)state;
  assert_int_equal(narcache_hash_algo_size(NARCACHE_HASH_SHA256), 32);
  assert_int_equal(narcache_hash_algo_size(0), 0);
  assert_int_equal(narcache_hash_algo_size(5), 0);
  assert_string_equal(narcache_hash_algo_name(NARCACHE_HASH_SHA1), "sha1");
  assert_null(narcache_hash_algo_name(-1));
  assert_int_equal(narcache_hash_algo_from_name("sha512", 6), NARCACHE_HASH_SHA512);
  assert_int_equal(narcache_hash_algo_from_name("sha5", 4), NARCACHE_EHASHALGO);
  assert_int_equal(narcache_hash_algo_from_name("sha2567", 7), NARCACHE_EHASHALGO);
  narcache_hasher *h = (narcache_hasher *)&h;
  assert_int_equal(narcache_hasher_new(&h, 9), NARCACHE_EHASHALGO);
  assert_null(h);
  narcache_hash out;
  assert_int_equal(narcache_hash_buffer(&out, 0, "", 0), NARCACHE_EHASHALGO);
  assert_int_equal(narcache_hash_string_max(), NARCACHE_HASH_STRING_MAX);
  /* The longest possible string fits in NARCACHE_HASH_STRING_MAX. */
  assert_int_equal(narcache_hash_buffer(&out, NARCACHE_HASH_SHA512, "x", 1), 0);
  char text[NARCACHE_HASH_STRING_MAX];
  assert_int_equal(narcache_hash_format(text, sizeof text, NULL, &out, NARCACHE_HASH_BASE16, 1), 0);
  out.len = 3; /* inconsistent with the algorithm */
  assert_int_equal(narcache_hash_format(text, sizeof text, NULL, &out, NARCACHE_HASH_BASE16, 1),
                   NARCACHE_EINVAL);
  out.len = 64;
  assert_int_equal(narcache_hash_format(text, sizeof text, NULL, &out, 77, 1), NARCACHE_EINVAL);
}

static void test_hasher_lifecycle(void **state) {
  (void)state;
  narcache_hasher *h = NULL;
  narcache_hash a, b;
  assert_int_equal(narcache_hasher_new(&h, NARCACHE_HASH_SHA256), 0);
  assert_int_equal(narcache_hasher_update(h, "hel", 3), 0);
  assert_int_equal(narcache_hasher_update(h, NULL, 0), 0);
  assert_int_equal(narcache_hasher_update(h, NULL, 1), NARCACHE_EINVAL);
  assert_int_equal(narcache_hasher_update(h, "lo", 2), 0);
  assert_int_equal(narcache_hasher_final(h, &a), 0);
  assert_int_equal(narcache_hasher_update(h, "x", 1), NARCACHE_EMISUSE);
  assert_int_equal(narcache_hasher_final(h, &b), NARCACHE_EMISUSE);
  assert_int_equal(narcache_hasher_reset(h), 0);
  assert_int_equal(narcache_hasher_bytes(h), 0);
  assert_int_equal(narcache_hasher_update(h, "hello", 5), 0);
  assert_int_equal(narcache_hasher_final(h, &b), 0);
  assert_memory_equal(&a, &b, sizeof a);
  char text[NARCACHE_HASH_STRING_MAX];
  assert_int_equal(narcache_hash_format(text, sizeof text, NULL, &a, NARCACHE_HASH_NIX32, 1), 0);
  assert_string_equal(text, "sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic");
  narcache_hasher_free(h);
  narcache_hasher_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden_encodings),
      cmocka_unit_test(test_golden_store_paths),
      cmocka_unit_test(test_golden_malformed),
      cmocka_unit_test(test_truncations_rejected),
      cmocka_unit_test(test_spec_worked_example),
      cmocka_unit_test(test_nix32_spec_vectors),
      cmocka_unit_test(test_nix32_high_bits),
      cmocka_unit_test(test_base16_raw),
      cmocka_unit_test(test_base64_raw),
      cmocka_unit_test(test_algorithms),
      cmocka_unit_test(test_hasher_lifecycle),
  };
  return cmocka_run_group_tests(tests, load_golden, free_golden);
}
