/* Assemble raw NAR byte strings in tests, token by token, so a hostile
 * input reads as the list of frames it is made of. Independent of the
 * library's own writer. Aborts on out of memory. */
#ifndef NARCACHE_TEST_NAR_BUILDER_H
#define NARCACHE_TEST_NAR_BUILDER_H

#include <stddef.h>
#include <stdint.h>

typedef struct nar_builder {
  unsigned char *data;
  size_t len, cap;
} nar_builder;

void nb_init(nar_builder *b);
void nb_free(nar_builder *b);

/* Raw pieces: 8-byte little-endian integer; bytes as they are. */
void nb_u64(nar_builder *b, uint64_t v);
void nb_raw(nar_builder *b, const void *data, size_t len);

/* STR(data): length, bytes, zero padding to a multiple of 8. */
void nb_str(nar_builder *b, const void *data, size_t len);
/* STR(s) for a NUL-terminated token. */
void nb_tok(nar_builder *b, const char *s);
/* STR() of each argument in turn, up to a NULL. */
void nb_toks(nar_builder *b, ...);

/* Shorthands for the well-formed pieces of the grammar. */
void nb_magic(nar_builder *b);                                   /* "nix-archive-1" */
void nb_file(nar_builder *b, int executable, const void *data, size_t len); /* node */
void nb_symlink(nar_builder *b, const char *target);             /* node */
void nb_dir_begin(nar_builder *b);                               /* ( type directory */
void nb_entry(nar_builder *b, const void *name, size_t len);     /* entry ( name N node */
void nb_close(nar_builder *b);                                   /* ) */

#endif
