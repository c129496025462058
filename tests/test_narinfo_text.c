/* The narinfo and nix-cache-info text formats: what is accepted (and how
 * it reads), what is refused (with which message and position), building
 * a narinfo through the setters. The behaviour of Nix 2.8 that each case
 * follows or deliberately tightens is the spec's §3.3 and §5. */
#include <narcache.h>

#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test_support.h"

/* ref-demo as Nix wrote it (golden/none), the base of the edits below. */
static const char base_text[] =
    "StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo\n"
    "URL: nar/05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir.nar\n"
    "Compression: none\n"
    "FileHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir\n"
    "FileSize: 216\n"
    "NarHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir\n"
    "NarSize: 216\n"
    "References: 2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1 dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo\n"
    "Deriver: ba703j8axyq4wqbbwjh4vw23rslsrwhw-ref-demo.drv\n"
    "Sig: test-cache-1:MVOWHOpheLFwZ5Pqyzv8/TQqPTOC0D1uyh7CYcJ2cl4hhXTzvEuzSB3VnVfdb6NgqMNb1Pp4SzwTKUyoyy8rBg==\n";

static const char base_fingerprint[] =
    "1;/nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo;"
    "sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir;216;"
    "/nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1,/nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo";

/* Replace the first occurrence of `from` in base_text by `to`. */
static char *patch(const char *from, const char *to) {
  const char *at = strstr(base_text, from);
  if (at == NULL)
    fail_msg("patch target not found: %s", from);
  size_t head = (size_t)(at - base_text);
  char *out = malloc(sizeof base_text + strlen(to) + 1);
  memcpy(out, base_text, head);
  strcpy(out + head, to);
  strcat(out, at + strlen(from));
  return out;
}

static int parse_len(narcache_narinfo *ni, const char *text, size_t len) {
  char *copy = exact_copy(text, len);
  int rc = narcache_narinfo_parse(ni, copy, len);
  free(copy);
  return rc;
}

static narcache_narinfo *parse_ok(const char *text) {
  narcache_narinfo *ni = NULL;
  assert_int_equal(narcache_narinfo_new(&ni, NULL), 0);
  int rc = parse_len(ni, text, strlen(text));
  if (rc != 0)
    fail_msg("parse failed: %s: %s", narcache_errname(rc), narcache_narinfo_errmsg(ni));
  return ni;
}

static char *format(const narcache_narinfo *ni) {
  char *out = NULL;
  size_t len = 0;
  assert_int_equal(narcache_narinfo_format(&out, &len, ni), 0);
  assert_int_equal(len, strlen(out));
  return out;
}

static void assert_fingerprint(const narcache_narinfo *ni, const char *want) {
  char *fp = NULL;
  assert_int_equal(narcache_narinfo_fingerprint(&fp, NULL, ni), 0);
  assert_string_equal(fp, want);
  narcache_free(fp);
}

/* ------------------------------------------------------------------ */

static void test_fields_of_a_nix_narinfo(void **state) {
  (void)state;
  narcache_narinfo *ni = parse_ok(base_text);
  size_t len = 0;
  assert_string_equal(narcache_narinfo_store_path(ni, &len),
                      "/nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo");
  assert_int_equal(len, 52);
  assert_string_equal(narcache_narinfo_url(ni, NULL),
                      "nar/05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir.nar");
  assert_string_equal(narcache_narinfo_compression(ni, NULL), "none");
  narcache_hash h;
  assert_int_equal(narcache_narinfo_file_hash(ni, &h), 0);
  assert_int_equal(h.algo, NARCACHE_HASH_SHA256);
  uint64_t size = 0;
  assert_int_equal(narcache_narinfo_file_size(ni, &size), 0);
  assert_int_equal(size, 216);
  assert_int_equal(narcache_narinfo_nar_hash(ni, &h), 0);
  assert_int_equal(narcache_narinfo_nar_size(ni), 216);
  assert_int_equal(narcache_narinfo_reference_count(ni), 2);
  assert_string_equal(narcache_narinfo_reference(ni, 0, NULL), "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1");
  assert_string_equal(narcache_narinfo_reference(ni, 1, NULL),
                      "dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo");
  assert_null(narcache_narinfo_reference(ni, 2, NULL));
  assert_string_equal(narcache_narinfo_deriver(ni, NULL), "ba703j8axyq4wqbbwjh4vw23rslsrwhw-ref-demo.drv");
  assert_null(narcache_narinfo_system(ni, NULL));
  assert_null(narcache_narinfo_ca(ni, NULL));
  assert_int_equal(narcache_narinfo_sig_count(ni), 1);
  assert_string_equal(narcache_narinfo_store_dir(ni, NULL), "/nix/store");
  assert_string_equal(narcache_narinfo_errmsg(ni), "");
  assert_fingerprint(ni, base_fingerprint);
  char *out = format(ni);
  assert_string_equal(out, base_text);
  narcache_free(out);
  narcache_narinfo_free(ni);
}

/* Inputs Nix 2.8 accepts that we accept too, and how they read back. */
static void test_accepted_variants(void **state) {
  (void)state;
  static const struct {
    const char *from, *to;
    const char *formatted_from, *formatted_to; /* expected change in format output */
  } cases[] = {
      /* unknown fields are skipped (and not kept) */
      {"NarSize: 216\n", "NarSize: 216\nX-Future_Field: anything goes: here\n", NULL, NULL},
      /* missing Compression reads as bzip2, and is written */
      {"Compression: none\n", "", "Compression: none\n", "Compression: bzip2\n"},
      {"Compression: none\n", "Compression: \n", "Compression: none\n", "Compression: bzip2\n"},
      /* FileHash / FileSize are optional */
      {"FileSize: 216\n", "", "FileSize: 216\n", ""},
      {"FileHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir\n", "",
       "FileHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir\n", ""},
      /* References: a set; any order, repeated spaces, duplicates */
      {"References: 2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1 dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo\n",
       "References:  dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo   2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1 "
       "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1 \n",
       NULL, NULL},
      /* unknown-deriver means none */
      {"Deriver: ba703j8axyq4wqbbwjh4vw23rslsrwhw-ref-demo.drv\n", "Deriver: unknown-deriver\n",
       "Deriver: ba703j8axyq4wqbbwjh4vw23rslsrwhw-ref-demo.drv\n", ""},
      /* System (Nix 2.8 writes it after Deriver) */
      {"Sig: ", "System: x86_64-linux\nSig: ", "Sig: ", "System: x86_64-linux\nSig: "},
      /* any hash spelling; written back as nix32 */
      {"FileHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir\n",
       "FileHash: sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs\n",
       "FileHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir\n",
       "FileHash: sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs\n"},
      /* fields in another order are written in Nix's */
      {"StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo\nURL: ",
       "URL: ", NULL, NULL}, /* (StorePath re-added at the end below) */
      /* leading zeros are still a number */
      {"FileSize: 216\n", "FileSize: 000216\n", NULL, NULL},
      /* CA: an empty value is no CA, as in Nix */
      {"Sig: ", "CA: \nSig: ", NULL, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *text = patch(cases[i].from, cases[i].to);
    if (i == 9) { /* move StorePath to the end */
      char *moved = malloc(strlen(text) + 80);
      sprintf(moved, "%sStorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo\n", text);
      free(text);
      text = moved;
    }
    narcache_narinfo *ni = parse_ok(text);
    char *out = format(ni);
    if (cases[i].formatted_from == NULL) {
      assert_string_equal(out, base_text);
    } else {
      char *want = patch(cases[i].formatted_from, cases[i].formatted_to);
      assert_string_equal(out, want);
      free(want);
    }
    assert_fingerprint(ni, base_fingerprint);
    narcache_free(out);
    narcache_narinfo_free(ni);
    free(text);
  }
}

static void test_ca_rendering(void **state) {
  (void)state;
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"fixed:r:sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa",
       "fixed:r:sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa"},
      {"fixed:sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
       "fixed:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic"},
      {"text:sha256:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=",
       "text:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic"},
      {"fixed:r:sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs", "fixed:r:sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char line[256];
    snprintf(line, sizeof line, "CA: %s\n", cases[i].in);
    char *text = malloc(sizeof base_text + strlen(line));
    sprintf(text, "%s%s", base_text, line);
    narcache_narinfo *ni = parse_ok(text);
    assert_string_equal(narcache_narinfo_ca(ni, NULL), cases[i].out);
    narcache_narinfo_free(ni);
    free(text);
  }
}

/* Refusals: each gives NARCACHE_EBADNARINFO (or ELIMIT), a message that
 * names the problem, the position, and leaves the object as it was. */
typedef struct bad_case {
  const char *from, *to;
  const char *message; /* expected substring of errmsg */
  long offset;         /* expected err_offset, or -1 to skip */
} bad_case;

static const bad_case bad_cases[] = {
    /* line structure */
    {"Compression: none\n", "Compression: none\r\n", "line 3, column 18: Compression: carriage return", 147},
    {"StorePath", "\xef\xbb\xbfStorePath", "line 1, column 1: expected a field name", 0},
    {"URL: ", "URL:", "line 2, column 5: URL: expected one space after ':'", 68},
    {"URL: ", "URL:  ", "URL: expected printable ASCII", 69},
    {"StorePath", " StorePath", "line 1, column 1: expected a field name", 0},
    {"StorePath:", "StorePath :", "line 1, column 10: expected ':' after the field name", 9},
    {"NarSize: 216\n", "NarSize: 216\n\n", "line 8, column 1: blank line", -1},
    {"StorePath", "\nStorePath", "line 1, column 1: blank line", 0},
    {"FileSize: 216", "FileSize: 2\t16", "line 5, column 12: FileSize: control character", -1},
    {"Deriver: ", "Deriver:\n", "Deriver: expected one space", -1},
    /* duplicates */
    {"URL: ", "URL: nar/x.nar\nURL: ", "line 3, column 1: URL: field appears twice", -1},
    {"StorePath: ", "StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo\nStorePath: ",
     "StorePath: field appears twice", -1},
    {"References: ", "References: \nReferences: ", "References: field appears twice", -1},
    {"Sig: ", "CA: fixed:r:sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa\nCA: \nSig: ",
     "CA: field appears twice", -1},
    /* required fields */
    {"StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo\n", "", "missing required field StorePath", -1},
    {"URL: nar/05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir.nar\n", "", "missing required field URL", -1},
    {"NarHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir\n", "", "missing required field NarHash", -1},
    {"NarSize: 216\n", "", "missing required field NarSize", -1},
    {"URL: nar/05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir.nar", "URL: ", "URL: empty URL", -1},
    /* sizes */
    {"NarSize: 216", "NarSize: 0", "NarSize: must not be 0", -1},
    {"NarSize: 216", "NarSize: +216", "line 7, column 10: NarSize: expected a decimal number", -1},
    {"NarSize: 216", "NarSize: -1", "NarSize: expected a decimal number", -1},
    {"NarSize: 216", "NarSize: 216 ", "line 7, column 13: NarSize: expected a decimal number", -1},
    {"NarSize: 216", "NarSize: 18446744073709551616", "line 7, column 29: NarSize: number too large", -1},
    {"NarSize: 216", "NarSize: 0x10", "NarSize: expected a decimal number", -1},
    {"FileSize: 216", "FileSize: ", "FileSize: expected a decimal number", -1},
    /* hashes */
    {"NarHash: sha256:", "NarHash: ", "NarHash: expected <algo>:<digits>", -1},
    {"NarHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir",
     "NarHash: sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs", "NarHash: NarHash must be sha256", -1},
    {"NarHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir",
     "NarHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4nci", "NarHash: wrong hash length", -1},
    {"NarHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir",
     "NarHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncie", "NarHash: invalid character in hash", -1},
    {"NarHash: sha256:", "NarHash: sha257:", "NarHash: unknown hash algorithm", -1},
    {"FileHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir",
     "FileHash: sha256-!!!", "FileHash: invalid character in hash", -1},
    /* store paths */
    {"StorePath: /nix/store/", "StorePath: /gnu/store/", "line 1, column 13: StorePath: not a path in the store directory", 12},
    {"StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo",
     "StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31ye-ref-demo", "StorePath: invalid store path hash", -1},
    {"StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo",
     "StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh_ref-demo", "StorePath: expected '-' after", -1},
    {"StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo",
     "StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref demo", "line 1, column 59: StorePath: invalid store path name", 58},
    {"StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo",
     "StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo/", "StorePath: invalid store path name", -1},
    {"References: 2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1",
     "References: /nix/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1", "line 8, column 13: References: expected a base name", -1},
    {"References: 2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1 ",
     "References: 2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1 ..-x ", "line 8, column 49: References: invalid store path hash", -1},
    {"References: 2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1 ",
     "References: 2x2rbnxcyn2hnpphfd0zsvbidgfij8s0- ", "References: invalid store path name", -1},
    {"Deriver: ba703j8axyq4wqbbwjh4vw23rslsrwhw-ref-demo.drv", "Deriver: ref-demo.drv", "Deriver: invalid store path hash", -1},
    /* other values */
    {"Compression: none", "Compression: x z", "Compression: expected a method name", -1},
    {"URL: nar/", "URL: n\xc3\xa4r/", "URL: expected printable ASCII", -1},
    {"Sig: test-cache-1:", "Sig: test-cache-1", "Sig: expected <key name>:<signature>", -1},
    {"Sig: test-cache-1:", "Sig: :", "Sig: empty key name", -1},
    {"Sig: ", "CA: fixed:r:sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=\nSig: ", "CA: expected <algo>:<digits>", -1},
    {"Sig: ", "CA: text:sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs\nSig: ", "CA: text content addresses use sha256", -1},
    {"Sig: ", "CA: source:sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa\nSig: ", "CA: expected text: or fixed:", -1},
    {"Sig: ", "CA: fixed:r:sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhh\nSig: ", "CA: wrong hash length", -1},
    {"Sig: ", "System: x86_64 linux\nSig: ", "System: expected printable ASCII", -1},
};

static void test_refusals(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
    const bad_case *c = &bad_cases[i];
    char *text = patch(c->from, c->to);
    size_t len = strlen(text);
    narcache_narinfo *ni = NULL;
    assert_int_equal(narcache_narinfo_new(&ni, NULL), 0);
    assert_int_equal(parse_len(ni, base_text, strlen(base_text)), 0);
    int rc = parse_len(ni, text, len);
    const char *msg = narcache_narinfo_errmsg(ni);
    if (rc != NARCACHE_EBADNARINFO || strstr(msg, c->message) == NULL)
      fail_msg("case %zu (%s): got %s \"%s\", want \"%s\"", i, c->to, narcache_errname(rc), msg,
               c->message);
    if (c->offset >= 0 && (long)narcache_narinfo_err_offset(ni) != c->offset)
      fail_msg("case %zu: offset %zu, want %ld", i, narcache_narinfo_err_offset(ni), c->offset);
    assert_true(narcache_narinfo_err_offset(ni) <= len);
    /* the previous contents survive */
    char *out = format(ni);
    assert_string_equal(out, base_text);
    narcache_free(out);
    narcache_narinfo_free(ni);
    free(text);
  }
}

/* Byte-level refusals the patch table cannot express. */
static void test_refusals_raw(void **state) {
  (void)state;
  narcache_narinfo *ni = NULL;
  assert_int_equal(narcache_narinfo_new(&ni, NULL), 0);
  size_t n = strlen(base_text);

  /* no final newline */
  assert_int_equal(parse_len(ni, base_text, n - 1), NARCACHE_EBADNARINFO);
  assert_non_null(strstr(narcache_narinfo_errmsg(ni), "line 10, column 107: last line does not end in a newline"));
  assert_int_equal(narcache_narinfo_err_offset(ni), n - 1);

  /* a NUL byte in the middle of a value */
  char *nul = exact_copy(base_text, n);
  nul[20] = '\0';
  assert_int_equal(narcache_narinfo_parse(ni, nul, n), NARCACHE_EBADNARINFO);
  assert_non_null(strstr(narcache_narinfo_errmsg(ni), "line 1, column 21: StorePath: control character"));
  assert_int_equal(narcache_narinfo_err_offset(ni), 20);
  free(nul);

  /* empty input: every required field is missing */
  assert_int_equal(parse_len(ni, "", 0), NARCACHE_EBADNARINFO);
  assert_non_null(strstr(narcache_narinfo_errmsg(ni), "missing required field StorePath"));

  /* huge: refused before reading it (no unbounded work) */
  size_t huge_len = NARCACHE_NARINFO_MAX_BYTES + 1;
  char *huge = malloc(huge_len);
  memset(huge, 'a', huge_len);
  assert_int_equal(narcache_narinfo_parse(ni, huge, huge_len), NARCACHE_ELIMIT);
  assert_non_null(strstr(narcache_narinfo_errmsg(ni), "larger than"));
  free(huge);

  /* a big but legal narinfo: 12000 references, in reverse order */
  size_t refs = 12000;
  char *big = malloc(n + refs * 48 + 64);
  char *p = big + sprintf(big, "%s", "StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo\n"
                                     "URL: x\nNarHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir\n"
                                     "NarSize: 1\nReferences:");
  for (size_t i = refs; i-- > 0;)
    p += sprintf(p, " 00000000000000000000000000000000-r%06zu", i);
  p += sprintf(p, "\n");
  assert_int_equal(parse_len(ni, big, (size_t)(p - big)), 0);
  assert_int_equal(narcache_narinfo_reference_count(ni), refs);
  assert_string_equal(narcache_narinfo_reference(ni, 0, NULL), "00000000000000000000000000000000-r000000");
  free(big);

  assert_int_equal(narcache_narinfo_parse(NULL, "x", 1), NARCACHE_EINVAL);
  assert_int_equal(narcache_narinfo_parse(ni, NULL, 1), NARCACHE_EINVAL);
  narcache_narinfo_free(ni);
}

/* Building a narinfo field by field gives what Nix would write. */
static void test_build_with_setters(void **state) {
  (void)state;
  narcache_narinfo *ni = NULL;
  assert_int_equal(narcache_narinfo_new(&ni, NULL), 0);
  char *out = NULL;
  assert_int_equal(narcache_narinfo_format(&out, NULL, ni), NARCACHE_EBADNARINFO);
  assert_int_equal(narcache_narinfo_fingerprint(&out, NULL, ni), NARCACHE_EBADNARINFO);
  assert_null(out);

  const char *sp = "/nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo";
  assert_int_equal(narcache_narinfo_set_store_path(ni, sp, strlen(sp)), 0);
  const char *url = "nar/05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir.nar";
  assert_int_equal(narcache_narinfo_set_url(ni, url, strlen(url)), 0);
  assert_int_equal(narcache_narinfo_set_compression(ni, "none", 4), 0);
  narcache_hash h;
  const char *hs = "sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir";
  assert_int_equal(narcache_hash_parse(&h, hs, strlen(hs), NULL), 0);
  assert_int_equal(narcache_narinfo_set_file_hash(ni, &h), 0);
  assert_int_equal(narcache_narinfo_set_file_size(ni, 1, 216), 0);
  assert_int_equal(narcache_narinfo_set_nar_hash(ni, &h), 0);
  assert_int_equal(narcache_narinfo_set_nar_size(ni, 216), 0);
  /* added out of order, and one twice */
  const char *r2 = "dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo", *r1 = "2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1";
  assert_int_equal(narcache_narinfo_add_reference(ni, r2, strlen(r2)), 0);
  assert_int_equal(narcache_narinfo_add_reference(ni, r1, strlen(r1)), 0);
  assert_int_equal(narcache_narinfo_add_reference(ni, r2, strlen(r2)), 0);
  const char *drv = "ba703j8axyq4wqbbwjh4vw23rslsrwhw-ref-demo.drv";
  assert_int_equal(narcache_narinfo_set_deriver(ni, drv, strlen(drv)), 0);
  const char *sig = strstr(base_text, "Sig: ") + 5;
  assert_int_equal(narcache_narinfo_add_sig(ni, sig, strlen(sig) - 1), 0);
  out = format(ni);
  assert_string_equal(out, base_text);
  narcache_free(out);

  /* refused values leave the field alone and explain */
  assert_int_equal(narcache_narinfo_set_store_path(ni, "/nix/store/x", 12), NARCACHE_EBADNARINFO);
  assert_non_null(strstr(narcache_narinfo_errmsg(ni), "StorePath: byte 12: invalid store path hash"));
  assert_string_equal(narcache_narinfo_store_path(ni, NULL), sp);
  assert_int_equal(narcache_narinfo_set_url(ni, "a b", 3), NARCACHE_EBADNARINFO);
  assert_int_equal(narcache_narinfo_set_url(ni, "", 0), NARCACHE_EBADNARINFO);
  assert_int_equal(narcache_narinfo_add_reference(ni, "/nix/store/x", 12), NARCACHE_EBADNARINFO);
  assert_int_equal(narcache_narinfo_add_sig(ni, "nokey", 5), NARCACHE_EBADNARINFO);
  assert_int_equal(narcache_narinfo_set_ca(ni, "fixed:md6:00", 12), NARCACHE_EBADNARINFO);
  assert_int_equal(narcache_narinfo_set_nar_size(ni, 0), NARCACHE_EINVAL);
  narcache_hash sha1;
  assert_int_equal(narcache_hash_buffer(&sha1, NARCACHE_HASH_SHA1, "", 0), 0);
  assert_int_equal(narcache_narinfo_set_nar_hash(ni, &sha1), NARCACHE_EHASHALGO);
  narcache_hash broken = h;
  broken.len = 7;
  assert_int_equal(narcache_narinfo_set_file_hash(ni, &broken), NARCACHE_EINVAL);
  out = format(ni);
  assert_string_equal(out, base_text);
  narcache_free(out);

  /* clearing optional fields */
  assert_int_equal(narcache_narinfo_set_deriver(ni, NULL, 0), 0);
  assert_int_equal(narcache_narinfo_set_file_hash(ni, NULL), 0);
  assert_int_equal(narcache_narinfo_set_file_size(ni, 0, 0), 0);
  assert_int_equal(narcache_narinfo_set_compression(ni, NULL, 0), 0);
  assert_int_equal(narcache_narinfo_set_ca(ni, "fixed:r:sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa", 67), 0);
  assert_int_equal(narcache_narinfo_set_system(ni, "aarch64-linux", 13), 0);
  narcache_narinfo_clear_sigs(ni);
  narcache_narinfo_clear_references(ni);
  out = format(ni);
  assert_string_equal(out,
                      "StorePath: /nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo\n"
                      "URL: nar/05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir.nar\n"
                      "Compression: bzip2\n"
                      "NarHash: sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir\n"
                      "NarSize: 216\n"
                      "References: \n"
                      "System: aarch64-linux\n"
                      "CA: fixed:r:sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa\n");
  assert_fingerprint(ni, "1;/nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo;"
                         "sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir;216;");
  narcache_free(out);
  narcache_narinfo_free(ni);
}

/* Another store directory: paths are checked against it and the
 * fingerprint spells references with it. */
static void test_other_store_dir(void **state) {
  (void)state;
  narcache_narinfo *ni = NULL;
  assert_int_equal(narcache_narinfo_new(&ni, "/"), NARCACHE_EINVAL);
  assert_int_equal(narcache_narinfo_new(&ni, "relative/store"), NARCACHE_EINVAL);
  assert_int_equal(narcache_narinfo_new(&ni, "/gnu/store/"), NARCACHE_EINVAL);
  assert_int_equal(narcache_narinfo_new(&ni, "/gnu/store"), 0);
  assert_int_equal(parse_len(ni, base_text, strlen(base_text)), NARCACHE_EBADNARINFO);
  char *text = malloc(sizeof base_text);
  strcpy(text, base_text);
  memcpy(strstr(text, "/nix/store"), "/gnu/store", 10);
  assert_int_equal(parse_len(ni, text, strlen(text)), 0);
  assert_fingerprint(ni, "1;/gnu/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo;"
                         "sha256:05ffilpd1m3pgc62x6c3gkr6q3hkwfv8hdax812mbb5jpzb4ncir;216;"
                         "/gnu/store/2x2rbnxcyn2hnpphfd0zsvbidgfij8s0-f1,"
                         "/gnu/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo");
  free(text);
  narcache_narinfo_free(ni);
}

/* ------------------------------------------------------------------ */
/* nix-cache-info                                                      */
/* ------------------------------------------------------------------ */

static narcache_cache_info *info_parse(const char *text, int want_rc) {
  narcache_cache_info *ci = NULL;
  assert_int_equal(narcache_cache_info_new(&ci), 0);
  char *copy = exact_copy(text, strlen(text));
  int rc = narcache_cache_info_parse(ci, copy, strlen(text));
  free(copy);
  if (rc != want_rc)
    fail_msg("cache-info \"%s\": got %s (%s)", text, narcache_errname(rc),
             narcache_cache_info_errmsg(ci));
  return ci;
}

static void test_cache_info(void **state) {
  (void)state;
  /* exactly what Nix writes for a file:// cache */
  size_t len = 0;
  char *nix = test_data_slurp("narinfo/golden/none/nix-cache-info", &len);
  narcache_cache_info *ci = info_parse(nix, 0);
  assert_string_equal(narcache_cache_info_store_dir(ci, NULL), "/nix/store");
  int wmq = 7;
  int32_t prio = 7;
  assert_int_equal(narcache_cache_info_want_mass_query(ci, &wmq), NARCACHE_ENOTFOUND);
  assert_int_equal(narcache_cache_info_priority(ci, &prio), NARCACHE_ENOTFOUND);
  char *out = NULL;
  size_t out_len = 0;
  assert_int_equal(narcache_cache_info_format(&out, &out_len, ci), 0);
  assert_int_equal(out_len, len);
  assert_memory_equal(out, nix, len);
  narcache_free(out);
  narcache_cache_info_free(ci);
  free(nix);

  /* a public cache's, with CRLF, blanks, comments and unknown keys */
  ci = info_parse("\r\n  \nStoreDir:  /nix/store \r\nWantMassQuery: 1\r\n# comment\nPriority:40\n"
                  "Future: x\n",
                  0);
  assert_int_equal(narcache_cache_info_want_mass_query(ci, &wmq), 0);
  assert_int_equal(wmq, 1);
  assert_int_equal(narcache_cache_info_priority(ci, &prio), 0);
  assert_int_equal(prio, 40);
  assert_int_equal(narcache_cache_info_format(&out, NULL, ci), 0);
  assert_string_equal(out, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n");
  narcache_free(out);

  /* refusals keep the previous contents */
  static const struct {
    const char *text, *message;
  } bad[] = {
      {"StoreDir: /nix/store\nStoreDir: /gnu/store\n", "line 2: StoreDir appears twice"},
      {"StoreDir: nix/store\n", "line 1: StoreDir: expected an absolute path"},
      {"StoreDir: /nix/store/\n", "StoreDir: expected an absolute path"},
      {"StoreDir:\n", "StoreDir: expected an absolute path"},
      {"WantMassQuery: true\n", "WantMassQuery: expected 0 or 1"},
      {"WantMassQuery: 1\nWantMassQuery: 0\n", "WantMassQuery appears twice"},
      {"Priority: 12abc\n", "Priority: expected a 32-bit integer"},
      {"Priority: abc\n", "Priority: expected a 32-bit integer"},
      {"Priority: 2147483648\n", "Priority: expected a 32-bit integer"},
      {"Priority: -\n", "Priority: expected a 32-bit integer"},
      {"Priority: 1\nPriority: 2\n", "Priority appears twice"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *copy = exact_copy(bad[i].text, strlen(bad[i].text));
    int rc = narcache_cache_info_parse(ci, copy, strlen(bad[i].text));
    free(copy);
    if (rc != NARCACHE_EBADNARINFO || strstr(narcache_cache_info_errmsg(ci), bad[i].message) == NULL)
      fail_msg("\"%s\": got %s \"%s\"", bad[i].text, narcache_errname(rc), narcache_cache_info_errmsg(ci));
    assert_int_equal(narcache_cache_info_priority(ci, &prio), 0);
    assert_int_equal(prio, 40);
  }
  assert_int_equal(narcache_cache_info_parse(ci, "StoreDir: /nix\0/store\n", 22), NARCACHE_EBADNARINFO);
  assert_non_null(strstr(narcache_cache_info_errmsg(ci), "NUL byte at offset 14"));
  char *huge = calloc(1, 64 * 1024 + 1);
  memset(huge, '\n', 64 * 1024 + 1);
  assert_int_equal(narcache_cache_info_parse(ci, huge, 64 * 1024 + 1), NARCACHE_ELIMIT);
  free(huge);
  narcache_cache_info_free(ci);

  /* negative priorities and the limits of int32 */
  ci = info_parse("Priority: -2147483648\nWantMassQuery: 0\n", 0);
  assert_int_equal(narcache_cache_info_priority(ci, &prio), 0);
  assert_int_equal(prio, INT32_MIN);
  assert_int_equal(narcache_cache_info_want_mass_query(ci, &wmq), 0);
  assert_int_equal(wmq, 0);
  assert_null(narcache_cache_info_store_dir(ci, NULL));
  narcache_cache_info_free(ci);

  /* built with setters */
  assert_int_equal(narcache_cache_info_new(&ci), 0);
  assert_int_equal(narcache_cache_info_format(&out, &out_len, ci), 0);
  assert_string_equal(out, "");
  assert_int_equal(out_len, 0);
  narcache_free(out);
  assert_int_equal(narcache_cache_info_set_store_dir(ci, "store", 5), NARCACHE_EBADNARINFO);
  assert_int_equal(narcache_cache_info_set_store_dir(ci, "/nix/store", 10), 0);
  assert_int_equal(narcache_cache_info_set_want_mass_query(ci, 1, 1), 0);
  assert_int_equal(narcache_cache_info_set_priority(ci, 1, 30), 0);
  assert_int_equal(narcache_cache_info_format(&out, NULL, ci), 0);
  assert_string_equal(out, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n");
  narcache_free(out);
  assert_int_equal(narcache_cache_info_set_store_dir(ci, NULL, 0), 0);
  assert_int_equal(narcache_cache_info_set_priority(ci, 0, 0), 0);
  assert_int_equal(narcache_cache_info_format(&out, NULL, ci), 0);
  assert_string_equal(out, "WantMassQuery: 1\n");
  narcache_free(out);
  narcache_cache_info_free(ci);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fields_of_a_nix_narinfo),
      cmocka_unit_test(test_accepted_variants),
      cmocka_unit_test(test_ca_rendering),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_refusals_raw),
      cmocka_unit_test(test_build_with_setters),
      cmocka_unit_test(test_other_store_dir),
      cmocka_unit_test(test_cache_info),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
