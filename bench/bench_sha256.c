/*
 * bench_sha256 -- SHA-256 throughput of narcache_hasher over a file.
 *
 *   bench_sha256 FILE [REPEAT]
 *
 * Reads FILE with plain read() calls into one reusable buffer and feeds each
 * chunk to a narcache_hasher, which is what `openssl dgst -sha256` does too
 * (it reads through a BIO into a fixed buffer). With REPEAT > 1 the file is
 * hashed that many times from the start; every pass must give the same digest.
 *
 * stdout: "<hex digest> *FILE", the format of `openssl dgst -sha256 -r FILE`.
 * stderr: one parseable line
 *   bench_sha256: bytes=<total> passes=<n> buf=<bytes> seconds=<s> gbps=<GB/s>
 * where GB is 10^9 bytes and seconds covers open+read+hash of all passes.
 *
 * The buffer size defaults to BENCH_DEFAULT_BUF; the environment variable
 * BENCH_SHA256_BUF_KIB overrides it (for experiments only).
 *
 * Exit status: 0 on success, 1 on any error, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <narcache/common.h>
#include <narcache/hash.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* 128 KiB: large enough that syscall overhead is negligible, small enough
 * that the freshly copied chunk is still in L2 when the hasher reads it. */
#define BENCH_DEFAULT_BUF ((size_t)128 * 1024)
#define BENCH_MAX_BUF ((size_t)256 * 1024 * 1024)
#define BENCH_ALIGN ((size_t)4096)

static double now_seconds(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
    perror("bench_sha256: clock_gettime");
    exit(1);
  }
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_size(const char *s, unsigned long long max,
                      unsigned long long *out) {
  if (s == NULL || *s == '\0' || *s == '-' || *s == '+')
    return -1;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v == 0 || v > max)
    return -1;
  *out = v;
  return 0;
}

/* Hash one pass over `path`; adds the number of bytes read to *total. */
static int hash_file(const char *path, narcache_hasher *h, unsigned char *buf,
                     size_t buf_size, narcache_hash *out,
                     unsigned long long *total) {
  int rc = narcache_hasher_reset(h);
  if (rc < 0) {
    fprintf(stderr, "bench_sha256: narcache_hasher_reset: %s\n",
            narcache_strerror(rc));
    return -1;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "bench_sha256: %s: %s\n", path, strerror(errno));
    return -1;
  }
  int result = 0;
  for (;;) {
    ssize_t n = read(fd, buf, buf_size);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      fprintf(stderr, "bench_sha256: read %s: %s\n", path, strerror(errno));
      result = -1;
      break;
    }
    if (n == 0)
      break;
    rc = narcache_hasher_update(h, buf, (size_t)n);
    if (rc < 0) {
      fprintf(stderr, "bench_sha256: narcache_hasher_update: %s\n",
              narcache_strerror(rc));
      result = -1;
      break;
    }
    *total += (unsigned long long)n;
  }
  if (close(fd) != 0 && result == 0) {
    fprintf(stderr, "bench_sha256: close %s: %s\n", path, strerror(errno));
    result = -1;
  }
  if (result != 0)
    return result;
  rc = narcache_hasher_final(h, out);
  if (rc < 0) {
    fprintf(stderr, "bench_sha256: narcache_hasher_final: %s\n",
            narcache_strerror(rc));
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: bench_sha256 FILE [REPEAT]\n");
    return 2;
  }
  const char *path = argv[1];
  unsigned long long repeat = 1;
  if (argc == 3 && parse_size(argv[2], 1000000, &repeat) != 0) {
    fprintf(stderr, "bench_sha256: REPEAT must be an integer in 1..1000000\n");
    return 2;
  }

  size_t buf_size = BENCH_DEFAULT_BUF;
  const char *env = getenv("BENCH_SHA256_BUF_KIB");
  if (env != NULL && *env != '\0') {
    unsigned long long kib = 0;
    if (parse_size(env, BENCH_MAX_BUF / 1024, &kib) != 0) {
      fprintf(stderr, "bench_sha256: bad BENCH_SHA256_BUF_KIB '%s'\n", env);
      return 2;
    }
    buf_size = (size_t)kib * 1024;
  }

  /* buf_size is a multiple of 1024; round it up to the alignment as C11
   * aligned_alloc requires a multiple of the alignment. */
  size_t alloc_size = (buf_size + BENCH_ALIGN - 1) / BENCH_ALIGN * BENCH_ALIGN;
  unsigned char *buf = aligned_alloc(BENCH_ALIGN, alloc_size);
  if (buf == NULL) {
    fprintf(stderr, "bench_sha256: out of memory (%zu bytes)\n", alloc_size);
    return 1;
  }

  narcache_hasher *h = NULL;
  int rc = narcache_hasher_new(&h, NARCACHE_HASH_SHA256);
  if (rc < 0) {
    fprintf(stderr, "bench_sha256: narcache_hasher_new: %s\n",
            narcache_strerror(rc));
    free(buf);
    return 1;
  }

  int status = 1;
  narcache_hash first;
  memset(&first, 0, sizeof first);
  unsigned long long total = 0;
  double t0 = now_seconds();
  for (unsigned long long pass = 0; pass < repeat; pass++) {
    narcache_hash digest;
    if (hash_file(path, h, buf, buf_size, &digest, &total) != 0)
      goto out;
    if (pass == 0) {
      first = digest;
    } else if (digest.len != first.len ||
               memcmp(digest.digest, first.digest, first.len) != 0) {
      fprintf(stderr, "bench_sha256: pass %llu gave a different digest "
              "(file changed?)\n", pass + 1);
      goto out;
    }
  }
  double elapsed = now_seconds() - t0;

  char hex[NARCACHE_HASH_STRING_MAX];
  rc = narcache_hash_format(hex, sizeof hex, NULL, &first, NARCACHE_HASH_BASE16,
                            0);
  if (rc < 0) {
    fprintf(stderr, "bench_sha256: narcache_hash_format: %s\n",
            narcache_strerror(rc));
    goto out;
  }
  if (printf("%s *%s\n", hex, path) < 0 || fflush(stdout) != 0) {
    fprintf(stderr, "bench_sha256: writing stdout: %s\n", strerror(errno));
    goto out;
  }
  double gbps = elapsed > 0 ? (double)total / elapsed / 1e9 : 0.0;
  fprintf(stderr,
          "bench_sha256: bytes=%llu passes=%llu buf=%zu seconds=%.6f "
          "gbps=%.3f\n",
          total, repeat, buf_size, elapsed, gbps);
  status = 0;

out:
  narcache_hasher_free(h);
  free(buf);
  return status;
}
