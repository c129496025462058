/* The s3 store against a real S3 implementation (Ceph's RADOS Gateway,
 * started by tests/s3/run.sh, which sets S3_ENDPOINT, S3_ACCESS_KEY,
 * S3_SECRET_KEY, S3_BUCKET).
 *
 * Round trips through every upload path (memory, one streamed PUT,
 * multipart), reads at random offsets (ranged GETs), abandoned uploads
 * leaving nothing, the narinfo commit rule, the metadata cache (ours
 * updated at once, another writer seen after the negative TTL), errors that
 * must read as "unavailable" rather than "absent", configuration errors
 * with messages, retries through a gateway that fails every other request
 * (tests/s3/flaky_proxy.py), virtual-host addressing (BUCKET.localhost)
 * and concurrent readers. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h> /* after the headers it needs */

#include "narcache.h"

static const char *endpoint, *access_key, *secret_key, *bucket;
static unsigned run_id;

static narcache_store *open_store(const char *prefix, unsigned flags, narcache_s3_options *more) {
  narcache_s3_options o = {0};
  if (more != NULL)
    o = *more;
  char error[256] = "";
  o.version = NARCACHE_S3_OPTIONS_VERSION; /* what `more` leaves out: the gateway's */
  o.bucket = o.bucket ? o.bucket : bucket;
  o.endpoint = o.endpoint ? o.endpoint : endpoint;
  o.prefix = prefix;
  o.access_key = access_key;
  o.secret_key = o.secret_key ? o.secret_key : secret_key;
  o.flags = flags;
  o.error = error;
  o.error_size = sizeof error;
  narcache_store *s = NULL;
  int rc = narcache_store_s3_new(&s, &o);
  if (rc != 0)
    print_error("narcache_store_s3_new: %s (%s)\n", narcache_strerror(rc), error);
  assert_int_equal(rc, 0);
  return s;
}

static uint8_t *random_bytes(size_t n, unsigned seed) {
  uint8_t *p = malloc(n ? n : 1);
  assert_non_null(p);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    p[i] = (uint8_t)x;
  }
  return p;
}

static int put(narcache_store *s, int kind, const char *name, const void *data, size_t len) {
  narcache_upload *up = NULL;
  int rc = narcache_store_upload_begin(&up, s, kind, name, strlen(name), len);
  if (rc < 0)
    return rc;
  const uint8_t *p = data;
  for (size_t off = 0; off < len && rc == 0;) { /* uneven pieces */
    size_t n = len - off < 70001 ? len - off : 70001;
    rc = narcache_upload_write(up, p + off, n);
    off += n;
  }
  if (rc == 0)
    rc = narcache_upload_commit(up);
  narcache_upload_free(up);
  return rc;
}

/* Read the whole object through the reader in pieces and compare. */
static void expect_object(narcache_store *s, int kind, const char *name, const uint8_t *want,
                          size_t len) {
  narcache_reader r = {.version = NARCACHE_READER_VERSION};
  assert_int_equal(narcache_store_open(&r, s, kind, name, strlen(name)), 0);
  assert_int_equal(r.size, len);
  uint8_t *got = malloc(len ? len : 1);
  assert_non_null(got);
  size_t off = 0;
  while (off < len) {
    size_t n = 0;
    assert_int_equal(narcache_reader_read(&r, off, got + off, len - off, &n), 0);
    assert_true(n > 0);
    off += n;
  }
  assert_memory_equal(got, want, len);
  free(got);
  narcache_reader_close(&r);
}

static void nar_name(char *out, size_t size, const char *tag) {
  snprintf(out, size, "%s-%u.nar", tag, run_id);
}

/* `len` random bytes (from `seed`) put as the NAR "<tag>-<run>.nar", whose
 * name goes to `name` (64 bytes). Returns the bytes (free them). */
static uint8_t *put_random_nar(narcache_store *s, const char *tag, size_t len, unsigned seed,
                               char *name) {
  uint8_t *data = random_bytes(len, seed);
  nar_name(name, 64, tag);
  assert_int_equal(put(s, NARCACHE_OBJECT_NAR, name, data, len), 0);
  return data;
}

/* A store path hash part of this run. */
static void hash_part(char out[33], unsigned n) {
  static const char digits[] = "0123456789abcdfghijklmnpqrsvwxyz";
  unsigned x = run_id * 2654435761u ^ n;
  for (int i = 0; i < 32; i++) {
    x = x * 1664525u + 1013904223u;
    out[i] = digits[(x >> 16) % 32];
  }
  out[32] = '\0';
}

/* ---- round trips ------------------------------------------------------------ */

static void test_round_trips(void **state) {
  (void)state;
  narcache_s3_options o = {.part_size = 5u << 20, .multipart_threshold = 6u << 20};
  narcache_store *s = open_store("rt", NARCACHE_STORE_S3_WRITABLE, &o);
  /* memory (with an empty object), one streamed PUT, multipart (3 parts) */
  const size_t sizes[] = {0, 1000, 3u << 20, (13u << 20) + 3};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "rt%zu-%u.nar", i, run_id);
    uint8_t *data = random_bytes(sizes[i], (unsigned)i + 1);
    assert_int_equal(put(s, NARCACHE_OBJECT_NAR, name, data, sizes[i]), 0);
    expect_object(s, NARCACHE_OBJECT_NAR, name, data, sizes[i]);
    free(data);
  }
  /* A log and a listing are objects like the others. */
  const char log[] = "a build log\n";
  char log_name[80], hash[33];
  hash_part(hash, 9);
  snprintf(log_name, sizeof log_name, "%s-x.drv", hash);
  assert_int_equal(put(s, NARCACHE_OBJECT_LOG, log_name, log, sizeof log - 1), 0);
  expect_object(s, NARCACHE_OBJECT_LOG, log_name, (const uint8_t *)log, sizeof log - 1);
  narcache_store_free(s);

  /* The URL as Nix writes it: endpoint without a scheme, scheme=http. */
  const char *authority = strstr(endpoint, "://");
  assert_non_null(authority);
  char url[512], error[256] = "";
  snprintf(url, sizeof url, "s3://%s/rt?endpoint=%s&scheme=http&region=us-east-1", bucket,
           authority + 3);
  narcache_s3_options by_url = {.version = NARCACHE_S3_OPTIONS_VERSION, .url = url,
                                .access_key = access_key, .secret_key = secret_key,
                                .error = error, .error_size = sizeof error};
  if (narcache_store_s3_new(&s, &by_url) != 0)
    fail_msg("%s: %s", url, error);
  expect_object(s, NARCACHE_OBJECT_LOG, log_name, (const uint8_t *)log, sizeof log - 1);
  narcache_store_free(s);
}

static void test_ranges(void **state) {
  (void)state;
  narcache_store *s = open_store("range", NARCACHE_STORE_S3_WRITABLE, NULL);
  const size_t len = 2u << 20;
  char name[64];
  uint8_t *data = put_random_nar(s, "range", len, 7, name);
  narcache_reader r = {.version = NARCACHE_READER_VERSION};
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, name, strlen(name)), 0);
  uint8_t buf[4096];
  unsigned seed = 1;
  uint64_t off = 0;
  size_t n = 0;
  for (int i = 0; i < 40; i++) { /* jumps both ways, and reads that continue */
    seed = seed * 1103515245u + 12345u;
    off = i % 3 == 2 && off + n < len ? off + n : (uint64_t)(seed % len);
    size_t want = sizeof buf < len - off ? sizeof buf : (size_t)(len - off);
    n = 0;
    assert_int_equal(narcache_reader_read(&r, off, buf, want, &n), 0);
    assert_true(n > 0 && n <= want);
    assert_memory_equal(buf, data + off, n);
  }
  n = 1;
  assert_int_equal(narcache_reader_read(&r, len, buf, sizeof buf, &n), 0);
  assert_int_equal(n, 0);
  narcache_reader_close(&r);
  free(data);
  narcache_store_free(s);
}

/* Read `want` bytes of a STREAM segment off its socket, as the server
 * does, and check them. */
static void take_stream(const narcache_nar_segment *seg, const uint8_t *expect, size_t want) {
  uint8_t buf[65536];
  size_t got = 0;
  while (got < want) {
    size_t n = want - got < sizeof buf ? want - got : sizeof buf;
    ssize_t r = read(seg->fd, buf, n);
    if (r < 0 && errno == EAGAIN) {
      struct pollfd p = {.fd = seg->fd, .events = POLLIN};
      assert_int_equal(poll(&p, 1, seg->wait_ms), 1);
      continue;
    }
    assert_true(r > 0);
    assert_memory_equal(buf, expect + got, (size_t)r);
    got += (size_t)r;
  }
}

/* The server takes NAR bytes as segments without copies: over https from
 * the libcurl transfer's ring, over plain http from the store's own
 * connection (its first bytes, then the socket: STREAM segments, for
 * callers of version 2). Each must hold the right bytes whether the
 * caller uses all of one, part of it, jumps elsewhere or mixes in plain
 * reads; several times the ring's size goes through, so it wraps and
 * pauses. */
static void read_by_segments(narcache_store *s, const char *tag, int want_stream) {
  const size_t len = (5u << 20) + 77;
  char name[64];
  uint8_t *data = put_random_nar(s, tag, len, 11, name);
  narcache_reader r = {.version = NARCACHE_READER_VERSION};
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, name, strlen(name)), 0);
  assert_non_null(r.segment);
  unsigned seed = 5;
  uint64_t off = 0;
  int jumps = 0, streams = 0;
  while (off < len) {
    seed = seed * 1103515245u + 12345u;
    static const uint32_t versions[] = {1, 2, NARCACHE_NAR_SEGMENT_VERSION,
                                        NARCACHE_NAR_SEGMENT_VERSION, NARCACHE_NAR_SEGMENT_VERSION};
    narcache_nar_segment seg = {.version = versions[(seed >> 4) % 5]};
    assert_int_equal(r.segment(r.ctx, off, &seg), 1);
    assert_int_equal(seg.nar_offset, off);
    if (seg.kind == NARCACHE_NAR_SEG_WAIT) { /* nothing yet: poll, ask again */
      assert_true(seg.version >= 3 && seg.length == 0 && seg.fd >= 0 && seg.wait_ms > 0);
      struct pollfd p = {.fd = seg.fd, .events = POLLIN};
      assert_int_equal(poll(&p, 1, seg.wait_ms), 1);
      continue;
    }
    assert_true(seg.length > 0 && seg.length <= len - off);
    if (seg.kind == NARCACHE_NAR_SEG_STREAM) {
      assert_true(seg.version >= 2); /* never for a caller of version 1 */
      assert_true(seg.fd >= 0 && seg.wait_ms > 0);
      size_t want = 1 + (seed >> 8) % 400000;
      want = want < seg.length ? want : (size_t)seg.length;
      take_stream(&seg, data + off, want);
      off += want;
      streams++;
      continue;
    }
    assert_int_equal(seg.kind, NARCACHE_NAR_SEG_BYTES);
    assert_memory_equal(seg.data, data + off, (size_t)seg.length);
    switch ((seed >> 8) % 8) {
    case 0: /* part of it */
      off += seg.length / 2 + 1;
      break;
    case 1: { /* a plain read continues where the segment was used up to */
      uint8_t buf[3000];
      uint64_t at = off + seg.length / 3;
      size_t want = sizeof buf < len - at ? sizeof buf : (size_t)(len - at), n = 0;
      assert_int_equal(narcache_reader_read(&r, at, buf, want, &n), 0);
      assert_true(n > 0 && n <= want);
      assert_memory_equal(buf, data + at, n);
      off = at + n;
      break;
    }
    case 2: /* a jump back, rarely */
      if (jumps++ < 3) {
        off = off > 100000 ? off - 100000 : 0;
        break;
      }
      /* fall through */
    default: /* all of it */
      off += seg.length;
    }
  }
  assert_true(want_stream ? streams > 0 : streams == 0);
  narcache_nar_segment seg = {.version = NARCACHE_NAR_SEGMENT_VERSION};
  assert_true(r.segment(r.ctx, len, &seg) < 0); /* nothing past the end */
  narcache_reader_close(&r);
  free(data);
}

/* The kind of the segment that follows the response head's leftover bytes
 * (BYTES) of a NAR opened afresh in `s`; a STREAM one is read and checked. */
static int first_segment_kind(narcache_store *s, const char *name, const uint8_t *data,
                              size_t len) {
  narcache_reader r = {.version = NARCACHE_READER_VERSION};
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, name, strlen(name)), 0);
  narcache_nar_segment seg = {.version = NARCACHE_NAR_SEGMENT_VERSION};
  assert_int_equal(r.segment(r.ctx, 0, &seg), 1);
  int kind = seg.kind;
  /* the head's leftover body bytes come as BYTES first: look past them */
  if (kind == NARCACHE_NAR_SEG_BYTES && seg.length < len) {
    uint64_t at = seg.length;
    memset(&seg, 0, sizeof seg);
    seg.version = NARCACHE_NAR_SEGMENT_VERSION;
    assert_int_equal(r.segment(r.ctx, at, &seg), 1);
    kind = seg.kind;
    if (kind == NARCACHE_NAR_SEG_STREAM)
      take_stream(&seg, data + at, (size_t)seg.length);
  }
  narcache_reader_close(&r);
  return kind;
}

/* Connections of the store's own need the gateway's address from libcurl
 * (no name lookup of theirs): a store that has not reached the gateway
 * yet GETs through libcurl, and streams once the gateway has answered. */
static void test_first_get_goes_through_libcurl(void **state) {
  (void)state;
  const size_t len = (1u << 20) + 5;
  uint8_t *data = random_bytes(len, 12);
  char name[64];
  nar_name(name, sizeof name, "segment-fresh");
  narcache_store *writer = open_store("segment", NARCACHE_STORE_S3_WRITABLE, NULL);
  assert_int_equal(put(writer, NARCACHE_OBJECT_NAR, name, data, len), 0);
  narcache_store_free(writer);
  narcache_store *s = open_store("segment", 0, NULL);
  assert_int_equal(first_segment_kind(s, name, data, len), NARCACHE_NAR_SEG_BYTES);
  assert_int_equal(first_segment_kind(s, name, data, len), NARCACHE_NAR_SEG_STREAM);
  narcache_store_free(s);
  free(data);
}

static void test_segments(void **state) {
  (void)state;
  narcache_store *s = open_store("segment", NARCACHE_STORE_S3_WRITABLE, NULL);
  read_by_segments(s, "segment-http", 1);
  narcache_store_free(s);
  const char *tls = getenv("S3_TLS_ENDPOINT"), *ca = getenv("S3_CA_FILE");
  if (tls == NULL || ca == NULL)
    fail_msg("run through tests/s3/run.sh (S3_TLS_ENDPOINT, S3_CA_FILE)");
  narcache_s3_options o = {.endpoint = tls, .ca_file = ca};
  s = open_store("segment", NARCACHE_STORE_S3_WRITABLE, &o);
  read_by_segments(s, "segment-https", 0);
  narcache_store_free(s);
}

/* ---- virtual-host addressing --------------------------------------------------
 * The gateway knows itself as "localhost" (rgw_dns_name), and libcurl maps
 * every *.localhost name to the loopback address, so BUCKET.localhost
 * reaches the same gateway with the bucket in the Host. */

/* S3_ENDPOINT (http://127.0.0.1:PORT) with the host named "localhost". */
static void localhost_endpoint(char *out, size_t size) {
  const char *port = strrchr(endpoint, ':');
  assert_non_null(port);
  snprintf(out, size, "http://localhost%s", port);
}

static void test_virtual_host_addressing(void **state) {
  (void)state;
  char vhost[128], prefix_url[160], name[64];
  localhost_endpoint(vhost, sizeof vhost);
  narcache_s3_options o = {.endpoint = vhost, .addressing = NARCACHE_S3_ADDRESSING_VIRTUAL};
  narcache_store *virt = open_store("vhost", NARCACHE_STORE_S3_WRITABLE | NARCACHE_STORE_S3_REDIRECT,
                                    &o);
  narcache_store *path = open_store("vhost", NARCACHE_STORE_S3_WRITABLE, NULL);
  char message[300];
  assert_int_equal(narcache_store_s3_check(virt, message, sizeof message), 0);

  /* Written through the bucket's own host name, found path-style under
   * the same key (a path-style request sent to BUCKET.localhost would have
   * put the bucket name into the key instead). */
  const size_t len = (1u << 20) + 5;
  uint8_t *data = put_random_nar(virt, "vhost", len, 31, name);
  expect_object(path, NARCACHE_OBJECT_NAR, name, data, len);
  expect_object(virt, NARCACHE_OBJECT_NAR, name, data, len);

  /* And the other way round, through the store's own connections once
   * libcurl has reached the gateway: they send the bucket's Host too. */
  uint8_t *other = put_random_nar(path, "vhost-other", len, 32, name);
  assert_int_equal(first_segment_kind(virt, name, other, len), NARCACHE_NAR_SEG_STREAM);
  expect_object(virt, NARCACHE_OBJECT_NAR, name, other, len);

  /* Presigned URLs name the bucket in the host as well. */
  char *url = NULL;
  assert_int_equal(narcache_store_redirect(&url, virt, NARCACHE_OBJECT_NAR, name, strlen(name)), 1);
  snprintf(prefix_url, sizeof prefix_url, "http://%s.localhost%s/vhost/nar/%s?", bucket,
           strrchr(endpoint, ':'), name);
  if (strncmp(url, prefix_url, strlen(prefix_url)) != 0)
    fail_msg("presigned URL %s does not start with %s", url, prefix_url);
  narcache_free(url);
  narcache_store_free(path);
  narcache_store_free(virt);
  free(other);
  free(data);
}

/* ---- commit rules ----------------------------------------------------------- */

static char *narinfo_text(const char *hash, const char *nar, const uint8_t *data, size_t len,
                          size_t *text_len) {
  narcache_narinfo *ni = NULL;
  assert_int_equal(narcache_narinfo_new(&ni, NULL), 0);
  narcache_hash h;
  assert_int_equal(narcache_hash_buffer(&h, NARCACHE_HASH_SHA256, data, len), 0);
  char path[128], url[128];
  snprintf(path, sizeof path, "/nix/store/%s-s3-test", hash);
  snprintf(url, sizeof url, "nar/%s", nar);
  assert_int_equal(narcache_narinfo_set_store_path(ni, path, strlen(path)), 0);
  assert_int_equal(narcache_narinfo_set_url(ni, url, strlen(url)), 0);
  assert_int_equal(narcache_narinfo_set_compression(ni, "none", 4), 0);
  assert_int_equal(narcache_narinfo_set_nar_hash(ni, &h), 0);
  assert_int_equal(narcache_narinfo_set_nar_size(ni, len), 0);
  char *text = NULL;
  assert_int_equal(narcache_narinfo_format(&text, text_len, ni), 0);
  narcache_narinfo_free(ni);
  return text;
}

static void test_narinfo_after_its_nar(void **state) {
  (void)state;
  narcache_store *s = open_store("commit", NARCACHE_STORE_S3_WRITABLE, NULL);
  char hash[33], nar[64];
  hash_part(hash, 1);
  nar_name(nar, sizeof nar, "commit");
  uint8_t *data = random_bytes(5000, 3);
  size_t text_len = 0;
  char *text = narinfo_text(hash, nar, data, 5000, &text_len);
  /* Before its NAR: refused, and nothing public. */
  assert_int_equal(put(s, NARCACHE_OBJECT_NARINFO, hash, text, text_len), NARCACHE_ECONFLICT);
  narcache_reader r = {.version = NARCACHE_READER_VERSION};
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NARINFO, hash, 32),
                   NARCACHE_ENOTFOUND);
  assert_int_equal(put(s, NARCACHE_OBJECT_NAR, nar, data, 5000), 0);
  /* Our own commit updates the cache at once (the 404 above was cached). */
  assert_int_equal(put(s, NARCACHE_OBJECT_NARINFO, hash, text, text_len), 0);
  expect_object(s, NARCACHE_OBJECT_NARINFO, hash, (const uint8_t *)text, text_len);
  narcache_free(text);
  free(data);
  narcache_store_free(s);
}

static void test_abandoned_uploads_leave_nothing(void **state) {
  (void)state;
  narcache_s3_options o = {.part_size = 5u << 20, .multipart_threshold = 6u << 20};
  narcache_store *s = open_store("abandon", NARCACHE_STORE_S3_WRITABLE, &o);
  /* streamed: dropped mid-body, and dropped with every byte written (as the
   * server does with a NAR that fails verification); multipart: committed
   * short, and dropped complete */
  const size_t sizes[] = {3u << 20, 3u << 20, 12u << 20, 12u << 20};
  for (size_t i = 0; i < 4; i++) {
    char name[64];
    snprintf(name, sizeof name, "abandon%zu-%u.nar", i, run_id);
    size_t written = i % 2 ? sizes[i] : sizes[i] / 2 + 7;
    uint8_t *data = random_bytes(written, 5);
    narcache_upload *up = NULL;
    assert_int_equal(narcache_store_upload_begin(&up, s, NARCACHE_OBJECT_NAR, name, strlen(name),
                                                 sizes[i]),
                     0);
    assert_int_equal(narcache_upload_write(up, data, written), 0);
    if (i == 2)
      assert_int_equal(narcache_upload_commit(up), NARCACHE_EMISUSE); /* short */
    if (i % 2)
      usleep(300 * 1000); /* time for S3 to finish a PUT it should not finish */
    narcache_upload_free(up);
    narcache_reader r = {.version = NARCACHE_READER_VERSION};
    assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, name, strlen(name)),
                     NARCACHE_ENOTFOUND);
    free(data);
  }
  narcache_store_free(s);
}

/* ---- the cache across writers ------------------------------------------------- */

static void test_other_writer_seen_after_negative_ttl(void **state) {
  (void)state;
  narcache_s3_options o = {.negative_ttl_ms = 400, .cache_ttl_ms = 60000};
  narcache_store *reader = open_store("ttl", 0, &o);
  narcache_store *writer = open_store("ttl", NARCACHE_STORE_S3_WRITABLE, NULL);
  char hash[33], nar[64];
  hash_part(hash, 2);
  nar_name(nar, sizeof nar, "ttl");
  uint8_t *data = random_bytes(100, 9);
  size_t text_len = 0;
  char *text = narinfo_text(hash, nar, data, 100, &text_len);
  narcache_reader r = {.version = NARCACHE_READER_VERSION};
  assert_int_equal(narcache_store_open(&r, reader, NARCACHE_OBJECT_NARINFO, hash, 32),
                   NARCACHE_ENOTFOUND);
  assert_int_equal(put(writer, NARCACHE_OBJECT_NAR, nar, data, 100), 0);
  assert_int_equal(put(writer, NARCACHE_OBJECT_NARINFO, hash, text, text_len), 0);
  /* still the cached answer ... */
  assert_int_equal(narcache_store_open(&r, reader, NARCACHE_OBJECT_NARINFO, hash, 32),
                   NARCACHE_ENOTFOUND);
  usleep(500 * 1000);
  /* ... and the new object once it expired */
  expect_object(reader, NARCACHE_OBJECT_NARINFO, hash, (const uint8_t *)text, text_len);
  /* A read-only store takes no uploads. */
  narcache_upload *up = NULL;
  assert_int_equal(narcache_store_upload_begin(&up, reader, NARCACHE_OBJECT_NAR, nar,
                                               strlen(nar), 1),
                   NARCACHE_ENOTSUP);
  narcache_free(text);
  free(data);
  narcache_store_free(reader);
  narcache_store_free(writer);
}

/* ---- failures ------------------------------------------------------------------ */

static void test_refused_and_unreachable_are_not_absent(void **state) {
  (void)state;
  char message[300];
  /* wrong secret: a clear error at the check, 503 (never 404) for reads */
  narcache_s3_options o = {.max_attempts = 1,
                           .secret_key = "wrong-secret-key-wrong-secret-key-wrong0"};
  narcache_store *s = open_store(NULL, 0, &o);
  assert_int_equal(narcache_store_s3_check(s, message, sizeof message), NARCACHE_EBADKEY);
  assert_non_null(strstr(message, "credentials"));
  narcache_reader r = {.version = NARCACHE_READER_VERSION};
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_CACHE_INFO, "", 0),
                   NARCACHE_EUNAVAIL);
  assert_int_not_equal(narcache_store_probe(s), 0);
  narcache_store_free(s);

  /* no such bucket */
  narcache_s3_options other = {.bucket = "narcache-no-such-bucket"};
  s = open_store(NULL, 0, &other);
  assert_int_equal(narcache_store_s3_check(s, message, sizeof message), NARCACHE_ENOTFOUND);
  assert_non_null(strstr(message, "no such bucket"));
  narcache_store_free(s);

  /* nothing listening: unavailable, within the connect timeout and retries */
  narcache_s3_options quick = {.endpoint = "http://127.0.0.1:9", /* discard: closed here */
                               .connect_timeout_ms = 300, .request_timeout_ms = 1000,
                               .max_attempts = 2};
  s = open_store(NULL, 0, &quick);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NARINFO,
                                       "00000000000000000000000000000000", 32),
                   NARCACHE_EUNAVAIL);
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, "x.nar", 5),
                   NARCACHE_EUNAVAIL);
  assert_int_equal(narcache_store_s3_check(s, message, sizeof message), NARCACHE_EUNAVAIL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  assert_true(t1.tv_sec - t0.tv_sec < 10);
  narcache_store_free(s);
}

static void test_configuration_errors(void **state) {
  (void)state;
  struct {
    const char *url;
    const char *want; /* in the message */
  } cases[] = {
      {"http://bucket", "not an s3:// URL"},
      {"s3://x", "bucket name"},
      {"s3://good-bucket?endpoint=ftp://host", "endpoint"},
      {"s3://good-bucket?color=blue", "unknown parameter"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char error[256] = "";
    narcache_s3_options o = {.version = NARCACHE_S3_OPTIONS_VERSION, .url = cases[i].url,
                             .access_key = "a", .secret_key = "b",
                             .error = error, .error_size = sizeof error};
    narcache_store *s = NULL;
    assert_int_equal(narcache_store_s3_new(&s, &o), NARCACHE_EINVAL);
    assert_null(s);
    if (strstr(error, cases[i].want) == NULL)
      fail_msg("%s: message \"%s\" lacks \"%s\"", cases[i].url, error, cases[i].want);
  }
  /* No credentials anywhere. */
  char error[256] = "";
  setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
  char *saved_id = getenv("AWS_ACCESS_KEY_ID") ? strdup(getenv("AWS_ACCESS_KEY_ID")) : NULL;
  unsetenv("AWS_ACCESS_KEY_ID");
  narcache_s3_options o = {.version = NARCACHE_S3_OPTIONS_VERSION, .url = "s3://good-bucket",
                           .error = error, .error_size = sizeof error};
  narcache_store *s = NULL;
  assert_int_equal(narcache_store_s3_new(&s, &o), NARCACHE_EINVAL);
  assert_non_null(strstr(error, "no S3 credentials"));
  /* A credentials file and profile work. */
  char path[] = "/tmp/narcache-s3-credsXXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  dprintf(fd, "[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n"
              "[ci]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
          access_key, secret_key);
  close(fd);
  char url[512];
  snprintf(url, sizeof url, "s3://%s?endpoint=%s&profile=ci", bucket, endpoint);
  o.url = url;
  o.credentials_file = path;
  assert_int_equal(narcache_store_s3_new(&s, &o), 0);
  assert_int_equal(narcache_store_s3_check(s, error, sizeof error), 0);
  narcache_store_free(s);
  /* A file the caller names wins over keys in the environment. */
  char *saved_secret =
      getenv("AWS_SECRET_ACCESS_KEY") ? strdup(getenv("AWS_SECRET_ACCESS_KEY")) : NULL;
  setenv("AWS_ACCESS_KEY_ID", "AKIDNOTTHEONE", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret", 1);
  assert_int_equal(narcache_store_s3_new(&s, &o), 0);
  assert_int_equal(narcache_store_s3_check(s, error, sizeof error), 0);
  narcache_store_free(s);
  unsetenv("AWS_ACCESS_KEY_ID");
  if (saved_secret != NULL)
    setenv("AWS_SECRET_ACCESS_KEY", saved_secret, 1);
  else
    unsetenv("AWS_SECRET_ACCESS_KEY");
  free(saved_secret);
  unlink(path);
  if (saved_id != NULL) {
    setenv("AWS_ACCESS_KEY_ID", saved_id, 1);
    free(saved_id);
  }
  unsetenv("AWS_SHARED_CREDENTIALS_FILE");
}

/* ---- retries ------------------------------------------------------------------ */

/* "injected N" of a flaky_proxy counts file. */
static long injected(const char *counts_file) {
  FILE *f = fopen(counts_file, "r");
  if (f == NULL)
    return 0;
  long forwarded = 0, n = 0;
  if (fscanf(f, "forwarded %ld\ninjected %ld", &forwarded, &n) != 2)
    n = 0;
  fclose(f);
  return n;
}

/* Through tests/s3/flaky_proxy.py: every other request to the real gateway
 * answered 503 SlowDown or 500 InternalError. Everything that can be sent
 * again must succeed anyway; through a proxy that fails every request, a
 * call gives up with EUNAVAIL after max_attempts tries, within its budget. */
static void test_retries_through_a_flaky_gateway(void **state) {
  (void)state;
  const char *flaky = getenv("S3_FLAKY_ENDPOINT"), *flaky_counts = getenv("S3_FLAKY_COUNTS");
  const char *down = getenv("S3_DOWN_ENDPOINT"), *down_counts = getenv("S3_DOWN_COUNTS");
  if (!flaky || !flaky_counts || !down || !down_counts)
    fail_msg("run through tests/s3/run.sh (S3_FLAKY_ENDPOINT, S3_DOWN_ENDPOINT, ...)");
  narcache_s3_options o = {.endpoint = flaky, .max_attempts = 6};
  narcache_store *s = open_store("flaky", NARCACHE_STORE_S3_WRITABLE, &o);
  long before = injected(flaky_counts);
  char hash[33], nar[64];
  hash_part(hash, 3);
  nar_name(nar, sizeof nar, "flaky");
  uint8_t *data = random_bytes(4000, 13);
  size_t text_len = 0;
  char *text = narinfo_text(hash, nar, data, 4000, &text_len);
  for (int i = 0; i < 3; i++)
    assert_int_equal(narcache_store_probe(s), 0);
  assert_int_equal(put(s, NARCACHE_OBJECT_NAR, nar, data, 4000), 0);        /* PUT */
  assert_int_equal(put(s, NARCACHE_OBJECT_NARINFO, hash, text, text_len), 0); /* HEAD, PUT */
  narcache_store_free(s);
  s = open_store("flaky", 0, &o); /* a fresh cache: every read asks */
  for (int i = 0; i < 3; i++) {
    expect_object(s, NARCACHE_OBJECT_NARINFO, hash, (const uint8_t *)text, text_len);
    expect_object(s, NARCACHE_OBJECT_NAR, nar, data, 4000);
    narcache_store_free(s);
    s = open_store("flaky", 0, &o);
  }
  assert_true(injected(flaky_counts) - before >= 5);
  narcache_store_free(s);

  narcache_s3_options d = {.endpoint = down, .max_attempts = 3, .request_timeout_ms = 5000};
  s = open_store("flaky", 0, &d);
  before = injected(down_counts);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  narcache_reader r = {.version = NARCACHE_READER_VERSION};
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NARINFO, hash, 32), NARCACHE_EUNAVAIL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  assert_int_equal(injected(down_counts) - before, 3); /* max_attempts tries */
  assert_true(t1.tv_sec - t0.tv_sec < 5);
  narcache_store_free(s);
  narcache_free(text);
  free(data);
}

/* ---- TLS --------------------------------------------------------------------- */

/* The gateway's https endpoint (a self-signed certificate): trusted through
 * ca_file (the option, or ca-file= in the URL), refused with libcurl's reason
 * without it. */
static void test_https_endpoint(void **state) {
  (void)state;
  const char *tls = getenv("S3_TLS_ENDPOINT"), *ca = getenv("S3_CA_FILE");
  if (tls == NULL || ca == NULL)
    fail_msg("run through tests/s3/run.sh (S3_TLS_ENDPOINT, S3_CA_FILE)");
  char message[300];
  narcache_s3_options o = {.endpoint = tls, .ca_file = ca};
  narcache_store *s = open_store("tls", NARCACHE_STORE_S3_WRITABLE, &o);
  assert_int_equal(narcache_store_s3_check(s, message, sizeof message), 0);
  char name[64];
  nar_name(name, sizeof name, "tls");
  const size_t len = (2u << 20) + 5; /* a streamed PUT and GET */
  uint8_t *data = random_bytes(len, 17);
  assert_int_equal(put(s, NARCACHE_OBJECT_NAR, name, data, len), 0);
  expect_object(s, NARCACHE_OBJECT_NAR, name, data, len);
  narcache_store_free(s);

  char url[600], error[256] = "";
  snprintf(url, sizeof url, "s3://%s/tls?endpoint=%s&ca-file=%s", bucket, tls, ca);
  narcache_s3_options by_url = {.version = NARCACHE_S3_OPTIONS_VERSION, .url = url,
                                .access_key = access_key, .secret_key = secret_key,
                                .error = error, .error_size = sizeof error};
  assert_int_equal(narcache_store_s3_new(&s, &by_url), 0);
  expect_object(s, NARCACHE_OBJECT_NAR, name, data, len);
  narcache_store_free(s);

  narcache_s3_options untrusted = {.endpoint = tls, .max_attempts = 1};
  s = open_store("tls", 0, &untrusted);
  assert_int_equal(narcache_store_s3_check(s, message, sizeof message), NARCACHE_EUNAVAIL);
  if (strstr(message, "certificate") == NULL)
    fail_msg("no reason in \"%s\"", message);
  narcache_store_free(s);
  free(data);
}

/* Over https the bytes come through libcurl's ring. A caller that takes
 * WAIT segments (the server) is told to poll a descriptor instead of
 * having its thread blocked while the ring is empty: with the gateway
 * stopped (SIGSTOP) the descriptor stays quiet, and it becomes readable
 * when the gateway goes on; every byte arrives intact. */
static pid_t gateway_pid(void) {
  const char *dir = getenv("RGW_DIR");
  if (dir == NULL)
    fail_msg("run through tests/s3/run.sh (RGW_DIR)");
  char path[4096];
  snprintf(path, sizeof path, "%s/pids/rgw", dir);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  long pid = 0;
  assert_int_equal(fscanf(f, "%ld", &pid), 1);
  fclose(f);
  assert_true(pid > 1);
  return (pid_t)pid;
}

static void test_https_wait_segments(void **state) {
  (void)state;
  const char *tls = getenv("S3_TLS_ENDPOINT"), *ca = getenv("S3_CA_FILE");
  if (tls == NULL || ca == NULL)
    fail_msg("run through tests/s3/run.sh (S3_TLS_ENDPOINT, S3_CA_FILE)");
  narcache_s3_options o = {.endpoint = tls, .ca_file = ca};
  narcache_store *s = open_store("wait", NARCACHE_STORE_S3_WRITABLE, &o);
  const size_t len = 24u << 20; /* more than the ring and the socket buffers hold */
  char name[64];
  uint8_t *data = put_random_nar(s, "wait", len, 41, name);
  narcache_reader r = {.version = NARCACHE_READER_VERSION};
  assert_int_equal(narcache_store_open(&r, s, NARCACHE_OBJECT_NAR, name, strlen(name)), 0);
  pid_t gateway = gateway_pid();
  assert_int_equal(kill(gateway, SIGSTOP), 0);
  uint64_t off = 0;
  int quiet = -1, woke = -1, waits = 0;
  while (off < len) {
    narcache_nar_segment seg = {.version = NARCACHE_NAR_SEGMENT_VERSION};
    if (r.segment(r.ctx, off, &seg) != 1)
      break;
    if (seg.kind == NARCACHE_NAR_SEG_WAIT) {
      waits++;
      struct pollfd p = {.fd = seg.fd, .events = POLLIN};
      if (quiet < 0) {
        /* The gateway is stopped, but what it sent before may still come
         * (a busy machine can delay the I/O thread past the 5 ms grace):
         * drain it until the descriptor stays quiet, then wake the gateway. */
        if (poll(&p, 1, 300) == 1)
          continue;
        quiet = 1;
        kill(gateway, SIGCONT);
        woke = poll(&p, 1, 10000) == 1;
      } else if (poll(&p, 1, seg.wait_ms) != 1) {
        break;
      }
      continue;
    }
    if (seg.kind != NARCACHE_NAR_SEG_BYTES || memcmp(seg.data, data + off, seg.length) != 0)
      break;
    off += seg.length;
  }
  kill(gateway, SIGCONT); /* whatever happened above */
  assert_int_equal(off, len);
  assert_int_equal(quiet, 1);
  assert_int_equal(woke, 1);
  assert_true(waits >= 1);
  narcache_reader_close(&r);
  narcache_store_free(s);
  free(data);
}

/* ---- concurrency ------------------------------------------------------------- */

typedef struct reader_job {
  narcache_store *s;
  const char *name;
  const uint8_t *data;
  size_t len;
  unsigned seed;
  int failures;
} reader_job;

static void *reader_thread(void *arg) {
  reader_job *j = arg;
  uint8_t buf[8192];
  for (int i = 0; i < 25; i++) {
    narcache_reader r = {.version = NARCACHE_READER_VERSION};
    if (narcache_store_open(&r, j->s, NARCACHE_OBJECT_NAR, j->name, strlen(j->name)) != 0) {
      j->failures++;
      continue;
    }
    j->seed = j->seed * 1103515245u + 12345u;
    uint64_t off = i % 2 ? 0 : j->seed % j->len;
    size_t n = 0;
    size_t want = sizeof buf < j->len - off ? sizeof buf : j->len - off;
    if (narcache_reader_read(&r, off, buf, want, &n) != 0 || n == 0 ||
        memcmp(buf, j->data + off, n) != 0)
      j->failures++;
    narcache_reader_close(&r); /* mostly mid-body: the GET is cancelled */
  }
  return NULL;
}

static void test_concurrent_readers(void **state) {
  (void)state;
  narcache_store *s = open_store("many", NARCACHE_STORE_S3_WRITABLE, NULL);
  const size_t len = 1536 * 1024;
  char name[64];
  uint8_t *data = put_random_nar(s, "many", len, 11, name);
  pthread_t t[8];
  reader_job jobs[8];
  for (int i = 0; i < 8; i++) {
    jobs[i] = (reader_job){s, name, data, len, (unsigned)i + 1, 0};
    assert_int_equal(pthread_create(&t[i], NULL, reader_thread, &jobs[i]), 0);
  }
  for (int i = 0; i < 8; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(jobs[i].failures, 0);
  }
  free(data);
  narcache_store_free(s);
}

int main(void) {
  endpoint = getenv("S3_ENDPOINT");
  access_key = getenv("S3_ACCESS_KEY");
  secret_key = getenv("S3_SECRET_KEY");
  bucket = getenv("S3_BUCKET");
  if (!endpoint || !access_key || !secret_key || !bucket) {
    fprintf(stderr, "test_store_s3: run through tests/s3/run.sh (needs S3_ENDPOINT, "
                    "S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET)\n");
    return 1;
  }
  run_id = (unsigned)time(NULL) ^ (unsigned)getpid();
  if (narcache_init() < 0)
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trips),
      cmocka_unit_test(test_ranges),
      cmocka_unit_test(test_segments),
      cmocka_unit_test(test_first_get_goes_through_libcurl),
      cmocka_unit_test(test_virtual_host_addressing),
      cmocka_unit_test(test_narinfo_after_its_nar),
      cmocka_unit_test(test_abandoned_uploads_leave_nothing),
      cmocka_unit_test(test_other_writer_seen_after_negative_ttl),
      cmocka_unit_test(test_refused_and_unreachable_are_not_absent),
      cmocka_unit_test(test_configuration_errors),
      cmocka_unit_test(test_retries_through_a_flaky_gateway),
      cmocka_unit_test(test_https_endpoint),
      cmocka_unit_test(test_https_wait_segments),
      cmocka_unit_test(test_concurrent_readers),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  narcache_shutdown();
  return failed;
}
