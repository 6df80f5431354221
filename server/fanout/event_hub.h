// EventHub: the one bounded, shared history of events, and the subscriptions
// that read it at their own pace.
//
// Publishers (reactor loops) hand each event to Publish, which gives it the
// next sequence number and appends it to the history. Every subscription has a
// cursor into the history. When the history is over its bounds (events or
// bytes) the oldest event is evicted, and each subscription that had not read
// it yet and whose filter matches it is charged:
//   - a lossy subscription counts it as lost; its next Read returns a Gap with
//     the exact count (GAP_REASON_SUBSCRIBER_TOO_SLOW);
//   - a lossless subscription keeps it in its own overflow queue. A lossless
//     subscription whose unread matching bytes exceed
//     HubOptions::lossless_queue_bytes is "paused": ReadingPaused() and
//     AcceptingPaused() then tell the loops to stop reading the sockets (and
//     accepting on the listeners) it matches, so memory stays bounded and TCP
//     back-pressure reaches the clients. The pause observer hears of every
//     change.
//
// Waking: a subscription whose Read found nothing is "parked". The first
// matching Publish (or a Kick) unparks it and calls its `wake` function once,
// on the publishing thread, outside the hub's lock. Exactly one party holds the
// right to Read at a time: the reader until it parks, then whoever unparks it.
//
// Thread safety: every method may be called from any thread.
//
// Example:
//   EventHub hub(HubOptions{});
//   EventHub::Started started;
//   auto sub = hub.Subscribe({.wake = [] { /* schedule a Read */ }}, &started);
//   hub.Publish(MakeDataEvent(1, 0, "default", now, "hello"));
//   EventHub::ReadResult r;
//   hub.Read(sub->get(), 64, 1 << 20, /*park_if_empty=*/true, &r);
#ifndef FANIN_SERVER_FANOUT_EVENT_HUB_H_
#define FANIN_SERVER_FANOUT_EVENT_HUB_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "fanin/v1/fanin.pb.h"
#include "server/fanout/event_sink.h"
#include "server/fanout/filter.h"
#include "server/fanout/stored_event.h"

namespace fanin::fanout {

struct HubOptions {
  size_t history_events = 131072;
  size_t history_bytes = size_t{256} << 20;
  // Unread matching bytes at which a lossless subscription pauses the sockets
  // it matches; it resumes them below half of this.
  size_t lossless_queue_bytes = size_t{16} << 20;
  // The bound on lossless memory across all subscriptions: each lossless
  // subscription reserves lossless_queue_bytes of it while it lives, and one
  // that does not fit is refused (RESOURCE_EXHAUSTED).
  size_t lossless_total_bytes = size_t{1} << 30;
  // Identifies this server lifetime; random when empty.
  std::string epoch;
  // Cluster mode: events older than the history can be read elsewhere (the
  // cluster's stream). Then a subscription resuming before the history, and
  // a lossless one whose unread events are evicted, is not given a Gap or an
  // overflow queue (nor pauses anyone): its Read says `behind_from`, its
  // reader fetches those events from the stream and calls Rejoin.
  bool history_source = false;
};

class EventHub : public EventSink {
 public:
  struct Subscription;

  // Where a subscription starts, first match wins: resume_epoch of another
  // lifetime (the oldest retained event, after a Gap), resume_after_seq (the
  // event after it), start_back, start_time_unix_nano, else live (the next
  // event published). The gRPC layer refuses requests that set more than one
  // of resume_after_seq, start_back and start_time_unix_nano.
  struct SubscribeSpec {
    Filter filter;
    bool lossless = false;
    uint64_t resume_after_seq = 0;  // 0: not resuming
    std::string resume_epoch;       // empty: the current epoch
    // The last start_back retained events that match the filter, then live
    // (like tail -n); fewer when the history holds fewer. 0: unset.
    uint64_t start_back = 0;
    // The first event in history order whose time_unix_nano is >= this, then
    // everything after it. Times are taken by each loop (in cluster mode, of
    // each node) before it publishes, so they do not increase along the
    // history (two loops, a clock step): events after the start may be older
    // than it. Live when no retained event is that recent. 0: unset.
    uint64_t start_time_unix_nano = 0;
    absl::AnyInvocable<void()> wake;
    // Lossless only. False: events Read returns stay counted in the
    // subscription's unread bytes (and its pause) until the reader gives them
    // back with Release: for a reader that keeps them in queues of its own
    // (a worker-pool group, group.h) until they are delivered.
    bool release_on_read = true;
    // Lossless only. False: the subscription takes no share of
    // lossless_total_bytes: for an internal reader that stays at the head
    // (a lossy group's router, which must not lose events before it has
    // routed them to members).
    bool reserve = true;
  };
  struct Started {
    std::string epoch;
    uint64_t oldest_seq = 0;  // 0 while the history is empty
    uint64_t head_seq = 0;
  };
  struct ReadResult {
    std::optional<fanin::v1::Gap> gap;  // when set, events is empty
    std::vector<EventPtr> events;
    bool parked = false;  // nothing to read; wake will be called
    bool more = false;    // stopped at a limit; Read again
    // HubOptions::history_source: the next event to deliver is older than
    // the history; fetch from this seq, then Rejoin. Not parked.
    std::optional<uint64_t> behind_from;

    void Clear() {
      gap.reset();
      events.clear();
      parked = more = false;
      behind_from.reset();
    }
  };
  struct Stats {
    uint64_t head_seq = 0;
    uint64_t oldest_seq = 0;
    uint64_t events_published = 0;
    uint64_t events_lost = 0;
    uint32_t subscribers = 0;
    uint32_t paused_subscribers = 0;
    size_t history_events = 0;
    size_t history_bytes = 0;
    // Sum over lossless subscriptions of their unread matching bytes.
    size_t lossless_pending_bytes = 0;
    // Published events by fanin::v1::EventKind value.
    uint64_t events_by_kind[fanin::v1::EventKind_ARRAYSIZE] = {};
  };

  explicit EventHub(HubOptions options);
  ~EventHub() override;
  EventHub(const EventHub&) = delete;
  EventHub& operator=(const EventHub&) = delete;

  // OUT_OF_RANGE when resume_after_seq is beyond head_seq in this epoch;
  // RESOURCE_EXHAUSTED when a lossless subscription's reservation does not
  // fit in HubOptions::lossless_total_bytes. start_back and
  // start_time_unix_nano scan the history under the lock (at most
  // history_events entries, like counting a lossless subscription's backlog).
  absl::StatusOr<std::shared_ptr<Subscription>> Subscribe(SubscribeSpec spec,
                                                          Started* started);
  // After this the subscription's wake is never called again by the hub
  // (a call already under way may still finish).
  void Unsubscribe(Subscription* sub);

  // Takes the next gap or up to max_events matching events (and about
  // max_bytes of bodies) for `sub`. Returns out->parked: once parked,
  // another thread may be woken to Read `sub` (into the same *out), so a
  // caller that parked must not look at *out.
  bool Read(Subscription* sub, size_t max_events, size_t max_bytes,
            bool park_if_empty, ReadResult* out);
  // After a fetch (HubOptions::history_source): the subscription has been
  // given every matching event before `next_seq`. True when the history now
  // holds the rest (reads go on from it); false when still behind.
  bool Rejoin(Subscription* sub, uint64_t next_seq);
  // Unparks `sub` and calls its wake on this thread, if it was parked.
  void Kick(Subscription* sub);
  // Unparks `sub` without waking it; true if it was parked (the caller now
  // holds the right to Read).
  bool Unpark(Subscription* sub);
  // A subscription with release_on_read false: `bytes` (sums of
  // StoredEvent::MemoryBytes of events Read returned) are delivered; may
  // resume the sockets it paused.
  void Release(Subscription* sub, size_t bytes);
  // A lossless subscription's unread bytes and whether it pauses ingestion.
  struct Backlog {
    size_t bytes = 0;
    bool paused = false;
  };
  Backlog BacklogOf(Subscription* sub) const;

  // Assigns the next seq (written into *event) and appends it. Returns it.
  // Wakes the subscriptions it unparks before returning.
  uint64_t Publish(std::shared_ptr<StoredEvent> event) {
    return Publish(std::move(event), nullptr);
  }
  // Subscriptions a Publish unparked and left for its caller to wake.
  using WakeList = EventSink::Deferred;
  // Like Publish, but appends the subscriptions to wake to *deferred (when
  // not null) instead of waking them. A loop wakes them once per iteration,
  // so one batch carries every event the iteration read instead of the first
  // event going out alone. The caller must call RunWakes soon.
  uint64_t Publish(std::shared_ptr<StoredEvent> event,
                   WakeList* deferred) override;
  // Calls the wake of each subscription in *wakes and empties it.
  static void RunWakes(WakeList* wakes);

  // EventSink (for the loops of a standalone server): Publish above.
  void RunDeferred(Deferred* deferred) override { RunWakes(deferred); }

  // Makes the first published event get seq `head + 1` (cluster mode: the
  // node's history starts where it joined the cluster stream). Only before
  // the first Publish; false otherwise.
  bool StartAfter(uint64_t head);

  // Back-pressure queries for the loops; cheap when nothing is paused.
  bool ReadingPaused(uint32_t listener, uint64_t connection_id) const override;
  bool AcceptingPaused(uint32_t listener) const override;
  bool AnyPaused() const {
    return paused_count_.load(std::memory_order_acquire) > 0;
  }
  // Called outside the lock, from any thread, whenever a subscription pauses
  // or resumes. Set before publishing starts.
  void SetPauseObserver(absl::AnyInvocable<void()> observer) override;

  Stats GetStats() const;
  const std::string& epoch() const { return epoch_; }
  uint64_t head_seq() const;
  // The oldest seq the history still holds (head_seq() + 1 when empty):
  // events with a lower seq have been evicted.
  uint64_t oldest_seq() const;

 private:
  uint64_t OldestLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return history_.empty() ? head_ + 1 : history_.front()->seq;
  }
  void EvictLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The seq a start_back or start_time_unix_nano subscription starts at.
  uint64_t StartBackLocked(const Filter& filter, uint64_t back) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t StartTimeLocked(uint64_t time_unix_nano) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NotifyPauseChange();

  const HubOptions options_;
  const std::string epoch_;
  std::atomic<int> paused_count_{0};

  mutable absl::Mutex mu_;
  std::deque<EventPtr> history_ ABSL_GUARDED_BY(mu_);
  size_t history_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t head_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t published_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t lost_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t by_kind_[fanin::v1::EventKind_ARRAYSIZE] ABSL_GUARDED_BY(mu_) = {};
  std::vector<std::shared_ptr<Subscription>> subs_ ABSL_GUARDED_BY(mu_);
  size_t lossless_subs_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex observer_mu_;
  absl::AnyInvocable<void()> observer_ ABSL_GUARDED_BY(observer_mu_);
};

}  // namespace fanin::fanout

#endif  // FANIN_SERVER_FANOUT_EVENT_HUB_H_
