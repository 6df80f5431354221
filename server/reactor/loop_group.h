// N EventLoops, each Run on its own thread, with round-robin placement.
//
// Example:
//   auto group = LoopGroup::Create(PollerKind::kEpollLevel, 2);
//   if (!group.ok()) return group.status();
//   (*group)->Start();
//   EventLoop* loop = (*group)->Next();  // where the next connection goes
//   loop->Post([fd] { /* adopt fd on its loop */ });
//   (*group)->Stop();
#ifndef FANIN_SERVER_REACTOR_LOOP_GROUP_H_
#define FANIN_SERVER_REACTOR_LOOP_GROUP_H_

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/reactor/event_loop.h"
#include "server/reactor/poller.h"

namespace fanin::reactor {

class LoopGroup {
 public:
  // num_loops >= 1 (how many a server wants is its own policy: see
  // core::DefaultLoops). Errors: InvalidArgument for num_loops < 1, or the
  // first loop's Create error.
  static absl::StatusOr<std::unique_ptr<LoopGroup>> Create(PollerKind kind,
                                                           int num_loops);
  // Stops and joins (Stop()).
  ~LoopGroup();

  LoopGroup(const LoopGroup&) = delete;
  LoopGroup& operator=(const LoopGroup&) = delete;

  // Spawns one thread per loop. Call once, from a thread that is not a loop.
  void Start();
  // Stops every loop and joins the threads; idempotent, any thread except a
  // loop thread of this group (it would join itself).
  void Stop();

  int size() const;
  // The i-th loop, 0 <= i < size(); owned by the group.
  EventLoop* loop(int i) const;
  // Round-robin over the loops; any thread.
  EventLoop* Next();

 private:
  explicit LoopGroup(std::vector<std::unique_ptr<EventLoop>> loops);

  std::vector<std::unique_ptr<EventLoop>> loops_;
  absl::Mutex mu_;  // serialises Start/Stop
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> next_{0};
};

}  // namespace fanin::reactor

#endif  // FANIN_SERVER_REACTOR_LOOP_GROUP_H_
