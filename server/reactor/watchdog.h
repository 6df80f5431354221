// Watchdog: notices a reactor loop that stopped turning (a handler stuck in a
// blocking call or an endless loop) so health can turn NOT_SERVING.
//
// Every `period` it posts a no-op probe to each loop that has none in flight;
// a loop whose probe has waited longer than `stuck_after` is stuck. An idle
// loop is not stuck: the probe wakes it and runs at once. When the set of
// stuck loops changes between empty and non-empty, `on_change(healthy)` is
// called on the watchdog's own thread.
//
// Example:
//   Watchdog dog(loop_group, {}, [&](bool healthy) { SetServing(healthy); });
//   dog.Start();
//   ...
//   dog.Stop();  // before the loops are destroyed
//
// Thread-safe. Stop before the LoopGroup goes away; probes still queued on a
// stopped loop are destroyed without running, which is harmless.
#ifndef FANIN_SERVER_REACTOR_WATCHDOG_H_
#define FANIN_SERVER_REACTOR_WATCHDOG_H_

#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/reactor/loop_group.h"

namespace fanin::reactor {

class Watchdog {
 public:
  struct Options {
    absl::Duration period = absl::Seconds(1);
    absl::Duration stuck_after = absl::Seconds(5);
  };

  Watchdog(reactor::LoopGroup* loops, Options options,
           std::function<void(bool healthy)> on_change);
  ~Watchdog();  // Stop()
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void Start();
  // Joins the thread; idempotent.
  void Stop();

  bool healthy() const { return stuck_loops() == 0; }
  int stuck_loops() const { return stuck_.load(std::memory_order_relaxed); }

 private:
  struct Probe {
    std::atomic<bool> in_flight{false};
    absl::Time posted;  // watchdog thread only
  };
  void Run();
  void Tick(absl::Time now);

  reactor::LoopGroup* const loops_;
  const Options options_;
  const std::function<void(bool)> on_change_;
  std::vector<std::shared_ptr<Probe>> probes_;
  std::atomic<int> stuck_{0};
  bool reported_healthy_ = true;  // watchdog thread only

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace fanin::reactor

#endif  // FANIN_SERVER_REACTOR_WATCHDOG_H_
