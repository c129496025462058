/*
 * bench_sign -- narinfo signing and verification rates through the narinfo
 * API, against raw libsodium on the same message, in the same run.
 *
 *   bench_sign [-r ROUNDS] [-t SECONDS] [-n REFS] -s SECRET_KEY
 *              -p PUBLIC_KEY [-p PUBLIC_KEY]... NARINFO...
 *
 *   -r ROUNDS   timed rounds (default 7)
 *   -t SECONDS  time of the raw side of one loop (default 0.5)
 *   -n REFS     references of the synthetic case (default 50, max 10000)
 *
 * Cases: every NARINFO given (a narinfo written by Nix, with one Sig line
 * by the secret key's name), plus "synthetic-REFS": a narinfo built through
 * the API with a self reference and REFS-1 others with package-like names.
 * 50 references, what a real package looks like, give a 3,084-byte
 * fingerprint.
 *
 * For each case and round, four loops of the same iteration count:
 *   raw sign        crypto_sign_detached(sig, fp, sk) over the fingerprint
 *                   bytes (from narcache_narinfo_fingerprint, computed once)
 *                   with the 64-byte secret key decoded from the key file
 *                   with sodium_base642bin;
 *   narcache sign   narcache_narinfo_sign(ni, key): builds the fingerprint,
 *                   signs, base64-encodes, replaces the Sig entry;
 *   raw verify      crypto_sign_verify_detached(sig, fp, pk) of the case's
 *                   signature (the one Nix wrote, for a file);
 *   narcache verify narcache_narinfo_verify(&k, ni, keys, n): builds the
 *                   fingerprint, finds the key by name in the trusted list
 *                   (all -p keys, in order), decodes and checks the Sig.
 * The iteration counts are calibrated once (untimed) so that the raw side
 * of one round takes about SECONDS. Each round runs, for each case and
 * operation, SLICES (64) short raw/narcache pairs of equal iteration counts
 * in ABBA order (odd rounds start with raw, even rounds with narcache), so
 * a slow spell of a noisy host lands on both sides; a round's rate is its
 * iterations over the summed time of that side. Every round also times
 * narcache_narinfo_fingerprint + narcache_free alone (diagnostic).
 *
 * Before timing it checks that narcache_narinfo_sign and raw libsodium give
 * the same signature, that it equals the file's Sig (Ed25519 signatures are
 * deterministic), and that narcache_narinfo_verify accepts it with the key
 * it was made with. Every timed verification must succeed.
 *
 * stdout: a header, one "round ..." line per case, operation and round, and
 * one line per case and operation:
 *   result case=<label> refs=<n> msg=<fingerprint bytes> op=sign|verify
 *          raw=<median/s> narcache=<median/s> ratio=<narcache/raw of medians>
 *          paired=<median of per-round ratios> overhead_us=<median of the
 *          per-round 1e6/narcache - 1e6/raw: microseconds added per operation>
 *   result case=<label> refs=<n> msg=<bytes> op=fingerprint us=<median us>
 * Rates are operations per second.
 *
 * Exit status: 0 on success, 1 on any error or failed check, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <narcache/common.h>
#include <narcache/hash.h>
#include <narcache/narinfo.h>

#include <sodium.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS 101
#define MAX_KEYS 8
#define MAX_CASES 16
#define SYNTH_REFS 50     /* default reference count of the synthetic case */
#define SYNTH_REFS_MAX 10000
#define N_SYNTH_NAMES 49
#define SLICES 64 /* raw/narcache pairs per loop: ~8 ms per side each */

enum { OP_SIGN, OP_VERIFY, N_OPS };
static const char *const op_name[N_OPS] = {"sign", "verify"};

typedef struct bench_case {
  char label[64];
  size_t refs;
  narcache_narinfo *sign_ni;   /* signed over and over */
  narcache_narinfo *verify_ni; /* one Sig, by the secret key's name */
  char *fp;                    /* fingerprint, narcache_free() */
  size_t fp_len;
  uint8_t sig[crypto_sign_BYTES]; /* the signature verify_ni carries */
  unsigned long iters[N_OPS];
  unsigned long fp_iters;
  double raw[N_OPS][MAX_ROUNDS]; /* operations per second */
  double nc[N_OPS][MAX_ROUNDS];
  double fp_us[MAX_ROUNDS]; /* microseconds per fingerprint */
} bench_case;

/* Raw key material, as a plain libsodium user would hold it. */
static uint8_t raw_sk[crypto_sign_SECRETKEYBYTES];
static uint8_t raw_pk[crypto_sign_PUBLICKEYBYTES];
static volatile uint8_t sink; /* keeps results observable */

static void die(const char *what, const char *detail) {
  fprintf(stderr, "bench_sign: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  exit(1);
}

static void die_rc(const char *what, int rc) { die(what, narcache_strerror(rc)); }

static double now_seconds(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
    die("clock_gettime", strerror(errno));
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whole file, NUL terminated; *len without the NUL. */
static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    die(path, strerror(errno));
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  if (buf == NULL)
    die("out of memory", NULL);
  for (;;) {
    if (n + 1 >= cap) {
      cap *= 2;
      char *p = realloc(buf, cap);
      if (p == NULL)
        die("out of memory", NULL);
      buf = p;
    }
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0)
      break;
  }
  if (ferror(f))
    die(path, "read error");
  fclose(f);
  buf[n] = '\0';
  *len = n;
  return buf;
}

/* Decode "name:base64" from a Nix key file into exactly `want` bytes with
 * libsodium alone; *name_len gets the length of the name. */
static void raw_key_decode(uint8_t *out, size_t want, const char *text, size_t len,
                           size_t *name_len, const char *path) {
  while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
    len--;
  const char *colon = memchr(text, ':', len);
  if (colon == NULL)
    die(path, "no ':' in key file");
  size_t got = 0;
  if (sodium_base642bin(out, want, colon + 1, len - (size_t)(colon - text) - 1, NULL, &got,
                        NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
      got != want)
    die(path, "sodium_base642bin: not a key of the expected size");
  *name_len = (size_t)(colon - text);
}

static narcache_key *load_key(const char *path, int secret) {
  size_t len = 0, at = 0;
  char *text = read_file(path, &len);
  narcache_key *k = NULL;
  int rc = secret ? narcache_key_parse_secret(&k, text, len, &at)
                  : narcache_key_parse_public(&k, text, len, &at);
  if (rc < 0)
    die_rc(path, rc);
  if (secret) {
    size_t name_len = 0;
    raw_key_decode(raw_sk, sizeof raw_sk, text, len, &name_len, path);
    /* libsodium's secret key is seed || public key. */
    if (crypto_sign_ed25519_sk_to_pk(raw_pk, raw_sk) != 0)
      die(path, "crypto_sign_ed25519_sk_to_pk");
    uint8_t pk2[crypto_sign_PUBLICKEYBYTES], sk2[crypto_sign_SECRETKEYBYTES];
    if (crypto_sign_seed_keypair(pk2, sk2, raw_sk) != 0 || memcmp(pk2, raw_pk, sizeof pk2) != 0)
      die(path, "public half does not match the seed");
    sodium_memzero(sk2, sizeof sk2);
  }
  sodium_memzero(text, len);
  free(text);
  return k;
}

/* ---- cases ------------------------------------------------------------- */

static narcache_narinfo *parse_narinfo(const char *text, size_t len, const char *what) {
  narcache_narinfo *ni = NULL;
  int rc = narcache_narinfo_new(&ni, NULL);
  if (rc < 0)
    die_rc("narcache_narinfo_new", rc);
  rc = narcache_narinfo_parse(ni, text, len);
  if (rc < 0)
    die(what, narcache_narinfo_errmsg(ni));
  return ni;
}

static void fill_fingerprint(bench_case *c) {
  int rc = narcache_narinfo_fingerprint(&c->fp, &c->fp_len, c->verify_ni);
  if (rc < 0)
    die_rc("narcache_narinfo_fingerprint", rc);
  c->refs = narcache_narinfo_reference_count(c->verify_ni);
}

/* The base64 part of verify_ni's Sig by key name `name`, decoded. */
static void take_sig(bench_case *c, const char *name, size_t name_len) {
  size_t n = narcache_narinfo_sig_count(c->verify_ni), found = 0;
  for (size_t i = 0; i < n; i++) {
    size_t len = 0;
    const char *s = narcache_narinfo_sig(c->verify_ni, i, &len);
    if (len > name_len && s[name_len] == ':' && memcmp(s, name, name_len) == 0) {
      size_t got = 0;
      if (sodium_base642bin(c->sig, sizeof c->sig, s + name_len + 1, len - name_len - 1, NULL,
                            &got, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
          got != sizeof c->sig)
        die(c->label, "Sig is not 64 bytes of base64");
      found++;
    }
  }
  if (found != 1)
    die(c->label, "need exactly one Sig by the secret key's name");
}

static void label_from_store_path(bench_case *c) {
  const char *path = narcache_narinfo_store_path(c->verify_ni, NULL);
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  const char *dash = strchr(base, '-');
  snprintf(c->label, sizeof c->label, "%s", dash ? dash + 1 : base);
}

/* Package-like names for the synthetic closure (names only matter for the
 * fingerprint length: ~30 bytes each, as in nixpkgs). */
static const char *const synth_names[N_SYNTH_NAMES] = {
    "glibc-2.37-8",           "gcc-12.3.0-lib",         "zlib-1.3",
    "openssl-3.0.12",         "bash-5.2-p15",           "coreutils-9.3",
    "libffi-3.4.4",           "ncurses-6.4",            "readline-8.2p1",
    "xz-5.4.4",               "bzip2-1.0.8",            "libxml2-2.11.5",
    "expat-2.5.0",            "sqlite-3.43.1",          "libpng-apng-1.6.40",
    "libjpeg-turbo-3.0.0",    "freetype-2.13.2",        "fontconfig-2.14.2-lib",
    "harfbuzz-8.2.1",         "glib-2.78.0",            "gtk+3-3.24.38",
    "cairo-1.18.0",           "pango-1.51.0",           "gdk-pixbuf-2.42.10",
    "atk-2.50.0",             "at-spi2-core-2.50.0",    "libX11-1.8.7",
    "libXext-1.3.5",          "libXrender-0.9.11",      "libXi-1.8.1",
    "libXrandr-1.5.3",        "libXcomposite-0.4.6",    "libXdamage-1.1.6",
    "libxcb-1.16",            "mesa-23.1.9",            "libdrm-2.4.117",
    "wayland-1.22.0",         "dbus-1.14.10-lib",       "systemd-minimal-254.6",
    "alsa-lib-1.2.9",         "libpulseaudio-16.1",     "nss-3.90",
    "nspr-4.35",              "icu4c-73.2",             "libvpx-1.13.1",
    "libwebp-1.3.2",          "ffmpeg-6.0-lib",         "pciutils-3.10.0",
    "libevent-2.1.12",
};

static void synth_store_base(char *out, size_t size, const char *name) {
  char preimage[512], hash[NARCACHE_STORE_HASH_CHARS + 1];
  snprintf(preimage, sizeof preimage,
           "output:out:sha256:%064d:/nix/store:%s", 0, name);
  int rc = narcache_store_path_hash_part(hash, sizeof hash, preimage, strlen(preimage));
  if (rc < 0)
    die_rc("narcache_store_path_hash_part", rc);
  snprintf(out, size, "%s-%s", hash, name);
}

static narcache_narinfo *build_synthetic(size_t n_refs) {
  narcache_narinfo *ni = NULL;
  int rc = narcache_narinfo_new(&ni, NULL);
  if (rc < 0)
    die_rc("narcache_narinfo_new", rc);
  char base[300], path[400];
  synth_store_base(base, sizeof base, "firefox-unwrapped-119.0.1");
  snprintf(path, sizeof path, "/nix/store/%s", base);
  narcache_hash nar_hash;
  if ((rc = narcache_hash_buffer(&nar_hash, NARCACHE_HASH_SHA256, base, strlen(base))) < 0)
    die_rc("narcache_hash_buffer", rc);
  char nix32[64];
  if ((rc = narcache_nix32_encode(nix32, sizeof nix32, NULL, nar_hash.digest, nar_hash.len)) < 0)
    die_rc("narcache_nix32_encode", rc);
  char url[128];
  snprintf(url, sizeof url, "nar/%s.nar.xz", nix32);
  if ((rc = narcache_narinfo_set_store_path(ni, path, strlen(path))) < 0 ||
      (rc = narcache_narinfo_set_url(ni, url, strlen(url))) < 0 ||
      (rc = narcache_narinfo_set_compression(ni, "xz", 2)) < 0 ||
      (rc = narcache_narinfo_set_nar_hash(ni, &nar_hash)) < 0 ||
      (rc = narcache_narinfo_set_nar_size(ni, 273916104)) < 0 ||
      (rc = narcache_narinfo_add_reference(ni, base, strlen(base))) < 0)
    die("building the synthetic narinfo", narcache_narinfo_errmsg(ni));
  for (size_t i = 0; i + 1 < n_refs; i++) {
    char ref[300], name[64];
    if (i < N_SYNTH_NAMES)
      snprintf(name, sizeof name, "%s", synth_names[i]);
    else /* beyond the list: names of the same typical length */
      snprintf(name, sizeof name, "%s-p%zu", synth_names[i % N_SYNTH_NAMES], i / N_SYNTH_NAMES);
    synth_store_base(ref, sizeof ref, name);
    if ((rc = narcache_narinfo_add_reference(ni, ref, strlen(ref))) < 0)
      die("adding a synthetic reference", narcache_narinfo_errmsg(ni));
  }
  char drv[300];
  synth_store_base(drv, sizeof drv, "firefox-unwrapped-119.0.1.drv");
  if ((rc = narcache_narinfo_set_deriver(ni, drv, strlen(drv))) < 0)
    die("setting the synthetic deriver", narcache_narinfo_errmsg(ni));
  if (narcache_narinfo_reference_count(ni) != n_refs)
    die("synthetic narinfo", "wrong reference count");
  return ni;
}

/* Copy a narinfo through its text form. */
static narcache_narinfo *clone_narinfo(const narcache_narinfo *ni, const char *what) {
  char *text = NULL;
  size_t len = 0;
  int rc = narcache_narinfo_format(&text, &len, ni);
  if (rc < 0)
    die_rc("narcache_narinfo_format", rc);
  narcache_narinfo *copy = parse_narinfo(text, len, what);
  narcache_free(text);
  return copy;
}

/* ---- checks ------------------------------------------------------------ */

static void check_case(bench_case *c, const narcache_key *sk, const narcache_key *const *keys,
                       size_t n_keys, int from_file) {
  size_t name_len = 0;
  const char *name = narcache_key_name(sk, &name_len);
  uint8_t raw_sig[crypto_sign_BYTES];
  if (crypto_sign_detached(raw_sig, NULL, (const unsigned char *)c->fp, c->fp_len, raw_sk) != 0)
    die(c->label, "crypto_sign_detached failed");
  if (!from_file) {
    /* The synthetic narinfo gets its signature from the library. */
    int rc = narcache_narinfo_sign(c->verify_ni, sk);
    if (rc < 0)
      die_rc("narcache_narinfo_sign", rc);
  }
  take_sig(c, name, name_len);
  if (memcmp(raw_sig, c->sig, sizeof raw_sig) != 0)
    die(c->label, from_file ? "raw libsodium signature differs from the file's Sig"
                            : "raw libsodium signature differs from narcache's");
  /* Signing the copy must reproduce the same Sig line. */
  int rc = narcache_narinfo_sign(c->sign_ni, sk);
  if (rc < 0)
    die_rc("narcache_narinfo_sign", rc);
  size_t a_len = 0, b_len = 0, n = narcache_narinfo_sig_count(c->sign_ni), same = 0;
  for (size_t i = 0; i < n; i++) {
    const char *a = narcache_narinfo_sig(c->sign_ni, i, &a_len);
    for (size_t j = 0; j < narcache_narinfo_sig_count(c->verify_ni); j++) {
      const char *b = narcache_narinfo_sig(c->verify_ni, j, &b_len);
      if (a_len == b_len && memcmp(a, b, a_len) == 0 && a_len > name_len &&
          memcmp(a, name, name_len) == 0 && a[name_len] == ':')
        same++;
    }
  }
  if (same != 1)
    die(c->label, "narcache_narinfo_sign did not reproduce the Sig line");
  if (crypto_sign_verify_detached(c->sig, (const unsigned char *)c->fp, c->fp_len, raw_pk) != 0)
    die(c->label, "crypto_sign_verify_detached rejects the signature");
  const narcache_key *which = NULL;
  rc = narcache_narinfo_verify(&which, c->verify_ni, keys, n_keys);
  if (rc != 0)
    die_rc("narcache_narinfo_verify", rc);
  size_t wl = 0;
  const char *wn = narcache_key_name(which, &wl);
  if (wl != name_len || memcmp(wn, name, wl) != 0)
    die(c->label, "verified by an unexpected key");
}

/* ---- loops ------------------------------------------------------------- */

static double loop_raw(const bench_case *c, int op, unsigned long n) {
  const unsigned char *fp = (const unsigned char *)c->fp;
  uint8_t sig[crypto_sign_BYTES];
  unsigned long bad = 0;
  double t0 = now_seconds();
  if (op == OP_SIGN) {
    for (unsigned long i = 0; i < n; i++) {
      crypto_sign_detached(sig, NULL, fp, c->fp_len, raw_sk);
      sink ^= sig[i & 63];
    }
  } else {
    for (unsigned long i = 0; i < n; i++)
      bad += crypto_sign_verify_detached(c->sig, fp, c->fp_len, raw_pk) != 0;
  }
  double t = now_seconds() - t0;
  if (bad != 0)
    die(c->label, "raw verification failed during the timed loop");
  return t;
}

static double loop_narcache(const bench_case *c, int op, unsigned long n, const narcache_key *sk,
                            const narcache_key *const *keys, size_t n_keys) {
  unsigned long bad = 0;
  double t0 = now_seconds();
  if (op == OP_SIGN) {
    for (unsigned long i = 0; i < n; i++)
      bad += narcache_narinfo_sign(c->sign_ni, sk) != 0;
  } else {
    for (unsigned long i = 0; i < n; i++) {
      const narcache_key *which = NULL;
      bad += narcache_narinfo_verify(&which, c->verify_ni, keys, n_keys) != 0;
      sink ^= (uint8_t)(uintptr_t)which;
    }
  }
  double t = now_seconds() - t0;
  if (bad != 0)
    die(c->label, op == OP_SIGN ? "narcache_narinfo_sign failed during the timed loop"
                                : "narcache_narinfo_verify failed during the timed loop");
  return t;
}

static double loop_fingerprint(const bench_case *c, unsigned long n) {
  double t0 = now_seconds();
  for (unsigned long i = 0; i < n; i++) {
    char *fp = NULL;
    size_t len = 0;
    if (narcache_narinfo_fingerprint(&fp, &len, c->verify_ni) != 0)
      die(c->label, "narcache_narinfo_fingerprint failed");
    sink ^= (uint8_t)fp[len - 1];
    narcache_free(fp);
  }
  return now_seconds() - t0;
}

/* Iterations so that `seconds_target` of the raw loop pass. */
static unsigned long calibrate_raw(const bench_case *c, int op, double seconds_target) {
  unsigned long n = 16;
  double t;
  while ((t = loop_raw(c, op, n)) < 0.05)
    n *= 2;
  double want = (double)n * seconds_target / t;
  return want < 1 ? 1 : (unsigned long)want;
}

static unsigned long calibrate_fp(const bench_case *c, double seconds_target) {
  unsigned long n = 256;
  double t;
  while ((t = loop_fingerprint(c, n)) < 0.02)
    n *= 2;
  double want = (double)n * seconds_target / t;
  return want < 1 ? 1 : (unsigned long)want;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(const double *v, int n) {
  double tmp[MAX_ROUNDS];
  memcpy(tmp, v, (size_t)n * sizeof *v);
  qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
  return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out) {
  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  char *end = NULL;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0' || v == 0 || v > max)
    return -1;
  *out = v;
  return 0;
}

static void usage(void) {
  fprintf(stderr, "usage: bench_sign [-r ROUNDS] [-t SECONDS] [-n REFS] -s SECRET_KEY "
                  "-p PUBLIC_KEY [-p PUBLIC_KEY]... NARINFO...\n");
  exit(2);
}

int main(int argc, char **argv) {
  unsigned long rounds = 7, synth_refs = SYNTH_REFS;
  double seconds = 0.5;
  const char *sec_path = NULL;
  const char *pub_paths[MAX_KEYS];
  size_t n_keys = 0;
  int opt;
  while ((opt = getopt(argc, argv, "r:t:s:p:n:")) != -1) {
    switch (opt) {
    case 'r':
      if (parse_uint(optarg, MAX_ROUNDS, &rounds) != 0)
        usage();
      break;
    case 't': {
      char *end = NULL;
      seconds = strtod(optarg, &end);
      if (end == optarg || *end != '\0' || !(seconds > 0.001 && seconds <= 60))
        usage();
      break;
    }
    case 'n':
      if (parse_uint(optarg, SYNTH_REFS_MAX, &synth_refs) != 0)
        usage();
      break;
    case 's':
      sec_path = optarg;
      break;
    case 'p':
      if (n_keys == MAX_KEYS)
        usage();
      pub_paths[n_keys++] = optarg;
      break;
    default:
      usage();
    }
  }
  int n_files = argc - optind;
  if (sec_path == NULL || n_keys == 0 || n_files < 1 || n_files > MAX_CASES - 1)
    usage();

  int rc = narcache_init();
  if (rc < 0)
    die_rc("narcache_init", rc);
  if (sodium_init() < 0)
    die("sodium_init", NULL);

  narcache_key *sk = load_key(sec_path, 1);
  narcache_key *pubs[MAX_KEYS];
  for (size_t i = 0; i < n_keys; i++)
    pubs[i] = load_key(pub_paths[i], 0);
  const narcache_key *const *keys = (const narcache_key *const *)pubs;
  size_t sk_name_len = 0;
  const char *sk_name = narcache_key_name(sk, &sk_name_len);
  int trusted = 0;
  for (size_t i = 0; i < n_keys; i++) {
    size_t l = 0;
    const char *n = narcache_key_name(pubs[i], &l);
    if (l == sk_name_len && memcmp(n, sk_name, l) == 0)
      trusted = 1;
  }
  if (!trusted)
    die("no -p key has the secret key's name", sk_name);

  static bench_case cases[MAX_CASES];
  int n_cases = 0;
  for (int i = 0; i < n_files; i++) {
    bench_case *c = &cases[n_cases++];
    size_t len = 0;
    char *text = read_file(argv[optind + i], &len);
    c->verify_ni = parse_narinfo(text, len, argv[optind + i]);
    c->sign_ni = parse_narinfo(text, len, argv[optind + i]);
    free(text);
    label_from_store_path(c);
    fill_fingerprint(c);
    check_case(c, sk, keys, n_keys, 1);
  }
  {
    bench_case *c = &cases[n_cases++];
    c->verify_ni = build_synthetic(synth_refs);
    c->sign_ni = clone_narinfo(c->verify_ni, "synthetic narinfo");
    snprintf(c->label, sizeof c->label, "synthetic-%lu", synth_refs);
    fill_fingerprint(c);
    check_case(c, sk, keys, n_keys, 0);
  }

  printf("bench_sign: narcache %s, libsodium %s, rounds=%lu, seconds=%.3g per loop, "
         "secret key %s, %zu trusted keys (",
         narcache_version_string(), sodium_version_string(), rounds, seconds, sk_name, n_keys);
  for (size_t i = 0; i < n_keys; i++)
    printf("%s%s", i ? ", " : "", narcache_key_name(pubs[i], NULL));
  printf(")\n");

  /* Calibrate (untimed) and warm up the narcache loops too. */
  for (int i = 0; i < n_cases; i++) {
    bench_case *c = &cases[i];
    for (int op = 0; op < N_OPS; op++) {
      c->iters[op] = calibrate_raw(c, op, seconds);
      loop_narcache(c, op, c->iters[op] / 10 + 1, sk, keys, n_keys);
    }
    c->fp_iters = calibrate_fp(c, seconds / 5);
    printf("case %s: refs=%zu msg=%zu bytes, iterations per loop: sign=%lu verify=%lu "
           "fingerprint=%lu\n",
           c->label, c->refs, c->fp_len, c->iters[OP_SIGN], c->iters[OP_VERIFY], c->fp_iters);
  }
  fflush(stdout);

  printf("%-5s %-14s %-6s %-12s %12s %12s %7s\n", "round", "case", "op", "first", "raw/s",
         "narcache/s", "ratio");
  for (unsigned long r = 0; r < rounds; r++) {
    int raw_first = r % 2 == 0;
    for (int i = 0; i < n_cases; i++) {
      bench_case *c = &cases[i];
      for (int op = 0; op < N_OPS; op++) {
        /* SLICES short raw/narcache pairs, in ABBA order, so that a slow
         * spell of the host lands on both sides. */
        unsigned long per = c->iters[op] / SLICES + 1;
        double t_raw = 0, t_nc = 0;
        for (int j = 0; j < SLICES; j++) {
          if ((j % 2 == 0) == raw_first) {
            t_raw += loop_raw(c, op, per);
            t_nc += loop_narcache(c, op, per, sk, keys, n_keys);
          } else {
            t_nc += loop_narcache(c, op, per, sk, keys, n_keys);
            t_raw += loop_raw(c, op, per);
          }
        }
        c->raw[op][r] = (double)(per * SLICES) / t_raw;
        c->nc[op][r] = (double)(per * SLICES) / t_nc;
        printf("%-5lu %-14s %-6s %-12s %12.0f %12.0f %7.3f\n", r + 1, c->label, op_name[op],
               raw_first ? "raw" : "narcache", c->raw[op][r], c->nc[op][r],
               c->nc[op][r] / c->raw[op][r]);
      }
      c->fp_us[r] = loop_fingerprint(c, c->fp_iters) * 1e6 / (double)c->fp_iters;
      fflush(stdout);
    }
  }

  for (int i = 0; i < n_cases; i++) {
    bench_case *c = &cases[i];
    for (int op = 0; op < N_OPS; op++) {
      double ratios[MAX_ROUNDS], extra_us[MAX_ROUNDS];
      for (unsigned long r = 0; r < rounds; r++) {
        ratios[r] = c->nc[op][r] / c->raw[op][r];
        extra_us[r] = 1e6 / c->nc[op][r] - 1e6 / c->raw[op][r];
      }
      double raw_med = median(c->raw[op], (int)rounds);
      double nc_med = median(c->nc[op], (int)rounds);
      printf("result case=%s refs=%zu msg=%zu op=%s raw=%.0f narcache=%.0f ratio=%.4f "
             "paired=%.4f overhead_us=%.3f\n",
             c->label, c->refs, c->fp_len, op_name[op], raw_med, nc_med, nc_med / raw_med,
             median(ratios, (int)rounds), median(extra_us, (int)rounds));
    }
    printf("result case=%s refs=%zu msg=%zu op=fingerprint us=%.3f\n", c->label, c->refs,
           c->fp_len, median(c->fp_us, (int)rounds));
  }

  for (int i = 0; i < n_cases; i++) {
    narcache_narinfo_free(cases[i].sign_ni);
    narcache_narinfo_free(cases[i].verify_ni);
    narcache_free(cases[i].fp);
  }
  for (size_t i = 0; i < n_keys; i++)
    narcache_key_free(pubs[i]);
  narcache_key_free(sk);
  sodium_memzero(raw_sk, sizeof raw_sk);
  narcache_shutdown();
  return 0;
}
