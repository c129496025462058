/* `.ls` listings: the JSON Nix writes beside a NAR (write-nar-listing).
 *
 * Byte-for-byte as Nix 2.8: compact, keys in the order type, size,
 * executable (only when true), narOffset; entries in NAR order. Strings
 * escape '"' and '\\', \t \n \r by name, other bytes below 0x20 as \u00XX,
 * and copy every other byte unchanged (no UTF-8 validation). */
#include "common_internal.h"
#include "nar_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int put_json_string(narcache__buf *b, const char *s, size_t len) {
  if (narcache__buf_reserve(b, len + 2) < 0)
    return NARCACHE_ENOMEM;
  int rc = narcache__buf_append(b, "\"", 1);
  size_t run = 0; /* bytes copied verbatim since the last escape */
  for (size_t i = 0; i < len && rc == 0; i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[8];
    size_t esc_len = 0;
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      esc_len = 2;
    } else if (c == '\t' || c == '\n' || c == '\r') {
      esc[0] = '\\';
      esc[1] = c == '\t' ? 't' : c == '\n' ? 'n' : 'r';
      esc_len = 2;
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      esc_len = 6;
    }
    if (esc_len == 0) {
      run++;
      continue;
    }
    rc = narcache__buf_append(b, s + i - run, run);
    run = 0;
    if (rc == 0)
      rc = narcache__buf_append(b, esc, esc_len);
  }
  if (rc == 0)
    rc = narcache__buf_append(b, s + len - run, run);
  if (rc == 0)
    rc = narcache__buf_append(b, "\"", 1);
  return rc;
}

int narcache__nar_listing_event(narcache__nar_listing *l, const narcache_nar_event *ev) {
  narcache__buf *b = &l->json;
  char num[96];
  int rc = 0;
  if (b->len == 0)
    rc = narcache__buf_append_str(b, "{\"version\":1,\"root\":");
  if (rc < 0)
    return NARCACHE_ENOMEM;
  switch (ev->type) {
  case NARCACHE_NAR_DIR_BEGIN:
    rc = narcache__buf_append_str(b, "{\"type\":\"directory\",\"entries\":{");
    if (rc == 0)
      rc = narcache__buf_append(&l->first, "\1", 1);
    break;
  case NARCACHE_NAR_ENTRY:
    if (l->first.data[l->first.len - 1])
      l->first.data[l->first.len - 1] = 0;
    else
      rc = narcache__buf_append(b, ",", 1);
    if (rc == 0)
      rc = put_json_string(b, ev->name, ev->name_len);
    if (rc == 0)
      rc = narcache__buf_append(b, ":", 1);
    break;
  case NARCACHE_NAR_FILE_BEGIN:
    snprintf(num, sizeof num, "{\"type\":\"regular\",\"size\":%" PRIu64, ev->size);
    rc = narcache__buf_append_str(b, num);
    if (rc == 0 && ev->executable)
      rc = narcache__buf_append_str(b, ",\"executable\":true");
    snprintf(num, sizeof num, ",\"narOffset\":%" PRIu64 "}", ev->offset);
    if (rc == 0)
      rc = narcache__buf_append_str(b, num);
    break;
  case NARCACHE_NAR_SYMLINK:
    rc = narcache__buf_append_str(b, "{\"type\":\"symlink\",\"target\":");
    if (rc == 0)
      rc = put_json_string(b, ev->name, ev->name_len);
    if (rc == 0)
      rc = narcache__buf_append(b, "}", 1);
    break;
  case NARCACHE_NAR_DIR_END:
    l->first.len--;
    rc = narcache__buf_append_str(b, "}}");
    break;
  case NARCACHE_NAR_END:
    rc = narcache__buf_append(b, "}", 1);
    break;
  default: /* FILE_DATA, FILE_END carry nothing for a listing */
    break;
  }
  return rc < 0 ? NARCACHE_ENOMEM : NARCACHE_OK;
}

void narcache__nar_listing_free(narcache__nar_listing *l) {
  narcache__buf_free(&l->json);
  narcache__buf_free(&l->first);
}

/* ---- streaming lister ----------------------------------------------------------- */

struct narcache_nar_lister {
  narcache_nar_parser *parser;
  narcache__nar_listing listing;
  int done;
  int error;
};

int narcache_nar_lister_new(narcache_nar_lister **out) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  narcache_nar_lister *l = narcache__calloc(1, sizeof *l);
  if (l == NULL)
    return NARCACHE_ENOMEM;
  int rc = narcache_nar_parser_new(&l->parser);
  if (rc < 0) {
    narcache__free(l);
    return rc;
  }
  *out = l;
  return NARCACHE_OK;
}

int narcache_nar_lister_set_limit(narcache_nar_lister *l, int limit, uint64_t value) {
  if (l == NULL)
    return NARCACHE_EINVAL;
  return narcache_nar_parser_set_limit(l->parser, limit, value);
}

int narcache_nar_lister_write(narcache_nar_lister *l, narcache_inbuf *in) {
  if (l == NULL)
    return NARCACHE_EINVAL;
  if (l->error != 0)
    return l->error;
  narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
  int rc;
  while ((rc = narcache_nar_parser_next(l->parser, in, &ev)) > 0) {
    int added = narcache__nar_listing_event(&l->listing, &ev);
    if (added < 0)
      return l->error = added;
    if (rc == NARCACHE_NAR_END)
      l->done = 1;
  }
  if (rc < 0)
    return l->error = rc;
  return l->done;
}

int narcache_nar_lister_finish(narcache_nar_lister *l, char **json_out, size_t *len_out) {
  if (l == NULL || json_out == NULL)
    return NARCACHE_EINVAL;
  *json_out = NULL;
  if (l->error != 0)
    return l->error;
  int rc = narcache_nar_parser_finish(l->parser);
  if (rc < 0)
    return l->error = rc;
  if (!l->done) { /* END not consumed by write() yet: drain it */
    narcache_nar_event ev = NARCACHE_NAR_EVENT_INIT;
    narcache_inbuf empty = {"", 0, 0};
    while ((rc = narcache_nar_parser_next(l->parser, &empty, &ev)) > 0)
      if ((rc = narcache__nar_listing_event(&l->listing, &ev)) < 0)
        return l->error = rc;
  }
  return narcache__buf_take(&l->listing.json, json_out, len_out);
}

const char *narcache_nar_lister_errmsg(const narcache_nar_lister *l) {
  if (l == NULL)
    return "";
  if (l->error == NARCACHE_ENOMEM)
    return "out of memory";
  return narcache_nar_parser_errmsg(l->parser);
}

uint64_t narcache_nar_lister_erroffset(const narcache_nar_lister *l) {
  return l != NULL ? narcache_nar_parser_erroffset(l->parser) : 0;
}

void narcache_nar_lister_free(narcache_nar_lister *l) {
  if (l == NULL)
    return;
  narcache_nar_parser_free(l->parser);
  narcache__nar_listing_free(&l->listing);
  narcache__free(l);
}

/* ---- from a dumper's index --------------------------------------------------------- */

static int listing_cb(void *ctx, const narcache_nar_event *ev) {
  return narcache__nar_listing_event(ctx, ev);
}

int narcache_nar_dumper_listing(char **json_out, size_t *len_out, narcache_nar_dumper *d) {
  if (json_out == NULL || d == NULL)
    return NARCACHE_EINVAL;
  *json_out = NULL;
  narcache__nar_listing listing = {{0}, {0}};
  int rc = narcache__nar_dumper_events(d, listing_cb, &listing);
  if (rc == 0)
    rc = narcache__buf_take(&listing.json, json_out, len_out);
  narcache__nar_listing_free(&listing);
  return rc;
}
