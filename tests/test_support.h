/* Small helpers shared by the cmocka tests: golden-table loading and
 * exact-length heap copies (so ASan catches any read past the end). */
#ifndef NARCACHE_TEST_SUPPORT_H
#define NARCACHE_TEST_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#define TSV_MAX_COLUMNS 8

/* One row of a tab-separated golden table; fields are NUL terminated and
 * "\n" escapes are already turned into newlines. */
typedef struct tsv_row {
  char *field[TSV_MAX_COLUMNS];
  size_t len[TSV_MAX_COLUMNS];
  size_t nfields;
} tsv_row;

typedef struct tsv_table {
  tsv_row *rows;
  size_t nrows;
  char *text;
} tsv_table;

/* Load tests/data/<relpath> (header line skipped). Aborts the test on error. */
void tsv_load(tsv_table *t, const char *relpath);
void tsv_free(tsv_table *t);

/* A whole file, malloc'd and NUL terminated (the NUL is not counted in
 * *len); NULL if it cannot be opened. */
char *test_slurp(const char *path, size_t *len);

/* The absolute path of tests/data. */
const char *test_data_dir(void);

/* test_slurp() of tests/data/<relpath>; fails the test if unreadable. */
char *test_data_slurp(const char *relpath, size_t *len);

/* Malloc'd copy of exactly `len` bytes, no terminator. Caller frees. */
char *exact_copy(const void *data, size_t len);

/* Decode lowercase/uppercase hex written by the generator (independent of
 * the library's own decoder). Returns a malloc'd buffer of *out_len bytes. */
uint8_t *test_hex_decode(const char *hex, size_t *out_len);

#endif
