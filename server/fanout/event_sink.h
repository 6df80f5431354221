// EventSink: where the connection side (server/core) hands its events, and
// whom it asks whether to stop reading.
//
// Standalone, the sink is the EventHub itself: Publish gives the event its seq
// at once. In cluster mode it is the cluster's publisher
// (server/cluster/publisher.h), which batches events to NATS JetStream; the
// stream gives them their seq and every node's hub receives them from there.
//
// Thread safety: every method may be called from any thread.
#ifndef FANIN_SERVER_FANOUT_EVENT_SINK_H_
#define FANIN_SERVER_FANOUT_EVENT_SINK_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "server/fanout/stored_event.h"

namespace fanin::fanout {

class EventSink {
 public:
  // Whatever a publisher must do after a run of Publish calls (the hub's
  // subscriptions to wake, once per loop iteration). Opaque to the caller,
  // who passes it to RunDeferred soon.
  struct Deferred {
    std::vector<std::shared_ptr<void>> items;
    bool empty() const { return items.empty(); }
  };

  virtual ~EventSink() = default;

  // Takes one event of a connection. Events of one connection must be
  // published from one thread, in order; the sink keeps that order. Returns
  // the event's seq when it is known at once (the hub), else 0.
  virtual uint64_t Publish(std::shared_ptr<StoredEvent> event,
                           Deferred* deferred) = 0;
  // Runs and empties what Publish left in *deferred.
  virtual void RunDeferred(Deferred* deferred) = 0;

  // Back-pressure: true while the sink cannot take more events from this
  // connection (or new connections on this listener). Cheap when nothing is
  // paused.
  virtual bool ReadingPaused(uint32_t listener,
                             uint64_t connection_id) const = 0;
  virtual bool AcceptingPaused(uint32_t listener) const = 0;
  // Called outside any lock, from any thread, whenever the answers above may
  // have changed. Set before publishing starts.
  virtual void SetPauseObserver(absl::AnyInvocable<void()> observer) = 0;
};

}  // namespace fanin::fanout

#endif  // FANIN_SERVER_FANOUT_EVENT_SINK_H_
