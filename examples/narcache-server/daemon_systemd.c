/* narcache-server under systemd, without libsystemd:
 *
 *  - the notify protocol: READY=1 once listening, WATCHDOG=1 only after a
 *    health probe passed (loop, threadpool and store all answered) and no
 *    more often than WATCHDOG_USEC needs, STATUS= lines, STOPPING=1. Each
 *    message is one datagram to $NOTIFY_SOCKET (a path, or an abstract
 *    name written with a leading '@'), sent without ever blocking the
 *    loop: a message systemd has no room for is dropped.
 *  - socket activation: $LISTEN_FDS descriptors from fd 3, meant for us
 *    when $LISTEN_PID is our pid, named by $LISTEN_FDNAMES.
 *  - on SIGQUIT and SIGABRT (the signal systemd sends when the watchdog
 *    fires) the stack of every thread goes to stderr before the process
 *    dies by that same signal.
 */
#define _GNU_SOURCE
#include "daemon.h"

#include <dirent.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A whole unsigned decimal number, nothing else. */
static int parse_u64(const char *s, uint64_t *out) {
  if (s == NULL || *s == '\0')
    return -1;
  uint64_t n = 0;
  for (; *s != '\0'; s++) {
    if (*s < '0' || *s > '9' || n > (UINT64_MAX - 9) / 10)
      return -1;
    n = n * 10 + (uint64_t)(*s - '0');
  }
  *out = n;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Notify protocol                                                     */
/* ------------------------------------------------------------------ */

static void notify_open(daemon_systemd *sd) {
  const char *path = getenv("NOTIFY_SOCKET");
  if (path == NULL || path[0] == '\0')
    return; /* not run by systemd (or not Type=notify): silently off */
  size_t n = strlen(path);
  if ((path[0] != '/' && path[0] != '@') || n < 2 || n >= sizeof sd->notify_addr.sun_path) {
    daemon_log(NARCACHE_LOG_WARNING, "notify_socket",
               "NOTIFY_SOCKET is not an absolute path or @abstract name: not notifying", "path",
               path);
    return;
  }
  memset(&sd->notify_addr, 0, sizeof sd->notify_addr);
  sd->notify_addr.sun_family = AF_UNIX;
  memcpy(sd->notify_addr.sun_path, path, n);
  /* An abstract name is exactly its bytes after a NUL; a path also
   * takes its terminating NUL. */
  if (path[0] == '@')
    sd->notify_addr.sun_path[0] = '\0';
  sd->notify_addr_len =
      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/' ? 1 : 0));
  sd->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (sd->notify_fd < 0)
    daemon_log(NARCACHE_LOG_WARNING, "notify_socket", "cannot create the notify socket", "error",
               strerror(errno));
}

static void notify(daemon_systemd *sd, const char *message) {
  if (sd->notify_fd < 0)
    return;
  ssize_t n;
  do
    n = sendto(sd->notify_fd, message, strlen(message), MSG_DONTWAIT | MSG_NOSIGNAL,
               (const struct sockaddr *)&sd->notify_addr, sd->notify_addr_len);
  while (n < 0 && errno == EINTR);
  if (n < 0 && !sd->notify_failed) {
    sd->notify_failed = 1;
    daemon_log(NARCACHE_LOG_WARNING, "notify_failed",
               "cannot notify systemd (further failures are not logged)", "error",
               strerror(errno));
  }
}

static void watchdog_init(daemon_systemd *sd) {
  const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
  uint64_t u, p;
  if (usec == NULL)
    return;
  if (parse_u64(usec, &u) < 0 || u == 0) {
    daemon_log(NARCACHE_LOG_WARNING, "watchdog", "bad WATCHDOG_USEC: watchdog not fed",
               "WATCHDOG_USEC", usec);
    return;
  }
  if (pid != NULL && (parse_u64(pid, &p) < 0 || p != (uint64_t)getpid())) {
    daemon_log(NARCACHE_LOG_INFO, "watchdog", "the watchdog is another process's",
               "WATCHDOG_PID", pid);
    return;
  }
  sd->watchdog_usec = u;
}

/* ------------------------------------------------------------------ */
/* Socket activation                                                   */
/* ------------------------------------------------------------------ */

static int listen_fds_init(daemon_systemd *sd) {
  const char *fds = getenv("LISTEN_FDS"), *pid = getenv("LISTEN_PID");
  const char *names = getenv("LISTEN_FDNAMES");
  uint64_t n = 0, p = 0;
  int rc = 0;
  if (fds == NULL) {
    /* nothing passed */
  } else if (pid == NULL || parse_u64(pid, &p) < 0 || p != (uint64_t)getpid()) {
    daemon_log(NARCACHE_LOG_WARNING, "socket_activation",
               "LISTEN_FDS is meant for another process: ignored", "LISTEN_PID",
               pid != NULL ? pid : "(unset)");
  } else if (parse_u64(fds, &n) < 0 || n > DAEMON_MAX_ACTIVATED) {
    daemon_log(NARCACHE_LOG_ERROR, "socket_activation", "bad LISTEN_FDS", "LISTEN_FDS", fds);
    rc = -1;
  } else {
    if (names != NULL && (sd->names = strdup(names)) == NULL)
      rc = -1;
    char *next = sd->names;
    for (int i = 0; rc == 0 && i < (int)n; i++) {
      /* systemd calls a socket it was given no name for "unknown" */
      sd->fd_names[i] = "unknown";
      if (next != NULL) {
        sd->fd_names[i] = next;
        next = strchr(next, ':');
        if (next != NULL)
          *next++ = '\0';
      }
      int fd = 3 + i, flags = fcntl(fd, F_GETFD);
      if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
        char text[16];
        snprintf(text, sizeof text, "%d", fd);
        daemon_log(NARCACHE_LOG_ERROR, "socket_activation", "a passed descriptor is not open",
                   "fd", text);
        rc = -1;
        break;
      }
      sd->fds[sd->n_fds++] = fd;
    }
  }
  /* Whatever they said, they were for us alone: children must not see them. */
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDNAMES");
  return rc;
}

int daemon_systemd_init(daemon_systemd *sd) {
  memset(sd, 0, sizeof *sd);
  sd->notify_fd = -1;
  sd->last_healthy = -1;
  notify_open(sd);
  watchdog_init(sd);
  return listen_fds_init(sd);
}

int daemon_systemd_adopt(daemon_systemd *sd, narcache_server *server) {
  int adopted = 0;
  for (int i = 0; i < sd->n_fds; i++) {
    int fd = sd->fds[i];
    sd->fds[i] = -1; /* the server owns it now, also on failure */
    char fd_text[16], address[200] = "?";
    snprintf(fd_text, sizeof fd_text, "%d", fd);
    int rc = narcache_server_listen_fd(server, fd);
    if (rc < 0) {
      narcache_log_field f[3] = {
          {"fd", fd_text}, {"name", sd->fd_names[i]}, {"error", narcache_strerror(rc)}};
      daemon_log_fields(NARCACHE_LOG_ERROR, "socket_activation_failed",
                        "cannot serve on a socket systemd passed", f, 3);
      return -1;
    }
    size_t count = narcache_server_listener_count(server);
    if (count > 0)
      (void)narcache_server_address(server, count - 1, address, sizeof address);
    narcache_log_field f[3] = {{"fd", fd_text}, {"name", sd->fd_names[i]}, {"address", address}};
    daemon_log_fields(NARCACHE_LOG_INFO, "socket_activated", "serving on a socket systemd passed",
                      f, 3);
    adopted++;
  }
  return adopted;
}

/* ------------------------------------------------------------------ */
/* Watchdog, status, the other hooks                                   */
/* ------------------------------------------------------------------ */

/* The probe runs every W/8 and must finish within 3W/8 (W: the watchdog
 * period), so a passing probe proves the server answered within the last
 * W/2. WATCHDOG=1 goes at most every W/2 - 1.5 probe intervals: every
 * third probe, W * 3/8 apart, leaving an eighth of W for a late timer
 * before the W/2 that systemd recommends (it kills at W). */
int daemon_systemd_configure(daemon_systemd *sd, narcache_server *server) {
  if (sd->watchdog_usec == 0 || sd->notify_fd < 0)
    return 0;
  uint64_t w_ms = sd->watchdog_usec / 1000;
  int64_t interval = 0, timeout = 0;
  if (narcache_server_get_option(server, NARCACHE_OPT_PROBE_INTERVAL_MS, &interval) < 0 ||
      narcache_server_get_option(server, NARCACHE_OPT_PROBE_TIMEOUT_MS, &timeout) < 0)
    return -1;
  int64_t want_interval = (int64_t)(w_ms / 8), want_timeout = (int64_t)(w_ms * 3 / 8);
  if (want_interval < 10)
    want_interval = 10; /* the library's minimum */
  if (want_timeout < 10)
    want_timeout = 10;
  if (interval > want_interval)
    interval = want_interval;
  if (timeout > want_timeout)
    timeout = want_timeout;
  if (narcache_server_set_option(server, NARCACHE_OPT_PROBE_INTERVAL_MS, interval) < 0 ||
      narcache_server_set_option(server, NARCACHE_OPT_PROBE_TIMEOUT_MS, timeout) < 0)
    return -1;
  uint64_t half = sd->watchdog_usec * 500, probe_ns = (uint64_t)interval * 1000000u;
  sd->ping_gap_ns = half > probe_ns * 3 / 2 ? half - probe_ns * 3 / 2 : 0;
  char w_text[32], i_text[32], t_text[32];
  snprintf(w_text, sizeof w_text, "%llu", (unsigned long long)w_ms);
  snprintf(i_text, sizeof i_text, "%lld", (long long)interval);
  snprintf(t_text, sizeof t_text, "%lld", (long long)timeout);
  narcache_log_field f[3] = {
      {"watchdog_ms", w_text}, {"probe_interval_ms", i_text}, {"probe_timeout_ms", t_text}};
  daemon_log_fields(NARCACHE_LOG_INFO, "watchdog", "feeding the systemd watchdog after each passing probe", f, 3);
  return 0;
}

void daemon_systemd_listening(daemon_systemd *sd, narcache_server *server) {
  if (sd->notify_fd < 0)
    return;
  char message[1024] = "READY=1\nSTATUS=listening on";
  size_t used = strlen(message);
  for (size_t i = 0; i < narcache_server_listener_count(server); i++) {
    char address[200];
    if (narcache_server_address(server, i, address, sizeof address) < 0)
      continue;
    int n = snprintf(message + used, sizeof message - used, "%s %s", i > 0 ? "," : "", address);
    if (n < 0 || (size_t)n >= sizeof message - used)
      break;
    used += (size_t)n;
  }
  message[used] = '\0';
  notify(sd, message);
}

void daemon_systemd_healthy(daemon_systemd *sd) {
  if (sd->watchdog_usec == 0 || sd->notify_fd < 0 || sd->stopping)
    return;
  uint64_t now = now_ns();
  if (sd->last_ping_ns != 0 && now - sd->last_ping_ns < sd->ping_gap_ns)
    return;
  sd->last_ping_ns = now;
  notify(sd, "WATCHDOG=1");
}

void daemon_systemd_status(daemon_systemd *sd, int healthy, const char *text) {
  if (sd->notify_fd < 0 || sd->stopping)
    return; /* "stopping" stays the status to the end */
  uint64_t now = now_ns();
  healthy = healthy != 0;
  if (healthy == sd->last_healthy && now - sd->last_status_ns < 1000000000u)
    return; /* the same state: once a second is live enough */
  sd->last_healthy = healthy;
  sd->last_status_ns = now;
  char message[512];
  snprintf(message, sizeof message, "STATUS=%s", text);
  for (char *p = message; *p != '\0'; p++)
    if (*p == '\n')
      *p = ' '; /* one line: a newline would start another field */
  notify(sd, message);
}

void daemon_systemd_stopping(daemon_systemd *sd) {
  sd->stopping = 1;
  notify(sd, "STOPPING=1\nSTATUS=stopping");
}

void daemon_systemd_close(daemon_systemd *sd) {
  if (sd->notify_fd >= 0)
    close(sd->notify_fd);
  sd->notify_fd = -1;
  for (int i = 0; i < sd->n_fds; i++)
    if (sd->fds[i] >= 0)
      close(sd->fds[i]);
  sd->n_fds = 0;
  free(sd->names);
  sd->names = NULL;
}

/* ------------------------------------------------------------------ */
/* Stack traces of every thread on SIGQUIT / SIGABRT                   */
/* ------------------------------------------------------------------ */

/* Only async-signal-safe calls below: write, open, read, close,
 * getdents64, tgkill, nanosleep, clock_gettime, sigaction, raise, and
 * backtrace/backtrace_symbols_fd, which allocate nothing once libgcc's
 * unwinder is loaded (done at install). The thread that takes the fatal
 * signal writes its own stack, then asks every other thread in turn,
 * with a realtime signal, to write its own; it waits for each a bounded
 * time so that a thread that cannot answer (signals blocked, stuck in the
 * kernel) costs a second at most. */

#define TRACE_MAX_FRAMES 64
#define TRACE_WAIT_MS 1000   /* for one thread */
#define TRACE_BUDGET_MS 5000 /* for all of them */

static int trace_signal;
static atomic_int trace_state;    /* 0 idle, 1 writing traces, 2 done */
static atomic_int trace_target;   /* the tid whose turn it is, 0 none */
static atomic_int trace_answered; /* the target has written its trace */

static void put(const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, s, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    s += w;
    n -= (size_t)w;
  }
}

static void put_str(const char *s) { put(s, strlen(s)); }

/* Decimal digits of v, into the end of a buffer of 24; returns the start. */
static char *fmt_uint(char buf[24], unsigned long long v) {
  char *p = buf + 23;
  *p = '\0';
  do
    *--p = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  return p;
}

static uint64_t ms_now(void) { return now_ns() / 1000000u; }

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* "--- thread 1234 "name" (main) ---" then the frames. */
static void write_own_trace(const char *note) {
  char digits[24], path[64] = "/proc/self/task/", name[32] = "?";
  pid_t tid = gettid();
  const char *t = fmt_uint(digits, (unsigned long long)tid);
  size_t used = strlen(path);
  memcpy(path + used, t, strlen(t));
  used += strlen(t);
  memcpy(path + used, "/comm", 6);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, name, sizeof name - 1);
    close(fd);
    if (n > 0) {
      name[n] = '\0';
      if (name[n - 1] == '\n')
        name[n - 1] = '\0';
    }
  }
  put_str("--- thread ");
  put_str(t);
  put_str(" \"");
  put_str(name);
  put_str("\"");
  if (tid == getpid())
    put_str(" (main)");
  put_str(note);
  put_str(" ---\n");
  void *frames[TRACE_MAX_FRAMES];
  int n = backtrace(frames, TRACE_MAX_FRAMES);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
}

static void on_trace_signal(int sig) {
  (void)sig;
  int saved = errno;
  if (atomic_load(&trace_target) == (int)gettid()) {
    write_own_trace("");
    atomic_store(&trace_answered, 1);
  }
  errno = saved;
}

static void write_all_traces(int sig) {
  const char *name = sig == SIGQUIT ? "SIGQUIT" : sig == SIGABRT ? "SIGABRT" : "signal";
  char digits[24];
  pid_t self = gettid(), pid = getpid();
  put_str("narcache-server: ");
  put_str(name);
  put_str(": stack traces of every thread of process ");
  put_str(fmt_uint(digits, (unsigned long long)pid));
  put_str("\n");
  write_own_trace(" (received the signal)");
  unsigned long long threads = 1;
  uint64_t deadline = ms_now() + TRACE_BUDGET_MS;
  int dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  _Alignas(struct dirent64) char buf[4096];
  ssize_t got;
  while (dir >= 0 && (got = getdents64(dir, buf, sizeof buf)) > 0) {
    for (ssize_t off = 0; off < got;) {
      const struct dirent64 *e = (const struct dirent64 *)(buf + off);
      off += e->d_reclen;
      long long tid = 0;
      const char *c = e->d_name;
      for (; *c >= '0' && *c <= '9'; c++)
        tid = tid * 10 + (*c - '0');
      if (*c != '\0' || tid <= 0 || tid == self)
        continue;
      threads++;
      if (ms_now() >= deadline) {
        put_str("--- thread ");
        put_str(fmt_uint(digits, (unsigned long long)tid));
        put_str(": not asked, out of time ---\n");
        continue;
      }
      atomic_store(&trace_answered, 0);
      atomic_store(&trace_target, (int)tid);
      int asked = tgkill(pid, (pid_t)tid, trace_signal) == 0;
      for (int ms = 0; asked && ms < TRACE_WAIT_MS && !atomic_load(&trace_answered); ms++)
        sleep_ms(1);
      if (!atomic_load(&trace_answered)) {
        put_str("--- thread ");
        put_str(fmt_uint(digits, (unsigned long long)tid));
        put_str(asked ? ": no answer within a second ---\n" : ": gone ---\n");
      }
      atomic_store(&trace_target, 0);
    }
  }
  if (dir >= 0)
    close(dir);
  put_str("narcache-server: end of stack traces (");
  put_str(fmt_uint(digits, threads));
  put_str(" threads)\n");
}

static void die_by(int sig) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, NULL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  raise(sig); /* the default action now: terminate (with a core) */
  _exit(128 + sig);
}

static void on_fatal_signal(int sig) {
  int idle = 0;
  if (atomic_compare_exchange_strong(&trace_state, &idle, 1)) {
    write_all_traces(sig);
    atomic_store(&trace_state, 2);
  } else {
    /* Another thread is writing the traces (and may want ours): let it
     * finish, within bounds. */
    for (int ms = 0; ms < TRACE_BUDGET_MS + 1000 && atomic_load(&trace_state) == 1; ms++)
      sleep_ms(1);
  }
  die_by(sig);
}

void daemon_traces_install(void) {
  void *warm[4];
  (void)backtrace(warm, 4); /* loads the unwinder now, not in a handler */
  trace_signal = SIGRTMIN + 3;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = on_trace_signal;
  sigaction(trace_signal, &sa, NULL);
  sa.sa_handler = on_fatal_signal;
  sigaction(SIGQUIT, &sa, NULL);
  sigaction(SIGABRT, &sa, NULL);
}
