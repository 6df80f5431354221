#include "server/core/fanin_core.h"

#include <unistd.h>

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
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

int DefaultLoops() {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores - 1);
}

FaninCore::FaninCore(CoreOptions options, fanout::EventSink* hub)
    : options_(std::move(options)),
      hub_(hub),
      slots_(options_.max_connections, options_.max_connections_per_ip),
      next_id_(options_.first_connection_id) {}

absl::StatusOr<std::unique_ptr<FaninCore>> FaninCore::Create(
    CoreOptions options, fanout::EventSink* hub) {
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
  for (const std::string& name : opts.proxy_protocol_listeners) {
    if (!seen.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "listen_proxy_protocol: no listener named \"", name, "\""));
    }
  }
  absl::flat_hash_map<std::string, std::shared_ptr<net::TlsContext>> tls;
  for (const TlsListenerOptions& t : opts.tls) {
    if (!seen.contains(t.listener)) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen_tls: no listener named \"", t.listener, "\""));
    }
    if (tls.contains(t.listener)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "listen_tls: listener \"", t.listener, "\" given twice"));
    }
    auto context = net::TlsContext::Create(t.files);
    if (!context.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "listen_tls=", t.listener, ": ", context.status().message()));
    }
    tls[t.listener] = *std::move(context);
  }
  if (opts.tls_handshake_timeout <= absl::ZeroDuration() ||
      opts.proxy_header_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "tls_handshake_timeout and proxy_header_timeout must be positive");
  }
  for (const net::ListenSpec& spec : opts.listen) {
    auto listener = net::Listener::Bind(spec);
    if (!listener.ok()) return listener.status();
    auto info = std::make_unique<ListenerInfo>();
    info->name = spec.name;
    info->node = core->options_.node;
    info->index = static_cast<uint32_t>(core->listeners_.size());
    info->pull =
        std::find(opts.pull_listeners.begin(), opts.pull_listeners.end(),
                  spec.name) != opts.pull_listeners.end();
    info->proxy_protocol =
        std::find(opts.proxy_protocol_listeners.begin(),
                  opts.proxy_protocol_listeners.end(),
                  spec.name) != opts.proxy_protocol_listeners.end();
    if (auto it = tls.find(spec.name); it != tls.end()) info->tls = it->second;
    info->listener = *std::move(listener);
    core->names_.push_back(spec.name);
    core->listeners_.push_back(std::move(info));
  }
  auto loops = reactor::LoopGroup::Create(
      opts.poller, opts.loops > 0 ? opts.loops : DefaultLoops());
  if (!loops.ok()) return loops.status();
  core->loops_ = *std::move(loops);
  for (int i = 0; i < core->loops_->size(); ++i) {
    core->shards_.push_back(
        std::make_unique<Shard>(&core->options_, hub, core->loops_->loop(i),
                                &core->slots_, &core->setup_counters_));
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
          info->loop,
          [this, info](int fd, net::Peer peer) {
            OnAccept(info, fd, std::move(peer));
          },
          [this, info](int fd, net::Peer peer) {
            Reject(info, next_id_.fetch_add(1, std::memory_order_relaxed), fd,
                   peer, kOutOfFds,
                   "out of file descriptors (the process's ulimit -n); "
                   "closed at once");
          });
      if (!s.ok() && status.ok()) status = s;
    });
  }
  if (options_.idle_timeout > absl::ZeroDuration()) {
    absl::Duration every = std::clamp(options_.idle_timeout / 4,
                                      absl::Milliseconds(10), absl::Seconds(1));
    for (auto& s : shards_) {
      Shard* shard = s.get();
      RunOnLoop(shard->loop(), [this, shard, every] {
        shard->loop()->RunEvery(every, [this, shard] {
          const absl::Time cutoff = absl::Now() - options_.idle_timeout;
          shard->ForEachConnection(
              [cutoff](Connection& c) { c.CloseIfIdle(cutoff); });
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

void FaninCore::OnAccept(ListenerInfo* info, int fd, net::Peer peer) {
  const uint64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
  // Behind a balancer the socket's peer is the balancer: the per-IP slot is
  // taken for the client the PROXY header names, once it is read.
  if (info->proxy_protocol) peer.host.clear();
  switch (slots_.TryAcquire(peer.host)) {
    case ConnectionSlots::Refusal::kTotal:
      Reject(info, id, fd, peer, kMaxConnections,
             absl::StrCat("max_connections (", options_.max_connections,
                          ") reached"));
      return;
    case ConnectionSlots::Refusal::kPerIp:
      Reject(info, id, fd, peer, kPerIp,
             absl::StrCat("max_connections_per_ip (",
                          options_.max_connections_per_ip, ") reached for ",
                          peer.host));
      return;
    case ConnectionSlots::Refusal::kNone:
      break;
  }
  Shard* shard = ShardFor(id);
  auto conn = std::make_unique<Connection>(
      shard, info, id, fd, std::move(peer.address), net::LocalAddressOf(fd),
      std::move(peer.host));
  if (shard->loop() == info->loop) {
    Adopt(shard, std::move(conn));
    return;
  }
  shard->Post([this, shard, conn = std::move(conn)]() mutable {
    Adopt(shard, std::move(conn));
  });
}

void FaninCore::Adopt(Shard* shard, std::unique_ptr<Connection> conn) {
  const uint64_t id = conn->id();
  Connection* c = shard->Insert(std::move(conn));
  if (shard->shutting_down()) {
    shard->Erase(id);  // Gives the slot back and closes the fd.
    return;
  }
  absl::Status status = c->Start();
  if (!status.ok()) {
    // As for every other rejection: counted, and the slot freed, before
    // Closed(REJECTED) is announced.
    auto closed = c->RejectedEvent(status.message());
    rejected_[kPoller].fetch_add(1, std::memory_order_relaxed);
    LogRejected(id, c->listener().name, status.message());
    shard->Erase(id);  // Deletes c.
    shard->Publish(std::move(closed));
    return;
  }
  accepted_.fetch_add(1, std::memory_order_relaxed);
}

void FaninCore::Reject(const ListenerInfo* info, uint64_t id, int fd,
                       const net::Peer& peer, RejectReason reason,
                       const std::string& why) {
  fanin::v1::Event event = NewConnectionEvent(id, *info);
  event.mutable_opened()->set_remote_address(peer.address);
  event.mutable_opened()->set_local_address(net::LocalAddressOf(fd));
  auto connection = std::make_shared<fanout::ConnectionInfo>(
      fanout::ConnectionInfo{info->name, event.opened().remote_address(),
                             event.opened().local_address()});
  auto opened = fanout::MakeEvent(event, info->index);
  opened->connection = connection;
  hub_->Publish(std::move(opened), nullptr);
  ::close(fd);
  event = NewConnectionEvent(id, *info);
  event.mutable_closed()->set_reason(fanin::v1::CLOSE_REASON_REJECTED);
  event.mutable_closed()->set_detail(why);
  // Counted before Closed(REJECTED) is announced, so GetStats never lags
  // what a subscriber has already seen.
  rejected_[reason].fetch_add(1, std::memory_order_relaxed);
  auto closed = fanout::MakeEvent(event, info->index);
  closed->connection = std::move(connection);
  hub_->Publish(std::move(closed), nullptr);
  LogRejected(id, info->name, why);
}

// A lossless subscriber paused or resumed: every loop re-checks the
// connections it holds back and the listeners it runs.
void FaninCore::OnPauseChange() {
  for (auto& s : shards_) {
    Shard* shard = s.get();
    shard->Post([shard] { shard->ResumeReadingWherePossible(); });
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
  ShardFor(id)->WithConnection<absl::StatusOr<uint64_t>>(
      id,
      [data = std::move(data), close_after](Connection& c) {
        return c.Write(data, close_after);
      },
      std::move(done));
}

void FaninCore::Close(uint64_t id, bool abort,
                      absl::AnyInvocable<void(absl::Status)> done) {
  ShardFor(id)->WithConnection<absl::Status>(
      id, [abort](Connection& c) { return c.Close(abort); }, std::move(done));
}

void FaninCore::Read(
    uint64_t id, uint32_t max_bytes,
    absl::AnyInvocable<void(absl::StatusOr<Connection::ReadOutcome>)> done) {
  ShardFor(id)->WithConnection<absl::StatusOr<Connection::ReadOutcome>>(
      id, [max_bytes](Connection& c) { return c.Read(max_bytes); },
      std::move(done));
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
  internal::Completion<absl::StatusOr<FaninCore::ListPage>> done;
};

}  // namespace

void FaninCore::List(std::string listener, uint64_t after_id, size_t limit,
                     absl::AnyInvocable<void(absl::StatusOr<ListPage>)> done) {
  auto gather = std::make_shared<ListGather>(limit, std::move(done));
  for (auto& s : shards_) {
    Shard* shard = s.get();
    shard->Post([shard, gather, listener, after_id, limit] {
      std::vector<const Connection*> mine;
      shard->ForEachConnection([&](Connection& conn) {
        if (conn.id() <= after_id || conn.closing()) return;
        if (!listener.empty() && conn.listener().name != listener) return;
        mine.push_back(&conn);
      });
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
      static_cast<uint64_t>(std::max<int64_t>(0, slots_.open()));
  s.connections_accepted = accepted_.load();
  for (const auto& shard : shards_) {
    s.bytes_received += shard->bytes_received();
    s.bytes_sent += shard->bytes_sent();
  }
  s.rejected_max_connections = rejected_[kMaxConnections].load();
  s.rejected_per_ip = rejected_[kPerIp].load();
  s.rejected_poller = rejected_[kPoller].load();
  s.rejected_out_of_fds = rejected_[kOutOfFds].load();
  s.rejected_per_ip += setup_counters_.rejected_per_ip.load();
  const SetupCounters& sc = setup_counters_;
  s.tls_handshakes = sc.tls_handshakes.load();
  s.tls_failed_timeout = sc.tls_failures[SetupCounters::kTlsTimeout].load();
  s.tls_failed_client_cert =
      sc.tls_failures[SetupCounters::kTlsClientCert].load();
  s.tls_failed_protocol = sc.tls_failures[SetupCounters::kTlsProtocol].load();
  s.tls_failed_closed = sc.tls_failures[SetupCounters::kTlsClosed].load();
  s.tls_handshake_failures = s.tls_failed_timeout + s.tls_failed_client_cert +
                             s.tls_failed_protocol + s.tls_failed_closed;
  s.proxy_headers = sc.proxy_headers.load();
  s.proxy_failed_timeout =
      sc.proxy_failures[SetupCounters::kProxyTimeout].load();
  s.proxy_failed_malformed =
      sc.proxy_failures[SetupCounters::kProxyMalformed].load();
  s.proxy_failed_closed = sc.proxy_failures[SetupCounters::kProxyClosed].load();
  s.proxy_header_failures =
      s.proxy_failed_timeout + s.proxy_failed_malformed + s.proxy_failed_closed;
  for (const auto& l : listeners_) {
    if (l->tls == nullptr) continue;
    s.tls_reloads += l->tls->reloads();
    s.tls_reload_failures += l->tls->reload_failures();
  }
  s.connections_rejected = s.rejected_max_connections + s.rejected_per_ip +
                           s.rejected_poller + s.rejected_out_of_fds;
  for (const auto& l : listeners_) {
    if (l->listener) s.accept_errors += l->listener->accept_errors();
  }
  return s;
}

void FaninCore::CloseAll() {
  if (!started_.load() || stopped_.load()) return;
  for (auto& s : shards_) {
    Shard* shard = s.get();
    RunOnLoop(shard->loop(), [shard] { shard->ForceCloseAll(); });
  }
}

absl::Status FaninCore::ReloadTls() {
  absl::Status first;
  for (const auto& l : listeners_) {
    if (l->tls == nullptr) continue;
    absl::Status s = l->tls->Reload();
    if (!s.ok() && first.ok()) {
      first = absl::InvalidArgumentError(
          absl::StrCat("listen_tls=", l->name, ": ", s.message()));
    }
  }
  return first;
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
    RunOnLoop(shard->loop(), [shard] { shard->BeginShutdown(); });
  }
  // Connections still flushing close as their buffers drain; wait for them.
  slots_.WaitUntilNoneOpen(absl::Now() + flush_timeout);
  for (auto& s : shards_) {
    Shard* shard = s.get();
    RunOnLoop(shard->loop(), [shard] { shard->ForceCloseAll(); });
  }
  loops_->Stop();
}

}  // namespace fanin::core
