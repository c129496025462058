/* Helpers shared by the store backends (defined in store.c). */
#ifndef NARCACHE_STORE_INTERNAL_H
#define NARCACHE_STORE_INTERNAL_H

#include <stddef.h>

/* A system error as a store result: absent (ENOENT, ENOTDIR, ELOOP: a
 * symlink where an object should be), "try again later" (out of
 * descriptors, memory or space, timeouts, a stale NFS handle), or EIO. */
struct narcache_store;
/* The backend context of `s` if its open callback is `open_fn`, else NULL
 * (so a backend can find its own state behind a narcache_store). */
void *narcache__store_backend(struct narcache_store *s, const void *open_fn);

/* The store directory narinfo uploads are checked against. */
const char *narcache__store_dir(const struct narcache_store *s);

int narcache__store_errno(int err);

/* The NAR a narinfo text's URL names in this cache: "nar/<file>" (a query
 * dropped) puts <file> into `file` (NUL-terminated) and returns 1; 0 when
 * it names none here (an absolute URL elsewhere, or a text that does not
 * parse: the caller validated it already); NARCACHE_ECONFLICT for a name
 * no NAR can have; NARCACHE_EUNAVAIL without memory. */
int narcache__store_narinfo_nar(const char *text, size_t len, char *file, size_t file_size);

/* Write all of `buf` to `fd` (retrying EINTR): 0 or a store result. */
int narcache__store_write_all(int fd, const void *buf, size_t len);

#endif
