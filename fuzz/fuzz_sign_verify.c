/* Keys, signing and verification against raw libsodium as the oracle.
 *
 * Input layout: 4 header bytes, then the key name, a 32-byte seed and the
 * message (missing bytes read as zero).
 *   [0] flags: bit0 the name is mapped onto the allowed characters (else
 *       taken raw, so it may break the rule); bit1 the tamper test flips a
 *       signature bit (else a message bit; always the signature for an
 *       empty message); bit2 the secret key text ends in "\n"; bit3 its
 *       base64 '=' padding is left out; bit4 a bit of the public half of
 *       the secret is flipped (must be refused); bit5 a long name
 *       (250 + [1] % 16 bytes, across the 255-byte limit).
 *   [1] name length % 48 (0: empty, refused), unless bit5.
 *   [2] [3] the bit to flip (little-endian, modulo the bits available).
 *
 * The secret text "name:base64(seed || pk)" is built with libsodium
 * (crypto_sign_seed_keypair, sodium_bin2base64). It must parse exactly
 * when the name obeys narinfo.h (1..255 bytes of printable ASCII without
 * ' ' or ':') and the halves agree; then narcache_key_sign must equal
 * crypto_sign_detached (ed25519 is deterministic), both verifiers accept
 * it and both refuse it after the flip, the public key formats as
 * "name:base64(pk)" and verifies too, a public key cannot sign, and the
 * secret formats back to the padded text.
 * The whole input is also given to both parsers as a key text: it must be
 * accepted exactly when an oracle built on sodium_base642bin (padded or
 * not, strict, exact length, matching halves; non-ASCII digits refused
 * first, as libsodium 1.0.18 reads bytes >= 0x80 as '/') accepts it; an
 * accepted key formats to the input (less one final "\n" and possibly the
 * padding), parses back identically and signs like libsodium. */
#include <narcache.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "fuzz_sign_verify: invariant failed at line %d: %s\n", \
              __LINE__, #cond);                                              \
      abort();                                                               \
    }                                                                        \
  } while (0)

#define HEADER 4
#define NAME_CAP 272
#define TEXT_CAP 512 /* name (<= 265) + ':' + 88 digits + '\n' */

static int name_ok(const uint8_t *name, size_t len) {
  if (len == 0 || len > 255)
    return 0;
  for (size_t i = 0; i < len; i++)
    if (name[i] <= ' ' || name[i] >= 0x7f || name[i] == ':')
      return 0;
  return 1;
}

/* "name:" + base64(bytes) into out (NUL terminated); returns the length. */
static size_t key_text(char *out, const uint8_t *name, size_t name_len, const uint8_t *bytes,
                       size_t n, int variant) {
  memcpy(out, name, name_len);
  out[name_len] = ':';
  CHECK(sodium_bin2base64(out + name_len + 1, TEXT_CAP - name_len - 1, bytes, n, variant) !=
        NULL);
  return name_len + 1 + strlen(out + name_len + 1);
}

static void check_format(const narcache_key *k, const char *want, size_t want_len) {
  char got[TEXT_CAP];
  size_t len = 0;
  CHECK(narcache_key_format(got, sizeof got, &len, k) == 0);
  CHECK(len == want_len && memcmp(got, want, len) == 0);
  CHECK(narcache_key_format(got, want_len, &len, k) == NARCACHE_EBUFS);
}

/* A parsed secret key `k` whose libsodium secret is `sk`: signatures agree,
 * verify, and stop verifying after one flipped bit (of the signature when
 * `in_sig` or the message is empty, else of the message). */
static void check_signing(const narcache_key *k, const uint8_t *sk, const uint8_t *msg,
                          size_t mlen, int in_sig, unsigned flip) {
  uint8_t sig[64], want[64];
  const uint8_t *pk = sk + 32;
  CHECK(narcache_key_signature_bytes() == 64);
  CHECK(narcache_key_sign(sig, sizeof sig, k, msg, mlen) == 0);
  CHECK(crypto_sign_detached(want, NULL, msg, mlen, sk) == 0);
  CHECK(memcmp(sig, want, 64) == 0);
  CHECK(narcache_key_verify(k, sig, 64, msg, mlen) == 0);
  CHECK(crypto_sign_verify_detached(sig, msg, mlen, pk) == 0);
  CHECK(narcache_key_verify(k, sig, 63, msg, mlen) == NARCACHE_EBADSIG);
  CHECK(narcache_key_sign(sig, 63, k, msg, mlen) == NARCACHE_EINVAL);
  if (in_sig || mlen == 0) {
    sig[flip % 512 / 8] ^= (uint8_t)(1u << (flip % 8));
    CHECK(narcache_key_verify(k, sig, 64, msg, mlen) == NARCACHE_EBADSIG);
    CHECK(crypto_sign_verify_detached(sig, msg, mlen, pk) != 0);
  } else {
    uint8_t *copy = malloc(mlen);
    CHECK(copy != NULL);
    memcpy(copy, msg, mlen);
    size_t bit = flip % (8 * (mlen < 8192 ? mlen : 8192));
    copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    CHECK(narcache_key_verify(k, sig, 64, copy, mlen) == NARCACHE_EBADSIG);
    CHECK(crypto_sign_verify_detached(sig, copy, mlen, pk) != 0);
    free(copy);
  }
}

/* The public half of secret `k` ("name:base64(pk)"), parsed back, verifies
 * what `k` signs and cannot sign. */
static void check_public(const narcache_key *k, const uint8_t *name, size_t name_len,
                         const uint8_t *pk, const uint8_t *msg, size_t mlen) {
  char want[TEXT_CAP];
  size_t want_len = key_text(want, name, name_len, pk, 32, sodium_base64_VARIANT_ORIGINAL);
  narcache_key *pub = NULL, *again = NULL;
  CHECK(narcache_key_public(&pub, k) == 0);
  CHECK(narcache_key_is_secret(pub) == 0);
  check_format(pub, want, want_len);
  size_t nl = 0;
  const char *nm = narcache_key_name(pub, &nl);
  CHECK(nl == name_len && memcmp(nm, name, nl) == 0 && nm[nl] == '\0');
  CHECK(narcache_key_parse_public(&again, want, want_len, NULL) == 0);
  check_format(again, want, want_len);
  uint8_t sig[64];
  CHECK(narcache_key_sign(sig, sizeof sig, pub, msg, mlen) == NARCACHE_EINVAL);
  CHECK(narcache_key_sign(sig, sizeof sig, k, msg, mlen) == 0);
  CHECK(narcache_key_verify(pub, sig, 64, msg, mlen) == 0);
  CHECK(narcache_key_verify(again, sig, 64, msg, mlen) == 0);
  narcache_key_free(again);
  narcache_key_free(pub);
}

/* Oracle for a key text: the decoded key bytes into `bytes`, or 0. */
static int oracle_parse(const char *text, size_t len, int secret, uint8_t *bytes,
                        size_t *name_len) {
  if (len > 0 && text[len - 1] == '\n')
    len--;
  const char *colon = memchr(text, ':', len);
  if (colon == NULL || !name_ok((const uint8_t *)text, (size_t)(colon - text)))
    return 0;
  *name_len = (size_t)(colon - text);
  const char *digits = colon + 1;
  size_t dlen = len - *name_len - 1, want = secret ? 64 : 32, got = 0;
  /* libsodium 1.0.18 decodes any byte >= 0x80 as '/': only ASCII is
   * left to it. */
  for (size_t i = 0; i < dlen; i++)
    if ((unsigned char)digits[i] >= 0x80)
      return 0;
  int ok = 0;
  static const int variants[] = {sodium_base64_VARIANT_ORIGINAL,
                                 sodium_base64_VARIANT_ORIGINAL_NO_PADDING};
  for (int v = 0; v < 2 && !ok; v++)
    ok = sodium_base642bin(bytes, want, digits, dlen, NULL, &got, NULL, variants[v]) == 0 &&
         got == want;
  if (ok && secret) {
    uint8_t pk[32], sk[64];
    CHECK(crypto_sign_seed_keypair(pk, sk, bytes) == 0);
    ok = memcmp(pk, bytes + 32, 32) == 0;
    sodium_memzero(sk, sizeof sk);
  }
  return ok;
}

static void raw_text(const uint8_t *data, size_t size, int secret) {
  const char *text = (const char *)data;
  uint8_t bytes[64];
  size_t name_len = 0, where = 0;
  int ok = oracle_parse(text, size, secret, bytes, &name_len);
  narcache_key *k = NULL;
  int rc = secret ? narcache_key_parse_secret(&k, text, size, &where)
                  : narcache_key_parse_public(&k, text, size, &where);
  if (!ok) {
    CHECK(rc == NARCACHE_EBADKEY && k == NULL && where <= size);
    return;
  }
  CHECK(rc == 0 && k != NULL && narcache_key_is_secret(k) == secret);
  char want[TEXT_CAP];
  size_t want_len = key_text(want, data, name_len, bytes, secret ? 64 : 32,
                             sodium_base64_VARIANT_ORIGINAL);
  check_format(k, want, want_len);
  /* The text itself, less one "\n" and perhaps the padding. */
  size_t len = size > 0 && text[size - 1] == '\n' ? size - 1 : size;
  size_t unpadded = want_len;
  while (want[unpadded - 1] == '=')
    unpadded--;
  CHECK(len <= want_len && len >= unpadded && memcmp(text, want, len) == 0);
  narcache_key *again = NULL;
  CHECK((secret ? narcache_key_parse_secret(&again, want, want_len, NULL)
                : narcache_key_parse_public(&again, want, want_len, NULL)) == 0);
  check_format(again, want, want_len);
  if (secret) {
    check_signing(k, bytes, data, size, 1, (unsigned)size);
    check_public(k, data, name_len, bytes + 32, data, size);
  }
  narcache_key_free(again);
  narcache_key_free(k);
  sodium_memzero(bytes, sizeof bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  if (!ready) {
    CHECK(sodium_init() >= 0);
    ready = 1;
  }
  raw_text(data, size, 1);
  raw_text(data, size, 0);
  if (size < HEADER)
    return 0;
  uint8_t flags = data[0];
  unsigned flip = (unsigned)data[2] | (unsigned)data[3] << 8;
  size_t pos = HEADER;

  uint8_t name[NAME_CAP];
  size_t name_len = (flags & 0x20) ? 250 + data[1] % 16 : data[1] % 48;
  for (size_t i = 0; i < name_len; i++) {
    uint8_t b = pos < size ? data[pos++] : 0;
    if (flags & 1) {
      b = (uint8_t)(0x21 + b % 94);
      if (b == ':')
        b = '_';
    }
    name[i] = b;
  }
  uint8_t seed[32] = {0}, pk[32], sk[64];
  for (size_t i = 0; i < 32 && pos < size; i++)
    seed[i] = data[pos++];
  const uint8_t *msg = data + pos;
  size_t mlen = size - pos;
  CHECK(crypto_sign_seed_keypair(pk, sk, seed) == 0);
  CHECK(memcmp(sk, seed, 32) == 0 && memcmp(sk + 32, pk, 32) == 0);

  /* The secret key text, possibly with a wrong public half. */
  uint8_t stored[64];
  memcpy(stored, sk, 64);
  if (flags & 0x10)
    stored[32 + flip % 256 / 8] ^= (uint8_t)(1u << (flip % 8));
  char text[TEXT_CAP];
  size_t len = key_text(text, name, name_len, stored, 64,
                        (flags & 8) ? sodium_base64_VARIANT_ORIGINAL_NO_PADDING
                                    : sodium_base64_VARIANT_ORIGINAL);
  if (flags & 4)
    text[len++] = '\n';
  int valid = name_ok(name, name_len) && !(flags & 0x10);

  narcache_key *k = NULL;
  size_t where = 0;
  int rc = narcache_key_parse_secret(&k, text, len, &where);
  if (!valid) {
    CHECK(rc == NARCACHE_EBADKEY && k == NULL && where <= len);
  } else {
    CHECK(rc == 0 && narcache_key_is_secret(k) == 1);
    size_t nl = 0;
    const char *nm = narcache_key_name(k, &nl);
    CHECK(nl == name_len && memcmp(nm, name, nl) == 0 && nm[nl] == '\0');
    check_signing(k, sk, msg, mlen, (flags & 2) != 0, flip);
    check_public(k, name, name_len, pk, msg, mlen);
    char want[TEXT_CAP];
    size_t want_len = key_text(want, name, name_len, sk, 64, sodium_base64_VARIANT_ORIGINAL);
    check_format(k, want, want_len);
    sodium_memzero(want, sizeof want);
  }
  narcache_key_free(k);

  /* The public key text on its own. */
  char ptext[TEXT_CAP];
  size_t plen = key_text(ptext, name, name_len, pk, 32, sodium_base64_VARIANT_ORIGINAL);
  k = NULL;
  rc = narcache_key_parse_public(&k, ptext, plen, &where);
  if (!name_ok(name, name_len)) {
    CHECK(rc == NARCACHE_EBADKEY && k == NULL && where <= plen);
  } else {
    CHECK(rc == 0 && narcache_key_is_secret(k) == 0);
    check_format(k, ptext, plen);
    uint8_t sig[64];
    CHECK(crypto_sign_detached(sig, NULL, msg, mlen, sk) == 0);
    CHECK(narcache_key_verify(k, sig, 64, msg, mlen) == 0);
    sig[flip % 512 / 8] ^= (uint8_t)(1u << (flip % 8));
    CHECK(narcache_key_verify(k, sig, 64, msg, mlen) == NARCACHE_EBADSIG);
  }
  narcache_key_free(k);
  sodium_memzero(sk, sizeof sk);
  sodium_memzero(text, sizeof text);
  return 0;
}
