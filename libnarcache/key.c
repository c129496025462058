/* ed25519 keys in Nix's text format: "name:base64(key bytes)". Secret
 * bytes live in libsodium's guarded memory and never reach a message. */
#include "common_internal.h"
#include "hash_internal.h"
#include "narcache/narinfo.h"

#include <sodium.h>
#include <string.h>

struct narcache_key {
  char name[NARCACHE_KEY_NAME_MAX + 1];
  size_t name_len;
  int secret;
  uint8_t public_key[crypto_sign_PUBLICKEYBYTES];
  uint8_t *secret_key; /* crypto_sign_SECRETKEYBYTES in sodium_malloc memory */
};

size_t narcache_key_signature_bytes(void) { return crypto_sign_BYTES; }

/* libsodium must be initialised before sodium_malloc or signing; doing it
 * here (idempotent, thread-safe) spares callers of pure key functions. */
static int ensure_sodium(void) { return sodium_init() < 0 ? NARCACHE_ECRYPTO : NARCACHE_OK; }

/* Names end up in "Sig: name:..." lines and in space-separated
 * trusted-public-keys lists, so only printable ASCII without ' ' or ':'
 * can round-trip through both. */
static int check_name(const char *name, size_t len) {
  if (name == NULL || len == 0 || len > NARCACHE_KEY_NAME_MAX)
    return NARCACHE_EBADKEY;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)name[i] <= ' ' || (unsigned char)name[i] >= 0x7f || name[i] == ':')
      return NARCACHE_EBADKEY;
  return NARCACHE_OK;
}

static int new_key(narcache_key **out, const char *name, size_t len, int secret) {
  narcache_key *k = narcache__calloc(1, sizeof *k);
  if (k == NULL)
    return NARCACHE_ENOMEM;
  memcpy(k->name, name, len);
  k->name_len = len;
  k->secret = secret;
  if (secret) {
    k->secret_key = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    if (k->secret_key == NULL) {
      narcache__free(k);
      return NARCACHE_ENOMEM;
    }
  }
  *out = k;
  return NARCACHE_OK;
}

void narcache_key_free(narcache_key *k) {
  if (k == NULL)
    return;
  if (k->secret_key != NULL)
    sodium_free(k->secret_key); /* wipes before unmapping */
  sodium_memzero(k, sizeof *k);
  narcache__free(k);
}

int narcache_key_generate(narcache_key **out, const char *name, size_t len) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  int rc = check_name(name, len);
  if (rc == 0)
    rc = ensure_sodium();
  narcache_key *k = NULL;
  if (rc == 0)
    rc = new_key(&k, name, len, 1);
  if (rc == 0 && crypto_sign_keypair(k->public_key, k->secret_key) != 0)
    rc = NARCACHE_ECRYPTO;
  if (rc < 0) {
    narcache_key_free(k);
    return rc;
  }
  *out = k;
  return NARCACHE_OK;
}

/* libsodium's secret layout is seed || public key. Recompute the public
 * key from the seed: a key file whose halves disagree would sign with one
 * key and advertise another. */
static int check_secret_halves(narcache_key *k) {
  uint8_t *scratch = sodium_malloc(crypto_sign_SECRETKEYBYTES);
  if (scratch == NULL)
    return NARCACHE_ENOMEM;
  uint8_t derived[crypto_sign_PUBLICKEYBYTES];
  int rc = crypto_sign_seed_keypair(derived, scratch, k->secret_key) == 0 ? 0 : NARCACHE_ECRYPTO;
  sodium_free(scratch);
  if (rc == 0 && sodium_memcmp(derived, k->secret_key + crypto_sign_SEEDBYTES, sizeof derived) != 0)
    rc = NARCACHE_EBADKEY;
  memcpy(k->public_key, derived, sizeof derived);
  return rc;
}

/* Parse "name:base64" into a key whose decoded bytes must be `want` long;
 * `bytes` receives them (guarded memory for secrets). */
static int parse_key(narcache_key **out, const char *text, size_t len, size_t *err_offset,
                     int secret) {
  if (out == NULL || (text == NULL && len != 0))
    return NARCACHE_EINVAL;
  *out = NULL;
  int rc = ensure_sodium();
  if (rc < 0)
    return rc;
  if (len > 0 && text[len - 1] == '\n') /* key files edited by hand */
    len--;
  const char *colon = memchr(text, ':', len);
  size_t name_len = colon != NULL ? (size_t)(colon - text) : len;
  if (colon == NULL || check_name(text, name_len) < 0) {
    narcache__set_offset(err_offset, colon == NULL ? len : 0);
    return NARCACHE_EBADKEY;
  }
  size_t want = secret ? crypto_sign_SECRETKEYBYTES : crypto_sign_PUBLICKEYBYTES;
  narcache_key *k = NULL;
  if ((rc = new_key(&k, text, name_len, secret)) < 0)
    return rc;
  uint8_t *bytes = secret ? k->secret_key : k->public_key;
  size_t got = 0, bad = 0;
  const char *digits = colon + 1;
  size_t digits_len = len - name_len - 1;
  /* Decode into guarded memory only; a secret never touches the stack. */
  rc = narcache__base64_decode(bytes, want, &got, digits, digits_len, &bad, 1);
  if (rc == 0 && got != want)
    rc = NARCACHE_EBADLENGTH;
  if (rc == 0 && secret)
    rc = check_secret_halves(k);
  if (rc < 0) {
    narcache__set_offset(err_offset, rc == NARCACHE_EBADKEY ? name_len + 1 : name_len + 1 + bad);
    narcache_key_free(k);
    return rc == NARCACHE_ENOMEM || rc == NARCACHE_ECRYPTO ? rc : NARCACHE_EBADKEY;
  }
  *out = k;
  return NARCACHE_OK;
}

int narcache_key_parse_secret(narcache_key **out, const char *text, size_t len,
                              size_t *err_offset) {
  return parse_key(out, text, len, err_offset, 1);
}

int narcache_key_parse_public(narcache_key **out, const char *text, size_t len,
                              size_t *err_offset) {
  return parse_key(out, text, len, err_offset, 0);
}

int narcache_key_public(narcache_key **out, const narcache_key *key) {
  if (out == NULL || key == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  narcache_key *k = NULL;
  int rc = new_key(&k, key->name, key->name_len, 0);
  if (rc < 0)
    return rc;
  memcpy(k->public_key, key->public_key, sizeof k->public_key);
  *out = k;
  return NARCACHE_OK;
}

int narcache_key_format(char *out, size_t out_size, size_t *out_len, const narcache_key *key) {
  if (out == NULL || key == NULL)
    return NARCACHE_EINVAL;
  const uint8_t *bytes = key->secret ? key->secret_key : key->public_key;
  size_t n = key->secret ? crypto_sign_SECRETKEYBYTES : crypto_sign_PUBLICKEYBYTES;
  if (key->name_len + 1 >= out_size)
    return NARCACHE_EBUFS;
  size_t digits = 0;
  int rc = narcache_base64_encode(out + key->name_len + 1, out_size - key->name_len - 1, &digits,
                                  bytes, n);
  if (rc < 0)
    return rc;
  memcpy(out, key->name, key->name_len);
  out[key->name_len] = ':';
  if (out_len != NULL)
    *out_len = key->name_len + 1 + digits;
  return NARCACHE_OK;
}

const char *narcache_key_name(const narcache_key *key, size_t *len) {
  if (key == NULL)
    return NULL;
  if (len != NULL)
    *len = key->name_len;
  return key->name;
}

int narcache_key_is_secret(const narcache_key *key) { return key != NULL && key->secret; }

int narcache_key_sign(uint8_t *sig, size_t sig_size, const narcache_key *key, const void *msg,
                      size_t len) {
  if (sig == NULL || key == NULL || !key->secret || sig_size < crypto_sign_BYTES ||
      (msg == NULL && len != 0))
    return NARCACHE_EINVAL;
  if (crypto_sign_detached(sig, NULL, msg, len, key->secret_key) != 0)
    return NARCACHE_ECRYPTO;
  return NARCACHE_OK;
}

int narcache_key_verify(const narcache_key *key, const uint8_t *sig, size_t sig_len,
                        const void *msg, size_t len) {
  if (key == NULL || sig == NULL || (msg == NULL && len != 0))
    return NARCACHE_EINVAL;
  if (sig_len != crypto_sign_BYTES)
    return NARCACHE_EBADSIG;
  return crypto_sign_verify_detached(sig, msg, len, key->public_key) == 0 ? NARCACHE_OK
                                                                          : NARCACHE_EBADSIG;
}
