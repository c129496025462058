/* Streaming codecs: zstd through its streaming API, and the identity. */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_customMem: zstd allocates through our hook */
#include "common_internal.h"
#include "narcache/compress.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#define DEFAULT_WINDOW_LOG_MAX 27

struct narcache_codec {
  int type;
  int compress;
  int level;
  int window_log_max;
  ZSTD_CCtx *cctx;
  ZSTD_DCtx *dctx;
  int error;          /* sticky */
  int frame_open;     /* compressor: bytes given since the last frame end */
  int at_frame_end;   /* decompressor: last call ended on a frame boundary */
  int frames_seen;    /* decompressor: completed frames */
  /* Decompressor: each frame header is read and checked here before zstd
   * sees it (window size, legacy formats, declared content size), since
   * zstd's one-pass path would skip some of those checks. */
  int header_checked;           /* the current frame's header passed */
  uint8_t header[ZSTD_FRAMEHEADERSIZE_MAX];
  size_t header_len;            /* bytes of a header split across calls */
  unsigned long long frame_size; /* declared content size or ZSTD_CONTENTSIZE_UNKNOWN */
  uint64_t frame_out;           /* output of the current frame so far */
  uint64_t max_output;
  uint64_t total_in, total_out;
  char errmsg[160];
};

static void *zstd_alloc(void *opaque, size_t size) {
  (void)opaque;
  return narcache__malloc(size);
}

static void zstd_free(void *opaque, void *p) {
  (void)opaque;
  narcache__free(p);
}

static const ZSTD_customMem zstd_memory = {zstd_alloc, zstd_free, NULL};

NARCACHE_PRINTF(3, 4)
static int fail(narcache_codec *c, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
  va_end(ap);
  c->error = code;
  return code;
}

int narcache_codec_from_name(const char *name, size_t len) {
  if (name == NULL)
    return NARCACHE_EINVAL;
  if (len == 4 && memcmp(name, "none", 4) == 0)
    return NARCACHE_CODEC_NONE;
  if (len == 4 && memcmp(name, "zstd", 4) == 0)
    return NARCACHE_CODEC_ZSTD;
  return NARCACHE_ENOTSUP;
}

const char *narcache_codec_name(int type) {
  return type == NARCACHE_CODEC_NONE ? "none" : type == NARCACHE_CODEC_ZSTD ? "zstd" : NULL;
}

const char *narcache_codec_extension(int type) {
  return type == NARCACHE_CODEC_NONE ? "" : type == NARCACHE_CODEC_ZSTD ? ".zst" : NULL;
}

int narcache_codec_min_level(void) { return ZSTD_minCLevel(); }
int narcache_codec_max_level(void) { return ZSTD_maxCLevel(); }

static int valid_type(int type) { return type == NARCACHE_CODEC_NONE || type == NARCACHE_CODEC_ZSTD; }

/* Apply the compressor's parameters to a fresh or reset context. */
static int setup_cctx(narcache_codec *c) {
  if (ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, c->level)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_checksumFlag, 1)))
    return fail(c, NARCACHE_ECOMPRESS, "zstd: cannot set parameters");
  return NARCACHE_OK;
}

static int setup_dctx(narcache_codec *c) {
  if (ZSTD_isError(ZSTD_DCtx_setParameter(c->dctx, ZSTD_d_windowLogMax, c->window_log_max)))
    return fail(c, NARCACHE_ECOMPRESS, "zstd: cannot set parameters");
  return NARCACHE_OK;
}

static int codec_new(narcache_codec **out, int type, int compress, int level) {
  if (out == NULL)
    return NARCACHE_EINVAL;
  *out = NULL;
  if (!valid_type(type))
    return NARCACHE_EINVAL;
  if (compress && type == NARCACHE_CODEC_ZSTD &&
      (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()))
    return NARCACHE_EINVAL;
  narcache_codec *c = narcache__calloc(1, sizeof *c);
  if (c == NULL)
    return NARCACHE_ENOMEM;
  c->type = type;
  c->compress = compress;
  c->level = level == 0 ? ZSTD_CLEVEL_DEFAULT : level;
  c->window_log_max = DEFAULT_WINDOW_LOG_MAX;
  c->max_output = UINT64_MAX;
  c->at_frame_end = 1;
  int rc = NARCACHE_OK;
  if (type == NARCACHE_CODEC_ZSTD && compress) {
    c->cctx = ZSTD_createCCtx_advanced(zstd_memory);
    rc = c->cctx == NULL ? NARCACHE_ENOMEM : setup_cctx(c);
  } else if (type == NARCACHE_CODEC_ZSTD) {
    c->dctx = ZSTD_createDCtx_advanced(zstd_memory);
    rc = c->dctx == NULL ? NARCACHE_ENOMEM : setup_dctx(c);
  }
  if (rc < 0) {
    narcache_codec_free(c);
    return rc;
  }
  *out = c;
  return NARCACHE_OK;
}

int narcache_codec_new_compressor(narcache_codec **out, int type, int level) {
  return codec_new(out, type, 1, level);
}

int narcache_codec_new_decompressor(narcache_codec **out, int type) {
  return codec_new(out, type, 0, 0);
}

void narcache_codec_free(narcache_codec *c) {
  if (c == NULL)
    return;
  ZSTD_freeCCtx(c->cctx);
  ZSTD_freeDCtx(c->dctx);
  narcache__free(c);
}

int narcache_codec_set_pledged_size(narcache_codec *c, uint64_t size) {
  if (c == NULL)
    return NARCACHE_EINVAL;
  if (!c->compress || c->frame_open)
    return NARCACHE_EMISUSE;
  if (c->cctx != NULL && ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(c->cctx, size)))
    return NARCACHE_EMISUSE;
  return NARCACHE_OK;
}

int narcache_codec_set_max_output(narcache_codec *c, uint64_t max) {
  if (c == NULL)
    return NARCACHE_EINVAL;
  if (c->compress)
    return NARCACHE_EMISUSE;
  c->max_output = max;
  return NARCACHE_OK;
}

int narcache_codec_set_window_log_max(narcache_codec *c, int log) {
  if (c == NULL || log < ZSTD_WINDOWLOG_MIN || log > ZSTD_WINDOWLOG_MAX)
    return NARCACHE_EINVAL;
  if (c->compress || c->header_checked || c->header_len > 0)
    return NARCACHE_EMISUSE; /* only between frames */
  if (c->dctx != NULL && ZSTD_isError(ZSTD_DCtx_setParameter(c->dctx, ZSTD_d_windowLogMax, log)))
    return NARCACHE_EMISUSE;
  c->window_log_max = log;
  return NARCACHE_OK;
}

/* Identity codec: copy what fits; the output limit still applies. */
static int process_none(narcache_codec *c, narcache_outbuf *out, narcache_inbuf *in) {
  size_t n = in->size - in->pos;
  if (n > out->size - out->pos)
    n = out->size - out->pos;
  if (!c->compress && c->total_out + n > c->max_output)
    return fail(c, NARCACHE_ELIMIT, "output exceeds the limit of %llu bytes",
                (unsigned long long)c->max_output);
  if (n > 0)
    memcpy((char *)out->data + out->pos, (const char *)in->data + in->pos, n);
  in->pos += n;
  out->pos += n;
  c->total_in += n;
  c->total_out += n;
  c->frames_seen = 1;
  return in->pos < in->size ? 1 : 0;
}

static int process_compress(narcache_codec *c, narcache_outbuf *out, narcache_inbuf *in,
                            int flush) {
  ZSTD_inBuffer zin = {in->data, in->size, in->pos};
  ZSTD_outBuffer zout = {out->data, out->size, out->pos};
  ZSTD_EndDirective mode = flush == NARCACHE_FLUSH_END     ? ZSTD_e_end
                           : flush == NARCACHE_FLUSH_BLOCK ? ZSTD_e_flush
                                                           : ZSTD_e_continue;
  size_t left = ZSTD_compressStream2(c->cctx, &zout, &zin, mode);
  c->total_in += zin.pos - in->pos;
  c->total_out += zout.pos - out->pos;
  if (zin.pos > in->pos)
    c->frame_open = 1;
  in->pos = zin.pos;
  out->pos = zout.pos;
  if (ZSTD_isError(left))
    return fail(c, NARCACHE_ECOMPRESS, "zstd: %s after %llu input bytes",
                ZSTD_getErrorName(left), (unsigned long long)c->total_in);
  if (mode == ZSTD_e_end && left == 0)
    c->frame_open = 0;
  return left > (size_t)INT32_MAX ? INT32_MAX : (int)left;
}

/* A frame ended: its output must be what its header declared. */
static int frame_ended(narcache_codec *c) {
  if (c->frame_size != ZSTD_CONTENTSIZE_UNKNOWN && c->frame_out != c->frame_size)
    return fail(c, NARCACHE_ECOMPRESS,
                "zstd: frame declares %llu bytes but holds %llu (ends at input byte %llu)",
                c->frame_size, (unsigned long long)c->frame_out, (unsigned long long)c->total_in);
  c->at_frame_end = 1;
  c->frames_seen++;
  c->header_checked = 0;
  return NARCACHE_OK;
}

/* Bytes of the frame header starting at `src` (len >= 5 or enough to
 * tell), 0 if more bytes are needed to know, or a zstd error code. */
static size_t header_size(const uint8_t *src, size_t len) {
  if (len < ZSTD_FRAMEHEADERSIZE_PREFIX(ZSTD_f_zstd1))
    return 0;
  uint32_t magic = (uint32_t)src[0] | (uint32_t)src[1] << 8 | (uint32_t)src[2] << 16 |
                   (uint32_t)src[3] << 24;
  if ((magic & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START)
    return ZSTD_SKIPPABLEHEADERSIZE;
  return ZSTD_frameHeaderSize(src, len);
}

/* Check a complete frame header (zstd format only: legacy frames would
 * bypass the limits) and start counting the frame's output. */
static int accept_header(narcache_codec *c, const uint8_t *src, size_t len) {
  ZSTD_frameHeader fh;
  size_t r = ZSTD_getFrameHeader(&fh, src, len);
  if (ZSTD_isError(r) || r != 0)
    return fail(c, NARCACHE_ECOMPRESS, "zstd: not a zstd frame at input byte %llu",
                (unsigned long long)(c->total_in - c->header_len));
  if (fh.frameType == ZSTD_frame && fh.windowSize > (1ULL << c->window_log_max))
    return fail(c, NARCACHE_ELIMIT,
                "zstd: frame window of %llu bytes exceeds the limit of 2^%d (input byte %llu)",
                (unsigned long long)fh.windowSize, c->window_log_max,
                (unsigned long long)(c->total_in - c->header_len));
  c->frame_size = fh.frameType == ZSTD_frame ? fh.frameContentSize : 0;
  c->frame_out = 0;
  c->header_checked = 1;
  c->at_frame_end = 0;
  return NARCACHE_OK;
}

/* At a frame start: gather the header (across calls if need be), check
 * it, and hand zstd the bare header. Feeding it alone also keeps zstd off
 * its one-pass shortcut, whose checks differ from streaming's (a fuzzed
 * frame was refused whole and accepted in pieces), so every input is
 * judged the same however it is split. Returns 0 when decoding can go
 * on, 1 when more input is needed. */
static int read_frame_header(narcache_codec *c, narcache_outbuf *out, narcache_inbuf *in) {
  size_t avail = in->size - in->pos;
  /* (an empty input may come with a NULL pointer) */
  const uint8_t *src = avail > 0 ? (const uint8_t *)in->data + in->pos : c->header;
  /* Gather just the header's bytes. */
  for (;;) {
    size_t need = header_size(c->header, c->header_len);
    if (ZSTD_isError(need))
      return fail(c, NARCACHE_ECOMPRESS, "zstd: not a zstd frame at input byte %llu",
                  (unsigned long long)(c->total_in - c->header_len));
    size_t want = need != 0 ? need : ZSTD_FRAMEHEADERSIZE_PREFIX(ZSTD_f_zstd1);
    if (c->header_len >= want && need != 0)
      break;
    if (avail == 0)
      return 1;
    size_t take = want - c->header_len < avail ? want - c->header_len : avail;
    memcpy(c->header + c->header_len, src, take);
    c->header_len += take;
    src += take;
    avail -= take;
    in->pos += take;
    c->total_in += take;
    c->at_frame_end = 0;
  }
  int rc = accept_header(c, c->header, c->header_len);
  if (rc < 0)
    return rc;
  /* zstd takes a bare header without producing output. */
  ZSTD_inBuffer hin = {c->header, c->header_len, 0};
  ZSTD_outBuffer hout = {out->data, out->pos, out->pos};
  size_t hint = ZSTD_decompressStream(c->dctx, &hout, &hin);
  if (ZSTD_isError(hint) || hin.pos != hin.size)
    return fail(c, NARCACHE_ECOMPRESS, "zstd: frame header refused at input byte %llu",
                (unsigned long long)(c->total_in - c->header_len));
  c->header_len = 0;
  return hint == 0 ? frame_ended(c) : NARCACHE_OK; /* an empty skippable frame */
}

static int process_decompress(narcache_codec *c, narcache_outbuf *out, narcache_inbuf *in) {
  if (!c->header_checked) {
    int rc = read_frame_header(c, out, in);
    if (rc < 0)
      return rc;
    if (rc > 0 || !c->header_checked)
      return c->at_frame_end && c->header_len == 0 ? 0 : 1;
  }
  /* Never let zstd write past the output limit: give it at most one byte
   * beyond, so that crossing the limit is detected rather than hidden. */
  size_t room = out->size - out->pos;
  uint64_t allowed = c->max_output > c->total_out ? c->max_output - c->total_out : 0;
  size_t size = out->size;
  if (allowed < UINT64_MAX && room > allowed + 1)
    size = out->pos + (size_t)allowed + 1;
  ZSTD_inBuffer zin = {in->data, in->size, in->pos};
  ZSTD_outBuffer zout = {out->data, size, out->pos};
  size_t hint = ZSTD_decompressStream(c->dctx, &zout, &zin);
  size_t produced = zout.pos - out->pos;
  size_t consumed = zin.pos - in->pos;
  uint64_t in_before = c->total_in;
  c->total_in += consumed;
  in->pos = zin.pos;
  if (ZSTD_isError(hint)) {
    int code = ZSTD_getErrorCode(hint) == ZSTD_error_frameParameter_windowTooLarge
                   ? NARCACHE_ELIMIT
                   : NARCACHE_ECOMPRESS;
    return fail(c, code, "zstd: %s (input bytes %llu..%llu)", ZSTD_getErrorName(hint),
                (unsigned long long)in_before, (unsigned long long)c->total_in);
  }
  if (produced > allowed)
    return fail(c, NARCACHE_ELIMIT,
                "decompressed data exceeds the limit of %llu bytes (input byte %llu)",
                (unsigned long long)c->max_output, (unsigned long long)c->total_in);
  out->pos = zout.pos;
  c->total_out += produced;
  c->frame_out += produced;
  if (hint == 0 && (produced > 0 || consumed > 0)) { /* a frame ended */
    int rc = frame_ended(c);
    return rc < 0 ? rc : 0;
  }
  return hint == 0 ? (c->at_frame_end ? 0 : 1) : hint > (size_t)INT32_MAX ? INT32_MAX : (int)hint;
}

int narcache_codec_process(narcache_codec *c, narcache_outbuf *out, narcache_inbuf *in,
                           int flush) {
  if (c == NULL || out == NULL || in == NULL || out->pos > out->size || in->pos > in->size ||
      (out->data == NULL && out->size != 0) || (in->data == NULL && in->size != 0) ||
      flush < NARCACHE_FLUSH_NONE || flush > NARCACHE_FLUSH_END)
    return NARCACHE_EINVAL;
  if (c->error)
    return c->error;
  if (c->type == NARCACHE_CODEC_NONE)
    return process_none(c, out, in);
  return c->compress ? process_compress(c, out, in, flush) : process_decompress(c, out, in);
}

int narcache_codec_end(narcache_codec *c) {
  if (c == NULL)
    return NARCACHE_EINVAL;
  if (c->error)
    return c->error;
  if (c->compress)
    return c->frame_open ? NARCACHE_EMISUSE : NARCACHE_OK;
  if (c->type == NARCACHE_CODEC_NONE)
    return NARCACHE_OK;
  if (c->total_in == 0)
    return fail(c, NARCACHE_ECOMPRESS, "zstd: empty input");
  if (!c->at_frame_end || c->frames_seen == 0)
    return fail(c, NARCACHE_ECOMPRESS, "zstd: input ends inside a frame (truncated after %llu bytes)",
                (unsigned long long)c->total_in);
  return NARCACHE_OK;
}

int narcache_codec_reset(narcache_codec *c) {
  if (c == NULL)
    return NARCACHE_EINVAL;
  c->error = 0;
  c->errmsg[0] = '\0';
  c->frame_open = 0;
  c->at_frame_end = 1;
  c->frames_seen = 0;
  c->header_checked = 0;
  c->header_len = 0;
  c->frame_out = 0;
  c->total_in = c->total_out = 0;
  if (c->cctx != NULL && ZSTD_isError(ZSTD_CCtx_reset(c->cctx, ZSTD_reset_session_only)))
    return fail(c, NARCACHE_ECOMPRESS, "zstd: cannot reset");
  if (c->dctx != NULL && ZSTD_isError(ZSTD_DCtx_reset(c->dctx, ZSTD_reset_session_only)))
    return fail(c, NARCACHE_ECOMPRESS, "zstd: cannot reset");
  return NARCACHE_OK;
}

uint64_t narcache_codec_total_in(const narcache_codec *c) { return c == NULL ? 0 : c->total_in; }

uint64_t narcache_codec_total_out(const narcache_codec *c) { return c == NULL ? 0 : c->total_out; }

const char *narcache_codec_errmsg(const narcache_codec *c) { return c == NULL ? "" : c->errmsg; }
