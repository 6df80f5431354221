#include "server/core/fanin_core.h"

#include <unistd.h>

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/base/log.h"
#include "server/fanout/stored_event.h"

namespace fanin::core {
namespace {

// Runs the callback exactly once: with a value, or with UNAVAILABLE when the
// task carrying it is destroyed unrun (its loop stopped first).
template <typename T>
class Completion {
 public:
  explicit Completion(absl::AnyInvocable<void(T)> fn) : fn_(std::move(fn)) {}
  Completion(Completion&& other) : fn_(std::move(other.fn_)) {
    other.fn_ = nullptr;
  }
  Completion& operator=(Completion&&) = delete;
  ~Completion() {
    if (fn_) Call(T(absl::UnavailableError("fanin server is shutting down")));
  }
  void operator()(T value) { Call(std::move(value)); }

 private:
  void Call(T value) {
    absl::AnyInvocable<void(T)> fn = std::move(fn_);
    fn_ = nullptr;
    std::move(fn)(std::move(value));
  }
  absl::AnyInvocable<void(T)> fn_;
};

// Runs fn on `loop` and waits for it (not on the loop's own thread).
void RunOnLoop(reactor::EventLoop* loop, absl::AnyInvocable<void()> fn) {
  absl::Notification done;
  loop->Post([&] {
    fn();
    done.Notify();
  });
  done.WaitForNotification();
}

}  // namespace

std::string IpCounter::HostOf(absl::string_view address) {
  if (absl::StartsWith(address, "[")) {
    size_t end = address.find(']');
    return end == absl::string_view::npos
               ? ""
               : std::string(address.substr(1, end - 1));
  }
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || address.find('/') == 0) return "";
  return std::string(address.substr(0, colon));
}

bool IpCounter::TryAcquire(const std::string& host, size_t limit) {
  absl::MutexLock lock(&mu_);
  size_t& n = counts_[host];
  if (n >= limit) return false;
  ++n;
  return true;
}

void IpCounter::Release(const std::string& host) {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(host);
  if (it == counts_.end()) return;
  if (--it->second == 0) counts_.erase(it);
}

int DefaultLoops() {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores - 1);
}

void Shard::Publish(std::shared_ptr<fanout::StoredEvent> event) {
  hub->Publish(std::move(event), &pending_wakes);
  if (pending_wakes.empty() || wakes_posted) return;
  wakes_posted = true;
  // Posted from the loop thread during I/O dispatch, this runs at the end of
  // the same iteration, after every ready fd was read.
  loop->Post([this] {
    wakes_posted = false;
    fanout::EventHub::RunWakes(&pending_wakes);
  });
}

void Shard::Erase(uint64_t id) {
  auto it = connections.find(id);
  if (it == connections.end()) return;
  if (it->second->counted_per_ip) {
    ip_counter->Release(IpCounter::HostOf(it->second->remote_address()));
  }
  connections.erase(it);
  open_connections->fetch_sub(1, std::memory_order_relaxed);
}

FaninCore::FaninCore(CoreOptions options, fanout::EventHub* hub)
    : options_(std::move(options)), hub_(hub) {}

absl::StatusOr<std::unique_ptr<FaninCore>> FaninCore::Create(
    CoreOptions options, fanout::EventHub* hub) {
  if (options.listen.empty()) {
    return absl::InvalidArgumentError("listen: at least one listener needed");
  }
  if (options.listen.size() > 64) {
    return absl::InvalidArgumentError("listen: at most 64 listeners");
  }
  if (options.max_outbound_bytes == 0) {
    return absl::InvalidArgumentError("max_outbound_bytes: must be > 0");
  }
  if (options.read_chunk_bytes < 512) {
    return absl::InvalidArgumentError("read_chunk_bytes: must be >= 512");
  }
  auto core = absl::WrapUnique(new FaninCore(std::move(options), hub));
  const CoreOptions& opts = core->options_;
  absl::flat_hash_set<std::string> seen;
  for (const net::ListenSpec& spec : opts.listen) {
    if (!seen.insert(spec.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen: two listeners named \"", spec.name,
                       "\"; give each its own NAME= prefix"));
    }
  }
  for (const std::string& pull : opts.pull_listeners) {
    if (!seen.contains(pull)) {
      return absl::InvalidArgumentError(
          absl::StrCat("pull: no listener named \"", pull, "\""));
    }
  }
  for (const net::ListenSpec& spec : opts.listen) {
    auto listener = net::Listener::Bind(spec);
    if (!listener.ok()) return listener.status();
    auto info = std::make_unique<ListenerInfo>();
    info->name = spec.name;
    info->index = static_cast<uint32_t>(core->listeners_.size());
    info->pull =
        std::find(opts.pull_listeners.begin(), opts.pull_listeners.end(),
                  spec.name) != opts.pull_listeners.end();
    info->listener = *std::move(listener);
    core->names_.push_back(spec.name);
    core->listeners_.push_back(std::move(info));
  }
  auto loops = reactor::LoopGroup::Create(
      opts.poller, opts.loops > 0 ? opts.loops : DefaultLoops());
  if (!loops.ok()) return loops.status();
  core->loops_ = *std::move(loops);
  for (int i = 0; i < core->loops_->size(); ++i) {
    auto shard = std::make_unique<Shard>();
    shard->options = &core->options_;
    shard->hub = hub;
    shard->loop = core->loops_->loop(i);
    shard->index = i;
    shard->open_connections = &core->open_;
    shard->ip_counter = &core->ip_counter_;
    shard->read_buffer.resize(opts.read_chunk_bytes);
    core->shards_.push_back(std::move(shard));
  }
  return core;
}

FaninCore::~FaninCore() { Shutdown(absl::ZeroDuration()); }

std::vector<std::pair<std::string, std::string>> FaninCore::bound_addresses()
    const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& info : listeners_) {
    out.emplace_back(info->name, info->listener->bound_address());
  }
  return out;
}

absl::Status FaninCore::Start() {
  if (started_.exchange(true)) {
    return absl::FailedPreconditionError("already started");
  }
  hub_->SetPauseObserver([this] { OnPauseChange(); });
  loops_->Start();
  absl::Status status;
  for (size_t i = 0; i < listeners_.size(); ++i) {
    ListenerInfo* info = listeners_[i].get();
    info->loop = loops_->loop(static_cast<int>(i % loops_->size()));
    RunOnLoop(info->loop, [&, info] {
      absl::Status s = info->listener->Start(
          info->loop, [this, info](int fd) { OnAccept(info, fd); });
      if (!s.ok() && status.ok()) status = s;
    });
  }
  if (options_.idle_timeout > absl::ZeroDuration()) {
    absl::Duration every = std::clamp(options_.idle_timeout / 4,
                                      absl::Milliseconds(10), absl::Seconds(1));
    for (auto& s : shards_) {
      Shard* shard = s.get();
      RunOnLoop(shard->loop, [this, shard, every] {
        shard->loop->RunEvery(every, [this, shard] {
          absl::Time cutoff = absl::Now() - options_.idle_timeout;
          std::vector<uint64_t> ids;
          for (const auto& [id, conn] : shard->connections) ids.push_back(id);
          for (uint64_t id : ids) {
            auto it = shard->connections.find(id);
            if (it != shard->connections.end()) it->second->CloseIfIdle(cutoff);
          }
        });
      });
    }
  }
  return status;
}

namespace {

// A flood of connections past a limit must not become a flood of log lines.
void LogRejected(uint64_t id, const std::string& listener,
                 absl::string_view why) {
  static base::LogRateLimiter* limiter = new base::LogRateLimiter(10);
  uint64_t suppressed = 0;
  if (!limiter->Allow(&suppressed)) return;
  base::Log(base::LogLevel::kWarning, "connection rejected",
            {{"conn", id},
             {"listener", listener},
             {"why", why},
             {"suppressed", suppressed}});
}

}  // namespace

void FaninCore::OnAccept(ListenerInfo* info, int fd) {
  const uint64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
  if (open_.load(std::memory_order_relaxed) >=
      static_cast<int64_t>(options_.max_connections)) {
    Reject(info, id, fd, kMaxConnections,
           absl::StrCat("max_connections (", options_.max_connections,
                        ") reached"));
    return;
  }
  bool counted_per_ip = false;
  if (options_.max_connections_per_ip > 0) {
    std::string host = IpCounter::HostOf(net::PeerAddressOf(fd));
    if (!host.empty()) {
      if (!ip_counter_.TryAcquire(host, options_.max_connections_per_ip)) {
        Reject(info, id, fd, kPerIp,
               absl::StrCat("max_connections_per_ip (",
                            options_.max_connections_per_ip, ") reached for ",
                            host));
        return;
      }
      counted_per_ip = true;
    }
  }
  open_.fetch_add(1, std::memory_order_relaxed);
  Shard* shard = ShardFor(id);
  if (shard->loop == info->loop) {
    Adopt(shard, info, id, fd, counted_per_ip);
    return;
  }
  shard->loop->Post([this, shard, info, id, fd, counted_per_ip] {
    Adopt(shard, info, id, fd, counted_per_ip);
  });
}

void FaninCore::Adopt(Shard* shard, const ListenerInfo* info, uint64_t id,
                      int fd, bool counted_per_ip) {
  auto conn = std::make_unique<Connection>(
      shard, info, id, fd, net::PeerAddressOf(fd), net::LocalAddressOf(fd));
  conn->counted_per_ip = counted_per_ip;
  if (shard->shutting_down) {
    // Counted in open_ and maybe per IP: Erase undoes both and closes fd.
    shard->connections.emplace(id, std::move(conn));
    shard->Erase(id);
    return;
  }
  Connection* c = conn.get();
  shard->connections.emplace(id, std::move(conn));
  absl::Status status = c->Start();
  if (!status.ok()) {
    // As for every other rejection: counted, and the slot freed, before
    // Closed(REJECTED) is announced.
    auto closed = c->RejectedEvent(status.message());
    shard->connections_rejected.fetch_add(1, std::memory_order_relaxed);
    rejected_[kPoller].fetch_add(1, std::memory_order_relaxed);
    LogRejected(id, info->name, status.message());
    shard->Erase(id);  // Deletes c.
    shard->Publish(std::move(closed));
    return;
  }
  accepted_.fetch_add(1, std::memory_order_relaxed);
}

void FaninCore::Reject(const ListenerInfo* info, uint64_t id, int fd,
                       RejectReason reason, const std::string& why) {
  fanin::v1::Event event;
  event.set_connection_id(id);
  event.set_listener(info->name);
  event.set_time_unix_nano(absl::GetCurrentTimeNanos());
  event.mutable_opened()->set_remote_address(net::PeerAddressOf(fd));
  event.mutable_opened()->set_local_address(net::LocalAddressOf(fd));
  hub_->Publish(fanout::MakeEvent(event, info->index));
  ::close(fd);
  event.set_time_unix_nano(absl::GetCurrentTimeNanos());
  event.mutable_closed()->set_reason(fanin::v1::CLOSE_REASON_REJECTED);
  event.mutable_closed()->set_detail(why);
  // Counted before Closed(REJECTED) is announced, so GetStats never lags
  // what a subscriber has already seen.
  shards_[0]->connections_rejected.fetch_add(1, std::memory_order_relaxed);
  rejected_[reason].fetch_add(1, std::memory_order_relaxed);
  hub_->Publish(fanout::MakeEvent(event, info->index));
  LogRejected(id, info->name, why);
}

// A lossless subscriber paused or resumed: every loop re-checks the
// connections it holds back and the listeners it runs.
void FaninCore::OnPauseChange() {
  for (auto& s : shards_) {
    Shard* shard = s.get();
    shard->loop->Post([this, shard] {
      std::vector<uint64_t> ids(shard->read_paused.begin(),
                                shard->read_paused.end());
      for (uint64_t id : ids) {
        auto it = shard->connections.find(id);
        if (it == shard->connections.end()) {
          shard->read_paused.erase(id);
          continue;
        }
        if (!hub_->ReadingPaused(it->second->listener().index, id)) {
          shard->read_paused.erase(id);
          it->second->ResumeReading();
        }
      }
    });
  }
  for (auto& l : listeners_) {
    ListenerInfo* info = l.get();
    if (info->loop == nullptr) continue;
    info->loop->Post([this, info] {
      if (stopped_.load()) return;
      if (hub_->AcceptingPaused(info->index)) {
        info->listener->Pause();
      } else {
        info->listener->Resume();
      }
    });
  }
}

void FaninCore::Write(uint64_t id, std::string data, bool close_after,
                      absl::AnyInvocable<void(absl::StatusOr<uint64_t>)> done) {
  Shard* shard = ShardFor(id);
  shard->loop->Post(
      [shard, id, data = std::move(data), close_after,
       c = Completion<absl::StatusOr<uint64_t>>(std::move(done))]() mutable {
        auto it = shard->connections.find(id);
        if (it == shard->connections.end()) {
          c(absl::NotFoundError(absl::StrCat("connection ", id, " not found")));
          return;
        }
        c(it->second->Write(data, close_after));
      });
}

void FaninCore::Close(uint64_t id, bool abort,
                      absl::AnyInvocable<void(absl::Status)> done) {
  Shard* shard = ShardFor(id);
  shard->loop->Post([shard, id, abort,
                     c = Completion<absl::Status>(std::move(done))]() mutable {
    auto it = shard->connections.find(id);
    if (it == shard->connections.end()) {
      c(absl::NotFoundError(absl::StrCat("connection ", id, " not found")));
      return;
    }
    c(it->second->Close(abort));
  });
}

void FaninCore::Read(
    uint64_t id, uint32_t max_bytes,
    absl::AnyInvocable<void(absl::StatusOr<Connection::ReadOutcome>)> done) {
  Shard* shard = ShardFor(id);
  shard->loop->Post([shard, id, max_bytes,
                     c = Completion<absl::StatusOr<Connection::ReadOutcome>>(
                         std::move(done))]() mutable {
    auto it = shard->connections.find(id);
    if (it == shard->connections.end()) {
      c(absl::NotFoundError(absl::StrCat("connection ", id, " not found")));
      return;
    }
    c(it->second->Read(max_bytes));
  });
}

namespace {

// Gathers one List page from every loop; answers when the last loop's task
// is done with it (or destroyed, if a loop stopped first).
struct ListGather {
  ListGather(size_t limit,
             absl::AnyInvocable<void(absl::StatusOr<FaninCore::ListPage>)> fn)
      : limit(limit), done(std::move(fn)) {}
  ~ListGather() {
    FaninCore::ListPage page;
    std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
      return a.connection_id() < b.connection_id();
    });
    page.more = found.size() > limit;
    if (page.more) found.resize(limit);
    page.connections = std::move(found);
    done(std::move(page));
  }
  const size_t limit;
  absl::Mutex mu;
  std::vector<fanin::v1::Connection> found ABSL_GUARDED_BY(mu);
  Completion<absl::StatusOr<FaninCore::ListPage>> done;
};

}  // namespace

void FaninCore::List(std::string listener, uint64_t after_id, size_t limit,
                     absl::AnyInvocable<void(absl::StatusOr<ListPage>)> done) {
  auto gather = std::make_shared<ListGather>(limit, std::move(done));
  for (auto& s : shards_) {
    Shard* shard = s.get();
    shard->loop->Post([shard, gather, listener, after_id, limit] {
      std::vector<const Connection*> mine;
      for (const auto& [id, conn] : shard->connections) {
        if (id <= after_id || conn->closing()) continue;
        if (!listener.empty() && conn->listener().name != listener) continue;
        mine.push_back(conn.get());
      }
      // Only the limit+1 smallest ids can be on this page.
      if (mine.size() > limit + 1) {
        std::nth_element(mine.begin(), mine.begin() + limit, mine.end(),
                         [](const Connection* a, const Connection* b) {
                           return a->id() < b->id();
                         });
        mine.resize(limit + 1);
      }
      absl::MutexLock lock(&gather->mu);
      for (const Connection* c : mine)
        c->FillInfo(&gather->found.emplace_back());
    });
  }
}

CoreStats FaninCore::GetStats() const {
  CoreStats s;
  s.poller = std::string(reactor::PollerKindName(options_.poller));
  s.connections_open =
      static_cast<uint64_t>(std::max<int64_t>(0, open_.load()));
  s.connections_accepted = accepted_.load();
  for (const auto& shard : shards_) {
    s.connections_rejected += shard->connections_rejected.load();
    s.bytes_received += shard->bytes_received.load();
    s.bytes_sent += shard->bytes_sent.load();
  }
  s.rejected_max_connections = rejected_[kMaxConnections].load();
  s.rejected_per_ip = rejected_[kPerIp].load();
  s.rejected_poller = rejected_[kPoller].load();
  for (const auto& l : listeners_) {
    if (l->listener) s.accept_errors += l->listener->accept_errors();
  }
  return s;
}

void FaninCore::Shutdown(absl::Duration flush_timeout) {
  if (stopped_.exchange(true)) return;
  if (!started_.load()) return;
  for (auto& l : listeners_) {
    ListenerInfo* info = l.get();
    RunOnLoop(info->loop, [info] { info->listener->Close(); });
  }
  for (auto& s : shards_) {
    Shard* shard = s.get();
    RunOnLoop(shard->loop, [shard] {
      shard->shutting_down = true;
      std::vector<uint64_t> ids;
      for (const auto& [id, conn] : shard->connections) ids.push_back(id);
      for (uint64_t id : ids) {
        auto it = shard->connections.find(id);
        if (it != shard->connections.end()) it->second->BeginShutdown();
      }
    });
  }
  // Connections still flushing close as their buffers drain; wait for them.
  absl::Time deadline = absl::Now() + flush_timeout;
  while (open_.load() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  for (auto& s : shards_) {
    Shard* shard = s.get();
    RunOnLoop(shard->loop, [shard] {
      while (!shard->connections.empty()) {
        shard->connections.begin()->second->ForceClose();
      }
    });
  }
  loops_->Stop();
}

}  // namespace fanin::core
