#include "server/fanout/event_hub.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fanin::fanout {

// All fields are guarded by the owning hub's mu_.
struct EventHub::Subscription {
  Filter filter;
  bool lossless = false;
  bool release_on_read = true;
  bool reserved = false;  // holds a share of lossless_total_bytes
  absl::AnyInvocable<void()> wake;

  uint64_t cursor = 1;  // Next seq to look at in the history.
  bool parked = false;
  bool active = true;
  std::optional<fanin::v1::Gap> pending_gap;
  uint64_t lost_pending = 0;      // Lossy: matching events evicted unread.
  std::deque<EventPtr> overflow;  // Lossless: matching events evicted unread.
  size_t pending_bytes = 0;       // Lossless: MemoryBytes of unread matches.
  bool paused = false;
  // HubOptions::history_source: reading events older than the history from
  // elsewhere, from `cursor` on.
  bool fetching = false;
};

namespace {

// A Read looks at no more than this many history entries, so a subscription
// with a narrow filter cannot hold the lock for long over a large backlog.
constexpr size_t kMaxScanPerRead = 8192;

std::string RandomEpoch() {
  absl::BitGen gen;
  return absl::StrFormat("%016x", absl::Uniform<uint64_t>(gen));
}

fanin::v1::Gap MakeGap(uint64_t first, uint64_t last, uint64_t lost,
                       fanin::v1::GapReason reason) {
  fanin::v1::Gap gap;
  gap.set_first_seq(first);
  gap.set_last_seq(last);
  gap.set_lost(lost);
  gap.set_reason(reason);
  return gap;
}

}  // namespace

EventHub::EventHub(HubOptions options)
    : options_(std::move(options)),
      epoch_(options_.epoch.empty() ? RandomEpoch() : options_.epoch) {}

EventHub::~EventHub() = default;

absl::StatusOr<std::shared_ptr<EventHub::Subscription>> EventHub::Subscribe(
    SubscribeSpec spec, Started* started) {
  auto sub = std::make_shared<Subscription>();
  sub->filter = std::move(spec.filter);
  sub->lossless = spec.lossless;
  sub->release_on_read = spec.release_on_read;
  sub->reserved = spec.lossless && spec.reserve;
  sub->wake = std::move(spec.wake);
  bool paused = false;
  {
    absl::MutexLock lock(&mu_);
    const uint64_t oldest = OldestLocked();
    started->epoch = epoch_;
    started->oldest_seq = history_.empty() ? 0 : oldest;
    started->head_seq = head_;
    if (sub->reserved && (lossless_subs_ + 1) * options_.lossless_queue_bytes >
                             options_.lossless_total_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "lossless subscriptions are full: each reserves ",
          options_.lossless_queue_bytes,
          " bytes (--subscriber_queue_bytes) of --lossless_total_bytes=",
          options_.lossless_total_bytes, ", and ", lossless_subs_,
          " already do; subscribe lossy, or later"));
    }
    if (!spec.resume_epoch.empty() && spec.resume_epoch != epoch_) {
      // The seq belongs to an earlier lifetime: start at the oldest retained
      // event. What the subscriber missed is unknowable (the seqs are from
      // another numbering), so lost is 0 as fanin.proto specifies.
      sub->cursor = oldest;
      sub->pending_gap =
          oldest > 1
              ? MakeGap(1, oldest - 1, 0, fanin::v1::GAP_REASON_EPOCH_CHANGED)
              : MakeGap(0, 0, 0, fanin::v1::GAP_REASON_EPOCH_CHANGED);
    } else if (spec.resume_after_seq == 0) {
      sub->cursor = spec.start_back > 0
                        ? StartBackLocked(sub->filter, spec.start_back)
                    : spec.start_time_unix_nano > 0
                        ? StartTimeLocked(spec.start_time_unix_nano)
                        : head_ + 1;
    } else if (spec.resume_after_seq > head_) {
      return absl::OutOfRangeError(
          absl::StrCat("resume_after_seq ", spec.resume_after_seq,
                       " is beyond head_seq ", head_, " of epoch ", epoch_));
    } else {
      sub->cursor = spec.resume_after_seq + 1;
      if (sub->cursor < oldest && options_.history_source) {
        sub->fetching = true;  // the rest is in the cluster's stream
      } else if (sub->cursor < oldest) {
        sub->pending_gap =
            MakeGap(sub->cursor, oldest - 1, oldest - sub->cursor,
                    fanin::v1::GAP_REASON_HISTORY_EXPIRED);
        sub->cursor = oldest;
      }
    }
    if (sub->lossless && !options_.history_source) {
      for (uint64_t s = sub->cursor; s <= head_; ++s) {
        const StoredEvent& e = *history_[s - oldest];
        if (sub->filter.Matches(e)) {
          sub->pending_bytes += e.MemoryBytes();
        }
      }
      if (sub->pending_bytes > options_.lossless_queue_bytes) {
        sub->paused = paused = true;
        paused_count_.fetch_add(1, std::memory_order_release);
      }
    }
    if (sub->reserved) ++lossless_subs_;
    subs_.push_back(sub);
  }
  if (paused) NotifyPauseChange();
  return sub;
}

uint64_t EventHub::StartBackLocked(const Filter& filter, uint64_t back) const {
  // Backwards from the head until `back` matches: the start is the last one
  // found, or the oldest retained event when there are fewer.
  uint64_t start = OldestLocked();
  uint64_t found = 0;
  for (auto it = history_.rbegin(); it != history_.rend(); ++it) {
    const StoredEvent& e = **it;
    if (!filter.Matches(e)) continue;
    if (++found == back) {
      start = e.seq;
      break;
    }
  }
  return start;
}

uint64_t EventHub::StartTimeLocked(uint64_t time_unix_nano) const {
  // A scan, not a binary search: times are not ordered along the history
  // (see SubscribeSpec::start_time_unix_nano).
  for (const EventPtr& e : history_) {
    if (e->time_unix_nano >= 0 &&
        static_cast<uint64_t>(e->time_unix_nano) >= time_unix_nano) {
      return e->seq;
    }
  }
  return head_ + 1;
}

void EventHub::Unsubscribe(Subscription* sub) {
  bool resumed = false;
  {
    absl::MutexLock lock(&mu_);
    if (!sub->active) return;
    sub->active = false;
    if (sub->reserved) --lossless_subs_;
    sub->overflow.clear();
    if (sub->paused) {
      sub->paused = false;
      paused_count_.fetch_sub(1, std::memory_order_release);
      resumed = true;
    }
    auto it = std::find_if(subs_.begin(), subs_.end(),
                           [sub](const auto& s) { return s.get() == sub; });
    if (it != subs_.end()) {
      *it = std::move(subs_.back());
      subs_.pop_back();
    }
  }
  if (resumed) NotifyPauseChange();
}

uint64_t EventHub::Publish(std::shared_ptr<StoredEvent> event,
                           WakeList* deferred) {
  absl::InlinedVector<std::shared_ptr<Subscription>, 4> wakes;
  bool paused = false;
  uint64_t seq;
  {
    absl::MutexLock lock(&mu_);
    seq = event->seq = ++head_;
    ++published_;
    if (fanin::v1::EventKind_IsValid(event->kind)) ++by_kind_[event->kind];
    const size_t cost = event->MemoryBytes();
    history_bytes_ += cost;
    for (const auto& sub : subs_) {
      if (!sub->filter.Matches(*event)) {
        continue;
      }
      if (sub->lossless && !options_.history_source) {
        sub->pending_bytes += cost;
        if (!sub->paused &&
            sub->pending_bytes > options_.lossless_queue_bytes) {
          sub->paused = paused = true;
          paused_count_.fetch_add(1, std::memory_order_release);
        }
      }
      if (sub->parked) {
        sub->parked = false;
        wakes.push_back(sub);
      }
    }
    history_.push_back(std::move(event));
    EvictLocked();
  }
  if (deferred != nullptr) {
    for (auto& sub : wakes) deferred->items.push_back(std::move(sub));
  } else {
    for (const auto& sub : wakes) sub->wake();
  }
  if (paused) NotifyPauseChange();
  return seq;
}

void EventHub::RunWakes(WakeList* wakes) {
  WakeList now;
  now.items.swap(wakes->items);
  for (const auto& item : now.items) {
    static_cast<Subscription*>(item.get())->wake();
  }
}

bool EventHub::StartAfter(uint64_t head) {
  absl::MutexLock lock(&mu_);
  if (published_ != 0 || head_ != 0) return false;
  head_ = head;
  return true;
}

void EventHub::EvictLocked() {
  while (history_.size() > 1 && (history_.size() > options_.history_events ||
                                 history_bytes_ > options_.history_bytes)) {
    EventPtr e = std::move(history_.front());
    history_.pop_front();
    history_bytes_ -= e->MemoryBytes();
    for (const auto& sub : subs_) {
      if (sub->cursor > e->seq || sub->fetching || !sub->filter.Matches(*e)) {
        continue;
      }
      if (sub->lossless && options_.history_source) {
        sub->fetching = true;  // it will read this one from the stream
      } else if (sub->lossless) {
        sub->overflow.push_back(e);
      } else {
        ++sub->lost_pending;
        ++lost_;
      }
    }
  }
}

bool EventHub::Read(Subscription* sub, size_t max_events, size_t max_bytes,
                    bool park_if_empty, ReadResult* out) {
  out->Clear();
  bool resumed = false;
  bool parked = false;
  {
    absl::MutexLock lock(&mu_);
    if (!sub->active) return false;
    if (sub->pending_gap.has_value()) {
      out->gap = std::move(sub->pending_gap);
      sub->pending_gap.reset();
      out->more = true;
      return false;
    }
    if (sub->fetching) {
      if (sub->cursor < OldestLocked()) {
        out->behind_from = sub->cursor;
        return false;
      }
      sub->fetching = false;
    }
    size_t bytes = 0;
    size_t consumed = 0;
    while (!sub->overflow.empty() && out->events.size() < max_events &&
           bytes < max_bytes) {
      bytes += sub->overflow.front()->body.size();
      consumed += sub->overflow.front()->MemoryBytes();
      out->events.push_back(std::move(sub->overflow.front()));
      sub->overflow.pop_front();
    }
    const uint64_t oldest = OldestLocked();
    if (sub->overflow.empty() && sub->cursor < oldest) {
      if (sub->lost_pending > 0) {
        out->gap = MakeGap(sub->cursor, oldest - 1, sub->lost_pending,
                           fanin::v1::GAP_REASON_SUBSCRIBER_TOO_SLOW);
        sub->lost_pending = 0;
        sub->cursor = oldest;
        out->more = true;
        return false;  // Lossy subscriptions have no overflow: no events.
      }
      sub->cursor = oldest;
    }
    if (sub->overflow.empty()) {
      size_t scanned = 0;
      while (sub->cursor <= head_ && out->events.size() < max_events &&
             bytes < max_bytes && scanned < kMaxScanPerRead) {
        const EventPtr& e = history_[sub->cursor - oldest];
        ++sub->cursor;
        ++scanned;
        if (!sub->filter.Matches(*e)) {
          continue;
        }
        bytes += e->body.size();
        consumed += e->MemoryBytes();
        out->events.push_back(e);
      }
    }
    if (sub->lossless && sub->release_on_read) {
      sub->pending_bytes -= std::min(consumed, sub->pending_bytes);
      if (sub->paused &&
          sub->pending_bytes <= options_.lossless_queue_bytes / 2) {
        sub->paused = false;
        paused_count_.fetch_sub(1, std::memory_order_release);
        resumed = true;
      }
    }
    if (!sub->overflow.empty() || sub->cursor <= head_) {
      out->more = true;
    } else if (out->events.empty() && park_if_empty) {
      sub->parked = true;
      out->parked = parked = true;
    }
  }
  if (resumed) NotifyPauseChange();
  return parked;
}

bool EventHub::Rejoin(Subscription* sub, uint64_t next_seq) {
  absl::MutexLock lock(&mu_);
  sub->cursor = std::max(sub->cursor, next_seq);
  if (sub->cursor >= OldestLocked()) sub->fetching = false;
  return !sub->fetching;
}

void EventHub::Kick(Subscription* sub) {
  {
    absl::MutexLock lock(&mu_);
    if (!sub->parked || !sub->active) return;
    sub->parked = false;
  }
  sub->wake();
}

bool EventHub::Unpark(Subscription* sub) {
  absl::MutexLock lock(&mu_);
  if (!sub->parked || !sub->active) return false;
  sub->parked = false;
  return true;
}

void EventHub::Release(Subscription* sub, size_t bytes) {
  bool resumed = false;
  {
    absl::MutexLock lock(&mu_);
    if (!sub->active || !sub->lossless) return;
    sub->pending_bytes -= std::min(bytes, sub->pending_bytes);
    if (sub->paused &&
        sub->pending_bytes <= options_.lossless_queue_bytes / 2) {
      sub->paused = false;
      paused_count_.fetch_sub(1, std::memory_order_release);
      resumed = true;
    }
  }
  if (resumed) NotifyPauseChange();
}

EventHub::Backlog EventHub::BacklogOf(Subscription* sub) const {
  absl::ReaderMutexLock lock(&mu_);
  return {.bytes = sub->lossless ? sub->pending_bytes : 0,
          .paused = sub->paused};
}

bool EventHub::ReadingPaused(uint32_t listener, uint64_t connection_id) const {
  if (!AnyPaused()) return false;
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& sub : subs_) {
    if (sub->paused &&
        sub->filter.MatchesAny(kReadProducedKinds, listener, connection_id)) {
      return true;
    }
  }
  return false;
}

bool EventHub::AcceptingPaused(uint32_t listener) const {
  if (!AnyPaused()) return false;
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& sub : subs_) {
    if (sub->paused && sub->filter.MatchesNewConnections(listener)) return true;
  }
  return false;
}

void EventHub::SetPauseObserver(absl::AnyInvocable<void()> observer) {
  absl::MutexLock lock(&observer_mu_);
  observer_ = std::move(observer);
}

void EventHub::NotifyPauseChange() {
  absl::MutexLock lock(&observer_mu_);
  if (observer_) observer_();
}

EventHub::Stats EventHub::GetStats() const {
  absl::ReaderMutexLock lock(&mu_);
  Stats s;
  s.head_seq = head_;
  s.oldest_seq = history_.empty() ? 0 : history_.front()->seq;
  s.events_published = published_;
  s.events_lost = lost_;
  s.subscribers = static_cast<uint32_t>(subs_.size());
  s.paused_subscribers = static_cast<uint32_t>(paused_count_.load());
  s.history_events = history_.size();
  s.history_bytes = history_bytes_;
  for (const auto& sub : subs_) {
    if (sub->lossless) s.lossless_pending_bytes += sub->pending_bytes;
  }
  std::copy(std::begin(by_kind_), std::end(by_kind_), s.events_by_kind);
  return s;
}

uint64_t EventHub::head_seq() const {
  absl::ReaderMutexLock lock(&mu_);
  return head_;
}

uint64_t EventHub::oldest_seq() const {
  absl::ReaderMutexLock lock(&mu_);
  return OldestLocked();
}

}  // namespace fanin::fanout
