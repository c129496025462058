/*
 * libnarcache -- common definitions: export macro, version, error codes,
 * allocator hook, library init, buffer cursors.
 *
 * Thread rules for the whole library (see also each function):
 *  - The allocator and the init refcount are the only global mutable state.
 *  - narcache_init() and narcache_shutdown() are thread-safe.
 *  - narcache_set_allocator() must be called before any object exists; it
 *    refuses (NARCACHE_EMISUSE) while any library allocation is still live.
 *  - Codec objects (hasher, parser, writer, ...) may be used from any thread,
 *    but by one thread at a time. Distinct objects may be used concurrently.
 *  - Pure functions (encoders, decoders, hash parsing) are thread-safe.
 */
#ifndef NARCACHE_COMMON_H
#define NARCACHE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Export and attribute macros                                               */
/* ------------------------------------------------------------------------ */

#if defined(_WIN32)
#  if defined(NARCACHE_BUILDING) && !defined(NARCACHE_STATIC)
#    define NARCACHE_API __declspec(dllexport)
#  elif !defined(NARCACHE_STATIC)
#    define NARCACHE_API __declspec(dllimport)
#  else
#    define NARCACHE_API
#  endif
#elif defined(__GNUC__) || defined(__clang__)
#  define NARCACHE_API __attribute__((visibility("default")))
#else
#  define NARCACHE_API
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define NARCACHE_NODISCARD __attribute__((warn_unused_result))
#  define NARCACHE_DEPRECATED(msg) __attribute__((deprecated(msg)))
#else
#  define NARCACHE_NODISCARD
#  define NARCACHE_DEPRECATED(msg)
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */
/* ------------------------------------------------------------------------ */

/* This block is the single source of truth; CMake parses it. Releases with
 * the same major version (from 1.0 on) are ABI compatible; while the major
 * version is 0 the SONAME is libnarcache.so.0 and the exported symbol list
 * (abi/exported-symbols.txt) only ever grows. */
#define NARCACHE_VERSION_MAJOR 0
#define NARCACHE_VERSION_MINOR 1
#define NARCACHE_VERSION_PATCH 0

#define NARCACHE_VERSION_HEX                                                 \
  ((NARCACHE_VERSION_MAJOR << 16) | (NARCACHE_VERSION_MINOR << 8) |         \
   NARCACHE_VERSION_PATCH)

#define NARCACHE_STRINGIFY_(x) #x
#define NARCACHE_STRINGIFY(x) NARCACHE_STRINGIFY_(x)
#define NARCACHE_VERSION_STRING                                              \
  NARCACHE_STRINGIFY(NARCACHE_VERSION_MAJOR) "."                             \
  NARCACHE_STRINGIFY(NARCACHE_VERSION_MINOR) "."                             \
  NARCACHE_STRINGIFY(NARCACHE_VERSION_PATCH)

/** True (1) when the headers are at least version a.b.c. */
#define NARCACHE_VERSION_AT_LEAST(a, b, c)                                   \
  (NARCACHE_VERSION_HEX >= (((a) << 16) | ((b) << 8) | (c)))

/** The library's version as NARCACHE_VERSION_HEX; compare with the header's
 *  to detect a header/library mismatch.  Thread: any. */
NARCACHE_API unsigned int narcache_version(void);

/** The library's version as "MAJOR.MINOR.PATCH" (static string).  Thread: any. */
NARCACHE_API const char *narcache_version_string(void);

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* Every fallible call returns an int: >= 0 is success, < 0 one of the codes
 * below. The values are pinned forever; new codes are only appended.
 * XX(name, value, description) -- the one list that generates the enum,
 * narcache_errname() and narcache_strerror(). */
#define NARCACHE_ERRNO_MAP(XX)                                                \
  XX(EINVAL, -1, "invalid argument")                                          \
  XX(ENOMEM, -2, "out of memory")                                             \
  XX(EMISUSE, -3, "library misuse (call not allowed in this state)")          \
  XX(EBUFS, -4, "output buffer too small")                                    \
  XX(ELIMIT, -5, "configured limit exceeded")                                 \
  XX(EBADNAR, -6, "malformed NAR archive")                                    \
  XX(EBADNARINFO, -7, "malformed narinfo")                                    \
  XX(EBADKEY, -8, "malformed key")                                            \
  XX(EBADSIG, -9, "signature does not verify")                                \
  XX(ENOTFOUND, -10, "not found")                                             \
  XX(ECOMPRESS, -11, "compression or decompression failed")                   \
  XX(ECANCELED, -12, "operation canceled")                                    \
  XX(EUSER, -13, "callback asked to abort")                                   \
  XX(EIO, -14, "input/output error")                                          \
  XX(ENOTSUP, -15, "operation not supported")                                 \
  XX(EBADHASH, -16, "malformed hash string")                                  \
  XX(EHASHALGO, -17, "unknown or unsupported hash algorithm")                 \
  XX(EBADCHAR, -18, "invalid character in encoded data")                      \
  XX(EBADLENGTH, -19, "encoded data has the wrong length")                    \
  XX(ENONCANONICAL, -20, "non-canonical encoding (stray bits or padding)")    \
  XX(EBADSTOREPATH, -21, "malformed store path")                              \
  XX(ECRYPTO, -22, "cryptographic library failure")                          \
  XX(EUNAVAIL, -23, "temporarily unavailable (try again later)")              \
  XX(ECONFLICT, -24, "conflicts with the current state")                      \
  XX(ENOSPACE, -25, "not enough storage space")

typedef enum narcache_error {
  NARCACHE_OK = 0,
#define NARCACHE_ERRNO_ENUM_(name, value, text) NARCACHE_##name = (value),
  NARCACHE_ERRNO_MAP(NARCACHE_ERRNO_ENUM_)
#undef NARCACHE_ERRNO_ENUM_
} narcache_error;

/** A human-readable description of `code`. Always a static string, also for
 *  success ("success") and unknown codes ("unknown error").  Thread: any. */
NARCACHE_API const char *narcache_strerror(int code);

/** The symbolic name of `code` without prefix ("EINVAL", "OK"), or
 *  "UNKNOWN" for codes this version does not know. Static string.  Thread: any. */
NARCACHE_API const char *narcache_errname(int code);

/* ------------------------------------------------------------------------ */
/* Allocator                                                                 */
/* ------------------------------------------------------------------------ */

#define NARCACHE_ALLOCATOR_VERSION 1

/** Memory functions the library uses for everything it allocates itself
 *  (objects, returned strings). Each gets `ctx` as its first argument.
 *  All three must be thread-safe. realloc_fn must accept p == NULL.
 *  Secret key material is never allocated through this hook: it lives in
 *  libsodium's guarded memory. OpenSSL manages its own memory. */
typedef struct narcache_allocator {
  uint32_t version; /* NARCACHE_ALLOCATOR_VERSION */
  void *(*malloc_fn)(void *ctx, size_t size);
  void *(*realloc_fn)(void *ctx, void *p, size_t size);
  void (*free_fn)(void *ctx, void *p);
  void *ctx;
} narcache_allocator;

/** Install `a` (copied) as the allocator, or restore libc's with NULL.
 *  @return 0; NARCACHE_EMISUSE while any memory allocated by the library is
 *          still live (objects or strings not yet freed);
 *          NARCACHE_EINVAL if `a` has an unknown version or a NULL function.
 *  Thread: call before using the library from other threads. */
NARCACHE_API int narcache_set_allocator(const narcache_allocator *a);

/** Release memory the library returned to the caller (strings from `char
 *  **out` parameters). NULL is a no-op. Never use libc free() on it.
 *  Thread: any. */
NARCACHE_API void narcache_free(void *p);

/* ------------------------------------------------------------------------ */
/* Library initialisation                                                    */
/* ------------------------------------------------------------------------ */

/** Initialise the library's dependencies (libsodium). Refcounted: every
 *  successful call must be matched by narcache_shutdown(). Pure encoding and
 *  hashing functions work without it; key, signing and server functions need it.
 *  @return the new init count (>= 1); NARCACHE_ECRYPTO if libsodium fails
 *          to initialise.
 *  Thread: any (serialised internally). */
NARCACHE_API NARCACHE_NODISCARD int narcache_init(void);

/** Drop one reference taken by narcache_init().
 *  @return the remaining count (>= 0); NARCACHE_EMISUSE if the library was
 *          not initialised.  Thread: any. */
NARCACHE_API int narcache_shutdown(void);

/* ------------------------------------------------------------------------ */
/* Buffer cursors (frozen layout)                                            */
/* ------------------------------------------------------------------------ */

/** Input span: the library reads data[pos..size) and advances pos. */
typedef struct narcache_inbuf {
  const void *data;
  size_t size;
  size_t pos;
} narcache_inbuf;

/** Output span: the library writes into data[pos..size) and advances pos. */
typedef struct narcache_outbuf {
  void *data;
  size_t size;
  size_t pos;
} narcache_outbuf;

#ifdef __cplusplus
}
#endif

#endif /* NARCACHE_COMMON_H */
