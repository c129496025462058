/* Hash-string parsing and the raw decoders on arbitrary bytes. Whatever
 * parses must format back and re-parse to the same digest; nothing may read
 * outside the input. */
#include <narcache.h>

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_roundtrip(const narcache_hash *h) {
  static const int encodings[] = {NARCACHE_HASH_BASE16, NARCACHE_HASH_NIX32,
                                  NARCACHE_HASH_BASE64, NARCACHE_HASH_SRI};
  for (size_t i = 0; i < sizeof encodings / sizeof encodings[0]; i++) {
    char text[NARCACHE_HASH_STRING_MAX];
    size_t len;
    narcache_hash again;
    if (narcache_hash_format(text, sizeof text, &len, h, encodings[i], 1) != 0 ||
        narcache_hash_parse(&again, text, len, NULL) != 0 ||
        again.algo != h->algo || again.len != h->len ||
        memcmp(again.digest, h->digest, h->len) != 0)
      abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = (const char *)data;
  narcache_hash h;
  size_t where = 0;
  if (narcache_hash_parse(&h, text, size, &where) == 0)
    check_roundtrip(&h);
  else if (where > size)
    abort();
  for (int algo = NARCACHE_HASH_MD5; algo <= NARCACHE_HASH_SHA512; algo++)
    if (narcache_hash_parse_as(&h, algo, text, size, NULL) == 0)
      check_roundtrip(&h);

  uint8_t out[64];
  size_t out_len = 0;
  size_t want = size * 5 / 8 < sizeof out ? size * 5 / 8 : sizeof out;
  (void)narcache_nix32_decode(out, want, text, size, NULL);
  (void)narcache_base16_decode(out, want, text, size, NULL);
  if (narcache_base64_decode(out, sizeof out, &out_len, text, size, NULL) == 0) {
    char again[128];
    size_t again_len;
    /* Strict base64 has one spelling per byte string. */
    if (narcache_base64_encode(again, sizeof again, &again_len, out, out_len) != 0 ||
        again_len != size || memcmp(again, text, size) != 0)
      abort();
  }
  return 0;
}
