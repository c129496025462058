/*
 * bench_codec -- zstd throughput of the narcache codec API over a file,
 * one process per run, shaped like `zstd -c FILE > OUT` so that a script
 * can time both with the same clock.
 *
 *   bench_codec compress LEVEL FILE     zstd frame of FILE on stdout
 *   bench_codec decompress FILE         FILE (zstd frames) decoded on stdout
 *
 * compress: narcache_codec_new_compressor(ZSTD, LEVEL), then
 * narcache_codec_set_pledged_size() with the size of FILE (the zstd CLI
 * pledges the size of a regular input file too, so both frames carry it
 * and the library picks its parameters for that size); the frame carries
 * a content checksum, as the CLI's default (-C) does. FILE is read with
 * read() into one reused input buffer; each chunk goes through
 * narcache_codec_process(..., NARCACHE_FLUSH_NONE) until consumed, every
 * call's output is written to stdout; the chunk that completes the pledged
 * size is processed with NARCACHE_FLUSH_END until that returns 0 (the CLI
 * also ends the frame with its last chunk; without a pledged size the end
 * is a separate FLUSH_END call with no input), and narcache_codec_end()
 * must return 0. With the same level the frame is byte for byte the one of
 * `zstd --single-thread -LEVEL -c FILE`.
 *
 * decompress: narcache_codec_new_decompressor(ZSTD), the same read loop,
 * narcache_codec_process() until each chunk is consumed and the output
 * buffer is no longer filled, and narcache_codec_end() must return 0 at EOF.
 *
 * Buffers: input 128 KiB (the CLI's ZSTD_CStreamInSize() and
 * ZSTD_DStreamInSize() are 128 KiB and 128 KiB + 3). Output 129 KiB when
 * compressing: zstd writes a block straight into the caller's buffer when
 * the worst-case size of a 128 KiB block (131,584 bytes) fits, and
 * otherwise into its own buffer first and copies (the CLI's
 * ZSTD_CStreamOutSize() is 131,591). 128 KiB when decompressing (the CLI's
 * ZSTD_DStreamOutSize()). BENCH_CODEC_IN_KIB and BENCH_CODEC_OUT_KIB
 * override them and BENCH_CODEC_PLEDGE=0 skips the pledged size; these are
 * for experiments only.
 *
 * stderr: one parseable line
 *   bench_codec: op=<compress|decompress> level=<n> in=<bytes> out=<bytes>
 *   inbuf=<bytes> outbuf=<bytes> seconds=<s> mbps=<MB/s>
 * where seconds covers open, read, process and write (not process start-up
 * or library loading), and mbps is the uncompressed bytes (input when
 * compressing, output when decompressing) per second in 10^6 bytes.
 *
 * Exit status: 0 on success, 1 on any error, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <narcache/common.h>
#include <narcache/compress.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BENCH_IN_BUF ((size_t)128 * 1024)
#define BENCH_COMPRESS_OUT_BUF ((size_t)129 * 1024)
#define BENCH_DECOMPRESS_OUT_BUF ((size_t)128 * 1024)
#define BENCH_MAX_BUF_KIB 262144ULL /* 256 MiB */
#define BENCH_ALIGN ((size_t)4096)

static const char *prog = "bench_codec";

static double now_seconds(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
    perror("bench_codec: clock_gettime");
    exit(1);
  }
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_ull(const char *s, unsigned long long max, unsigned long long *out) {
  if (s == NULL || *s == '\0' || *s == '-' || *s == '+')
    return -1;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v > max)
    return -1;
  *out = v;
  return 0;
}

/* Buffer size from environment variable `name` in KiB, or `def`. */
static int env_buf(const char *name, size_t def, size_t *out) {
  const char *env = getenv(name);
  *out = def;
  if (env == NULL || *env == '\0')
    return 0;
  unsigned long long kib = 0;
  if (parse_ull(env, BENCH_MAX_BUF_KIB, &kib) != 0 || kib == 0) {
    fprintf(stderr, "%s: bad %s '%s'\n", prog, name, env);
    return -1;
  }
  *out = (size_t)kib * 1024;
  return 0;
}

static void *alloc_buf(size_t size) {
  size_t alloc = (size + BENCH_ALIGN - 1) / BENCH_ALIGN * BENCH_ALIGN;
  void *p = aligned_alloc(BENCH_ALIGN, alloc);
  if (p == NULL)
    fprintf(stderr, "%s: out of memory (%zu bytes)\n", prog, alloc);
  return p;
}

static int write_all(const void *data, size_t len) {
  const unsigned char *p = data;
  while (len > 0) {
    ssize_t n = write(STDOUT_FILENO, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      fprintf(stderr, "%s: writing stdout: %s\n", prog, strerror(errno));
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* read() that retries on EINTR; -1 after printing an error. */
static ssize_t read_chunk(int fd, const char *path, void *buf, size_t size) {
  for (;;) {
    ssize_t n = read(fd, buf, size);
    if (n >= 0)
      return n;
    if (errno != EINTR) {
      fprintf(stderr, "%s: read %s: %s\n", prog, path, strerror(errno));
      return -1;
    }
  }
}

static int codec_error(narcache_codec *c, const char *what, int rc) {
  const char *msg = narcache_codec_errmsg(c);
  fprintf(stderr, "%s: %s: %s%s%s\n", prog, what, narcache_strerror(rc),
          *msg ? ": " : "", msg);
  return -1;
}

/* One run of `op` over the open file `fd`. */
static int run(narcache_codec *c, int compress, unsigned long long size, int fd,
               const char *path, unsigned char *ibuf, size_t isize, unsigned char *obuf,
               size_t osize, unsigned long long *in_total, unsigned long long *out_total) {
  narcache_outbuf out = {obuf, osize, 0};
  int rc;
  int ended = 0;
  for (;;) {
    ssize_t n = read_chunk(fd, path, ibuf, isize);
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    *in_total += (unsigned long long)n;
    narcache_inbuf in = {ibuf, (size_t)n, 0};
    /* Compressor: NONE consumes everything it can buffer; loop while input
     * is left. The chunk that completes the pledged size goes in with
     * FLUSH_END (as the CLI does), so that the last block carries the
     * last-block flag instead of a 3-byte empty block following it.
     * Decompressor: also go on while the output buffer came back full,
     * since more may be pending inside the codec. */
    int last = compress && size > 0 && *in_total == size;
    int flush = last ? NARCACHE_FLUSH_END : NARCACHE_FLUSH_NONE;
    do {
      out.pos = 0;
      rc = narcache_codec_process(c, &out, &in, flush);
      if (rc < 0)
        return codec_error(c, "narcache_codec_process", rc);
      if (out.pos > 0 && write_all(obuf, out.pos) != 0)
        return -1;
      *out_total += out.pos;
    } while (in.pos < in.size || (last && rc > 0) || (!compress && out.pos == out.size));
    ended |= last;
  }
  if (compress && !ended) {
    narcache_inbuf none = {NULL, 0, 0};
    do {
      out.pos = 0;
      rc = narcache_codec_process(c, &out, &none, NARCACHE_FLUSH_END);
      if (rc < 0)
        return codec_error(c, "narcache_codec_process(FLUSH_END)", rc);
      if (out.pos > 0 && write_all(obuf, out.pos) != 0)
        return -1;
      *out_total += out.pos;
    } while (rc > 0);
  }
  rc = narcache_codec_end(c);
  if (rc < 0)
    return codec_error(c, "narcache_codec_end", rc);
  return 0;
}

static int usage(void) {
  fprintf(stderr, "usage: bench_codec compress LEVEL FILE\n"
                  "       bench_codec decompress FILE\n");
  return 2;
}

int main(int argc, char **argv) {
  int compress;
  int level = 0;
  const char *path;
  if (argc == 4 && strcmp(argv[1], "compress") == 0) {
    compress = 1;
    const char *s = argv[2];
    int neg = *s == '-';
    unsigned long long v = 0;
    if (parse_ull(s + neg, 1000, &v) != 0)
      return usage();
    level = neg ? -(int)v : (int)v;
    if (level < narcache_codec_min_level() || level > narcache_codec_max_level()) {
      fprintf(stderr, "%s: LEVEL must be in %d..%d\n", prog, narcache_codec_min_level(),
              narcache_codec_max_level());
      return 2;
    }
    path = argv[3];
  } else if (argc == 3 && strcmp(argv[1], "decompress") == 0) {
    compress = 0;
    path = argv[2];
  } else {
    return usage();
  }

  size_t isize, osize;
  if (env_buf("BENCH_CODEC_IN_KIB", BENCH_IN_BUF, &isize) != 0 ||
      env_buf("BENCH_CODEC_OUT_KIB",
              compress ? BENCH_COMPRESS_OUT_BUF : BENCH_DECOMPRESS_OUT_BUF, &osize) != 0)
    return 2;
  const char *pledge_env = getenv("BENCH_CODEC_PLEDGE");
  int pledge = !(pledge_env != NULL && strcmp(pledge_env, "0") == 0);

  double t0 = now_seconds();
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
    return 1;
  }
  int status = 1;
  unsigned char *ibuf = alloc_buf(isize);
  unsigned char *obuf = alloc_buf(osize);
  narcache_codec *c = NULL;
  if (ibuf == NULL || obuf == NULL)
    goto out;

  int rc = compress ? narcache_codec_new_compressor(&c, NARCACHE_CODEC_ZSTD, level)
                    : narcache_codec_new_decompressor(&c, NARCACHE_CODEC_ZSTD);
  if (rc < 0) {
    fprintf(stderr, "%s: creating the codec: %s\n", prog, narcache_strerror(rc));
    goto out;
  }
  unsigned long long size = 0; /* pledged; 0: unknown */
  if (compress && pledge) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
      fprintf(stderr, "%s: fstat %s: %s\n", prog, path, strerror(errno));
      goto out;
    }
    if (S_ISREG(st.st_mode)) {
      size = (unsigned long long)st.st_size;
      rc = narcache_codec_set_pledged_size(c, (uint64_t)size);
      if (rc < 0) {
        codec_error(c, "narcache_codec_set_pledged_size", rc);
        goto out;
      }
    }
  }

  unsigned long long in_total = 0, out_total = 0;
  if (run(c, compress, size, fd, path, ibuf, isize, obuf, osize, &in_total, &out_total) != 0)
    goto out;
  double elapsed = now_seconds() - t0;
  unsigned long long raw = compress ? in_total : out_total;
  fprintf(stderr,
          "%s: op=%s level=%d in=%llu out=%llu inbuf=%zu outbuf=%zu seconds=%.6f "
          "mbps=%.1f\n",
          prog, compress ? "compress" : "decompress", compress ? level : 0, in_total,
          out_total, isize, osize, elapsed, elapsed > 0 ? (double)raw / elapsed / 1e6 : 0.0);
  status = 0;

out:
  narcache_codec_free(c);
  free(ibuf);
  free(obuf);
  if (close(fd) != 0 && status == 0) {
    fprintf(stderr, "%s: close %s: %s\n", prog, path, strerror(errno));
    status = 1;
  }
  return status;
}
