/* Server counters and the Prometheus text exposition of /metrics. */
#define _GNU_SOURCE
#include "buffer_internal.h"
#include "server_internal.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const int narcache__srv_counted_status[SRV_STATUS_SLOTS - 1] = {
    200, 206, 304, 400, 404, 405, 408, 411, 413, 414, 416, 431, 500, 501, 503, 505, 401,
    403, 409, 415, 507};

const double narcache__srv_latency_bounds[SRV_LATENCY_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10};

static const char *const route_names[ROUTE_COUNT] = {"cache_info", "narinfo", "nar",     "ls",
                                                     "log",        "healthz", "metrics", "other"};

const char *narcache__srv_route_name(int route) {
  return route >= 0 && route < ROUTE_COUNT ? route_names[route] : "other";
}

static int status_slot(int status) {
  for (int i = 0; i < SRV_STATUS_SLOTS - 1; i++)
    if (narcache__srv_counted_status[i] == status)
      return i;
  return SRV_STATUS_SLOTS - 1;
}

void narcache__srv_count_request(srv_t *s, int route, int status, double seconds) {
  if (route < 0 || route >= ROUTE_COUNT)
    route = ROUTE_OTHER;
  s->metrics.requests_total++;
  s->metrics.requests[route][status_slot(status)]++;
  int b = 0;
  while (b < SRV_LATENCY_BUCKETS && seconds > narcache__srv_latency_bounds[b])
    b++;
  s->metrics.latency_count[b]++;
  s->metrics.latency_sum += seconds;
}

void narcache__srv_count_upload(srv_t *s, int status, uint64_t bytes) {
  s->metrics.upload_bytes += bytes;
  if (status == 200)
    s->metrics.uploads_stored++;
  else if (status == 0)
    s->metrics.uploads_dropped++;
  else
    s->metrics.uploads_refused[status_slot(status)]++;
}

long narcache__srv_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return -1;
  long n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  closedir(d);
  return n - 1; /* the directory's own fd */
}

static long rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = -1, rss = -1;
  if (f == NULL)
    return -1;
  if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
    rss = -1;
  fclose(f);
  return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

/* The text being built; `failed` once an append ran out of memory. */
typedef struct text_out {
  narcache__buf buf;
  int failed;
} text_out;

NARCACHE_PRINTF(2, 3) static void put(text_out *b, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n > 0 && narcache__buf_append(&b->buf, line,
                                    (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0)
    b->failed = 1;
}

/* The label of status slot `i`: the code, or "other" for the last. */
static const char *status_label(int i, char buf[16]) {
  if (i < SRV_STATUS_SLOTS - 1)
    snprintf(buf, 16, "%d", narcache__srv_counted_status[i]);
  else
    snprintf(buf, 16, "other");
  return buf;
}

static void put_requests(text_out *b, const srv_metrics *m) {
  put(b, "# HELP narcache_http_requests_total Requests answered, by route and status.\n"
         "# TYPE narcache_http_requests_total counter\n");
  for (int r = 0; r < ROUTE_COUNT; r++)
    for (int i = 0; i < SRV_STATUS_SLOTS; i++) {
      if (m->requests[r][i] == 0)
        continue;
      char status[16];
      put(b, "narcache_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n", route_names[r],
          status_label(i, status), (unsigned long long)m->requests[r][i]);
    }
}

static void put_latency(text_out *b, const srv_metrics *m) {
  put(b, "# HELP narcache_http_request_duration_seconds Time from request head to last byte.\n"
         "# TYPE narcache_http_request_duration_seconds histogram\n");
  uint64_t cumulative = 0;
  for (int i = 0; i <= SRV_LATENCY_BUCKETS; i++) {
    cumulative += m->latency_count[i];
    if (i < SRV_LATENCY_BUCKETS)
      put(b, "narcache_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
          narcache__srv_latency_bounds[i], (unsigned long long)cumulative);
    else
      put(b, "narcache_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
          (unsigned long long)cumulative);
  }
  put(b, "narcache_http_request_duration_seconds_sum %.6f\n", m->latency_sum);
  put(b, "narcache_http_request_duration_seconds_count %llu\n", (unsigned long long)cumulative);
}

static void put_gauge(text_out *b, const char *name, const char *help, const char *type,
                      double value) {
  put(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, value);
}

static void put_uploads(text_out *b, const srv_metrics *m, size_t active) {
  put_gauge(b, "narcache_uploads_active", "Uploads being received or checked.", "gauge",
            (double)active);
  put_gauge(b, "narcache_upload_bytes_total", "Upload body bytes received.", "counter",
            (double)m->upload_bytes);
  put_gauge(b, "narcache_uploads_stored_total", "Uploads verified and published.", "counter",
            (double)m->uploads_stored);
  put_gauge(b, "narcache_uploads_dropped_total",
            "Uploads whose body stalled, crawled or ended early (nothing published).", "counter",
            (double)m->uploads_dropped);
  put(b, "# HELP narcache_uploads_refused_total Uploads refused, by the status answered "
         "(the log has each reason).\n# TYPE narcache_uploads_refused_total counter\n");
  for (int i = 0; i < SRV_STATUS_SLOTS; i++) {
    if (m->uploads_refused[i] == 0)
      continue;
    char status[16];
    put(b, "narcache_uploads_refused_total{status=\"%s\"} %llu\n", status_label(i, status),
        (unsigned long long)m->uploads_refused[i]);
  }
}

int narcache__srv_metrics_text(srv_t *s, char **out, size_t *out_len) {
  text_out b = {{0}, 0};
  const srv_metrics *m = &s->metrics;
  put_requests(&b, m);
  put_latency(&b, m);
  put_gauge(&b, "narcache_http_response_body_bytes_total", "Response body bytes sent.", "counter",
            (double)m->body_bytes);
  put_gauge(&b, "narcache_http_responses_aborted_total",
            "Responses cut short (client gone, body error, stall).", "counter",
            (double)m->aborted);
  put_gauge(&b, "narcache_memory_cache_hits_total",
            "narinfo and nix-cache-info answers served from the memory cache.", "counter",
            (double)m->cache_hits);
  put_gauge(&b, "narcache_connections_open", "Client connections open.", "gauge",
            (double)s->n_conns);
  put_gauge(&b, "narcache_connections_accepted_total", "Connections accepted.", "counter",
            (double)m->accepted);
  put_gauge(&b, "narcache_accept_errors_total",
            "Accept failures (including running out of file descriptors).", "counter",
            (double)m->accept_errors);
  put_gauge(&b, "narcache_accept_paused_at_limit_total",
            "Times accepting paused at the connection limit.", "counter",
            (double)m->refused_at_limit);
  put_gauge(&b, "narcache_threadpool_tasks_in_flight",
            "Store and body tasks queued or running on the threadpool.", "gauge",
            (double)s->work_in_flight);
  put_gauge(&b, "narcache_health_probe_seconds", "Duration of the last completed health probe.",
            "gauge", m->probe_seconds);
  put_gauge(&b, "narcache_health_probes_failed_total", "Health probes that failed.", "counter",
            (double)m->probes_failed);
  put_gauge(&b, "narcache_healthy", "1 if the last health probe passed.", "gauge",
            s->healthy ? 1.0 : 0.0);
  put_uploads(&b, m, s->uploads_active);
  put_gauge(&b, "process_open_fds", "Open file descriptors.", "gauge", (double)narcache__srv_open_fds());
  put_gauge(&b, "process_resident_memory_bytes", "Resident set size.", "gauge",
            (double)rss_bytes());
  if (b.failed) {
    narcache__buf_free(&b.buf);
    return NARCACHE_ENOMEM;
  }
  return narcache__buf_take(&b.buf, out, out_len);
}
