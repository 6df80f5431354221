#include "server/reactor/loop_group.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fanin::reactor {

absl::StatusOr<std::unique_ptr<LoopGroup>> LoopGroup::Create(PollerKind kind,
                                                             int num_loops) {
  if (num_loops < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoopGroup: num_loops must be >= 1, got ", num_loops));
  }
  std::vector<std::unique_ptr<EventLoop>> loops;
  loops.reserve(num_loops);
  for (int i = 0; i < num_loops; ++i) {
    absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create(kind);
    if (!loop.ok()) return loop.status();
    loops.push_back(*std::move(loop));
  }
  return std::unique_ptr<LoopGroup>(new LoopGroup(std::move(loops)));
}

LoopGroup::LoopGroup(std::vector<std::unique_ptr<EventLoop>> loops)
    : loops_(std::move(loops)) {}

LoopGroup::~LoopGroup() { Stop(); }

void LoopGroup::Start() {
  absl::MutexLock lock(&mu_);
  if (!threads_.empty()) return;
  threads_.reserve(loops_.size());
  for (auto& loop : loops_) {
    EventLoop* l = loop.get();
    threads_.emplace_back([l] { l->Run(); });
  }
}

void LoopGroup::Stop() {
  absl::MutexLock lock(&mu_);
  if (threads_.empty()) return;  // never started, or already stopped
  for (auto& loop : loops_) loop->Stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

int LoopGroup::size() const { return static_cast<int>(loops_.size()); }

EventLoop* LoopGroup::loop(int i) const { return loops_.at(i).get(); }

EventLoop* LoopGroup::Next() {
  const uint64_t n = next_.fetch_add(1, std::memory_order_relaxed);
  return loops_[n % loops_.size()].get();
}

}  // namespace fanin::reactor
