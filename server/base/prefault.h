// Growing this thread's heap now, off an event's path.
//
// glibc's malloc grows a thread's arena a page at a time: the allocation that
// crosses into a new page pays an mprotect and, when written, a page fault
// (8-26 µs together on this VM). While the event history fills (its first
// --history_events events) every event lands on fresh memory, so about one
// event in twelve paid that between its read() and its gRPC write. A loop
// calls PrefaultHeap after its iteration's writes: it allocates `bytes`,
// writes one byte per page and frees them again. Freed next to the top of
// the arena, they merge back into it, already mapped and faulted in, and the
// next events' allocations are carved from there. With any other allocator,
// or once the history is full and events reuse freed memory, it is one
// malloc and free of memory already touched.
#ifndef FANIN_SERVER_BASE_PREFAULT_H_
#define FANIN_SERVER_BASE_PREFAULT_H_

#include <cstddef>

namespace fanin::base {

void PrefaultHeap(size_t bytes);

}  // namespace fanin::base

#endif  // FANIN_SERVER_BASE_PREFAULT_H_
