/*
 * libnarcache -- store paths, signing keys and signatures in Nix's formats.
 * (The narinfo object itself is the next part of this module.)
 *
 * Thread: functions without an object are thread-safe. Parsed keys are
 * immutable and may be shared between threads for signing and verifying.
 */
#ifndef NARCACHE_NARINFO_H
#define NARCACHE_NARINFO_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Store paths                                                               */
/* ------------------------------------------------------------------------ */

/** The default store directory. */
#define NARCACHE_STORE_DIR "/nix/store"

/** Longest store path name (the part after "<hash>-"). */
#define NARCACHE_STORE_NAME_MAX 211

/** Check a store path name: 1..211 bytes of [A-Za-z0-9+-._?=], and not
 *  ".", "..", or starting with ".-" or "..-" (as newer Nix).
 *  @return 0; NARCACHE_EBADSTOREPATH (err_offset: the offending byte). */
NARCACHE_API int narcache_store_path_check_name(const char *name, size_t len,
                                                size_t *err_offset);

/** Parse a base name "<32 nix32 chars>-<name>" (as in narinfo References).
 *  @param name_out optional: receives a pointer into `base` at the name
 *  @return 0; NARCACHE_EBADSTOREPATH (err_offset relative to `base`). */
NARCACHE_API int narcache_store_path_parse_base(const char **name_out, const char *base,
                                                size_t len, size_t *err_offset);

/** Parse a full store path "<store_dir>/<hash>-<name>". The directory must
 *  equal `store_dir` exactly (NULL means NARCACHE_STORE_DIR); no "//", no
 *  trailing "/".
 *  @param base_out optional: receives a pointer into `path` at the base name
 *  @return 0; NARCACHE_EBADSTOREPATH (err_offset relative to `path`). */
NARCACHE_API int narcache_store_path_parse(const char **base_out, const char *path,
                                           size_t len, const char *store_dir,
                                           size_t *err_offset);

/* ------------------------------------------------------------------------ */
/* Keys                                                                      */
/* ------------------------------------------------------------------------ */

/** An ed25519 key with its Nix key name. Secret keys keep their 64 bytes
 *  (seed + public key, libsodium's layout) in libsodium's guarded memory,
 *  wiped when freed. */
typedef struct narcache_key narcache_key;

/** Size of a detached signature in bytes (64). */
NARCACHE_API size_t narcache_key_signature_bytes(void);

/** Longest key name accepted (bytes). */
#define NARCACHE_KEY_NAME_MAX 255

/** Create a new random secret key named `name` (non-empty, no ':').
 *  @return 0; NARCACHE_EBADKEY (bad name); NARCACHE_ENOMEM; NARCACHE_ECRYPTO. */
NARCACHE_API NARCACHE_NODISCARD int narcache_key_generate(narcache_key **out,
                                                          const char *name, size_t len);

/** Parse a secret key "name:base64(64 bytes)" as written by
 *  `nix-store --generate-binary-cache-key` (one trailing newline is
 *  allowed; the base64 '=' padding may be omitted, as Nix allows). The
 *  public half stored in the key must match the seed.
 *  @return 0; NARCACHE_EBADKEY (err_offset: where; the message never
 *          contains key material); NARCACHE_ENOMEM; NARCACHE_ECRYPTO. */
NARCACHE_API NARCACHE_NODISCARD int narcache_key_parse_secret(narcache_key **out,
                                                              const char *text, size_t len,
                                                              size_t *err_offset);

/** Parse a public key "name:base64(32 bytes)". As _parse_secret. */
NARCACHE_API NARCACHE_NODISCARD int narcache_key_parse_public(narcache_key **out,
                                                              const char *text, size_t len,
                                                              size_t *err_offset);

/** The public key of a secret key (or a copy of a public key).
 *  @return 0; NARCACHE_EINVAL; NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_key_public(narcache_key **out,
                                                        const narcache_key *key);

/** Write the key in Nix's file format, without a newline. For a secret key
 *  this is secret material: the caller should wipe the buffer after use.
 *  Buffer sizes: 256 + 89 bytes always suffice.
 *  @return 0; NARCACHE_EBUFS; NARCACHE_EINVAL. */
NARCACHE_API int narcache_key_format(char *out, size_t out_size, size_t *out_len,
                                     const narcache_key *key);

/** The key's name (borrowed, NUL terminated); its length in *len if non-NULL. */
NARCACHE_API const char *narcache_key_name(const narcache_key *key, size_t *len);

/** 1 for a secret key, 0 for a public one. */
NARCACHE_API int narcache_key_is_secret(const narcache_key *key);

/** Sign `msg` with a secret key: writes the 64-byte signature to `sig`.
 *  @return 0; NARCACHE_EINVAL (not a secret key); NARCACHE_ECRYPTO. */
NARCACHE_API int narcache_key_sign(uint8_t *sig, size_t sig_size, const narcache_key *key,
                                   const void *msg, size_t len);

/** Verify a 64-byte signature of `msg` with the key's public half.
 *  @return 0 if valid; NARCACHE_EBADSIG; NARCACHE_EINVAL. */
NARCACHE_API NARCACHE_NODISCARD int narcache_key_verify(const narcache_key *key,
                                                        const uint8_t *sig, size_t sig_len,
                                                        const void *msg, size_t len);

/** Destroy a key, wiping secret material. NULL is a no-op. */
NARCACHE_API void narcache_key_free(narcache_key *key);

#ifdef __cplusplus
}
#endif

#endif /* NARCACHE_NARINFO_H */
