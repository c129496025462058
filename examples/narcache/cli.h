/* Shared declarations of the narcache CLI's subcommands. */
#ifndef NARCACHE_CLI_H
#define NARCACHE_CLI_H

#include <narcache.h>

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

int cmd_hash(int argc, char **argv);
int cmd_nar(int argc, char **argv);
int cmd_cache(int argc, char **argv);
int cmd_key(int argc, char **argv);
int cmd_narinfo(int argc, char **argv);

/* Print "narcache: MESSAGE" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- file helpers (cli_io.c) ------------------------------------------------ */

/* Largest key file read (bytes); a Nix key file is under 350 bytes. */
#define CLI_KEY_FILE_MAX 4096

/* Overwrite `len` bytes at `p` with zeros in a way the compiler keeps. */
void cli_wipe(void *p, size_t len);

/* Option value: "--name VALUE" (consumes argv[*i + 1]) or "--name=VALUE".
 * Returns the value, NULL if argv[*i] is not this option; sets *missing
 * when the option is given without a value. */
const char *cli_option_value(int argc, char **argv, int *i, const char *name, int *missing);

/* Read the whole file at `path` into a malloc'd buffer (NUL-terminated;
 * length in *len). Files larger than `max` bytes are refused. On failure
 * returns NULL with the reason (without the path) in err[0..err_size).
 * If `st` is non-NULL it receives the fstat() of the opened file. */
char *cli_read_file(const char *path, size_t max, size_t *len, struct stat *st, char *err,
                    size_t err_size);

/* Flush stdout; on a write error print it and return -1. */
int cli_flush_stdout(void);

/* Load a key file ("name:base64", as nix-store --generate-binary-cache-key
 * writes it). `secret` selects secret or public. Errors name the file and
 * a byte offset, never the key text; the file's bytes are wiped after
 * printing the error. */
int cli_load_key_file(narcache_key **out, const char *path, int secret);

/* Create `path` (which must not exist) with `data` and mode `mode`: write
 * a temp file in the same directory (O_EXCL), fsync, link() it to `path`
 * (so an existing file is never replaced), unlink the temp, fsync the
 * directory. On success the created file's device and inode go to
 * *dev / *ino (may be NULL). Returns 0, or -1 after printing the error;
 * nothing is left behind on failure. */
int cli_create_file(const char *path, const void *data, size_t len, mode_t mode, dev_t *dev,
                    ino_t *ino);

/* Atomically replace the file at `path` with `data`: temp file in the same
 * directory (the symlink target's, if `path` is a symlink), mode and, if
 * permitted, owner of `orig`, fsync, rename over, fsync the directory.
 * Returns 0, or -1 after printing the error (the original is then
 * untouched unless the error is the final directory sync). */
int cli_replace_file(const char *path, const void *data, size_t len, const struct stat *orig);

#endif
