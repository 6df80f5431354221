#include "server/grpc/batch_cache.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/grpc/batch_encoder.h"

namespace fanin::grpc_api {
namespace {

// A slice that owns `bytes` (moved, not copied).
grpc::Slice SliceOwning(std::string bytes) {
  auto* owned = new std::string(std::move(bytes));
  return grpc::Slice(
      owned->data(), owned->size(),
      [](void* p) { delete static_cast<std::string*>(p); }, owned);
}

}  // namespace

std::string BatchCache::ClassOf(const std::string& filter_key,
                                const fanout::PayloadPolicy& policy) {
  return absl::StrCat(filter_key, "|", policy.omit ? 1 : 0, "|", policy.max);
}

void BatchCache::AddStream(const std::string& class_key) {
  absl::MutexLock lock(&mu_);
  ++streams_[class_key];
}

void BatchCache::RemoveStream(const std::string& class_key) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(class_key);
  if (it == streams_.end()) return;
  if (--it->second > 0) return;
  streams_.erase(it);
  // Nobody else of this class will ask: drop its entries now.
  for (auto e = entries_.begin(); e != entries_.end();) {
    if (e->class_key == class_key) {
      bytes_ -= e->wire.size();
      e = entries_.erase(e);
    } else {
      ++e;
    }
  }
}

grpc::Slice BatchCache::Encode(const std::string& class_key,
                               const std::vector<fanout::EventPtr>& events,
                               const fanout::PayloadPolicy& policy,
                               bool* shared) {
  *shared = false;
  const uint64_t first = events.front()->seq;
  const uint64_t last = events.back()->seq;
  bool cacheable;
  {
    absl::MutexLock lock(&mu_);
    auto it = streams_.find(class_key);
    cacheable = it != streams_.end() && it->second >= 2;
    if (cacheable) {
      // Newest first: streams in step ask for what was just encoded.
      for (auto e = entries_.rbegin(); e != entries_.rend(); ++e) {
        if (e->first_seq == first && e->last_seq == last &&
            e->count == events.size() && e->class_key == class_key) {
          hits_.fetch_add(1, std::memory_order_relaxed);
          *shared = true;
          return e->wire;
        }
      }
    }
  }
  // Encode outside the lock; two streams racing both encode, which is
  // correct (the bytes are equal) and only costs the work saved otherwise.
  std::string wire;
  AppendBatchResponse(events, policy, &wire);
  encodes_.fetch_add(1, std::memory_order_relaxed);
  grpc::Slice slice = SliceOwning(std::move(wire));
  if (!cacheable || slice.size() > max_bytes_) return slice;
  absl::MutexLock lock(&mu_);
  entries_.push_back({class_key, first, last, events.size(), slice});
  bytes_ += slice.size();
  while (bytes_ > max_bytes_ || entries_.size() > kMaxEntries) {
    bytes_ -= entries_.front().wire.size();
    entries_.pop_front();
  }
  return slice;
}

size_t BatchCache::cached_bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

}  // namespace fanin::grpc_api
