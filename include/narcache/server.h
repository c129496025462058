/*
 * libnarcache -- the Nix binary-cache HTTP/1.1 server.
 *
 * A server answers the Nix binary-cache protocol from a store (store.h) on
 * a libuv loop: the caller's loop (embedding into a daemon that has other
 * handles of its own) or one it creates. The loop only moves bytes; every
 * store call (file opens, SQLite, NAR dumping, compression) runs on the
 * libuv threadpool, and a response body is pulled from the store only as
 * the socket drains, so memory per connection is bounded whatever the NAR
 * size or the client's speed.
 *
 * Uploads (PUT of any object, as `nix copy --to http://...` sends them)
 * are off until NARCACHE_OPT_MAX_UPLOAD_BYTES is set, need a token with
 * write scope (see auth.h, narcache_server_set_tokens and the `authorize`
 * hook) and a store that takes uploads. The answers: 401 without a token,
 * 403 with a read-only one, 411 without Content-Length (chunked bodies are
 * not taken), 413 over the limit, 503 when NARCACHE_OPT_MAX_UPLOADS are
 * running, 405 for a read-only store, 409 for a narinfo whose NAR is not
 * there; refusals come before any body byte is read (a client that sent
 * `Expect: 100-continue` gets `100 Continue` only once the store took the
 * upload). A body that stalls, crawls or ends early leaves no trace; the
 * object is published atomically once its last byte is stored.
 *
 * Responses: 404 only when the store says an object is absent; 503 with
 * Retry-After for anything transient (the Nix client caches a 404 for an
 * hour). Every 200 carries Content-Length, everything a body needs is
 * opened before the headers go out, and a failure in the middle of a body
 * aborts the connection: a client never gets a short 200.
 *
 * Thread rules: a server lives on its loop's thread. Every function here
 * must be called on that thread, except narcache_server_stop(), which may
 * be called from any thread (and from a signal-handling thread). All hooks
 * run on the loop thread. Several servers on several loops (threads or
 * processes) may share one listening socket.
 *
 * Lifecycle:
 *   narcache_server_new -> setters, hooks, listen* -> narcache_server_start
 *   -> (loop runs) -> narcache_server_stop -> `stopped` hook ->
 *   narcache_server_free
 * With a server-owned loop, narcache_server_run() runs it until stopped.
 */
#ifndef NARCACHE_SERVER_H
#define NARCACHE_SERVER_H

#include "narcache/auth.h"
#include "narcache/common.h"
#include "narcache/narinfo.h"
#include "narcache/store.h"

#ifdef __cplusplus
extern "C" {
#endif

struct uv_loop_s;
typedef struct narcache_server narcache_server;

/* ------------------------------------------------------------------------ */
/* Hooks                                                                     */
/* ------------------------------------------------------------------------ */

/** Log levels of narcache_log_record. */
enum narcache_log_level {
  NARCACHE_LOG_ERROR = 0,
  NARCACHE_LOG_WARNING = 1,
  NARCACHE_LOG_INFO = 2,
  NARCACHE_LOG_DEBUG = 3,
};

/** One key/value pair of a log record. Both strings NUL-terminated. */
typedef struct narcache_log_field {
  const char *key;
  const char *value;
} narcache_log_field;

/** A structured log record. Everything is borrowed for the duration of
 *  the hook call. `event` is a stable snake_case name ("listening",
 *  "accept_failed", "probe_failed", "store_error", ...) that an
 *  error-reporting service can group by; `message` is for humans. */
typedef struct narcache_log_record {
  uint32_t version; /* 1 */
  int level;        /* enum narcache_log_level */
  const char *event;
  const char *message;
  const narcache_log_field *fields;
  size_t n_fields;
} narcache_log_record;

/** One record per answered request (also refused and aborted ones).
 *  Borrowed for the duration of the hook call. */
typedef struct narcache_access_record {
  uint32_t version; /* 1 */
  const char *method; /* "GET", ...; "-" if the request line was unreadable */
  const char *target; /* as sent, NUL-terminated, may be truncated to 1 KiB */
  const char *route;  /* "narinfo", "nar", "ls", "log", "cache_info", "healthz",
                         "metrics", "other" */
  int status;         /* HTTP status; 0 if the connection died before one */
  uint64_t body_bytes;  /* response body bytes written to the socket */
  uint64_t duration_us; /* from the end of the request head to the last byte */
  const char *peer;     /* "ADDR:PORT", "[V6]:PORT" or "unix" */
  int aborted;          /* 1 if the response was cut short (client gone,
                           store error mid-body, timeout) */
} narcache_access_record;

/** What the `authorize` hook is asked about. Borrowed for the call. */
typedef struct narcache_auth_request {
  uint32_t version;       /* 1 */
  const char *method;     /* "PUT", "GET", "HEAD" */
  const char *target;     /* as sent, NUL-terminated, may be truncated to 1 KiB */
  int kind;               /* NARCACHE_OBJECT_*, or 0 for other routes */
  const char *credential; /* Bearer token or Basic password; NULL if none */
  size_t credential_len;
  const char *peer;       /* "ADDR:PORT", "[V6]:PORT" or "unix" */
} narcache_auth_request;

#define NARCACHE_SERVER_HOOKS_VERSION 2

/** Callbacks into the embedding daemon; any may be NULL. Copied by
 *  narcache_server_set_hooks (append-only, by `version`). */
typedef struct narcache_server_hooks {
  uint32_t version; /* NARCACHE_SERVER_HOOKS_VERSION */
  /** Every listener is accepting (once, from narcache_server_start). */
  void (*listening)(void *userdata, narcache_server *server);
  /** A health probe passed: within the probe deadline the loop turned, a
   *  threadpool task ran and the store's probe returned 0. Called once per
   *  passing probe (every probe interval) and never otherwise: feed a
   *  watchdog from it. */
  void (*healthy)(void *userdata, narcache_server *server);
  /** A one-line status for humans ("serving 12 connections, 3400 req/s")
   *  after each probe; `healthy` is 0 when the probe failed and the text
   *  then says why. */
  void (*status)(void *userdata, narcache_server *server, int healthy, const char *text);
  /** The server started a graceful stop. */
  void (*stopping)(void *userdata, narcache_server *server);
  /** Every handle is closed: the server may now be freed. */
  void (*stopped)(void *userdata, narcache_server *server);
  void (*log)(void *userdata, const narcache_log_record *record);
  void (*access)(void *userdata, const narcache_access_record *record);
  /* ---- version 2 ---- */
  /** The scope (enum narcache_scope) the request's credential grants.
   *  Asked for every upload, which needs NARCACHE_SCOPE_WRITE, and with
   *  NARCACHE_OPT_PRIVATE for every read of an object, which needs
   *  NARCACHE_SCOPE_READ or more. NULL: the token table given to
   *  narcache_server_set_tokens() decides (no table: nothing is granted).
   *  Runs on the loop thread: it must not block. */
  int (*authorize)(void *userdata, const narcache_auth_request *request);
} narcache_server_hooks;

/* ------------------------------------------------------------------------ */
/* Creating and configuring                                                  */
/* ------------------------------------------------------------------------ */

/** Create a server answering from `store` (borrowed: it must outlive the
 *  server) on `loop`, or on a loop of its own when `loop` is NULL.
 *  @return 0; NARCACHE_EINVAL; NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_server_new(narcache_server **out,
                                                        struct uv_loop_s *loop,
                                                        narcache_store *store);

/** Install hooks (copied) and the userdata passed to each. Before start. */
NARCACHE_API int narcache_server_set_hooks(narcache_server *server,
                                           const narcache_server_hooks *hooks, void *userdata);

/** Numeric options of narcache_server_set_option(). Values are pinned. */
enum narcache_server_option {
  /* connections open at once; beyond it new ones wait in the kernel's
   * queue (default 1024). The descriptor limit (RLIMIT_NOFILE at start)
   * caps it too, keeping an eighth of it (at least 32) for the store. */
  NARCACHE_OPT_MAX_CONNECTIONS = 1,
  /* a request head must arrive within this many ms (slowloris; 10000) */
  NARCACHE_OPT_HEADER_TIMEOUT_MS = 2,
  /* a keep-alive connection with no request closes after (60000) */
  NARCACHE_OPT_IDLE_TIMEOUT_MS = 3,
  /* a response or request body that moves no byte for this long is
   * aborted (30000) */
  NARCACHE_OPT_BODY_STALL_MS = 4,
  /* and one slower than this many bytes/s on average over 30 s (1024) */
  NARCACHE_OPT_MIN_BODY_RATE = 5,
  NARCACHE_OPT_MAX_HEAD_BYTES = 6,   /* request line + headers (16384): 431 */
  NARCACHE_OPT_MAX_HEADERS = 7,      /* header lines (64): 431 */
  NARCACHE_OPT_MAX_TARGET_BYTES = 8, /* request-target (4096): 414 */
  NARCACHE_OPT_MAX_UPLOAD_BYTES = 9, /* request body (0: no uploads): 413 */
  /* nix-cache-info Priority and WantMassQuery (0 or 1) put over the
   * store's; -1 (the default): as the store has them */
  NARCACHE_OPT_PRIORITY = 10,
  NARCACHE_OPT_WANT_MASS_QUERY = 11,
  NARCACHE_OPT_PROBE_INTERVAL_MS = 12, /* health probe period (1000) */
  NARCACHE_OPT_PROBE_TIMEOUT_MS = 13,  /* deadline of each probe part (5000) */
  NARCACHE_OPT_STOP_TIMEOUT_MS = 14,   /* graceful stop budget (10000) */
  NARCACHE_OPT_NARINFO_MAX_AGE = 15,   /* Cache-Control max-age of narinfo, s (300) */
  NARCACHE_OPT_RETRY_AFTER = 16,       /* Retry-After of a 503, s (5) */
  /* narinfo and nix-cache-info answers (also "absent") are kept in memory
   * this many ms and answered without asking the store again (1000; 0:
   * off). An upload through the server drops its entry at once. */
  NARCACHE_OPT_MEMORY_CACHE_MS = 17,
  NARCACHE_OPT_MEMORY_CACHE_BYTES = 18, /* its budget (16 MiB) */
  /* uploads received at once; more get 503 with Retry-After (16) */
  NARCACHE_OPT_MAX_UPLOADS = 19,
  /* 1: every read of an object needs a token too (a private cache; 0) */
  NARCACHE_OPT_PRIVATE = 20,
  /* 1: an uploaded narinfo or nix-cache-info may replace a different one
   * (default 0: 409 Conflict; the same one again is always fine) */
  NARCACHE_OPT_ALLOW_OVERWRITE = 21,
  /* a store call opening an object that has not returned after this many
   * ms answers its request 503 with Retry-After and closes the connection
   * (a wedged backend must not hold clients and connection slots); the
   * call is cancelled if it has not started, else its late result is
   * dropped (5000; 0: wait as long as the store takes) */
  NARCACHE_OPT_STORE_TIMEOUT_MS = 22,
};

/** Set a numeric option. Before narcache_server_start.
 *  @return 0; NARCACHE_EINVAL (unknown option or out of range);
 *          NARCACHE_EMISUSE (already started). */
NARCACHE_API int narcache_server_set_option(narcache_server *server, int option, int64_t value);

/** Read an option's current value. @return 0; NARCACHE_EINVAL. */
NARCACHE_API int narcache_server_get_option(const narcache_server *server, int option,
                                            int64_t *value);

/** The token table the default authorization checks (see the `authorize`
 *  hook). Borrowed: it must outlive its use; replace it (e.g. after
 *  reloading the file on SIGHUP) by calling again, on the loop thread, and
 *  free the old table afterwards. NULL: no tokens, uploads refused (401).
 *  @return 0; NARCACHE_EINVAL. */
NARCACHE_API int narcache_server_set_tokens(narcache_server *server,
                                            const narcache_tokens *tokens);

/** Keys for narinfo uploads: a narinfo is taken when a signature by one
 *  of `trusted[0..n_trusted)` (public keys, matched by name as Nix does)
 *  verifies; otherwise, with `signing` (a secret key), the server adds
 *  its own signature; otherwise it is refused (403). The array is copied,
 *  the keys are borrowed and must outlive the server. Before start, or on
 *  the loop thread.
 *  @return 0; NARCACHE_EINVAL (`signing` not a secret key); NARCACHE_ENOMEM. */
NARCACHE_API int narcache_server_set_upload_keys(narcache_server *server,
                                                 const narcache_key *const *trusted,
                                                 size_t n_trusted, const narcache_key *signing);

/** Mark the server not ready for a reason of the embedder's (for example
 *  "no signing key loaded"), or ready again with NULL. While not ready,
 *  /healthz answers 503 with the reason and the `healthy` hook is not
 *  called; requests are still served. The text is copied.
 *  @return 0; NARCACHE_ENOMEM. */
NARCACHE_API int narcache_server_set_not_ready(narcache_server *server, const char *reason);

/* ------------------------------------------------------------------------ */
/* Listening                                                                 */
/* ------------------------------------------------------------------------ */

/** Flags of narcache_server_listen(). */
#define NARCACHE_LISTEN_REUSEPORT 1u /* SO_REUSEPORT: several servers, one port */

/** Listen on "HOST:PORT" (IPv4 address or name), "[V6]:PORT", or
 *  "unix:PATH" (an existing socket file is replaced only if nothing
 *  accepts on it). Port 0 picks a free port (see narcache_server_address).
 *  Before or after start.
 *  @return 0; NARCACHE_EINVAL (bad address); NARCACHE_EIO (bind/listen
 *          failed: the log hook has the system error). */
NARCACHE_API NARCACHE_NODISCARD int narcache_server_listen(narcache_server *server,
                                                           const char *address, unsigned flags);

/** Adopt an already bound and listening stream socket (TCP or unix), e.g.
 *  from systemd socket activation. The server owns `fd` from then on
 *  (also on failure).
 *  @return 0; NARCACHE_EINVAL (not a listening stream socket); NARCACHE_EIO. */
NARCACHE_API NARCACHE_NODISCARD int narcache_server_listen_fd(narcache_server *server, int fd);

/** Number of listeners. */
NARCACHE_API size_t narcache_server_listener_count(const narcache_server *server);

/** The local address of listener `index` as "ADDR:PORT", "[V6]:PORT" or
 *  "unix:PATH", NUL-terminated into `buf`.
 *  @return 0; NARCACHE_EINVAL; NARCACHE_EBUFS. */
NARCACHE_API int narcache_server_address(const narcache_server *server, size_t index, char *buf,
                                         size_t size);

/** The TCP port of listener `index`, or 0 (unix socket, bad index). */
NARCACHE_API int narcache_server_port(const narcache_server *server, size_t index);

/* ------------------------------------------------------------------------ */
/* Running                                                                   */
/* ------------------------------------------------------------------------ */

/** Start accepting on every listener and start the health probe; calls
 *  the `listening` hook. @return 0; NARCACHE_EMISUSE (no listener, or
 *  started before); NARCACHE_EIO. */
NARCACHE_API NARCACHE_NODISCARD int narcache_server_start(narcache_server *server);

/** Run the server's own loop until the server has stopped.
 *  @return 0; NARCACHE_EMISUSE (the loop is the caller's). */
NARCACHE_API int narcache_server_run(narcache_server *server);

/** Stop gracefully: stop accepting, let responses in flight finish within
 *  NARCACHE_OPT_STOP_TIMEOUT_MS, then close everything and call the
 *  `stopped` hook. Safe from any thread, any number of times. A store call
 *  still blocked on the threadpool (a wedged disk) delays `stopped` until
 *  it returns: no loop can wait out a thread stuck in the kernel; the
 *  "stop_blocked" log record says so, and a daemon may then exit anyway.
 *  @return 0; NARCACHE_EINVAL. */
NARCACHE_API int narcache_server_stop(narcache_server *server);

/** Free a server that never started or has stopped (after `stopped`, or
 *  after narcache_server_run returned). NULL is a no-op. */
NARCACHE_API void narcache_server_free(narcache_server *server);

/* ------------------------------------------------------------------------ */
/* Introspection                                                             */
/* ------------------------------------------------------------------------ */

/** The Prometheus text that /metrics serves.
 *  @param out NUL-terminated; release with narcache_free().
 *  @return 0; NARCACHE_ENOMEM. */
NARCACHE_API int narcache_server_metrics(narcache_server *server, char **out, size_t *out_len);

/** 1 if the last health probe passed (what /healthz answers 200 for). */
NARCACHE_API int narcache_server_is_healthy(const narcache_server *server);

#ifdef __cplusplus
}
#endif

#endif /* NARCACHE_SERVER_H */
