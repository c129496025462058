/* Version, error tables, allocator hook and the init refcount. */
#include <narcache.h>

#include <pthread.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static void test_version(void **state) {
  (void)state;
  assert_int_equal(narcache_version(), NARCACHE_VERSION_HEX);
  assert_string_equal(narcache_version_string(), NARCACHE_VERSION_STRING);
  assert_true(NARCACHE_VERSION_AT_LEAST(0, 0, 0));
  assert_true(NARCACHE_VERSION_AT_LEAST(NARCACHE_VERSION_MAJOR, NARCACHE_VERSION_MINOR,
                                        NARCACHE_VERSION_PATCH));
  assert_false(NARCACHE_VERSION_AT_LEAST(NARCACHE_VERSION_MAJOR + 1, 0, 0));
}

/* The pinned values: changing any of these breaks the ABI. */
static void test_error_values_pinned(void **state) {
  (void)state;
  assert_int_equal(NARCACHE_OK, 0);
  assert_int_equal(NARCACHE_EINVAL, -1);
  assert_int_equal(NARCACHE_ENOMEM, -2);
  assert_int_equal(NARCACHE_EMISUSE, -3);
  assert_int_equal(NARCACHE_EBUFS, -4);
  assert_int_equal(NARCACHE_ENOTSUP, -15);
  assert_int_equal(NARCACHE_EBADHASH, -16);
  assert_int_equal(NARCACHE_ECRYPTO, -22);
  assert_int_equal(NARCACHE_EUNAVAIL, -23);
  assert_int_equal(NARCACHE_ECONFLICT, -24);
  assert_int_equal(NARCACHE_ENOSPACE, -25);
}

static void test_error_strings(void **state) {
  (void)state;
  /* Every code in the map has a distinct name and a real description. */
  const char *names[64] = {0};
  size_t count = 0;
#define CHECK_CODE(name, value, text)                                          \
  assert_string_equal(narcache_errname(value), #name);                         \
  assert_string_equal(narcache_strerror(value), text);                         \
  names[count++] = #name;
  NARCACHE_ERRNO_MAP(CHECK_CODE)
#undef CHECK_CODE
  for (size_t i = 0; i < count; i++)
    for (size_t j = i + 1; j < count; j++)
      assert_string_not_equal(names[i], names[j]);
  assert_string_equal(narcache_errname(0), "OK");
  assert_string_equal(narcache_strerror(0), "success");
  /* Unknown codes still give static strings. */
  const int unknown[] = {1, -26, -1000, 12345, -2147483647 - 1};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    assert_string_equal(narcache_errname(unknown[i]), "UNKNOWN");
    assert_string_equal(narcache_strerror(unknown[i]), "unknown error");
  }
}

/* ---- allocator ---------------------------------------------------------- */

typedef struct counting_allocator {
  size_t mallocs, frees;
  size_t fail_after; /* fail every allocation once this many succeeded */
} counting_allocator;

static void *counting_malloc(void *ctx, size_t n) {
  counting_allocator *c = ctx;
  if (c->mallocs >= c->fail_after)
    return NULL;
  c->mallocs++;
  return malloc(n);
}

static void *counting_realloc(void *ctx, void *p, size_t n) {
  (void)ctx;
  return realloc(p, n);
}

static void counting_free(void *ctx, void *p) {
  counting_allocator *c = ctx;
  c->frees++;
  free(p);
}

static void test_allocator_hook(void **state) {
  (void)state;
  counting_allocator counts = {0, 0, (size_t)-1};
  narcache_allocator a = {NARCACHE_ALLOCATOR_VERSION, counting_malloc,
                          counting_realloc, counting_free, &counts};
  assert_int_equal(narcache_set_allocator(&a), 0);
  narcache_hasher *h = NULL;
  assert_int_equal(narcache_hasher_new(&h, NARCACHE_HASH_SHA256), 0);
  assert_int_equal(counts.mallocs, 1);
  /* Switching while an object is alive would free it with the wrong
   * allocator: refused. */
  assert_int_equal(narcache_set_allocator(NULL), NARCACHE_EMISUSE);
  narcache_hasher_free(h);
  assert_int_equal(counts.frees, 1);
  assert_int_equal(narcache_set_allocator(NULL), 0);
}

static void test_allocator_failure(void **state) {
  (void)state;
  counting_allocator counts = {0, 0, 0};
  narcache_allocator a = {NARCACHE_ALLOCATOR_VERSION, counting_malloc,
                          counting_realloc, counting_free, &counts};
  assert_int_equal(narcache_set_allocator(&a), 0);
  narcache_hasher *h = (narcache_hasher *)&counts;
  assert_int_equal(narcache_hasher_new(&h, NARCACHE_HASH_SHA256), NARCACHE_ENOMEM);
  assert_null(h);
  assert_int_equal(counts.frees, 0);
  assert_int_equal(narcache_set_allocator(NULL), 0);
}

static void test_allocator_rejects_bad_tables(void **state) {
  (void)state;
  narcache_allocator a = {NARCACHE_ALLOCATOR_VERSION, counting_malloc,
                          counting_realloc, NULL, NULL};
  assert_int_equal(narcache_set_allocator(&a), NARCACHE_EINVAL);
  a.free_fn = counting_free;
  a.version = 99;
  assert_int_equal(narcache_set_allocator(&a), NARCACHE_EINVAL);
  narcache_free(NULL);
}

/* ---- init --------------------------------------------------------------- */

static void test_init_refcount(void **state) {
  (void)state;
  assert_int_equal(narcache_shutdown(), NARCACHE_EMISUSE);
  assert_int_equal(narcache_init(), 1);
  assert_int_equal(narcache_init(), 2);
  assert_int_equal(narcache_shutdown(), 1);
  assert_int_equal(narcache_shutdown(), 0);
  assert_int_equal(narcache_shutdown(), NARCACHE_EMISUSE);
}

static void *init_many(void *arg) {
  (void)arg;
  for (int i = 0; i < 1000; i++) {
    if (narcache_init() < 1 || narcache_shutdown() < 0)
      return (void *)1;
  }
  return NULL;
}

static void test_init_threads(void **state) {
  (void)state;
  pthread_t threads[4];
  for (int i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&threads[i], NULL, init_many, NULL), 0);
  for (int i = 0; i < 4; i++) {
    void *result;
    assert_int_equal(pthread_join(threads[i], &result), 0);
    assert_null(result);
  }
  /* Balanced calls leave the count at zero. */
  assert_int_equal(narcache_shutdown(), NARCACHE_EMISUSE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_error_values_pinned),
      cmocka_unit_test(test_error_strings),
      cmocka_unit_test(test_allocator_hook),
      cmocka_unit_test(test_allocator_failure),
      cmocka_unit_test(test_allocator_rejects_bad_tables),
      cmocka_unit_test(test_init_refcount),
      cmocka_unit_test(test_init_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
