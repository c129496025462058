/* The s3 store's configuration: an s3:// URL and the options merged,
 * endpoint and addressing worked out, credentials found (options, the
 * environment, or an AWS credentials file), numbers defaulted and checked.
 * Every refusal leaves a message for people in options->error. */
#define _GNU_SOURCE
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common_internal.h"
#include "s3_internal.h"

#define MIN_PART_SIZE (5u * 1024 * 1024) /* S3's floor for all but the last part */

static void set_error(const narcache_s3_options *o, const char *fmt, ...) NARCACHE_PRINTF(2, 3);
static void set_error(const narcache_s3_options *o, const char *fmt, ...) {
  if (o->error == NULL || o->error_size == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(o->error, o->error_size, fmt, ap);
  va_end(ap);
}

static char *dup_n(const char *s, size_t n) {
  char *d = narcache__malloc(n + 1);
  if (d != NULL) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static char *dup_str(const char *s) { return s != NULL ? dup_n(s, strlen(s)) : NULL; }

void narcache__s3_config_free(narcache__s3_config *c) {
  char **strings[] = {&c->scheme, &c->host, &c->redirect_scheme, &c->redirect_host, &c->ca_file,
                      &c->bucket, &c->prefix, &c->region,
                      &c->access_key, &c->secret_key, &c->session_token};
  for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
    if (*strings[i] != NULL)
      sodium_memzero(*strings[i], strlen(*strings[i]));
    narcache__free(*strings[i]);
    *strings[i] = NULL;
  }
}

/* Replace *field with a copy of [s, s+n) (percent-decoded when `decode`). */
static int set_field(char **field, const char *s, size_t n, int decode) {
  char *d = narcache__malloc(n + 1);
  if (d == NULL)
    return NARCACHE_ENOMEM;
  size_t k = decode ? narcache__percent_decode(d, s, n) : n;
  if (!decode)
    memcpy(d, s, n);
  d[k] = '\0';
  narcache__free(*field);
  *field = d;
  return NARCACHE_OK;
}

/* Parsed from the URL, then overridden by the options' own fields. */
typedef struct url_parts {
  char *bucket, *prefix, *endpoint, *region, *profile, *scheme, *addressing, *ca_file;
} url_parts;

static void url_parts_free(url_parts *u) {
  char **all[] = {&u->bucket, &u->prefix, &u->endpoint, &u->region,
                  &u->profile, &u->scheme, &u->addressing, &u->ca_file};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    narcache__free(*all[i]);
}

/* s3://BUCKET[/PREFIX][?endpoint=..&region=..&scheme=..&addressing=..&profile=..] */
static int parse_url(url_parts *u, const char *url, const narcache_s3_options *o) {
  if (strncmp(url, "s3://", 5) != 0) {
    set_error(o, "%s: not an s3:// URL", url);
    return NARCACHE_EINVAL;
  }
  const char *p = url + 5, *q = strchr(p, '?');
  const char *end = q != NULL ? q : p + strlen(p);
  const char *slash = memchr(p, '/', (size_t)(end - p));
  const char *bucket_end = slash != NULL ? slash : end;
  int rc = set_field(&u->bucket, p, (size_t)(bucket_end - p), 0);
  if (rc == 0 && slash != NULL)
    rc = set_field(&u->prefix, slash + 1, (size_t)(end - slash - 1), 1);
  while (rc == 0 && q != NULL && *q != '\0') {
    const char *param = q + 1, *amp = strchr(param, '&');
    const char *param_end = amp != NULL ? amp : param + strlen(param);
    const char *eq = memchr(param, '=', (size_t)(param_end - param));
    q = amp;
    if (eq == NULL)
      continue;
    size_t name_len = (size_t)(eq - param), value_len = (size_t)(param_end - eq - 1);
    static const char *const names[] = {"endpoint", "region",     "profile",
                                        "scheme",   "addressing", "ca-file"};
    char **fields[] = {&u->endpoint, &u->region,     &u->profile,
                       &u->scheme,   &u->addressing, &u->ca_file};
    int known = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
      if (strlen(names[i]) == name_len && memcmp(param, names[i], name_len) == 0) {
        rc = set_field(fields[i], eq + 1, value_len, 1);
        known = 1;
      }
    }
    if (!known) {
      set_error(o, "%s: unknown parameter %.*s", url, (int)name_len, param);
      rc = NARCACHE_EINVAL;
    }
  }
  return rc;
}

/* A bucket name S3 accepts (and that is safe in a host name and a path). */
static int bucket_name_ok(const char *b) {
  size_t n = strlen(b);
  if (n < 3 || n > 63)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') || b[i] == '-' ||
          b[i] == '.' || b[i] == '_' || (b[i] >= 'A' && b[i] <= 'Z')))
      return 0;
  return 1;
}

/* The prefix as stored: no leading '/', one trailing '/', or empty. */
static int normalize_prefix(narcache__s3_config *c, const char *prefix) {
  while (prefix != NULL && *prefix == '/')
    prefix++;
  size_t n = prefix != NULL ? strlen(prefix) : 0;
  while (n > 0 && prefix[n - 1] == '/')
    n--;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)prefix[i] < 0x20 || prefix[i] == 0x7f)
      return NARCACHE_EINVAL;
  c->prefix = narcache__malloc(n + 2);
  if (c->prefix == NULL)
    return NARCACHE_ENOMEM;
  memcpy(c->prefix, prefix ? prefix : "", n);
  if (n > 0)
    c->prefix[n++] = '/';
  c->prefix[n] = '\0';
  return NARCACHE_OK;
}

/* "http://host:port/", "host:port" (+ scheme) -> scheme and host. */
static int parse_endpoint(char **scheme_out, char **host_out, const char *endpoint,
                          const char *scheme) {
  const char *p = endpoint;
  const char *sep = strstr(p, "://");
  if (sep != NULL) {
    *scheme_out = dup_n(p, (size_t)(sep - p));
    p = sep + 3;
  } else {
    *scheme_out = dup_str(scheme != NULL ? scheme : "https");
  }
  size_t n = strcspn(p, "/?#");
  *host_out = dup_n(p, n);
  if (*scheme_out == NULL || *host_out == NULL)
    return NARCACHE_ENOMEM;
  if ((strcmp(*scheme_out, "http") != 0 && strcmp(*scheme_out, "https") != 0) || n == 0 ||
      strpbrk(*host_out, " @\"<>\\\r\n\t") != NULL)
    return NARCACHE_EINVAL;
  return NARCACHE_OK;
}

/* [profile] sections of an AWS credentials file: aws_access_key_id,
 * aws_secret_access_key, aws_session_token. */
static int read_credentials_file(narcache__s3_config *c, const char *path, const char *profile) {
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return NARCACHE_ENOTFOUND;
  char line[4096];
  int in_section = 0, rc = NARCACHE_OK;
  while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
    char *s = line;
    while (*s == ' ' || *s == '\t')
      s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
      s[--n] = '\0';
    if (*s == '[') {
      char *close = strchr(s, ']');
      in_section = close != NULL && (size_t)(close - s - 1) == strlen(profile) &&
                   memcmp(s + 1, profile, strlen(profile)) == 0;
      continue;
    }
    char *eq = strchr(s, '=');
    if (!in_section || eq == NULL || *s == '#' || *s == ';')
      continue;
    char *name_end = eq;
    while (name_end > s && (name_end[-1] == ' ' || name_end[-1] == '\t'))
      name_end--;
    char *value = eq + 1;
    while (*value == ' ' || *value == '\t')
      value++;
    size_t name_len = (size_t)(name_end - s);
    char **field = name_len == 17 && memcmp(s, "aws_access_key_id", 17) == 0       ? &c->access_key
                   : name_len == 21 && memcmp(s, "aws_secret_access_key", 21) == 0 ? &c->secret_key
                   : name_len == 17 && memcmp(s, "aws_session_token", 17) == 0     ? &c->session_token
                                                                                   : NULL;
    if (field != NULL)
      rc = set_field(field, value, strlen(value), 0);
  }
  sodium_memzero(line, sizeof line);
  fclose(f);
  return rc;
}

/* Keys in the options; else a credentials file or profile the caller
 * named; else the environment's keys; else the default credentials file. */
static int resolve_credentials(narcache__s3_config *c, const narcache_s3_options *o, const char *profile) {
  int file_named = o->credentials_file != NULL || profile != NULL;
  if (o->access_key != NULL || o->secret_key != NULL) {
    c->access_key = dup_str(o->access_key ? o->access_key : "");
    c->secret_key = dup_str(o->secret_key ? o->secret_key : "");
    c->session_token = dup_str(o->session_token);
  } else if (!file_named && getenv("AWS_ACCESS_KEY_ID") != NULL &&
             getenv("AWS_SECRET_ACCESS_KEY") != NULL) {
    c->access_key = dup_str(getenv("AWS_ACCESS_KEY_ID"));
    c->secret_key = dup_str(getenv("AWS_SECRET_ACCESS_KEY"));
    c->session_token = dup_str(getenv("AWS_SESSION_TOKEN"));
  } else {
    const char *path = o->credentials_file ? o->credentials_file
                                           : getenv("AWS_SHARED_CREDENTIALS_FILE");
    char home_path[4096];
    if (path == NULL && getenv("HOME") != NULL) {
      snprintf(home_path, sizeof home_path, "%s/.aws/credentials", getenv("HOME"));
      path = home_path;
    }
    if (profile == NULL)
      profile = getenv("AWS_PROFILE") ? getenv("AWS_PROFILE") : "default";
    int rc = path != NULL ? read_credentials_file(c, path, profile) : NARCACHE_ENOTFOUND;
    if (rc < 0 && rc != NARCACHE_ENOTFOUND)
      return rc;
    if (c->access_key == NULL || c->secret_key == NULL) {
      set_error(o, "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                   "profile [%s] in %s", profile, path ? path : "~/.aws/credentials");
      return NARCACHE_EINVAL;
    }
  }
  if (c->access_key == NULL || c->secret_key == NULL)
    return NARCACHE_ENOMEM;
  if (c->access_key[0] == '\0' || c->secret_key[0] == '\0' ||
      strlen(c->secret_key) > NARCACHE__SIGV4_SECRET_MAX ||
      strpbrk(c->access_key, "/\r\n ") != NULL) {
    set_error(o, "S3 credentials: the access key or secret key is empty or malformed");
    return NARCACHE_EINVAL;
  }
  return NARCACHE_OK;
}

static uint32_t or_default(uint32_t v, uint32_t d) { return v != 0 ? v : d; }

int narcache__s3_config_init(narcache__s3_config *c, const narcache_s3_options *o) {
  url_parts u = {0};
  int rc = o->url != NULL ? parse_url(&u, o->url, o) : NARCACHE_OK;
  const char *bucket = o->bucket ? o->bucket : u.bucket;
  const char *region = o->region ? o->region : u.region;
  if (region == NULL)
    region = getenv("AWS_REGION") ? getenv("AWS_REGION") : getenv("AWS_DEFAULT_REGION");
  const char *endpoint = o->endpoint ? o->endpoint : u.endpoint;
  if (rc == 0 && (bucket == NULL || !bucket_name_ok(bucket))) {
    set_error(o, "S3: %s bucket name", bucket ? "invalid" : "no");
    rc = NARCACHE_EINVAL;
  }
  if (rc == 0 && region != NULL && (region[0] == '\0' || strpbrk(region, "/ \r\n\t") != NULL)) {
    set_error(o, "S3: invalid region \"%s\"", region);
    rc = NARCACHE_EINVAL;
  }
  if (rc == 0) {
    c->bucket = dup_str(bucket);
    c->region = dup_str(region ? region : "us-east-1");
    rc = c->bucket && c->region ? normalize_prefix(c, o->prefix ? o->prefix : u.prefix)
                                : NARCACHE_ENOMEM;
    if (rc == NARCACHE_EINVAL)
      set_error(o, "S3: invalid prefix");
  }
  char aws_host[256];
  if (rc == 0 && endpoint == NULL) {
    snprintf(aws_host, sizeof aws_host, "https://s3.%s.amazonaws.com", c->region);
    endpoint = aws_host;
  }
  if (rc == 0 && (rc = parse_endpoint(&c->scheme, &c->host, endpoint, u.scheme)) == NARCACHE_EINVAL)
    set_error(o, "S3: invalid endpoint %s", endpoint);
  const char *public_endpoint = o->redirect_endpoint ? o->redirect_endpoint : endpoint;
  if (rc == 0 && (rc = parse_endpoint(&c->redirect_scheme, &c->redirect_host, public_endpoint,
                                      u.scheme)) == NARCACHE_EINVAL)
    set_error(o, "S3: invalid redirect endpoint %s", public_endpoint);
  if (rc == 0) {
    /* AWS itself wants virtual hosts; other servers mostly path style. */
    c->virtual_host = endpoint == aws_host;
    if (u.addressing != NULL)
      c->virtual_host = strcmp(u.addressing, "virtual") == 0;
    if (o->addressing != 0)
      c->virtual_host = o->addressing == NARCACHE_S3_ADDRESSING_VIRTUAL;
    if (c->virtual_host && strchr(c->bucket, '.') != NULL && strcmp(c->scheme, "https") == 0) {
      set_error(o, "S3: a bucket name with dots needs path-style addressing over https");
      rc = NARCACHE_EINVAL;
    }
  }
  const char *ca_file = o->ca_file ? o->ca_file : u.ca_file;
  if (rc == 0 && ca_file != NULL && (c->ca_file = dup_str(ca_file)) == NULL)
    rc = NARCACHE_ENOMEM;
  if (rc == 0)
    rc = resolve_credentials(c, o, o->profile ? o->profile : u.profile);
  url_parts_free(&u);
  c->flags = o->flags;
  c->insecure_tls = (o->flags & NARCACHE_STORE_S3_INSECURE_TLS) != 0;
  c->connect_timeout_ms = or_default(o->connect_timeout_ms, 3000);
  c->request_timeout_ms = or_default(o->request_timeout_ms, 10000);
  c->stall_timeout_ms = or_default(o->stall_timeout_ms, 30000);
  c->max_attempts = or_default(o->max_attempts, 4);
  c->cache_ttl_ms = or_default(o->cache_ttl_ms, 30000);
  c->negative_ttl_ms = or_default(o->negative_ttl_ms, 5000);
  c->cache_entries = o->flags & NARCACHE_STORE_S3_NO_CACHE ? 0 : or_default(o->cache_entries, 65536);
  c->max_connections = or_default(o->max_connections, 64);
  c->multipart_threshold = o->multipart_threshold ? o->multipart_threshold : 64ull << 20;
  c->part_size = o->part_size ? o->part_size : 16ull << 20;
  c->redirect_expires_s = or_default(o->redirect_expires_s, 3600);
  if (rc == 0 && c->redirect_expires_s > 604800) {
    set_error(o, "S3: redirect_expires_s is at most 604800 (7 days, SigV4's limit)");
    rc = NARCACHE_EINVAL;
  }
  if (rc == 0 && (c->part_size < MIN_PART_SIZE || c->part_size > (5ull << 30))) {
    set_error(o, "S3: part_size must be 5 MiB .. 5 GiB");
    rc = NARCACHE_EINVAL;
  }
  if (rc == 0 && c->multipart_threshold > (5ull << 30)) {
    set_error(o, "S3: multipart_threshold must be at most 5 GiB (S3's single PUT limit)");
    rc = NARCACHE_EINVAL;
  }
  if (rc == NARCACHE_ENOMEM)
    set_error(o, "out of memory");
  return rc;
}

