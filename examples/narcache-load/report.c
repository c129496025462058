/* Latency histograms and what a run reports: a progress line a second,
 * and the final table as text or JSON. */
#define _GNU_SOURCE
#include "load.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

static const char *const kind_names[KIND_COUNT] = {
    "narinfo", "closure", "upload", "slow-read", "slow-headers", "reset", "half-open"};

static const char *const error_names[ERR_COUNT] = {
    "connect", "timeout", "reset", "eof", "protocol", "status", "content", "not_closed", "local"};

const char *load_kind_name(load_kind kind) { return kind_names[kind]; }

int load_kind_from_name(const char *name, size_t len) {
  for (int k = 0; k < KIND_COUNT; k++)
    if (strlen(kind_names[k]) == len && memcmp(kind_names[k], name, len) == 0)
      return k;
  return -1;
}

int load_kind_is_hostile(load_kind kind) { return kind >= KIND_SLOW_READ; }

int load_kind_needs_paths(load_kind kind) {
  return kind == KIND_CLOSURE || kind == KIND_SLOW_READ || kind == KIND_RESET;
}

const char *load_error_name(load_error e) { return error_names[e]; }

/* ---- histogram ------------------------------------------------------------ */

#define HIST_MAX_US ((UINT64_C(1) << 46) - 1)

static size_t bucket_of(uint64_t us) {
  if (us < LOAD_HIST_SUB)
    return (size_t)us;
  if (us > HIST_MAX_US)
    us = HIST_MAX_US;
  int e = 63 - __builtin_clzll(us); /* 2^e <= us < 2^(e+1), e >= 6 */
  size_t sub = (size_t)(us >> (e - 6)) - LOAD_HIST_SUB;
  return LOAD_HIST_SUB + (size_t)(e - 6) * LOAD_HIST_SUB + sub;
}

/* The largest value that falls in bucket i. */
static uint64_t bucket_top(size_t i) {
  if (i < LOAD_HIST_SUB)
    return i;
  size_t e = (i - LOAD_HIST_SUB) / LOAD_HIST_SUB + 6;
  uint64_t sub = (i - LOAD_HIST_SUB) % LOAD_HIST_SUB;
  return ((LOAD_HIST_SUB + sub + 1) << (e - 6)) - 1;
}

void load_hist_add(load_hist *h, uint64_t us) {
  h->buckets[bucket_of(us)]++;
  h->count++;
  if (us > h->max_us)
    h->max_us = us;
}

uint64_t load_hist_percentile(const load_hist *h, double p) {
  if (h->count == 0)
    return 0;
  uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  for (size_t i = 0; i < LOAD_HIST_BUCKETS; i++) {
    seen += h->buckets[i];
    if (seen >= rank) {
      uint64_t top = bucket_top(i);
      return top < h->max_us ? top : h->max_us;
    }
  }
  return h->max_us;
}

void load_hist_merge(load_hist *into, const load_hist *from) {
  for (size_t i = 0; i < LOAD_HIST_BUCKETS; i++)
    into->buckets[i] += from->buckets[i];
  into->count += from->count;
  if (from->max_us > into->max_us)
    into->max_us = from->max_us;
}

uint64_t load_stats_errors(const load_stats *s) {
  uint64_t n = 0;
  for (int e = 0; e < ERR_COUNT; e++)
    n += s->errors[e];
  return n;
}

/* ---- progress --------------------------------------------------------------- */

static double seconds_between(uint64_t from_ns, uint64_t to_ns) {
  return to_ns > from_ns ? (double)(to_ns - from_ns) / 1e9 : 0.0;
}

static void totals(const load_run *run, int hostile, load_stats *sum) {
  memset(sum, 0, sizeof *sum);
  for (int k = 0; k < KIND_COUNT; k++) {
    const load_stats *s = &run->stats[k];
    if (s->clients == 0 || load_kind_is_hostile((load_kind)k) != hostile)
      continue;
    sum->clients += s->clients;
    sum->started += s->started;
    sum->ok += s->ok;
    for (int e = 0; e < ERR_COUNT; e++)
      sum->errors[e] += s->errors[e];
    for (int c = 0; c < 600; c++)
      sum->status[c] += s->status[c];
    sum->bytes_in += s->bytes_in;
    sum->bytes_out += s->bytes_out;
    sum->retries += s->retries;
    load_hist_merge(&sum->latency, &s->latency);
  }
}

void load_progress(load_run *run, int final) {
  static load_stats sum; /* large; one run per process */
  uint64_t now = load_now_ns();
  totals(run, 0, &sum);
  uint64_t done = sum.ok + load_stats_errors(&sum);
  double dt = seconds_between(run->last_tick_ns, now);
  double rate = dt > 0 ? (double)(done - run->last_tick_done) / dt : 0.0;
  run->last_tick_ns = now;
  run->last_tick_done = done;
  fprintf(stderr,
          "[%6.1fs] %" PRIu64 " requests (%.0f/s now), %" PRIu64 " errors, p99 %.2f ms, "
          "%zu connections open%s\n",
          seconds_between(run->start_ns, now), done, rate, load_stats_errors(&sum),
          (double)load_hist_percentile(&sum.latency, 99) / 1000.0, load_clients_open(),
          final ? ", done" : "");
}

/* ---- final report ------------------------------------------------------------ */

static double mib(uint64_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

static void text_row(FILE *out, const char *name, const load_stats *s, double secs) {
  uint64_t errors = load_stats_errors(s);
  const load_hist *h = &s->latency;
  fprintf(out,
          "%-13s %7" PRIu64 " %10" PRIu64 " %10" PRIu64 " %8" PRIu64
          " %10.1f %8.2f %9.2f %9.2f %9.2f %9.2f\n",
          name, s->clients, s->ok + errors, s->ok, errors,
          secs > 0 ? (double)(s->ok + errors) / secs : 0.0, secs > 0 ? mib(s->bytes_in) / secs : 0.0,
          (double)load_hist_percentile(h, 50) / 1000.0, (double)load_hist_percentile(h, 90) / 1000.0,
          (double)load_hist_percentile(h, 99) / 1000.0, (double)h->max_us / 1000.0);
}

static void text_details(FILE *out, const load_stats *s) {
  if (s->retries > 0)
    fprintf(out, "%13s retried on a new connection (the server closed a kept-alive one): %" PRIu64
            "\n", "", s->retries);
  if (load_stats_errors(s) > 0) {
    fprintf(out, "%13s errors:", "");
    for (int e = 0; e < ERR_COUNT; e++)
      if (s->errors[e])
        fprintf(out, " %s %" PRIu64, error_names[e], s->errors[e]);
    fputc('\n', out);
  }
  int any = 0;
  for (int c = 100; c < 600; c++) {
    if (s->status[c] == 0)
      continue;
    if (!any)
      fprintf(out, "%13s status:", "");
    fprintf(out, "%s %d: %" PRIu64, any ? "," : "", c, s->status[c]);
    any = 1;
  }
  if (any)
    fputc('\n', out);
}

void load_report_text(const load_run *run, FILE *out) {
  static load_stats sum;
  double secs = seconds_between(run->start_ns, run->end_ns);
  fprintf(out, "narcache-load %s: %.2f s\n", run->opt->url, secs);
  fprintf(out, "%-13s %7s %10s %10s %8s %10s %8s %9s %9s %9s %9s\n", "kind", "clients",
          "requests", "ok", "errors", "req/s", "MiB/s", "p50 ms", "p90 ms", "p99 ms", "max ms");
  for (int k = 0; k < KIND_COUNT; k++) {
    const load_stats *s = &run->stats[k];
    if (s->clients == 0)
      continue;
    text_row(out, kind_names[k], s, secs);
    text_details(out, s);
  }
  totals(run, 0, &sum);
  text_row(out, "all normal", &sum, secs);
  if (run->walk.closures)
    fprintf(out, "closure walks started: %" PRIu64 "\n", run->walk.closures);
}

/* ---- JSON ------------------------------------------------------------------------ */

static void json_stats(FILE *out, const load_stats *s, double secs) {
  const load_hist *h = &s->latency;
  uint64_t errors = load_stats_errors(s);
  fprintf(out,
          "{\"clients\": %" PRIu64 ", \"requests\": %" PRIu64 ", \"ok\": %" PRIu64
          ", \"errors\": %" PRIu64 ", \"requests_per_s\": %.3f, \"bytes_in\": %" PRIu64
          ", \"bytes_out\": %" PRIu64 ", \"bytes_in_per_s\": %.1f, \"retries\": %" PRIu64 ", ",
          s->clients, s->ok + errors, s->ok, errors,
          secs > 0 ? (double)(s->ok + errors) / secs : 0.0, s->bytes_in, s->bytes_out,
          secs > 0 ? (double)s->bytes_in / secs : 0.0, s->retries);
  fprintf(out,
          "\"latency_ms\": {\"count\": %" PRIu64
          ", \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"max\": %.3f}, \"error_kinds\": {",
          h->count, (double)load_hist_percentile(h, 50) / 1000.0,
          (double)load_hist_percentile(h, 90) / 1000.0, (double)load_hist_percentile(h, 99) / 1000.0,
          (double)h->max_us / 1000.0);
  for (int e = 0; e < ERR_COUNT; e++)
    fprintf(out, "%s\"%s\": %" PRIu64, e ? ", " : "", error_names[e], s->errors[e]);
  fputs("}, \"status\": {", out);
  int any = 0;
  for (int c = 100; c < 600; c++) {
    if (s->status[c] == 0)
      continue;
    fprintf(out, "%s\"%d\": %" PRIu64, any ? ", " : "", c, s->status[c]);
    any = 1;
  }
  fputs("}}", out);
}

static void json_string(FILE *out, const char *s) {
  fputc('"', out);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(out, "\\%c", c);
    else if (c < 0x20)
      fprintf(out, "\\u%04x", c);
    else
      fputc(c, out);
  }
  fputc('"', out);
}

int load_report_json(const load_run *run, FILE *out) {
  static load_stats sum;
  double secs = seconds_between(run->start_ns, run->end_ns);
  fputs("{\"url\": ", out);
  json_string(out, run->opt->url);
  fprintf(out, ", \"duration_s\": %.3f, \"closures\": %" PRIu64 ", \"kinds\": {", secs,
          run->walk.closures);
  int first = 1;
  for (int k = 0; k < KIND_COUNT; k++) {
    if (run->stats[k].clients == 0)
      continue;
    fprintf(out, "%s\"%s\": ", first ? "" : ", ", kind_names[k]);
    json_stats(out, &run->stats[k], secs);
    first = 0;
  }
  fputs("}, \"normal\": ", out);
  totals(run, 0, &sum);
  json_stats(out, &sum, secs);
  fputs(", \"hostile\": ", out);
  totals(run, 1, &sum);
  json_stats(out, &sum, secs);
  fputs("}\n", out);
  return ferror(out) ? -1 : 0;
}
