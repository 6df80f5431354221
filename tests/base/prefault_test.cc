// PrefaultHeap: after it, the thread's next small allocations land on pages
// already faulted in (glibc malloc; under ASan's allocator it must only do no
// harm). Counted with the thread's own minor page faults.
#include "server/base/prefault.h"

#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace fanin::base {
namespace {

long ThreadMinorFaults() {
  rusage usage;
  getrusage(RUSAGE_THREAD, &usage);
  return usage.ru_minflt;
}

// Allocates (and writes) `n` 200-byte blocks, as a loop's events are, keeping
// them; returns the page faults they took.
long FaultsOf(int n, std::vector<void*>& kept) {
  const long before = ThreadMinorFaults();
  for (int i = 0; i < n; ++i) {
    void* p = std::malloc(200);
    std::memset(p, 1, 200);
    kept.push_back(p);
  }
  return ThreadMinorFaults() - before;
}

struct Faults {
  long without = -1;  // 16 KiB of blocks on fresh memory
  long with = -1;     // the next 16 KiB, after PrefaultHeap(32 KiB)
};

// In one thread: allocates until a block faults (the arena's frontier:
// memory freed earlier in the process is used up), then 16 KiB without and
// 16 KiB with the heap grown ahead.
Faults Measure() {
  Faults f;
  std::thread t([&] {
    std::vector<void*> kept;
    for (int i = 0; i < 50000 && FaultsOf(1, kept) == 0; ++i) {
    }
    f.without = FaultsOf(80, kept);
    PrefaultHeap(32 << 10);
    f.with = FaultsOf(80, kept);
    for (void* p : kept) std::free(p);
  });
  t.join();
  return f;
}

#if defined(__SANITIZE_ADDRESS__)
#define FANIN_NOT_GLIBC_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FANIN_NOT_GLIBC_MALLOC 1
#endif
#endif

TEST(PrefaultHeapTest, TheNextSmallAllocationsFaultNothing) {
#ifdef FANIN_NOT_GLIBC_MALLOC
  GTEST_SKIP() << "ASan's allocator: nothing to grow ahead";
#endif
  const Faults f = Measure();
  // The control: the count sees the faults of fresh memory at all.
  EXPECT_GT(f.without, 0);
  EXPECT_EQ(f.with, 0);
}

TEST(PrefaultHeapTest, AnySizeIsSafe) {
  for (size_t bytes :
       {size_t{1}, size_t{4095}, size_t{4096}, size_t{1} << 20}) {
    PrefaultHeap(bytes);
  }
}

}  // namespace
}  // namespace fanin::base
