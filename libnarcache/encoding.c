/* nix32, base16 and base64: encoders and strict decoders. */
#include "common_internal.h"
#include "hash_internal.h"

#include <string.h>

static const char nix32_alphabet[] = "0123456789abcdfghijklmnpqrsvwxyz";
static const char base16_alphabet[] = "0123456789abcdef";
static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Shared prologue of every encoder: valid arguments (a text length of 0
 * for a non-empty input means it overflowed) and room for the text plus a
 * NUL. */
static int check_room(const char *out, size_t out_size, const void *in,
                      size_t in_len, size_t text_len) {
  if (out == NULL || (in == NULL && in_len != 0) || (text_len == 0 && in_len != 0))
    return NARCACHE_EINVAL;
  if (text_len >= out_size)
    return NARCACHE_EBUFS;
  return NARCACHE_OK;
}

static void finish_text(char *out, size_t text_len, size_t *out_len) {
  out[text_len] = '\0';
  if (out_len != NULL)
    *out_len = text_len;
}

/* Value of `c` in `alphabet` (of `n` symbols), or -1. Tables would be
 * faster, but these strings are at most a few hundred bytes long. */
static int symbol_value(const char *alphabet, size_t n, char c) {
  const void *hit = memchr(alphabet, c, n);
  if (c == '\0' || hit == NULL)
    return -1;
  return (int)((const char *)hit - alphabet);
}

/* Value of a base64 digit, or -1. Computed rather than searched: narinfo
 * verification decodes a signature per call. */
static int base64_value(char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* ---- nix32 -------------------------------------------------------------- */

size_t narcache_nix32_encoded_len(size_t nbytes) {
  if (nbytes == 0 || nbytes > SIZE_MAX / 8)
    return 0;
  return (8 * nbytes - 1) / 5 + 1;
}

int narcache_nix32_encode(char *out, size_t out_size, size_t *out_len,
                          const void *in, size_t in_len) {
  size_t text_len = narcache_nix32_encoded_len(in_len);
  int rc = check_room(out, out_size, in, in_len, text_len);
  if (rc < 0)
    return rc;
  const uint8_t *bytes = in;
  /* Character k (from the left) holds bits [5(L-1-k), 5(L-1-k)+5) of the
   * little-endian number formed by the input. */
  for (size_t k = 0; k < text_len; k++) {
    size_t bit = 5 * (text_len - 1 - k);
    size_t i = bit / 8, j = bit % 8;
    unsigned v = bytes[i] >> j;
    if (i + 1 < in_len)
      v |= (unsigned)bytes[i + 1] << (8 - j);
    out[k] = nix32_alphabet[v & 31];
  }
  finish_text(out, text_len, out_len);
  return NARCACHE_OK;
}

int narcache_nix32_decode(void *out, size_t out_len, const char *in,
                          size_t in_len, size_t *err_offset) {
  if ((out == NULL && out_len != 0) || (in == NULL && in_len != 0))
    return NARCACHE_EINVAL;
  if (in_len != narcache_nix32_encoded_len(out_len)) {
    narcache__set_offset(err_offset, in_len < out_len ? in_len : 0);
    return NARCACHE_EBADLENGTH;
  }
  uint8_t *bytes = out;
  memset(bytes, 0, out_len);
  /* The character n places from the right carries bits [5n, 5n+5). */
  for (size_t n = 0; n < in_len; n++) {
    size_t pos = in_len - 1 - n;
    int digit = symbol_value(nix32_alphabet, 32, in[pos]);
    if (digit < 0) {
      narcache__set_offset(err_offset, pos);
      return NARCACHE_EBADCHAR;
    }
    size_t bit = 5 * n;
    size_t i = bit / 8, j = bit % 8;
    bytes[i] |= (uint8_t)(digit << j);
    unsigned carry = (unsigned)digit >> (8 - j);
    if (i + 1 < out_len) {
      bytes[i + 1] |= (uint8_t)carry;
    } else if (carry != 0) {
      narcache__set_offset(err_offset, pos);
      return NARCACHE_ENONCANONICAL;
    }
  }
  return NARCACHE_OK;
}

/* ---- base16 ------------------------------------------------------------- */

int narcache_base16_encode(char *out, size_t out_size, size_t *out_len,
                           const void *in, size_t in_len) {
  if (in_len > SIZE_MAX / 2)
    return NARCACHE_EINVAL;
  int rc = check_room(out, out_size, in, in_len, 2 * in_len);
  if (rc < 0)
    return rc;
  const uint8_t *bytes = in;
  for (size_t i = 0; i < in_len; i++) {
    out[2 * i] = base16_alphabet[bytes[i] >> 4];
    out[2 * i + 1] = base16_alphabet[bytes[i] & 15];
  }
  finish_text(out, 2 * in_len, out_len);
  return NARCACHE_OK;
}

int narcache__hex_value(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

size_t narcache__percent_decode(char *out, const char *in, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (in[i] == '%' && i + 2 < len && (hi = narcache__hex_value((unsigned char)in[i + 1])) >= 0 &&
        (lo = narcache__hex_value((unsigned char)in[i + 2])) >= 0) {
      out[n++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      out[n++] = in[i];
    }
  }
  return n;
}

int narcache_base16_decode(void *out, size_t out_len, const char *in,
                           size_t in_len, size_t *err_offset) {
  if ((out == NULL && out_len != 0) || (in == NULL && in_len != 0))
    return NARCACHE_EINVAL;
  if (out_len > SIZE_MAX / 2 || in_len != 2 * out_len) {
    narcache__set_offset(err_offset, 0);
    return NARCACHE_EBADLENGTH;
  }
  uint8_t *bytes = out;
  for (size_t i = 0; i < in_len; i++) {
    int v = narcache__hex_value((unsigned char)in[i]);
    if (v < 0) {
      narcache__set_offset(err_offset, i);
      return NARCACHE_EBADCHAR;
    }
    if (i % 2 == 0)
      bytes[i / 2] = (uint8_t)(v << 4);
    else
      bytes[i / 2] |= (uint8_t)v;
  }
  return NARCACHE_OK;
}

/* ---- base64 ------------------------------------------------------------- */

size_t narcache_base64_encoded_len(size_t nbytes) {
  if (nbytes > SIZE_MAX / 4 * 3 - 3)
    return 0;
  return (nbytes + 2) / 3 * 4;
}

int narcache_base64_encode(char *out, size_t out_size, size_t *out_len,
                           const void *in, size_t in_len) {
  size_t text_len = narcache_base64_encoded_len(in_len);
  int rc = check_room(out, out_size, in, in_len, text_len);
  if (rc < 0)
    return rc;
  const uint8_t *bytes = in;
  size_t o = 0;
  for (size_t i = 0; i < in_len; i += 3) {
    size_t left = in_len - i;
    uint32_t group = (uint32_t)bytes[i] << 16;
    if (left > 1)
      group |= (uint32_t)bytes[i + 1] << 8;
    if (left > 2)
      group |= bytes[i + 2];
    out[o++] = base64_alphabet[(group >> 18) & 63];
    out[o++] = base64_alphabet[(group >> 12) & 63];
    out[o++] = left > 1 ? base64_alphabet[(group >> 6) & 63] : '=';
    out[o++] = left > 2 ? base64_alphabet[group & 63] : '=';
  }
  finish_text(out, text_len, out_len);
  return NARCACHE_OK;
}

int narcache__base64_decode(void *out, size_t out_size, size_t *out_len,
                            const char *in, size_t in_len, size_t *err_offset,
                            int padding_optional) {
  if ((out == NULL && out_size != 0) || (in == NULL && in_len != 0))
    return NARCACHE_EINVAL;
  size_t pad = 0;
  while (pad < 2 && pad < in_len && in[in_len - 1 - pad] == '=')
    pad++;
  size_t digits = in_len - pad;
  /* With padding the whole text is a multiple of 4; without it, a lone
   * trailing character (6 bits) can never encode a byte. */
  if ((pad != 0 || !padding_optional) ? in_len % 4 != 0 : digits % 4 == 1) {
    narcache__set_offset(err_offset, in_len);
    return NARCACHE_EBADLENGTH;
  }
  size_t nbytes = digits / 4 * 3 + (digits % 4 == 0 ? 0 : digits % 4 - 1);
  if (nbytes > out_size) {
    narcache__set_offset(err_offset, 0);
    return NARCACHE_EBUFS;
  }
  uint8_t *bytes = out;
  uint32_t acc = 0;
  unsigned acc_bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < digits; i++) {
    int v = base64_value(in[i]);
    if (v < 0) {
      narcache__set_offset(err_offset, i);
      return in[i] == '=' ? NARCACHE_ENONCANONICAL : NARCACHE_EBADCHAR;
    }
    acc = (acc << 6) | (uint32_t)v;
    acc_bits += 6;
    if (acc_bits >= 8) {
      acc_bits -= 8;
      bytes[o++] = (uint8_t)(acc >> acc_bits);
      acc &= (1u << acc_bits) - 1;
    }
  }
  /* Bits left over after the last full byte must be zero, so that every
   * byte string has exactly one accepted spelling. */
  if (acc != 0) {
    narcache__set_offset(err_offset, digits - 1);
    return NARCACHE_ENONCANONICAL;
  }
  if (out_len != NULL)
    *out_len = o;
  return NARCACHE_OK;
}

int narcache_base64_decode(void *out, size_t out_size, size_t *out_len,
                           const char *in, size_t in_len, size_t *err_offset) {
  return narcache__base64_decode(out, out_size, out_len, in, in_len,
                                 err_offset, 0);
}
