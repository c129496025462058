/* narcache-load: a load generator that behaves like fleets of Nix clients
 * (and like the hostile clients a public cache meets), against any binary
 * cache URL. One process, one libuv loop; every simulated client is one
 * TCP connection at a time. */
#ifndef NARCACHE_LOAD_H
#define NARCACHE_LOAD_H

#include <narcache.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

/* ---- what a client does ------------------------------------------------- */

typedef enum load_kind {
  KIND_NARINFO,      /* GET <hash>.narinfo, mostly absent, keep-alive */
  KIND_CLOSURE,      /* narinfo then NAR of every path of a closure */
  KIND_UPLOAD,       /* PUT a fresh NAR, then its narinfo */
  KIND_SLOW_READ,    /* GET a NAR and read it at --read-rate bytes/s */
  KIND_SLOW_HEADERS, /* send a request head one byte per --byte-interval */
  KIND_RESET,        /* GET a NAR, reset the connection part way */
  KIND_HALF_OPEN,    /* send part of a head, then nothing */
  KIND_COUNT
} load_kind;

const char *load_kind_name(load_kind kind);
int load_kind_from_name(const char *name, size_t len); /* -1 if unknown */
/* Whether a request of this kind is the normal traffic whose latency and
 * errors are the result (hostile kinds are the pressure). */
int load_kind_is_hostile(load_kind kind);
/* Whether clients of this kind fetch NARs, so need paths from --paths. */
int load_kind_needs_paths(load_kind kind);

/* ---- outcomes ------------------------------------------------------------- */

typedef enum load_error {
  ERR_CONNECT,    /* connect() failed (refused, no route, out of fds) */
  ERR_TIMEOUT,    /* no complete response within --timeout */
  ERR_RESET,      /* connection reset / broken pipe */
  ERR_EOF,        /* closed before the response was complete */
  ERR_PROTOCOL,   /* a response that is not HTTP/1.1 as it should be */
  ERR_STATUS,     /* a status this request must not get (503, 500, 404 for a NAR...) */
  ERR_CONTENT,    /* body not what the narinfo said (size), narinfo unparsable */
  ERR_NOT_CLOSED, /* hostile client: the server never closed it */
  ERR_LOCAL,      /* out of memory or fds on our side */
  ERR_COUNT
} load_error;

const char *load_error_name(load_error e);

/* ---- statistics ----------------------------------------------------------- */

/* Log-linear latency histogram, microseconds, about 1.5% resolution. */
#define LOAD_HIST_SUB 64
#define LOAD_HIST_BUCKETS (LOAD_HIST_SUB + 40 * LOAD_HIST_SUB)

typedef struct load_hist {
  uint64_t count;
  uint64_t max_us;
  uint64_t buckets[LOAD_HIST_BUCKETS];
} load_hist;

void load_hist_add(load_hist *h, uint64_t us);
uint64_t load_hist_percentile(const load_hist *h, double p); /* 0 <= p <= 100 */
void load_hist_merge(load_hist *into, const load_hist *from);

typedef struct load_stats {
  uint64_t clients;
  uint64_t started;
  uint64_t ok;
  uint64_t errors[ERR_COUNT];
  uint64_t status[600]; /* responses by status code */
  uint64_t bytes_in;    /* response bytes (heads and bodies) */
  uint64_t bytes_out;   /* request bytes */
  uint64_t retries;     /* requests resent after a keep-alive connection closed */
  load_hist latency;    /* of requests that succeeded */
} load_stats;

uint64_t load_stats_errors(const load_stats *s);

/* ---- the catalog: store paths learnt from the cache ------------------------ */

typedef struct load_path {
  char hash[33];     /* hash part */
  char *nar_url;     /* the narinfo's URL: where the NAR is, relative to the cache */
  uint64_t file_size; /* FileSize, 0 if the narinfo has none */
  size_t *refs;      /* indices of references into the catalog */
  size_t nrefs;
} load_path;

typedef struct load_catalog {
  load_path *paths;
  size_t count;
} load_catalog;

/* ---- options and the run -------------------------------------------------- */

typedef struct load_options {
  const char *url;        /* http://HOST[:PORT][/PREFIX] */
  uint32_t clients[KIND_COUNT];
  uint64_t max_requests;  /* 0: no bound */
  double duration_s;      /* 0: no bound */
  double timeout_s;       /* one request (hostile: until the server closes) */
  double hit_ratio;       /* narinfo storm: share of hashes that exist */
  uint64_t read_rate;     /* slow-read bytes/s */
  double byte_interval_s; /* slow-headers */
  uint64_t upload_size;   /* bytes of file in each uploaded NAR */
  const char *paths_file; /* store paths, hash parts or <hash>.narinfo names */
  const char *token;      /* Authorization: Bearer */
  narcache_key *secret_key; /* signs uploaded narinfo */
  const char *store_dir;  /* of uploaded paths (default /nix/store) */
  const char *json_path;  /* NULL, "-" or a file */
  int progress;           /* 1: a line a second on stderr */
  uint64_t seed;
} load_options;

typedef struct load_client load_client;

typedef struct load_run {
  uv_loop_t *loop;
  const load_options *opt;
  struct sockaddr_storage addr;
  char host_header[300];
  char prefix[512]; /* URL path prefix without the final '/' */
  load_catalog catalog;
  size_t *nar_paths; /* catalog indices of paths whose NAR can be fetched */
  size_t n_nar_paths;
  /* closure clients share one walk, like one Nix process with N connections */
  struct {
    size_t *items; /* catalog index * 2 + (0: narinfo, 1: NAR) */
    size_t count, next, cap;
    uint64_t closures;
  } walk;
  load_stats stats[KIND_COUNT];
  load_client **clients;
  size_t n_clients;
  uint64_t completed; /* normal requests finished (ok or not) */
  uint64_t start_ns;
  uint64_t end_ns;
  int stopping;
  uv_timer_t tick;     /* progress line */
  uv_timer_t deadline; /* --duration */
  uint64_t last_tick_ns;
  uint64_t last_tick_done;
  uint64_t rng;
} load_run;

uint64_t load_random(uint64_t *state);
void load_random_hash(uint64_t *state, char out[33]);

/* catalog.c: discover the store paths of --paths-file from the cache
 * itself (its narinfos, and their references, transitively). Blocks, runs
 * its own loop. Returns 0, or -1 with a message on stderr. */
int load_catalog_discover(load_run *run);
void load_catalog_free(load_catalog *c);
/* The next request of the shared closure walk. */
size_t load_walk_next(load_run *run, int *is_nar);

/* main.c: end the run (bound reached, signal): every client stops. */
void load_run_stop(load_run *run);

/* client.c */
int load_client_start(load_run *run, load_kind kind, size_t index, load_client **out);
void load_client_stop(load_client *c); /* closes; the client frees itself */
size_t load_clients_open(void);

/* report.c */
void load_progress(load_run *run, int final);
void load_report_text(const load_run *run, FILE *out);
int load_report_json(const load_run *run, FILE *out);

/* response.c: an incremental HTTP/1.1 response parser. */
typedef enum response_state {
  RESP_HEAD,
  RESP_BODY_LENGTH,
  RESP_CHUNK_SIZE,
  RESP_CHUNK_DATA,
  RESP_CHUNK_END,
  RESP_TRAILERS,
  RESP_BODY_EOF,
  RESP_DONE,
  RESP_ERROR
} response_state;

typedef struct response {
  response_state state;
  int head_only;      /* the request was HEAD */
  int status;
  int keep_alive;
  int has_length;
  uint64_t content_length;
  uint64_t remaining;  /* of the body or of the current chunk */
  uint64_t body_bytes; /* body bytes seen so far */
  char head[16384];
  size_t head_len;
  const char *error;
  /* optional: the first body_cap bytes of the body are kept in `body` */
  char *body;
  size_t body_len, body_cap, body_alloc;
} response;

/* Ready for the next response; keeps up to body_cap body bytes. Returns 0,
 * or -1 when that memory cannot be had. */
int response_init(response *r, int head_only, size_t body_cap);
void response_fini(response *r);
/* Feed bytes; returns bytes consumed (stops at RESP_DONE, so bytes after a
 * response stay for the next one). */
size_t response_feed(response *r, const char *data, size_t len);
/* The server closed the connection: completes a close-delimited body. */
void response_eof(response *r);

uint64_t load_now_ns(void);

#endif
