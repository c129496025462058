/* Store path syntax: "<store dir>/<32 nix32 chars>-<name>". */
#include "common_internal.h"
#include "narcache/narinfo.h"

#include <string.h>

#define HASH_CHARS 32

static int fail_at(size_t *err_offset, size_t offset) {
  narcache__set_offset(err_offset, offset);
  return NARCACHE_EBADSTOREPATH;
}

static int is_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '+' || c == '-' || c == '.' || c == '_' || c == '?' || c == '=';
}

int narcache_store_path_check_name(const char *name, size_t len, size_t *err_offset) {
  if (name == NULL && len != 0)
    return NARCACHE_EINVAL;
  if (len == 0)
    return fail_at(err_offset, 0);
  if (len > NARCACHE_STORE_NAME_MAX)
    return fail_at(err_offset, NARCACHE_STORE_NAME_MAX);
  for (size_t i = 0; i < len; i++)
    if (!is_name_char(name[i]))
      return fail_at(err_offset, i);
  /* Newer Nix refuses names that look like "." or ".." to tools that
   * split on the dash; so do we. */
  if ((len == 1 && name[0] == '.') || (len == 2 && memcmp(name, "..", 2) == 0) ||
      (len >= 2 && memcmp(name, ".-", 2) == 0) || (len >= 3 && memcmp(name, "..-", 3) == 0))
    return fail_at(err_offset, 0);
  return NARCACHE_OK;
}

static int is_nix32_char(char c) {
  return c != '\0' && memchr("0123456789abcdfghijklmnpqrsvwxyz", c, 32) != NULL;
}

int narcache_store_path_parse_base(const char **name_out, const char *base, size_t len,
                                   size_t *err_offset) {
  if (base == NULL && len != 0)
    return NARCACHE_EINVAL;
  for (size_t i = 0; i < HASH_CHARS; i++)
    if (i >= len || !is_nix32_char(base[i]))
      return fail_at(err_offset, i);
  if (len <= HASH_CHARS || base[HASH_CHARS] != '-')
    return fail_at(err_offset, HASH_CHARS);
  size_t where = 0;
  int rc = narcache_store_path_check_name(base + HASH_CHARS + 1, len - HASH_CHARS - 1, &where);
  if (rc < 0)
    return fail_at(err_offset, HASH_CHARS + 1 + where);
  if (name_out != NULL)
    *name_out = base + HASH_CHARS + 1;
  return NARCACHE_OK;
}

int narcache_store_path_parse(const char **base_out, const char *path, size_t len,
                              const char *store_dir, size_t *err_offset) {
  if (path == NULL && len != 0)
    return NARCACHE_EINVAL;
  if (store_dir == NULL)
    store_dir = NARCACHE_STORE_DIR;
  size_t dir_len = strlen(store_dir);
  if (len <= dir_len + 1 || memcmp(path, store_dir, dir_len) != 0 || path[dir_len] != '/') {
    size_t i = 0;
    while (i < len && i < dir_len && path[i] == store_dir[i])
      i++;
    return fail_at(err_offset, i);
  }
  size_t where = 0;
  int rc = narcache_store_path_parse_base(NULL, path + dir_len + 1, len - dir_len - 1, &where);
  if (rc < 0)
    return fail_at(err_offset, dir_len + 1 + where);
  if (base_out != NULL)
    *base_out = path + dir_len + 1;
  return NARCACHE_OK;
}
