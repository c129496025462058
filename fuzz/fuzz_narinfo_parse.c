/* narinfo parsing on arbitrary bytes.
 *
 * Every input is parsed over an object that already holds a known-good
 * narinfo. A refused input must leave that narinfo untouched (it formats
 * back to the known-good text), set a non-empty message, an error offset
 * inside the input, and a "line L, column C" that match that offset.
 *
 * An accepted input must be one the documented grammar allows (ends in a
 * newline, no CR, NUL or blank line) and must: format; parse back (in a
 * fresh object) with equal fields and format to byte-identical text; be
 * rebuilt field by field through the setters to the same text; give the
 * fingerprint "1;<path>;<NarHash>;<NarSize>;<references>" built here from
 * the getters; list references and signatures of the right shape, sorted
 * and unique. narcache_narinfo_verify() with the spec's test key
 * (test-cache-1) must return what a model of Nix's rule predicts from the
 * Sig entries (0, NARCACHE_ENOTFOUND or NARCACHE_EBADSIG, with the key
 * reported), and a second trusted key of the same name must change
 * nothing (only the first key of a name counts). Signed with the spec's
 * secret key, the rebuilt copy must keep the other Sig entries, hold one
 * by test-cache-1, and verify.
 *
 * Once per process: a narinfo of NARCACHE_NARINFO_MAX_BYTES is accepted,
 * one byte longer is refused with NARCACHE_ELIMIT and changes nothing. */
#include <narcache.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "fuzz_narinfo_parse: invariant failed at line %d: %s\n", \
              __LINE__, #cond);                                                \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* The state every input is parsed over; it is in canonical form (it
 * formats back to itself), which the first call checks. */
static const char known_good[] =
    "StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo\n"
    "URL: nar/0wz9g3bqkm36q065ilrgx921761k3yi3lanznr5m1gryv96jk9zl.nar.xz\n"
    "Compression: xz\n"
    "FileHash: sha256:0wz9g3bqkm36q065ilrgx921761k3yi3lanznr5m1gryv96jk9zl\n"
    "FileSize: 208\n"
    "NarHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir\n"
    "NarSize: 216\n"
    "References: 2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1 dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo\n"
    "Deriver: ba703j8axyq4wqbbwjh4vw23rslsrwhw-ref-demo.drv\n"
    "System: x86_64-linux\n"
    "Sig: other-cache-2:"
    "RwIIUvpeohKaVaMKKR1M4bnoUqwyEKQD/0kFpadwL63e2jg3CjrBHl5R7rKYg9wO1D81N/zeg3eN9Ch4FOK5BA==\n"
    "Sig: test-cache-1:"
    "MVOWHOpheLFwZ5Pqyzv8/TQqPTOC0D1uyh7CYcJ2cl4hhXTT8HuMF31r4prIsznwb7SGDi1etae101iBE+Z4Dg==\n"
    "CA: fixed:r:sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir\n";

/* The spec's test key pair (shared/spec §3.1), and the public key that
 * signed the golden caches (tests/data/narinfo/keys): the same name, so as
 * a second trusted key it must be ignored. */
static const char spec_public[] = "test-cache-1:69k6i4vK73YVrhsKf/aQBjD2DjPeE1Y890WezEc4jUE=";
static const char golden_public[] = "test-cache-1:Rafd3TBRcGGOBAWy+lynoJ9yLAs+zGtteFsrD9X31xY=";
#define KEY_NAME "test-cache-1"

static const char spec_secret[] =
    "test-cache-1:"
    "3dfLNFVyLthTKIgut25Nd00T49HQBwTSlW/Kch8mYhvr2TqLi8rvdhWuGwp/9pAGMPYOM94TVjz3RZ7MRziNQQ==";

static narcache_key *spec_key, *golden_key, *spec_secret_key;

/* ---- helpers -------------------------------------------------------------------- */

typedef struct bytes {
  char *p;
  size_t len, cap;
} bytes;

static void bytes_append(bytes *b, const void *data, size_t len) {
  if (b->cap - b->len < len + 1) {
    size_t cap = b->cap != 0 ? b->cap : 256;
    while (cap - b->len < len + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    CHECK(p != NULL);
    b->p = p;
    b->cap = cap;
  }
  if (len != 0)
    memcpy(b->p + b->len, data, len);
  b->len += len;
  b->p[b->len] = '\0';
}

static void bytes_append_str(bytes *b, const char *s) { bytes_append(b, s, strlen(s)); }

static int str_cmp(const char *a, size_t alen, const char *b, size_t blen) {
  int c = memcmp(a, b, alen < blen ? alen : blen);
  if (c != 0)
    return c;
  return alen < blen ? -1 : alen > blen;
}

/* Two optional strings from getters are the same. */
static int same_str(const char *a, size_t alen, const char *b, size_t blen) {
  if (a == NULL || b == NULL)
    return a == NULL && b == NULL && alen == 0 && blen == 0;
  return alen == blen && memcmp(a, b, alen) == 0;
}

/* A getter's string: NUL-terminated at its length. */
static void check_getter_str(const char *s, size_t len) {
  if (s != NULL)
    CHECK(strlen(s) == len);
  else
    CHECK(len == 0);
}

static int same_hash(const narcache_hash *a, const narcache_hash *b) {
  return a->algo == b->algo && a->len == b->len && a->len <= NARCACHE_HASH_MAX_BYTES &&
         memcmp(a->digest, b->digest, a->len) == 0;
}

/* Format, NUL-terminated at its length. NULL on ENOMEM. */
static char *format_or_null(const narcache_narinfo *ni, size_t *len) {
  char *text = NULL;
  int rc = narcache_narinfo_format(&text, len, ni);
  if (rc == NARCACHE_ENOMEM)
    return NULL;
  CHECK(rc == 0 && text != NULL && strlen(text) == *len);
  return text;
}

/* ---- the getters ------------------------------------------------------------------ */

/* Every field of `a` equals the one of `b`. */
static void check_same_fields(const narcache_narinfo *a, const narcache_narinfo *b) {
  size_t la = 0, lb = 0;
  const char *sa, *sb;
#define SAME_STR(getter)             \
  do {                               \
    sa = getter(a, &la);             \
    sb = getter(b, &lb);             \
    CHECK(same_str(sa, la, sb, lb)); \
  } while (0)
  SAME_STR(narcache_narinfo_store_path);
  SAME_STR(narcache_narinfo_url);
  SAME_STR(narcache_narinfo_compression);
  SAME_STR(narcache_narinfo_deriver);
  SAME_STR(narcache_narinfo_system);
  SAME_STR(narcache_narinfo_ca);
#undef SAME_STR
  narcache_hash ha, hb;
  int ra = narcache_narinfo_file_hash(a, &ha), rb = narcache_narinfo_file_hash(b, &hb);
  CHECK(ra == rb && (ra != 0 || same_hash(&ha, &hb)));
  uint64_t ua = 0, ub = 0;
  ra = narcache_narinfo_file_size(a, &ua);
  rb = narcache_narinfo_file_size(b, &ub);
  CHECK(ra == rb && (ra != 0 || ua == ub));
  ra = narcache_narinfo_nar_hash(a, &ha);
  rb = narcache_narinfo_nar_hash(b, &hb);
  CHECK(ra == 0 && rb == 0 && same_hash(&ha, &hb));
  CHECK(narcache_narinfo_nar_size(a) == narcache_narinfo_nar_size(b));
  size_t n = narcache_narinfo_reference_count(a);
  CHECK(n == narcache_narinfo_reference_count(b));
  for (size_t i = 0; i < n; i++) {
    sa = narcache_narinfo_reference(a, i, &la);
    sb = narcache_narinfo_reference(b, i, &lb);
    CHECK(sa != NULL && sb != NULL && same_str(sa, la, sb, lb));
  }
  n = narcache_narinfo_sig_count(a);
  CHECK(n == narcache_narinfo_sig_count(b));
  for (size_t i = 0; i < n; i++) {
    sa = narcache_narinfo_sig(a, i, &la);
    sb = narcache_narinfo_sig(b, i, &lb);
    CHECK(sa != NULL && sb != NULL && same_str(sa, la, sb, lb));
  }
}

/* Shapes of the fields of an accepted narinfo. */
static void check_shapes(const narcache_narinfo *ni) {
  size_t len = 0;
  const char *s = narcache_narinfo_store_path(ni, &len);
  CHECK(s != NULL);
  check_getter_str(s, len);
  const char *base = NULL;
  CHECK(narcache_store_path_parse(&base, s, len, NARCACHE_STORE_DIR, NULL) == 0);
  CHECK(base == s + strlen(NARCACHE_STORE_DIR) + 1);

  s = narcache_narinfo_url(ni, &len);
  CHECK(s != NULL && len > 0);
  check_getter_str(s, len);
  for (size_t i = 0; i < len; i++)
    CHECK((unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f);

  s = narcache_narinfo_compression(ni, &len);
  CHECK(s != NULL && len > 0);
  check_getter_str(s, len);

  s = narcache_narinfo_deriver(ni, &len);
  check_getter_str(s, len);
  if (s != NULL)
    CHECK(narcache_store_path_parse_base(NULL, s, len, NULL) == 0);

  s = narcache_narinfo_system(ni, &len);
  check_getter_str(s, len);
  if (s != NULL)
    CHECK(len > 0);

  s = narcache_narinfo_ca(ni, &len);
  check_getter_str(s, len);
  if (s != NULL)
    CHECK((len > 12 && memcmp(s, "text:sha256:", 12) == 0) ||
          (len > 6 && memcmp(s, "fixed:", 6) == 0));

  narcache_hash h;
  CHECK(narcache_narinfo_nar_hash(ni, &h) == 0 && h.algo == NARCACHE_HASH_SHA256 &&
        h.len == 32);
  CHECK(narcache_narinfo_nar_size(ni) != 0);
  int rc = narcache_narinfo_file_hash(ni, &h);
  CHECK(rc == 0 || rc == NARCACHE_ENOTFOUND);
  if (rc == 0)
    CHECK(h.len != 0 && h.len == narcache_hash_algo_size((int)h.algo));

  /* References: base names "<hash>-<name>", sorted, no duplicates. */
  size_t n = narcache_narinfo_reference_count(ni);
  const char *prev = NULL;
  size_t prev_len = 0;
  for (size_t i = 0; i < n; i++) {
    s = narcache_narinfo_reference(ni, i, &len);
    CHECK(s != NULL);
    check_getter_str(s, len);
    CHECK(len > NARCACHE_STORE_HASH_CHARS + 1 && s[NARCACHE_STORE_HASH_CHARS] == '-');
    const char *name = NULL;
    CHECK(narcache_store_path_parse_base(&name, s, len, NULL) == 0);
    CHECK(name == s + NARCACHE_STORE_HASH_CHARS + 1);
    if (prev != NULL)
      CHECK(str_cmp(prev, prev_len, s, len) < 0);
    prev = s;
    prev_len = len;
  }
  CHECK(narcache_narinfo_reference(ni, n, &len) == NULL);

  /* Signatures: "name:...", non-empty name, sorted, no duplicates. */
  n = narcache_narinfo_sig_count(ni);
  prev = NULL;
  for (size_t i = 0; i < n; i++) {
    s = narcache_narinfo_sig(ni, i, &len);
    CHECK(s != NULL);
    check_getter_str(s, len);
    const char *colon = memchr(s, ':', len);
    CHECK(colon != NULL && colon != s);
    if (prev != NULL)
      CHECK(str_cmp(prev, prev_len, s, len) < 0);
    prev = s;
    prev_len = len;
  }
  CHECK(narcache_narinfo_sig(ni, n, &len) == NULL);
}

/* Index of the k-th of n items (k <= n) to add: the odd ones backwards,
 * then the even ones forwards, then item 0 again. */
static size_t shuffled(size_t k, size_t n) {
  size_t odd = n / 2;
  if (k < odd)
    return 2 * (odd - k) - 1;
  k -= odd;
  return k < n - odd ? 2 * k : 0;
}

static int by_test_key(const char *sig, size_t len) {
  return len > sizeof KEY_NAME - 1 && memcmp(sig, KEY_NAME ":", sizeof KEY_NAME) == 0;
}

/* The Sig entries not by test-cache-1, one per line; how many are. */
static size_t other_sigs(bytes *out, const narcache_narinfo *ni) {
  size_t ours = 0;
  for (size_t i = 0; i < narcache_narinfo_sig_count(ni); i++) {
    size_t len = 0;
    const char *s = narcache_narinfo_sig(ni, i, &len);
    if (by_test_key(s, len)) {
      ours++;
      continue;
    }
    bytes_append(out, s, len);
    bytes_append_str(out, "\n");
  }
  return ours;
}

/* Sign with the spec's secret key: the entries by test-cache-1 are
 * replaced by the one signature of the fingerprint (ed25519 is
 * deterministic), which verifies; the others stay. */
static void check_sign(narcache_narinfo *b) {
  bytes before = {NULL, 0, 0}, after = {NULL, 0, 0};
  other_sigs(&before, b);
  int rc = narcache_narinfo_sign(b, spec_secret_key);
  if (rc != NARCACHE_ENOMEM) {
    CHECK(rc == 0);
    CHECK(other_sigs(&after, b) == 1);
    CHECK(before.len == after.len);
    CHECK(before.len == 0 || memcmp(before.p, after.p, before.len) == 0);
    char *fp = NULL;
    size_t fp_len = 0;
    rc = narcache_narinfo_fingerprint(&fp, &fp_len, b);
    if (rc != NARCACHE_ENOMEM) {
      CHECK(rc == 0);
      uint8_t sig[64];
      CHECK(narcache_key_sign(sig, sizeof sig, spec_secret_key, fp, fp_len) == 0);
      char want[sizeof KEY_NAME + 89];
      size_t want_len = 0;
      memcpy(want, KEY_NAME ":", sizeof KEY_NAME);
      CHECK(narcache_base64_encode(want + sizeof KEY_NAME, sizeof want - sizeof KEY_NAME,
                                   &want_len, sig, sizeof sig) == 0);
      want_len += sizeof KEY_NAME;
      int found = 0;
      for (size_t i = 0; i < narcache_narinfo_sig_count(b); i++) {
        size_t len = 0;
        const char *s = narcache_narinfo_sig(b, i, &len);
        found |= len == want_len && memcmp(s, want, len) == 0;
      }
      CHECK(found);
    }
    narcache_free(fp);
    const narcache_key *keys[1] = {spec_key};
    const narcache_key *who = NULL;
    rc = narcache_narinfo_verify(&who, b, keys, 1);
    if (rc != NARCACHE_ENOMEM)
      CHECK(rc == 0 && who == spec_key);
  }
  free(before.p);
  free(after.p);
}

/* Rebuild `ni` through the setters: it must format to `text`. */
static void check_setters(const narcache_narinfo *ni, const char *text, size_t text_len) {
  narcache_narinfo *b = NULL;
  if (narcache_narinfo_new(&b, NULL) != 0)
    return;
  size_t len = 0;
  const char *s;
  int ok = 1;
#define SET(call)               \
  do {                          \
    int rc_ = (call);           \
    if (rc_ == NARCACHE_ENOMEM) \
      ok = 0;                   \
    else                        \
      CHECK(rc_ == 0);          \
  } while (0)
  s = narcache_narinfo_store_path(ni, &len);
  SET(narcache_narinfo_set_store_path(b, s, len));
  s = narcache_narinfo_url(ni, &len);
  SET(narcache_narinfo_set_url(b, s, len));
  s = narcache_narinfo_compression(ni, &len);
  SET(narcache_narinfo_set_compression(b, s, len));
  narcache_hash h;
  if (narcache_narinfo_file_hash(ni, &h) == 0)
    SET(narcache_narinfo_set_file_hash(b, &h));
  uint64_t size = 0;
  if (narcache_narinfo_file_size(ni, &size) == 0)
    SET(narcache_narinfo_set_file_size(b, 1, size));
  CHECK(narcache_narinfo_nar_hash(ni, &h) == 0);
  SET(narcache_narinfo_set_nar_hash(b, &h));
  SET(narcache_narinfo_set_nar_size(b, narcache_narinfo_nar_size(ni)));
  /* Out of order and once twice, so the set has to sort and dedupe. */
  size_t n = narcache_narinfo_reference_count(ni);
  for (size_t k = 0; n > 0 && k <= n; k++) {
    s = narcache_narinfo_reference(ni, shuffled(k, n), &len);
    SET(narcache_narinfo_add_reference(b, s, len));
  }
  if ((s = narcache_narinfo_deriver(ni, &len)) != NULL)
    SET(narcache_narinfo_set_deriver(b, s, len));
  if ((s = narcache_narinfo_system(ni, &len)) != NULL)
    SET(narcache_narinfo_set_system(b, s, len));
  n = narcache_narinfo_sig_count(ni);
  for (size_t k = 0; n > 0 && k <= n; k++) {
    s = narcache_narinfo_sig(ni, shuffled(k, n), &len);
    SET(narcache_narinfo_add_sig(b, s, len));
  }
  if ((s = narcache_narinfo_ca(ni, &len)) != NULL)
    SET(narcache_narinfo_set_ca(b, s, len));
#undef SET
  if (ok) {
    check_same_fields(ni, b);
    size_t again_len = 0;
    char *again = format_or_null(b, &again_len);
    if (again != NULL)
      CHECK(again_len == text_len && memcmp(again, text, text_len) == 0);
    narcache_free(again);
    check_sign(b);
  }
  narcache_narinfo_free(b);
}

/* The fingerprint, as spec §4.1 builds it from the fields. */
static void expected_fingerprint(bytes *fp, const narcache_narinfo *ni) {
  size_t len = 0;
  const char *path = narcache_narinfo_store_path(ni, &len);
  bytes_append_str(fp, "1;");
  bytes_append(fp, path, len);
  bytes_append_str(fp, ";");
  narcache_hash h;
  CHECK(narcache_narinfo_nar_hash(ni, &h) == 0);
  char hash[NARCACHE_HASH_STRING_MAX];
  size_t hash_len = 0;
  CHECK(narcache_hash_format(hash, sizeof hash, &hash_len, &h, NARCACHE_HASH_NIX32, 1) == 0);
  CHECK(hash_len == 7 + 52 && memcmp(hash, "sha256:", 7) == 0);
  bytes_append(fp, hash, hash_len);
  char num[32];
  snprintf(num, sizeof num, ";%" PRIu64 ";", narcache_narinfo_nar_size(ni));
  bytes_append_str(fp, num);
  for (size_t i = 0; i < narcache_narinfo_reference_count(ni); i++) {
    const char *ref = narcache_narinfo_reference(ni, i, &len);
    if (i > 0)
      bytes_append_str(fp, ",");
    bytes_append_str(fp, NARCACHE_STORE_DIR "/");
    bytes_append(fp, ref, len);
  }
}

/* ---- signatures ------------------------------------------------------------------- */

/* Decode a signature's base64 as the library reads it ('=' padding may be
 * left out). 1 and 64 bytes in sig, or 0 when it is malformed. */
static int decode_sig(uint8_t sig[64], const char *b64, size_t len) {
  char padded[96];
  if (len == 86 && b64[len - 1] != '=') {
    memcpy(padded, b64, len);
    padded[86] = padded[87] = '=';
    b64 = padded;
    len = 88;
  }
  if (len != 88)
    return 0;
  size_t got = 0;
  return narcache_base64_decode(sig, 64, &got, b64, len, NULL) == 0 && got == 64;
}

/* What verify() must return with test-cache-1 trusted: the Sig entries of
 * other names are ignored; a malformed one of ours is EBADSIG whatever the
 * others say; else 0 if one verifies, EBADSIG if none does. */
static int predict_verify(const narcache_narinfo *ni, const char *fp, size_t fp_len) {
  int ours = 0, malformed = 0, good = 0;
  for (size_t i = 0; i < narcache_narinfo_sig_count(ni); i++) {
    size_t len = 0;
    const char *s = narcache_narinfo_sig(ni, i, &len);
    const size_t name_len = sizeof KEY_NAME - 1;
    if (!by_test_key(s, len))
      continue;
    ours = 1;
    uint8_t sig[64];
    if (!decode_sig(sig, s + name_len + 1, len - name_len - 1))
      malformed = 1;
    else if (narcache_key_verify(spec_key, sig, sizeof sig, fp, fp_len) == 0)
      good = 1;
  }
  if (!ours)
    return NARCACHE_ENOTFOUND;
  if (malformed)
    return NARCACHE_EBADSIG;
  return good ? 0 : NARCACHE_EBADSIG;
}

static void check_verify(const narcache_narinfo *ni, const char *fp, size_t fp_len) {
  const narcache_key *keys[2] = {spec_key, golden_key};
  const narcache_key *who = NULL;
  int rc = narcache_narinfo_verify(&who, ni, keys, 1);
  if (rc == NARCACHE_ENOMEM)
    return;
  CHECK(rc == 0 || rc == NARCACHE_ENOTFOUND || rc == NARCACHE_EBADSIG);
  CHECK(rc == predict_verify(ni, fp, fp_len));
  CHECK(who == (rc == NARCACHE_ENOTFOUND ? NULL : spec_key));

  /* A second trusted key of the same name does not count. */
  const narcache_key *who2 = NULL;
  int rc2 = narcache_narinfo_verify(&who2, ni, keys, 2);
  if (rc2 != NARCACHE_ENOMEM)
    CHECK(rc2 == rc && who2 == who);

  /* No trusted keys: nothing is found. */
  rc2 = narcache_narinfo_verify(&who2, ni, NULL, 0);
  if (rc2 != NARCACHE_ENOMEM)
    CHECK(rc2 == NARCACHE_ENOTFOUND && who2 == NULL);
}

/* ---- per input -------------------------------------------------------------------- */

static void check_accepted(const narcache_narinfo *ni, const uint8_t *data, size_t size) {
  /* The grammar: "Key: value\n" lines, no CR, NUL or blank line. */
  CHECK(size > 0 && data[size - 1] == '\n' && data[0] != '\n');
  CHECK(memchr(data, '\r', size) == NULL && memchr(data, '\0', size) == NULL);
  for (size_t i = 0; i + 1 < size; i++)
    CHECK(!(data[i] == '\n' && data[i + 1] == '\n'));
  CHECK(size <= NARCACHE_NARINFO_MAX_BYTES);

  check_shapes(ni);

  size_t text_len = 0;
  char *text = format_or_null(ni, &text_len);
  if (text == NULL)
    return;
  /* Formatting is a fixed point: parse the text back in a fresh object. */
  narcache_narinfo *again = NULL;
  if (narcache_narinfo_new(&again, NULL) == 0) {
    int rc = narcache_narinfo_parse(again, text, text_len);
    if (rc != NARCACHE_ENOMEM) {
      if (rc != 0)
        fprintf(stderr, "fuzz_narinfo_parse: formatted text refused: %s\n%s",
                narcache_narinfo_errmsg(again), text);
      CHECK(rc == 0);
      check_same_fields(ni, again);
      size_t text2_len = 0;
      char *text2 = format_or_null(again, &text2_len);
      if (text2 != NULL)
        CHECK(text2_len == text_len && memcmp(text, text2, text_len) == 0);
      narcache_free(text2);
    }
    narcache_narinfo_free(again);
  }
  check_setters(ni, text, text_len);
  narcache_free(text);

  /* The fingerprint. */
  char *fp = NULL;
  size_t fp_len = 0;
  int rc = narcache_narinfo_fingerprint(&fp, &fp_len, ni);
  if (rc == NARCACHE_ENOMEM)
    return;
  CHECK(rc == 0 && fp != NULL && strlen(fp) == fp_len);
  size_t path_len = 0;
  const char *path = narcache_narinfo_store_path(ni, &path_len);
  CHECK(fp_len > 2 + path_len && memcmp(fp, "1;", 2) == 0 &&
        memcmp(fp + 2, path, path_len) == 0 && fp[2 + path_len] == ';');
  bytes want = {NULL, 0, 0};
  expected_fingerprint(&want, ni);
  CHECK(want.len == fp_len && memcmp(want.p, fp, fp_len) == 0);
  free(want.p);

  check_verify(ni, fp, fp_len);
  narcache_free(fp);
}

/* A refusal: a message, an offset inside the input, and a line and column
 * that match it. */
static void check_refused(const narcache_narinfo *ni, int rc, const uint8_t *data, size_t size) {
  CHECK(rc == NARCACHE_EBADNARINFO || rc == NARCACHE_ELIMIT);
  const char *msg = narcache_narinfo_errmsg(ni);
  CHECK(msg != NULL && msg[0] != '\0');
  size_t off = narcache_narinfo_err_offset(ni);
  CHECK(off <= size);
  size_t line = 0, column = 0;
  if (strncmp(msg, "line ", 5) == 0) {
    CHECK(sscanf(msg, "line %zu, column %zu:", &line, &column) == 2);
    size_t want_line = 1, line_start = 0;
    for (size_t i = 0; i < off; i++)
      if (data[i] == '\n') {
        want_line++;
        line_start = i + 1;
      }
    if (line != want_line || column != off - line_start + 1)
      fprintf(stderr, "fuzz_narinfo_parse: offset %zu is line %zu, column %zu; message: %s\n",
              off, want_line, off - line_start + 1, msg);
    CHECK(line == want_line && column == off - line_start + 1);
  }
}

/* NARCACHE_NARINFO_MAX_BYTES is accepted, one byte more is refused and
 * changes nothing (the fuzzer's inputs are never that long): the
 * known-good narinfo and one long unknown field. `ni` holds the
 * known-good narinfo. */
static void check_size_limit(narcache_narinfo *ni) {
  const size_t max = NARCACHE_NARINFO_MAX_BYTES, head = sizeof known_good - 1;
  char *big = malloc(max + 1);
  CHECK(big != NULL);
  memcpy(big, known_good, head);
  memcpy(big + head, "X: ", 3);
  memset(big + head + 3, 'x', max - head - 4);
  big[max - 1] = '\n';
  big[max] = '\n';
  CHECK(narcache_narinfo_parse(ni, big, max + 1) == NARCACHE_ELIMIT);
  CHECK(narcache_narinfo_errmsg(ni)[0] != '\0' && narcache_narinfo_err_offset(ni) <= max + 1);
  size_t len = 0;
  char *text = format_or_null(ni, &len);
  CHECK(text != NULL && len == head && memcmp(text, known_good, len) == 0);
  narcache_free(text);
  CHECK(narcache_narinfo_parse(ni, big, max) == 0);
  free(big);
}

static void init_once(void) {
  static int done;
  if (done)
    return;
  CHECK(narcache_key_parse_public(&spec_key, spec_public, sizeof spec_public - 1, NULL) == 0);
  CHECK(narcache_key_parse_public(&golden_key, golden_public, sizeof golden_public - 1, NULL) ==
        0);
  CHECK(narcache_key_parse_secret(&spec_secret_key, spec_secret, sizeof spec_secret - 1,
                                  NULL) == 0);
  /* The known-good text is canonical. */
  narcache_narinfo *ni = NULL;
  CHECK(narcache_narinfo_new(&ni, NULL) == 0);
  CHECK(narcache_narinfo_parse(ni, known_good, sizeof known_good - 1) == 0);
  size_t len = 0;
  char *text = format_or_null(ni, &len);
  CHECK(text != NULL && len == sizeof known_good - 1 && memcmp(text, known_good, len) == 0);
  narcache_free(text);
  check_size_limit(ni);
  narcache_narinfo_free(ni);
  done = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  init_once();
  narcache_narinfo *ni = NULL;
  if (narcache_narinfo_new(&ni, NULL) != 0)
    return 0;
  if (narcache_narinfo_parse(ni, known_good, sizeof known_good - 1) != 0) {
    narcache_narinfo_free(ni);
    return 0;
  }
  int rc = narcache_narinfo_parse(ni, (const char *)data, size);
  if (rc == 0) {
    check_accepted(ni, data, size);
  } else if (rc != NARCACHE_ENOMEM) {
    check_refused(ni, rc, data, size);
    /* The object still holds the known-good narinfo. */
    size_t len = 0;
    char *kept = format_or_null(ni, &len);
    if (kept != NULL)
      CHECK(len == sizeof known_good - 1 && memcmp(kept, known_good, len) == 0);
    narcache_free(kept);
  }
  narcache_narinfo_free(ni);
  return 0;
}
