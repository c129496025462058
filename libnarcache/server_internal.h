/* Internals shared by the server's modules: server.c (lifecycle,
 * listeners, accept, health probe), server_conn.c (one client
 * connection: HTTP state machine, responses, body pumping) and
 * server_metrics.c (counters and the Prometheus text). */
#ifndef NARCACHE_SERVER_INTERNAL_H
#define NARCACHE_SERVER_INTERNAL_H

#include "common_internal.h"
#include "http_internal.h"
#include "narcache/narinfo.h"
#include "narcache/server.h"
#include "narcache/store.h"

#include <stdatomic.h>
#include <uv.h>

#define SRV_OPTION_COUNT 23 /* enum narcache_server_option values 1..22 */

/* Routes, for metrics and the access log. */
enum srv_route {
  ROUTE_CACHE_INFO,
  ROUTE_NARINFO,
  ROUTE_NAR,
  ROUTE_LS,
  ROUTE_LOG,
  ROUTE_HEALTHZ,
  ROUTE_METRICS,
  ROUTE_OTHER,
  ROUTE_COUNT
};

/* Response statuses counted one by one; others go to the last slot. */
#define SRV_STATUS_SLOTS 22
extern const int narcache__srv_counted_status[SRV_STATUS_SLOTS - 1];

/* Latency histogram bucket upper bounds, in seconds. */
#define SRV_LATENCY_BUCKETS 12
extern const double narcache__srv_latency_bounds[SRV_LATENCY_BUCKETS];

typedef struct srv_metrics {
  uint64_t requests[ROUTE_COUNT][SRV_STATUS_SLOTS];
  uint64_t latency_count[SRV_LATENCY_BUCKETS + 1]; /* +Inf last */
  double latency_sum;
  uint64_t body_bytes;
  uint64_t requests_total;
  uint64_t cache_hits;
  uint64_t accepted, refused_at_limit, accept_errors, aborted;
  uint64_t probes_ok, probes_failed;
  double probe_seconds; /* duration of the last completed probe */
  uint64_t upload_bytes, uploads_stored, uploads_dropped;
  uint64_t uploads_refused[SRV_STATUS_SLOTS];
} srv_metrics;

/* server_cache.c: short-lived answers for narinfo and nix-cache-info. */
#define SRV_CACHE_MAX_NAME 64
#define SRV_CACHE_MAX_OBJECT (16 * 1024)
enum { SRV_CACHE_MISS = 0, SRV_CACHE_HIT = 1, SRV_CACHE_ABSENT = 2 };
typedef struct srv_cache srv_cache;
srv_cache *narcache__srv_cache_new(size_t budget);
void narcache__srv_cache_free(srv_cache *c);
int narcache__srv_cache_get(srv_cache *c, int kind, const char *name, size_t len, uint64_t now_ms,
                            const char **data, size_t *data_len);
/* data NULL: remember "absent" */
void narcache__srv_cache_put(srv_cache *c, int kind, const char *name, size_t len,
                             const char *data, size_t data_len, uint64_t expires_ms);
void narcache__srv_cache_forget(srv_cache *c, int kind, const char *name, size_t len);

typedef struct srv_listener {
  uv_poll_t poll;
  struct narcache_server *server;
  int fd;
  int has_handle; /* poll initialised (from the first start) */
  int polling;
  int closed;
  char address[160];
  int port;
  char *unix_path; /* removed on close when we created it */
} srv_listener;

struct srv_conn;

struct narcache_server {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int owns_loop;
  narcache_store *store;
  narcache_server_hooks hooks;
  void *userdata;
  const narcache_tokens *tokens; /* borrowed; see narcache_server_set_tokens */
  const narcache_key **trusted_keys; /* the array is ours, the keys borrowed */
  size_t n_trusted_keys;
  const narcache_key *signing_key; /* borrowed */
  size_t uploads_active;
  int64_t opt[SRV_OPTION_COUNT];
  char *not_ready;
  srv_cache *cache; /* NULL when NARCACHE_OPT_MEMORY_CACHE_MS is 0 */

  srv_listener **listeners;
  size_t n_listeners;
  uv_timer_t accept_retry; /* after EMFILE/ENFILE */
  int spare_fd;            /* closed to accept-and-refuse under EMFILE */
  size_t fd_connection_cap; /* connections the fd limit allows (0: no cap) */

  struct srv_conn *conns; /* doubly linked */
  size_t n_conns;
  size_t work_in_flight; /* our threadpool tasks not yet completed */

  /* health */
  uv_timer_t probe_timer;
  uv_work_t probe_work;
  int probe_busy;
  int probe_stuck_logged;
  uint64_t probe_started_ms;
  uint64_t probe_expected_ms; /* when the timer should have fired */
  int probe_store_rc;
  int healthy;
  char health_reason[200];

  /* stopping */
  uv_async_t stop_async;
  uv_timer_t stop_timer;
  atomic_int stop_requested;
  int started, stopping, stopped;
  int closing_handles;
  int open_handles; /* handles not yet closed: 4 of the server's + listeners' */

  srv_metrics metrics;
};

typedef struct narcache_server srv_t;

/* server.c */
void narcache__srv_log(srv_t *s, int level, const char *event, const char *message,
                       const narcache_log_field *fields, size_t n_fields);
void narcache__srv_conn_closed(srv_t *s, struct srv_conn *c); /* unlinks, maybe resumes accept */
void narcache__srv_maybe_stopped(srv_t *s);
uint64_t narcache__srv_now_ms(srv_t *s);

/* server_conn.c */
int narcache__srv_conn_start(srv_t *s, int fd, const char *peer);
void narcache__srv_conn_stop_gracefully(struct srv_conn *c); /* on stop */
void narcache__srv_conn_abort(struct srv_conn *c);           /* stop timeout */
struct srv_conn *narcache__srv_conn_next(struct srv_conn *c);

/* server_upload.c: an upload's bytes into the store (pool threads). Each
 * returns 0 or the HTTP status to answer, with the reason in `why`. */
typedef struct srv_upload srv_upload;
int narcache__srv_upload_begin(srv_upload **out, srv_t *s, int kind, const char *name, size_t len,
                               uint64_t size, char *why, size_t why_size);
int narcache__srv_upload_write(srv_upload *u, const void *data, size_t len, char *why,
                               size_t why_size);
int narcache__srv_upload_commit(srv_upload *u, char *why, size_t why_size); /* frees u */
void narcache__srv_upload_abort(srv_upload *u);                              /* frees u */

/* server_metrics.c */
void narcache__srv_count_request(srv_t *s, int route, int status, double seconds);
/* An upload ended: stored (200), refused (the status) or dropped (0: the
 * body stalled, ended early or the client left); `bytes` of body read. */
void narcache__srv_count_upload(srv_t *s, int status, uint64_t bytes);
int narcache__srv_metrics_text(srv_t *s, char **out, size_t *out_len);
const char *narcache__srv_route_name(int route);
long narcache__srv_open_fds(void); /* this process's, or -1 */

#endif /* NARCACHE_SERVER_INTERNAL_H */
