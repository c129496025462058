/* Digests (OpenSSL EVP), hash strings and the store-path hash part. */
#include "common_internal.h"
#include "hash_internal.h"

#include <openssl/evp.h>
#include <string.h>

/* ---- algorithms --------------------------------------------------------- */

typedef struct algo_info {
  const char *name;
  size_t size;
} algo_info;

static const algo_info algos[] = {
    [NARCACHE_HASH_MD5] = {"md5", 16},
    [NARCACHE_HASH_SHA1] = {"sha1", 20},
    [NARCACHE_HASH_SHA256] = {"sha256", 32},
    [NARCACHE_HASH_SHA512] = {"sha512", 64},
};

static const algo_info *lookup_algo(int algo) {
  if (algo < NARCACHE_HASH_MD5 || algo > NARCACHE_HASH_SHA512)
    return NULL;
  return &algos[algo];
}

size_t narcache_hash_algo_size(int algo) {
  const algo_info *info = lookup_algo(algo);
  return info != NULL ? info->size : 0;
}

const char *narcache_hash_algo_name(int algo) {
  const algo_info *info = lookup_algo(algo);
  return info != NULL ? info->name : NULL;
}

int narcache_hash_algo_from_name(const char *name, size_t len) {
  if (name == NULL)
    return NARCACHE_EINVAL;
  for (int algo = NARCACHE_HASH_MD5; algo <= NARCACHE_HASH_SHA512; algo++) {
    const char *candidate = algos[algo].name;
    if (strlen(candidate) == len && memcmp(candidate, name, len) == 0)
      return algo;
  }
  return NARCACHE_EHASHALGO;
}

static const EVP_MD *evp_digest(int algo) {
  switch (algo) {
  case NARCACHE_HASH_MD5:
    return EVP_md5();
  case NARCACHE_HASH_SHA1:
    return EVP_sha1();
  case NARCACHE_HASH_SHA256:
    return EVP_sha256();
  case NARCACHE_HASH_SHA512:
    return EVP_sha512();
  default:
    return NULL;
  }
}

/* ---- hasher ------------------------------------------------------------- */

struct narcache_hasher {
  EVP_MD_CTX *ctx;
  const EVP_MD *md;
  int algo;
  int finished;
  uint64_t bytes;
};

int narcache_hasher_new(narcache_hasher **out, int algo) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  const EVP_MD *md = evp_digest(algo);
  if (md == NULL)
    return NARCACHE_EHASHALGO;
  narcache_hasher *h = narcache__calloc(1, sizeof *h);
  if (h == NULL)
    return NARCACHE_ENOMEM;
  h->md = md;
  h->algo = algo;
  h->ctx = EVP_MD_CTX_new();
  if (h->ctx == NULL) {
    narcache__free(h);
    return NARCACHE_ENOMEM;
  }
  int rc = narcache_hasher_reset(h);
  if (rc < 0) {
    narcache_hasher_free(h);
    return rc;
  }
  *out = h;
  return NARCACHE_OK;
}

int narcache_hasher_reset(narcache_hasher *h) {
  if (h == NULL)
    return NARCACHE_EINVAL;
  h->bytes = 0;
  h->finished = 0;
  if (EVP_DigestInit_ex(h->ctx, h->md, NULL) != 1) {
    h->finished = 1; /* unusable until a successful reset */
    return NARCACHE_ECRYPTO;
  }
  return NARCACHE_OK;
}

int narcache_hasher_update(narcache_hasher *h, const void *data, size_t len) {
  if (h == NULL || (data == NULL && len != 0))
    return NARCACHE_EINVAL;
  if (h->finished)
    return NARCACHE_EMISUSE;
  if (len == 0)
    return NARCACHE_OK;
  if (EVP_DigestUpdate(h->ctx, data, len) != 1)
    return NARCACHE_ECRYPTO;
  h->bytes += len;
  return NARCACHE_OK;
}

int narcache_hasher_final(narcache_hasher *h, narcache_hash *out) {
  if (h == NULL || out == NULL)
    return NARCACHE_EINVAL;
  if (h->finished)
    return NARCACHE_EMISUSE;
  unsigned int len = 0;
  memset(out, 0, sizeof *out);
  h->finished = 1;
  if (EVP_DigestFinal_ex(h->ctx, out->digest, &len) != 1 ||
      len != narcache_hash_algo_size(h->algo))
    return NARCACHE_ECRYPTO;
  out->algo = (uint32_t)h->algo;
  out->len = len;
  return NARCACHE_OK;
}

uint64_t narcache_hasher_bytes(const narcache_hasher *h) {
  return h != NULL ? h->bytes : 0;
}

void narcache_hasher_free(narcache_hasher *h) {
  if (h == NULL)
    return;
  EVP_MD_CTX_free(h->ctx);
  narcache__free(h);
}

int narcache_hash_buffer(narcache_hash *out, int algo, const void *data,
                         size_t len) {
  if (out == NULL || (data == NULL && len != 0))
    return NARCACHE_EINVAL;
  const EVP_MD *md = evp_digest(algo);
  if (md == NULL)
    return NARCACHE_EHASHALGO;
  unsigned int digest_len = 0;
  memset(out, 0, sizeof *out);
  if (EVP_Digest(data, len, out->digest, &digest_len, md, NULL) != 1)
    return NARCACHE_ECRYPTO;
  out->algo = (uint32_t)algo;
  out->len = digest_len;
  return NARCACHE_OK;
}

/* ---- formatting --------------------------------------------------------- */

size_t narcache_hash_string_max(void) { return NARCACHE_HASH_STRING_MAX; }

int narcache_hash_format(char *out, size_t out_size, size_t *out_len,
                         const narcache_hash *h, int encoding, int with_algo) {
  if (out == NULL || h == NULL)
    return NARCACHE_EINVAL;
  const algo_info *info = lookup_algo((int)h->algo);
  if (info == NULL || h->len != info->size)
    return NARCACHE_EINVAL;
  if (encoding == NARCACHE_HASH_SRI)
    with_algo = 1;
  size_t prefix_len = with_algo ? strlen(info->name) + 1 : 0;
  if (prefix_len >= out_size)
    return NARCACHE_EBUFS;
  char *digits = out + prefix_len;
  size_t room = out_size - prefix_len, digits_len = 0;
  int rc;
  switch (encoding) {
  case NARCACHE_HASH_BASE16:
    rc = narcache_base16_encode(digits, room, &digits_len, h->digest, h->len);
    break;
  case NARCACHE_HASH_NIX32:
    rc = narcache_nix32_encode(digits, room, &digits_len, h->digest, h->len);
    break;
  case NARCACHE_HASH_BASE64:
  case NARCACHE_HASH_SRI:
    rc = narcache_base64_encode(digits, room, &digits_len, h->digest, h->len);
    break;
  default:
    return NARCACHE_EINVAL;
  }
  if (rc < 0)
    return rc;
  if (with_algo) {
    memcpy(out, info->name, prefix_len - 1);
    out[prefix_len - 1] = encoding == NARCACHE_HASH_SRI ? '-' : ':';
  }
  if (out_len != NULL)
    *out_len = prefix_len + digits_len;
  return NARCACHE_OK;
}

/* ---- parsing ------------------------------------------------------------ */

/* Decode untyped digits of `algo`, choosing the encoding by length as Nix
 * does. `base` is the offset of `s` within the caller's string, so that
 * error offsets refer to what the caller passed. */
static int parse_digits(narcache_hash *out, int algo, const char *s,
                        size_t len, size_t base, size_t *err_offset) {
  size_t size = narcache_hash_algo_size(algo);
  size_t bad = 0, decoded = 0;
  int rc;
  memset(out, 0, sizeof *out);
  if (len == 2 * size) {
    rc = narcache_base16_decode(out->digest, size, s, len, &bad);
  } else if (len == narcache_nix32_encoded_len(size)) {
    rc = narcache_nix32_decode(out->digest, size, s, len, &bad);
  } else if (len == narcache_base64_encoded_len(size)) {
    rc = narcache_base64_decode(out->digest, size, &decoded, s, len, &bad);
    if (rc == NARCACHE_OK && decoded != size)
      rc = NARCACHE_EBADLENGTH;
  } else {
    rc = NARCACHE_EBADLENGTH;
    bad = 0;
  }
  if (rc < 0) {
    narcache__set_offset(err_offset, base + bad);
    return rc;
  }
  out->algo = (uint32_t)algo;
  out->len = (uint32_t)size;
  return NARCACHE_OK;
}

static int parse_sri_digits(narcache_hash *out, int algo, const char *s,
                            size_t len, size_t base, size_t *err_offset) {
  size_t size = narcache_hash_algo_size(algo);
  size_t bad = 0, decoded = 0;
  memset(out, 0, sizeof *out);
  int rc = narcache__base64_decode(out->digest, sizeof out->digest, &decoded,
                                   s, len, &bad, 1);
  if (rc == NARCACHE_OK && decoded != size) {
    rc = NARCACHE_EBADLENGTH;
    bad = 0;
  }
  if (rc < 0) {
    narcache__set_offset(err_offset, base + (rc == NARCACHE_EBUFS ? 0 : bad));
    return rc == NARCACHE_EBUFS ? NARCACHE_EBADLENGTH : rc;
  }
  out->algo = (uint32_t)algo;
  out->len = (uint32_t)size;
  return NARCACHE_OK;
}

/* Split "<algo>:<digits>" or "<algo>-<base64>" as Nix does: the first ':'
 * wins; only without any ':' is the first '-' an SRI separator. */
static int parse_prefixed(narcache_hash *out, int expected_algo, const char *s,
                          size_t len, size_t *err_offset) {
  const char *sep = memchr(s, ':', len);
  int sri = 0;
  if (sep == NULL) {
    sep = memchr(s, '-', len);
    sri = 1;
  }
  if (sep == NULL) {
    narcache__set_offset(err_offset, 0);
    return NARCACHE_EBADHASH;
  }
  size_t name_len = (size_t)(sep - s);
  int algo = narcache_hash_algo_from_name(s, name_len);
  if (algo < 0 || (expected_algo != 0 && algo != expected_algo)) {
    narcache__set_offset(err_offset, 0);
    return NARCACHE_EHASHALGO;
  }
  const char *digits = sep + 1;
  size_t digits_len = len - name_len - 1;
  if (sri)
    return parse_sri_digits(out, algo, digits, digits_len, name_len + 1,
                            err_offset);
  return parse_digits(out, algo, digits, digits_len, name_len + 1,
                      err_offset);
}

int narcache_hash_parse(narcache_hash *out, const char *s, size_t len,
                        size_t *err_offset) {
  if (out == NULL || (s == NULL && len != 0))
    return NARCACHE_EINVAL;
  if (len == 0) {
    narcache__set_offset(err_offset, 0);
    return NARCACHE_EBADHASH;
  }
  return parse_prefixed(out, 0, s, len, err_offset);
}

int narcache_hash_parse_as(narcache_hash *out, int algo, const char *s,
                           size_t len, size_t *err_offset) {
  if (out == NULL || (s == NULL && len != 0))
    return NARCACHE_EINVAL;
  if (lookup_algo(algo) == NULL)
    return NARCACHE_EHASHALGO;
  if (len == 0)
    return parse_digits(out, algo, "", 0, 0, err_offset);
  /* Bare digits never contain ':' or '-' (none of the alphabets has them,
   * base64's being '+' and '/'). */
  if (memchr(s, ':', len) != NULL || memchr(s, '-', len) != NULL)
    return parse_prefixed(out, algo, s, len, err_offset);
  return parse_digits(out, algo, s, len, 0, err_offset);
}

/* ---- store path hash part ----------------------------------------------- */

#define STORE_HASH_BYTES 20

int narcache_store_path_hash_part(char *out, size_t out_size,
                                  const char *preimage, size_t len) {
  if (out == NULL || (preimage == NULL && len != 0))
    return NARCACHE_EINVAL;
  if (out_size <= NARCACHE_STORE_HASH_CHARS)
    return NARCACHE_EBUFS;
  narcache_hash digest;
  int rc = narcache_hash_buffer(&digest, NARCACHE_HASH_SHA256, preimage, len);
  if (rc < 0)
    return rc;
  /* Nix compresses the 32-byte digest by XOR-ing byte i into i mod 20. */
  uint8_t folded[STORE_HASH_BYTES] = {0};
  for (size_t i = 0; i < digest.len; i++)
    folded[i % STORE_HASH_BYTES] ^= digest.digest[i];
  return narcache_nix32_encode(out, out_size, NULL, folded, sizeof folded);
}
