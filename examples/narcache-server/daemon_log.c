/* Log lines of narcache-server on stderr, as text or JSON (one object per
 * line), from the library's structured log and access hooks. */
#define _GNU_SOURCE
#include "daemon.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static int json_format;

void daemon_log_init(int json) { json_format = json; }

static const char *level_name(int level) {
  static const char *const names[] = {"error", "warning", "info", "debug"};
  return level >= 0 && level <= 3 ? names[level] : "info";
}

/* A JSON string literal of `s` (control characters escaped). */
static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

/* Text values are quoted when they would be ambiguous. */
static void text_value(FILE *f, const char *s) {
  if (s[0] != '\0' && strpbrk(s, " \"=\n\t\\") == NULL) {
    fputs(s, f);
    return;
  }
  json_string(f, s);
}

static void timestamp(char *buf, size_t size) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void emit(int level, const char *event, const char *message,
                 const narcache_log_field *fields, size_t n_fields) {
  char ts[40];
  timestamp(ts, sizeof ts);
  FILE *f = stderr;
  flockfile(f);
  if (json_format) {
    fprintf(f, "{\"time\":\"%s\",\"level\":\"%s\",\"event\":", ts, level_name(level));
    json_string(f, event);
    fputs(",\"message\":", f);
    json_string(f, message);
    for (size_t i = 0; i < n_fields; i++) {
      fputc(',', f);
      json_string(f, fields[i].key);
      fputc(':', f);
      json_string(f, fields[i].value);
    }
    fputs("}\n", f);
  } else {
    fprintf(f, "%s %s %s: %s", ts, level_name(level), event, message);
    for (size_t i = 0; i < n_fields; i++) {
      fprintf(f, " %s=", fields[i].key);
      text_value(f, fields[i].value);
    }
    fputc('\n', f);
  }
  funlockfile(f);
  fflush(f);
}

void daemon_log_hook(void *userdata, const narcache_log_record *r) {
  (void)userdata;
  emit(r->level, r->event, r->message, r->fields, r->n_fields);
}

void daemon_log(int level, const char *event, const char *message, const char *key,
                const char *value) {
  narcache_log_field f = {key, value};
  emit(level, event, message, &f, key != NULL ? 1 : 0);
}

void daemon_access_hook(void *userdata, const narcache_access_record *r) {
  (void)userdata;
  char status[16], bytes[32], micros[32];
  snprintf(status, sizeof status, "%d", r->status);
  snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)r->body_bytes);
  snprintf(micros, sizeof micros, "%llu", (unsigned long long)r->duration_us);
  narcache_log_field f[] = {{"method", r->method}, {"target", r->target}, {"route", r->route},
                            {"status", status},    {"bytes", bytes},      {"us", micros},
                            {"peer", r->peer},     {"aborted", r->aborted ? "1" : "0"}};
  emit(NARCACHE_LOG_INFO, "access", "request", f, sizeof f / sizeof f[0]);
}

void daemon_log_fields(int level, const char *event, const char *message,
                       const narcache_log_field *fields, size_t n_fields) {
  emit(level, event, message, fields, n_fields);
}
