#include "server/reactor/watchdog.h"

#include <utility>

#include "absl/time/clock.h"
#include "server/base/log.h"

namespace fanin::reactor {

Watchdog::Watchdog(reactor::LoopGroup* loops, Options options,
                   std::function<void(bool healthy)> on_change)
    : loops_(loops), options_(options), on_change_(std::move(on_change)) {
  for (int i = 0; i < loops_->size(); ++i) {
    probes_.push_back(std::make_shared<Probe>());
  }
}

Watchdog::~Watchdog() { Stop(); }

void Watchdog::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable() || stop_) return;
  thread_ = std::thread([this] { Run(); });
}

void Watchdog::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Watchdog::Run() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    mu_.Unlock();
    Tick(absl::Now());
    mu_.Lock();
    // Wakes early only for Stop.
    mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.period);
  }
}

void Watchdog::Tick(absl::Time now) {
  int stuck = 0;
  for (size_t i = 0; i < probes_.size(); ++i) {
    std::shared_ptr<Probe>& probe = probes_[i];
    if (probe->in_flight.load(std::memory_order_acquire)) {
      if (now - probe->posted > options_.stuck_after) {
        ++stuck;
        if (reported_healthy_) {
          base::Log(
              base::LogLevel::kError, "reactor loop stuck",
              {{"loop", static_cast<int>(i)},
               {"waiting_ms", absl::ToInt64Milliseconds(now - probe->posted)},
               {"iterations",
                loops_->loop(static_cast<int>(i))->iterations()}});
        }
      }
      continue;
    }
    probe->posted = now;
    probe->in_flight.store(true, std::memory_order_release);
    // The task holds its own reference: it may outlive this watchdog when the
    // loop runs it late.
    loops_->loop(static_cast<int>(i))->Post([p = probe] {
      p->in_flight.store(false, std::memory_order_release);
    });
  }
  stuck_.store(stuck, std::memory_order_relaxed);
  const bool healthy = stuck == 0;
  if (healthy != reported_healthy_) {
    reported_healthy_ = healthy;
    if (healthy)
      base::Log(base::LogLevel::kWarning, "reactor loops turning again");
    if (on_change_) on_change_(healthy);
  }
}

}  // namespace fanin::reactor
