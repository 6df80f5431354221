// Shard: what one reactor loop owns — its connections, its read buffer and
// the wakes of the streams its events unparked. Everything here is touched on
// that loop's thread only (checked in debug builds), except:
//   - WithConnection and Post, which any thread calls to reach the loop;
//   - the byte counters, atomics that any thread reads for stats;
//   - the ConnectionSlots it shares with the other shards and the accepting
//     listeners (a mutex-free open count and a locked per-IP table).
//
// Example (a gRPC thread writing to connection 7):
//   shard->WithConnection<absl::StatusOr<uint64_t>>(
//       7, [](Connection& c) { return c.Write("hi", false); },
//       [](absl::StatusOr<uint64_t> queued) { /* answer the RPC */ });
#ifndef FANIN_SERVER_CORE_SHARD_H_
#define FANIN_SERVER_CORE_SHARD_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fanin/v1/fanin.pb.h"
#include "server/core/connection.h"
#include "server/fanout/event_sink.h"
#include "server/fanout/stored_event.h"
#include "server/net/listener.h"
#include "server/net/tls_context.h"
#include "server/reactor/event_loop.h"

namespace fanin::core {

struct CoreOptions;

// The server-wide connection budget: --max_connections in total and
// --max_connections_per_ip per source host. Any thread.
class ConnectionSlots {
 public:
  ConnectionSlots(size_t max_total, size_t max_per_ip)
      : max_total_(max_total), max_per_ip_(max_per_ip) {}

  enum class Refusal { kNone, kTotal, kPerIp };
  // Takes a slot for a connection from `host` ("" for unix peers, which the
  // per-IP limit does not count). Nothing is taken when it refuses.
  Refusal TryAcquire(const std::string& host);
  // Gives back what TryAcquire took for `host`.
  void Release(const std::string& host);
  // PROXY protocol listeners take the total slot at accept (TryAcquire with
  // "") and the per-IP one for the client the header names: this takes only
  // that (kPerIp or kNone; nothing for "" or without a per-IP limit). The
  // caller then releases with Release(host).
  Refusal TryAcquireHost(const std::string& host);

  int64_t open() const { return open_.load(std::memory_order_relaxed); }
  // Blocks until no slot is taken or the deadline; true if none is.
  bool WaitUntilNoneOpen(absl::Time deadline);
  size_t max_total() const { return max_total_; }
  size_t max_per_ip() const { return max_per_ip_; }

 private:
  const size_t max_total_;
  const size_t max_per_ip_;  // 0: no per-IP limit
  std::atomic<int64_t> open_{0};
  absl::Mutex mu_;
  absl::CondVar none_open_;  // signalled under mu_ when open_ drops to 0
  absl::flat_hash_map<std::string, size_t> per_ip_ ABSL_GUARDED_BY(mu_);
};

// A listener and what connections need to know about it. Immutable once the
// core has started, except `listener`, which only its loop touches.
struct ListenerInfo {
  std::string name;
  std::string node;  // CoreOptions::node: empty in standalone
  uint32_t index = 0;
  bool pull = false;
  // --listen_proxy_protocol: a PROXY header comes first.
  bool proxy_protocol = false;
  // --listen_tls: null on plain TCP.
  std::shared_ptr<net::TlsContext> tls;
  std::unique_ptr<net::Listener> listener;
  reactor::EventLoop* loop = nullptr;
};

// The one place a connection's event gets its header: connection id,
// listener and the current time. The caller sets the kind and publishes it.
fanin::v1::Event NewConnectionEvent(uint64_t id, const ListenerInfo& listener);

// Counters of connections that never became Opened (TLS handshakes and PROXY
// headers), and of per-IP refusals decided after a PROXY header. Shared by
// the shards; any thread reads them (relaxed atomics).
struct SetupCounters {
  enum TlsFailure { kTlsTimeout, kTlsClientCert, kTlsProtocol, kTlsClosed };
  enum ProxyFailure { kProxyTimeout, kProxyMalformed, kProxyClosed };
  std::atomic<uint64_t> tls_handshakes{0};
  std::atomic<uint64_t> tls_failures[4] = {};
  std::atomic<uint64_t> proxy_headers{0};
  std::atomic<uint64_t> proxy_failures[3] = {};
  std::atomic<uint64_t> rejected_per_ip{0};
  void Add(std::atomic<uint64_t>& counter) {
    counter.fetch_add(1, std::memory_order_relaxed);
  }
};

class Shard {
 public:
  Shard(const CoreOptions* options, fanout::EventSink* hub,
        reactor::EventLoop* loop, ConnectionSlots* slots,
        SetupCounters* setup_counters);
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const CoreOptions& options() const { return *options_; }
  fanout::EventSink* hub() const { return hub_; }
  reactor::EventLoop* loop() const { return loop_; }
  ConnectionSlots* slots() const { return slots_; }
  SetupCounters* setup_counters() const { return setup_counters_; }

  // Any thread: runs `fn` on this shard's loop against connection `id` and
  // hands its result to `done` there. `done` gets NOT_FOUND when there is no
  // such connection and UNAVAILABLE when the loop stops before running it,
  // so it always runs exactly once.
  template <typename T>
  void WithConnection(uint64_t id, absl::AnyInvocable<T(Connection&)> fn,
                      absl::AnyInvocable<void(T)> done);
  // Any thread: runs fn on this shard's loop (dropped if the loop stops).
  void Post(absl::AnyInvocable<void() &&> fn) { loop_->Post(std::move(fn)); }

  // Loop thread. Takes ownership of a new connection (not started yet).
  Connection* Insert(std::unique_ptr<Connection> conn);
  // Loop thread. The connection, or null.
  Connection* Find(uint64_t id);
  // Loop thread. Removes (and deletes) a finished connection, giving back
  // its slot.
  void Erase(uint64_t id);
  // Loop thread. Calls fn for every connection; fn may finish (erase) any.
  void ForEachConnection(absl::FunctionRef<void(Connection&)> fn);
  size_t connection_count() const { return connections_.size(); }

  // Loop thread. Publishes an event of this loop; the streams it unparks are
  // woken once, at the end of the loop iteration, so one batch carries every
  // event the iteration read. After them, every 16 KiB of events, the loop
  // grows its heap for the next ones (base/prefault.h).
  void Publish(std::shared_ptr<fanout::StoredEvent> event);

  // Loop thread. Back-pressure: connections that stopped reading for a paused
  // lossless subscriber; ResumeReadingWherePossible re-asks the hub for each.
  void NoteReadPaused(uint64_t id) { read_paused_.insert(id); }
  void ResumeReadingWherePossible();

  // Loop thread. Server shutdown: no more connections; each one flushes and
  // closes (BeginShutdown), or closes at once (ForceCloseAll).
  void BeginShutdown();
  void ForceCloseAll();
  bool shutting_down() const { return shutting_down_; }

  // The loop's one read buffer: connections hold none of their own.
  std::string& read_buffer() { return read_buffer_; }

  // Any thread (relaxed atomics).
  void CountReceived(uint64_t n) {
    bytes_received_.fetch_add(n, std::memory_order_relaxed);
  }
  void CountSent(uint64_t n) {
    bytes_sent_.fetch_add(n, std::memory_order_relaxed);
  }
  uint64_t bytes_received() const {
    return bytes_received_.load(std::memory_order_relaxed);
  }
  uint64_t bytes_sent() const {
    return bytes_sent_.load(std::memory_order_relaxed);
  }

 private:
  void PostWakes();
  void PrefaultAfterIteration(size_t event_bytes);
  const CoreOptions* const options_;
  fanout::EventSink* const hub_;
  reactor::EventLoop* const loop_;
  ConnectionSlots* const slots_;
  SetupCounters* const setup_counters_;

  absl::flat_hash_map<uint64_t, std::unique_ptr<Connection>> connections_;
  absl::flat_hash_set<uint64_t> read_paused_;
  std::string read_buffer_;
  bool shutting_down_ = false;
  fanout::EventSink::Deferred pending_wakes_;
  bool wakes_posted_ = false;
  // Bytes of events published since the heap was last grown ahead of them.
  size_t published_bytes_ = 0;
  bool prefault_posted_ = false;

  std::atomic<uint64_t> bytes_received_{0};
  std::atomic<uint64_t> bytes_sent_{0};
};

namespace internal {

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

}  // namespace internal

template <typename T>
void Shard::WithConnection(uint64_t id, absl::AnyInvocable<T(Connection&)> fn,
                           absl::AnyInvocable<void(T)> done) {
  loop_->Post([this, id, fn = std::move(fn),
               c = internal::Completion<T>(std::move(done))]() mutable {
    Connection* conn = Find(id);
    if (conn == nullptr) {
      c(T(absl::NotFoundError(absl::StrCat("connection ", id, " not found"))));
      return;
    }
    c(fn(*conn));
  });
}

}  // namespace fanin::core

#endif  // FANIN_SERVER_CORE_SHARD_H_
