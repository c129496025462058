/*
 * libnarcache -- streaming codecs: zstd and "none" (identity), compressing
 * or decompressing in the narcache_inbuf/narcache_outbuf cursor style.
 *
 * Memory is bounded: a compressor uses what its level needs (a few MiB at
 * most for the levels Nix uses); a decompressor refuses frames whose
 * window is larger than 2^window_log_max bytes (default 2^27, the zstd
 * CLI's own limit) and output beyond a set limit. zstd's allocations go
 * through the allocator installed with narcache_set_allocator().
 *
 * Thread: a codec is used by one thread at a time; distinct codecs may run
 * concurrently.
 */
#ifndef NARCACHE_COMPRESS_H
#define NARCACHE_COMPRESS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Codec types. Values are pinned. */
typedef enum narcache_codec_type {
  NARCACHE_CODEC_NONE = 1, /* identity: bytes pass through */
  NARCACHE_CODEC_ZSTD = 2
} narcache_codec_type;

/** Flush modes of narcache_codec_process() for a compressor. */
typedef enum narcache_codec_flush {
  NARCACHE_FLUSH_NONE = 0,  /* buffer as the codec likes */
  NARCACHE_FLUSH_BLOCK = 1, /* everything given so far can be decoded */
  NARCACHE_FLUSH_END = 2    /* end the frame (the stream may go on with a new one) */
} narcache_codec_flush;

/** Level used when 0 is passed (zstd's default, 3). */
#define NARCACHE_CODEC_DEFAULT_LEVEL 0

typedef struct narcache_codec narcache_codec;

/** Look up a codec by its narinfo Compression name ("none", "zstd").
 *  @return the narcache_codec_type (> 0); NARCACHE_ENOTSUP for methods Nix
 *          knows but this library cannot code (xz, bzip2, br, ...). */
NARCACHE_API int narcache_codec_from_name(const char *name, size_t len);

/** The narinfo Compression name of `type` (static string) or NULL. */
NARCACHE_API const char *narcache_codec_name(int type);

/** File name extension Nix uses for `type` (".zst", "" for none) or NULL. */
NARCACHE_API const char *narcache_codec_extension(int type);

/** Create a compressor. `level` 0 means the default; zstd accepts
 *  narcache_codec_min_level()..narcache_codec_max_level(). zstd frames carry
 *  a content checksum.
 *  @return 0; NARCACHE_EINVAL (unknown type, level out of range);
 *          NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_codec_new_compressor(narcache_codec **out,
                                                                  int type, int level);

/** Create a decompressor. It accepts one or more concatenated frames
 *  (and skippable frames). Every frame header is checked before decoding:
 *  zstd's pre-1.0 "legacy" formats are refused, as are windows over the
 *  limit and frames whose output differs from their declared size.
 *  @return 0; NARCACHE_EINVAL; NARCACHE_ENOMEM. */
NARCACHE_API NARCACHE_NODISCARD int narcache_codec_new_decompressor(narcache_codec **out,
                                                                    int type);

/** Lowest and highest zstd level accepted. */
NARCACHE_API int narcache_codec_min_level(void);
NARCACHE_API int narcache_codec_max_level(void);

/** Compressor: announce the exact number of input bytes of the next frame
 *  (written into the frame header; a different amount is an error at the
 *  frame end). Call before the frame's first byte.
 *  @return 0; NARCACHE_EMISUSE (frame started, or a decompressor). */
NARCACHE_API int narcache_codec_set_pledged_size(narcache_codec *c, uint64_t size);

/** Decompressor: fail with NARCACHE_ELIMIT once more than `max` bytes
 *  would be produced in total (e.g. the narinfo's NarSize). Default: no
 *  limit. @return 0; NARCACHE_EMISUSE (a compressor). */
NARCACHE_API int narcache_codec_set_max_output(narcache_codec *c, uint64_t max);

/** Decompressor: largest window accepted, as a power of two (10..31).
 *  @return 0; NARCACHE_EINVAL; NARCACHE_EMISUSE. */
NARCACHE_API int narcache_codec_set_window_log_max(narcache_codec *c, int log);

/** Move data from `in` to `out`, advancing both cursors.
 *  Compressor: returns the number of bytes still buffered that a further
 *  call with the same `flush` would write (0: done for this flush mode; a
 *  frame is complete after NARCACHE_FLUSH_END returned 0). Keep calling
 *  with more output space while it is > 0.
 *  Decompressor (`flush` ignored): returns 0 when the input so far ends
 *  exactly at a frame end with all its output written, > 0 when more
 *  input or output space is needed.
 *  Errors are sticky: after one, every call returns it.
 *  @return >= 0 as above; NARCACHE_ECOMPRESS (corrupt or truncated frame,
 *          checksum mismatch; see narcache_codec_errmsg()); NARCACHE_ELIMIT
 *          (max output or window exceeded); NARCACHE_ENOMEM;
 *          NARCACHE_EINVAL. */
NARCACHE_API NARCACHE_NODISCARD int narcache_codec_process(narcache_codec *c,
                                                           narcache_outbuf *out,
                                                           narcache_inbuf *in, int flush);

/** Decompressor: call at the end of input. 0 if the data ended at a frame
 *  boundary (and at least one frame was seen); NARCACHE_ECOMPRESS if it
 *  was truncated or empty. Compressor: 0 if no frame is left open. */
NARCACHE_API int narcache_codec_end(narcache_codec *c);

/** Start over for a new, independent stream (keeps type, level, limits).
 *  @return 0; NARCACHE_ECOMPRESS. */
NARCACHE_API int narcache_codec_reset(narcache_codec *c);

/** Total bytes consumed from inputs and produced into outputs since
 *  creation or the last reset. */
NARCACHE_API uint64_t narcache_codec_total_in(const narcache_codec *c);
NARCACHE_API uint64_t narcache_codec_total_out(const narcache_codec *c);

/** Message of the last error ("" if none), naming the input offset.
 *  Borrowed; valid until the next call on `c`. */
NARCACHE_API const char *narcache_codec_errmsg(const narcache_codec *c);

/** Destroy. NULL is a no-op. */
NARCACHE_API void narcache_codec_free(narcache_codec *c);

#ifdef __cplusplus
}
#endif

#endif /* NARCACHE_COMPRESS_H */
