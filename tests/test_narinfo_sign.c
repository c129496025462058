/* narinfo against what Nix 2.8 wrote (tests/data/narinfo, made by its
 * generate.sh): byte-identical formatting, fingerprints, signatures made
 * by Nix verifying here, signatures made here equal to Nix's, and the
 * verdicts Nix gave on the hand-edited files. */
#include <narcache.h>

#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test_support.h"

#define REF_DEMO "golden/none/dyfyrpszi87hixnk6as80dh2j3vy31yh.narinfo"

typedef struct keyring {
  narcache_key *sk1, *pk1, *sk2, *pk2;
} keyring;

static narcache_key *load_key(const char *relpath, int secret) {
  size_t len = 0;
  char *text = test_data_slurp(relpath, &len);
  narcache_key *k = NULL;
  size_t where = 0;
  int rc = secret ? narcache_key_parse_secret(&k, text, len, &where)
                  : narcache_key_parse_public(&k, text, len, &where);
  if (rc != 0)
    fail_msg("%s: %s at %zu", relpath, narcache_errname(rc), where);
  /* Formatting gives back the exact file Nix wrote (no newline). */
  char out[512];
  size_t out_len = 0;
  assert_int_equal(narcache_key_format(out, sizeof out, &out_len, k), 0);
  assert_int_equal(out_len, len);
  assert_memory_equal(out, text, len);
  free(text);
  return k;
}

static int keys_setup(void **state) {
  keyring *r = calloc(1, sizeof *r);
  r->sk1 = load_key("narinfo/keys/test-cache-1.sec", 1);
  r->pk1 = load_key("narinfo/keys/test-cache-1.pub", 0);
  r->sk2 = load_key("narinfo/keys/other-cache-2.sec", 1);
  r->pk2 = load_key("narinfo/keys/other-cache-2.pub", 0);
  *state = r;
  return 0;
}

static int keys_teardown(void **state) {
  keyring *r = *state;
  narcache_key_free(r->sk1);
  narcache_key_free(r->pk1);
  narcache_key_free(r->sk2);
  narcache_key_free(r->pk2);
  free(r);
  return 0;
}

static narcache_narinfo *parse_text(const char *text, size_t len) {
  narcache_narinfo *ni = NULL;
  assert_int_equal(narcache_narinfo_new(&ni, NULL), 0);
  char *copy = exact_copy(text, len);
  int rc = narcache_narinfo_parse(ni, copy, len);
  free(copy);
  if (rc != 0)
    fail_msg("parse: %s: %s", narcache_errname(rc), narcache_narinfo_errmsg(ni));
  return ni;
}

static narcache_narinfo *parse_file(const char *relpath, char **text_out, size_t *len_out) {
  char path[512];
  snprintf(path, sizeof path, "narinfo/%s", relpath);
  size_t len = 0;
  char *text = test_data_slurp(path, &len);
  narcache_narinfo *ni = parse_text(text, len);
  if (text_out != NULL) {
    *text_out = text;
    *len_out = len;
  } else {
    free(text);
  }
  return ni;
}

static void assert_verify(const narcache_narinfo *ni, const narcache_key *const *keys, size_t n,
                          int want_rc, const narcache_key *want_key) {
  const narcache_key *which = (const narcache_key *)&which; /* must be overwritten */
  int rc = narcache_narinfo_verify(&which, ni, keys, n);
  if (rc != want_rc)
    fail_msg("verify: got %s, want %s", narcache_errname(rc), narcache_errname(want_rc));
  assert_ptr_equal(which, want_key);
}

/* The Sig value "name:base64" of `sig_line` belongs to the narinfo. */
static int has_sig(const narcache_narinfo *ni, const char *sig, size_t len) {
  for (size_t i = 0; i < narcache_narinfo_sig_count(ni); i++) {
    size_t l = 0;
    const char *s = narcache_narinfo_sig(ni, i, &l);
    if (l == len && memcmp(s, sig, len) == 0)
      return 1;
  }
  return 0;
}

/* Every Nix-written narinfo (27 files, 36 signatures): formats back byte
 * for byte, has the fingerprint Nix signed, and Nix's signature verifies. */
static void test_golden_files(void **state) {
  keyring *r = *state;
  tsv_table t;
  tsv_load(&t, "narinfo/fingerprints.tsv");
  assert_int_equal(t.nrows, 36);
  for (size_t i = 0; i < t.nrows; i++) {
    tsv_row *row = &t.rows[i];
    char relpath[256];
    snprintf(relpath, sizeof relpath, "golden/%s", row->field[0]);
    char *text = NULL;
    size_t len = 0;
    narcache_narinfo *ni = parse_file(relpath, &text, &len);

    char *out = NULL;
    size_t out_len = 0;
    assert_int_equal(narcache_narinfo_format(&out, &out_len, ni), 0);
    if (out_len != len || memcmp(out, text, len) != 0)
      fail_msg("%s does not format back identically:\n%s", relpath, out);
    narcache_free(out);

    char *fp = NULL;
    size_t fp_len = 0;
    assert_int_equal(narcache_narinfo_fingerprint(&fp, &fp_len, ni), 0);
    assert_int_equal(fp_len, row->len[1]);
    assert_string_equal(fp, row->field[1]);
    narcache_free(fp);

    assert_true(has_sig(ni, row->field[2], row->len[2]));
    const narcache_key *only1[] = {r->pk1};
    const narcache_key *only2[] = {r->pk2};
    int by_key2 = strncmp(row->field[2], "other-cache-2:", 14) == 0;
    assert_verify(ni, by_key2 ? only2 : only1, 1, 0, by_key2 ? r->pk2 : r->pk1);
    narcache_narinfo_free(ni);
    free(text);
  }
  tsv_free(&t);
}

/* Ed25519 is deterministic: signing Nix's fingerprint with Nix's key file
 * must reproduce Nix's Sig value exactly. */
static void test_signatures_equal_nix(void **state) {
  keyring *r = *state;
  tsv_table t;
  tsv_load(&t, "narinfo/fingerprints.tsv");
  for (size_t i = 0; i < t.nrows; i++) {
    tsv_row *row = &t.rows[i];
    char relpath[256];
    snprintf(relpath, sizeof relpath, "golden/%s", row->field[0]);
    narcache_narinfo *ni = parse_file(relpath, NULL, NULL);
    narcache_narinfo_clear_sigs(ni);
    int by_key2 = strncmp(row->field[2], "other-cache-2:", 14) == 0;
    assert_int_equal(narcache_narinfo_sign(ni, by_key2 ? r->sk2 : r->sk1), 0);
    assert_int_equal(narcache_narinfo_sig_count(ni), 1);
    size_t len = 0;
    const char *sig = narcache_narinfo_sig(ni, 0, &len);
    assert_int_equal(len, row->len[2]);
    assert_memory_equal(sig, row->field[2], len);
    narcache_narinfo_free(ni);
  }
  tsv_free(&t);
}

/* Signing twice with one key keeps one Sig; a second key adds one; the
 * result formats exactly like the multisig file Nix wrote. */
static void test_sign_replaces_same_key(void **state) {
  keyring *r = *state;
  char *multi = NULL;
  size_t multi_len = 0;
  narcache_narinfo *want = parse_file("golden/multisig/dyfyrpszi87hixnk6as80dh2j3vy31yh.narinfo",
                                      &multi, &multi_len);
  narcache_narinfo_free(want);

  narcache_narinfo *ni = parse_file(REF_DEMO, NULL, NULL);
  assert_int_equal(narcache_narinfo_sig_count(ni), 1);
  /* A stale signature by the same key name is replaced, not kept. */
  assert_int_equal(narcache_narinfo_add_sig(ni, "test-cache-1:c3RhbGU=", 21), 0);
  assert_int_equal(narcache_narinfo_sig_count(ni), 2);
  assert_int_equal(narcache_narinfo_sign(ni, r->sk1), 0);
  assert_int_equal(narcache_narinfo_sign(ni, r->sk1), 0);
  assert_int_equal(narcache_narinfo_sig_count(ni), 1);
  assert_int_equal(narcache_narinfo_sign(ni, r->sk2), 0);
  assert_int_equal(narcache_narinfo_sig_count(ni), 2);
  char *out = NULL;
  size_t out_len = 0;
  assert_int_equal(narcache_narinfo_format(&out, &out_len, ni), 0);
  assert_int_equal(out_len, multi_len);
  assert_memory_equal(out, multi, multi_len);
  narcache_free(out);

  /* A public key cannot sign; nothing changes. */
  assert_int_equal(narcache_narinfo_sign(ni, r->pk1), NARCACHE_EINVAL);
  assert_int_equal(narcache_narinfo_sig_count(ni), 2);
  narcache_narinfo_free(ni);
  free(multi);
}

/* The hand-edited files of golden/bad and what `nix store verify` said
 * about each (nix-verify.txt): untrusted, or "signature is not valid". */
static void test_nix_verdicts_on_edited_files(void **state) {
  keyring *r = *state;
  static const struct {
    const char *file;
    int rc;
  } cases[] = {
      {"narhash-changed", NARCACHE_EBADSIG},
      {"narsize-changed", NARCACHE_EBADSIG},
      {"references-changed", NARCACHE_EBADSIG},
      {"sig-corrupt-char", NARCACHE_EBADSIG},
      {"sig-good-plus-corrupt", 0}, /* Nix accepts: one good signature */
      {"sig-missing", NARCACHE_ENOTFOUND},
      {"sig-other-key", NARCACHE_ENOTFOUND}, /* untrusted name: ignored */
      {"sig-other-key-relabeled", NARCACHE_EBADSIG},
      {"sig-truncated", NARCACHE_EBADSIG}, /* Nix: "signature is not valid" */
  };
  const narcache_key *trusted[] = {r->pk1};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char relpath[128];
    snprintf(relpath, sizeof relpath, "golden/bad/%s.narinfo", cases[i].file);
    narcache_narinfo *ni = parse_file(relpath, NULL, NULL);
    const narcache_key *which = NULL;
    int rc = narcache_narinfo_verify(&which, ni, trusted, 1);
    if (rc != cases[i].rc)
      fail_msg("%s: got %s, want %s", cases[i].file, narcache_errname(rc),
               narcache_errname(cases[i].rc));
    assert_ptr_equal(which, cases[i].rc == NARCACHE_ENOTFOUND ? NULL : r->pk1);
    narcache_narinfo_free(ni);
  }
}

/* Replace the value of field `key` in a narinfo text (first occurrence),
 * or delete the line when value is NULL. Returns a malloc'd string. */
static char *edit_field(const char *text, const char *key, const char *value) {
  char prefix[64];
  snprintf(prefix, sizeof prefix, "%s: ", key);
  const char *line = strstr(text, prefix);
  while (line != NULL && line != text && line[-1] != '\n')
    line = strstr(line + 1, prefix);
  if (line == NULL)
    fail_msg("no %s line", key);
  const char *eol = strchr(line, '\n');
  size_t head = (size_t)(line - text);
  char *out = malloc(strlen(text) + (value ? strlen(value) : 0) + 64);
  memcpy(out, text, head);
  out[head] = '\0';
  if (value != NULL)
    sprintf(out + head, "%s%s\n", prefix, value);
  strcat(out, eol + 1);
  return out;
}

static int verify_edited(const keyring *r, const char *text, const char *key, const char *value) {
  char *edited = edit_field(text, key, value);
  narcache_narinfo *ni = parse_text(edited, strlen(edited));
  const narcache_key *trusted[] = {r->pk1};
  int rc = narcache_narinfo_verify(NULL, ni, trusted, 1);
  narcache_narinfo_free(ni);
  free(edited);
  return rc;
}

/* Each signed field (StorePath, NarHash, NarSize, every reference) breaks
 * the signature when changed; unsigned fields do not. */
static void test_signed_and_unsigned_fields(void **state) {
  keyring *r = *state;
  size_t len = 0;
  char *text = test_data_slurp("narinfo/" REF_DEMO, &len);
  assert_int_equal(verify_edited(r, text, "URL", /* unchanged: verifies */
                                 "nar/05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir.nar"),
                   0);
  assert_int_equal(verify_edited(r, text, "Sig", NULL), NARCACHE_ENOTFOUND);

  /* signed */
  assert_int_equal(verify_edited(r, text, "StorePath",
                                 "/nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demx"),
                   NARCACHE_EBADSIG);
  assert_int_equal(verify_edited(r, text, "StorePath",
                                 "/nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yi-ref-demo"),
                   NARCACHE_EBADSIG);
  assert_int_equal(verify_edited(r, text, "NarHash",
                                 "sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncia"),
                   NARCACHE_EBADSIG);
  assert_int_equal(verify_edited(r, text, "NarSize", "217"), NARCACHE_EBADSIG);
  assert_int_equal(verify_edited(r, text, "References",
                                 "dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo"),
                   NARCACHE_EBADSIG); /* first reference dropped */
  assert_int_equal(verify_edited(r, text, "References", "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1"),
                   NARCACHE_EBADSIG); /* second reference dropped */
  assert_int_equal(verify_edited(r, text, "References",
                                 "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f2 "
                                 "dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo"),
                   NARCACHE_EBADSIG); /* a reference renamed */
  assert_int_equal(verify_edited(r, text, "References",
                                 "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1 "
                                 "a33hzacmykblylyvn7v2fc989f55j9rc-tree "
                                 "dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo"),
                   NARCACHE_EBADSIG); /* one added */
  assert_int_equal(verify_edited(r, text, "References", NULL), NARCACHE_EBADSIG);

  /* unsigned, or the same statement spelled differently */
  assert_int_equal(verify_edited(r, text, "URL", "nar/elsewhere.nar.zst?x=1"), 0);
  assert_int_equal(verify_edited(r, text, "Compression", "zstd"), 0);
  assert_int_equal(verify_edited(r, text, "Compression", NULL), 0);
  assert_int_equal(verify_edited(r, text, "FileHash",
                                 "sha256:0000000000000000000000000000000000000000000000000000"),
                   0);
  assert_int_equal(verify_edited(r, text, "FileHash", NULL), 0);
  assert_int_equal(verify_edited(r, text, "FileSize", "1"), 0);
  assert_int_equal(verify_edited(r, text, "Deriver", "ba703j8axyq4wqbbwjh4vw23rslsrwhw-other.drv"),
                   0);
  assert_int_equal(verify_edited(r, text, "References", /* reordered, doubled spaces */
                                 "dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo  "
                                 "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1 "
                                 "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1"),
                   0);
  free(text);
}

/* The NarHash may be written in any of Nix's spellings; the fingerprint
 * always uses nix32, so the signature still verifies (spec §4.1). */
static void test_narhash_spellings_keep_signature(void **state) {
  keyring *r = *state;
  size_t len = 0;
  char *text = test_data_slurp("narinfo/" REF_DEMO, &len);
  narcache_narinfo *ni = parse_text(text, len);
  narcache_hash h;
  assert_int_equal(narcache_narinfo_nar_hash(ni, &h), 0);
  narcache_narinfo_free(ni);
  static const int encodings[] = {NARCACHE_HASH_BASE16, NARCACHE_HASH_BASE64, NARCACHE_HASH_SRI};
  for (size_t i = 0; i < 3; i++) {
    char spelled[NARCACHE_HASH_STRING_MAX];
    assert_int_equal(narcache_hash_format(spelled, sizeof spelled, NULL, &h, encodings[i], 1), 0);
    assert_int_equal(verify_edited(r, text, "NarHash", spelled), 0);
  }
  free(text);
}

/* Trust rules: match by name, first key of a name wins, untrusted names
 * ignored, a malformed signature by a trusted key refuses the path. */
static void test_trust_rules(void **state) {
  keyring *r = *state;
  narcache_narinfo *ni = parse_file("golden/multisig/dyfyrpszi87hixnk6as80dh2j3vy31yh.narinfo",
                                    NULL, NULL);
  /* other-cache-2's public key under the name test-cache-1 */
  char impostor_text[256];
  size_t n = 0;
  assert_int_equal(narcache_key_format(impostor_text, sizeof impostor_text, &n, r->pk2), 0);
  impostor_text[n] = '\0';
  char relabeled[300];
  snprintf(relabeled, sizeof relabeled, "test-cache-1%s", strchr(impostor_text, ':'));
  narcache_key *impostor = NULL;
  assert_int_equal(narcache_key_parse_public(&impostor, relabeled, strlen(relabeled), NULL), 0);

  const narcache_key *none[] = {NULL};
  assert_verify(ni, none, 0, NARCACHE_ENOTFOUND, NULL);
  const narcache_key *both[] = {r->pk1, r->pk2};
  assert_verify(ni, both, 2, 0, r->pk2); /* Sigs are checked in sorted order */
  const narcache_key *impostor_first[] = {impostor, r->pk1};
  assert_verify(ni, impostor_first, 2, NARCACHE_EBADSIG, impostor);
  const narcache_key *real_first[] = {r->pk1, impostor};
  assert_verify(ni, real_first, 2, 0, r->pk1);
  const narcache_key *with_secret[] = {r->sk1}; /* a secret key verifies too */
  assert_verify(ni, with_secret, 1, 0, r->sk1);

  /* malformed by a trusted name: refused even though another verifies */
  assert_int_equal(narcache_narinfo_add_sig(ni, "test-cache-1:AAAA", 17), 0);
  const narcache_key *only1[] = {r->pk1};
  assert_verify(ni, only1, 1, NARCACHE_EBADSIG, r->pk1);
  const narcache_key *only2[] = {r->pk2}; /* ... but not our business under other trust */
  assert_verify(ni, only2, 1, 0, r->pk2);
  narcache_narinfo_clear_sigs(ni);
  assert_int_equal(narcache_narinfo_add_sig(ni, "test-cache-1:not base64!", 24),
                   NARCACHE_EBADNARINFO); /* spaces are refused at the door */
  assert_int_equal(narcache_narinfo_add_sig(ni, "test-cache-1:*notbase64*", 24), 0);
  assert_verify(ni, only1, 1, NARCACHE_EBADSIG, r->pk1);
  assert_verify(ni, only2, 1, NARCACHE_ENOTFOUND, NULL);

  const narcache_key *bad_list[] = {r->pk1, NULL};
  assert_int_equal(narcache_narinfo_verify(NULL, ni, bad_list, 2), NARCACHE_EINVAL);
  narcache_key_free(impostor);
  narcache_narinfo_free(ni);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden_files),
      cmocka_unit_test(test_signatures_equal_nix),
      cmocka_unit_test(test_sign_replaces_same_key),
      cmocka_unit_test(test_nix_verdicts_on_edited_files),
      cmocka_unit_test(test_signed_and_unsigned_fields),
      cmocka_unit_test(test_narhash_spellings_keep_signature),
      cmocka_unit_test(test_trust_rules),
  };
  return cmocka_run_group_tests(tests, keys_setup, keys_teardown);
}
