/* Compiled with -std=c99 -pedantic -Werror: the umbrella header must stand
 * alone and stay within C99. */
#include <narcache.h>

int main(void) {
  narcache_inbuf in = {0, 0, 0};
  narcache_hash h;
  (void)in;
  (void)h;
  return narcache_version() == NARCACHE_VERSION_HEX ? 0 : 1;
}
