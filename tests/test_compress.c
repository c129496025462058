/* Codecs (compress.h): round trips at several levels and chunk sizes,
 * interchange with the zstd CLI in both directions, truncated and corrupt
 * frames, output and window limits, the allocator hook. */
#define _POSIX_C_SOURCE 200809L /* popen, mkstemp */
#include <narcache.h>

#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "test_support.h"

typedef struct blob {
  uint8_t *data;
  size_t len;
  size_t cap;
} blob;

static void blob_append(blob *b, const void *data, size_t len) {
  if (len == 0)
    return;
  if (b->len + len + 1 > b->cap) { /* geometric: callers append byte by byte */
    b->cap = (b->len + len + 1) * 2;
    b->data = realloc(b->data, b->cap);
    assert_non_null(b->data);
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
}

/* Text-like data that compresses, with some noise so it is not trivial. */
static blob sample_data(size_t len, uint32_t seed) {
  blob b = {malloc(len + 1), len, len + 1};
  uint32_t x = seed;
  for (size_t i = 0; i < len; i++) {
    x = x * 1103515245u + 12345u;
    b.data[i] = (x >> 24) % 7 == 0 ? (uint8_t)(x >> 16) : (uint8_t)("nix store path "[i % 15]);
  }
  return b;
}

/* Run a codec over `in`, feeding `in_chunk` bytes and offering `out_chunk`
 * bytes of output per call. Returns the codec's final status. */
static int run_codec(narcache_codec *c, const blob *in, size_t in_chunk, size_t out_chunk,
                     blob *out, int compress) {
  uint8_t *buf = malloc(out_chunk);
  size_t fed = 0;
  int rc = 0;
  for (;;) {
    size_t n = in->len - fed < in_chunk ? in->len - fed : in_chunk;
    int last = fed + n == in->len;
    narcache_inbuf ib = {in->data + fed, n, 0};
    int flush = compress && last ? NARCACHE_FLUSH_END : NARCACHE_FLUSH_NONE;
    do {
      narcache_outbuf ob = {buf, out_chunk, 0};
      rc = narcache_codec_process(c, &ob, &ib, flush);
      if (rc < 0)
        goto done;
      blob_append(out, buf, ob.pos);
      /* until the input is taken and, when ending a frame, nothing is left */
    } while (ib.pos < ib.size || (flush == NARCACHE_FLUSH_END && rc > 0));
    fed += n;
    if (last)
      break;
  }
  if (!compress) {
    /* drain output the decoder may still hold */
    for (int i = 0; i < 1000000; i++) {
      narcache_inbuf ib = {NULL, 0, 0};
      narcache_outbuf ob = {buf, out_chunk, 0};
      rc = narcache_codec_process(c, &ob, &ib, NARCACHE_FLUSH_NONE);
      if (rc < 0)
        goto done;
      blob_append(out, buf, ob.pos);
      if (ob.pos == 0)
        break;
    }
  }
  rc = narcache_codec_end(c);
done:
  free(buf);
  return rc;
}

static blob compress_with(int type, int level, const blob *in, size_t in_chunk, size_t out_chunk) {
  narcache_codec *c = NULL;
  assert_int_equal(narcache_codec_new_compressor(&c, type, level), 0);
  blob out = {NULL, 0, 0};
  int rc = run_codec(c, in, in_chunk, out_chunk, &out, 1);
  if (rc != 0)
    fail_msg("compress: %s: %s", narcache_errname(rc), narcache_codec_errmsg(c));
  assert_int_equal(narcache_codec_total_in(c), in->len);
  assert_int_equal(narcache_codec_total_out(c), out.len);
  narcache_codec_free(c);
  return out;
}

static int decompress_with(int type, const blob *in, size_t in_chunk, size_t out_chunk,
                           blob *out, uint64_t max_output) {
  narcache_codec *c = NULL;
  assert_int_equal(narcache_codec_new_decompressor(&c, type), 0);
  if (max_output != UINT64_MAX)
    assert_int_equal(narcache_codec_set_max_output(c, max_output), 0);
  int rc = run_codec(c, in, in_chunk, out_chunk, out, 0);
  if (rc < 0)
    assert_true(strlen(narcache_codec_errmsg(c)) > 0);
  narcache_codec_free(c);
  return rc;
}

static void test_names(void **state) {
  (void)state;
  assert_int_equal(narcache_codec_from_name("zstd", 4), NARCACHE_CODEC_ZSTD);
  assert_int_equal(narcache_codec_from_name("none", 4), NARCACHE_CODEC_NONE);
  assert_int_equal(narcache_codec_from_name("xz", 2), NARCACHE_ENOTSUP);
  assert_int_equal(narcache_codec_from_name("zst", 3), NARCACHE_ENOTSUP);
  assert_string_equal(narcache_codec_name(NARCACHE_CODEC_ZSTD), "zstd");
  assert_string_equal(narcache_codec_extension(NARCACHE_CODEC_ZSTD), ".zst");
  assert_string_equal(narcache_codec_extension(NARCACHE_CODEC_NONE), "");
  assert_null(narcache_codec_name(99));
  narcache_codec *c = NULL;
  assert_int_equal(narcache_codec_new_compressor(&c, 99, 0), NARCACHE_EINVAL);
  assert_int_equal(narcache_codec_new_compressor(&c, NARCACHE_CODEC_ZSTD, narcache_codec_max_level() + 1),
                   NARCACHE_EINVAL);
  assert_null(c);
  assert_true(narcache_codec_min_level() < 0);
  assert_true(narcache_codec_max_level() >= 19);
}

static void test_round_trips(void **state) {
  (void)state;
  static const int levels[] = {-5, 1, 3, 9, 19};
  static const size_t chunks[][2] = {{1 << 20, 1 << 20}, {4096, 4096}, {7, 13}, {100000, 1}};
  blob data = sample_data(600 * 1024, 1);
  for (size_t l = 0; l < sizeof levels / sizeof levels[0]; l++)
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
      if (levels[l] == 19 && k > 1)
        continue; /* slow and adds nothing */
      size_t in_chunk = chunks[k][0], out_chunk = chunks[k][1];
      /* ({100000, 1}: one byte of decoded output per call) */
      blob z = compress_with(NARCACHE_CODEC_ZSTD, levels[l], &data, in_chunk,
                             out_chunk > 1 ? out_chunk : 64);
      assert_true(z.len < data.len);
      blob back = {NULL, 0, 0};
      int rc = decompress_with(NARCACHE_CODEC_ZSTD, &z, in_chunk, out_chunk, &back, UINT64_MAX);
      if (rc != 0)
        fail_msg("level %d chunks %zu/%zu: %s", levels[l], in_chunk, out_chunk, narcache_errname(rc));
      assert_int_equal(back.len, data.len);
      assert_memory_equal(back.data, data.data, data.len);
      free(z.data);
      free(back.data);
    }
  /* the identity codec */
  blob same = compress_with(NARCACHE_CODEC_NONE, 0, &data, 999, 500);
  assert_int_equal(same.len, data.len);
  assert_memory_equal(same.data, data.data, data.len);
  free(same.data);
  /* empty input still makes a valid frame */
  blob empty = {NULL, 0, 0};
  blob z = compress_with(NARCACHE_CODEC_ZSTD, 3, &empty, 10, 100);
  assert_true(z.len > 0);
  blob back = {NULL, 0, 0};
  assert_int_equal(decompress_with(NARCACHE_CODEC_ZSTD, &z, 10, 100, &back, UINT64_MAX), 0);
  assert_int_equal(back.len, 0);
  free(z.data);
  free(back.data);
  free(data.data);
}

/* Run a shell command with `in` on stdin; its stdout into *out. */
static int pipe_through(const char *cmd, const blob *in, blob *out) {
  char in_path[] = "/tmp/narcache-test-XXXXXX";
  int fd = mkstemp(in_path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, in->data, in->len), (ssize_t)in->len);
  close(fd);
  char full[512];
  snprintf(full, sizeof full, "%s < %s", cmd, in_path);
  FILE *p = popen(full, "r");
  assert_non_null(p);
  uint8_t buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0)
    blob_append(out, buf, n);
  int status = pclose(p);
  unlink(in_path);
  return status;
}

/* Frames we write decode with the zstd CLI; frames it writes (levels,
 * --long windows, concatenated files) decode here. */
static void test_zstd_cli_interchange(void **state) {
  (void)state;
  blob data = sample_data(300 * 1024, 2);
  blob z = compress_with(NARCACHE_CODEC_ZSTD, 3, &data, 65536, 65536);
  blob cli_out = {NULL, 0, 0};
  assert_int_equal(pipe_through("zstd -q -d -c", &z, &cli_out), 0);
  assert_int_equal(cli_out.len, data.len);
  assert_memory_equal(cli_out.data, data.data, data.len);
  free(cli_out.data);
  free(z.data);

  static const char *const commands[] = {"zstd -q -c -1", "zstd -q -c -19", "zstd -q -c --fast=3",
                                         "zstd -q -c --no-check", "zstd -q -c --long=27"};
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    blob cz = {NULL, 0, 0};
    assert_int_equal(pipe_through(commands[i], &data, &cz), 0);
    blob back = {NULL, 0, 0};
    int rc = decompress_with(NARCACHE_CODEC_ZSTD, &cz, 8192, 8192, &back, UINT64_MAX);
    if (rc != 0)
      fail_msg("%s: %s", commands[i], narcache_errname(rc));
    assert_int_equal(back.len, data.len);
    assert_memory_equal(back.data, data.data, data.len);
    /* two frames back to back (cat a.zst b.zst) are one stream */
    blob twice = {malloc(2 * cz.len), 2 * cz.len, 2 * cz.len};
    memcpy(twice.data, cz.data, cz.len);
    memcpy(twice.data + cz.len, cz.data, cz.len);
    blob back2 = {NULL, 0, 0};
    assert_int_equal(decompress_with(NARCACHE_CODEC_ZSTD, &twice, 5000, 3000, &back2, UINT64_MAX), 0);
    assert_int_equal(back2.len, 2 * data.len);
    assert_memory_equal(back2.data + data.len, data.data, data.len);
    free(back2.data);
    free(twice.data);
    free(back.data);
    free(cz.data);
  }

  /* a window larger than the limit (2^28 > 2^27) is refused, not decoded */
  blob big = {NULL, 0, 0};
  assert_int_equal(pipe_through("zstd -q -c --long=28 --no-content-size", &data, &big), 0);
  blob back = {NULL, 0, 0};
  int rc = decompress_with(NARCACHE_CODEC_ZSTD, &big, 1 << 16, 1 << 16, &back, UINT64_MAX);
  /* zstd shrinks the window to the content when it knows the size; it
   * does not here, so the header announces 2^28 */
  assert_int_equal(rc, NARCACHE_ELIMIT);
  narcache_codec *c = NULL;
  assert_int_equal(narcache_codec_new_decompressor(&c, NARCACHE_CODEC_ZSTD), 0);
  assert_int_equal(narcache_codec_set_window_log_max(c, 28), 0);
  assert_int_equal(narcache_codec_set_window_log_max(c, 99), NARCACHE_EINVAL);
  blob ok = {NULL, 0, 0};
  assert_int_equal(run_codec(c, &big, 1 << 16, 1 << 16, &ok, 0), 0);
  assert_int_equal(ok.len, data.len);
  narcache_codec_free(c);
  free(ok.data);
  free(back.data);
  free(big.data);
  free(data.data);
}

/* Every truncation is an error at the end; every single-byte corruption
 * is an error or (a flip in a field that does not matter) decodes to the
 * original. Never a crash, never other output. */
static void test_truncated_and_corrupt(void **state) {
  (void)state;
  blob data = sample_data(20000, 3);
  blob z = compress_with(NARCACHE_CODEC_ZSTD, 3, &data, 20000, 65536);
  for (size_t cut = 0; cut < z.len; cut++) {
    blob part = {z.data, cut, cut};
    blob back = {NULL, 0, 0};
    int rc = decompress_with(NARCACHE_CODEC_ZSTD, &part, 4096, 4096, &back, UINT64_MAX);
    if (rc != NARCACHE_ECOMPRESS)
      fail_msg("truncated at %zu of %zu: %s", cut, z.len, narcache_errname(rc));
    free(back.data);
  }
  size_t errors = 0;
  for (size_t i = 0; i < z.len; i++) {
    for (int bit = 0; bit < 8; bit += 3) {
      z.data[i] ^= (uint8_t)(1u << bit);
      blob back = {NULL, 0, 0};
      int rc = decompress_with(NARCACHE_CODEC_ZSTD, &z, 4096, 4096, &back, UINT64_MAX);
      if (rc == 0) {
        assert_int_equal(back.len, data.len);
        assert_memory_equal(back.data, data.data, data.len);
      } else {
        assert_true(rc == NARCACHE_ECOMPRESS || rc == NARCACHE_ELIMIT);
        errors++;
      }
      free(back.data);
      z.data[i] ^= (uint8_t)(1u << bit);
    }
  }
  assert_true(errors > z.len); /* nearly all flips are caught */
  /* garbage that is not zstd at all */
  blob junk = sample_data(1000, 4);
  blob back = {NULL, 0, 0};
  assert_int_equal(decompress_with(NARCACHE_CODEC_ZSTD, &junk, 100, 100, &back, UINT64_MAX),
                   NARCACHE_ECOMPRESS);
  free(back.data);
  free(junk.data);
  /* empty input is not a stream */
  blob nothing = {NULL, 0, 0};
  back = (blob){NULL, 0, 0};
  assert_int_equal(decompress_with(NARCACHE_CODEC_ZSTD, &nothing, 1, 1, &back, UINT64_MAX),
                   NARCACHE_ECOMPRESS);
  free(z.data);
  free(data.data);
}

/* The output limit (a narinfo's NarSize) stops a decompression bomb. */
static void test_output_limit(void **state) {
  (void)state;
  blob zeros = {calloc(1, 8 << 20), 8 << 20, 8 << 20};
  blob z = compress_with(NARCACHE_CODEC_ZSTD, 3, &zeros, 1 << 20, 1 << 16);
  assert_true(z.len < 4096); /* 8 MiB in a few hundred bytes */
  blob back = {NULL, 0, 0};
  assert_int_equal(decompress_with(NARCACHE_CODEC_ZSTD, &z, 1 << 16, 1 << 16, &back, zeros.len), 0);
  assert_int_equal(back.len, zeros.len);
  free(back.data);
  back = (blob){NULL, 0, 0};
  assert_int_equal(decompress_with(NARCACHE_CODEC_ZSTD, &z, 1 << 16, 1 << 16, &back, zeros.len - 1),
                   NARCACHE_ELIMIT);
  assert_true(back.len <= zeros.len - 1);
  free(back.data);
  /* the same for the identity codec */
  back = (blob){NULL, 0, 0};
  assert_int_equal(decompress_with(NARCACHE_CODEC_NONE, &zeros, 1000, 1000, &back, 999),
                   NARCACHE_ELIMIT);
  free(back.data);
  free(z.data);
  free(zeros.data);
}

/* Sticky errors, reset, pledged sizes, misuse. */
static void test_state_rules(void **state) {
  (void)state;
  narcache_codec *d = NULL;
  assert_int_equal(narcache_codec_new_decompressor(&d, NARCACHE_CODEC_ZSTD), 0);
  uint8_t junk[16] = "not a zstd fram", out[64];
  narcache_inbuf in = {junk, sizeof junk, 0};
  narcache_outbuf ob = {out, sizeof out, 0};
  assert_int_equal(narcache_codec_process(d, &ob, &in, 0), NARCACHE_ECOMPRESS);
  assert_non_null(strstr(narcache_codec_errmsg(d), "zstd:"));
  narcache_inbuf none = {NULL, 0, 0};
  assert_int_equal(narcache_codec_process(d, &ob, &none, 0), NARCACHE_ECOMPRESS); /* sticky */
  assert_int_equal(narcache_codec_set_pledged_size(d, 1), NARCACHE_EMISUSE);
  assert_int_equal(narcache_codec_reset(d), 0);
  assert_string_equal(narcache_codec_errmsg(d), "");
  blob data = sample_data(5000, 5);
  blob z = compress_with(NARCACHE_CODEC_ZSTD, 1, &data, 5000, 8192);
  blob back = {NULL, 0, 0};
  assert_int_equal(run_codec(d, &z, 100, 100, &back, 0), 0);
  assert_int_equal(back.len, data.len);
  narcache_codec_free(d);
  free(back.data);
  free(z.data);

  /* pledged size: right amount works, wrong amount fails at the end */
  narcache_codec *c = NULL;
  assert_int_equal(narcache_codec_new_compressor(&c, NARCACHE_CODEC_ZSTD, 3), 0);
  assert_int_equal(narcache_codec_set_max_output(c, 1), NARCACHE_EMISUSE);
  assert_int_equal(narcache_codec_set_pledged_size(c, data.len), 0);
  blob zz = {NULL, 0, 0};
  assert_int_equal(run_codec(c, &data, 1000, 1000, &zz, 1), 0);
  assert_int_equal(narcache_codec_reset(c), 0);
  assert_int_equal(narcache_codec_set_pledged_size(c, data.len + 1), 0);
  blob bad = {NULL, 0, 0};
  assert_int_equal(run_codec(c, &data, 1000, 1000, &bad, 1), NARCACHE_ECOMPRESS);
  /* a frame left open is reported by end() */
  assert_int_equal(narcache_codec_reset(c), 0);
  narcache_inbuf part = {data.data, 10, 0};
  ob.pos = 0;
  assert_true(narcache_codec_process(c, &ob, &part, NARCACHE_FLUSH_NONE) >= 0);
  assert_int_equal(narcache_codec_end(c), NARCACHE_EMISUSE);
  narcache_outbuf bad_out = {NULL, 5, 0};
  assert_int_equal(narcache_codec_process(c, &bad_out, &part, 0), NARCACHE_EINVAL);
  assert_int_equal(narcache_codec_process(c, &ob, &part, 7), NARCACHE_EINVAL);
  narcache_codec_free(c);
  free(zz.data);
  free(bad.data);
  free(data.data);
}

/* Frame headers are checked by us, so zstd's one-pass path cannot skip
 * the limits: window size, legacy formats, declared sizes (found by the
 * zstd_decompress fuzzer). */
static void test_frame_header_rules(void **state) {
  (void)state;
  blob data = sample_data(2000, 6);
  /* pledged size: a single-segment frame whose window is its 2000 bytes */
  narcache_codec *c = NULL;
  assert_int_equal(narcache_codec_new_compressor(&c, NARCACHE_CODEC_ZSTD, 3), 0);
  assert_int_equal(narcache_codec_set_pledged_size(c, data.len), 0);
  blob z = {NULL, 0, 0};
  assert_int_equal(run_codec(c, &data, data.len, 65536, &z, 1), 0);
  narcache_codec_free(c);
  static const size_t chunks[] = {1, 7, 1 << 20};
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(narcache_codec_new_decompressor(&c, NARCACHE_CODEC_ZSTD), 0);
    assert_int_equal(narcache_codec_set_window_log_max(c, 10), 0);
    blob back = {NULL, 0, 0};
    assert_int_equal(run_codec(c, &z, chunks[i], 1 << 20, &back, 0), NARCACHE_ELIMIT);
    assert_non_null(strstr(narcache_codec_errmsg(c), "window"));
    narcache_codec_free(c);
    free(back.data);
  }
  /* a legacy (v0.7) magic is not accepted, whole or byte by byte */
  uint8_t legacy[16] = {0x27, 0xB5, 0x2F, 0xFD, 0x00, 0x11, 0x22};
  blob old = {legacy, sizeof legacy, sizeof legacy};
  for (size_t i = 0; i < 3; i++) {
    blob back = {NULL, 0, 0};
    assert_int_equal(decompress_with(NARCACHE_CODEC_ZSTD, &old, chunks[i], 64, &back, UINT64_MAX),
                     NARCACHE_ECOMPRESS);
    free(back.data);
  }
  /* a header declaring more bytes than the frame holds */
  blob lying = {malloc(z.len), z.len, z.len};
  memcpy(lying.data, z.data, z.len);
  /* frame header descriptor byte 4: content size follows the window/dict
   * fields; in a single-segment frame with 2000 bytes it is 2 bytes at
   * offset 5 (value - 256) */
  assert_int_equal(lying.data[4] & 0x20, 0x20); /* single segment */
  assert_int_equal(lying.data[4] >> 6, 1);      /* 2-byte content size */
  lying.data[5] ^= 1;
  for (size_t i = 0; i < 3; i++) {
    blob back = {NULL, 0, 0};
    int rc = decompress_with(NARCACHE_CODEC_ZSTD, &lying, chunks[i], 1 << 20, &back, UINT64_MAX);
    assert_true(rc == NARCACHE_ECOMPRESS || rc == NARCACHE_ELIMIT);
    free(back.data);
  }
  free(lying.data);
  /* the window limit changes only between frames */
  assert_int_equal(narcache_codec_new_decompressor(&c, NARCACHE_CODEC_ZSTD), 0);
  uint8_t out[64];
  narcache_inbuf in = {z.data, 10, 0};
  narcache_outbuf ob = {out, sizeof out, 0};
  assert_true(narcache_codec_process(c, &ob, &in, 0) >= 0);
  assert_int_equal(narcache_codec_set_window_log_max(c, 20), NARCACHE_EMISUSE);
  assert_string_equal(narcache_codec_errmsg(c), ""); /* not an error of the stream */
  /* lowering the output limit below what came out stops the stream */
  blob rest = {z.data + 10, z.len - 10, z.len - 10};
  blob back = {NULL, 0, 0};
  assert_int_equal(narcache_codec_set_max_output(c, 5), 0);
  assert_int_equal(run_codec(c, &rest, 100, 100, &back, 0), NARCACHE_ELIMIT);
  narcache_codec_free(c);
  free(back.data);
  free(z.data);
  free(data.data);
}

typedef struct counting {
  size_t calls;
} counting;

static void *count_malloc(void *ctx, size_t size) {
  ((counting *)ctx)->calls++;
  return malloc(size);
}
static void *count_realloc(void *ctx, void *p, size_t size) {
  ((counting *)ctx)->calls++;
  return realloc(p, size);
}
static void count_free(void *ctx, void *p) {
  (void)ctx;
  free(p);
}

/* zstd's contexts and buffers come from the installed allocator. */
static void test_allocator_reaches_zstd(void **state) {
  (void)state;
  counting counter = {0};
  narcache_allocator a = {NARCACHE_ALLOCATOR_VERSION, count_malloc, count_realloc, count_free,
                          &counter};
  assert_int_equal(narcache_set_allocator(&a), 0);
  narcache_codec *c = NULL;
  assert_int_equal(narcache_codec_new_compressor(&c, NARCACHE_CODEC_ZSTD, 3), 0);
  size_t after_new = counter.calls;
  assert_true(after_new >= 2); /* our object + zstd's context */
  uint8_t in_bytes[1000] = {0}, out[4096];
  narcache_inbuf in = {in_bytes, sizeof in_bytes, 0};
  narcache_outbuf ob = {out, sizeof out, 0};
  assert_int_equal(narcache_codec_process(c, &ob, &in, NARCACHE_FLUSH_END), 0);
  assert_true(counter.calls > after_new); /* zstd's working buffers */
  assert_int_equal(narcache_set_allocator(NULL), NARCACHE_EMISUSE); /* memory is live */
  narcache_codec_free(c);
  assert_int_equal(narcache_set_allocator(NULL), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_round_trips),
      cmocka_unit_test(test_zstd_cli_interchange),
      cmocka_unit_test(test_truncated_and_corrupt),
      cmocka_unit_test(test_output_limit),
      cmocka_unit_test(test_state_rules),
      cmocka_unit_test(test_frame_header_rules),
      cmocka_unit_test(test_allocator_reaches_zstd),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
