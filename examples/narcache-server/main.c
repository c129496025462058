/* narcache-server: serve a Nix binary cache (a `nix copy --to file://`
 * directory, or the local Nix store) over HTTP with libnarcache. */
#define _GNU_SOURCE
#include "daemon.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char usage_text[] =
    "usage: narcache-server (--cache DIR | --s3 URL | --nix-store [STORE_DIR]) [options]\n"
    "\n"
    "Serve a Nix binary cache over HTTP/1.1.\n"
    "\n"
    "  --cache DIR             a binary-cache directory (as `nix copy --to file://DIR` writes)\n"
    "  --s3 URL                an S3 bucket laid out the same way (nix copy --to s3://):\n"
    "                          s3://BUCKET[/PREFIX][?endpoint=URL&region=R&addressing=path|virtual]\n"
    "                          credentials: --s3-credentials-file, else AWS_ACCESS_KEY_ID,\n"
    "                          AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN), else\n"
    "                          ~/.aws/credentials (AWS_PROFILE)\n"
    "  --s3-credentials-file FILE  an AWS credentials file (profile= in the URL picks\n"
    "                          the profile; default [default])\n"
    "  --s3-redirect           answer NAR requests with 307 to a presigned URL (valid 1 h):\n"
    "                          clients download straight from the object store\n"
    "  --s3-public-endpoint URL the endpoint as clients reach it, for those URLs\n"
    "                          (default: the one in --s3)\n"
    "  --s3-ca-file FILE       certificates (PEM) to trust for an https endpoint\n"
    "  --nix-store [DIR]       the local Nix store (default /nix/store), NARs made on the fly\n"
    "  --db PATH               Nix database of --nix-store (default /nix/var/nix/db/db.sqlite)\n"
    "  --listen ADDR           HOST:PORT, [V6]:PORT or unix:PATH; repeatable\n"
    "                          (default 127.0.0.1:5000, or the sockets systemd passes)\n"
    "  --key-file FILE         secret key signing narinfo of --nix-store (and uploads with\n"
    "                          --sign-uploads); repeatable\n"
    "  --compression none|zstd NARs of --nix-store (default none)\n"
    "  --priority N            nix-cache-info Priority\n"
    "  --threads N             threadpool size (default 4; 64 with --s3)\n"
    "  --max-connections N     connections at once (default 1024)\n"
    "  --header-timeout MS     a request head must arrive within MS (default 10000)\n"
    "  --idle-timeout MS       an idle keep-alive connection closes after MS (default 60000)\n"
    "  --body-stall-timeout MS a body moving no byte for MS is aborted (default 30000)\n"
    "  --store-timeout MS      a store call that has not returned after MS answers 503\n"
    "                          (default 5000; 0: wait as long as the store takes)\n"
    "  --log-format text|json  log lines on stderr (default text)\n"
    "  --access-log            log every request\n"
    "\n"
    "Uploads (nix copy --to 'http://HOST:PORT?compression=zstd'), to --cache or --s3:\n"
    "  --upload-token-file F   tokens, one per line: NAME read|write TOKEN (# comments);\n"
    "                          enables uploads; reloaded on SIGHUP. Clients send a token\n"
    "                          as 'Authorization: Bearer TOKEN' or as the netrc password\n"
    "  --trusted-key NAME:KEY  a public key whose narinfo signatures are accepted;\n"
    "                          repeatable\n"
    "  --sign-uploads          sign uploaded narinfo with the first --key-file instead\n"
    "                          of requiring a trusted signature\n"
    "  --max-upload-size N     largest upload in bytes, K/M/G suffixes (default 16G)\n"
    "  --min-free-space N      refuse uploads (507) that would leave less free on the\n"
    "                          cache's filesystem (default 1G; 0: no floor)\n"
    "  --allow-overwrite       a different narinfo may replace one already there\n"
    "  --private               every read needs a token (read or write scope)\n"
    "  --help                  this text\n"
    "\n"
    "Under systemd (no libsystemd needed):\n"
    "  NOTIFY_SOCKET           READY=1, STATUS=, STOPPING=1 (Type=notify)\n"
    "  WATCHDOG_USEC           WATCHDOG=1 after passing health probes (WatchdogSec=)\n"
    "  LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES\n"
    "                          serve on the sockets passed (socket activation)\n"
    "  SIGQUIT, SIGABRT        write every thread's stack to stderr, then die\n"
    "\n"
    "Test only:\n"
    "  NARCACHE_FAULT_PROBE_BLOCK_FILE=PATH\n"
    "                          the store's health probe blocks while PATH exists\n"
    "  NARCACHE_FAULT_STORE_BLOCK_FILE=PATH\n"
    "                          every store call blocks while PATH exists\n";

static int parse_int(const char *v, long min, long max, long *out) {
  char *end = NULL;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || n < min || n > max)
    return -1;
  *out = n;
  return 0;
}

/* "--name VALUE" or "--name=VALUE"; NULL if argv[*i] is not --name. */
static const char *option_value(int argc, char **argv, int *i, const char *name, int *missing) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) != 0)
    return NULL;
  if (argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (argv[*i][n] != '\0')
    return NULL;
  if (*i + 1 >= argc) {
    *missing = 1;
    return NULL;
  }
  return argv[++*i];
}

/* "123", "64K", "500M", "16G" (powers of 1024). */
static int parse_size(const char *v, int64_t *out) {
  char *end = NULL;
  errno = 0;
  long long n = strtoll(v, &end, 10);
  int shift = 0;
  if (end != NULL && (*end == 'K' || *end == 'k'))
    shift = 10;
  else if (end != NULL && (*end == 'M' || *end == 'm'))
    shift = 20;
  else if (end != NULL && (*end == 'G' || *end == 'g'))
    shift = 30;
  if (shift != 0)
    end++;
  if (errno != 0 || end == v || *end != '\0' || n < 1 || n > (INT64_MAX >> shift))
    return -1;
  *out = (int64_t)n << shift;
  return 0;
}

static int parse_args(int argc, char **argv, daemon_options *o) {
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    const char *v;
    long n;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(usage_text, stdout);
      exit(0);
    } else if ((v = option_value(argc, argv, &i, "--cache", &missing)) != NULL) {
      o->cache_dir = v;
    } else if ((v = option_value(argc, argv, &i, "--s3", &missing)) != NULL) {
      o->s3_url = v;
    } else if (strcmp(argv[i], "--s3-redirect") == 0) {
      o->s3_redirect = 1;
    } else if ((v = option_value(argc, argv, &i, "--s3-public-endpoint", &missing)) != NULL) {
      o->s3_public_endpoint = v;
    } else if ((v = option_value(argc, argv, &i, "--s3-ca-file", &missing)) != NULL) {
      o->s3_ca_file = v;
    } else if ((v = option_value(argc, argv, &i, "--s3-credentials-file", &missing)) != NULL) {
      o->s3_credentials_file = v;
    } else if (strcmp(argv[i], "--nix-store") == 0 || strncmp(argv[i], "--nix-store=", 12) == 0) {
      o->nix_store = 1;
      if (argv[i][11] == '=')
        o->store_dir = argv[i] + 12;
      else if (i + 1 < argc && argv[i + 1][0] == '/')
        o->store_dir = argv[++i];
    } else if ((v = option_value(argc, argv, &i, "--db", &missing)) != NULL) {
      o->db_path = v;
    } else if ((v = option_value(argc, argv, &i, "--listen", &missing)) != NULL) {
      if (o->n_listen == DAEMON_MAX_LISTEN)
        return daemon_usage_error("too many --listen");
      o->listen[o->n_listen++] = v;
    } else if ((v = option_value(argc, argv, &i, "--key-file", &missing)) != NULL) {
      if (o->n_key_files == DAEMON_MAX_KEYS)
        return daemon_usage_error("too many --key-file");
      o->key_files[o->n_key_files++] = v;
    } else if ((v = option_value(argc, argv, &i, "--compression", &missing)) != NULL) {
      if (strcmp(v, "none") != 0 && strcmp(v, "zstd") != 0)
        return daemon_usage_error("--compression must be none or zstd");
      o->zstd = strcmp(v, "zstd") == 0;
    } else if ((v = option_value(argc, argv, &i, "--priority", &missing)) != NULL) {
      if (parse_int(v, 0, 1000000, &n) < 0)
        return daemon_usage_error("bad --priority");
      o->priority = n;
    } else if ((v = option_value(argc, argv, &i, "--threads", &missing)) != NULL) {
      if (parse_int(v, 1, 1024, &n) < 0)
        return daemon_usage_error("bad --threads");
      o->threads = (int)n;
    } else if ((v = option_value(argc, argv, &i, "--max-connections", &missing)) != NULL) {
      if (parse_int(v, 1, 1000000, &n) < 0)
        return daemon_usage_error("bad --max-connections");
      o->max_connections = n;
    } else if ((v = option_value(argc, argv, &i, "--header-timeout", &missing)) != NULL) {
      if (parse_int(v, 1, 3600000, &n) < 0)
        return daemon_usage_error("bad --header-timeout");
      o->header_timeout_ms = n;
    } else if ((v = option_value(argc, argv, &i, "--idle-timeout", &missing)) != NULL) {
      if (parse_int(v, 1, 3600000, &n) < 0)
        return daemon_usage_error("bad --idle-timeout");
      o->idle_timeout_ms = n;
    } else if ((v = option_value(argc, argv, &i, "--body-stall-timeout", &missing)) != NULL) {
      if (parse_int(v, 1, 3600000, &n) < 0)
        return daemon_usage_error("bad --body-stall-timeout");
      o->body_stall_ms = n;
    } else if ((v = option_value(argc, argv, &i, "--store-timeout", &missing)) != NULL) {
      if (parse_int(v, 0, 3600000, &n) < 0)
        return daemon_usage_error("bad --store-timeout");
      o->store_timeout_ms = n;
    } else if (strcmp(argv[i], "--access-log") == 0) {
      o->access_log = 1;
    } else if ((v = option_value(argc, argv, &i, "--upload-token-file", &missing)) != NULL) {
      o->token_file = v;
    } else if ((v = option_value(argc, argv, &i, "--trusted-key", &missing)) != NULL) {
      if (o->n_trusted_keys == DAEMON_MAX_KEYS)
        return daemon_usage_error("too many --trusted-key");
      o->trusted_keys[o->n_trusted_keys++] = v;
    } else if (strcmp(argv[i], "--sign-uploads") == 0) {
      o->sign_uploads = 1;
    } else if ((v = option_value(argc, argv, &i, "--max-upload-size", &missing)) != NULL) {
      if (parse_size(v, &o->max_upload) < 0)
        return daemon_usage_error("bad --max-upload-size");
    } else if ((v = option_value(argc, argv, &i, "--min-free-space", &missing)) != NULL) {
      if (strcmp(v, "0") == 0)
        o->min_free = 0;
      else if (parse_size(v, &o->min_free) < 0)
        return daemon_usage_error("bad --min-free-space");
    } else if (strcmp(argv[i], "--allow-overwrite") == 0) {
      o->allow_overwrite = 1;
    } else if (strcmp(argv[i], "--private") == 0) {
      o->private_cache = 1;
    } else if ((v = option_value(argc, argv, &i, "--log-format", &missing)) != NULL) {
      if (strcmp(v, "text") != 0 && strcmp(v, "json") != 0)
        return daemon_usage_error("--log-format must be text or json");
      o->json_logs = strcmp(v, "json") == 0;
    } else {
      if (missing)
        fprintf(stderr, "narcache-server: %s needs a value\n", argv[i]);
      else
        fprintf(stderr, "narcache-server: unknown argument '%s'\n", argv[i]);
      return -1;
    }
    if (missing) {
      fprintf(stderr, "narcache-server: %s needs a value\n", argv[i]);
      return -1;
    }
  }
  if ((o->cache_dir != NULL) + (o->s3_url != NULL) + (o->nix_store != 0) != 1)
    return daemon_usage_error("give exactly one of --cache DIR, --s3 URL and --nix-store");
  if ((o->s3_redirect || o->s3_public_endpoint != NULL || o->s3_ca_file != NULL ||
       o->s3_credentials_file != NULL) &&
      o->s3_url == NULL)
    return daemon_usage_error("--s3-redirect, --s3-public-endpoint, --s3-ca-file and "
                              "--s3-credentials-file need --s3");
  if (o->sign_uploads && o->n_key_files == 0)
    return daemon_usage_error("--sign-uploads needs a --key-file");
  if (o->private_cache && o->token_file == NULL)
    return daemon_usage_error("--private needs --upload-token-file (the tokens that may read)");
  if (o->token_file != NULL && (o->cache_dir != NULL || o->s3_url != NULL) &&
      o->n_trusted_keys == 0 && !o->sign_uploads)
    return daemon_usage_error("uploads need --trusted-key or --sign-uploads "
                              "(no narinfo could be accepted otherwise)");
  return 0;
}

int main(int argc, char **argv) {
  daemon_options o = {0};
  o.priority = -1;
  o.store_timeout_ms = -1;
  o.min_free = -1;
  if (parse_args(argc, argv, &o) < 0) {
    fputs(usage_text, stderr);
    return 2;
  }
  return daemon_run(&o);
}
