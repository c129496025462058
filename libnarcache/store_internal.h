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

/* Write all of `buf` to `fd` (retrying EINTR): 0 or a store result. */
int narcache__store_write_all(int fd, const void *buf, size_t len);

#endif
