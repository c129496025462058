/* nix32, base16 and base64 against reference implementations written
 * here from the spec (nix-binary-cache.md §2.1, §2.2), not from the library.
 *
 * Input layout: 1 header byte, then the payload.
 *   [0] bits0-5: an out_len (0..63) for an extra nix32 decode of the text
 *       (mostly a length mismatch); bit0 also: the base64 decode of the
 *       text gets room for one byte less than 3/4 of its length; bit6: the
 *       text is the payload mapped mostly onto the alphabets (byte & 0xE0
 *       == 0xE0 picks a near miss such as 'e', 'o', 'A', '=', NUL), else
 *       the payload raw; bit7: the encoders get a buffer one byte short
 *       first (must give EBUFS and write nothing). At most 2048 payload
 *       bytes are used.
 *
 * nix32 reference: the bytes are one little-endian number; text character k
 * (from the left) of L = floor((8n - 1) / 5) + 1 holds bits
 * [5(L-1-k), 5(L-1-k)+5), computed here bit by bit. Decoding refuses a
 * wrong length (EBADLENGTH), any character outside
 * "0123456789abcdfghijklmnpqrsvwxyz" (EBADCHAR, offset on such a
 * character), and a set bit at or above 8n (ENONCANONICAL, offset 0: only
 * the first character can carry one).
 * Checked: encoders equal the references (text, length, NUL terminator,
 * _encoded_len); every encoding decodes back to the bytes; the payload
 * taken as text decodes exactly when the reference decodes it, to the same
 * bytes, with the same error code; base16 accepts either case and
 * re-encodes to the lower-cased text; base64 accepts exactly the canonical
 * texts (reference: decode leniently, re-encode, compare). */
#include <narcache.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "fuzz_nix32: invariant failed at line %d: %s\n",       \
              __LINE__, #cond);                                              \
      abort();                                                               \
    }                                                                        \
  } while (0)

#define MAX_BYTES 2048
#define TEXT_CAP (4 * MAX_BYTES + 16)

static const char nix32_digits[] = "0123456789abcdfghijklmnpqrsvwxyz";
static const char b64_digits[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* ---- references ---------------------------------------------------------- */

static size_t ref_nix32_len(size_t n) { return n == 0 ? 0 : (8 * n - 1) / 5 + 1; }

static int get_bit(const uint8_t *b, size_t n, size_t bit) {
  return bit < 8 * n ? (b[bit / 8] >> (bit % 8)) & 1 : 0;
}

static size_t ref_nix32_encode(char *out, const uint8_t *in, size_t n) {
  size_t len = ref_nix32_len(n);
  for (size_t k = 0; k < len; k++) {
    unsigned v = 0;
    for (unsigned t = 0; t < 5; t++)
      v |= (unsigned)get_bit(in, n, 5 * (len - 1 - k) + t) << t;
    out[k] = nix32_digits[v];
  }
  return len;
}

static int nix32_value(char c) {
  for (int i = 0; i < 32; i++)
    if (nix32_digits[i] == c)
      return i;
  return -1;
}

static int ref_nix32_decode(uint8_t *out, size_t n, const char *in, size_t len) {
  if (len != ref_nix32_len(n))
    return NARCACHE_EBADLENGTH;
  for (size_t k = 0; k < len; k++)
    if (nix32_value(in[k]) < 0)
      return NARCACHE_EBADCHAR;
  memset(out, 0, n);
  for (size_t k = 0; k < len; k++) {
    unsigned v = (unsigned)nix32_value(in[k]);
    for (unsigned t = 0; t < 5; t++) {
      size_t bit = 5 * (len - 1 - k) + t;
      if (!((v >> t) & 1))
        continue;
      if (bit >= 8 * n)
        return NARCACHE_ENONCANONICAL;
      out[bit / 8] |= (uint8_t)(1u << (bit % 8));
    }
  }
  return 0;
}

static int hex_value(char c) {
  static const char lower[] = "0123456789abcdef", upper[] = "0123456789ABCDEF";
  for (int i = 0; i < 16; i++)
    if (c == lower[i] || c == upper[i])
      return i;
  return -1;
}

/* Six-bit groups, most significant first, over the bytes as a bit string. */
static size_t ref_b64_encode(char *out, const uint8_t *in, size_t n) {
  size_t o = 0, bits = 8 * n;
  for (size_t g = 0; g < bits; g += 6) {
    unsigned v = 0;
    for (unsigned t = 0; t < 6; t++) {
      size_t bit = g + t; /* bit 0 is the top bit of byte 0 */
      unsigned b = bit < bits ? (in[bit / 8] >> (7 - bit % 8)) & 1 : 0;
      v = v << 1 | b;
    }
    out[o++] = b64_digits[v];
  }
  while (o % 4 != 0)
    out[o++] = '=';
  return o;
}

static int b64_value(char c) {
  const char *p = c != '\0' ? strchr(b64_digits, c) : NULL;
  return p != NULL ? (int)(p - b64_digits) : -1;
}

/* Strict base64 as hash.h describes it, with the error it reports. */
static int ref_b64_decode(uint8_t *out, size_t out_size, size_t *out_len, const char *in,
                          size_t len) {
  if (len % 4 != 0)
    return NARCACHE_EBADLENGTH;
  size_t pad = 0;
  while (pad < 2 && pad < len && in[len - 1 - pad] == '=')
    pad++;
  size_t digits = len - pad, n = digits * 6 / 8;
  if (n > out_size)
    return NARCACHE_EBUFS;
  for (size_t i = 0; i < digits; i++)
    if (b64_value(in[i]) < 0)
      return in[i] == '=' ? NARCACHE_ENONCANONICAL : NARCACHE_EBADCHAR;
  uint8_t tmp[MAX_BYTES + 3];
  memset(tmp, 0, sizeof tmp);
  for (size_t i = 0; i < digits; i++) {
    unsigned v = (unsigned)b64_value(in[i]);
    for (unsigned t = 0; t < 6; t++)
      if ((v >> (5 - t)) & 1) {
        size_t bit = 6 * i + t;
        tmp[bit / 8] |= (uint8_t)(0x80u >> (bit % 8));
      }
  }
  /* Canonical iff it is what encoding the bytes gives back. */
  char again[TEXT_CAP];
  if (ref_b64_encode(again, tmp, n) != len || memcmp(again, in, len) != 0)
    return NARCACHE_ENONCANONICAL;
  memcpy(out, tmp, n);
  *out_len = n;
  return 0;
}

/* ---- checks ---------------------------------------------------------------- */

typedef int (*encoder)(char *, size_t, size_t *, const void *, size_t);

/* Encode with `enc`: result must be `want` (want_len chars) + NUL; with a
 * buffer one byte short first when `short_first`. */
static void check_encoder(encoder enc, const uint8_t *in, size_t n, const char *want,
                          size_t want_len, int short_first) {
  static char out[TEXT_CAP + 1];
  size_t len = 12345;
  if (short_first) {
    memset(out, 0x5a, want_len + 1);
    CHECK(enc(out, want_len, &len, in, n) == NARCACHE_EBUFS);
    for (size_t i = 0; i <= want_len; i++)
      CHECK(out[i] == 0x5a);
  }
  CHECK(enc(out, want_len + 1, &len, in, n) == 0);
  CHECK(len == want_len && out[len] == '\0' && memcmp(out, want, len) == 0);
}

static void nix32_text(const char *text, size_t len, size_t n) {
  static uint8_t got[MAX_BYTES], want[MAX_BYTES];
  size_t off = (size_t)-1;
  int rc = narcache_nix32_decode(got, n, text, len, &off);
  int ref = ref_nix32_decode(want, n, text, len);
  CHECK(rc == ref);
  if (rc == 0)
    CHECK(memcmp(got, want, n) == 0);
  else if (rc == NARCACHE_EBADCHAR)
    CHECK(off < len && nix32_value(text[off]) < 0);
  else if (rc == NARCACHE_ENONCANONICAL)
    CHECK(off == 0);
  else
    CHECK(off <= len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint8_t flags = data[0];
  const uint8_t *in = data + 1;
  size_t n = size - 1 > MAX_BYTES ? MAX_BYTES : size - 1;
  int short_first = (flags & 0x80) != 0;
  static char ref[TEXT_CAP], text[TEXT_CAP];
  static uint8_t back[MAX_BYTES + 3];

  /* nix32: encode, and decode the encoding. */
  size_t len = ref_nix32_encode(ref, in, n);
  CHECK(narcache_nix32_encoded_len(n) == len);
  check_encoder(narcache_nix32_encode, in, n, ref, len, short_first);
  CHECK(narcache_nix32_decode(back, n, ref, len, NULL) == 0);
  CHECK(n == 0 || memcmp(back, in, n) == 0);
  if (n > 0) /* the length alone decides the size: a neighbour never fits */
    CHECK(narcache_nix32_decode(back, n - 1, ref, len, NULL) == NARCACHE_EBADLENGTH);
  CHECK(narcache_nix32_decode(back, n + 1, ref, len, NULL) == NARCACHE_EBADLENGTH);

  /* base16 */
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    ref[2 * i] = hex[in[i] >> 4];
    ref[2 * i + 1] = hex[in[i] & 15];
  }
  check_encoder(narcache_base16_encode, in, n, ref, 2 * n, short_first);
  CHECK(narcache_base16_decode(back, n, ref, 2 * n, NULL) == 0);
  CHECK(n == 0 || memcmp(back, in, n) == 0);

  /* base64 */
  len = ref_b64_encode(ref, in, n);
  CHECK(narcache_base64_encoded_len(n) == len);
  check_encoder(narcache_base64_encode, in, n, ref, len, short_first);
  size_t got_len = 0;
  CHECK(narcache_base64_decode(back, n, &got_len, ref, len, NULL) == 0);
  CHECK(got_len == n && (n == 0 || memcmp(back, in, n) == 0));
  if (n > 0)
    CHECK(narcache_base64_decode(back, n - 1, &got_len, ref, len, NULL) == NARCACHE_EBUFS);

  /* The payload as text. */
  static const char near_miss[] = "eoutAZ=\0{`/+-_ \n";
  if (flags & 0x40) {
    for (size_t i = 0; i < n; i++) {
      uint8_t b = in[i];
      if ((b & 0xE0) == 0xE0)
        text[i] = near_miss[b & 15];
      else if (b & 0x80)
        text[i] = b64_digits[b & 63];
      else
        text[i] = nix32_digits[b & 31];
    }
  } else {
    memcpy(text, in, n);
  }
  size_t t = n;
  /* nix32: the byte count whose text length this is, if any ... */
  size_t m = t * 5 / 8;
  while (ref_nix32_len(m) < t)
    m++;
  nix32_text(text, t, m);
  if (m > 0)
    nix32_text(text, t, m - 1);
  /* ... and a byte count from the header. */
  nix32_text(text, t, flags & 63);

  /* base16: either case, exactly 2 * out_len digits. */
  {
    size_t half = t / 2;
    size_t off = (size_t)-1;
    int rc = narcache_base16_decode(back, half, text, t, &off);
    int ok = t % 2 == 0;
    size_t bad = t;
    for (size_t i = 0; ok && i < t; i++)
      if (hex_value(text[i]) < 0) {
        ok = 0;
        bad = i;
      }
    if (t % 2 != 0)
      CHECK(rc == NARCACHE_EBADLENGTH);
    else if (!ok)
      CHECK(rc == NARCACHE_EBADCHAR && off < t && hex_value(text[off]) < 0 && bad < t);
    else {
      CHECK(rc == 0);
      for (size_t i = 0; i < half; i++)
        CHECK(back[i] == (uint8_t)(hex_value(text[2 * i]) << 4 | hex_value(text[2 * i + 1])));
      char lower[TEXT_CAP];
      for (size_t i = 0; i < t; i++)
        lower[i] = hex[hex_value(text[i])];
      check_encoder(narcache_base16_encode, back, half, lower, t, 0);
    }
  }

  /* base64: exactly the canonical texts; the room is what they need, or
   * one byte less when the header asks for it. */
  {
    size_t room = t / 4 * 3;
    if (room > 0 && (flags & 1))
      room--;
    static uint8_t want[MAX_BYTES + 3];
    size_t want_len = 0, off = (size_t)-1;
    got_len = 0;
    int rc = narcache_base64_decode(back, room, &got_len, text, t, &off);
    int rrc = ref_b64_decode(want, room, &want_len, text, t);
    CHECK(rc == rrc);
    if (rc == 0) {
      CHECK(got_len == want_len && memcmp(back, want, want_len) == 0);
      check_encoder(narcache_base64_encode, back, got_len, text, t, 0);
    } else if (rc == NARCACHE_EBADCHAR) {
      CHECK(off < t && b64_value(text[off]) < 0);
    } else {
      CHECK(off <= t);
    }
  }
  return 0;
}
