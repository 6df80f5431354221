// One event loop per thread: fd readiness, timers, and a cross-thread task
// queue woken by an eventfd.
//
// Example (one loop on its own thread):
//   auto loop = EventLoop::Create(PollerKind::kEpollLevel);
//   if (!loop.ok()) return loop.status();
//   std::thread t([&] { (*loop)->Run(); });
//   (*loop)->Post([&] { /* runs on the loop thread */ });
//   (*loop)->Stop();
//   t.join();
#ifndef FANIN_SERVER_REACTOR_EVENT_LOOP_H_
#define FANIN_SERVER_REACTOR_EVENT_LOOP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/reactor/poller.h"

namespace fanin::reactor {

// Implemented by connections and listeners. Called on the loop thread only.
class IoHandler {
 public:
  virtual ~IoHandler() = default;
  // events: k* bits from poller.h (possibly merged with Redispatch bits).
  // The handler may Watch/Rewatch/Unwatch any fd, close fds (after Unwatch),
  // Post, add timers, Redispatch, and delete itself (after Unwatch).
  virtual void OnIo(uint32_t events) = 0;
};

// A reactor. Every method documented "loop thread" must run on the thread
// inside Run() (or on any single thread before Run has started); this is
// checked in debug builds. The loop never owns fds or handlers.
//
// Each iteration: wait for readiness (not blocking when tasks, redispatches
// or due timers are pending), dispatch fd events, run due timers, run tasks
// posted before this iteration's queue swap.
//
// Fairness: the loop calls OnIo once per fd per iteration; handlers bound
// their own work (e.g. read at most 64 KiB) and, in edge-triggered mode, call
// Redispatch to be called again next iteration without a new edge.
class EventLoop {
 public:
  using TimerId = uint64_t;  // never 0

  // Errors: the poller's or eventfd's status.
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create(PollerKind kind);

  // Not while running. Tasks still queued (e.g. posted after Stop) are
  // destroyed without running; pending timers are destroyed too.
  ~EventLoop();

  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Blocks until Stop(); the calling thread becomes the loop thread. May be
  // called again after it returned.
  void Run();
  // Any thread. Run returns after the current iteration; a Stop before Run
  // makes the next Run return after one iteration.
  void Stop();
  // True only on the thread currently inside Run().
  bool IsInLoopThread() const;
  // Debug builds: aborts with a log line when called, while the loop runs,
  // from another thread. Classes that live on one loop (connections,
  // listeners, shards) call it in their loop-thread-only methods.
  void AssertInLoopThread() const;

  // Any thread. Runs fn on the loop thread in posting order (FIFO); wakes the
  // loop (eventfd). Tasks posted from the loop itself run next iteration.
  void Post(absl::AnyInvocable<void() &&> fn);

  // Loop thread. Starts delivering readiness of fd (interest: kReadable |
  // kWritable, may be 0) to handler, which must outlive the watch.
  // Errors: InvalidArgument (fd < 0, null handler), AlreadyExists (fd already
  // watched), or the poller's status (e.g. select refusing a too-high fd).
  absl::Status Watch(int fd, uint32_t interest, IoHandler* handler);
  // Loop thread. Changes the interest of a watched fd (0 = nothing at all:
  // not even kHangup/kError are reported). NotFound if fd is not watched.
  // The same interest again is a no-op (it does not re-arm an edge; use
  // Redispatch for that).
  absl::Status Rewatch(int fd, uint32_t interest);
  // Loop thread. From now on the handler gets nothing, even events already
  // collected in this iteration (generation tag). No-op if not watched. Call
  // before closing fd.
  void Unwatch(int fd);
  // Loop thread. Calls OnIo(events) again next iteration without a new
  // readiness edge (merged with any real events for fd then); dropped if fd
  // is unwatched meanwhile. The next Wait then does not block.
  void Redispatch(int fd, uint32_t events);

  bool edge_triggered() const;
  absl::string_view poller_name() const;

  // Loop thread. Runs fn once after delay (<= 0: as soon as possible, at the
  // latest in the next iteration).
  TimerId RunAfter(absl::Duration delay, absl::AnyInvocable<void()> fn);
  // Loop thread. Runs fn every period (clamped to >= 1ms), first after one
  // period. A late loop does not run missed ticks in a burst.
  TimerId RunEvery(absl::Duration period, absl::AnyInvocable<void()> fn);
  // Loop thread. Idempotent; unknown or fired ids are ignored; safe from
  // inside the timer's own callback.
  void Cancel(TimerId id);

  // Any thread (atomic): completed loop iterations.
  uint64_t iterations() const;
  // Any thread (atomic): eventfd wake-ups written by Post from other threads
  // (one per batch of posts; for metrics).
  uint64_t wakeups() const { return wakeups_.load(std::memory_order_relaxed); }

  // Number of watched fds (loop thread; for tests and stats).
  size_t watched_count() const { return watched_count_; }
  // Entries in the timer heap, cancelled ones included (loop thread; tests).
  size_t timer_heap_size() const { return heap_.size(); }

 private:
  struct Slot {
    IoHandler* handler = nullptr;
    uint32_t interest = 0;
    uint32_t generation = 0;  // bumped on Watch and Unwatch
    uint32_t redispatch = 0;  // bits waiting for next iteration
    uint64_t stamp = 0;       // iteration in which dispatch_pos is valid
    uint32_t dispatch_pos = 0;
  };
  struct Dispatch {
    int fd;
    uint32_t generation;
    uint32_t ready;       // from the poller
    uint32_t redispatch;  // asked for by the handler
  };
  struct Timer {
    absl::AnyInvocable<void()> fn;
    absl::Duration period;  // zero for one-shot
    absl::Time deadline;
  };
  struct HeapEntry {
    absl::Time deadline;
    TimerId id;
    bool operator>(const HeapEntry& o) const {
      return deadline != o.deadline ? deadline > o.deadline : id > o.id;
    }
  };
  class Waker;

  EventLoop(std::unique_ptr<Poller> poller, int wake_fd);

  void RunOneIteration();
  absl::Duration NextTimeout(bool has_posted);
  void DispatchIo(uint64_t iteration);
  void RunTimers(absl::Time now);
  void RunPosted();
  void WakeUp();
  void DrainWakeFd();
  TimerId AddTimer(absl::Duration delay, absl::Duration period,
                   absl::AnyInvocable<void()> fn);
  void PushHeap(HeapEntry e);
  HeapEntry PopHeap();
  void MaybeCompactHeap();

  std::unique_ptr<Poller> poller_;
  const int wake_fd_;
  std::unique_ptr<Waker> waker_;

  std::atomic<bool> stop_{false};
  std::atomic<std::thread::id> loop_thread_{};
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> iterations_{0};
  std::atomic<uint64_t> wakeups_{0};
  uint64_t wait_failures_ = 0;

  // Loop-thread state.
  std::vector<Slot> slots_;  // indexed by fd
  size_t watched_count_ = 0;
  std::vector<Poller::Ready> ready_;
  std::vector<Dispatch> dispatch_;
  std::vector<Dispatch> redispatch_;  // requested for next iteration
  std::vector<Dispatch> redo_;        // redispatch_ taken by this iteration
  std::vector<TimerId> due_;
  absl::flat_hash_map<TimerId, Timer> timers_;
  std::vector<HeapEntry> heap_;  // min-heap on deadline, lazily cancelled
  TimerId next_timer_id_ = 1;

  // Cross-thread queue: filled under mu_, swapped out and run outside it so a
  // task may Post without deadlock and posters never wait on a running task.
  absl::Mutex mu_;
  std::vector<absl::AnyInvocable<void() &&>> posted_ ABSL_GUARDED_BY(mu_);
  bool wake_armed_ ABSL_GUARDED_BY(mu_) = false;  // an eventfd write is due
  // Mirrors !posted_.empty(); written under mu_, read without it.
  std::atomic<bool> has_posted_{false};
  std::vector<absl::AnyInvocable<void() &&>> running_tasks_;
};

}  // namespace fanin::reactor

#endif  // FANIN_SERVER_REACTOR_EVENT_LOOP_H_
