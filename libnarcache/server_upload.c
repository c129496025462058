/* What happens to the bytes of an upload (PUT) once the connection has
 * read them. Every function here runs on a pool thread (store calls and
 * hashing may take long); the HTTP side (reading the body, 100-continue,
 * answering) is server_conn.c.
 *
 * Nothing unverified is published:
 *  - a NAR is streamed into a store upload while it is hashed, decompressed
 *    (by its file extension: none or zstd) and parsed by the strict NAR
 *    parser; its name must be the nix32 SHA-256 of its bytes, as Nix names
 *    them; only then is it committed (atomically, by the store);
 *  - a narinfo is held in memory and checked whole: it parses, its
 *    StorePath is in the cache's store directory under the hash part it
 *    is uploaded as, its NAR is in the store and hashes (file and NAR,
 *    sizes too) to what it says, every reference is in the cache, and a
 *    trusted key signed it (or the server signs it with its own key);
 *    the same narinfo again is a no-op, a different one a conflict unless
 *    overwriting is allowed;
 *  - a nix-cache-info must parse and name the cache's store directory.
 *
 * Each failure is an HTTP status and a reason for the client and the log.
 * Refusals the client caused are 4xx, never 5xx: Nix 2.8 retries a PUT
 * answered with 5xx with the original Content-Length and an empty body
 * (spec §11). */
#define _GNU_SOURCE
#include "server_internal.h"
#include "store_internal.h"
#include "narcache/compress.h"
#include "narcache/hash.h"
#include "narcache/nar.h"
#include "narcache/narinfo.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CACHE_INFO_MAX_BYTES (64 * 1024)
#define DECODE_BUFFER (128 * 1024)

/* A NAR being checked as it streams by: the stored bytes' hash and size,
 * the decoded NAR's hash and size, and its grammar. */
typedef struct nar_check {
  narcache_hasher *file_hash, *nar_hash;
  narcache_codec *codec; /* NULL: stored uncompressed */
  narcache_nar_parser *parser;
  char *decoded;
  int ended; /* the parser saw the archive's end */
} nar_check;

struct srv_upload {
  srv_t *server;
  int kind;
  char name[256];
  size_t name_len;
  narcache_upload *store_upload; /* streamed kinds */
  nar_check check;               /* NARs */
  char *held;                    /* narinfo and nix-cache-info: the whole body */
  size_t held_len, held_size;
};

NARCACHE_PRINTF(4, 5)
static int refuse(int status, char *why, size_t why_size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, why_size, fmt, ap);
  va_end(ap);
  return status;
}

/* A store error as an HTTP status. */
static int store_status(int rc) {
  switch (rc) {
  case NARCACHE_ENOTSUP:
    return 405; /* the store is read-only */
  case NARCACHE_ENOTFOUND:
  case NARCACHE_EINVAL:
  case NARCACHE_EBADNARINFO:
  case NARCACHE_EMISUSE:
    return 400;
  case NARCACHE_ELIMIT:
    return 413;
  case NARCACHE_ECONFLICT:
    return 409;
  case NARCACHE_EUNAVAIL:
    return 503;
  case NARCACHE_ENOSPACE:
    return 507;
  default:
    return 500;
  }
}

static int store_failed(int rc, const char *detail, char *why, size_t why_size) {
  return refuse(store_status(rc), why, why_size, "%s",
                detail != NULL && detail[0] != '\0' ? detail : narcache_strerror(rc));
}

/* ------------------------------------------------------------------ */
/* NAR checks                                                          */
/* ------------------------------------------------------------------ */

static void nar_check_free(nar_check *k) {
  narcache_hasher_free(k->file_hash);
  narcache_hasher_free(k->nar_hash);
  narcache_codec_free(k->codec);
  narcache_nar_parser_free(k->parser);
  narcache__free(k->decoded);
  memset(k, 0, sizeof *k);
}

/* The codec a NAR file name's extension says: ".nar" none, ".nar.zst"
 * zstd; 0 for forms that cannot be checked here. */
static int codec_of_name(const char *name, size_t len) {
  if (len > 4 && memcmp(name + len - 4, ".nar", 4) == 0)
    return NARCACHE_CODEC_NONE;
  if (len > 8 && memcmp(name + len - 8, ".nar.zst", 8) == 0)
    return NARCACHE_CODEC_ZSTD;
  return 0;
}

static int nar_check_init(nar_check *k, int codec_type) {
  memset(k, 0, sizeof *k);
  if (narcache_hasher_new(&k->file_hash, NARCACHE_HASH_SHA256) != 0 ||
      narcache_hasher_new(&k->nar_hash, NARCACHE_HASH_SHA256) != 0 ||
      narcache_nar_parser_new(&k->parser) != 0)
    return -1;
  if (codec_type == NARCACHE_CODEC_ZSTD &&
      (narcache_codec_new_decompressor(&k->codec, codec_type) != 0 ||
       (k->decoded = narcache__malloc(DECODE_BUFFER)) == NULL))
    return -1;
  return 0;
}

/* NAR bytes: hash and parse them. */
static int nar_check_decoded(nar_check *k, const void *data, size_t len, char *why, size_t why_size) {
  narcache_hasher_update(k->nar_hash, data, len);
  narcache_inbuf in = {data, len, 0};
  for (;;) { /* until it wants more input: events may follow the last byte */
    narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
    int rc = narcache_nar_parser_next(k->parser, &in, &ev);
    if (rc < 0)
      return refuse(400, why, why_size, "not a valid NAR at byte %llu: %s",
                    (unsigned long long)narcache_nar_parser_erroffset(k->parser),
                    narcache_nar_parser_errmsg(k->parser));
    if (rc == NARCACHE_NAR_END)
      k->ended = 1;
    if (rc == 0 || (rc == NARCACHE_NAR_END && in.pos == in.size))
      return 0;
  }
}

/* Stored bytes: hash them, decode them, check the NAR inside. */
static int nar_check_feed(nar_check *k, const void *data, size_t len, char *why, size_t why_size) {
  narcache_hasher_update(k->file_hash, data, len);
  if (k->codec == NULL)
    return nar_check_decoded(k, data, len, why, why_size);
  narcache_inbuf in = {data, len, 0};
  for (;;) {
    narcache_outbuf out = {k->decoded, DECODE_BUFFER, 0};
    int rc = narcache_codec_process(k->codec, &out, &in, NARCACHE_FLUSH_NONE);
    if (rc < 0)
      return refuse(400, why, why_size, "not valid zstd: %s", narcache_codec_errmsg(k->codec));
    int status = nar_check_decoded(k, k->decoded, out.pos, why, why_size);
    if (status != 0)
      return status;
    if (in.pos == in.size && out.pos < out.size)
      return 0;
  }
}

/* The end of the stored bytes: the frame and the archive must be whole. */
static int nar_check_end(nar_check *k, char *why, size_t why_size) {
  if (k->codec != NULL && narcache_codec_end(k->codec) != 0)
    return refuse(400, why, why_size, "zstd data truncated: %s", narcache_codec_errmsg(k->codec));
  if (narcache_nar_parser_finish(k->parser) != 0 || !k->ended)
    return refuse(400, why, why_size, "NAR truncated: %s", narcache_nar_parser_errmsg(k->parser));
  return 0;
}

/* ------------------------------------------------------------------ */
/* Begin, write                                                        */
/* ------------------------------------------------------------------ */

static int held_kind(int kind) {
  return kind == NARCACHE_OBJECT_NARINFO || kind == NARCACHE_OBJECT_CACHE_INFO;
}

int narcache__srv_upload_begin(srv_upload **out, srv_t *s, int kind, const char *name, size_t len,
                               uint64_t size, char *why, size_t why_size) {
  *out = NULL;
  if (len >= sizeof ((srv_upload *)0)->name)
    return refuse(400, why, why_size, "name too long");
  int codec = 0;
  if (kind == NARCACHE_OBJECT_NAR && (codec = codec_of_name(name, len)) == 0)
    return refuse(415, why, why_size,
                  "only .nar and .nar.zst uploads can be verified here "
                  "(nix copy --to 'http://...?compression=zstd' or compression=none)");
  uint64_t held_max = kind == NARCACHE_OBJECT_NARINFO ? NARCACHE_NARINFO_MAX_BYTES
                                                      : CACHE_INFO_MAX_BYTES;
  if (held_kind(kind) && size > held_max)
    return refuse(413, why, why_size, "larger than %llu bytes", (unsigned long long)held_max);
  srv_upload *u = narcache__calloc(1, sizeof *u);
  if (u == NULL)
    return refuse(503, why, why_size, "out of memory");
  u->server = s;
  u->kind = kind;
  memcpy(u->name, name, len);
  u->name_len = len;
  int status = 0;
  if (held_kind(kind)) {
    u->held_size = (size_t)size;
    if ((u->held = narcache__malloc(u->held_size + 1)) == NULL)
      status = refuse(503, why, why_size, "out of memory");
  } else {
    int rc = narcache_store_upload_begin(&u->store_upload, s->store, kind, name, len, size);
    if (rc != 0)
      status = store_failed(rc, NULL, why, why_size);
    else if (kind == NARCACHE_OBJECT_NAR && nar_check_init(&u->check, codec) != 0)
      status = refuse(503, why, why_size, "out of memory");
  }
  if (status != 0) {
    narcache__srv_upload_abort(u);
    return status;
  }
  *out = u;
  return 0;
}

int narcache__srv_upload_write(srv_upload *u, const void *data, size_t len, char *why,
                               size_t why_size) {
  if (u->held != NULL) {
    if (len > u->held_size - u->held_len)
      return refuse(400, why, why_size, "more bytes than announced");
    memcpy(u->held + u->held_len, data, len);
    u->held_len += len;
    return 0;
  }
  if (u->kind == NARCACHE_OBJECT_NAR) {
    int status = nar_check_feed(&u->check, data, len, why, why_size);
    if (status != 0)
      return status;
  }
  int rc = narcache_upload_write(u->store_upload, data, len);
  return rc == 0 ? 0 : store_failed(rc, narcache_upload_errmsg(u->store_upload), why, why_size);
}

/* ------------------------------------------------------------------ */
/* Commit                                                              */
/* ------------------------------------------------------------------ */

/* The NAR's name must be the nix32 SHA-256 of its stored bytes. */
static int check_nar_name(srv_upload *u, const narcache_hash *file_hash, char *why,
                          size_t why_size) {
  char expect[64];
  size_t n = 0;
  if (narcache_nix32_encode(expect, sizeof expect, &n, file_hash->digest, file_hash->len) != 0 ||
      u->name_len <= n || memcmp(u->name, expect, n) != 0 || u->name[n] != '.')
    return refuse(400, why, why_size, "the NAR's name is not the hash of its bytes (sha256:%.*s)",
                  (int)n, expect);
  return 0;
}

static int commit_nar(srv_upload *u, char *why, size_t why_size) {
  int status = nar_check_end(&u->check, why, why_size);
  narcache_hash file_hash;
  if (status == 0 && narcache_hasher_final(u->check.file_hash, &file_hash) != 0)
    status = refuse(500, why, why_size, "hashing failed");
  if (status == 0)
    status = check_nar_name(u, &file_hash, why, why_size);
  if (status != 0)
    return status;
  int rc = narcache_upload_commit(u->store_upload);
  return rc == 0 ? 0 : store_failed(rc, narcache_upload_errmsg(u->store_upload), why, why_size);
}

/* Stream the stored NAR a narinfo points to through the checks. */
static int check_stored_nar(srv_upload *u, const char *file, size_t file_len, nar_check *k,
                            uint64_t *file_size, char *why, size_t why_size) {
  memset(k, 0, sizeof *k); /* freed by the caller whatever happens */
  int codec = codec_of_name(file, file_len);
  if (codec == 0)
    return refuse(400, why, why_size, "URL must name a .nar or .nar.zst file");
  narcache_reader r;
  memset(&r, 0, sizeof r);
  int rc = narcache_store_open(&r, u->server->store, NARCACHE_OBJECT_NAR, file, file_len);
  if (rc == NARCACHE_ENOTFOUND)
    return refuse(409, why, why_size, "its NAR (nar/%.*s) is not in the cache: upload it first",
                  (int)file_len, file);
  if (rc != 0)
    return store_failed(rc, NULL, why, why_size);
  int status = nar_check_init(k, codec) == 0 ? 0 : refuse(503, why, why_size, "out of memory");
  char *buf = status == 0 ? narcache__malloc(DECODE_BUFFER) : NULL;
  if (status == 0 && buf == NULL)
    status = refuse(503, why, why_size, "out of memory");
  uint64_t at = 0;
  while (status == 0 && at < r.size) {
    size_t got = 0;
    rc = narcache_reader_read(&r, at, buf, DECODE_BUFFER, &got);
    if (rc != 0 || got == 0)
      status = store_failed(rc != 0 ? rc : NARCACHE_EIO, "cannot read the stored NAR", why, why_size);
    else
      status = nar_check_feed(k, buf, got, why, why_size);
    at += got;
  }
  if (status == 0)
    status = nar_check_end(k, why, why_size);
  *file_size = r.size;
  narcache__free(buf);
  narcache_reader_close(&r);
  return status;
}

static int hash_differs(const narcache_hash *a, const narcache_hash *b) {
  return a->algo != b->algo || a->len != b->len || memcmp(a->digest, b->digest, a->len) != 0;
}

/* The narinfo's NAR is there and is what the narinfo says. */
static int check_narinfo_nar(srv_upload *u, const narcache_narinfo *ni, char *why, size_t why_size) {
  size_t url_len = 0;
  const char *url = narcache_narinfo_url(ni, &url_len);
  if (url_len <= 4 || memcmp(url, "nar/", 4) != 0)
    return refuse(400, why, why_size, "URL must be nar/<file>");
  const char *compression = narcache_narinfo_compression(ni, NULL);
  int codec = codec_of_name(url + 4, url_len - 4);
  if ((codec == NARCACHE_CODEC_NONE && strcmp(compression, "none") != 0) ||
      (codec == NARCACHE_CODEC_ZSTD && strcmp(compression, "zstd") != 0))
    return refuse(400, why, why_size, "Compression: %s does not match the URL %s", compression, url);
  nar_check k;
  uint64_t file_size = 0;
  int status = check_stored_nar(u, url + 4, url_len - 4, &k, &file_size, why, why_size);
  narcache_hash file_hash, nar_hash, want;
  if (status == 0 && (narcache_hasher_final(k.file_hash, &file_hash) != 0 ||
                      narcache_hasher_final(k.nar_hash, &nar_hash) != 0))
    status = refuse(500, why, why_size, "hashing failed");
  uint64_t nar_size = status == 0 ? narcache_hasher_bytes(k.nar_hash) : 0;
  nar_check_free(&k);
  if (status != 0)
    return status;
  if (narcache_narinfo_nar_hash(ni, &want) != 0 || hash_differs(&want, &nar_hash))
    return refuse(400, why, why_size, "NarHash does not match the NAR in the cache");
  if (narcache_narinfo_nar_size(ni) != nar_size)
    return refuse(400, why, why_size, "NarSize %llu, but the NAR has %llu bytes",
                  (unsigned long long)narcache_narinfo_nar_size(ni), (unsigned long long)nar_size);
  if (narcache_narinfo_file_hash(ni, &want) == 0 &&
      (want.algo != NARCACHE_HASH_SHA256 || hash_differs(&want, &file_hash)))
    return refuse(400, why, why_size, "FileHash does not match the file in the cache");
  uint64_t size = 0;
  if (narcache_narinfo_file_size(ni, &size) == 0 && size != file_size)
    return refuse(400, why, why_size, "FileSize %llu, but the file has %llu bytes",
                  (unsigned long long)size, (unsigned long long)file_size);
  return 0;
}

/* Every path the narinfo refers to (but itself) is in the cache. */
static int check_references(srv_upload *u, const narcache_narinfo *ni, char *why, size_t why_size) {
  for (size_t i = 0; i < narcache_narinfo_reference_count(ni); i++) {
    size_t len = 0;
    const char *ref = narcache_narinfo_reference(ni, i, &len);
    if (len < 32 || memcmp(ref, u->name, 32) == 0)
      continue;
    narcache_reader r;
    memset(&r, 0, sizeof r);
    int rc = narcache_store_open(&r, u->server->store, NARCACHE_OBJECT_NARINFO, ref, 32);
    narcache_reader_close(&r);
    if (rc == NARCACHE_ENOTFOUND)
      return refuse(409, why, why_size, "reference %.*s is not in the cache: upload it first",
                    (int)len, ref);
    if (rc != 0)
      return store_failed(rc, NULL, why, why_size);
  }
  return 0;
}

/* A trusted key signed it, or the server signs it now (*signed_here). */
static int check_signature(srv_upload *u, narcache_narinfo *ni, int *signed_here, char *why,
                           size_t why_size) {
  srv_t *s = u->server;
  const narcache_key *key = NULL;
  int rc = s->n_trusted_keys > 0
               ? narcache_narinfo_verify(&key, ni, s->trusted_keys, s->n_trusted_keys)
               : NARCACHE_ENOTFOUND;
  if (rc == 0)
    return 0;
  if (rc == NARCACHE_EBADSIG)
    return refuse(403, why, why_size, "the signature by trusted key '%s' does not verify",
                  narcache_key_name(key, NULL));
  if (s->signing_key == NULL)
    return refuse(403, why, why_size, "not signed by a trusted key");
  rc = narcache_narinfo_sign(ni, s->signing_key);
  *signed_here = rc == 0;
  return rc == 0 ? 0 : refuse(500, why, why_size, "signing failed: %s", narcache_strerror(rc));
}

/* Store `text` as the object, unless the same is there already; a
 * different one only with NARCACHE_OPT_ALLOW_OVERWRITE. */
static int publish_held(srv_upload *u, const char *text, size_t len, char *why, size_t why_size) {
  srv_t *s = u->server;
  char *old = NULL;
  size_t old_len = 0;
  int rc = narcache_store_read_all(&old, &old_len, s->store, u->kind, u->name, u->name_len,
                                   NARCACHE_NARINFO_MAX_BYTES);
  if (rc == 0) {
    int same = old_len == len && memcmp(old, text, len) == 0;
    narcache_free(old);
    if (same)
      return 0;
    if (!s->opt[NARCACHE_OPT_ALLOW_OVERWRITE])
      return refuse(409, why, why_size, "a different %s is already in the cache",
                    u->kind == NARCACHE_OBJECT_NARINFO ? "narinfo" : "nix-cache-info");
  } else if (rc != NARCACHE_ENOTFOUND) {
    return store_failed(rc, NULL, why, why_size);
  }
  narcache_upload *up = NULL;
  rc = narcache_store_upload_begin(&up, s->store, u->kind, u->name, u->name_len, len);
  if (rc == 0)
    rc = narcache_upload_write(up, text, len);
  if (rc == 0)
    rc = narcache_upload_commit(up);
  int status = rc == 0 ? 0 : store_failed(rc, narcache_upload_errmsg(up), why, why_size);
  narcache_upload_free(up);
  return status;
}

static int commit_narinfo(srv_upload *u, char *why, size_t why_size) {
  const char *store_dir = narcache__store_dir(u->server->store);
  narcache_narinfo *ni = NULL;
  if (narcache_narinfo_new(&ni, store_dir) != 0)
    return refuse(503, why, why_size, "out of memory");
  int status = 0;
  size_t path_len = 0;
  const char *path = NULL;
  if (narcache_narinfo_parse(ni, u->held, u->held_len) != 0)
    status = refuse(400, why, why_size, "bad narinfo: %s", narcache_narinfo_errmsg(ni));
  else if ((path = narcache_narinfo_store_path(ni, &path_len)) == NULL ||
           path_len < strlen(store_dir) + 1 + 32 ||
           memcmp(path + strlen(store_dir) + 1, u->name, 32) != 0)
    status = refuse(400, why, why_size, "StorePath %s is not the path of %.32s", path ? path : "-",
                    u->name);
  if (status == 0)
    status = check_narinfo_nar(u, ni, why, why_size);
  if (status == 0)
    status = check_references(u, ni, why, why_size);
  int signed_here = 0;
  if (status == 0)
    status = check_signature(u, ni, &signed_here, why, why_size);
  /* kept byte for byte as uploaded, unless our signature was added */
  char *text = NULL;
  size_t len = 0;
  if (status == 0 && signed_here && narcache_narinfo_format(&text, &len, ni) != 0)
    status = refuse(500, why, why_size, "cannot format the narinfo");
  if (status == 0)
    status = publish_held(u, signed_here ? text : u->held, signed_here ? len : u->held_len, why,
                          why_size);
  narcache_free(text);
  narcache_narinfo_free(ni);
  return status;
}

static int commit_cache_info(srv_upload *u, char *why, size_t why_size) {
  narcache_cache_info *ci = NULL;
  if (narcache_cache_info_new(&ci) != 0)
    return refuse(503, why, why_size, "out of memory");
  int status = 0;
  const char *dir = NULL;
  if (narcache_cache_info_parse(ci, u->held, u->held_len) != 0)
    status = refuse(400, why, why_size, "bad nix-cache-info: %s", narcache_cache_info_errmsg(ci));
  else if ((dir = narcache_cache_info_store_dir(ci, NULL)) == NULL ||
           strcmp(dir, narcache__store_dir(u->server->store)) != 0)
    status = refuse(400, why, why_size, "StoreDir must be %s", narcache__store_dir(u->server->store));
  narcache_cache_info_free(ci);
  return status != 0 ? status : publish_held(u, u->held, u->held_len, why, why_size);
}

int narcache__srv_upload_commit(srv_upload *u, char *why, size_t why_size) {
  int status;
  if (u->held != NULL && u->held_len != u->held_size)
    status = refuse(400, why, why_size, "fewer bytes than announced");
  else if (u->kind == NARCACHE_OBJECT_NARINFO)
    status = commit_narinfo(u, why, why_size);
  else if (u->kind == NARCACHE_OBJECT_CACHE_INFO)
    status = commit_cache_info(u, why, why_size);
  else if (u->kind == NARCACHE_OBJECT_NAR)
    status = commit_nar(u, why, why_size);
  else {
    int rc = narcache_upload_commit(u->store_upload);
    status = rc == 0 ? 0 : store_failed(rc, narcache_upload_errmsg(u->store_upload), why, why_size);
  }
  narcache__srv_upload_abort(u); /* frees; a committed store upload leaves its object */
  return status;
}

void narcache__srv_upload_abort(srv_upload *u) {
  if (u == NULL)
    return;
  narcache_upload_free(u->store_upload);
  nar_check_free(&u->check);
  narcache__free(u->held);
  narcache__free(u);
}
