#include "server/reactor/event_loop.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/base/log.h"

namespace fanin::reactor {
namespace {

// Timers run on the monotonic clock so a wall-clock step neither fires them
// early nor stalls them; absl::Time is only the carrier type here.
absl::Time MonotonicNow() {
  return absl::FromUnixNanos(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

// Readiness bits a handler can get regardless of which of kReadable and
// kWritable it asked for (as long as it asked for something).
constexpr uint32_t kAlwaysReported = kReadClosed | kHangup | kError;

}  // namespace

// Drains the eventfd so level-triggered backends stop reporting it. The tasks
// themselves run at the end of the iteration.
class EventLoop::Waker : public IoHandler {
 public:
  explicit Waker(int fd) : fd_(fd) {}
  void OnIo(uint32_t) override {
    uint64_t count;
    while (read(fd_, &count, sizeof(count)) == sizeof(count)) {
    }
  }

 private:
  const int fd_;
};

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create(PollerKind kind) {
  absl::StatusOr<std::unique_ptr<Poller>> poller = NewPoller(kind);
  if (!poller.ok()) return poller.status();
  int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) return absl::ErrnoToStatus(errno, "eventfd");
  std::unique_ptr<EventLoop> loop(
      new EventLoop(*std::move(poller), wake_fd));  // owns wake_fd now
  absl::Status s = loop->Watch(wake_fd, kReadable, loop->waker_.get());
  if (!s.ok()) return s;
  return loop;
}

EventLoop::EventLoop(std::unique_ptr<Poller> poller, int wake_fd)
    : poller_(std::move(poller)),
      wake_fd_(wake_fd),
      waker_(std::make_unique<Waker>(wake_fd)) {}

EventLoop::~EventLoop() {
  ABSL_RAW_CHECK(!running_.load(), "EventLoop destroyed while running");
  if (static_cast<size_t>(wake_fd_) < slots_.size() &&
      slots_[wake_fd_].handler != nullptr) {
    (void)poller_->Unwatch(wake_fd_);
  }
  close(wake_fd_);
}

void EventLoop::AssertInLoopThread() const {
#ifndef NDEBUG
  if (running_.load(std::memory_order_relaxed) && !IsInLoopThread()) {
    base::Log(
        base::LogLevel::kError, "loop-thread method called from another thread",
        {{"loop", absl::StrFormat("%p", static_cast<const void*>(this))}});
    std::abort();
  }
#endif
}

bool EventLoop::IsInLoopThread() const {
  return loop_thread_.load(std::memory_order_relaxed) ==
         std::this_thread::get_id();
}

void EventLoop::Run() {
  const bool already_running = running_.exchange(true);
  ABSL_RAW_CHECK(!already_running, "EventLoop::Run called twice");
  loop_thread_.store(std::this_thread::get_id());
  do {
    RunOneIteration();
  } while (!stop_.load(std::memory_order_acquire));
  stop_.store(false);
  loop_thread_.store(std::thread::id());
  running_.store(false);
}

void EventLoop::Stop() {
  stop_.store(true, std::memory_order_release);
  if (!IsInLoopThread()) WakeUp();
}

void EventLoop::WakeUp() {
  const uint64_t one = 1;
  // EAGAIN only if the counter is about to overflow, i.e. a wake-up is due.
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;
}

void EventLoop::Post(absl::AnyInvocable<void() &&> fn) {
  bool wake;
  {
    absl::MutexLock lock(&mu_);
    posted_.push_back(std::move(fn));
    has_posted_.store(true, std::memory_order_release);
    wake = !wake_armed_;
    wake_armed_ = true;
  }
  // One eventfd write per batch of posts: later posters see wake_armed_ and
  // skip the syscall. The loop thread never needs one: it checks the queue
  // before it blocks.
  if (wake && !IsInLoopThread()) {
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    WakeUp();
  }
}

absl::Status EventLoop::Watch(int fd, uint32_t interest, IoHandler* handler) {
  AssertInLoopThread();
  if (fd < 0 || handler == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("EventLoop::Watch: bad fd ", fd, " or null handler"));
  }
  interest &= kReadable | kWritable;
  if (static_cast<size_t>(fd) >= slots_.size()) {
    slots_.resize(std::max<size_t>(fd + 1, slots_.size() * 2));
  }
  if (slots_[fd].handler != nullptr) {
    return absl::AlreadyExistsError(
        absl::StrCat("EventLoop::Watch: fd ", fd, " is already watched"));
  }
  absl::Status s = poller_->Watch(fd, interest);
  if (!s.ok()) return s;
  Slot& slot = slots_[fd];
  slot.handler = handler;
  slot.interest = interest;
  slot.redispatch = 0;
  ++slot.generation;
  ++watched_count_;
  return absl::OkStatus();
}

absl::Status EventLoop::Rewatch(int fd, uint32_t interest) {
  AssertInLoopThread();
  if (fd < 0 || static_cast<size_t>(fd) >= slots_.size() ||
      slots_[fd].handler == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("EventLoop::Rewatch: fd ", fd, " is not watched"));
  }
  interest &= kReadable | kWritable;
  if (slots_[fd].interest == interest) return absl::OkStatus();
  absl::Status s = poller_->Rewatch(fd, interest);
  if (!s.ok()) return s;
  slots_[fd].interest = interest;
  return absl::OkStatus();
}

void EventLoop::Unwatch(int fd) {
  AssertInLoopThread();
  if (fd < 0 || static_cast<size_t>(fd) >= slots_.size() ||
      slots_[fd].handler == nullptr) {
    return;
  }
  absl::Status s = poller_->Unwatch(fd);
  // The slot is freed whatever the poller says; a failure here means the fd
  // was closed before Unwatch (a caller bug worth seeing in the log).
  if (!s.ok() && !absl::IsNotFound(s) && !absl::IsInvalidArgument(s)) {
    base::Log(base::LogLevel::kWarning, "unwatch failed",
              {{"fd", fd}, {"error", s.ToString()}});
  }
  Slot& slot = slots_[fd];
  slot.handler = nullptr;
  slot.interest = 0;
  slot.redispatch = 0;
  ++slot.generation;  // events already collected for fd are now stale
  --watched_count_;
}

void EventLoop::Redispatch(int fd, uint32_t events) {
  AssertInLoopThread();
  if (events == 0 || fd < 0 || static_cast<size_t>(fd) >= slots_.size() ||
      slots_[fd].handler == nullptr) {
    return;
  }
  Slot& slot = slots_[fd];
  if (slot.redispatch == 0) redispatch_.push_back({fd, slot.generation, 0});
  slot.redispatch |= events;
}

bool EventLoop::edge_triggered() const { return poller_->edge_triggered(); }

absl::string_view EventLoop::poller_name() const { return poller_->name(); }

uint64_t EventLoop::iterations() const {
  return iterations_.load(std::memory_order_relaxed);
}

absl::Duration EventLoop::NextTimeout(bool has_posted) {
  if (has_posted || !redispatch_.empty()) return absl::ZeroDuration();
  // Skip cancelled heads so a long-gone timer does not cause a wake-up.
  while (!heap_.empty()) {
    const HeapEntry& top = heap_.front();
    auto it = timers_.find(top.id);
    if (it != timers_.end() && it->second.deadline == top.deadline) break;
    PopHeap();
  }
  if (heap_.empty()) return absl::InfiniteDuration();
  return std::max(absl::ZeroDuration(),
                  heap_.front().deadline - MonotonicNow());
}

void EventLoop::RunOneIteration() {
  const uint64_t iteration = iterations_.load(std::memory_order_relaxed) + 1;
  // An atomic, not the mutex: most iterations have nothing posted, and two
  // lock/unlock pairs per iteration were most of the loop's own cost.
  const bool has_posted = has_posted_.load(std::memory_order_acquire);
  const absl::Duration timeout = stop_.load(std::memory_order_acquire)
                                     ? absl::ZeroDuration()
                                     : NextTimeout(has_posted);
  ready_.clear();
  absl::Status s = poller_->Wait(timeout, &ready_);
  if (!s.ok() && wait_failures_++ % 1000 == 0) {
    // Not expected once the fds are valid; log sparsely rather than flood.
    base::Log(base::LogLevel::kError, "poller wait failed",
              {{"poller", poller_->name()},
               {"error", s.ToString()},
               {"failures", wait_failures_}});
  }
  DispatchIo(iteration);
  if (!heap_.empty()) RunTimers(MonotonicNow());
  RunPosted();
  iterations_.store(iteration, std::memory_order_relaxed);
}

void EventLoop::DispatchIo(uint64_t iteration) {
  dispatch_.clear();
  // The generation is captured now: a handler that closes fd X and watches a
  // new fd that got number X bumps it, so X's old events below are dropped.
  for (const Poller::Ready& r : ready_) {
    if (r.fd < 0 || static_cast<size_t>(r.fd) >= slots_.size()) continue;
    Slot& slot = slots_[r.fd];
    if (slot.handler == nullptr) continue;
    slot.stamp = iteration;
    slot.dispatch_pos = static_cast<uint32_t>(dispatch_.size());
    dispatch_.push_back({r.fd, slot.generation, r.events, 0});
  }
  // Requested redispatches join (or merge with) this round; requests made
  // while this round runs go to the next one.
  redo_.swap(redispatch_);
  for (const Dispatch& d : redo_) {
    Slot& slot = slots_[d.fd];
    if (slot.handler == nullptr || slot.generation != d.generation ||
        slot.redispatch == 0) {
      continue;
    }
    if (slot.stamp == iteration) {
      dispatch_[slot.dispatch_pos].redispatch |= slot.redispatch;
    } else {
      slot.stamp = iteration;
      slot.dispatch_pos = static_cast<uint32_t>(dispatch_.size());
      dispatch_.push_back({d.fd, d.generation, 0, slot.redispatch});
    }
    slot.redispatch = 0;
  }
  redo_.clear();

  for (size_t i = 0; i < dispatch_.size(); ++i) {
    const Dispatch d = dispatch_[i];
    // Re-read the slot each time: a handler may Watch and grow slots_.
    const Slot& slot = slots_[d.fd];
    if (slot.handler == nullptr || slot.generation != d.generation) continue;
    // A handler that removed interest earlier in this round gets no stale
    // readiness for it; what it asked to have redispatched it still gets.
    const uint32_t ready =
        slot.interest == 0 ? 0 : d.ready & (slot.interest | kAlwaysReported);
    const uint32_t events = ready | d.redispatch;
    if (events != 0) slot.handler->OnIo(events);
  }
}

void EventLoop::RunTimers(absl::Time now) {
  // Only timers due before this pass starts: one that re-arms itself with a
  // zero delay runs next iteration instead of looping here forever.
  due_.clear();
  while (!heap_.empty() && heap_.front().deadline <= now) {
    HeapEntry e = PopHeap();
    auto it = timers_.find(e.id);
    if (it != timers_.end() && it->second.deadline == e.deadline) {
      due_.push_back(e.id);
    }
  }
  for (TimerId id : due_) {
    auto it = timers_.find(id);
    if (it == timers_.end()) continue;  // cancelled by an earlier callback
    // The callback runs from a local so that Cancel(id) inside it (which
    // erases the entry) never destroys a running function.
    absl::AnyInvocable<void()> fn = std::move(it->second.fn);
    const absl::Duration period = it->second.period;
    const absl::Time deadline = it->second.deadline;
    if (period == absl::ZeroDuration()) timers_.erase(it);
    fn();
    if (period == absl::ZeroDuration()) continue;
    it = timers_.find(id);  // the callback may have added timers (rehash)
    if (it == timers_.end()) continue;  // cancelled itself
    it->second.fn = std::move(fn);
    absl::Time next = deadline + period;
    // A late loop skips missed ticks rather than running them in a burst.
    if (next <= now) next = now + period;
    it->second.deadline = next;
    PushHeap({next, id});
  }
}

void EventLoop::RunPosted() {
  // A post that lands after this check is not lost: a cross-thread poster
  // also writes the eventfd (wake_armed_), and the loop thread's own posts
  // happen before this call.
  if (!has_posted_.load(std::memory_order_acquire)) return;
  {
    absl::MutexLock lock(&mu_);
    if (posted_.empty()) return;
    running_tasks_.swap(posted_);
    has_posted_.store(false, std::memory_order_release);
    wake_armed_ = false;
  }
  // Run outside the lock: a task may Post, and posters never wait on tasks.
  for (auto& task : running_tasks_) std::move(task)();
  running_tasks_.clear();
}

EventLoop::TimerId EventLoop::RunAfter(absl::Duration delay,
                                       absl::AnyInvocable<void()> fn) {
  return AddTimer(std::max(delay, absl::ZeroDuration()), absl::ZeroDuration(),
                  std::move(fn));
}

EventLoop::TimerId EventLoop::RunEvery(absl::Duration period,
                                       absl::AnyInvocable<void()> fn) {
  period = std::max(period, absl::Milliseconds(1));
  return AddTimer(period, period, std::move(fn));
}

EventLoop::TimerId EventLoop::AddTimer(absl::Duration delay,
                                       absl::Duration period,
                                       absl::AnyInvocable<void()> fn) {
  AssertInLoopThread();
  const TimerId id = next_timer_id_++;
  const absl::Time deadline = MonotonicNow() + delay;
  timers_.emplace(id, Timer{std::move(fn), period, deadline});
  PushHeap({deadline, id});
  return id;
}

void EventLoop::Cancel(TimerId id) {
  AssertInLoopThread();
  if (timers_.erase(id) == 0) return;
  MaybeCompactHeap();
}

void EventLoop::PushHeap(HeapEntry e) {
  heap_.push_back(e);
  std::push_heap(heap_.begin(), heap_.end(), std::greater<HeapEntry>());
}

EventLoop::HeapEntry EventLoop::PopHeap() {
  std::pop_heap(heap_.begin(), heap_.end(), std::greater<HeapEntry>());
  HeapEntry e = heap_.back();
  heap_.pop_back();
  return e;
}

// Cancelled timers stay in the heap until their deadline (lazy deletion).
// Idle timeouts re-armed on every read would pile them up, so once more than
// half the heap is dead it is rebuilt from the live timers: O(n) per O(n)
// cancellations, and memory stays proportional to the live timers.
void EventLoop::MaybeCompactHeap() {
  if (heap_.size() < 64 || heap_.size() <= 2 * timers_.size()) return;
  heap_.clear();
  for (const auto& [id, timer] : timers_) heap_.push_back({timer.deadline, id});
  std::make_heap(heap_.begin(), heap_.end(), std::greater<HeapEntry>());
}

}  // namespace fanin::reactor
