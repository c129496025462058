// The umbrella header must be usable from C++ (extern "C", no C-only syntax).
#include <narcache.h>

int main() {
  narcache_outbuf out = {nullptr, 0, 0};
  (void)out;
  return narcache_version() == NARCACHE_VERSION_HEX &&
                 narcache_strerror(NARCACHE_EINVAL) != nullptr
             ? 0
             : 1;
}
