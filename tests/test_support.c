#include "test_support.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#ifndef NARCACHE_TEST_DATA_DIR
#error "NARCACHE_TEST_DATA_DIR must be defined by the build"
#endif

char *test_slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *data = malloc((size_t)size + 1);
  assert_non_null(data);
  assert_int_equal(fread(data, 1, (size_t)size, f), (size_t)size);
  data[size] = '\0';
  fclose(f);
  if (len != NULL)
    *len = (size_t)size;
  return data;
}

static char *read_file(const char *path) {
  char *text = test_slurp(path, NULL);
  if (text == NULL)
    fail_msg("cannot open %s", path);
  return text;
}

/* Turn the two-character escape "\n" back into a newline, in place. */
static size_t unescape(char *s) {
  size_t o = 0;
  for (size_t i = 0; s[i] != '\0'; i++) {
    if (s[i] == '\\' && s[i + 1] == 'n') {
      s[o++] = '\n';
      i++;
    } else {
      s[o++] = s[i];
    }
  }
  s[o] = '\0';
  return o;
}

void tsv_load(tsv_table *t, const char *relpath) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", NARCACHE_TEST_DATA_DIR, relpath);
  t->text = read_file(path);
  size_t lines = 0;
  for (const char *p = t->text; *p; p++)
    lines += *p == '\n';
  t->rows = calloc(lines + 1, sizeof *t->rows);
  assert_non_null(t->rows);
  t->nrows = 0;
  char *line = strchr(t->text, '\n'); /* skip the header */
  assert_non_null(line);
  line++;
  while (*line != '\0') {
    char *end = strchr(line, '\n');
    assert_non_null(end);
    *end = '\0';
    tsv_row *row = &t->rows[t->nrows++];
    char *field = line;
    for (;;) {
      assert_true(row->nfields < TSV_MAX_COLUMNS);
      char *tab = strchr(field, '\t');
      if (tab != NULL)
        *tab = '\0';
      row->len[row->nfields] = unescape(field);
      row->field[row->nfields++] = field;
      if (tab == NULL)
        break;
      field = tab + 1;
    }
    line = end + 1;
  }
}

void tsv_free(tsv_table *t) {
  free(t->rows);
  free(t->text);
  memset(t, 0, sizeof *t);
}

char *exact_copy(const void *data, size_t len) {
  char *copy = malloc(len != 0 ? len : 1);
  assert_non_null(copy);
  if (len != 0)
    memcpy(copy, data, len);
  return copy;
}

static int nibble(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  fail_msg("bad hex digit in golden data: %c", c);
  return -1;
}

uint8_t *test_hex_decode(const char *hex, size_t *out_len) {
  size_t n = strlen(hex);
  assert_int_equal(n % 2, 0);
  uint8_t *out = malloc(n / 2 + 1);
  assert_non_null(out);
  for (size_t i = 0; i < n / 2; i++)
    out[i] = (uint8_t)(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  *out_len = n / 2;
  return out;
}

char *test_data_slurp(const char *relpath, size_t *len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", NARCACHE_TEST_DATA_DIR, relpath);
  char *text = test_slurp(path, len);
  if (text == NULL)
    fail_msg("cannot read %s", path);
  return text;
}

const char *test_data_dir(void) { return NARCACHE_TEST_DATA_DIR; }
