/*
 * libnarcache -- hashing and the encodings Nix uses for hashes.
 *
 *  - narcache_hasher: incremental digests (SHA-256 and the other algorithms
 *    Nix names) computed with OpenSSL libcrypto.
 *  - nix32 ("base32" in Nix), base16 and base64 encoders and strict decoders.
 *  - Parsing and formatting of every hash string form Nix accepts:
 *    "sha256:<nix32|base16|base64>" and SRI "sha256-<base64>".
 *  - The store-path hash part (SHA-256 then XOR-fold to 20 bytes, nix32).
 *
 * Decoders never read outside (in, in_len) and do not require NUL
 * termination. On failure they report the byte offset of the offending
 * input through the optional `err_offset` out-parameter (pass NULL if not
 * wanted) and leave their output unspecified but in bounds.
 *
 * Thread: every function here is thread-safe except that one narcache_hasher
 * must not be used by two threads at once.
 */
#ifndef NARCACHE_HASH_H
#define NARCACHE_HASH_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Algorithms and hash values                                                */
/* ------------------------------------------------------------------------ */

/** Hash algorithms known to Nix. Values are pinned. */
typedef enum narcache_hash_algo {
  NARCACHE_HASH_MD5 = 1,
  NARCACHE_HASH_SHA1 = 2,
  NARCACHE_HASH_SHA256 = 3,
  NARCACHE_HASH_SHA512 = 4
} narcache_hash_algo;

/** Largest digest any algorithm produces (SHA-512). */
#define NARCACHE_HASH_MAX_BYTES 64

/** A digest value. Frozen layout: algo, len, then the digest bytes. */
typedef struct narcache_hash {
  uint32_t algo; /* narcache_hash_algo */
  uint32_t len;  /* digest length in bytes, narcache_hash_algo_size(algo) */
  uint8_t digest[NARCACHE_HASH_MAX_BYTES];
} narcache_hash;

/** Digest length in bytes for `algo` (16, 20, 32, 64), or 0 if unknown. */
NARCACHE_API size_t narcache_hash_algo_size(int algo);

/** Nix's name of `algo` ("md5", "sha1", "sha256", "sha512"), a static
 *  string, or NULL if unknown. */
NARCACHE_API const char *narcache_hash_algo_name(int algo);

/** Look up an algorithm by its exact (case-sensitive) Nix name.
 *  @return the narcache_hash_algo value (> 0); NARCACHE_EHASHALGO. */
NARCACHE_API int narcache_hash_algo_from_name(const char *name, size_t len);

/* ------------------------------------------------------------------------ */
/* Incremental hashing                                                       */
/* ------------------------------------------------------------------------ */

typedef struct narcache_hasher narcache_hasher;

/** Create a hasher for `algo`.
 *  @param out receives the new hasher (owned; release with narcache_hasher_free)
 *  @return 0; NARCACHE_EHASHALGO; NARCACHE_ENOMEM; NARCACHE_ECRYPTO if
 *          libcrypto cannot provide the digest. */
NARCACHE_API NARCACHE_NODISCARD int narcache_hasher_new(narcache_hasher **out,
                                                        int algo);

/** Feed `len` bytes. `data` may be NULL when len is 0.
 *  @return 0; NARCACHE_EMISUSE after narcache_hasher_final() without
 *          narcache_hasher_reset(); NARCACHE_ECRYPTO. */
NARCACHE_API int narcache_hasher_update(narcache_hasher *h, const void *data,
                                        size_t len);

/** Finish and write the digest to `out`. Afterwards only reset() or free()
 *  are allowed.
 *  @return 0; NARCACHE_EMISUSE if already finished; NARCACHE_ECRYPTO. */
NARCACHE_API int narcache_hasher_final(narcache_hasher *h, narcache_hash *out);

/** Start over with the same algorithm.  @return 0; NARCACHE_ECRYPTO. */
NARCACHE_API int narcache_hasher_reset(narcache_hasher *h);

/** Number of bytes fed since creation or the last reset. */
NARCACHE_API uint64_t narcache_hasher_bytes(const narcache_hasher *h);

/** Destroy a hasher. NULL is a no-op. */
NARCACHE_API void narcache_hasher_free(narcache_hasher *h);

/** One-shot digest of a buffer.
 *  @return 0; NARCACHE_EHASHALGO; NARCACHE_ECRYPTO. */
NARCACHE_API int narcache_hash_buffer(narcache_hash *out, int algo,
                                      const void *data, size_t len);

/* ------------------------------------------------------------------------ */
/* Raw encodings                                                             */
/* ------------------------------------------------------------------------ */

/* Encoders write the text followed by a NUL terminator. `out_size` must
 * leave room for that NUL; `out_len` (optional) receives the text length.
 * They return 0, NARCACHE_EBUFS when out_size is too small (nothing is
 * written then) or NARCACHE_EINVAL. */

/** nix32 text length for `nbytes` bytes: floor((8*nbytes - 1) / 5) + 1
 *  (52 for SHA-256, 32 for a store path hash); 0 for 0 bytes. */
NARCACHE_API size_t narcache_nix32_encoded_len(size_t nbytes);

/** Encode `in` in Nix's base-32: the bytes are one little-endian number,
 *  written most significant digit first with the alphabet
 *  "0123456789abcdfghijklmnpqrsvwxyz". */
NARCACHE_API int narcache_nix32_encode(char *out, size_t out_size,
                                       size_t *out_len, const void *in,
                                       size_t in_len);

/** Decode exactly `out_len` bytes from nix32 text.
 *  @return 0; NARCACHE_EBADLENGTH if in_len != narcache_nix32_encoded_len(out_len);
 *          NARCACHE_EBADCHAR for a character outside the alphabet (upper case
 *          included); NARCACHE_ENONCANONICAL if the number needs more than
 *          8*out_len bits (e.g. a SHA-256 string starting with '2'). */
NARCACHE_API int narcache_nix32_decode(void *out, size_t out_len,
                                       const char *in, size_t in_len,
                                       size_t *err_offset);

/** Lowercase hexadecimal; text length is 2 * in_len. */
NARCACHE_API int narcache_base16_encode(char *out, size_t out_size,
                                        size_t *out_len, const void *in,
                                        size_t in_len);

/** Decode exactly `out_len` bytes of hexadecimal (either case).
 *  @return 0; NARCACHE_EBADLENGTH if in_len != 2 * out_len; NARCACHE_EBADCHAR. */
NARCACHE_API int narcache_base16_decode(void *out, size_t out_len,
                                        const char *in, size_t in_len,
                                        size_t *err_offset);

/** base64 text length (with '=' padding) for `nbytes` bytes. */
NARCACHE_API size_t narcache_base64_encoded_len(size_t nbytes);

/** RFC 4648 base64, standard alphabet, '=' padded. */
NARCACHE_API int narcache_base64_encode(char *out, size_t out_size,
                                        size_t *out_len, const void *in,
                                        size_t in_len);

/** Strict base64 decode: standard alphabet, '=' padding required and only at
 *  the end, no whitespace, unused trailing bits must be zero.
 *  @param out_len receives the number of bytes written (optional)
 *  @return 0; NARCACHE_EBADCHAR; NARCACHE_EBADLENGTH (text length not a
 *          multiple of 4); NARCACHE_ENONCANONICAL (misplaced padding or
 *          non-zero unused bits); NARCACHE_EBUFS if the result exceeds out_size. */
NARCACHE_API int narcache_base64_decode(void *out, size_t out_size,
                                        size_t *out_len, const char *in,
                                        size_t in_len, size_t *err_offset);

/* ------------------------------------------------------------------------ */
/* Hash strings                                                              */
/* ------------------------------------------------------------------------ */

/** Text encodings of a digest. Values are pinned. */
typedef enum narcache_hash_encoding {
  NARCACHE_HASH_BASE16 = 1,
  NARCACHE_HASH_NIX32 = 2,
  NARCACHE_HASH_BASE64 = 3,
  NARCACHE_HASH_SRI = 4 /* "<algo>-<base64>", always carries the algorithm */
} narcache_hash_encoding;

/** Buffer size (NUL included) that fits any formatted hash. */
#define NARCACHE_HASH_STRING_MAX 144

/** NARCACHE_HASH_STRING_MAX as a function, for bindings. */
NARCACHE_API size_t narcache_hash_string_max(void);

/** Format `h` as text. With `with_algo` non-zero the Nix type prefix is
 *  added ("sha256:" + digits); SRI always carries it ("sha256-" + base64).
 *  @return 0; NARCACHE_EBUFS; NARCACHE_EINVAL (unknown encoding, or h->len
 *          does not match h->algo). */
NARCACHE_API int narcache_hash_format(char *out, size_t out_size,
                                      size_t *out_len, const narcache_hash *h,
                                      int encoding, int with_algo);

/** Parse a self-describing hash string as Nix does:
 *   "<algo>:<digits>" where the digits' encoding follows from their length
 *   (SHA-256: 64 base16, 52 nix32, 44 base64), or SRI "<algo>-<base64>" whose
 *   padding may be omitted.
 *  @return 0; NARCACHE_EBADHASH (no "algo:" or "algo-" prefix);
 *          NARCACHE_EHASHALGO; NARCACHE_EBADLENGTH; NARCACHE_EBADCHAR;
 *          NARCACHE_ENONCANONICAL. `err_offset` is relative to `s`. */
NARCACHE_API int narcache_hash_parse(narcache_hash *out, const char *s,
                                     size_t len, size_t *err_offset);

/** Parse a hash of a known algorithm: either bare digits (encoding chosen by
 *  length) or any form narcache_hash_parse() accepts, whose algorithm must
 *  then be `algo` (else NARCACHE_EHASHALGO). */
NARCACHE_API int narcache_hash_parse_as(narcache_hash *out, int algo,
                                        const char *s, size_t len,
                                        size_t *err_offset);

/* ------------------------------------------------------------------------ */
/* Store path hash part                                                      */
/* ------------------------------------------------------------------------ */

/** Length of a store path hash part in characters (32). */
#define NARCACHE_STORE_HASH_CHARS 32

/** Compute the 32-character hash part of a store path from its preimage
 *  `"<type>:sha256:<hex inner hash>:<store dir>:<name>"`: SHA-256 of the
 *  preimage, XOR-folded to 20 bytes (byte i goes to i mod 20), in nix32.
 *  @param out buffer of at least 33 bytes (NUL terminated)
 *  @return 0; NARCACHE_EBUFS; NARCACHE_ECRYPTO. */
NARCACHE_API int narcache_store_path_hash_part(char *out, size_t out_size,
                                               const char *preimage,
                                               size_t len);

#ifdef __cplusplus
}
#endif

#endif /* NARCACHE_HASH_H */
