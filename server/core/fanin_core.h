// FaninCore: listeners, reactor loops and the connection table, publishing
// every connection's events to the EventHub.
//
// Connection ids come from one counter (never reused in a process); the
// connection lives on loop `id % loops`, which owns it without locks. Requests
// from other threads (the gRPC layer) are posted to that loop and answered
// through a callback that runs on it, or with UNAVAILABLE if the loop is gone.
//
// Example:
//   fanout::EventHub hub({});
//   auto core = FaninCore::Create(options, &hub);
//   (*core)->Start();
//   (*core)->Write(7, "hello", false, [](absl::StatusOr<uint64_t> queued) {});
//   (*core)->Shutdown(absl::Seconds(5));
#ifndef FANIN_SERVER_CORE_FANIN_CORE_H_
#define FANIN_SERVER_CORE_FANIN_CORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fanin/v1/fanin.pb.h"
#include "server/core/connection.h"
#include "server/core/shard.h"
#include "server/fanout/event_sink.h"
#include "server/net/address.h"
#include "server/reactor/loop_group.h"
#include "server/reactor/poller.h"

namespace fanin::core {

// Reactor loops used for CoreOptions::loops == 0: hardware threads less one,
// at least 1. On 2 cores with the clients on the same machine one loop
// delivered 1.35x the messages/s of two at less CPU per message
// (docs/BENCHMARKS.md, "What moved the figures"): the loops read, gRPC's
// threads write.
int DefaultLoops();

// A raw listener that terminates TLS (--listen_tls).
struct TlsListenerOptions {
  std::string listener;  // its name, as in `listen`
  net::TlsFiles files;
};

struct CoreOptions {
  std::vector<net::ListenSpec> listen;
  std::vector<std::string> pull_listeners;  // names of listeners in pull mode
  reactor::PollerKind poller = reactor::PollerKind::kEpollLevel;
  // 0 = DefaultLoops(): one per core less one, which gRPC's threads need to
  // frame and write the batches (see docs/ARCHITECTURE.md); at least 1.
  int loops = 0;
  size_t max_connections = 100000;
  size_t max_connections_per_ip = 0;                   // 0 = no per-IP limit
  size_t max_outbound_bytes = size_t{4} << 20;         // per connection
  size_t read_chunk_bytes = 64 << 10;                  // per read, per wake-up
  absl::Duration idle_timeout = absl::ZeroDuration();  // zero = off
  bool keep_half_open = false;
  // After a graceful close sent FIN, how long to wait for the peer's FIN.
  absl::Duration close_linger = absl::Seconds(5);
  // Cluster mode: this node's name, carried by every event (Event.node), and
  // the first connection id (the node's incarnation in the high 32 bits, so
  // ids are unique across the cluster). Standalone: empty and 1.
  std::string node;
  uint64_t first_connection_id = 1;
  // Listeners that terminate TLS, and those whose connections start with a
  // PROXY protocol header (read first, then any TLS handshake). A
  // connection is Opened only once both are done, each within its time.
  std::vector<TlsListenerOptions> tls;
  std::vector<std::string> proxy_protocol_listeners;
  absl::Duration tls_handshake_timeout = absl::Seconds(10);
  absl::Duration proxy_header_timeout = absl::Seconds(5);
};

struct CoreStats {
  std::string poller;
  uint64_t connections_open = 0;
  uint64_t connections_accepted = 0;
  uint64_t connections_rejected = 0;
  // connections_rejected by reason (they add up to it).
  uint64_t rejected_max_connections = 0;
  uint64_t rejected_per_ip = 0;
  uint64_t rejected_poller = 0;  // the poller refused the fd
  // Accepted with the reserve descriptor while the process was out of
  // descriptors (ulimit -n), and closed at once.
  uint64_t rejected_out_of_fds = 0;
  // Lost to accept() failures (ENOBUFS and the like); not in
  // connections_rejected since no connection id was given.
  uint64_t accept_errors = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  // TLS listeners: handshakes completed, and failed by reason (the failed
  // connections were never Opened).
  uint64_t tls_handshakes = 0;
  uint64_t tls_failed_timeout = 0;
  uint64_t tls_failed_client_cert = 0;
  uint64_t tls_failed_protocol = 0;
  uint64_t tls_failed_closed = 0;
  uint64_t tls_handshake_failures = 0;  // the four above
  // PROXY listeners: headers accepted, and connections closed for the
  // header, by reason.
  uint64_t proxy_headers = 0;
  uint64_t proxy_failed_timeout = 0;
  uint64_t proxy_failed_malformed = 0;
  uint64_t proxy_failed_closed = 0;
  uint64_t proxy_header_failures = 0;  // the three above
  // Certificate reloads over every TLS listener.
  uint64_t tls_reloads = 0;
  uint64_t tls_reload_failures = 0;
};

class FaninCore {
 public:
  // Validates options and binds every listener (so ports are known at once).
  // INVALID_ARGUMENT for bad options, the bind error otherwise.
  static absl::StatusOr<std::unique_ptr<FaninCore>> Create(
      CoreOptions options, fanout::EventSink* sink);
  ~FaninCore();

  // Starts the loops and accepting.
  absl::Status Start();
  // Stops accepting, flushes and closes every connection with
  // CLOSED(SERVER_SHUTDOWN) (forcing those still flushing at the deadline),
  // then stops the loops. Idempotent; blocks the caller.
  void Shutdown(absl::Duration flush_timeout);

  // Listener names in index order, and their bound addresses.
  const std::vector<std::string>& listener_names() const { return names_; }
  std::vector<std::pair<std::string, std::string>> bound_addresses() const;
  reactor::LoopGroup* loops() const { return loops_.get(); }

  // Requests (any thread). `done` runs exactly once, on the connection's loop
  // or with UNAVAILABLE when the server stops first.
  // Errors: NOT_FOUND (unknown or closing connection), RESOURCE_EXHAUSTED
  // (outbound buffer full), FAILED_PRECONDITION (Read on a push connection).
  void Write(uint64_t id, std::string data, bool close_after,
             absl::AnyInvocable<void(absl::StatusOr<uint64_t>)> done);
  void Close(uint64_t id, bool abort,
             absl::AnyInvocable<void(absl::Status)> done);
  void Read(
      uint64_t id, uint32_t max_bytes,
      absl::AnyInvocable<void(absl::StatusOr<Connection::ReadOutcome>)> done);
  // Open connections with id > after_id (on `listener` if not empty), in id
  // order, at most `limit`; `more` tells whether others follow.
  struct ListPage {
    std::vector<fanin::v1::Connection> connections;
    bool more = false;
  };
  void List(std::string listener, uint64_t after_id, size_t limit,
            absl::AnyInvocable<void(absl::StatusOr<ListPage>)> done);

  CoreStats GetStats() const;

  // Cluster fencing: closes every connection now (not from a loop thread;
  // waits), and makes new connection ids start at `next_id`.
  void CloseAll();
  void RestartIds(uint64_t next_id) {
    next_id_.store(next_id, std::memory_order_relaxed);
  }

  // Re-reads every TLS listener's certificate and key (SIGHUP). New
  // connections get the new ones; open ones keep theirs. A listener whose
  // files do not load keeps its old ones; the first error is returned. Any
  // thread.
  absl::Status ReloadTls();

 private:
  FaninCore(CoreOptions options, fanout::EventSink* sink);
  void OnAccept(ListenerInfo* info, int fd, net::Peer peer);
  void Adopt(Shard* shard, std::unique_ptr<Connection> conn);
  enum RejectReason {
    kMaxConnections,
    kPerIp,
    kPoller,
    kOutOfFds,
    kNumRejectReasons
  };
  void Reject(const ListenerInfo* info, uint64_t id, int fd,
              const net::Peer& peer, RejectReason reason,
              const std::string& why);
  void OnPauseChange();
  Shard* ShardFor(uint64_t id) const {
    return shards_[id % shards_.size()].get();
  }

  const CoreOptions options_;
  fanout::EventSink* const hub_;
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<ListenerInfo>> listeners_;
  std::unique_ptr<reactor::LoopGroup> loops_;
  ConnectionSlots slots_;
  SetupCounters setup_counters_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> next_id_;
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> rejected_[kNumRejectReasons] = {};
  std::atomic<bool> started_{false};
  std::atomic<bool> stopped_{false};
};

}  // namespace fanin::core

#endif  // FANIN_SERVER_CORE_FANIN_CORE_H_
