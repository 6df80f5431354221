#include "server/core/shard.h"

#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "server/base/prefault.h"
#include "server/core/fanin_core.h"

namespace fanin::core {
namespace {

// The heap kept grown ahead of this loop's events (prefault.h): 16-32 KiB,
// a hundred small events (event, body, history slot) or ten 1.5 KiB ones.
constexpr size_t kPrefaultBytes = 32 << 10;

}  // namespace

ConnectionSlots::Refusal ConnectionSlots::TryAcquire(const std::string& host) {
  if (open_.load(std::memory_order_relaxed) >=
      static_cast<int64_t>(max_total_)) {
    return Refusal::kTotal;
  }
  if (max_per_ip_ > 0 && !host.empty()) {
    absl::MutexLock lock(&mu_);
    size_t& n = per_ip_[host];
    if (n >= max_per_ip_) return Refusal::kPerIp;
    ++n;
  }
  open_.fetch_add(1, std::memory_order_relaxed);
  return Refusal::kNone;
}

ConnectionSlots::Refusal ConnectionSlots::TryAcquireHost(
    const std::string& host) {
  if (max_per_ip_ == 0 || host.empty()) return Refusal::kNone;
  absl::MutexLock lock(&mu_);
  size_t& n = per_ip_[host];
  if (n >= max_per_ip_) return Refusal::kPerIp;  // n > 0: the entry stays
  ++n;
  return Refusal::kNone;
}

void ConnectionSlots::Release(const std::string& host) {
  if (max_per_ip_ > 0 && !host.empty()) {
    absl::MutexLock lock(&mu_);
    auto it = per_ip_.find(host);
    if (it != per_ip_.end() && --it->second == 0) per_ip_.erase(it);
  }
  if (open_.fetch_sub(1, std::memory_order_relaxed) == 1) {
    absl::MutexLock lock(&mu_);
    none_open_.SignalAll();
  }
}

bool ConnectionSlots::WaitUntilNoneOpen(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  while (open() > 0) {
    if (none_open_.WaitWithDeadline(&mu_, deadline)) return open() == 0;
  }
  return true;
}

fanin::v1::Event NewConnectionEvent(uint64_t id, const ListenerInfo& listener) {
  fanin::v1::Event event;
  event.set_time_unix_nano(absl::GetCurrentTimeNanos());
  event.set_connection_id(id);
  event.set_listener(listener.name);
  if (!listener.node.empty()) event.set_node(listener.node);
  return event;
}

Shard::Shard(const CoreOptions* options, fanout::EventSink* hub,
             reactor::EventLoop* loop, ConnectionSlots* slots,
             SetupCounters* setup_counters)
    : options_(options),
      hub_(hub),
      loop_(loop),
      slots_(slots),
      setup_counters_(setup_counters) {
  read_buffer_.resize(options->read_chunk_bytes);
}

Connection* Shard::Insert(std::unique_ptr<Connection> conn) {
  loop_->AssertInLoopThread();
  Connection* c = conn.get();
  connections_.emplace(c->id(), std::move(conn));
  return c;
}

Connection* Shard::Find(uint64_t id) {
  loop_->AssertInLoopThread();
  auto it = connections_.find(id);
  return it == connections_.end() ? nullptr : it->second.get();
}

void Shard::Erase(uint64_t id) {
  loop_->AssertInLoopThread();
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  slots_->Release(it->second->peer_host());
  read_paused_.erase(id);
  connections_.erase(it);
}

void Shard::ForEachConnection(absl::FunctionRef<void(Connection&)> fn) {
  loop_->AssertInLoopThread();
  std::vector<uint64_t> ids;
  ids.reserve(connections_.size());
  for (const auto& [id, conn] : connections_) ids.push_back(id);
  for (uint64_t id : ids) {
    if (Connection* c = Find(id)) fn(*c);
  }
}

void Shard::Publish(std::shared_ptr<fanout::StoredEvent> event) {
  loop_->AssertInLoopThread();
  const size_t event_bytes = event->MemoryBytes();
  hub_->Publish(std::move(event), &pending_wakes_);
  PostWakes();
  PrefaultAfterIteration(event_bytes);
}

void Shard::PostWakes() {
  if (pending_wakes_.empty() || wakes_posted_) return;
  wakes_posted_ = true;
  // Posted from the loop thread during I/O dispatch, this runs at the end of
  // the same iteration, after every ready fd was read.
  loop_->Post([this] {
    wakes_posted_ = false;
    hub_->RunDeferred(&pending_wakes_);
  });
}

void Shard::PrefaultAfterIteration(size_t event_bytes) {
  published_bytes_ += event_bytes;
  if (published_bytes_ < kPrefaultBytes / 2 || prefault_posted_) return;
  prefault_posted_ = true;
  // After the iteration's wakes (posted first), so after their writes.
  loop_->Post([this] {
    prefault_posted_ = false;
    published_bytes_ = 0;
    base::PrefaultHeap(kPrefaultBytes);
  });
}

void Shard::ResumeReadingWherePossible() {
  loop_->AssertInLoopThread();
  std::vector<uint64_t> ids(read_paused_.begin(), read_paused_.end());
  for (uint64_t id : ids) {
    Connection* c = Find(id);
    if (c == nullptr) {
      read_paused_.erase(id);
      continue;
    }
    if (!hub_->ReadingPaused(c->listener().index, id)) {
      read_paused_.erase(id);
      c->ResumeReading();
    }
  }
}

void Shard::BeginShutdown() {
  loop_->AssertInLoopThread();
  shutting_down_ = true;
  ForEachConnection([](Connection& c) { c.BeginShutdown(); });
}

void Shard::ForceCloseAll() {
  loop_->AssertInLoopThread();
  while (!connections_.empty()) connections_.begin()->second->ForceClose();
}

}  // namespace fanin::core
