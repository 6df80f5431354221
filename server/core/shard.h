// Shard: what one reactor loop owns — its connections, its read buffer and its
// counters. Only that loop's thread touches it (counters are atomics so other
// threads can read them for stats).
#ifndef FANIN_SERVER_CORE_SHARD_H_
#define FANIN_SERVER_CORE_SHARD_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/core/connection.h"
#include "server/fanout/event_hub.h"
#include "server/net/listener.h"
#include "server/reactor/event_loop.h"

namespace fanin::core {

struct CoreOptions;

// Connections per client IP, for --max_connections_per_ip. Any thread.
class IpCounter {
 public:
  // "1.2.3.4" of "1.2.3.4:5", "::1" of "[::1]:5"; empty for unix peers.
  static std::string HostOf(absl::string_view address);
  // False (and nothing counted) when `host` already has `limit`.
  bool TryAcquire(const std::string& host, size_t limit);
  void Release(const std::string& host);

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, size_t> counts_ ABSL_GUARDED_BY(mu_);
};

// A listener and what connections need to know about it. Immutable once the
// core has started, except `listener`, which only its loop touches.
struct ListenerInfo {
  std::string name;
  uint32_t index = 0;
  bool pull = false;
  std::unique_ptr<net::Listener> listener;
  reactor::EventLoop* loop = nullptr;
};

struct Shard {
  const CoreOptions* options = nullptr;
  fanout::EventHub* hub = nullptr;
  reactor::EventLoop* loop = nullptr;
  int index = 0;
  // Called after a connection is removed (loop thread).
  std::atomic<int64_t>* open_connections = nullptr;
  IpCounter* ip_counter = nullptr;

  absl::flat_hash_map<uint64_t, std::unique_ptr<Connection>> connections;
  absl::flat_hash_set<uint64_t> read_paused;
  std::string read_buffer;  // one per loop: connections hold no read buffer
  bool shutting_down = false;
  // Streams that events of this iteration unparked; woken once, after the
  // iteration's I/O (see Publish).
  fanout::EventHub::WakeList pending_wakes;
  bool wakes_posted = false;

  std::atomic<uint64_t> bytes_received{0};
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<uint64_t> connections_rejected{0};

  // Removes (and deletes) a finished connection.
  void Erase(uint64_t id);
  // Publishes from this loop, waking the streams it unparks at the end of
  // the loop iteration rather than at once.
  void Publish(std::shared_ptr<fanout::StoredEvent> event);
};

}  // namespace fanin::core

#endif  // FANIN_SERVER_CORE_SHARD_H_
