/*
 * libnarcache -- store paths, .narinfo files, fingerprints, ed25519 keys and
 * signatures, and nix-cache-info, all in the formats Nix 2.8 reads and writes.
 *
 * Thread: functions without an object are thread-safe. Parsed keys are
 * immutable and may be shared between threads for signing and verifying.
 * A narinfo or cache-info object is used by one thread at a time; distinct
 * objects may be used concurrently.
 */
#ifndef NARCACHE_NARINFO_H
#define NARCACHE_NARINFO_H

#include "common.h"
#include "hash.h"

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

/** Create a new random secret key named `name`: 1..255 bytes of printable
 *  ASCII without ' ' or ':' (the same rule applies when parsing keys).
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

/* ------------------------------------------------------------------------ */
/* narinfo                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * A parsed .narinfo: what a binary cache says about one store path.
 *
 * Parsing follows Nix 2.8's reader (spec §3.3) and is stricter where Nix's
 * leniency only lets damaged or ambiguous files through; every refusal is
 * NARCACHE_EBADNARINFO with a message naming line, column and field:
 *  - every line is "Key: value\n": exactly one space after the colon (Nix
 *    silently eats any one byte), keys are [A-Za-z0-9_-]+, no CR, NUL or
 *    other control bytes, no blank lines, the last line ends in "\n";
 *  - a field may appear once (Nix lets the last copy win, so one file could
 *    say two things); only Sig repeats;
 *  - NarHash must be SHA-256 (any of Nix's spellings: sha256:<nix32|hex|
 *    base64> or SRI); sizes are plain decimal digits, no sign, no overflow;
 *  - a Sig must be "name:signature" with a non-empty name (as Nix >= 2.34);
 *    its signature part is only decoded when a trusted key of that name
 *    verifies it, as Nix 2.8 does;
 *  - URL is printable ASCII without spaces; Compression a [A-Za-z0-9._-]
 *    word (empty or missing means "bzip2", as in Nix);
 *  - a CA value must parse as Nix's "text:sha256:<hash>" or
 *    "fixed:[r:]<algo>:<hash>".
 * Accepted like Nix: unknown keys (ignored, not kept), References with
 * repeated spaces or duplicates (it is a set), "Deriver: unknown-deriver"
 * (no deriver), a narinfo of up to NARCACHE_NARINFO_MAX_BYTES.
 *
 * Formatting writes the fields in Nix's order (StorePath, URL, Compression,
 * FileHash, FileSize, NarHash, NarSize, References, Deriver, System, Sig...,
 * CA) with hashes as <algo>:<nix32>, references and signatures sorted
 * bytewise and deduplicated. A narinfo written by Nix formats back byte for
 * byte; FileHash/FileSize lines are left out when unknown (as newer Nix).
 */
typedef struct narcache_narinfo narcache_narinfo;

/** Largest narinfo text accepted by narcache_narinfo_parse (1 MiB: room
 *  for more than 10000 references). */
#define NARCACHE_NARINFO_MAX_BYTES (1024 * 1024)

/** Create an empty narinfo for store directory `store_dir` (copied; NULL
 *  means NARCACHE_STORE_DIR). The directory must be absolute, without a
 *  trailing '/', and of printable characters.
 *  @return 0; NARCACHE_EINVAL (bad directory); NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_narinfo_new(narcache_narinfo **out,
                                                         const char *store_dir);

/** Destroy a narinfo. NULL is a no-op. */
NARCACHE_API void narcache_narinfo_free(narcache_narinfo *ni);

/** Replace the contents of `ni` with the narinfo in `text`. On failure the
 *  object keeps its previous contents and narcache_narinfo_errmsg() says
 *  what and where.
 *  @return 0; NARCACHE_EBADNARINFO; NARCACHE_ELIMIT (longer than
 *          NARCACHE_NARINFO_MAX_BYTES); NARCACHE_ENOMEM; NARCACHE_EINVAL. */
NARCACHE_API NARCACHE_NODISCARD int narcache_narinfo_parse(narcache_narinfo *ni,
                                                           const char *text, size_t len);

/** Message of the last failed parse or setter ("line 3, column 10: NarHash:
 *  ..."), or "" if none. Borrowed; valid until the next call on `ni`. */
NARCACHE_API const char *narcache_narinfo_errmsg(const narcache_narinfo *ni);

/** Byte offset in the parsed text of the last parse error (0 if none). */
NARCACHE_API size_t narcache_narinfo_err_offset(const narcache_narinfo *ni);

/** Render the narinfo as Nix writes it.
 *  @param out receives a NUL-terminated string; release with narcache_free()
 *  @return 0; NARCACHE_EBADNARINFO (StorePath, URL, NarHash or NarSize not
 *          set); NARCACHE_ENOMEM; NARCACHE_EINVAL. */
NARCACHE_API NARCACHE_NODISCARD int narcache_narinfo_format(char **out, size_t *out_len,
                                                            const narcache_narinfo *ni);

/** The signed statement about the path (spec §4.1):
 *  "1;<store path>;sha256:<nix32 NarHash>;<NarSize>;<sorted full reference
 *  paths joined by ','>".
 *  @param out receives a NUL-terminated string; release with narcache_free()
 *  @return 0; NARCACHE_EBADNARINFO (StorePath, NarHash or NarSize not set);
 *          NARCACHE_ENOMEM; NARCACHE_EINVAL. */
NARCACHE_API NARCACHE_NODISCARD int narcache_narinfo_fingerprint(char **out, size_t *out_len,
                                                                 const narcache_narinfo *ni);

/* Field access. String getters return a borrowed NUL-terminated string
 * (valid until the field changes or the object is freed) and its length in
 * *len if `len` is non-NULL; NULL when the field is absent. Setters copy
 * and validate their input as the parser does (NARCACHE_EBADNARINFO with
 * errmsg set, object unchanged); passing NULL clears an optional field. */

/** Store directory given to narcache_narinfo_new(). */
NARCACHE_API const char *narcache_narinfo_store_dir(const narcache_narinfo *ni, size_t *len);

/** Full store path ("/nix/store/<hash>-<name>"). */
NARCACHE_API const char *narcache_narinfo_store_path(const narcache_narinfo *ni, size_t *len);
/** Set StorePath: a full path in the object's store directory. Required. */
NARCACHE_API int narcache_narinfo_set_store_path(narcache_narinfo *ni, const char *path,
                                                 size_t len);

/** URL of the (compressed) NAR, relative to the cache root. */
NARCACHE_API const char *narcache_narinfo_url(const narcache_narinfo *ni, size_t *len);
/** Set URL (non-empty printable ASCII, no spaces). Required. */
NARCACHE_API int narcache_narinfo_set_url(narcache_narinfo *ni, const char *url, size_t len);

/** Compression of the file at URL; "bzip2" when the narinfo named none, as
 *  Nix reads it. Never NULL. */
NARCACHE_API const char *narcache_narinfo_compression(const narcache_narinfo *ni, size_t *len);
/** Set Compression ("none", "xz", "zstd", ...). NULL or "" means bzip2. */
NARCACHE_API int narcache_narinfo_set_compression(narcache_narinfo *ni, const char *method,
                                                  size_t len);

/** Copy FileHash to *out. @return 0; NARCACHE_ENOTFOUND (absent). */
NARCACHE_API int narcache_narinfo_file_hash(const narcache_narinfo *ni, narcache_hash *out);
/** Set FileHash (any algorithm); NULL clears it. */
NARCACHE_API int narcache_narinfo_set_file_hash(narcache_narinfo *ni, const narcache_hash *h);

/** FileSize. @return 0; NARCACHE_ENOTFOUND (absent). */
NARCACHE_API int narcache_narinfo_file_size(const narcache_narinfo *ni, uint64_t *out);
/** Set FileSize; `present` 0 clears it. */
NARCACHE_API int narcache_narinfo_set_file_size(narcache_narinfo *ni, int present,
                                                uint64_t size);

/** Copy NarHash to *out. @return 0; NARCACHE_ENOTFOUND (not set). */
NARCACHE_API int narcache_narinfo_nar_hash(const narcache_narinfo *ni, narcache_hash *out);
/** Set NarHash (must be SHA-256; else NARCACHE_EHASHALGO). Required. */
NARCACHE_API int narcache_narinfo_set_nar_hash(narcache_narinfo *ni, const narcache_hash *h);

/** NarSize, or 0 when not set. */
NARCACHE_API uint64_t narcache_narinfo_nar_size(const narcache_narinfo *ni);
/** Set NarSize (non-zero). Required. */
NARCACHE_API int narcache_narinfo_set_nar_size(narcache_narinfo *ni, uint64_t size);

/** Number of references. */
NARCACHE_API size_t narcache_narinfo_reference_count(const narcache_narinfo *ni);
/** Reference `i` as a base name "<hash>-<name>", in sorted order; NULL if
 *  out of range. */
NARCACHE_API const char *narcache_narinfo_reference(const narcache_narinfo *ni, size_t i,
                                                    size_t *len);
/** Add a reference given as a base name; adding one twice is a no-op. */
NARCACHE_API int narcache_narinfo_add_reference(narcache_narinfo *ni, const char *base,
                                                size_t len);
/** Remove all references. */
NARCACHE_API void narcache_narinfo_clear_references(narcache_narinfo *ni);

/** Deriver as a base name ("<hash>-<name>.drv"); NULL if unknown. */
NARCACHE_API const char *narcache_narinfo_deriver(const narcache_narinfo *ni, size_t *len);
/** Set Deriver (a base name); NULL clears it. */
NARCACHE_API int narcache_narinfo_set_deriver(narcache_narinfo *ni, const char *base,
                                              size_t len);

/** System (written by Nix 2.8 when known, ignored by newer Nix). */
NARCACHE_API const char *narcache_narinfo_system(const narcache_narinfo *ni, size_t *len);
/** Set System (printable ASCII, no spaces); NULL clears it. */
NARCACHE_API int narcache_narinfo_set_system(narcache_narinfo *ni, const char *system,
                                             size_t len);

/** Content address ("fixed:r:sha256:<nix32>", ...) in Nix's rendering. */
NARCACHE_API const char *narcache_narinfo_ca(const narcache_narinfo *ni, size_t *len);
/** Set CA; any of Nix's hash spellings, stored in Nix's rendering. NULL
 *  clears it. */
NARCACHE_API int narcache_narinfo_set_ca(narcache_narinfo *ni, const char *ca, size_t len);

/** Number of Sig entries. */
NARCACHE_API size_t narcache_narinfo_sig_count(const narcache_narinfo *ni);
/** Sig entry `i` ("name:base64"), in sorted order; NULL if out of range. */
NARCACHE_API const char *narcache_narinfo_sig(const narcache_narinfo *ni, size_t i,
                                              size_t *len);
/** Add a Sig entry verbatim ("name:...", non-empty name); duplicates
 *  collapse. It is not checked against any key. */
NARCACHE_API int narcache_narinfo_add_sig(narcache_narinfo *ni, const char *sig, size_t len);
/** Remove all Sig entries. */
NARCACHE_API void narcache_narinfo_clear_sigs(narcache_narinfo *ni);

/* ------------------------------------------------------------------------ */
/* Signing and verifying narinfo                                             */
/* ------------------------------------------------------------------------ */

/** Sign the fingerprint with secret key `key` and add the Sig entry,
 *  replacing every existing entry with the same key name.
 *  @return 0; NARCACHE_EINVAL (public key); NARCACHE_EBADNARINFO (no
 *          fingerprint: StorePath, NarHash or NarSize not set);
 *          NARCACHE_ENOMEM; NARCACHE_ECRYPTO. */
NARCACHE_API NARCACHE_NODISCARD int narcache_narinfo_sign(narcache_narinfo *ni,
                                                          const narcache_key *key);

/** Verify the signatures against the trusted keys `keys[0..n_keys)` the
 *  way Nix does: keys are matched by name and when two trusted keys share
 *  a name only the first counts; Sig entries with an untrusted name are
 *  ignored; the narinfo is accepted when one entry verifies.
 *  Only signatures are checked: a content address (CA) is not taken as
 *  proof here.
 *  @param key_out optional: on 0, the trusted key that verified; on
 *         NARCACHE_EBADSIG, the trusted key whose signature failed. Borrowed
 *         from `keys`. Otherwise NULL.
 *  @return 0 (verified); NARCACHE_ENOTFOUND (no Sig by any trusted key);
 *          NARCACHE_EBADSIG (a trusted key's signature does not verify or
 *          is malformed, and none verified -- Nix 2.8 refuses a path with a
 *          malformed signature by a trusted key even if another verifies,
 *          and so do we); NARCACHE_EBADNARINFO (no fingerprint);
 *          NARCACHE_ENOMEM; NARCACHE_EINVAL. */
NARCACHE_API NARCACHE_NODISCARD int narcache_narinfo_verify(const narcache_key **key_out,
                                                            const narcache_narinfo *ni,
                                                            const narcache_key *const *keys,
                                                            size_t n_keys);

/* ------------------------------------------------------------------------ */
/* nix-cache-info                                                            */
/* ------------------------------------------------------------------------ */

/*
 * The cache's self-description (spec §5). Parsing follows Nix: lines split
 * on "\n" (empty lines skipped, so CRLF files work), "Key: value" with the
 * value trimmed of blanks, lines without ':' and unknown keys ignored.
 * Stricter than Nix: a known key appearing twice, a non-integer Priority
 * (Nix's stoi reads "12abc" as 12), a WantMassQuery other than 0 or 1, a
 * StoreDir that is not an absolute path, NUL bytes and files over 64 KiB
 * are errors.
 */
typedef struct narcache_cache_info narcache_cache_info;

/** Create an empty cache info (no field set).
 *  @return 0; NARCACHE_ENOMEM; NARCACHE_EINVAL. */
NARCACHE_API NARCACHE_NODISCARD int narcache_cache_info_new(narcache_cache_info **out);

/** Destroy. NULL is a no-op. */
NARCACHE_API void narcache_cache_info_free(narcache_cache_info *ci);

/** Replace the contents with the parsed `text`; unchanged on failure.
 *  @return 0; NARCACHE_EBADNARINFO (see narcache_cache_info_errmsg());
 *          NARCACHE_ELIMIT; NARCACHE_ENOMEM; NARCACHE_EINVAL. */
NARCACHE_API NARCACHE_NODISCARD int narcache_cache_info_parse(narcache_cache_info *ci,
                                                              const char *text, size_t len);

/** Message of the last failed call, or "". Borrowed. */
NARCACHE_API const char *narcache_cache_info_errmsg(const narcache_cache_info *ci);

/** Render as "StoreDir: ...\nWantMassQuery: 0|1\nPriority: N\n", each line
 *  only when that field is set.
 *  @param out receives a NUL-terminated string; release with narcache_free()
 *  @return 0; NARCACHE_ENOMEM; NARCACHE_EINVAL. */
NARCACHE_API NARCACHE_NODISCARD int narcache_cache_info_format(char **out, size_t *out_len,
                                                               const narcache_cache_info *ci);

/** StoreDir, or NULL if not set. Borrowed. */
NARCACHE_API const char *narcache_cache_info_store_dir(const narcache_cache_info *ci,
                                                       size_t *len);
/** Set StoreDir (absolute, no trailing '/'); NULL clears it.
 *  @return 0; NARCACHE_EBADNARINFO; NARCACHE_ENOMEM. */
NARCACHE_API int narcache_cache_info_set_store_dir(narcache_cache_info *ci, const char *dir,
                                                   size_t len);

/** WantMassQuery: 1 or 0 in *out. @return 0; NARCACHE_ENOTFOUND (not set). */
NARCACHE_API int narcache_cache_info_want_mass_query(const narcache_cache_info *ci, int *out);
/** Set WantMassQuery to `value` (0 or non-zero); `present` 0 clears it. */
NARCACHE_API int narcache_cache_info_set_want_mass_query(narcache_cache_info *ci, int present,
                                                         int value);

/** Priority in *out. @return 0; NARCACHE_ENOTFOUND (not set). */
NARCACHE_API int narcache_cache_info_priority(const narcache_cache_info *ci, int32_t *out);
/** Set Priority; `present` 0 clears it. */
NARCACHE_API int narcache_cache_info_set_priority(narcache_cache_info *ci, int present,
                                                  int32_t priority);

#ifdef __cplusplus
}
#endif

#endif /* NARCACHE_NARINFO_H */
