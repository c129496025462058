/* Token files and Authorization header values on arbitrary bytes. A table
 * that parses must grant each of its tokens the scope of its line (the
 * lines are re-read here with a tiny independent reader), and a header
 * credential must fit its buffer; nothing may read outside the input. */
#include <narcache.h>

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* For each line "NAME SCOPE TOKEN" (the simple form, single spaces, no
 * comment), the parsed table must grant SCOPE to TOKEN. */
static void check_lines(const narcache_tokens *t, const char *text, size_t size) {
  const char *p = text, *end = text + size;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = nl ? nl : end;
    const char *s1 = memchr(p, ' ', (size_t)(line_end - p));
    const char *s2 = s1 ? memchr(s1 + 1, ' ', (size_t)(line_end - s1 - 1)) : NULL;
    if (s1 != NULL && s2 != NULL && s1 > p && p[0] != '#' && p[0] != '\t' &&
        memchr(s2 + 1, ' ', (size_t)(line_end - s2 - 1)) == NULL &&
        memchr(p, '\t', (size_t)(line_end - p)) == NULL &&
        memchr(p, '\r', (size_t)(line_end - p)) == NULL && line_end > s2 + 1 && s2[1] != '#') {
      int want = (s2 - s1 - 1 == 5 && memcmp(s1 + 1, "write", 5) == 0) ? NARCACHE_SCOPE_WRITE
                                                                        : NARCACHE_SCOPE_READ;
      if (narcache_tokens_check(t, s2 + 1, (size_t)(line_end - s2 - 1), NULL) != want)
        abort();
    }
    p = nl ? nl + 1 : end;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = (const char *)data;
  narcache_tokens *t = NULL;
  char err[256];
  if (narcache_tokens_parse(&t, text, size, err, sizeof err) == 0) {
    check_lines(t, text, size);
    narcache_tokens_free(t);
  } else if (t != NULL || strlen(err) == 0) {
    abort(); /* a failure leaves nothing and says why */
  }
  char cred[300];
  int n = narcache_auth_credential(cred, sizeof cred, text, size);
  if (n > 0 && ((size_t)n >= sizeof cred || strlen(cred) != (size_t)n))
    abort();
  return 0;
}
