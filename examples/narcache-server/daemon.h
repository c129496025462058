/* narcache-server's parts: options (main.c), running the server
 * (daemon.c), logging (daemon_log.c), systemd integration and crash
 * traces (daemon_systemd.c), test-only fault injection (fault_store.c). */
#ifndef NARCACHE_SERVER_DAEMON_H
#define NARCACHE_SERVER_DAEMON_H

#include <narcache.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#define DAEMON_MAX_LISTEN 16
#define DAEMON_MAX_KEYS 16
#define DAEMON_S3_THREADS 64 /* threadpool size with --s3 unless --threads */

typedef struct daemon_options {
  const char *cache_dir;
  const char *s3_url; /* --s3 s3://BUCKET[/PREFIX]?endpoint=... */
  int s3_redirect;                /* --s3-redirect: NARs by 307 to presigned URLs */
  const char *s3_public_endpoint; /* --s3-public-endpoint: the one clients reach */
  const char *s3_ca_file;         /* --s3-ca-file: certificates to trust */
  const char *s3_credentials_file; /* --s3-credentials-file: an AWS credentials file */
  int nix_store;
  const char *store_dir; /* --nix-store DIR */
  const char *db_path;
  const char *listen[DAEMON_MAX_LISTEN];
  int n_listen;
  const char *key_files[DAEMON_MAX_KEYS];
  int n_key_files;
  int zstd;
  long priority; /* -1: the store's */
  int threads;   /* 0: libuv's default */
  long max_connections;
  long header_timeout_ms; /* 0: the library's defaults */
  long idle_timeout_ms;
  long body_stall_ms;
  long store_timeout_ms; /* -1: the library's default */
  int json_logs;
  int access_log; /* --access-log: one line per request */
  /* uploads and private caches */
  const char *token_file; /* --upload-token-file: enables uploads to --cache */
  const char *trusted_keys[DAEMON_MAX_KEYS]; /* --trusted-key name:base64 */
  int n_trusted_keys;
  int sign_uploads; /* sign uploaded narinfo with the first --key-file */
  int64_t max_upload;
  int64_t min_free; /* --min-free-space; -1: the default */
  int allow_overwrite;
  int private_cache; /* --private: reads need a token too */
} daemon_options;

/* Print "narcache-server: MESSAGE" and return -1. */
int daemon_usage_error(const char *message);

/* Run until stopped; the process exit status. */
int daemon_run(const daemon_options *o);

/* Logging hooks (daemon_log.c): one line per record on stderr. */
void daemon_log_init(int json);
void daemon_log_hook(void *userdata, const narcache_log_record *r);
void daemon_access_hook(void *userdata, const narcache_access_record *r);
/* A daemon-level message through the same format. */
void daemon_log(int level, const char *event, const char *message, const char *key,
                const char *value);

/* A daemon-level message with several fields. */
void daemon_log_fields(int level, const char *event, const char *message,
                       const narcache_log_field *fields, size_t n_fields);

/* ---- systemd integration (daemon_systemd.c), without libsystemd ---- */

#define DAEMON_MAX_ACTIVATED 64 /* sockets taken from LISTEN_FDS */

typedef struct daemon_systemd {
  /* sd_notify: a datagram socket to NOTIFY_SOCKET, -1 when unset. */
  int notify_fd;
  struct sockaddr_un notify_addr;
  socklen_t notify_addr_len;
  int notify_failed; /* a send failed (logged once) */
  /* Watchdog: WATCHDOG_USEC for us (WATCHDOG_PID unset or ours), else 0. */
  uint64_t watchdog_usec;
  uint64_t ping_gap_ns; /* WATCHDOG=1 no more often than this */
  uint64_t last_ping_ns;
  /* STATUS=: sent when health changes, else at most once a second. */
  int last_healthy;
  uint64_t last_status_ns;
  int stopping; /* STOPPING=1 sent: no more STATUS or WATCHDOG */
  /* Socket activation: fds 3.. from LISTEN_FDS, named by LISTEN_FDNAMES. */
  int n_fds;
  int fds[DAEMON_MAX_ACTIVATED];
  char *names; /* copy of LISTEN_FDNAMES, split at ':' in place */
  const char *fd_names[DAEMON_MAX_ACTIVATED];
} daemon_systemd;

/* Read NOTIFY_SOCKET, WATCHDOG_USEC/WATCHDOG_PID and LISTEN_FDS/
 * LISTEN_PID/LISTEN_FDNAMES (then removed from the environment). Before
 * any thread starts. -1 if the passed sockets are unusable. */
int daemon_systemd_init(daemon_systemd *sd);
/* Health probe interval and timeout that let the watchdog be fed in time. */
int daemon_systemd_configure(daemon_systemd *sd, narcache_server *server);
/* Hand the passed sockets to the server (0 if none; -1 on failure). */
int daemon_systemd_adopt(daemon_systemd *sd, narcache_server *server);
/* Called from the server's hooks of the same names. */
void daemon_systemd_listening(daemon_systemd *sd, narcache_server *server);
void daemon_systemd_healthy(daemon_systemd *sd);
void daemon_systemd_status(daemon_systemd *sd, int healthy, const char *text);
void daemon_systemd_stopping(daemon_systemd *sd);
void daemon_systemd_close(daemon_systemd *sd);

/* On SIGQUIT and SIGABRT write the stack of every thread to stderr, then
 * die by that signal. */
void daemon_traces_install(void);

/* ---- fault injection for tests (fault_store.c) ---- */

/* With NARCACHE_FAULT_PROBE_BLOCK_FILE=PATH in the environment, replace
 * *store by a store delegating to it whose probe blocks while PATH
 * exists (a wedged store). The wrapper owns the original. 0, or a
 * NARCACHE_E* code (*store is then freed and NULL). */
int fault_store_wrap(narcache_store **store);

#endif
