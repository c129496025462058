/* narcache-load: load and hostile clients for a Nix binary cache. */
#define _GNU_SOURCE
#include "load.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: narcache-load URL [options]\n"
    "\n"
    "Load a Nix binary cache (http://HOST[:PORT][/PREFIX]) the way fleets of Nix\n"
    "clients do, and hostile clients with them; report requests/s, latency\n"
    "percentiles, bytes/s and errors by kind.\n"
    "\n"
    "  --clients KIND=N      N clients of KIND; repeatable (default narinfo=25):\n"
    "      narinfo           GET <hash>.narinfo, mostly absent hashes (nix build's queries)\n"
    "      closure           narinfo, then NAR, of every path of random closures\n"
    "                        (one shared walk, like one Nix process with N connections)\n"
    "      upload            PUT a fresh NAR, then its narinfo (needs --token-file)\n"
    "      slow-read         GET a NAR and read it at --read-rate bytes/s\n"
    "      slow-headers      send a request head one byte per --byte-interval\n"
    "      reset             GET a NAR and reset the connection at a random point\n"
    "      half-open         send part of a request head, then nothing\n"
    "  --paths FILE          store paths, hash parts or <hash>.narinfo names in the\n"
    "                        cache, one per line ('-': stdin); their closures are\n"
    "                        looked up first. Needed by closure, slow-read, reset\n"
    "  --hit-ratio R         share of narinfo requests for paths in --paths (default 0.1)\n"
    "  --requests N          stop after N requests of the normal kinds\n"
    "  --duration SECONDS    stop after this long (default 10 without --requests)\n"
    "  --timeout SECONDS     a request without its full response (hostile kinds: without\n"
    "                        the server closing) for this long is an error (default 30)\n"
    "  --read-rate BYTES     slow-read speed in bytes/s (default 10240)\n"
    "  --byte-interval SEC   slow-headers pace (default 1)\n"
    "  --upload-size BYTES   file size in each uploaded NAR (default 65536)\n"
    "  --token-file FILE     upload token (Authorization: Bearer)\n"
    "  --secret-key FILE     sign uploaded narinfo with this Nix secret key\n"
    "  --store-dir DIR       store directory of uploaded paths (default /nix/store)\n"
    "  --json FILE           write the report as JSON to FILE ('-': stdout, and the text\n"
    "                        report goes to stderr)\n"
    "  --progress, --no-progress  a line a second on stderr (default: when a terminal)\n"
    "  --max-errors N        exit 1 when more than N normal requests failed\n"
    "  --seed N              random seed (default: from the clock)\n"
    "  --help                this text\n"
    "\n"
    "Normal kinds (narinfo, closure, upload) succeed on the status a healthy cache\n"
    "gives (narinfo: 200 or 404; NAR: 200 with FileSize bytes; upload: 2xx). Hostile\n"
    "kinds succeed when the server deals with them: slow-headers and half-open when\n"
    "it closes the connection or answers, slow-read and reset as normal GETs.\n";

/* ---- random numbers (xorshift64*) ---------------------------------------------- */

uint64_t load_random(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * UINT64_C(2685821657736338717);
}

void load_random_hash(uint64_t *state, char out[33]) {
  static const char alphabet[] = "0123456789abcdfghijklmnpqrsvwxyz";
  for (int i = 0; i < 32; i += 8) {
    uint64_t r = load_random(state);
    for (int j = 0; j < 8; j++, r >>= 5)
      out[i + j] = alphabet[r & 31];
  }
  out[32] = '\0';
}

/* ---- options ---------------------------------------------------------------------- */

static int parse_u64(const char *v, uint64_t max, uint64_t *out) {
  char *end = NULL;
  errno = 0;
  if (v[0] == '-')
    return -1;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || n > max)
    return -1;
  *out = n;
  return 0;
}

static int parse_seconds(const char *v, double *out) {
  char *end = NULL;
  errno = 0;
  double d = strtod(v, &end);
  if (errno != 0 || end == v || *end != '\0' || !(d >= 0) || d > 1e7)
    return -1;
  *out = d;
  return 0;
}

static int parse_clients(const char *v, load_options *opt) {
  const char *eq = strchr(v, '=');
  uint64_t n;
  int kind = eq ? load_kind_from_name(v, (size_t)(eq - v)) : -1;
  if (kind < 0 || parse_u64(eq + 1, 100000, &n) != 0)
    return -1;
  opt->clients[kind] = (uint32_t)n;
  return 0;
}

static char *read_first_line(const char *file) {
  FILE *in = fopen(file, "r");
  if (in == NULL)
    return NULL;
  char line[1024];
  char *copy = NULL;
  if (fgets(line, sizeof line, in)) {
    line[strcspn(line, "\r\n")] = '\0';
    copy = strdup(line);
  }
  fclose(in);
  return copy;
}

static narcache_key *read_secret_key(const char *file) {
  char *text = read_first_line(file);
  narcache_key *key = NULL;
  if (text == NULL || narcache_key_parse_secret(&key, text, strlen(text), NULL) != 0)
    key = NULL;
  free(text);
  return key;
}

typedef struct cli {
  load_options opt;
  char *token;
  const char *json;
  uint64_t max_errors;
  int has_max_errors;
  int progress; /* -1: when stderr is a terminal */
} cli;

static int bad_value(const char *name, const char *v) {
  fprintf(stderr, "narcache-load: bad value for %s: '%s'\n", name, v);
  return 2;
}

/* Returns 0, 1 (--help printed), or 2 (usage error, reported). */
static int parse_args(int argc, char **argv, cli *c) {
  load_options *o = &c->opt;
  int any_clients = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0) {
      fputs(usage_text, stdout);
      return 1;
    }
    if (strcmp(a, "--progress") == 0 || strcmp(a, "--no-progress") == 0) {
      c->progress = a[2] == 'p';
      continue;
    }
    if (a[0] != '-') {
      if (o->url) {
        fprintf(stderr, "narcache-load: one URL only\n");
        return 2;
      }
      o->url = a;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "narcache-load: %s needs a value (see --help)\n", a);
      return 2;
    }
    const char *v = argv[++i];
    uint64_t n;
    if (strcmp(a, "--clients") == 0) {
      if (parse_clients(v, o) != 0)
        return bad_value(a, v);
      any_clients = 1;
    } else if (strcmp(a, "--paths") == 0) {
      o->paths_file = v;
    } else if (strcmp(a, "--hit-ratio") == 0) {
      if (parse_seconds(v, &o->hit_ratio) != 0 || o->hit_ratio > 1)
        return bad_value(a, v);
    } else if (strcmp(a, "--requests") == 0) {
      if (parse_u64(v, UINT64_MAX / 2, &o->max_requests) != 0)
        return bad_value(a, v);
    } else if (strcmp(a, "--duration") == 0) {
      if (parse_seconds(v, &o->duration_s) != 0)
        return bad_value(a, v);
    } else if (strcmp(a, "--timeout") == 0) {
      if (parse_seconds(v, &o->timeout_s) != 0 || o->timeout_s < 0.001)
        return bad_value(a, v);
    } else if (strcmp(a, "--read-rate") == 0) {
      if (parse_u64(v, UINT64_C(1) << 40, &o->read_rate) != 0 || o->read_rate == 0)
        return bad_value(a, v);
    } else if (strcmp(a, "--byte-interval") == 0) {
      if (parse_seconds(v, &o->byte_interval_s) != 0)
        return bad_value(a, v);
    } else if (strcmp(a, "--upload-size") == 0) {
      if (parse_u64(v, UINT64_C(1) << 30, &o->upload_size) != 0)
        return bad_value(a, v);
    } else if (strcmp(a, "--token-file") == 0) {
      free(c->token);
      if ((c->token = read_first_line(v)) == NULL || c->token[0] == '\0') {
        fprintf(stderr, "narcache-load: %s: no token in it\n", v);
        return 2;
      }
      o->token = c->token;
    } else if (strcmp(a, "--secret-key") == 0) {
      narcache_key_free(o->secret_key);
      if ((o->secret_key = read_secret_key(v)) == NULL) {
        fprintf(stderr, "narcache-load: %s: not a Nix secret key file\n", v);
        return 2;
      }
    } else if (strcmp(a, "--store-dir") == 0) {
      o->store_dir = v;
    } else if (strcmp(a, "--json") == 0) {
      o->json_path = v;
    } else if (strcmp(a, "--max-errors") == 0) {
      if (parse_u64(v, UINT64_MAX, &c->max_errors) != 0)
        return bad_value(a, v);
      c->has_max_errors = 1;
    } else if (strcmp(a, "--seed") == 0) {
      if (parse_u64(v, UINT64_MAX, &n) != 0)
        return bad_value(a, v);
      o->seed = n;
    } else {
      fprintf(stderr, "narcache-load: unknown option %s (see --help)\n", a);
      return 2;
    }
  }
  if (o->url == NULL) {
    fputs(usage_text, stderr);
    return 2;
  }
  if (!any_clients)
    o->clients[KIND_NARINFO] = 25;
  if (o->duration_s == 0 && o->max_requests == 0)
    o->duration_s = 10;
  return 0;
}

/* ---- the URL --------------------------------------------------------------------- */

static int resolve_url(load_run *run, const char *url) {
  if (strncmp(url, "http://", 7) != 0) {
    fprintf(stderr, "narcache-load: %s: only http:// URLs\n", url);
    return -1;
  }
  const char *host = url + 7, *slash = strchr(host, '/');
  size_t authority_len = slash ? (size_t)(slash - host) : strlen(host);
  if (authority_len == 0 || authority_len >= sizeof run->host_header) {
    fprintf(stderr, "narcache-load: %s: no host\n", url);
    return -1;
  }
  memcpy(run->host_header, host, authority_len);
  run->host_header[authority_len] = '\0';
  const char *path = slash ? slash : "";
  size_t path_len = strlen(path);
  while (path_len > 0 && path[path_len - 1] == '/')
    path_len--;
  if (path_len >= sizeof run->prefix || strpbrk(path, " ?#") != NULL) {
    fprintf(stderr, "narcache-load: %s: bad path\n", url);
    return -1;
  }
  memcpy(run->prefix, path, path_len);
  run->prefix[path_len] = '\0';

  char name[300], port[8] = "80";
  const char *a = run->host_header, *colon;
  if (a[0] == '[') {
    const char *close = strchr(a, ']');
    if (close == NULL || (close[1] != '\0' && close[1] != ':'))
      return fprintf(stderr, "narcache-load: %s: bad host\n", url), -1;
    snprintf(name, sizeof name, "%.*s", (int)(close - a - 1), a + 1);
    colon = close[1] == ':' ? close + 1 : NULL;
  } else {
    colon = strrchr(a, ':');
    snprintf(name, sizeof name, "%.*s", (int)(colon ? (size_t)(colon - a) : strlen(a)), a);
  }
  if (colon)
    snprintf(port, sizeof port, "%s", colon + 1);
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(name, port, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "narcache-load: %s: %s\n", url, gai_strerror(rc));
    return -1;
  }
  memcpy(&run->addr, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return 0;
}

/* ---- the run ---------------------------------------------------------------------- */

static load_run the_run;
static uv_signal_t sigint, sigterm;

void load_run_stop(load_run *run) {
  if (run->stopping)
    return;
  run->stopping = 1;
  run->end_ns = load_now_ns();
  uv_close((uv_handle_t *)&run->tick, NULL);
  uv_close((uv_handle_t *)&run->deadline, NULL);
  uv_close((uv_handle_t *)&sigint, NULL);
  uv_close((uv_handle_t *)&sigterm, NULL);
  for (size_t i = 0; i < run->n_clients; i++)
    if (run->clients[i])
      load_client_stop(run->clients[i]);
}

static void on_tick(uv_timer_t *t) { load_progress(t->data, 0); }

static void on_deadline(uv_timer_t *t) { load_run_stop(t->data); }

static void on_signal(uv_signal_t *s, int signum) {
  (void)signum;
  load_run_stop(s->data);
}

/* Thousands of connections need thousands of descriptors. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int start_clients(load_run *run) {
  size_t total = 0;
  for (int k = 0; k < KIND_COUNT; k++)
    total += run->opt->clients[k];
  run->clients = calloc(total ? total : 1, sizeof *run->clients);
  if (run->clients == NULL)
    return -1;
  for (int k = 0; k < KIND_COUNT; k++)
    for (uint32_t i = 0; i < run->opt->clients[k]; i++) {
      size_t index = run->n_clients++;
      if (load_client_start(run, (load_kind)k, index, &run->clients[index]) != 0) {
        fprintf(stderr, "narcache-load: cannot start %s clients%s\n", load_kind_name(k),
                run->n_nar_paths == 0 ? " (they need --paths naming paths in the cache)" : "");
        return -1;
      }
    }
  return 0;
}

static int needs_nar_paths(const load_options *o) {
  for (int k = 0; k < KIND_COUNT; k++)
    if (o->clients[k] && load_kind_needs_paths((load_kind)k))
      return 1;
  return 0;
}

static int write_reports(const load_run *run, const char *json) {
  FILE *text_out = json && strcmp(json, "-") == 0 ? stderr : stdout;
  load_report_text(run, text_out);
  if (json == NULL)
    return 0;
  FILE *out = strcmp(json, "-") == 0 ? stdout : fopen(json, "w");
  if (out == NULL || load_report_json(run, out) != 0 || (out != stdout && fclose(out) != 0)) {
    fprintf(stderr, "narcache-load: cannot write %s\n", json);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  cli c = {.progress = -1};
  load_options *o = &c.opt;
  o->timeout_s = 30;
  o->hit_ratio = 0.1;
  o->read_rate = 10240;
  o->byte_interval_s = 1;
  o->upload_size = 65536;
  o->store_dir = "/nix/store";
  o->seed = uv_hrtime() ^ (uint64_t)getpid() << 32;
  if (narcache_init() < 1) /* before parse_args: it parses keys */
    return 1;
  int rc = parse_args(argc, argv, &c);
  if (rc != 0)
    return rc == 1 ? 0 : 2;
  o->progress = c.progress >= 0 ? c.progress : isatty(STDERR_FILENO);
  raise_fd_limit();

  load_run *run = &the_run;
  run->opt = o;
  run->rng = o->seed ? o->seed : 1;
  if (resolve_url(run, o->url) != 0)
    return 2;
  if (o->paths_file && load_catalog_discover(run) != 0)
    return 1;
  if (!o->paths_file && needs_nar_paths(o)) {
    fprintf(stderr, "narcache-load: closure, slow-read and reset clients need --paths\n");
    return 2;
  }
  run->loop = uv_default_loop();
  uv_timer_init(run->loop, &run->tick);
  uv_timer_init(run->loop, &run->deadline);
  run->tick.data = run->deadline.data = run;
  uv_signal_init(run->loop, &sigint);
  uv_signal_init(run->loop, &sigterm);
  sigint.data = sigterm.data = run;
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  run->start_ns = run->last_tick_ns = load_now_ns();
  if (o->progress)
    uv_timer_start(&run->tick, on_tick, 1000, 1000);
  if (o->duration_s > 0)
    uv_timer_start(&run->deadline, on_deadline, (uint64_t)ceil(o->duration_s * 1000), 0);
  if (start_clients(run) != 0) {
    load_run_stop(run);
    uv_run(run->loop, UV_RUN_DEFAULT);
    return 1;
  }
  uv_run(run->loop, UV_RUN_DEFAULT);
  if (!run->stopping)
    load_run_stop(run);
  uv_run(run->loop, UV_RUN_DEFAULT);
  if (o->progress)
    load_progress(run, 1);
  rc = write_reports(run, o->json_path) == 0 ? 0 : 1;
  uint64_t errors = 0;
  for (int k = 0; k < KIND_COUNT; k++)
    if (!load_kind_is_hostile((load_kind)k))
      errors += load_stats_errors(&run->stats[k]);
  if (rc == 0 && c.has_max_errors && errors > c.max_errors) {
    fprintf(stderr, "narcache-load: %" PRIu64 " errors (at most %" PRIu64 " allowed)\n", errors,
            c.max_errors);
    rc = 1;
  }
  uv_loop_close(run->loop);
  load_catalog_free(&run->catalog);
  free(run->nar_paths);
  free(run->walk.items);
  free(run->clients);
  free(c.token);
  narcache_key_free(o->secret_key);
  narcache_shutdown();
  return rc;
}
