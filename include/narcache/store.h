/*
 * libnarcache -- stores: where a binary cache's objects live.
 *
 * A binary cache is a set of named objects (spec §6.1): nix-cache-info,
 * <hash>.narinfo, <hash>.ls, nar/<file>, log/<drv>. A store serves them
 * by kind and name, and takes uploads of them. The server never touches
 * files itself; it asks a store.
 *
 * A store is a table of callbacks (narcache_store_methods) with a context.
 * The built-in backends use the same table:
 *  - dir: a directory laid out as `nix copy --to file://DIR` writes it;
 *  - (later) nixstore: a local Nix store, NARs and narinfo made on the fly.
 * An embedder can register its own.
 *
 * Threads: a store's callbacks may block; the server calls them from worker
 * threads, several at a time, so a backend must be safe for concurrent
 * calls. One reader or upload is used by one thread at a time. The wrapper
 * functions below validate names and arguments before a backend sees them:
 * a backend never receives a name containing '/' or starting with '.'.
 */
#ifndef NARCACHE_STORE_H
#define NARCACHE_STORE_H

#include "common.h"
#include "nar.h"
#include "narinfo.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Kinds of objects, with the names they take (validated by the library). */
typedef enum narcache_object_kind {
  NARCACHE_OBJECT_CACHE_INFO = 1, /* "nix-cache-info"; name "" */
  NARCACHE_OBJECT_NARINFO = 2,    /* "<hash>.narinfo"; name: the 32-char hash part */
  NARCACHE_OBJECT_LISTING = 3,    /* "<hash>.ls"; name: the 32-char hash part */
  NARCACHE_OBJECT_NAR = 4,        /* "nar/<file>"; name: the file, e.g. "<nix32>.nar.zst" */
  NARCACHE_OBJECT_LOG = 5         /* "log/<drv>"; name: a store path base name */
} narcache_object_kind;

/** Check `name` for `kind` as the library does before calling a backend.
 *  NAR names: 1..255 bytes of [A-Za-z0-9+._-], not starting with '.'.
 *  @return 0; NARCACHE_EINVAL (unknown kind); NARCACHE_ENOTFOUND (a name
 *          no object of this kind can have). */
NARCACHE_API int narcache_object_name_check(int kind, const char *name, size_t len);

/* ------------------------------------------------------------------------ */
/* Readers                                                                   */
/* ------------------------------------------------------------------------ */

#define NARCACHE_READER_VERSION 2

/** An object opened for reading: its exact size is known before any byte
 *  is read, and any offset can be read (HTTP Range, resumed sends).
 *  Filled in by a backend's `open`. Either `fd` >= 0 and the bytes are
 *  fd[fd_offset, fd_offset + size) (the server may send them with
 *  sendfile; nobody else moves the file position: reads use pread), or
 *  `read` produces them. `close` releases everything, the fd included. */
typedef struct narcache_reader {
  uint32_t version; /* NARCACHE_READER_VERSION */
  uint64_t size;
  int fd;
  uint64_t fd_offset;
  /* Read up to `len` bytes at `offset` (< size) into `buf`; *got > 0
   * unless offset == size. May block. 0 or a NARCACHE_E* code. */
  int (*read)(void *ctx, uint64_t offset, void *buf, size_t len, size_t *got);
  void (*close)(void *ctx);
  void *ctx;
  /* ---- version 2 ---- */
  /* Optional, with `read`: the bytes from `offset` (< size) on as one piece
   * that needs no copy -- a NARCACHE_NAR_SEG_BYTES span, a
   * NARCACHE_NAR_SEG_FILE region or a NARCACHE_NAR_SEG_STREAM socket that
   * the server splices (see nar.h; STREAM only if seg->version >= 2) --
   * valid until the next call on this reader, which may start where the
   * caller stopped using it. A FILE region yielding fewer bytes than
   * `length`, or a STREAM that ends or stalls, means the object changed or
   * its source failed: the response is abandoned. 1 with `seg` filled, or
   * a NARCACHE_E* code. */
  int (*segment)(void *ctx, uint64_t offset, narcache_nar_segment *seg);
} narcache_reader;

/** Fill `r` for the byte range [offset, offset + size) of `fd`, which the
 *  reader then owns (closed by narcache_reader_close). */
NARCACHE_API void narcache_reader_init_fd(narcache_reader *r, int fd, uint64_t offset,
                                          uint64_t size);

/** Fill `r` with a copy of `data`.
 *  @return 0; NARCACHE_ENOMEM (r is then unusable, nothing to close). */
NARCACHE_API int narcache_reader_init_memory(narcache_reader *r, const void *data, size_t len);

/** Read from `r` at `offset` (pread on its fd, or its read callback).
 *  Short reads are possible; *got == 0 only at the end.
 *  @return 0; NARCACHE_EIO; NARCACHE_EUNAVAIL; NARCACHE_EINVAL. */
NARCACHE_API int narcache_reader_read(narcache_reader *r, uint64_t offset, void *buf, size_t len,
                                      size_t *got);

/** Release the reader. Safe on a zeroed struct. */
NARCACHE_API void narcache_reader_close(narcache_reader *r);

/* ------------------------------------------------------------------------ */
/* The backend table                                                         */
/* ------------------------------------------------------------------------ */

#define NARCACHE_STORE_METHODS_VERSION 3

/** What a backend implements. Copied at registration; fields are only ever
 *  appended (older backends leave newer ones out by their `version`).
 *  Every callback returns 0 or a NARCACHE_E* code, and must use
 *  NARCACHE_ENOTFOUND for "no such object" (HTTP 404) and
 *  NARCACHE_EUNAVAIL for "cannot answer now" (HTTP 503): out of file
 *  descriptors or memory, a backend that timed out. */
typedef struct narcache_store_methods {
  uint32_t version; /* NARCACHE_STORE_METHODS_VERSION */
  /** Open an object: fill *out (version already set by the caller). */
  int (*open)(void *ctx, int kind, const char *name, size_t len, narcache_reader *out);
  /** Start an upload of exactly `size` bytes; NULL if read-only
   *  (uploads then fail with NARCACHE_ENOTSUP). */
  int (*upload_begin)(void *ctx, int kind, const char *name, size_t len, uint64_t size,
                      void **upload);
  int (*upload_write)(void *upload, const void *data, size_t len);
  /** Publish atomically: readers see the old object or the new one. Frees
   *  `upload` whatever the result. */
  int (*upload_commit)(void *upload);
  /** Drop an unfinished upload, leaving no trace. Frees `upload`. */
  void (*upload_abort)(void *upload);
  /** Health probe: 0 only if objects can be read right now. May be NULL. */
  int (*probe)(void *ctx);
  /** Called by narcache_store_free(). May be NULL. */
  void (*destroy)(void *ctx);
  /* ---- version 2 ---- */
  /** Publish commits the backend has staged (see narcache_store_flush).
   *  May be NULL: commits are then published when they return. */
  int (*flush)(void *ctx);
  /* ---- version 3 ---- */
  /** Optional: where a client should fetch the object instead (an HTTP 307
   *  to *url, allocated with narcache_malloc), returning 1; 0 to serve it
   *  through `open`. See narcache_store_redirect. */
  int (*redirect)(void *ctx, int kind, const char *name, size_t len, char **url);
} narcache_store_methods;

typedef struct narcache_store narcache_store;

/** Wrap a backend. `methods` is copied; `ctx` is passed to every callback
 *  and released by `methods->destroy` when the store is freed (also when
 *  this call fails after taking it: it never leaks `ctx`).
 *  @return 0; NARCACHE_EINVAL (unknown version, `open` missing, upload
 *          callbacks partly set); NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_store_new(narcache_store **out,
                                                       const narcache_store_methods *methods,
                                                       void *ctx);

/** The store directory narinfo uploads are checked against (copied;
 *  default NARCACHE_STORE_DIR "/nix/store").
 *  @return 0; NARCACHE_EINVAL (not an absolute path); NARCACHE_ENOMEM.
 *  Thread: before the store is shared. */
NARCACHE_API int narcache_store_set_store_dir(narcache_store *store, const char *store_dir);

/** Destroy a store (calls its destroy callback). Readers and uploads
 *  must be closed first. NULL is a no-op. */
NARCACHE_API void narcache_store_free(narcache_store *store);

/** Open an object after checking its name.
 *  @return 0 (*out filled; close it); NARCACHE_ENOTFOUND; NARCACHE_EUNAVAIL;
 *          NARCACHE_EIO; NARCACHE_EINVAL. */
NARCACHE_API NARCACHE_NODISCARD int narcache_store_open(narcache_reader *out,
                                                        narcache_store *store, int kind,
                                                        const char *name, size_t len);

/** Where a client should fetch an object from instead of this store
 *  serving it: 1 with *url (an absolute URL; release with narcache_free())
 *  that the server answers with 307 Temporary Redirect, or 0 (*url NULL):
 *  serve the object through narcache_store_open(). Only backends with a
 *  redirect method say 1 (an s3 store with NARCACHE_STORE_S3_REDIRECT, for
 *  NARs). Thread: any, like open.
 *  @return 1; 0; NARCACHE_ENOTFOUND (bad name); NARCACHE_EUNAVAIL;
 *          NARCACHE_EINVAL. */
NARCACHE_API int narcache_store_redirect(char **url, narcache_store *store, int kind,
                                         const char *name, size_t len);

/** Read a whole (small) object into memory: narinfo, listing, cache info.
 *  @param out NUL-terminated; release with narcache_free()
 *  @return as narcache_store_open; NARCACHE_ELIMIT (larger than `max`). */
NARCACHE_API NARCACHE_NODISCARD int narcache_store_read_all(char **out, size_t *out_len,
                                                            narcache_store *store, int kind,
                                                            const char *name, size_t len,
                                                            size_t max);

/** Health probe (0: objects can be read now). */
NARCACHE_API int narcache_store_probe(narcache_store *store);

/** An upload in progress. */
typedef struct narcache_upload narcache_upload;

/** Start uploading an object of exactly `size` bytes. A narinfo is checked
 *  at commit: it must parse, its StorePath must have the hash part it is
 *  uploaded under, and at most NARCACHE_NARINFO_MAX_BYTES long.
 *  @return 0; NARCACHE_ENOTSUP (read-only store); NARCACHE_ENOTFOUND (bad
 *          name); NARCACHE_ELIMIT; NARCACHE_EUNAVAIL; NARCACHE_EIO. */
NARCACHE_API NARCACHE_NODISCARD int narcache_store_upload_begin(narcache_upload **out,
                                                                narcache_store *store, int kind,
                                                                const char *name, size_t len,
                                                                uint64_t size);

/** Append bytes. More than the announced size is NARCACHE_ELIMIT. */
NARCACHE_API int narcache_upload_write(narcache_upload *up, const void *data, size_t len);

/** Publish. Fewer bytes than announced is NARCACHE_EMISUSE; an invalid
 *  narinfo NARCACHE_EBADNARINFO; a narinfo whose NAR is not in the store
 *  NARCACHE_ECONFLICT (the dir backend publishes NARs before the
 *  narinfos that point to them). Either way the upload is over: free it. */
NARCACHE_API int narcache_upload_commit(narcache_upload *up);

/** What went wrong with the upload, or "". Borrowed. */
NARCACHE_API const char *narcache_upload_errmsg(const narcache_upload *up);

/** Release an upload, abandoning it (no trace left) unless it was
 *  committed. NULL is a no-op. */
NARCACHE_API void narcache_upload_free(narcache_upload *up);

/** Publish every commit the store has staged (a dir store opened with
 *  NARCACHE_STORE_DIR_BATCH): when this returns 0 they are visible and
 *  durable. A no-op for stores that publish on commit.
 *  @return 0; NARCACHE_EIO or NARCACHE_EUNAVAIL (the objects not yet
 *          published are dropped: upload them again).
 *  Thread: any; commits of other threads wait while it runs. */
NARCACHE_API int narcache_store_flush(narcache_store *store);

/* ------------------------------------------------------------------------ */
/* Built-in backend: a binary-cache directory                                */
/* ------------------------------------------------------------------------ */

/** Flags for narcache_store_dir_new(). */
#define NARCACHE_STORE_DIR_WRITABLE 1u /* accept uploads */
/* With WRITABLE: a commit only stages the finished object (nothing is
 * visible yet); narcache_store_flush() publishes everything staged with one
 * syncfs() instead of two fsyncs per object -- NARs, listings and logs
 * first, narinfos last. For bulk writers such as `narcache cache add`.
 * Staged objects not flushed when the store is freed are dropped; more
 * than 1024 staged objects trigger a flush from inside a commit. */
#define NARCACHE_STORE_DIR_BATCH 2u

/** A binary-cache directory as `nix copy --to file://PATH` writes it.
 *  Objects are served as stored (any compression); files are opened
 *  relative to the directory, never following symlinks in object names.
 *  Uploads (with NARCACHE_STORE_DIR_WRITABLE) are written to a temporary
 *  file in the target directory, fsynced, renamed into place, and the
 *  directory fsynced; a narinfo is accepted only when the NAR its URL
 *  names is already present. A crash can leave hidden ".tmp-*" files
 *  (never an object name); a writable store removes those older than a
 *  day when it is created.
 *  @return 0; NARCACHE_ENOTFOUND (no such directory); NARCACHE_EIO;
 *          NARCACHE_ENOMEM; NARCACHE_EINVAL. */
NARCACHE_API NARCACHE_NODISCARD int narcache_store_dir_new(narcache_store **out, const char *path,
                                                           unsigned flags);

/** Keep `bytes` free on the filesystem of a dir store opened WRITABLE: an
 *  upload that would leave less is refused with NARCACHE_ENOSPACE before
 *  anything is written (0, the default: no floor).
 *  @return 0; NARCACHE_EINVAL (not a dir store). Thread: before sharing. */
NARCACHE_API int narcache_store_dir_set_min_free(narcache_store *store, uint64_t bytes);

/* ------------------------------------------------------------------------ */
/* Built-in backend: a local Nix store (read-only)                           */
/* ------------------------------------------------------------------------ */

#define NARCACHE_NIXSTORE_OPTIONS_VERSION 1

/** Options of narcache_store_nixstore_new(). Zero-initialise, set
 *  `version`, then what you need. */
typedef struct narcache_nixstore_options {
  uint32_t version;      /* NARCACHE_NIXSTORE_OPTIONS_VERSION */
  const char *store_dir; /* NULL: "/nix/store" */
  const char *db_path;   /* NULL: "/nix/var/nix/db/db.sqlite" */
  /* Secret keys that sign every narinfo served (replacing signatures of
   * the same names from the database). Borrowed: they must outlive the
   * store. May be none. */
  const narcache_key *const *keys;
  size_t n_keys;
  int32_t priority; /* nix-cache-info Priority; 0 means 30 */
  /* How narinfo points at NARs: NARCACHE_CODEC_NONE (0 means none) or
   * NARCACHE_CODEC_ZSTD at `level` (0: default). A zstd NAR is compressed
   * completely into an unlinked temporary file (in $TMPDIR or /tmp) when
   * opened, since its size must be known before its first byte. */
  int compression;
  int level;
  /* Nix's log directory, holding drvs/XX/REST[.bz2]; NULL:
   * "/nix/var/log/nix". */
  const char *log_dir;
} narcache_nixstore_options;

/** Serve a local Nix store, as nix-serve and harmonia do. Metadata comes
 *  from Nix's SQLite database, opened read-only (a WAL reader never blocks
 *  Nix's writers; each lookup is one short read transaction). Safe to use
 *  from any number of threads at once: each lookup borrows one of up to 16
 *  SQLite connections (more concurrent lookups wait for one). Objects:
 *   - narinfo: made from the database row (StorePath, NarHash, NarSize,
 *     References, Deriver, CA, Sig), URL "nar/<hash part>-<nix32
 *     NarHash>.nar[.zst]" and Compression per the options, signed with
 *     the keys;
 *   - nar/<hash part>-<nix32 NarHash>.nar (and .nar.zst): the NAR dumped
 *     on the fly; a path whose registered NarHash differs from the name is
 *     absent, and a tree that no longer has its registered NarSize is an
 *     I/O error; nix-serve's old form nar/<hash part>.nar is served too
 *     (the server also maps harmonia's nar/<NarHash>.nar?hash=<hash part>
 *     to the first form);
 *   - <hash>.ls: the listing of the path, with narOffset;
 *   - log/<name>.drv: the build log Nix kept for that derivation, served
 *     decompressed (up to 1 GiB), whether or not the .drv is still valid;
 *   - nix-cache-info: StoreDir, WantMassQuery 1, Priority.
 *  Paths not registered as valid are absent. Uploads are not supported.
 *  @return 0; NARCACHE_ENOTFOUND (no database); NARCACHE_EUNAVAIL (locked);
 *          NARCACHE_EIO; NARCACHE_EINVAL; NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_store_nixstore_new(
    narcache_store **out, const narcache_nixstore_options *options);

/* ------------------------------------------------------------------------ */
/* Built-in backend: an S3-compatible bucket                                 */
/* ------------------------------------------------------------------------ */

#define NARCACHE_STORE_S3_WRITABLE 1u     /* accept uploads */
#define NARCACHE_STORE_S3_NO_CACHE 2u     /* no narinfo cache (every open asks S3) */
#define NARCACHE_STORE_S3_INSECURE_TLS 4u /* https without certificate checks (tests) */
/* Answer NAR requests with 307 to a presigned URL of the object, so clients
 * download straight from the object store (see redirect_endpoint). */
#define NARCACHE_STORE_S3_REDIRECT 8u

#define NARCACHE_S3_ADDRESSING_PATH 1    /* https://HOST/BUCKET/KEY */
#define NARCACHE_S3_ADDRESSING_VIRTUAL 2 /* https://BUCKET.HOST/KEY */

#define NARCACHE_S3_OPTIONS_VERSION 1

/** Options of narcache_store_s3_new(). Zero-initialise, set `version`, then
 *  either `url` or `bucket` (fields set here override the URL's). Strings
 *  are copied; none need outlive the call. 0 means "the default" for every
 *  number. */
typedef struct narcache_s3_options {
  uint32_t version; /* NARCACHE_S3_OPTIONS_VERSION */
  /* "s3://BUCKET[/PREFIX][?endpoint=URL&region=R&scheme=http|https&
   *  addressing=path|virtual&profile=P&ca-file=PATH]", as Nix writes s3
   *  store URLs (ca-file is ours);
   *  `endpoint` may be "host:port" (then `scheme`, default https) or a URL. */
  const char *url;
  const char *bucket;
  const char *prefix;   /* objects live under PREFIX/ (none by default) */
  const char *endpoint; /* default https://s3.REGION.amazonaws.com */
  const char *region;   /* default $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1 */
  int addressing;       /* 0: virtual for AWS, path for any other endpoint */
  /* Credentials: these; else, when `credentials_file` or a profile (here
   * or profile= in the URL) is given, that profile (default "default") of
   * that file (default $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials);
   * else $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY (and
   * $AWS_SESSION_TOKEN); else profile $AWS_PROFILE (or "default") of the
   * default file. */
  const char *access_key;
  const char *secret_key;
  const char *session_token;
  const char *credentials_file;
  const char *profile;
  unsigned flags;               /* NARCACHE_STORE_S3_* */
  uint32_t connect_timeout_ms;  /* default 3000 */
  uint32_t request_timeout_ms;  /* one small request, or a NAR's head; default 10000 */
  uint32_t stall_timeout_ms;    /* a body moving no byte; default 30000 */
  uint32_t max_attempts;        /* tries of a retryable request; default 4 (1: no retry) */
  uint32_t cache_ttl_ms;        /* a narinfo / nix-cache-info found; default 30000 */
  uint32_t negative_ttl_ms;     /* one found absent; default 5000 */
  uint32_t cache_entries;       /* default 65536 */
  uint32_t max_connections;     /* to the endpoint; default 64 */
  uint64_t multipart_threshold; /* uploads this big or bigger go multipart; default 64 MiB */
  uint64_t part_size;           /* 5 MiB .. 5 GiB; default 16 MiB */
  /* With NARCACHE_STORE_S3_REDIRECT: the endpoint as clients reach it
   * ("https://s3.example.org"; default `endpoint`), and how long a
   * presigned URL stays valid (seconds; default 3600, at most 604800). */
  const char *redirect_endpoint;
  uint32_t redirect_expires_s;
  /* Certificates (PEM) to trust for an https endpoint instead of the
   * system's: a private CA, or a self-signed gateway. URL: ca-file=PATH. */
  const char *ca_file;
  /* On failure a message for people lands here (may be NULL). */
  char *error;
  size_t error_size;
} narcache_s3_options;

/** A binary cache in an S3-compatible bucket (AWS S3, Ceph RADOS Gateway,
 *  MinIO, ...), laid out as `nix copy --to s3://BUCKET` writes it. Requests
 *  are signed with AWS Signature Version 4 and carried by one I/O thread
 *  per store (libcurl's multi interface on a private libuv loop) over
 *  kept-alive connections; callbacks wait for them with the timeouts
 *  above, so a wedged object store never hangs a caller.
 *  Reading: narinfo and nix-cache-info are fetched whole and cached for
 *  cache_ttl_ms (absent ones for negative_ttl_ms); our own uploads update
 *  the cache at once. NARs, listings and logs stream with bounded memory;
 *  a read at another offset is a ranged GET pinned to the object's ETag.
 *  An unreachable store, a refusal of the credentials (401/403), 5xx and
 *  429 are NARCACHE_EUNAVAIL (HTTP 503), never NARCACHE_ENOTFOUND: give the
 *  credentials s3:ListBucket so that a missing object is a 404.
 *  Writing (NARCACHE_STORE_S3_WRITABLE): objects up to 1 MiB are PUT at
 *  commit with a signed payload (retried); larger ones stream in one PUT
 *  or, from multipart_threshold on, as a multipart upload, aborted on
 *  failure. A narinfo is checked at commit like the dir store does (its NAR
 *  must exist: NARCACHE_ECONFLICT) and is the commit point of a path.
 *  Nothing is sent at creation: see narcache_store_s3_check().
 *  Thread: any thread may call the store's functions, except from inside
 *  its own callbacks.
 *  @return 0; NARCACHE_EINVAL (bad URL, bucket, endpoint, sizes, no
 *          credentials: see o->error); NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_store_s3_new(narcache_store **out,
                                                          const narcache_s3_options *o);

/** Check an s3 store now: one signed HEAD of the bucket. For a clear error
 *  at start instead of 503s later.
 *  @return 0; NARCACHE_EBADKEY (credentials refused); NARCACHE_ENOTFOUND (no
 *          such bucket); NARCACHE_EUNAVAIL (unreachable, or an error from
 *          the store); NARCACHE_EINVAL (not an s3 store). `message` gets a
 *          sentence for people (may be NULL). */
NARCACHE_API int narcache_store_s3_check(narcache_store *store, char *message,
                                         size_t message_size);

#ifdef __cplusplus
}
#endif

#endif /* NARCACHE_STORE_H */
