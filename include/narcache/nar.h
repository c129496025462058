/*
 * libnarcache -- NAR (Nix ARchive): writer, parser, dumper, restorer,
 * listings.
 *
 * Everything that streams uses the narcache_inbuf / narcache_outbuf cursors
 * of common.h: the caller owns the buffers and the library advances `pos`.
 *
 *  - narcache_nar_writer: structure calls -> canonical NAR bytes (no I/O).
 *  - narcache_nar_parser: NAR bytes -> events, strict, O(1) memory, no
 *    recursion, configurable limits (no I/O).
 *  - narcache_nar_dumper: a file-system path -> NAR, as `nix-store --dump`.
 *    It first indexes the tree's metadata, so the NAR size is known before
 *    any content is read, output can start at any NAR offset, and file
 *    contents can be handed out as (fd, offset, length) regions.
 *  - narcache_nar_restorer: NAR bytes -> a new tree, as `nix-store --restore`,
 *    but with *at() calls only, never following symlinks, and all or nothing.
 *  - Listings: the `.ls` JSON Nix writes next to a NAR.
 *
 * Thread: each object is used by one thread at a time; distinct objects may
 * be used concurrently. Functions without an object are thread-safe.
 */
#ifndef NARCACHE_NAR_H
#define NARCACHE_NAR_H

#include "common.h"
#include "hash.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Limits                                                                    */
/* ------------------------------------------------------------------------ */

/** Limits shared by the parser, writer, dumper and restorer. Values pinned. */
typedef enum narcache_nar_limit {
  /** Longest entry name in bytes. Default 255 (NAME_MAX). */
  NARCACHE_NAR_LIMIT_NAME_LEN = 1,
  /** Longest symlink target in bytes. Default 4095 (PATH_MAX - 1). */
  NARCACHE_NAR_LIMIT_TARGET_LEN = 2,
  /** Nodes must be nested less deeply than this (the root has depth 0).
   *  Default 64 for the parser and writer, as newer Nix; 256 for the
   *  dumper, so that any tree `nix-store --dump` accepts in practice dumps. */
  NARCACHE_NAR_LIMIT_DEPTH = 3,
  /** Largest total NAR size in bytes. Default UINT64_MAX (no limit). */
  NARCACHE_NAR_LIMIT_SIZE = 4
} narcache_nar_limit;

/** The parser's default for `limit`, or 0 for an unknown limit. */
NARCACHE_API uint64_t narcache_nar_limit_default(int limit);

/* ------------------------------------------------------------------------ */
/* Parser                                                                    */
/* ------------------------------------------------------------------------ */

/** Event types. Values pinned. */
typedef enum narcache_nar_event_type {
  NARCACHE_NAR_DIR_BEGIN = 1,  /* a directory node starts */
  NARCACHE_NAR_ENTRY = 2,      /* name: the name of the node that follows */
  NARCACHE_NAR_FILE_BEGIN = 3, /* size, executable; offset = first content byte */
  NARCACHE_NAR_FILE_DATA = 4,  /* data/len: contents, pointing into the input */
  NARCACHE_NAR_FILE_END = 5,   /* the regular file node is complete */
  NARCACHE_NAR_SYMLINK = 6,    /* name: the symlink target */
  NARCACHE_NAR_DIR_END = 7,    /* the directory node is complete */
  NARCACHE_NAR_END = 8         /* the archive is complete */
} narcache_nar_event_type;

#define NARCACHE_NAR_EVENT_VERSION 1

/** One parser event. The caller sets `version` (NARCACHE_NAR_EVENT_VERSION
 *  or use NARCACHE_NAR_EVENT_INIT); the parser fills the rest. `name` and
 *  `data` are borrowed: valid until the next call on the parser (`data`
 *  points into the caller's input buffer, `name` into the parser). */
typedef struct narcache_nar_event {
  uint32_t version;
  uint32_t type;       /* narcache_nar_event_type */
  uint32_t depth;      /* depth of the node the event belongs to (root 0) */
  uint32_t executable; /* FILE_BEGIN: 1 if executable */
  const char *name;    /* ENTRY: entry name; SYMLINK: target (NUL terminated) */
  size_t name_len;
  const void *data; /* FILE_DATA */
  size_t len;       /* FILE_DATA */
  uint64_t size;    /* FILE_BEGIN: file size in bytes */
  uint64_t offset;  /* NAR offset of the event: where its frame starts;
                       FILE_BEGIN: the first content byte (the `.ls`
                       narOffset); FILE_DATA: of data; FILE_END and END:
                       just past the contents frame / the archive */
} narcache_nar_event;

#define NARCACHE_NAR_EVENT_INIT {NARCACHE_NAR_EVENT_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0}

typedef struct narcache_nar_parser narcache_nar_parser;

/** Create a parser with default limits.
 *  @return 0; NARCACHE_EINVAL; NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_nar_parser_new(narcache_nar_parser **out);

/** Change a limit. Only before the first byte is parsed.
 *  @return 0; NARCACHE_EINVAL (unknown limit or 0); NARCACHE_EMISUSE. */
NARCACHE_API int narcache_nar_parser_set_limit(narcache_nar_parser *p, int limit,
                                               uint64_t value);

/** Parse from `in` up to the next event.
 *  The grammar is Nix's canonical NAR, strictly: exact tokens, zero padding,
 *  entry names non-empty, not "." or "..", without '/' or NUL, strictly
 *  increasing in unsigned byte order, symlink targets non-empty without NUL,
 *  and the limits above. Bytes offered after NARCACHE_NAR_END are an error
 *  (call nothing more once the archive ended if it is embedded in a longer
 *  stream).
 *  @return the event type (> 0) with `ev` filled; 0 when `in` is used up and
 *          more input is needed; NARCACHE_EBADNAR or NARCACHE_ELIMIT (sticky:
 *          see _errmsg and _erroffset); NARCACHE_EINVAL for bad arguments
 *          (including ev->version != NARCACHE_NAR_EVENT_VERSION). */
NARCACHE_API int narcache_nar_parser_next(narcache_nar_parser *p, narcache_inbuf *in,
                                          narcache_nar_event *ev);

/** Declare the end of input.
 *  @return 0 if the archive was complete; NARCACHE_EBADNAR (sticky) if it
 *          was truncated; the sticky error if one occurred before. */
NARCACHE_API int narcache_nar_parser_finish(narcache_nar_parser *p);

/** Message for the sticky error ("" if none). Borrowed, static per parser. */
NARCACHE_API const char *narcache_nar_parser_errmsg(const narcache_nar_parser *p);

/** NAR byte offset at which the sticky error was detected. */
NARCACHE_API uint64_t narcache_nar_parser_erroffset(const narcache_nar_parser *p);

/** Bytes consumed so far (the NAR size once NARCACHE_NAR_END was returned). */
NARCACHE_API uint64_t narcache_nar_parser_offset(const narcache_nar_parser *p);

/** Forget all state (including a sticky error); limits are kept. */
NARCACHE_API void narcache_nar_parser_reset(narcache_nar_parser *p);

/** Destroy a parser. NULL is a no-op. */
NARCACHE_API void narcache_nar_parser_free(narcache_nar_parser *p);

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct narcache_nar_writer narcache_nar_writer;

/** Create a writer. The archive is described with structure calls:
 *  root node := file_begin + data... | symlink | dir_begin {entry node} dir_end
 *  followed by finish(). Structure calls queue bytes inside the writer;
 *  drain() moves them to the caller. Every call checks the order and the
 *  names (sorted, valid, within limits), so the writer cannot produce a NAR
 *  the parser (with the same limits) rejects.
 *  @return 0; NARCACHE_EINVAL; NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_nar_writer_new(narcache_nar_writer **out);

/** As narcache_nar_parser_set_limit (before the first call). */
NARCACHE_API int narcache_nar_writer_set_limit(narcache_nar_writer *w, int limit,
                                               uint64_t value);

/** Structure calls. Each returns 0; NARCACHE_EMISUSE when called out of
 *  order (including before a file's data is complete, or after an error);
 *  NARCACHE_EINVAL for an invalid name or target, or a name not greater
 *  than the previous one in the same directory; NARCACHE_ELIMIT;
 *  NARCACHE_ENOMEM. After a failure the writer is unusable. */
NARCACHE_API int narcache_nar_writer_dir_begin(narcache_nar_writer *w);
NARCACHE_API int narcache_nar_writer_entry(narcache_nar_writer *w, const char *name,
                                           size_t len);
NARCACHE_API int narcache_nar_writer_file_begin(narcache_nar_writer *w, uint64_t size,
                                                int executable);
NARCACHE_API int narcache_nar_writer_symlink(narcache_nar_writer *w, const char *target,
                                             size_t len);
NARCACHE_API int narcache_nar_writer_dir_end(narcache_nar_writer *w);
NARCACHE_API int narcache_nar_writer_finish(narcache_nar_writer *w);

/** Copy file contents of the current file from `in` to `out`, after any
 *  queued bytes (which are drained first). Consumes at most the bytes the
 *  file still needs; the padding is queued when the file is complete.
 *  @return 1 while the file still needs data, 0 when it is complete;
 *          NARCACHE_EMISUSE if no file is open; NARCACHE_ELIMIT if closing
 *          the file would exceed the size limit. */
NARCACHE_API int narcache_nar_writer_data(narcache_nar_writer *w, narcache_outbuf *out,
                                          narcache_inbuf *in);

/** Move queued bytes into `out`.
 *  @return 1 while bytes remain queued, 0 when the queue is empty. */
NARCACHE_API int narcache_nar_writer_drain(narcache_nar_writer *w, narcache_outbuf *out);

/** NAR bytes produced so far (drained or queued). */
NARCACHE_API uint64_t narcache_nar_writer_offset(const narcache_nar_writer *w);

/** Destroy a writer. NULL is a no-op. */
NARCACHE_API void narcache_nar_writer_free(narcache_nar_writer *w);

/* ------------------------------------------------------------------------ */
/* Dumper                                                                    */
/* ------------------------------------------------------------------------ */

/** Segment kinds. Values pinned. */
typedef enum narcache_nar_segment_kind {
  NARCACHE_NAR_SEG_BYTES = 1, /* `data`, `length` bytes held by the producer */
  NARCACHE_NAR_SEG_FILE = 2,  /* `length` bytes at `file_offset` of `fd` */
  NARCACHE_NAR_SEG_STREAM = 3, /* the next `length` bytes read from `fd` (version >= 2) */
  NARCACHE_NAR_SEG_WAIT = 4    /* no bytes yet: ask again when `fd` is readable (version >= 3) */
} narcache_nar_segment_kind;

/** 2 added STREAM segments, 3 WAIT segments: a caller that sets an older
 *  version never gets them. */
#define NARCACHE_NAR_SEGMENT_VERSION 3

/** A piece of the NAR. The caller sets `version`. `data` and `fd` belong to
 *  the producer (the dumper, a store's reader) and stay valid until the
 *  next call on it. A FILE segment's consumer must get exactly `length`
 *  bytes (e.g. with pread or sendfile); fewer means the file shrank and the
 *  NAR must be abandoned. A STREAM segment's `fd` is a socket or pipe
 *  (non-blocking, no offset): the consumer reads or splices from it, in
 *  order, waiting at most `wait_ms` for each next byte; it may stop
 *  before `length` and ask for the next segment from where it stopped,
 *  but an end of stream or a wait that runs out means the NAR must be
 *  abandoned. A WAIT segment (`length` 0) says the producer has nothing
 *  at `nar_offset` yet: its `fd` (owned by the producer, valid until the
 *  next call) becomes readable when asking again at the same offset is
 *  worth it; a caller that waits more than `wait_ms` for that must abandon
 *  the NAR. The consumer only polls `fd`, never reads it. It lets a caller
 *  with an event loop wait without holding a thread. The dumper makes
 *  BYTES and FILE segments only. */
typedef struct narcache_nar_segment {
  uint32_t version;
  uint32_t kind;       /* narcache_nar_segment_kind */
  uint64_t nar_offset; /* where this segment starts in the NAR */
  uint64_t length;
  const void *data; /* BYTES */
  int fd;           /* FILE, STREAM */
  int wait_ms;      /* STREAM, WAIT (was `reserved`, unused, in version 1) */
  uint64_t file_offset; /* FILE */
} narcache_nar_segment;

typedef struct narcache_nar_dumper narcache_nar_dumper;

/** Create a dumper with default limits; then narcache_nar_dumper_open().
 *  @return 0; NARCACHE_EINVAL; NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_nar_dumper_new(narcache_nar_dumper **out);

/** Change a limit (NARCACHE_NAR_LIMIT_*) before narcache_nar_dumper_open. */
NARCACHE_API int narcache_nar_dumper_set_limit(narcache_nar_dumper *d, int limit,
                                               uint64_t value);

/** Index the tree at `path`, resolved against `dirfd` when relative (pass
 *  NARCACHE_AT_FDCWD for the working directory): names, types, sizes,
 *  executable bits and symlink targets, without reading file contents.
 *  `path` itself may be a file, a symlink (dumped as a symlink) or a
 *  directory. Memory is proportional to the number of entries.
 *  @return 0; NARCACHE_EIO (see _errmsg and _syserr); NARCACHE_ENOTSUP for
 *          a socket, FIFO or device (the message names the path);
 *          NARCACHE_ELIMIT; NARCACHE_ENOMEM; NARCACHE_EMISUSE if already open. */
NARCACHE_API int narcache_nar_dumper_open(narcache_nar_dumper *d, int dirfd,
                                          const char *path);

/** Value for `dirfd` meaning the current working directory. */
#define NARCACHE_AT_FDCWD (-100)

/** Total NAR size, known once open() succeeded. */
NARCACHE_API uint64_t narcache_nar_dumper_size(const narcache_nar_dumper *d);

/** Continue output from NAR offset `offset` (0 <= offset <= size). Uses the
 *  index only: no bytes before `offset` are read.
 *  @return 0; NARCACHE_EINVAL (offset past the end); NARCACHE_EMISUSE. */
NARCACHE_API int narcache_nar_dumper_seek(narcache_nar_dumper *d, uint64_t offset);

/** Next piece of the NAR.
 *  @return 1 with `seg` filled; 0 at the end; NARCACHE_EIO if a file cannot
 *          be opened or no longer matches the index (changed size or type:
 *          the NAR would be wrong); NARCACHE_EINVAL. Errors are sticky. */
NARCACHE_API int narcache_nar_dumper_next(narcache_nar_dumper *d,
                                          narcache_nar_segment *seg);

/** Copy NAR bytes into `out`, reading file contents as needed. Fails if a
 *  file is shorter or longer than indexed.
 *  @return 1 while more bytes remain, 0 when the NAR is complete;
 *          NARCACHE_EIO and the other errors of _next. */
NARCACHE_API int narcache_nar_dumper_read(narcache_nar_dumper *d, narcache_outbuf *out);

/** Message for the last error ("" if none). Borrowed. */
NARCACHE_API const char *narcache_nar_dumper_errmsg(const narcache_nar_dumper *d);

/** errno of the last NARCACHE_EIO, or 0. */
NARCACHE_API int narcache_nar_dumper_syserr(const narcache_nar_dumper *d);

/** Destroy a dumper and close its descriptors. NULL is a no-op. */
NARCACHE_API void narcache_nar_dumper_free(narcache_nar_dumper *d);

/* ------------------------------------------------------------------------ */
/* Restorer                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct narcache_nar_restorer narcache_nar_restorer;

/** Create a restorer with default limits; then narcache_nar_restorer_open().
 *  @return 0; NARCACHE_EINVAL; NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_nar_restorer_new(narcache_nar_restorer **out);

/** Prepare to restore to `path` (resolved against `dirfd` when relative;
 *  NARCACHE_AT_FDCWD for the working directory), which must not exist; its
 *  parent must. The tree is built under a hidden temporary name in the
 *  parent directory with *at() calls relative to directories the restorer
 *  created itself, never following a symlink, and moved to `path` only by
 *  narcache_nar_restorer_finish(). Modes are those `nix-store --restore`
 *  leaves: directories 0755, files 0644, executables 0755.
 *  @return 0; NARCACHE_EIO (e.g. `path` exists: syserr EEXIST; see _errmsg);
 *          NARCACHE_EINVAL (unusable name such as "." or ".."); NARCACHE_ENOMEM;
 *          NARCACHE_EMISUSE if already open. */
NARCACHE_API int narcache_nar_restorer_open(narcache_nar_restorer *r, int dirfd,
                                            const char *path);

/** As narcache_nar_parser_set_limit, before the first write. */
NARCACHE_API int narcache_nar_restorer_set_limit(narcache_nar_restorer *r, int limit,
                                                 uint64_t value);

/** Feed NAR bytes.
 *  @return 1 once the archive is complete, 0 when more is needed;
 *          NARCACHE_EBADNAR / NARCACHE_ELIMIT (bad NAR), NARCACHE_EIO.
 *          On error everything created so far has been removed. */
NARCACHE_API int narcache_nar_restorer_write(narcache_nar_restorer *r, narcache_inbuf *in);

/** Declare the end of input and, if the archive is complete, move the tree
 *  to its destination (atomically; refused if the destination appeared).
 *  @return 0; the errors of _write; NARCACHE_EBADNAR for a truncated NAR. */
NARCACHE_API int narcache_nar_restorer_finish(narcache_nar_restorer *r);

/** Message for the last error ("" if none). Borrowed. */
NARCACHE_API const char *narcache_nar_restorer_errmsg(const narcache_nar_restorer *r);

/** errno of the last NARCACHE_EIO, or 0. */
NARCACHE_API int narcache_nar_restorer_syserr(const narcache_nar_restorer *r);

/** Destroy a restorer; if finish() did not succeed, remove what it created.
 *  NULL is a no-op. */
NARCACHE_API void narcache_nar_restorer_free(narcache_nar_restorer *r);

/* ------------------------------------------------------------------------ */
/* Listings (.ls)                                                            */
/* ------------------------------------------------------------------------ */

typedef struct narcache_nar_lister narcache_nar_lister;

/** Build the `.ls` JSON of a NAR stream, byte-for-byte as Nix 2.8 writes it
 *  with `write-nar-listing=true`:
 *  {"version":1,"root":NODE}, NODE = {"type":"regular","size":N
 *  [,"executable":true],"narOffset":O} | {"type":"symlink","target":T} |
 *  {"type":"directory","entries":{NAME:NODE,...}}.
 *  @return 0; NARCACHE_EINVAL; NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_nar_lister_new(narcache_nar_lister **out);

/** As narcache_nar_parser_set_limit, before the first write. */
NARCACHE_API int narcache_nar_lister_set_limit(narcache_nar_lister *l, int limit,
                                               uint64_t value);

/** Feed NAR bytes. @return 1 once the archive is complete, 0 when more is
 *  needed; the parser's errors. */
NARCACHE_API int narcache_nar_lister_write(narcache_nar_lister *l, narcache_inbuf *in);

/** Declare the end of input and take the JSON.
 *  @param json_out receives the text (owned, NUL terminated; narcache_free)
 *  @return 0; NARCACHE_EBADNAR for a truncated NAR; earlier errors. */
NARCACHE_API int narcache_nar_lister_finish(narcache_nar_lister *l, char **json_out,
                                            size_t *len_out);

/** Message for the last error ("" if none). Borrowed. */
NARCACHE_API const char *narcache_nar_lister_errmsg(const narcache_nar_lister *l);

/** NAR offset of the last parse error. */
NARCACHE_API uint64_t narcache_nar_lister_erroffset(const narcache_nar_lister *l);

/** Destroy a lister. NULL is a no-op. */
NARCACHE_API void narcache_nar_lister_free(narcache_nar_lister *l);

/** The `.ls` JSON of the NAR the dumper `d` describes, from its index alone
 *  (no file contents are read). `d` must be open; its position is unchanged.
 *  @return 0; NARCACHE_EMISUSE; NARCACHE_ENOMEM. */
NARCACHE_API int narcache_nar_dumper_listing(char **json_out, size_t *len_out,
                                             narcache_nar_dumper *d);

/* ------------------------------------------------------------------------ */
/* One-pass helpers                                                          */
/* ------------------------------------------------------------------------ */

/* The dump and hash helpers below are built for throughput on trees of many
 * small files: while they run they use a few short-lived worker threads
 * (two per CPU, at most eight) to stat large directories and read small
 * files ahead, and join them before returning. The objects above
 * (dumper, parser, ...) never start threads. */

/** Write the NAR of `path` to file descriptor `fd` (a file, pipe or socket;
 *  file contents go by sendfile where the kernel allows).
 *  @param size_out optional: the NAR size
 *  @param errbuf optional: receives a message on failure (NUL terminated)
 *  @return 0; the dumper's errors; NARCACHE_EIO for write failures. */
NARCACHE_API int narcache_nar_dump_path_to_fd(uint64_t *size_out, const char *path, int fd,
                                              char *errbuf, size_t errbuf_size);

/** Restore the NAR read from `fd` (until EOF) to `path`, which must not exist.
 *  @return 0; the restorer's errors (nothing is left behind on failure). */
NARCACHE_API int narcache_nar_restore_path_from_fd(const char *path, int fd, char *errbuf,
                                                   size_t errbuf_size);

/** SHA-256 and size of the NAR of `path`, without writing the NAR anywhere.
 *  Format the hash with narcache_hash_format(..., NARCACHE_HASH_NIX32, 1)
 *  for the narinfo `NarHash` form.
 *  @return 0; the dumper's errors. */
NARCACHE_API int narcache_nar_hash_path(narcache_hash *hash_out, uint64_t *size_out,
                                        const char *path, char *errbuf,
                                        size_t errbuf_size);

#ifdef __cplusplus
}
#endif

#endif /* NARCACHE_NAR_H */
