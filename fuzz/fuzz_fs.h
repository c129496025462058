/* Shared by the targets that make a tree per input (nar_dump, nar_restore):
 * the input's temporary directory, a CHECK that removes it before
 * aborting (so that replays leave nothing behind), and removing a tree
 * without following symlinks. Define FUZZ_NAME before including. */
#ifndef NARCACHE_FUZZ_FS_H
#define NARCACHE_FUZZ_FS_H

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The current input's directory ("" when there is none). */
static char tmp[2048];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *f) {
  (void)st, (void)flag, (void)f;
  remove(path);
  return 0;
}

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, FUZZ_NAME ": invariant failed at line %d: %s\n",       \
              __LINE__, #cond);                                              \
      if (tmp[0] != '\0')                                                    \
        nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);                   \
      abort();                                                               \
    }                                                                        \
  } while (0)

/* Remove `name` in `dirfd` and everything below it, never following a
 * symlink; with `modes`, require the modes the restorer promises. */
static void remove_tree(int dirfd, const char *name, int modes) {
  struct stat st;
  CHECK(fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0);
  mode_t perm = st.st_mode & 07777;
  if (modes) {
    if (S_ISDIR(st.st_mode))
      CHECK(perm == 0755);
    else if (S_ISREG(st.st_mode))
      CHECK(perm == 0644 || perm == 0755);
    else
      CHECK(S_ISLNK(st.st_mode));
  }
  if (!S_ISDIR(st.st_mode)) {
    CHECK(unlinkat(dirfd, name, 0) == 0);
    return;
  }
  int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  CHECK(fd >= 0);
  DIR *dir = fdopendir(fd);
  CHECK(dir != NULL);
  int removed;
  do { /* again from the start: readdir need not see a changing directory */
    removed = 0;
    rewinddir(dir);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      remove_tree(fd, e->d_name, modes);
      removed++;
    }
  } while (removed != 0);
  closedir(dir);
  CHECK(unlinkat(dirfd, name, AT_REMOVEDIR) == 0);
}

#endif
