#include "nar_builder.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nb_init(nar_builder *b) { memset(b, 0, sizeof *b); }

void nb_free(nar_builder *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

void nb_raw(nar_builder *b, const void *data, size_t len) {
  if (len == 0)
    return;
  if (b->cap - b->len < len) {
    size_t cap = b->cap != 0 ? b->cap : 256;
    while (cap - b->len < len)
      cap *= 2;
    unsigned char *grown = realloc(b->data, cap);
    if (grown == NULL) {
      fprintf(stderr, "nar_builder: out of memory\n");
      abort();
    }
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
}

void nb_u64(nar_builder *b, uint64_t v) {
  unsigned char le[8];
  for (int i = 0; i < 8; i++)
    le[i] = (unsigned char)(v >> (8 * i));
  nb_raw(b, le, sizeof le);
}

void nb_str(nar_builder *b, const void *data, size_t len) {
  static const unsigned char zeros[8];
  nb_u64(b, len);
  nb_raw(b, data, len);
  nb_raw(b, zeros, (8 - len % 8) % 8);
}

void nb_tok(nar_builder *b, const char *s) { nb_str(b, s, strlen(s)); }

void nb_toks(nar_builder *b, ...) {
  va_list ap;
  va_start(ap, b);
  const char *s;
  while ((s = va_arg(ap, const char *)) != NULL)
    nb_tok(b, s);
  va_end(ap);
}

void nb_magic(nar_builder *b) { nb_tok(b, "nix-archive-1"); }

void nb_file(nar_builder *b, int executable, const void *data, size_t len) {
  nb_toks(b, "(", "type", "regular", (const char *)NULL);
  if (executable)
    nb_toks(b, "executable", "", (const char *)NULL);
  nb_tok(b, "contents");
  nb_str(b, data, len);
  nb_tok(b, ")");
}

void nb_symlink(nar_builder *b, const char *target) {
  nb_toks(b, "(", "type", "symlink", "target", target, ")", (const char *)NULL);
}

void nb_dir_begin(nar_builder *b) { nb_toks(b, "(", "type", "directory", (const char *)NULL); }

void nb_entry(nar_builder *b, const void *name, size_t len) {
  nb_toks(b, "entry", "(", "name", (const char *)NULL);
  nb_str(b, name, len);
  nb_tok(b, "node");
}

void nb_close(nar_builder *b) { nb_tok(b, ")"); }
