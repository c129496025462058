/* Key and store-path parsing on arbitrary bytes. A key that parses must
 * format back to text that parses to the same key; nothing may read
 * outside the input. */
#include <narcache.h>

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_key_roundtrip(const narcache_key *k) {
  char text[512];
  size_t len = 0;
  if (narcache_key_format(text, sizeof text, &len, k) != 0)
    abort();
  narcache_key *again = NULL;
  int rc = narcache_key_is_secret(k) ? narcache_key_parse_secret(&again, text, len, NULL)
                                     : narcache_key_parse_public(&again, text, len, NULL);
  if (rc != 0)
    abort();
  char text2[512];
  size_t len2 = 0;
  if (narcache_key_format(text2, sizeof text2, &len2, again) != 0 || len2 != len ||
      memcmp(text, text2, len) != 0)
    abort();
  /* A parsed secret key signs what its public half verifies. */
  if (narcache_key_is_secret(k)) {
    uint8_t sig[64];
    if (narcache_key_sign(sig, sizeof sig, k, text, len) != 0 ||
        narcache_key_verify(again, sig, sizeof sig, text, len) != 0)
      abort();
  }
  narcache_key_free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = (const char *)data;
  size_t where = 0;
  for (int secret = 0; secret < 2; secret++) {
    narcache_key *k = NULL;
    int rc = secret ? narcache_key_parse_secret(&k, text, size, &where)
                    : narcache_key_parse_public(&k, text, size, &where);
    if (rc == 0)
      check_key_roundtrip(k);
    else if (k != NULL || where > size)
      abort();
    narcache_key_free(k);
  }
  const char *base = NULL;
  if (narcache_store_path_parse(&base, text, size, NULL, &where) == 0) {
    if (base != text + 11 || narcache_store_path_parse_base(NULL, base, size - 11, NULL) != 0)
      abort();
  } else if (where > size) {
    abort();
  }
  return 0;
}
