/* A program outside the tree, built against an installed libnarcache. */
#include <narcache.h>

#include <stdio.h>
#include <string.h>

int main(void) {
  narcache_hash h;
  char text[NARCACHE_HASH_STRING_MAX];
  if (narcache_version() != NARCACHE_VERSION_HEX)
    return 1;
  if (narcache_hash_buffer(&h, NARCACHE_HASH_SHA256, "hello", 5) != 0 ||
      narcache_hash_format(text, sizeof text, NULL, &h, NARCACHE_HASH_NIX32, 1) != 0)
    return 1;
  puts(text);
  return strcmp(text, "sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic") != 0;
}
