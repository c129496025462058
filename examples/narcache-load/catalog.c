/* The catalog: what the cache holds, learnt from the cache itself before
 * the load starts. The paths given with --paths are looked up
 * (<hash>.narinfo), then their references, transitively, over one
 * blocking keep-alive connection: this is set-up, not load. */
#define _GNU_SOURCE
#include "load.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_PATHS 200000

/* ---- hash part -> catalog index ----------------------------------------------- */

typedef struct index_table {
  size_t *slots; /* index + 1; 0 is empty */
  size_t mask;
} index_table;

static uint64_t hash_string(const char *s) {
  uint64_t h = 1469598103934665603u;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211u;
  return h;
}

static size_t *table_slot(index_table *t, const load_catalog *c, const char *hash) {
  size_t i = (size_t)hash_string(hash) & t->mask;
  while (t->slots[i] != 0 && strcmp(c->paths[t->slots[i] - 1].hash, hash) != 0)
    i = (i + 1) & t->mask;
  return &t->slots[i];
}

/* ---- parsing the --paths file -------------------------------------------------- */

static int is_nix32(char ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z' && ch != 'e' && ch != 'o' &&
                                      ch != 'u' && ch != 't');
}

/* A store path, a base name, a hash part or "<hash>.narinfo": its hash part. */
static int hash_of_line(const char *line, char out[33]) {
  const char *slash = strrchr(line, '/');
  const char *base = slash ? slash + 1 : line;
  if (strlen(base) < 32)
    return -1;
  for (int i = 0; i < 32; i++)
    if (!is_nix32(base[i]))
      return -1;
  if (base[32] != '\0' && base[32] != '-' && base[32] != '.')
    return -1;
  memcpy(out, base, 32);
  out[32] = '\0';
  return 0;
}

static int add_path(load_catalog *c, index_table *t, const char *hash, size_t *index_out) {
  size_t *slot = table_slot(t, c, hash);
  if (*slot != 0) {
    *index_out = *slot - 1;
    return 0;
  }
  if (c->count == MAX_PATHS) {
    fprintf(stderr, "narcache-load: more than %d paths in the closure\n", MAX_PATHS);
    return -1;
  }
  load_path *p = &c->paths[c->count];
  memset(p, 0, sizeof *p);
  memcpy(p->hash, hash, 33);
  *slot = ++c->count;
  *index_out = c->count - 1;
  return 0;
}

/* ---- one blocking HTTP GET ------------------------------------------------------ */

typedef struct fetcher {
  load_run *run;
  int fd;
  response resp;
} fetcher;

static int fetcher_connect(fetcher *f) {
  const struct sockaddr *sa = (const struct sockaddr *)&f->run->addr;
  socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                            : sizeof(struct sockaddr_in);
  f->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (f->fd < 0)
    return -1;
  double t = f->run->opt->timeout_s;
  struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
  setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(f->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(f->fd, sa, len) != 0) {
    close(f->fd);
    f->fd = -1;
    return -1;
  }
  return 0;
}

static int send_all(int fd, const char *p, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* GET prefix/name; the body (up to 1 MiB) lands in f->resp. Returns the
 * status, or -1 with errno-ish trouble reported on stderr. */
static int fetch(fetcher *f, const char *name) {
  char req[1024];
  int n = snprintf(req, sizeof req,
                   "GET %s/%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: narcache-load\r\n\r\n",
                   f->run->prefix, name, f->run->host_header);
  if (n <= 0 || (size_t)n >= sizeof req)
    return -1;
  for (int attempt = 0; attempt < 2; attempt++) {
    if (f->fd < 0 && fetcher_connect(f) != 0)
      break;
    if (response_init(&f->resp, 0, NARCACHE_NARINFO_MAX_BYTES) != 0)
      return -1;
    int sent = send_all(f->fd, req, (size_t)n) == 0;
    char buf[16384];
    /* SO_RCVTIMEO catches silence; this catches a server that never ends */
    uint64_t deadline = load_now_ns() + (uint64_t)(f->run->opt->timeout_s * 1e9);
    while (sent && f->resp.state != RESP_DONE && f->resp.state != RESP_ERROR &&
           load_now_ns() < deadline) {
      ssize_t got = recv(f->fd, buf, sizeof buf, 0);
      if (got < 0 && errno == EINTR)
        continue;
      if (got <= 0) {
        response_eof(&f->resp);
        break;
      }
      response_feed(&f->resp, buf, (size_t)got);
    }
    if (f->resp.state == RESP_DONE) {
      if (!f->resp.keep_alive) {
        close(f->fd);
        f->fd = -1;
      }
      return f->resp.status;
    }
    close(f->fd);
    f->fd = -1;
    if (f->resp.state == RESP_ERROR) {
      fprintf(stderr, "narcache-load: %s: %s\n", name, f->resp.error);
      return -1;
    }
    /* nothing came back: a stale keep-alive connection; one more try */
  }
  fprintf(stderr, "narcache-load: %s: no complete response from the cache within --timeout\n", name);
  return -1;
}

/* ---- discovery ------------------------------------------------------------------- */

static int learn(load_catalog *c, index_table *t, size_t index, const narcache_narinfo *ni,
                 size_t *pending, size_t *npending) {
  size_t len = 0;
  const char *url = narcache_narinfo_url(ni, &len);
  uint64_t file_size = 0;
  if (narcache_narinfo_file_size(ni, &file_size) != 0)
    file_size = 0;
  size_t nrefs = narcache_narinfo_reference_count(ni);
  size_t *refs = nrefs ? malloc(nrefs * sizeof *refs) : NULL;
  char *url_copy = strndup(url, len);
  if ((nrefs && refs == NULL) || url_copy == NULL) {
    free(refs);
    free(url_copy);
    return -1;
  }
  size_t kept = 0;
  for (size_t i = 0; i < nrefs; i++) {
    char hash[33];
    const char *base = narcache_narinfo_reference(ni, i, &len);
    if (hash_of_line(base, hash) != 0 || strcmp(hash, c->paths[index].hash) == 0)
      continue;
    size_t before = c->count, ref;
    if (add_path(c, t, hash, &ref) != 0) {
      free(refs);
      free(url_copy);
      return -1;
    }
    if (c->count > before)
      pending[(*npending)++] = ref;
    refs[kept++] = ref;
  }
  load_path *p = &c->paths[index];
  p->nar_url = url_copy;
  p->file_size = file_size;
  p->refs = refs;
  p->nrefs = kept;
  return 0;
}

static int read_roots(load_catalog *c, index_table *t, const char *file, size_t *pending,
                      size_t *npending) {
  FILE *in = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
  if (in == NULL) {
    fprintf(stderr, "narcache-load: %s: %s\n", file, strerror(errno));
    return -1;
  }
  char line[4096];
  unsigned lineno = 0;
  int rc = 0;
  while (rc == 0 && fgets(line, sizeof line, in)) {
    lineno++;
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0' || line[0] == '#')
      continue;
    char hash[33];
    size_t index, before = c->count;
    if (hash_of_line(line, hash) != 0) {
      fprintf(stderr, "narcache-load: %s:%u: not a store path or hash part\n", file, lineno);
      rc = -1;
    } else if (add_path(c, t, hash, &index) != 0) {
      rc = -1;
    } else if (c->count > before) {
      pending[(*npending)++] = index;
    }
  }
  if (in != stdin)
    fclose(in);
  return rc;
}

/* Drop the paths the cache did not have, and the references to them. */
static void compact(load_run *run) {
  load_catalog *c = &run->catalog;
  size_t *new_index = malloc((c->count ? c->count : 1) * sizeof *new_index);
  size_t kept = 0;
  if (new_index == NULL)
    return;
  for (size_t i = 0; i < c->count; i++) {
    new_index[i] = c->paths[i].nar_url ? kept++ : SIZE_MAX;
  }
  for (size_t i = 0, j = 0; i < c->count; i++) {
    load_path *p = &c->paths[i];
    if (p->nar_url == NULL)
      continue;
    size_t r = 0;
    for (size_t k = 0; k < p->nrefs; k++)
      if (new_index[p->refs[k]] != SIZE_MAX)
        p->refs[r++] = new_index[p->refs[k]];
    p->nrefs = r;
    c->paths[j++] = *p;
  }
  c->count = kept;
  free(new_index);
}

int load_catalog_discover(load_run *run) {
  load_catalog *c = &run->catalog;
  index_table t = {calloc(MAX_PATHS * 2, sizeof(size_t)), MAX_PATHS * 2 - 1};
  size_t *pending = malloc(MAX_PATHS * sizeof *pending), npending = 0, missing = 0;
  c->paths = calloc(MAX_PATHS, sizeof *c->paths);
  fetcher f = {run, -1, {0}};
  narcache_narinfo *ni = NULL;
  int rc = t.slots && pending && c->paths && narcache_narinfo_new(&ni, NULL) == 0 ? 0 : -1;
  if (rc == 0)
    rc = read_roots(c, &t, run->opt->paths_file, pending, &npending);
  for (size_t next = 0; rc == 0 && next < npending; next++) {
    size_t index = pending[next];
    char name[64];
    snprintf(name, sizeof name, "%s.narinfo", c->paths[index].hash);
    int status = fetch(&f, name);
    if (status == 404) {
      missing++;
      continue;
    }
    if (status != 200) {
      if (status > 0)
        fprintf(stderr, "narcache-load: %s: HTTP %d\n", name, status);
      rc = -1;
    } else if (narcache_narinfo_parse(ni, f.resp.body, f.resp.body_len) != 0) {
      fprintf(stderr, "narcache-load: %s: %s\n", name, narcache_narinfo_errmsg(ni));
      rc = -1;
    } else {
      rc = learn(c, &t, index, ni, pending, &npending);
    }
  }
  if (f.fd >= 0)
    close(f.fd);
  response_fini(&f.resp);
  narcache_narinfo_free(ni);
  free(pending);
  free(t.slots);
  if (rc != 0)
    return -1;
  if (missing)
    fprintf(stderr, "narcache-load: %zu of the paths are not in the cache (404)\n", missing);
  compact(run);
  run->nar_paths = malloc((c->count ? c->count : 1) * sizeof *run->nar_paths);
  if (run->nar_paths == NULL)
    return -1;
  for (size_t i = 0; i < c->count; i++)
    run->nar_paths[run->n_nar_paths++] = i;
  return 0;
}

void load_catalog_free(load_catalog *c) {
  for (size_t i = 0; c->paths && i < c->count; i++) {
    free(c->paths[i].nar_url);
    free(c->paths[i].refs);
  }
  free(c->paths);
  c->paths = NULL;
  c->count = 0;
}

/* ---- the closure walk ---------------------------------------------------------------- */

/* Queue the closure of a random path: every narinfo first (Nix asks for
 * all path infos before it downloads), then every NAR. */
static void walk_new_closure(load_run *run) {
  load_catalog *c = &run->catalog;
  size_t root = (size_t)(load_random(&run->rng) % c->count);
  uint8_t *seen = calloc(c->count, 1);
  size_t *order = malloc(c->count * sizeof *order), n = 0;
  if (seen == NULL || order == NULL || (run->walk.cap < c->count * 2 &&
      !(run->walk.items = realloc(run->walk.items, c->count * 2 * sizeof(size_t))))) {
    fprintf(stderr, "narcache-load: out of memory\n");
    abort();
  }
  if (run->walk.cap < c->count * 2)
    run->walk.cap = c->count * 2;
  order[n++] = root;
  seen[root] = 1;
  for (size_t i = 0; i < n; i++) {
    const load_path *p = &c->paths[order[i]];
    for (size_t k = 0; k < p->nrefs; k++)
      if (!seen[p->refs[k]]) {
        seen[p->refs[k]] = 1;
        order[n++] = p->refs[k];
      }
  }
  for (size_t i = 0; i < n; i++) {
    run->walk.items[i] = order[i] * 2;
    run->walk.items[n + i] = order[i] * 2 + 1;
  }
  run->walk.count = 2 * n;
  run->walk.next = 0;
  run->walk.closures++;
  free(seen);
  free(order);
}

size_t load_walk_next(load_run *run, int *is_nar) {
  if (run->walk.next == run->walk.count)
    walk_new_closure(run);
  size_t item = run->walk.items[run->walk.next++];
  *is_nar = (int)(item & 1);
  return item / 2;
}
