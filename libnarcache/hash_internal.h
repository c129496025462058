/* Internal interface between the hash module's files. Not installed. */
#ifndef NARCACHE_HASH_INTERNAL_H
#define NARCACHE_HASH_INTERNAL_H

#include "narcache/hash.h"

/* narcache_base64_decode with optional '=' padding (SRI hashes may omit it).
 * With `padding_optional` zero it is exactly narcache_base64_decode. */
int narcache__base64_decode(void *out, size_t out_size, size_t *out_len,
                            const char *in, size_t in_len, size_t *err_offset,
                            int padding_optional);

#endif
