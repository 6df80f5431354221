#include "server/base/prefault.h"

#include <unistd.h>

#include <cstdlib>

namespace fanin::base {

void PrefaultHeap(size_t bytes) {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* block = std::malloc(bytes);
  if (block == nullptr) return;
  // volatile: the writes are the point, not their values.
  volatile char* p = static_cast<volatile char*>(block);
  for (size_t i = 0; i < bytes; i += page) p[i] = 0;
  p[bytes - 1] = 0;
  std::free(block);
}

}  // namespace fanin::base
