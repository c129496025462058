/* Running narcache-server: the store, the keys, the server on a loop of
 * our own, signals. */
#define _GNU_SOURCE
#include "daemon.h"
#include "../narcache/cli.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

int daemon_usage_error(const char *message) {
  fprintf(stderr, "narcache-server: %s\n", message);
  return -1;
}

/* Descriptors run out long before memory does: take all the kernel
 * allows this process (the hard limit), and say what that is. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
    return;
  rlim_t soft = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
      rl.rlim_cur = soft;
  }
  char text[80];
  snprintf(text, sizeof text, "%llu (was %llu), hard %llu", (unsigned long long)rl.rlim_cur,
           (unsigned long long)soft, (unsigned long long)rl.rlim_max);
  daemon_log(NARCACHE_LOG_INFO, "fd_limit", "file descriptor limit", "nofile", text);
}

typedef struct daemon_state {
  narcache_server *server;
  const char *token_file;
  narcache_tokens *tokens;
  uv_signal_t sigterm, sigint, sighup;
  uv_timer_t force_exit;
  int force_exit_armed;
  daemon_systemd sd;
} daemon_state;

/* Extra time after the server's own stop budget before giving up. */
#define FORCE_EXIT_GRACE_MS 5000

/* The server cannot finish stopping while a store call it started is
 * blocked (a wedged disk or NFS mount): no loop can wait out a thread
 * stuck in the kernel. Rather than hang until systemd's SIGKILL, say so
 * and leave with a failure status. */
static void on_force_exit(uv_timer_t *t) {
  (void)t;
  daemon_log(NARCACHE_LOG_ERROR, "forced_exit",
             "store calls are still blocked after the stop timeout: exiting without them", NULL,
             NULL);
  _exit(1);
}

static void on_stop_signal(uv_signal_t *h, int signum) {
  daemon_state *d = h->data;
  daemon_log(NARCACHE_LOG_INFO, "signal", "stopping on signal", "signal", strsignal(signum));
  narcache_server_stop(d->server);
  if (!d->force_exit_armed) {
    int64_t budget = 0;
    (void)narcache_server_get_option(d->server, NARCACHE_OPT_STOP_TIMEOUT_MS, &budget);
    uv_timer_start(&d->force_exit, on_force_exit, (uint64_t)budget + FORCE_EXIT_GRACE_MS, 0);
    uv_unref((uv_handle_t *)&d->force_exit); /* never what keeps the loop alive */
    d->force_exit_armed = 1;
  }
}

static void on_stopped(void *userdata, narcache_server *server) {
  (void)server;
  daemon_state *d = userdata;
  uv_close((uv_handle_t *)&d->sigterm, NULL);
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->sighup, NULL);
  uv_close((uv_handle_t *)&d->force_exit, NULL);
}

/* Read the token file; on failure say why and keep what we had. */
static int load_tokens(daemon_state *d) {
  narcache_tokens *fresh = NULL;
  char err[300] = "";
  if (narcache_tokens_load(&fresh, d->token_file, err, sizeof err) != 0) {
    daemon_log_fields(NARCACHE_LOG_ERROR, "tokens_failed", "cannot load the token file",
                      (narcache_log_field[]){{"file", d->token_file}, {"error", err}}, 2);
    return -1;
  }
  narcache_server_set_tokens(d->server, fresh);
  narcache_tokens_free(d->tokens); /* the server now holds the new table */
  d->tokens = fresh;
  char count[32];
  snprintf(count, sizeof count, "%zu", narcache_tokens_count(fresh));
  daemon_log_fields(NARCACHE_LOG_INFO, "tokens_loaded", "token file loaded",
                    (narcache_log_field[]){{"file", d->token_file}, {"tokens", count}}, 2);
  return 0;
}

static void on_reload_signal(uv_signal_t *h, int signum) {
  (void)signum;
  daemon_state *d = h->data;
  if (d->token_file != NULL)
    (void)load_tokens(d);
}

/* The server's hooks that systemd hears about (daemon_systemd.c). */
static void on_listening(void *userdata, narcache_server *server) {
  daemon_state *d = userdata;
  daemon_systemd_listening(&d->sd, server);
}

static void on_healthy(void *userdata, narcache_server *server) {
  (void)server;
  daemon_state *d = userdata;
  daemon_systemd_healthy(&d->sd);
}

static void on_status(void *userdata, narcache_server *server, int healthy, const char *text) {
  (void)server;
  daemon_state *d = userdata;
  daemon_systemd_status(&d->sd, healthy, text);
}

static void on_stopping(void *userdata, narcache_server *server) {
  (void)server;
  daemon_state *d = userdata;
  daemon_systemd_stopping(&d->sd);
}

/* A bucket: checked once at start, so that wrong credentials or a missing
 * bucket stop the daemon with a clear message. An object store that cannot
 * be reached right now is not fatal: the daemon starts, answers 503 and
 * reports unhealthy until the store is back. */
static int open_s3_store(const daemon_options *o, narcache_store **store) {
  char error[512] = "";
  narcache_s3_options so = {.version = NARCACHE_S3_OPTIONS_VERSION,
                            .url = o->s3_url,
                            .flags = (o->token_file != NULL ? NARCACHE_STORE_S3_WRITABLE : 0) |
                                     (o->s3_redirect ? NARCACHE_STORE_S3_REDIRECT : 0),
                            .redirect_endpoint = o->s3_public_endpoint,
                            .ca_file = o->s3_ca_file,
                            .credentials_file = o->s3_credentials_file,
                            .error = error,
                            .error_size = sizeof error};
  int rc = narcache_store_s3_new(store, &so);
  if (rc < 0) {
    fprintf(stderr, "narcache-server: --s3: %s\n", error[0] ? error : narcache_strerror(rc));
    return rc;
  }
  rc = narcache_store_s3_check(*store, error, sizeof error);
  if (rc == NARCACHE_EUNAVAIL) {
    daemon_log(NARCACHE_LOG_WARNING, "s3_unreachable", error, "url", o->s3_url);
    return 0;
  }
  if (rc < 0) {
    fprintf(stderr, "narcache-server: --s3: %s\n", error);
    narcache_store_free(*store);
    *store = NULL;
  }
  return rc;
}

static int open_store(const daemon_options *o, narcache_key **keys, narcache_store **store) {
  int rc;
  if (o->s3_url != NULL)
    return open_s3_store(o, store);
  if (o->cache_dir != NULL) {
    rc = narcache_store_dir_new(store, o->cache_dir,
                                o->token_file != NULL ? NARCACHE_STORE_DIR_WRITABLE : 0);
    if (rc == 0 && o->token_file != NULL)
      rc = narcache_store_dir_set_min_free(*store,
                                           o->min_free >= 0 ? (uint64_t)o->min_free : 1ull << 30);
    if (rc < 0)
      fprintf(stderr, "narcache-server: %s: %s\n", o->cache_dir, narcache_strerror(rc));
    return rc;
  }
  narcache_nixstore_options so = {0};
  so.version = NARCACHE_NIXSTORE_OPTIONS_VERSION;
  so.store_dir = o->store_dir;
  so.db_path = o->db_path;
  so.keys = (const narcache_key *const *)keys;
  so.n_keys = (size_t)o->n_key_files;
  so.compression = o->zstd ? NARCACHE_CODEC_ZSTD : NARCACHE_CODEC_NONE;
  rc = narcache_store_nixstore_new(store, &so);
  if (rc < 0)
    fprintf(stderr, "narcache-server: cannot open the Nix store database: %s\n",
            narcache_strerror(rc));
  return rc;
}

/* `activated`: sockets systemd passed, which replace the default listener
 * (explicit --listen addresses are added all the same). */
static int configure(narcache_server *s, const daemon_options *o, int activated) {
  int rc = 0;
  if (o->priority >= 0)
    rc = narcache_server_set_option(s, NARCACHE_OPT_PRIORITY, o->priority);
  if (rc == 0 && o->max_connections > 0)
    rc = narcache_server_set_option(s, NARCACHE_OPT_MAX_CONNECTIONS, o->max_connections);
  if (rc == 0 && o->header_timeout_ms > 0)
    rc = narcache_server_set_option(s, NARCACHE_OPT_HEADER_TIMEOUT_MS, o->header_timeout_ms);
  if (rc == 0 && o->idle_timeout_ms > 0)
    rc = narcache_server_set_option(s, NARCACHE_OPT_IDLE_TIMEOUT_MS, o->idle_timeout_ms);
  if (rc == 0 && o->body_stall_ms > 0)
    rc = narcache_server_set_option(s, NARCACHE_OPT_BODY_STALL_MS, o->body_stall_ms);
  if (rc == 0 && o->store_timeout_ms >= 0)
    rc = narcache_server_set_option(s, NARCACHE_OPT_STORE_TIMEOUT_MS, o->store_timeout_ms);
  if (rc == 0 && o->token_file != NULL)
    rc = narcache_server_set_option(s, NARCACHE_OPT_MAX_UPLOAD_BYTES,
                                    o->max_upload > 0 ? o->max_upload : (int64_t)16 << 30);
  if (rc == 0)
    rc = narcache_server_set_option(s, NARCACHE_OPT_ALLOW_OVERWRITE, o->allow_overwrite);
  if (rc == 0)
    rc = narcache_server_set_option(s, NARCACHE_OPT_PRIVATE, o->private_cache);
  for (int i = 0; rc == 0 && i < o->n_listen; i++) {
    rc = narcache_server_listen(s, o->listen[i], 0);
    if (rc < 0)
      fprintf(stderr, "narcache-server: cannot listen on %s\n", o->listen[i]);
  }
  if (rc == 0 && o->n_listen == 0 && activated == 0) {
    rc = narcache_server_listen(s, "127.0.0.1:5000", 0);
    if (rc < 0)
      fprintf(stderr, "narcache-server: cannot listen on 127.0.0.1:5000\n");
  }
  return rc;
}

int daemon_run(const daemon_options *o) {
  daemon_log_init(o->json_logs);
  /* An s3 store's calls wait on the network on pool threads (its one I/O
   * thread does the transfers): more of them, so that NARs in flight do not
   * queue behind each other or the health probe. */
  int threads = o->threads > 0 ? o->threads : o->s3_url != NULL ? DAEMON_S3_THREADS : 0;
  if (threads > 0) {
    char n[16];
    snprintf(n, sizeof n, "%d", threads);
    setenv("UV_THREADPOOL_SIZE", n, 1); /* read by libuv at its first task */
  }
  signal(SIGPIPE, SIG_IGN);
  daemon_traces_install();
  raise_fd_limit();
  daemon_state d = {0};
  /* Before any thread starts: this edits the environment. */
  if (daemon_systemd_init(&d.sd) < 0) {
    daemon_systemd_close(&d.sd);
    return 1;
  }
  if (narcache_init() < 0) {
    daemon_systemd_close(&d.sd);
    return 1;
  }
  narcache_key *keys[DAEMON_MAX_KEYS] = {0};
  narcache_key *trusted[DAEMON_MAX_KEYS] = {0};
  narcache_store *store = NULL;
  narcache_server *server = NULL;
  uv_loop_t loop;
  int status = 1, loop_ready = uv_loop_init(&loop) == 0, activated = 0;
  for (int i = 0; loop_ready && i < o->n_key_files; i++)
    if (cli_load_key_file(&keys[i], o->key_files[i], 1) < 0)
      goto out;
  for (int i = 0; loop_ready && i < o->n_trusted_keys; i++) {
    if (narcache_key_parse_public(&trusted[i], o->trusted_keys[i], strlen(o->trusted_keys[i]),
                                  NULL) < 0) {
      fprintf(stderr, "narcache-server: --trusted-key %s: not a public key NAME:BASE64\n",
                      o->trusted_keys[i]);
      goto out;
    }
  }
  if (!loop_ready || open_store(o, keys, &store) < 0 || fault_store_wrap(&store) < 0)
    goto out;
  if (narcache_server_new(&server, &loop, store) < 0)
    goto out;
  d.server = server;
  narcache_server_hooks hooks = {.version = NARCACHE_SERVER_HOOKS_VERSION,
                                 .listening = on_listening,
                                 .healthy = on_healthy,
                                 .status = on_status,
                                 .stopping = on_stopping,
                                 .stopped = on_stopped,
                                 .log = daemon_log_hook,
                                 .access = o->access_log ? daemon_access_hook : NULL};
  narcache_server_set_hooks(server, &hooks, &d);
  if ((activated = daemon_systemd_adopt(&d.sd, server)) < 0 ||
      configure(server, o, activated) < 0 || daemon_systemd_configure(&d.sd, server) < 0)
    goto out;
  if (narcache_server_set_upload_keys(server, (const narcache_key *const *)trusted,
                                      (size_t)o->n_trusted_keys,
                                      o->sign_uploads ? keys[0] : NULL) < 0)
    goto out;
  d.token_file = o->token_file;
  if (d.token_file != NULL && load_tokens(&d) < 0)
    goto out;
  uv_timer_init(&loop, &d.force_exit);
  uv_signal_init(&loop, &d.sigterm);
  uv_signal_init(&loop, &d.sigint);
  uv_signal_init(&loop, &d.sighup);
  d.sigterm.data = d.sigint.data = d.sighup.data = &d;
  uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
  uv_signal_start(&d.sighup, on_reload_signal, SIGHUP);
  if (narcache_server_start(server) < 0) {
    on_stopped(&d, server);
    uv_run(&loop, UV_RUN_DEFAULT);
    goto out;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  status = 0;
out:
  narcache_server_free(server);
  if (loop_ready && uv_loop_close(&loop) != 0)
    daemon_log(NARCACHE_LOG_WARNING, "loop_busy", "handles left open at exit", NULL, NULL);
  narcache_store_free(store);
  for (int i = 0; i < o->n_key_files; i++)
    narcache_key_free(keys[i]);
  for (int i = 0; i < o->n_trusted_keys; i++)
    narcache_key_free(trusted[i]);
  narcache_tokens_free(d.tokens);
  narcache_shutdown();
  daemon_systemd_close(&d.sd);
  return status;
}

/* cli_io.c (shared with the narcache CLI) reports through this. */
void cli_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("narcache-server: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}
