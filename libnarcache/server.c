/* The server object: options, hooks, listeners, accepting (including
 * running out of file descriptors), the health probe and stopping. One
 * connection's life is in server_conn.c. */
#define _GNU_SOURCE
#include "server_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Connections taken per readable event of a listener: enough to drain a
 * burst, few enough that one listener cannot starve the loop. */
#define ACCEPTS_PER_WAKEUP 64
/* How long accepting pauses after EMFILE/ENFILE. */
#define ACCEPT_RETRY_MS 100
/* Descriptors kept free for the store at least (see fd_connection_cap). */
#define FD_RESERVE_MIN 32

static const struct {
  int64_t dflt, min, max;
} option_table[SRV_OPTION_COUNT] = {
    [NARCACHE_OPT_MAX_CONNECTIONS] = {1024, 1, 1000000},
    [NARCACHE_OPT_HEADER_TIMEOUT_MS] = {10000, 10, 3600000},
    [NARCACHE_OPT_IDLE_TIMEOUT_MS] = {60000, 10, 86400000},
    [NARCACHE_OPT_BODY_STALL_MS] = {30000, 10, 3600000},
    [NARCACHE_OPT_MIN_BODY_RATE] = {1024, 0, INT64_MAX},
    [NARCACHE_OPT_MAX_HEAD_BYTES] = {16384, 256, 1 << 20},
    [NARCACHE_OPT_MAX_HEADERS] = {64, 4, 1000},
    [NARCACHE_OPT_MAX_TARGET_BYTES] = {4096, 64, 1 << 16},
    [NARCACHE_OPT_MAX_UPLOAD_BYTES] = {0, 0, INT64_MAX},
    [NARCACHE_OPT_PRIORITY] = {-1, -1, 1000000}, /* -1: as the store says */
    [NARCACHE_OPT_WANT_MASS_QUERY] = {-1, -1, 1}, /* -1: as the store says */
    [NARCACHE_OPT_PROBE_INTERVAL_MS] = {1000, 10, 3600000},
    [NARCACHE_OPT_PROBE_TIMEOUT_MS] = {5000, 10, 3600000},
    [NARCACHE_OPT_STOP_TIMEOUT_MS] = {10000, 0, 3600000},
    [NARCACHE_OPT_NARINFO_MAX_AGE] = {300, 0, 31536000},
    [NARCACHE_OPT_RETRY_AFTER] = {5, 1, 3600},
    [NARCACHE_OPT_MEMORY_CACHE_MS] = {1000, 0, 3600000},
    [NARCACHE_OPT_MEMORY_CACHE_BYTES] = {16 << 20, 0, INT64_MAX},
    [NARCACHE_OPT_MAX_UPLOADS] = {16, 1, 100000},
    [NARCACHE_OPT_PRIVATE] = {0, 0, 1},
    [NARCACHE_OPT_ALLOW_OVERWRITE] = {0, 0, 1},
    [NARCACHE_OPT_STORE_TIMEOUT_MS] = {5000, 0, 3600000},
};

static int valid_option(int option) {
  return option >= 1 && option < SRV_OPTION_COUNT && option_table[option].max != 0;
}

uint64_t narcache__srv_now_ms(srv_t *s) { return uv_now(s->loop); }

void narcache__srv_log(srv_t *s, int level, const char *event, const char *message,
                       const narcache_log_field *fields, size_t n_fields) {
  if (s->hooks.log == NULL)
    return;
  narcache_log_record r = {1, level, event, message, fields, n_fields};
  s->hooks.log(s->userdata, &r);
}

/* A log record with one "error" field holding strerror(err). */
static void log_errno(srv_t *s, int level, const char *event, const char *message, int err,
                      const char *address) {
  narcache_log_field f[2] = {{"error", strerror(err)}, {"address", address ? address : ""}};
  narcache__srv_log(s, level, event, message, f, address ? 2 : 1);
}

/* ------------------------------------------------------------------ */
/* Creating and configuring                                            */
/* ------------------------------------------------------------------ */

int narcache_server_new(narcache_server **out, struct uv_loop_s *loop, narcache_store *store) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  if (store == NULL)
    return NARCACHE_EINVAL;
  srv_t *s = narcache__calloc(1, sizeof *s);
  if (s == NULL)
    return NARCACHE_ENOMEM;
  if (loop == NULL) {
    if (uv_loop_init(&s->own_loop) != 0) {
      narcache__free(s);
      return NARCACHE_ENOMEM;
    }
    s->owns_loop = 1;
    loop = &s->own_loop;
  }
  s->loop = loop;
  s->store = store;
  s->spare_fd = -1;
  for (int i = 1; i < SRV_OPTION_COUNT; i++)
    s->opt[i] = option_table[i].dflt;
  atomic_init(&s->stop_requested, 0);
  snprintf(s->health_reason, sizeof s->health_reason, "no health probe has completed yet");
  *out = s;
  return NARCACHE_OK;
}

int narcache_server_set_hooks(narcache_server *s, const narcache_server_hooks *hooks,
                              void *userdata) {
  if (s == NULL || (hooks != NULL && hooks->version < 1))
    return NARCACHE_EINVAL;
  memset(&s->hooks, 0, sizeof s->hooks);
  if (hooks != NULL) /* a version-1 caller's struct ends before `authorize` */
    memcpy(&s->hooks, hooks,
           hooks->version == 1 ? offsetof(narcache_server_hooks, authorize) : sizeof s->hooks);
  s->hooks.version = NARCACHE_SERVER_HOOKS_VERSION;
  s->userdata = userdata;
  return NARCACHE_OK;
}

int narcache_server_set_upload_keys(narcache_server *s, const narcache_key *const *trusted,
                                    size_t n_trusted, const narcache_key *signing) {
  if (s == NULL || (trusted == NULL && n_trusted > 0) ||
      (signing != NULL && !narcache_key_is_secret(signing)))
    return NARCACHE_EINVAL;
  const narcache_key **copy = NULL;
  if (n_trusted > 0) {
    if ((copy = narcache__calloc(n_trusted, sizeof *copy)) == NULL)
      return NARCACHE_ENOMEM;
    memcpy(copy, trusted, n_trusted * sizeof *copy);
  }
  narcache__free(s->trusted_keys);
  s->trusted_keys = copy;
  s->n_trusted_keys = n_trusted;
  s->signing_key = signing;
  return NARCACHE_OK;
}

int narcache_server_set_tokens(narcache_server *s, const narcache_tokens *tokens) {
  if (s == NULL)
    return NARCACHE_EINVAL;
  s->tokens = tokens;
  return NARCACHE_OK;
}

int narcache_server_set_option(narcache_server *s, int option, int64_t value) {
  if (s == NULL || !valid_option(option) || value < option_table[option].min ||
      value > option_table[option].max)
    return NARCACHE_EINVAL;
  if (s->started)
    return NARCACHE_EMISUSE;
  s->opt[option] = value;
  return NARCACHE_OK;
}

int narcache_server_get_option(const narcache_server *s, int option, int64_t *value) {
  if (s == NULL || value == NULL || !valid_option(option))
    return NARCACHE_EINVAL;
  *value = s->opt[option];
  return NARCACHE_OK;
}

int narcache_server_set_not_ready(narcache_server *s, const char *reason) {
  if (s == NULL)
    return NARCACHE_EINVAL;
  char *copy = NULL;
  if (reason != NULL) {
    size_t len = strlen(reason);
    copy = narcache__malloc(len + 1);
    if (copy == NULL)
      return NARCACHE_ENOMEM;
    memcpy(copy, reason, len + 1);
  }
  narcache__free(s->not_ready);
  s->not_ready = copy;
  return NARCACHE_OK;
}

/* ------------------------------------------------------------------ */
/* Listeners                                                           */
/* ------------------------------------------------------------------ */

/* "ADDR:PORT" or "[V6]:PORT" of an inet address (port in *port); 0, or
 * -1 for another family. */
static int format_inet(const struct sockaddr_storage *ss, char *out, size_t size, int *port) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    *port = ntohs(in->sin_port);
    snprintf(out, size, "%s:%d", host, *port);
    return 0;
  }
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    *port = ntohs(in6->sin6_port);
    snprintf(out, size, "[%s]:%d", host, *port);
    return 0;
  }
  return -1;
}

static void describe_socket(srv_listener *l) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  l->address[0] = '\0';
  l->port = 0;
  if (getsockname(l->fd, (struct sockaddr *)&ss, &len) < 0 ||
      format_inet(&ss, l->address, sizeof l->address, &l->port) == 0 || ss.ss_family != AF_UNIX)
    return;
  struct sockaddr_un *un = (struct sockaddr_un *)&ss;
  size_t path_len = len > offsetof(struct sockaddr_un, sun_path)
                        ? len - offsetof(struct sockaddr_un, sun_path)
                        : 0;
  if (path_len > 0 && un->sun_path[0] == '\0')
    snprintf(l->address, sizeof l->address, "unix:@%.*s", (int)(path_len - 1), un->sun_path + 1);
  else
    snprintf(l->address, sizeof l->address, "unix:%.*s", (int)strnlen(un->sun_path, path_len),
             un->sun_path);
}

static int add_listener(srv_t *s, int fd, const char *unix_path) {
  srv_listener *l = narcache__calloc(1, sizeof *l);
  srv_listener **grown =
      l != NULL ? narcache__realloc(s->listeners, (s->n_listeners + 1) * sizeof *grown) : NULL;
  char *path_copy = NULL;
  if (grown != NULL && unix_path != NULL) {
    path_copy = narcache__malloc(strlen(unix_path) + 1);
    if (path_copy != NULL)
      strcpy(path_copy, unix_path);
  }
  if (l == NULL || grown == NULL || (unix_path != NULL && path_copy == NULL)) {
    narcache__free(l);
    close(fd);
    return NARCACHE_ENOMEM;
  }
  s->listeners = grown;
  l->server = s;
  l->fd = fd;
  l->unix_path = path_copy;
  describe_socket(l);
  s->listeners[s->n_listeners++] = l;
  return NARCACHE_OK;
}

static void start_accepting(srv_listener *l);

/* Split "HOST:PORT" / "[V6]:PORT". */
static int split_host_port(const char *address, char *host, size_t host_size, char *port,
                           size_t port_size) {
  const char *colon;
  if (address[0] == '[') {
    const char *close = strchr(address, ']');
    if (close == NULL || close[1] != ':')
      return -1;
    size_t n = (size_t)(close - address - 1);
    if (n == 0 || n >= host_size)
      return -1;
    memcpy(host, address + 1, n);
    host[n] = '\0';
    colon = close + 1;
  } else {
    colon = strrchr(address, ':');
    if (colon == NULL || colon == address || (size_t)(colon - address) >= host_size ||
        memchr(address, ':', (size_t)(colon - address)) != NULL)
      return -1;
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
  }
  const char *p = colon + 1;
  size_t n = strlen(p);
  if (n == 0 || n >= port_size || strspn(p, "0123456789") != n || atol(p) > 65535)
    return -1;
  memcpy(port, p, n + 1);
  return 0;
}

static int listen_tcp(srv_t *s, const char *address, unsigned flags) {
  char host[256], port[8];
  if (split_host_port(address, host, sizeof host, port, sizeof port) < 0)
    return NARCACHE_EINVAL;
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL) {
    narcache_log_field f[1] = {{"address", address}};
    narcache__srv_log(s, NARCACHE_LOG_ERROR, "listen_failed", "cannot resolve the address", f, 1);
    return NARCACHE_EINVAL;
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1, err = 0;
  if (fd < 0)
    err = errno;
  if (!err && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
    err = errno;
  if (!err && (flags & NARCACHE_LISTEN_REUSEPORT) &&
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
    err = errno;
  if (!err && res->ai_family == AF_INET6 &&
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
    err = errno;
  if (!err && bind(fd, res->ai_addr, res->ai_addrlen) < 0)
    err = errno;
  if (!err && listen(fd, SOMAXCONN) < 0)
    err = errno;
  freeaddrinfo(res);
  if (err) {
    if (fd >= 0)
      close(fd);
    log_errno(s, NARCACHE_LOG_ERROR, "listen_failed", "cannot listen", err, address);
    return NARCACHE_EIO;
  }
  return add_listener(s, fd, NULL);
}

/* A unix socket path is reused only if nobody answers on it: a second
 * server must not silently take over a live one's socket. */
static int stale_unix_socket(const struct sockaddr_un *un) {
  struct stat st;
  if (lstat(un->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
    return 0;
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0)
    return 0;
  int live = connect(probe, (const struct sockaddr *)un, sizeof *un) == 0;
  int refused = !live && errno == ECONNREFUSED;
  close(probe);
  return refused;
}

static int listen_unix(srv_t *s, const char *path) {
  struct sockaddr_un un = {0};
  un.sun_family = AF_UNIX;
  if (path[0] == '\0' || strlen(path) >= sizeof un.sun_path)
    return NARCACHE_EINVAL;
  strcpy(un.sun_path, path);
  if (stale_unix_socket(&un))
    unlink(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = fd < 0 ? errno : 0;
  if (!err && bind(fd, (struct sockaddr *)&un, sizeof un) < 0)
    err = errno;
  if (!err && listen(fd, SOMAXCONN) < 0)
    err = errno;
  if (err) {
    if (fd >= 0)
      close(fd);
    log_errno(s, NARCACHE_LOG_ERROR, "listen_failed", "cannot listen", err, path);
    return NARCACHE_EIO;
  }
  return add_listener(s, fd, path);
}

int narcache_server_listen(narcache_server *s, const char *address, unsigned flags) {
  if (s == NULL || address == NULL || (flags & ~NARCACHE_LISTEN_REUSEPORT) != 0 || s->stopping)
    return NARCACHE_EINVAL;
  int rc = strncmp(address, "unix:", 5) == 0 ? listen_unix(s, address + 5)
                                              : listen_tcp(s, address, flags);
  if (rc == 0 && s->started)
    start_accepting(s->listeners[s->n_listeners - 1]);
  return rc;
}

int narcache_server_listen_fd(narcache_server *s, int fd) {
  if (s == NULL || fd < 0 || s->stopping) {
    if (fd >= 0)
      close(fd);
    return NARCACHE_EINVAL;
  }
  int type = 0, listening = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM ||
      (len = sizeof listening, getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len)) < 0 ||
      !listening) {
    close(fd);
    return NARCACHE_EINVAL;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
    close(fd);
    return NARCACHE_EIO;
  }
  int rc = add_listener(s, fd, NULL);
  if (rc == 0 && s->started)
    start_accepting(s->listeners[s->n_listeners - 1]);
  return rc;
}

size_t narcache_server_listener_count(const narcache_server *s) {
  return s != NULL ? s->n_listeners : 0;
}

int narcache_server_address(const narcache_server *s, size_t index, char *buf, size_t size) {
  if (s == NULL || buf == NULL || index >= s->n_listeners)
    return NARCACHE_EINVAL;
  size_t n = strlen(s->listeners[index]->address);
  if (n + 1 > size)
    return NARCACHE_EBUFS;
  memcpy(buf, s->listeners[index]->address, n + 1);
  return NARCACHE_OK;
}

int narcache_server_port(const narcache_server *s, size_t index) {
  return s != NULL && index < s->n_listeners ? s->listeners[index]->port : 0;
}

/* ------------------------------------------------------------------ */
/* Accepting                                                           */
/* ------------------------------------------------------------------ */

static void on_listener_readable(uv_poll_t *h, int status, int events);

/* The poll handle exists from the first start on (a server that never
 * starts has no handle to close). */
static void start_accepting(srv_listener *l) {
  if (l->polling || l->closed)
    return;
  if (!l->has_handle) {
    if (uv_poll_init(l->server->loop, &l->poll, l->fd) != 0)
      return;
    l->poll.data = l;
    l->has_handle = 1;
    l->server->open_handles++;
  }
  if (uv_poll_start(&l->poll, UV_READABLE, on_listener_readable) == 0)
    l->polling = 1;
}

static void pause_accepting(srv_t *s) {
  for (size_t i = 0; i < s->n_listeners; i++)
    if (s->listeners[i]->polling) {
      uv_poll_stop(&s->listeners[i]->poll);
      s->listeners[i]->polling = 0;
    }
}

/* Connections beyond this are left in the kernel's queue. */
static size_t connection_cap(const srv_t *s) {
  size_t cap = (size_t)s->opt[NARCACHE_OPT_MAX_CONNECTIONS];
  return s->fd_connection_cap > 0 && s->fd_connection_cap < cap ? s->fd_connection_cap : cap;
}

/* How many connections the descriptor limit allows, keeping a reserve for
 * the store (files it opens, temporary files, database connections): a
 * server whose every descriptor holds a connection could not open the
 * file its clients ask for. */
static size_t fd_connection_cap(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
    return 0;
  size_t limit = (size_t)rl.rlim_cur;
  long open_now = narcache__srv_open_fds();
  size_t in_use = open_now > 0 ? (size_t)open_now : 0;
  size_t reserve = limit / 8 > FD_RESERVE_MIN ? limit / 8 : FD_RESERVE_MIN;
  if (reserve > limit / 2)
    reserve = limit / 2;
  return limit > in_use + reserve ? limit - in_use - reserve : 1;
}

static void resume_accepting(srv_t *s) {
  if (s->stopping || !s->started || s->n_conns >= connection_cap(s) ||
      uv_is_active((uv_handle_t *)&s->accept_retry))
    return;
  for (size_t i = 0; i < s->n_listeners; i++)
    start_accepting(s->listeners[i]);
}

static void on_accept_retry(uv_timer_t *t) { resume_accepting(t->data); }

static void peer_name(int fd, char *out, size_t size) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int port = 0;
  if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0 || format_inet(&ss, out, size, &port) < 0)
    snprintf(out, size, "unix");
}

/* Out of descriptors: give the spare one up for a moment to take the
 * connection at the head of the queue and tell it to come back (a 503,
 * which the Nix client retries, rather than a hang), then pause accepting
 * so the loop does not spin on a listener that stays readable. */
static void on_fd_exhaustion(srv_t *s, srv_listener *l, int err) {
  s->metrics.accept_errors++;
  if (s->spare_fd >= 0) {
    close(s->spare_fd);
    s->spare_fd = -1;
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      char msg[160];
      int n = snprintf(msg, sizeof msg,
                       "HTTP/1.1 503 Service Unavailable\r\nRetry-After: %lld\r\n"
                       "Content-Length: 0\r\nConnection: close\r\n\r\n",
                       (long long)s->opt[NARCACHE_OPT_RETRY_AFTER]);
      ssize_t w = send(fd, msg, (size_t)n, MSG_NOSIGNAL);
      (void)w;
      close(fd);
    }
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  log_errno(s, NARCACHE_LOG_WARNING, "accept_failed",
            "out of file descriptors: pausing accept, serving open connections", err, l->address);
  pause_accepting(s);
  uv_timer_start(&s->accept_retry, on_accept_retry, ACCEPT_RETRY_MS, 0);
}

static void on_listener_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  srv_listener *l = h->data;
  srv_t *s = l->server;
  if (status < 0)
    return;
  for (int i = 0; i < ACCEPTS_PER_WAKEUP && !s->stopping; i++) {
    if (s->n_conns >= connection_cap(s)) {
      /* Leave the rest in the kernel's queue until a connection closes. */
      s->metrics.refused_at_limit++;
      pause_accepting(s);
      return;
    }
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
        return;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        on_fd_exhaustion(s, l, err);
        return;
      }
      /* ECONNABORTED and the network errors accept(2) passes on: the
       * connection is gone; the listener is fine. */
      s->metrics.accept_errors++;
      continue;
    }
    char peer[80];
    peer_name(fd, peer, sizeof peer);
    if (narcache__srv_conn_start(s, fd, peer) < 0) {
      close(fd);
      s->metrics.accept_errors++;
      continue;
    }
    s->metrics.accepted++;
  }
}

void narcache__srv_conn_closed(srv_t *s, struct srv_conn *c) {
  (void)c;
  s->n_conns--;
  resume_accepting(s);
  narcache__srv_maybe_stopped(s);
}

/* ------------------------------------------------------------------ */
/* Health probe                                                        */
/* ------------------------------------------------------------------ */

static void set_health(srv_t *s, int healthy, const char *reason) {
  s->healthy = healthy;
  snprintf(s->health_reason, sizeof s->health_reason, "%s", reason);
}

static void report_status(srv_t *s) {
  if (s->hooks.status == NULL)
    return;
  char text[300];
  if (s->healthy)
    snprintf(text, sizeof text, "serving: %zu connections, %llu requests, probe %.1f ms",
             s->n_conns, (unsigned long long)s->metrics.requests_total,
             s->metrics.probe_seconds * 1e3);
  else
    snprintf(text, sizeof text, "unhealthy: %s", s->health_reason);
  s->hooks.status(s->userdata, s, s->healthy, text);
}

static void probe_work(uv_work_t *w) {
  srv_t *s = w->data;
  s->probe_store_rc = narcache_store_probe(s->store);
}

static void probe_done(uv_work_t *w, int status) {
  srv_t *s = w->data;
  s->probe_busy = 0;
  s->probe_stuck_logged = 0;
  s->work_in_flight--;
  uint64_t now = narcache__srv_now_ms(s);
  uint64_t took = now - s->probe_started_ms;
  s->metrics.probe_seconds = (double)took / 1e3;
  int64_t deadline = s->opt[NARCACHE_OPT_PROBE_TIMEOUT_MS];
  char reason[200];
  int ok = 0;
  if (status != 0 || s->probe_store_rc != 0)
    snprintf(reason, sizeof reason, "store probe failed: %s",
             narcache_strerror(status != 0 ? NARCACHE_ECANCELED : s->probe_store_rc));
  else if ((int64_t)took > deadline)
    snprintf(reason, sizeof reason, "store probe took %llu ms (limit %lld ms)",
             (unsigned long long)took, (long long)deadline);
  else if (s->not_ready != NULL)
    snprintf(reason, sizeof reason, "%s", s->not_ready);
  else
    ok = 1;
  set_health(s, ok, ok ? "ok" : reason);
  if (ok)
    s->metrics.probes_ok++;
  else {
    s->metrics.probes_failed++;
    narcache_log_field f[1] = {{"reason", reason}};
    narcache__srv_log(s, NARCACHE_LOG_WARNING, "probe_failed", "health probe failed", f, 1);
  }
  if (ok && s->hooks.healthy != NULL && !s->stopping)
    s->hooks.healthy(s->userdata, s);
  report_status(s);
  narcache__srv_maybe_stopped(s);
}

/* Every interval: the timer firing on time shows the loop turns; a task
 * on the threadpool that runs the store's probe shows the pool and the
 * store work. A probe still running at the next tick is a failure
 * (wedged store or saturated pool), reported once per tick, and no second
 * probe is queued behind it. */
static void on_probe_timer(uv_timer_t *t) {
  srv_t *s = t->data;
  uint64_t now = narcache__srv_now_ms(s);
  int64_t lag = (int64_t)(now - s->probe_expected_ms);
  s->probe_expected_ms = now + (uint64_t)s->opt[NARCACHE_OPT_PROBE_INTERVAL_MS];
  if (s->probe_busy) {
    uint64_t waiting = now - s->probe_started_ms;
    if ((int64_t)waiting > s->opt[NARCACHE_OPT_PROBE_TIMEOUT_MS]) {
      char reason[200];
      snprintf(reason, sizeof reason, "store probe has not returned for %llu ms",
               (unsigned long long)waiting);
      if (!s->probe_stuck_logged) { /* once per stuck probe */
        narcache_log_field f[1] = {{"reason", reason}};
        narcache__srv_log(s, NARCACHE_LOG_ERROR, "probe_stuck", "health probe stuck", f, 1);
        s->probe_stuck_logged = 1;
      }
      set_health(s, 0, reason);
      s->metrics.probes_failed++;
      report_status(s);
    }
    return;
  }
  if (lag > s->opt[NARCACHE_OPT_PROBE_TIMEOUT_MS]) {
    char reason[200];
    snprintf(reason, sizeof reason, "event loop was blocked for %lld ms", (long long)lag);
    narcache_log_field f[1] = {{"reason", reason}};
    narcache__srv_log(s, NARCACHE_LOG_ERROR, "loop_blocked", "event loop blocked", f, 1);
    set_health(s, 0, reason);
    report_status(s);
  }
  s->probe_work.data = s;
  s->probe_started_ms = now;
  if (uv_queue_work(s->loop, &s->probe_work, probe_work, probe_done) == 0) {
    s->probe_busy = 1;
    s->work_in_flight++;
  }
}

/* ------------------------------------------------------------------ */
/* Start, run, stop, free                                              */
/* ------------------------------------------------------------------ */

static void on_stop_async(uv_async_t *a);

int narcache_server_start(narcache_server *s) {
  if (s == NULL)
    return NARCACHE_EINVAL;
  if (s->started || s->n_listeners == 0)
    return NARCACHE_EMISUSE;
  if (uv_async_init(s->loop, &s->stop_async, on_stop_async) != 0)
    return NARCACHE_EIO;
  s->stop_async.data = s;
  uv_timer_init(s->loop, &s->accept_retry);
  uv_timer_init(s->loop, &s->probe_timer);
  uv_timer_init(s->loop, &s->stop_timer);
  s->accept_retry.data = s->probe_timer.data = s->stop_timer.data = s;
  s->open_handles = 4;
  s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  s->fd_connection_cap = fd_connection_cap();
  if (s->opt[NARCACHE_OPT_MEMORY_CACHE_MS] > 0 && s->opt[NARCACHE_OPT_MEMORY_CACHE_BYTES] > 0)
    s->cache = narcache__srv_cache_new((size_t)s->opt[NARCACHE_OPT_MEMORY_CACHE_BYTES]);
  s->started = 1;
  for (size_t i = 0; i < s->n_listeners; i++)
    start_accepting(s->listeners[i]);
  uint64_t interval = (uint64_t)s->opt[NARCACHE_OPT_PROBE_INTERVAL_MS];
  s->probe_expected_ms = narcache__srv_now_ms(s);
  uv_timer_start(&s->probe_timer, on_probe_timer, 0, interval);
  for (size_t i = 0; i < s->n_listeners; i++) {
    narcache_log_field f[1] = {{"address", s->listeners[i]->address}};
    narcache__srv_log(s, NARCACHE_LOG_INFO, "listening", "listening", f, 1);
  }
  if (s->hooks.listening != NULL)
    s->hooks.listening(s->userdata, s);
  /* If a stop was requested before the async handle existed. */
  if (atomic_load(&s->stop_requested))
    uv_async_send(&s->stop_async);
  return NARCACHE_OK;
}

int narcache_server_run(narcache_server *s) {
  if (s == NULL)
    return NARCACHE_EINVAL;
  if (!s->owns_loop)
    return NARCACHE_EMISUSE;
  uv_run(s->loop, UV_RUN_DEFAULT);
  return NARCACHE_OK;
}

int narcache_server_stop(narcache_server *s) {
  if (s == NULL)
    return NARCACHE_EINVAL;
  atomic_store(&s->stop_requested, 1);
  /* uv_async_send is the one libuv call that is safe from any thread (and
   * from a signal handler). Before start the handle does not exist yet:
   * start checks the flag. */
  if (s->started)
    uv_async_send(&s->stop_async);
  return NARCACHE_OK;
}

static void handle_closed(srv_t *s) {
  s->open_handles--;
  if (s->open_handles == 0 && !s->stopped) {
    s->stopped = 1;
    narcache__srv_log(s, NARCACHE_LOG_INFO, "stopped", "server stopped", NULL, 0);
    if (s->hooks.stopped != NULL)
      s->hooks.stopped(s->userdata, s);
  }
}

static void on_server_handle_closed(uv_handle_t *h) { handle_closed(h->data); }

/* The listening socket goes as soon as we stop accepting, so that a new
 * instance can bind the address while this one finishes its responses. */
static void on_listener_closed(uv_handle_t *h) {
  srv_listener *l = h->data;
  close(l->fd);
  l->fd = -1;
  if (l->unix_path != NULL)
    unlink(l->unix_path);
  handle_closed(l->server);
}

/* Once no connection and no task remain, close the server's own handles;
 * the last close callback reports `stopped`. */
void narcache__srv_maybe_stopped(srv_t *s) {
  if (!s->stopping || s->closing_handles || s->n_conns > 0 || s->work_in_flight > 0)
    return;
  s->closing_handles = 1;
  uv_close((uv_handle_t *)&s->accept_retry, on_server_handle_closed);
  uv_close((uv_handle_t *)&s->probe_timer, on_server_handle_closed);
  uv_close((uv_handle_t *)&s->stop_timer, on_server_handle_closed);
  uv_close((uv_handle_t *)&s->stop_async, on_server_handle_closed);
}

static void on_stop_timeout(uv_timer_t *t) {
  srv_t *s = t->data;
  narcache__srv_log(s, NARCACHE_LOG_WARNING, "stop_timeout",
                    "graceful stop timed out: closing the remaining connections", NULL, 0);
  for (struct srv_conn *c = s->conns, *next; c != NULL; c = next) {
    next = narcache__srv_conn_next(c);
    narcache__srv_conn_abort(c);
  }
  if (s->work_in_flight > 0) {
    char n[32];
    snprintf(n, sizeof n, "%zu", s->work_in_flight);
    narcache_log_field f[1] = {{"tasks", n}};
    narcache__srv_log(s, NARCACHE_LOG_ERROR, "stop_blocked",
                      "threadpool tasks (store calls) are still running: the server stops "
                      "when they return",
                      f, 1);
  }
}

static void on_stop_async(uv_async_t *a) {
  srv_t *s = a->data;
  if (s->stopping)
    return;
  s->stopping = 1;
  narcache__srv_log(s, NARCACHE_LOG_INFO, "stopping", "stopping gracefully", NULL, 0);
  if (s->hooks.stopping != NULL)
    s->hooks.stopping(s->userdata, s);
  uv_timer_stop(&s->probe_timer);
  uv_timer_stop(&s->accept_retry);
  for (size_t i = 0; i < s->n_listeners; i++) {
    srv_listener *l = s->listeners[i];
    l->closed = 1;
    l->polling = 0;
    if (l->has_handle && !uv_is_closing((uv_handle_t *)&l->poll))
      uv_close((uv_handle_t *)&l->poll, on_listener_closed);
  }
  for (struct srv_conn *c = s->conns, *next; c != NULL; c = next) {
    next = narcache__srv_conn_next(c);
    narcache__srv_conn_stop_gracefully(c);
  }
  uv_timer_start(&s->stop_timer, on_stop_timeout, (uint64_t)s->opt[NARCACHE_OPT_STOP_TIMEOUT_MS], 0);
  narcache__srv_maybe_stopped(s);
}

void narcache_server_free(narcache_server *s) {
  if (s == NULL)
    return;
  for (size_t i = 0; i < s->n_listeners; i++) {
    srv_listener *l = s->listeners[i];
    if (l->fd >= 0) {
      close(l->fd);
      if (l->unix_path != NULL)
        unlink(l->unix_path);
    }
    narcache__free(l->unix_path);
    narcache__free(l);
  }
  narcache__free(s->listeners);
  if (s->spare_fd >= 0)
    close(s->spare_fd);
  if (s->owns_loop)
    uv_loop_close(&s->own_loop);
  narcache__srv_cache_free(s->cache);
  narcache__free(s->not_ready);
  narcache__free(s->trusted_keys);
  narcache__free(s);
}

int narcache_server_metrics(narcache_server *s, char **out, size_t *out_len) {
  if (s == NULL || out == NULL)
    return NARCACHE_EINVAL;
  return narcache__srv_metrics_text(s, out, out_len);
}

int narcache_server_is_healthy(const narcache_server *s) {
  return s != NULL && s->healthy;
}
