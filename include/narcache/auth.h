/*
 * libnarcache -- access tokens for a cache server.
 *
 * A token file holds one token per line:
 *
 *     # NAME   SCOPE  TOKEN
 *     ci-main  write  6b1f0c0e5d0a4e3c9a7f21d4c8e2b9a1
 *     laptop   read   0f9e8d7c6b5a49382716a5b4c3d2e1f0
 *
 * NAME (1-64 of A-Z a-z 0-9 . _ @ -) names the token in logs and metrics;
 * SCOPE is `read` (download from a private cache) or `write` (upload, and
 * read); TOKEN is 16-256 printable ASCII characters without spaces. Fields
 * are separated by spaces or tabs; `#` starts a comment (a whole line, or
 * after whitespace); blank lines are ignored. Names and tokens are unique.
 *
 * Clients present a token as `Authorization: Bearer TOKEN`, or as the
 * password of HTTP Basic auth, which is what the Nix client sends from a
 * netrc file (`machine HOST login ANY password TOKEN`).
 *
 * Only SHA-256 digests of the tokens are kept in memory, and a check
 * compares the presented token's digest with every entry in constant time,
 * so neither the time of a check nor a memory dump tells a token.
 *
 * Thread rules: a parsed table is immutable; it may be checked from any
 * number of threads at once. Replace it (e.g. on SIGHUP) by parsing a new
 * one and swapping pointers where it is used.
 */
#ifndef NARCACHE_AUTH_H
#define NARCACHE_AUTH_H

#include "narcache/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** What a token allows. Values pinned; WRITE includes READ. */
enum narcache_scope {
  NARCACHE_SCOPE_NONE = 0, /* no token, or one the table does not know */
  NARCACHE_SCOPE_READ = 1,
  NARCACHE_SCOPE_WRITE = 2,
};

typedef struct narcache_tokens narcache_tokens;

/** Most bytes a token file may have. */
#define NARCACHE_TOKENS_MAX_BYTES (1u << 20)

/** Parse a token file's text (`len` bytes, NUL not needed).
 *  @param err receives a message naming the line on failure (may be NULL)
 *  @return 0 (*out set; free with narcache_tokens_free); NARCACHE_EINVAL
 *          (syntax, short token, duplicate name or token); NARCACHE_ELIMIT
 *          (more than NARCACHE_TOKENS_MAX_BYTES); NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_tokens_parse(narcache_tokens **out, const char *text,
                                                          size_t len, char *err, size_t err_size);

/** Read and parse the token file at `path`.
 *  @return as narcache_tokens_parse; NARCACHE_EIO if it cannot be read
 *          (the message says why). */
NARCACHE_API NARCACHE_NODISCARD int narcache_tokens_load(narcache_tokens **out, const char *path,
                                                         char *err, size_t err_size);

/** The scope the presented `credential` (`len` bytes) grants:
 *  NARCACHE_SCOPE_NONE if no token matches. On a match, *name (optional)
 *  points to the token's name (owned by the table). Constant time per
 *  entry, whatever matches. Thread: any. */
NARCACHE_API int narcache_tokens_check(const narcache_tokens *tokens, const char *credential,
                                       size_t len, const char **name);

/** Number of tokens in the table. */
NARCACHE_API size_t narcache_tokens_count(const narcache_tokens *tokens);

/** Free a table. NULL is a no-op. */
NARCACHE_API void narcache_tokens_free(narcache_tokens *tokens);

/** The credential of an Authorization header value (`len` bytes): TOKEN
 *  of `Bearer TOKEN`, or PASSWORD of `Basic base64(USER:PASSWORD)`. The
 *  scheme is matched without regard to case. Written NUL-terminated.
 *  @return its length (>= 1); NARCACHE_EINVAL (another scheme, bad
 *          base64, no ':' or an empty credential); NARCACHE_EBUFS. */
NARCACHE_API int narcache_auth_credential(char *out, size_t out_size, const char *value,
                                          size_t len);

#ifdef __cplusplus
}
#endif

#endif
