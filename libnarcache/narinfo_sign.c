/* What a narinfo signature covers (the fingerprint), and signing and
 * verifying it with Nix's trust rules. */
#include "common_internal.h"
#include "hash_internal.h"
#include "narinfo_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Signatures are 64 bytes; their base64 text is 88 characters. */
#define SIG_BYTES 64
#define SIG_TEXT_MAX 88

static char *put(char *p, const void *data, size_t len) {
  memcpy(p, data, len);
  return p + len;
}

int narcache__narinfo_fingerprint(narcache__buf *out, const narcache_narinfo *ni) {
  const narcache__narinfo_fields *f = &ni->f;
  if (f->store_path.s == NULL || !f->has_nar_hash || f->nar_size == 0)
    return NARCACHE_EBADNARINFO;
  char hash[NARCACHE_HASH_STRING_MAX];
  size_t hash_len = 0;
  int rc = narcache_hash_format(hash, sizeof hash, &hash_len, &f->nar_hash, NARCACHE_HASH_NIX32, 1);
  if (rc < 0)
    return rc;
  char size[24];
  int size_len = snprintf(size, sizeof size, "%" PRIu64, f->nar_size);
  size_t refs_len = 0;
  for (size_t i = 0; i < f->references.count; i++)
    refs_len += 1 + ni->store_dir_len + 1 + f->references.items[i].len;
  size_t total = 2 + f->store_path.len + 1 + hash_len + 1 + (size_t)size_len + 1 + refs_len;
  if ((rc = narcache__buf_reserve(out, total)) < 0)
    return rc;
  /* Written in place: with thousands of references, per-piece append
   * calls cost more than the copying (see bench/README.md). */
  char *p = out->data + out->len;
  p = put(p, "1;", 2);
  p = put(p, f->store_path.s, f->store_path.len);
  p = put(p, ";", 1);
  p = put(p, hash, hash_len);
  p = put(p, ";", 1);
  p = put(p, size, (size_t)size_len);
  p = put(p, ";", 1);
  /* The set is sorted by base name; with one store directory in front of
   * every name that is also the bytewise order of the full paths. */
  for (size_t i = 0; i < f->references.count; i++) {
    if (i > 0)
      p = put(p, ",", 1);
    p = put(p, ni->store_dir, ni->store_dir_len);
    p = put(p, "/", 1);
    p = put(p, f->references.items[i].s, f->references.items[i].len);
  }
  out->len += (size_t)(p - (out->data + out->len));
  return NARCACHE_OK;
}

int narcache_narinfo_fingerprint(char **out, size_t *out_len, const narcache_narinfo *ni) {
  if (out == NULL || ni == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  narcache__buf b = {0};
  int rc = narcache__narinfo_fingerprint(&b, ni);
  if (rc == 0)
    rc = narcache__buf_take(&b, out, out_len);
  narcache__buf_free(&b);
  return rc;
}

/* Remove every Sig entry written by key `name`. */
static void drop_sigs_by(narcache__strset *sigs, const char *name, size_t name_len) {
  size_t kept = 0;
  for (size_t i = 0; i < sigs->count; i++) {
    narcache__str *s = &sigs->items[i];
    if (s->len > name_len && s->s[name_len] == ':' && memcmp(s->s, name, name_len) == 0)
      narcache__free(s->s);
    else
      sigs->items[kept++] = *s;
  }
  sigs->count = kept;
}

int narcache_narinfo_sign(narcache_narinfo *ni, const narcache_key *key) {
  if (ni == NULL || key == NULL || !narcache_key_is_secret(key))
    return NARCACHE_EINVAL;
  narcache__buf fp = {0};
  int rc = narcache__narinfo_fingerprint(&fp, ni);
  uint8_t sig[SIG_BYTES];
  if (rc == 0)
    rc = narcache_key_sign(sig, sizeof sig, key, fp.data, fp.len);
  narcache__buf_free(&fp);
  if (rc < 0)
    return rc;
  size_t name_len = 0;
  const char *name = narcache_key_name(key, &name_len);
  char line[NARCACHE_KEY_NAME_MAX + 1 + SIG_TEXT_MAX + 1];
  memcpy(line, name, name_len);
  line[name_len] = ':';
  size_t digits = 0;
  rc = narcache_base64_encode(line + name_len + 1, sizeof line - name_len - 1, &digits, sig,
                              sizeof sig);
  if (rc < 0)
    return rc;
  drop_sigs_by(&ni->f.sigs, name, name_len);
  return narcache__strset_insert(&ni->f.sigs, line, name_len + 1 + digits);
}

/* The first trusted key called name[0..len), or NULL. */
static const narcache_key *trusted_key_named(const narcache_key *const *keys, size_t n_keys,
                                             const char *name, size_t len) {
  for (size_t i = 0; i < n_keys; i++) {
    size_t key_len = 0;
    const char *key_name = narcache_key_name(keys[i], &key_len);
    if (key_len == len && memcmp(key_name, name, len) == 0)
      return keys[i];
  }
  return NULL;
}

typedef struct verdict {
  const narcache_key *good;      /* first key whose signature verified */
  const narcache_key *bad;       /* first key whose signature failed */
  const narcache_key *malformed; /* first key whose signature was not 64 bytes of base64 */
} verdict;

static void check_one_sig(verdict *v, const narcache__str *sig, const narcache_key *const *keys,
                          size_t n_keys, const narcache__buf *fp) {
  const char *colon = memchr(sig->s, ':', sig->len);
  if (colon == NULL)
    return;
  size_t name_len = (size_t)(colon - sig->s);
  const narcache_key *key = trusted_key_named(keys, n_keys, sig->s, name_len);
  if (key == NULL)
    return; /* not ours to judge, as in Nix */
  uint8_t bytes[SIG_BYTES + 3];
  size_t got = 0, at = 0;
  int rc = narcache__base64_decode(bytes, sizeof bytes, &got, colon + 1, sig->len - name_len - 1,
                                   &at, 1);
  if (rc < 0 || got != SIG_BYTES) {
    if (v->malformed == NULL)
      v->malformed = key;
    return;
  }
  if (narcache_key_verify(key, bytes, got, fp->data, fp->len) == 0) {
    if (v->good == NULL)
      v->good = key;
  } else if (v->bad == NULL) {
    v->bad = key;
  }
}

int narcache_narinfo_verify(const narcache_key **key_out, const narcache_narinfo *ni,
                            const narcache_key *const *keys, size_t n_keys) {
  if (key_out != NULL)
    *key_out = NULL;
  if (ni == NULL || (keys == NULL && n_keys != 0))
    return NARCACHE_EINVAL;
  for (size_t i = 0; i < n_keys; i++)
    if (keys[i] == NULL)
      return NARCACHE_EINVAL;
  narcache__buf fp = {0};
  int rc = narcache__narinfo_fingerprint(&fp, ni);
  if (rc < 0) {
    narcache__buf_free(&fp);
    return rc;
  }
  verdict v = {NULL, NULL, NULL};
  for (size_t i = 0; i < ni->f.sigs.count; i++)
    check_one_sig(&v, &ni->f.sigs.items[i], keys, n_keys, &fp);
  narcache__buf_free(&fp);
  /* Nix 2.8 aborts on a malformed signature by a trusted key, whatever
   * the other signatures say; reporting failure keeps us from accepting a
   * path the client would refuse. */
  const narcache_key *which = v.malformed ? v.malformed : v.good ? v.good : v.bad;
  rc = v.malformed ? NARCACHE_EBADSIG
       : v.good    ? NARCACHE_OK
       : v.bad     ? NARCACHE_EBADSIG
                   : NARCACHE_ENOTFOUND;
  if (key_out != NULL)
    *key_out = which;
  return rc;
}
