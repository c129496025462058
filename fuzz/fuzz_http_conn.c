/* The server's HTTP connection state machine (server_conn.c) on raw byte
 * streams: one connection per input, driven from this thread.
 *
 * The connection is the server end of an AF_UNIX socketpair (an in-kernel
 * byte stream: no listener, no network) handed to narcache__srv_conn_start;
 * the harness is the client on the other end and turns the server's libuv
 * loop itself (UV_RUN_NOWAIT), so store tasks, blocked writes, pipelining
 * and closes all run through the real code paths over an in-memory store.
 *
 * Input layout: 4 header bytes, then the client's bytes.
 *   [0] bits 0-1, how the client ends: 0 half-close (shutdown SHUT_WR)
 *       after everything was sent, reading all; 1 the same but reading only
 *       a few bytes per turn (the server's writes block and resume);
 *       2 close the socket once everything was sent (responses in flight
 *       are cut off); 3 close after sending a prefix (header [2] picks it).
 *       bits 2-7 and [1]: the write-chunk pattern (sizes 1..256, varying).
 *   [2] prefix length for mode 3 (a fraction of the input), read size for
 *       mode 1.
 *   [3] seed of the chunk sizes.
 * The store holds a nix-cache-info, a narinfo and listing, a 70 KiB NAR
 * behind a file descriptor (sendfile/splice path), a 5 KiB NAR in memory,
 * a NAR whose reader fails after its first bytes (a response cut short), a
 * 300 KiB NAR whose body comes as a STREAM segment from a pipe that this
 * harness feeds a piece per turn (the server waits for it on the loop; an
 * input whose seed byte is 7 mod 8 stops feeding half-way, and the
 * response must be cut after the segment's wait_ms), the same bytes as
 * BYTES segments copied out of such a pipe with WAIT segments while it is
 * empty (as the s3 store's https ring), a log, an object that is "unavailable" (503) and one that fails (500).
 * Uploads are taken into memory with the token below and can be read back
 * (a narinfo upload needs its NAR there) until the next input.
 *
 * Checked against the access records the server reports (one per request,
 * in order): the bytes on the wire parse as HTTP/1.1 responses, one final
 * response per record (after optional 100 Continue) with the record's
 * status, every final response has exactly one Content-Length (a 304 may
 * have none), its body has that length (none after HEAD or for 304) and equals the object (200) or
 * the Content-Range slice of it (206); body_bytes matches; a response cut
 * short (aborted) can only be the last thing sent; nothing follows
 * "Connection: close"; no bytes without a record. When the client neither
 * closed early nor was flooded, the transcript must be complete. The
 * connection must close by itself (within 20 s). */
#define _GNU_SOURCE
#include <narcache.h>

#include "server_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "fuzz_http_conn: invariant failed at line %d: %s\n",   \
              __LINE__, #cond);                                              \
      abort();                                                               \
    }                                                                        \
  } while (0)

#define HEADER 4
#define CAPTURE_MAX (16u << 20) /* transcript kept for checking */
#define DEADLINE_NS (20ull * 1000 * 1000 * 1000) /* a connection must end by itself */
#define MAX_RECORDS 4096

#define HASH_OK "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0"
#define HASH_UNAVAILABLE "00000000000000000000000000000000"
#define HASH_FAILING "11111111111111111111111111111111"
#define TOKEN "fuzz-token-0123456789abcdef"

/* ---- the in-memory store ---------------------------------------------------- */

typedef struct object {
  int kind;
  const char *name;
  const char *path; /* the request path that names it */
  const uint8_t *data;
  size_t len;
  int via_fd;    /* served from a memfd: sendfile/splice */
  int breaks_at; /* the reader fails after this many bytes (0: never) */
  int streamed;  /* the body comes as STREAM (1) or BYTES and WAIT (2) segments */
} object;

static uint8_t big_nar[70 * 1024];
static uint8_t small_nar[5 * 1024];
static uint8_t stream_nar[300 * 1024];
static const char cache_info[] = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n";
static const char narinfo_text[] =
    "StorePath: /nix/store/" HASH_OK "-f1\nURL: nar/big.nar\nCompression: none\n"
    "NarHash: sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa\nNarSize: 120\n"
    "References: \n";
static const char listing[] = "{\"version\":1,\"root\":{\"type\":\"regular\",\"size\":5,"
                              "\"narOffset\":96}}";
static const char log_text[] = "building...\ndone\n";

static object objects[] = {
    {NARCACHE_OBJECT_CACHE_INFO, "", "/nix-cache-info", (const uint8_t *)cache_info,
     sizeof cache_info - 1, 0, 0, 0},
    {NARCACHE_OBJECT_NARINFO, HASH_OK, "/" HASH_OK ".narinfo", (const uint8_t *)narinfo_text,
     sizeof narinfo_text - 1, 0, 0, 0},
    {NARCACHE_OBJECT_LISTING, HASH_OK, "/" HASH_OK ".ls", (const uint8_t *)listing,
     sizeof listing - 1, 0, 0, 0},
    {NARCACHE_OBJECT_NAR, "big.nar", "/nar/big.nar", big_nar, sizeof big_nar, 1, 0, 0},
    {NARCACHE_OBJECT_NAR, "small.nar.zst", "/nar/small.nar.zst", small_nar, sizeof small_nar, 0,
     0, 0},
    /* larger than what the server reads whole before the head (256 KiB):
     * its reader fails once the body is on its way */
    {NARCACHE_OBJECT_NAR, "broken.nar", "/nar/broken.nar", NULL, 600 * 1024, 0, 400 * 1024, 0},
    {NARCACHE_OBJECT_NAR, "stream.nar", "/nar/stream.nar", stream_nar, sizeof stream_nar, 0, 0,
     1},
    {NARCACHE_OBJECT_NAR, "wait.nar", "/nar/wait.nar", stream_nar, sizeof stream_nar, 0, 0, 2},
    {NARCACHE_OBJECT_LOG, HASH_OK "-f1.drv", "/log/" HASH_OK "-f1.drv",
     (const uint8_t *)log_text, sizeof log_text - 1, 0, 0, 0},
};
#define N_OBJECTS (sizeof objects / sizeof objects[0])

static int big_nar_fd = -1;

static const object *find_object(int kind, const char *name, size_t len) {
  for (size_t i = 0; i < N_OBJECTS; i++)
    if (objects[i].kind == kind && strlen(objects[i].name) == len &&
        memcmp(objects[i].name, name, len) == 0)
      return &objects[i];
  return NULL;
}

static const object *object_at_path(const char *path, size_t len) {
  for (size_t i = 0; i < N_OBJECTS; i++)
    if (strlen(objects[i].path) == len && memcmp(objects[i].path, path, len) == 0)
      return &objects[i];
  return NULL;
}

typedef struct breaking_reader {
  const object *o;
} breaking_reader;

/* Bytes made up from their offset (the object has no `data`). */
static uint8_t generated_byte(uint64_t offset) { return (uint8_t)(offset * 2654435761u >> 13); }

static int breaking_read(void *ctx, uint64_t offset, void *buf, size_t len, size_t *got) {
  const object *o = ((breaking_reader *)ctx)->o;
  if (offset >= (uint64_t)o->breaks_at)
    return NARCACHE_EIO;
  size_t n = (size_t)o->breaks_at - (size_t)offset;
  n = n < len ? n : len;
  for (size_t i = 0; i < n; i++)
    ((uint8_t *)buf)[i] = generated_byte(offset + i);
  *got = n;
  return 0;
}

static void breaking_close(void *ctx) { free(ctx); }

/* Streamed bodies: each open reader has a pipe; the harness writes the
 * object's bytes into it a piece per turn (feed_streams). A segment asked
 * at another offset than the pipe's next byte gets a new pipe fed from
 * there, as the s3 store starts a new ranged GET. Readers are used on pool
 * threads and fed on this one: locked. */
#define MAX_STREAMS 64
#define STREAM_WAIT_MS 50
typedef struct stream_reader {
  int fds[2];        /* -1: none yet */
  uint64_t next;     /* offset of the pipe's next unread byte (the reader's view) */
  uint64_t fed;      /* offset of the next byte to write into it */
  int in_table;
  int by_wait;       /* lend what the pipe had as BYTES, WAIT while it is empty */
  uint64_t lent_at;  /* by_wait: NAR offset of lent[0] */
  size_t lent_len;
  uint8_t lent[16384];
} stream_reader;

static stream_reader *streams[MAX_STREAMS];
static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t feed_piece = 16384;
static uint64_t feed_stops_at = UINT64_MAX;

static void stream_drop_pipe(stream_reader *r) {
  if (r->fds[0] >= 0) {
    close(r->fds[0]);
    close(r->fds[1]);
  }
  r->fds[0] = r->fds[1] = -1;
}

static int stream_read(void *ctx, uint64_t offset, void *buf, size_t len, size_t *got) {
  (void)ctx;
  if (offset >= sizeof stream_nar)
    return NARCACHE_EIO;
  size_t n = sizeof stream_nar - (size_t)offset;
  n = n < len ? n : len;
  memcpy(buf, stream_nar + offset, n);
  *got = n;
  return 0;
}

/* A fresh pipe fed from `offset` (lock held). */
static int stream_restart(stream_reader *r, uint64_t offset) {
  stream_drop_pipe(r);
  if (pipe2(r->fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    r->fds[0] = r->fds[1] = -1;
    return NARCACHE_EUNAVAIL;
  }
  r->fed = r->next = offset;
  r->lent_at = offset;
  r->lent_len = 0;
  return 0;
}

/* The s3 store's https way (lock held): bytes copied out of the pipe are
 * lent as BYTES; with the pipe empty, WAIT on it. */
static int wait_mode_segment(stream_reader *r, uint64_t offset, narcache_nar_segment *seg) {
  seg->nar_offset = offset;
  seg->wait_ms = STREAM_WAIT_MS;
  if (offset < r->lent_at || offset > r->lent_at + r->lent_len || r->fds[0] < 0) {
    int rc = stream_restart(r, offset); /* a jump: a new "GET" */
    if (rc < 0)
      return rc;
  }
  if (offset == r->lent_at + r->lent_len) { /* all lent bytes taken: refill */
    ssize_t n = read(r->fds[0], r->lent, sizeof r->lent);
    if (n == 0 || (n < 0 && errno != EAGAIN))
      return NARCACHE_EIO;
    r->lent_at = offset;
    r->lent_len = n > 0 ? (size_t)n : 0;
    r->next = offset + r->lent_len;
    if (n < 0) {
      seg->kind = NARCACHE_NAR_SEG_WAIT;
      seg->length = 0;
      seg->data = NULL;
      seg->fd = r->fds[0];
      return 1;
    }
  }
  seg->kind = NARCACHE_NAR_SEG_BYTES;
  seg->data = r->lent + (offset - r->lent_at);
  seg->length = r->lent_at + r->lent_len - offset;
  seg->fd = -1;
  return 1;
}

static int stream_segment(void *ctx, uint64_t offset, narcache_nar_segment *seg) {
  stream_reader *r = ctx;
  if (offset >= sizeof stream_nar)
    return NARCACHE_EINVAL;
  pthread_mutex_lock(&streams_lock);
  if (r->by_wait) {
    CHECK(seg->version >= 3); /* the server takes WAIT segments */
    int rc = wait_mode_segment(r, offset, seg);
    pthread_mutex_unlock(&streams_lock);
    return rc;
  }
  /* Where the consumer is now tells how much it took from the pipe. */
  if (r->fds[0] < 0 || offset != r->next) {
    int pending = 0;
    if (r->fds[0] >= 0 && offset > r->next && offset <= r->fed)
      pending = 1; /* read on from the same pipe: the bytes between were taken */
    if (!pending) {
      stream_drop_pipe(r);
      if (pipe2(r->fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        r->fds[0] = r->fds[1] = -1;
        pthread_mutex_unlock(&streams_lock);
        return NARCACHE_EUNAVAIL;
      }
      r->fed = offset;
    }
    r->next = offset;
  }
  seg->kind = NARCACHE_NAR_SEG_STREAM;
  seg->nar_offset = offset;
  seg->length = sizeof stream_nar - offset;
  seg->data = NULL;
  seg->fd = r->fds[0];
  seg->wait_ms = STREAM_WAIT_MS;
  pthread_mutex_unlock(&streams_lock);
  return 1;
}

static void stream_close(void *ctx) {
  stream_reader *r = ctx;
  pthread_mutex_lock(&streams_lock);
  for (size_t i = 0; i < MAX_STREAMS; i++)
    if (streams[i] == r)
      streams[i] = NULL;
  stream_drop_pipe(r);
  pthread_mutex_unlock(&streams_lock);
  free(r);
}

static int stream_open(narcache_reader *out, int by_wait) {
  stream_reader *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NARCACHE_ENOMEM;
  r->fds[0] = r->fds[1] = -1;
  r->by_wait = by_wait;
  pthread_mutex_lock(&streams_lock);
  for (size_t i = 0; i < MAX_STREAMS && !r->in_table; i++)
    if (streams[i] == NULL) {
      streams[i] = r;
      r->in_table = 1;
    }
  pthread_mutex_unlock(&streams_lock);
  if (!r->in_table) {
    free(r);
    return NARCACHE_EUNAVAIL;
  }
  out->size = sizeof stream_nar;
  out->fd = -1;
  out->read = stream_read;
  out->segment = stream_segment;
  out->close = stream_close;
  out->ctx = r;
  return 0;
}

/* One piece into every open stream's pipe; 1 if anything was written. */
static int feed_streams(void) {
  int fed = 0;
  pthread_mutex_lock(&streams_lock);
  for (size_t i = 0; i < MAX_STREAMS; i++) {
    stream_reader *r = streams[i];
    if (r == NULL || r->fds[1] < 0 || r->fed >= sizeof stream_nar || r->fed >= feed_stops_at)
      continue;
    size_t n = sizeof stream_nar - (size_t)r->fed;
    n = n < feed_piece ? n : feed_piece;
    ssize_t w = write(r->fds[1], stream_nar + r->fed, n);
    if (w > 0) {
      r->fed += (uint64_t)w;
      fed = 1;
    }
  }
  pthread_mutex_unlock(&streams_lock);
  return fed;
}

/* Objects uploaded during the current input (a narinfo upload is only
 * taken when its NAR is there, so the store must keep them); dropped
 * before the next input. Store calls run on pool threads: locked. */
typedef struct stored {
  int kind;
  char name[256];
  size_t name_len;
  uint8_t *data;
  size_t len;
} stored;

#define MAX_STORED 32
static stored uploaded[MAX_STORED];
static size_t n_uploaded;
static pthread_mutex_t uploaded_lock = PTHREAD_MUTEX_INITIALIZER;

static void forget_uploads(void) {
  pthread_mutex_lock(&uploaded_lock);
  for (size_t i = 0; i < n_uploaded; i++)
    free(uploaded[i].data);
  n_uploaded = 0;
  pthread_mutex_unlock(&uploaded_lock);
}

/* 1 with the reader filled from an uploaded copy, 0 if none, or an error. */
static int open_uploaded(int kind, const char *name, size_t len, narcache_reader *out) {
  int rc = 0;
  pthread_mutex_lock(&uploaded_lock);
  for (size_t i = n_uploaded; i-- > 0;) /* the newest copy wins */
    if (uploaded[i].kind == kind && uploaded[i].name_len == len &&
        memcmp(uploaded[i].name, name, len) == 0) {
      rc = narcache_reader_init_memory(out, uploaded[i].data, uploaded[i].len);
      rc = rc < 0 ? rc : 1;
      break;
    }
  pthread_mutex_unlock(&uploaded_lock);
  return rc;
}

static int mem_open(void *ctx, int kind, const char *name, size_t len, narcache_reader *out) {
  (void)ctx;
  int found = open_uploaded(kind, name, len, out);
  if (found != 0)
    return found < 0 ? found : 0;
  if (kind == NARCACHE_OBJECT_NARINFO && len == 32 && memcmp(name, HASH_UNAVAILABLE, 32) == 0)
    return NARCACHE_EUNAVAIL;
  if (kind == NARCACHE_OBJECT_NARINFO && len == 32 && memcmp(name, HASH_FAILING, 32) == 0)
    return NARCACHE_EIO;
  const object *o = find_object(kind, name, len);
  if (o == NULL)
    return NARCACHE_ENOTFOUND;
  if (o->via_fd) {
    int fd = dup(big_nar_fd);
    if (fd < 0)
      return NARCACHE_EUNAVAIL;
    narcache_reader_init_fd(out, fd, 0, o->len);
    return 0;
  }
  if (o->streamed)
    return stream_open(out, o->streamed == 2);
  if (o->breaks_at) {
    breaking_reader *b = malloc(sizeof *b);
    if (b == NULL)
      return NARCACHE_ENOMEM;
    b->o = o;
    out->size = o->len;
    out->fd = -1;
    out->read = breaking_read;
    out->close = breaking_close;
    out->ctx = b;
    return 0;
  }
  return narcache_reader_init_memory(out, o->data, o->len);
}

typedef struct mem_upload {
  stored object;
  uint64_t size;
} mem_upload;

static int mem_upload_begin(void *ctx, int kind, const char *name, size_t len, uint64_t size,
                            void **upload) {
  (void)ctx;
  CHECK(len < sizeof ((stored *)0)->name && size <= (1u << 20)); /* checked by the server */
  mem_upload *u = calloc(1, sizeof *u);
  if (u == NULL || (u->object.data = malloc(size ? size : 1)) == NULL) {
    free(u);
    return NARCACHE_ENOMEM;
  }
  u->object.kind = kind;
  memcpy(u->object.name, name, len);
  u->object.name_len = len;
  u->size = size;
  *upload = u;
  return 0;
}

static int mem_upload_write(void *upload, const void *data, size_t len) {
  mem_upload *u = upload;
  CHECK(len <= u->size - u->object.len); /* the server never writes past the size */
  memcpy(u->object.data + u->object.len, data, len);
  u->object.len += len;
  return 0;
}

static int mem_upload_commit(void *upload) {
  mem_upload *u = upload;
  CHECK(u->object.len == u->size); /* only complete bodies are committed */
  int rc = NARCACHE_EUNAVAIL;
  pthread_mutex_lock(&uploaded_lock);
  if (n_uploaded < MAX_STORED) {
    uploaded[n_uploaded++] = u->object;
    u->object.data = NULL;
    rc = 0;
  }
  pthread_mutex_unlock(&uploaded_lock);
  free(u->object.data);
  free(u);
  return rc;
}

static void mem_upload_abort(void *upload) {
  mem_upload *u = upload;
  free(u->object.data);
  free(u);
}

static int mem_probe(void *ctx) {
  (void)ctx;
  return 0;
}

/* ---- the server, made once ----------------------------------------------- */

typedef struct record {
  char method[16];
  char target[128];
  int status;
  uint64_t body_bytes;
  int aborted;
} record;

static record records[MAX_RECORDS];
static size_t n_records;
static size_t dropped_records;

static void on_access(void *userdata, const narcache_access_record *r) {
  (void)userdata;
  CHECK(r->version == 1 && r->method != NULL && r->target != NULL && r->route != NULL);
  if (n_records == MAX_RECORDS) {
    dropped_records++;
    return;
  }
  record *rec = &records[n_records++];
  snprintf(rec->method, sizeof rec->method, "%s", r->method);
  snprintf(rec->target, sizeof rec->target, "%s", r->target);
  rec->status = r->status;
  rec->body_bytes = r->body_bytes;
  rec->aborted = r->aborted;
}

static narcache_server *server;
static uv_loop_t *loop;

static void fill_pseudo_random(uint8_t *p, size_t n, uint32_t x) {
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    p[i] = (uint8_t)x;
  }
}

static void make_server(void) {
  fill_pseudo_random(big_nar, sizeof big_nar, 0x12345u);
  fill_pseudo_random(small_nar, sizeof small_nar, 0x6789u);
  fill_pseudo_random(stream_nar, sizeof stream_nar, 0xabcdu);
  big_nar_fd = memfd_create("fuzz-big-nar", MFD_CLOEXEC);
  CHECK(big_nar_fd >= 0);
  CHECK(write(big_nar_fd, big_nar, sizeof big_nar) == (ssize_t)sizeof big_nar);

  static const narcache_store_methods methods = {.version = NARCACHE_STORE_METHODS_VERSION,
                                                 .open = mem_open,
                                                 .upload_begin = mem_upload_begin,
                                                 .upload_write = mem_upload_write,
                                                 .upload_commit = mem_upload_commit,
                                                 .upload_abort = mem_upload_abort,
                                                 .probe = mem_probe};
  narcache_store *store = NULL;
  CHECK(narcache_store_new(&store, &methods, NULL) == 0);
  CHECK(narcache_server_new(&server, NULL, store) == 0);
  narcache_server_hooks hooks = {0};
  hooks.version = NARCACHE_SERVER_HOOKS_VERSION;
  hooks.access = on_access;
  CHECK(narcache_server_set_hooks(server, &hooks, NULL) == 0);
  CHECK(narcache_server_set_option(server, NARCACHE_OPT_MAX_UPLOAD_BYTES, 1 << 20) == 0);
  CHECK(narcache_server_set_option(server, NARCACHE_OPT_PROBE_INTERVAL_MS, 3600000) == 0);
  static const char tokens_text[] = "fuzz write " TOKEN "\n";
  narcache_tokens *tokens = NULL;
  CHECK(narcache_tokens_parse(&tokens, tokens_text, sizeof tokens_text - 1, NULL, 0) == 0);
  CHECK(narcache_server_set_tokens(server, tokens) == 0);
  narcache_key *key = NULL;
  CHECK(narcache_key_generate(&key, "fuzz-1", 6) == 0);
  CHECK(narcache_server_set_upload_keys(server, NULL, 0, key) == 0);
  /* start() needs a listener; nothing ever connects to it. */
  char path[96];
  snprintf(path, sizeof path, "unix:/tmp/narcache-fuzz-conn-%ld.sock", (long)getpid());
  CHECK(narcache_server_listen(server, path, 0) == 0);
  unlink(path + 5);
  CHECK(narcache_server_start(server) == 0);
  loop = server->loop;
  uv_run(loop, UV_RUN_NOWAIT);
}

/* ---- the client ---------------------------------------------------------- */

typedef struct transcript {
  uint8_t *p;
  size_t len, cap;
  int overflowed;
} transcript;

static void keep(transcript *t, const uint8_t *p, size_t n) {
  if (t->overflowed || t->len + n > CAPTURE_MAX) {
    t->overflowed = 1;
    return;
  }
  if (t->len + n > t->cap) {
    size_t cap = t->cap ? t->cap : 65536;
    while (cap < t->len + n)
      cap *= 2;
    uint8_t *grown = realloc(t->p, cap);
    CHECK(grown != NULL);
    t->p = grown;
    t->cap = cap;
  }
  memcpy(t->p + t->len, p, n);
  t->len += n;
}

typedef struct chunker {
  uint32_t x;
  unsigned base;
} chunker;

static size_t next_chunk(chunker *c, size_t left) {
  c->x ^= c->x << 13, c->x ^= c->x >> 17, c->x ^= c->x << 5;
  size_t n = 1 + (c->base + (c->x & 0xff)) % 256;
  if (c->base == 0)
    n = 1; /* byte by byte */
  return n < left ? n : left;
}

/* Read what is there; returns -1 at EOF or error, else bytes read. */
static ssize_t drain(int fd, transcript *t, size_t at_most) {
  uint8_t buf[65536];
  size_t total = 0;
  while (total < at_most) {
    size_t want = at_most - total < sizeof buf ? at_most - total : sizeof buf;
    ssize_t n = recv(fd, buf, want, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (n <= 0)
      return total > 0 ? (ssize_t)total : -1;
    keep(t, buf, (size_t)n);
    total += (size_t)n;
  }
  return (ssize_t)total;
}

/* ---- checking the transcript ---------------------------------------------- */

static const uint8_t *find_crlfcrlf(const uint8_t *p, size_t len) {
  for (size_t i = 0; i + 4 <= len; i++)
    if (memcmp(p + i, "\r\n\r\n", 4) == 0)
      return p + i;
  return NULL;
}

/* Value of header `name` (case-insensitive) in [head, end); count found. */
static const char *header_value(const uint8_t *head, const uint8_t *end, const char *name,
                                size_t *value_len, int *count) {
  const char *found = NULL;
  size_t nlen = strlen(name);
  *count = 0;
  const uint8_t *line = head;
  while (line < end) {
    const uint8_t *eol = memchr(line, '\r', (size_t)(end - line));
    if (eol == NULL)
      eol = end;
    if ((size_t)(eol - line) > nlen + 1 && strncasecmp((const char *)line, name, nlen) == 0 &&
        line[nlen] == ':') {
      const uint8_t *v = line + nlen + 1;
      while (v < eol && *v == ' ')
        v++;
      found = (const char *)v;
      *value_len = (size_t)(eol - v);
      (*count)++;
    }
    line = eol + 2;
  }
  return found;
}

static uint64_t parse_u64(const char *s, size_t len, int *ok) {
  uint64_t v = 0;
  *ok = len > 0 && len <= 19;
  for (size_t i = 0; *ok && i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      *ok = 0;
    else
      v = v * 10 + (uint64_t)(s[i] - '0');
  }
  return v;
}

/* The body of a 200 or 206 answer to GET `target` must be the object (or
 * its Content-Range slice). Targets with a query or escapes are skipped. */
static void check_content(const record *r, const uint8_t *head, const uint8_t *head_end,
                          const uint8_t *body, uint64_t body_len) {
  if (strcmp(r->method, "GET") != 0)
    return;
  const object *o = object_at_path(r->target, strlen(r->target));
  if (o == NULL || o->data == NULL)
    return;
  if (r->status == 200) {
    CHECK(body_len == o->len && memcmp(body, o->data, o->len) == 0);
  } else if (r->status == 206) {
    size_t vlen = 0;
    int count = 0;
    const char *v = header_value(head, head_end, "Content-Range", &vlen, &count);
    CHECK(count == 1 && vlen > 6 && memcmp(v, "bytes ", 6) == 0);
    const char *dash = memchr(v, '-', vlen), *slash = memchr(v, '/', vlen);
    CHECK(dash != NULL && slash != NULL && dash < slash);
    int ok1, ok2, ok3;
    uint64_t first = parse_u64(v + 6, (size_t)(dash - v - 6), &ok1);
    uint64_t last = parse_u64(dash + 1, (size_t)(slash - dash - 1), &ok2);
    uint64_t total = parse_u64(slash + 1, (size_t)(v + vlen - slash - 1), &ok3);
    CHECK(ok1 && ok2 && ok3 && first <= last && last < total && total == o->len);
    CHECK(body_len == last - first + 1 && memcmp(body, o->data + first, body_len) == 0);
  }
}

/* Walk the responses; `complete` demands that every record was answered
 * in full and nothing else was sent. */
static void check_transcript(const transcript *t, int complete) {
  static const uint8_t nothing[1];
  const uint8_t *p = t->len ? t->p : nothing, *end = p + t->len;
  size_t i = 0;
  int closed = 0;
  for (; i < n_records && p < end; i++) {
    const record *r = &records[i];
    CHECK(!closed); /* bytes after Connection: close */
    /* interim 100 Continue answers to uploads */
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    while ((size_t)(end - p) >= sizeof cont - 1 && memcmp(p, cont, sizeof cont - 1) == 0) {
      CHECK(strcmp(r->method, "PUT") == 0);
      p += sizeof cont - 1;
    }
    if (p == end)
      break;
    const uint8_t *head_end = find_crlfcrlf(p, (size_t)(end - p));
    if (head_end == NULL) { /* a head cut short: only at the very end */
      CHECK(!complete || r->status == 0);
      p = end;
      break;
    }
    CHECK(head_end - p >= 15 && memcmp(p, "HTTP/1.1 ", 9) == 0 && p[12] == ' ');
    int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    CHECK(status == r->status && status >= 200 && status <= 599);
    size_t vlen = 0;
    int count = 0;
    const char *v = header_value(p, head_end, "Content-Length", &vlen, &count);
    /* A 304 has no content and need not say a length (RFC 9110 8.6). */
    CHECK(count == 1 || (count == 0 && status == 304));
    int ok = count == 0;
    uint64_t length = count == 0 ? 0 : parse_u64(v, vlen, &ok);
    CHECK(ok);
    int conn_count = 0;
    size_t clen = 0;
    const char *conn = header_value(p, head_end, "Connection", &clen, &conn_count);
    closed = conn != NULL && clen == 5 && strncasecmp(conn, "close", 5) == 0;
    uint64_t body_len = strcmp(r->method, "HEAD") == 0 || status == 304 ? 0 : length;
    const uint8_t *body = head_end + 4;
    uint64_t have = (uint64_t)(end - body);
    if (getenv("NARCACHE_FUZZ_VERBOSE") != NULL)
      fprintf(stderr, "response %zu: %s %s status %d length %llu body %llu have %llu%s\n", i,
              r->method, r->target, status, (unsigned long long)length,
              (unsigned long long)body_len, (unsigned long long)have,
              r->aborted ? " aborted" : "");
    if (have < body_len || r->aborted) {
      /* cut short: the last thing on the wire, and reported as aborted */
      CHECK(!complete || r->aborted);
      CHECK(have <= body_len);
      CHECK(r->body_bytes <= body_len);
      p = end;
      i++;
      break;
    }
    CHECK(r->body_bytes == body_len);
    check_content(r, p, head_end, body, body_len);
    p = body + body_len;
  }
  if (complete) {
    CHECK(p == end); /* no bytes without a record */
    for (; i < n_records; i++) /* no head reached the client */
      CHECK(records[i].status == 0 || records[i].aborted);
  }
}

/* ---- the target ------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < HEADER)
    return 0;
  if (server == NULL)
    make_server();
  forget_uploads();
  n_records = dropped_records = 0;
  int mode = data[0] & 3;
  chunker ch = {0x9e3779b9u ^ data[3], (unsigned)(data[0] >> 2) + data[1]};
  const uint8_t *in = data + HEADER;
  size_t in_len = size - HEADER;
  size_t to_send = mode == 3 ? in_len * data[2] / 256 : in_len;
  size_t read_size = mode == 1 ? 512 + data[2] * 256u : SIZE_MAX;
  feed_piece = 4096 + (size_t)data[3] * 256u;
  feed_stops_at = data[3] % 8 == 7 ? sizeof stream_nar / 2 : UINT64_MAX;

  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  CHECK(narcache__srv_conn_start(server, sv[0], "fuzz") == 0);
  int client = sv[1];
  int writing = 1, client_closed = 0, server_gone = 0;
  size_t sent = 0;
  transcript t = {0};
  uint64_t started = uv_hrtime();
  for (;;) {
    CHECK(uv_hrtime() - started < DEADLINE_NS); /* the connection must end by itself */
    int progress = 0;
    if (writing && sent < to_send) {
      size_t n = next_chunk(&ch, to_send - sent);
      ssize_t w = send(client, in + sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) {
        sent += (size_t)w;
        progress = 1;
      } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        writing = 0; /* the server closed its end */
      }
    }
    if (writing && sent == to_send) {
      writing = 0;
      if (mode >= 2) {
        close(client);
        client_closed = 1;
      } else {
        shutdown(client, SHUT_WR);
      }
    }
    if (feed_streams())
      progress = 1;
    uv_run(loop, UV_RUN_NOWAIT);
    if (!client_closed && !server_gone) {
      ssize_t got = drain(client, &t, read_size);
      if (got < 0)
        server_gone = 1;
      else if (got > 0)
        progress = 1;
    }
    if (server->n_conns == 0 && server->work_in_flight == 0 && (client_closed || server_gone))
      break;
    if (!progress) {
      struct pollfd fds[2] = {{uv_backend_fd(loop), POLLIN, 0}, {client, 0, 0}};
      if (!client_closed && !server_gone)
        fds[1].events = POLLIN | (writing ? POLLOUT : 0);
      poll(fds, client_closed || server_gone ? 1 : 2, 2);
    }
  }
  if (!client_closed)
    close(client);
  CHECK(dropped_records == 0 || t.overflowed || n_records == MAX_RECORDS);
  check_transcript(&t, mode <= 1 && !t.overflowed && dropped_records == 0);
  if (getenv("NARCACHE_FUZZ_VERBOSE") != NULL) {
    fprintf(stderr, "mode %d: sent %zu of %zu bytes, %zu responses, %zu bytes back:", mode, sent,
            in_len, n_records, t.len);
    for (size_t i = 0; i < n_records; i++)
      fprintf(stderr, " %s%s=%d%s", records[i].method, records[i].target, records[i].status,
              records[i].aborted ? "(aborted)" : "");
    fprintf(stderr, "\n");
  }
  free(t.p);
  return 0;
}
