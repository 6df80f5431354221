// BatchCache: encoded batches shared between Subscribe streams.
//
// Streams whose filters and payload policies are equal (their "class") and
// that read the same run of events from the hub would each encode the same
// bytes. The first to encode puts the result in the cache as a refcounted
// grpc::Slice; the others find it there and send that slice: no encoding and
// no copy (gRPC holds a reference until the write is done).
//
// Only classes with two or more live streams are cached, so a lone subscriber
// pays nothing. The cache holds at most `max_bytes` of encoded batches,
// and 64 entries, evicting the oldest; an evicted slice lives on while a write
// still uses it.
//
// Thread safety: every method may be called from any thread.
#ifndef FANIN_SERVER_GRPC_BATCH_CACHE_H_
#define FANIN_SERVER_GRPC_BATCH_CACHE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/slice.h"
#include "server/fanout/event_codec.h"
#include "server/fanout/stored_event.h"

namespace fanin::grpc_api {

class BatchCache {
 public:
  explicit BatchCache(size_t max_bytes = size_t{4} << 20)
      : max_bytes_(max_bytes) {}

  // The class of a stream: equal for streams whose batches are
  // interchangeable. `filter_key` is fanout::Filter::Key().
  static std::string ClassOf(const std::string& filter_key,
                             const fanout::PayloadPolicy& policy);

  // A stream of `class_key` starts / ends.
  void AddStream(const std::string& class_key);
  void RemoveStream(const std::string& class_key);

  // The encoded SubscribeResponse carrying `events` (non-empty, in seq order,
  // every event of the class in their seq range). *shared is set when it came
  // from the cache.
  grpc::Slice Encode(const std::string& class_key,
                     const std::vector<fanout::EventPtr>& events,
                     const fanout::PayloadPolicy& policy, bool* shared);

  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  uint64_t encodes() const { return encodes_.load(std::memory_order_relaxed); }
  size_t cached_bytes() const;

 private:
  struct Entry {
    std::string class_key;
    uint64_t first_seq;
    uint64_t last_seq;
    size_t count;
    grpc::Slice wire;
  };

  // Bounds the lookup's scan as well as the memory.
  static constexpr size_t kMaxEntries = 64;

  const size_t max_bytes_;
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> encodes_{0};
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> streams_ ABSL_GUARDED_BY(mu_);
  std::deque<Entry> entries_ ABSL_GUARDED_BY(mu_);  // oldest first
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fanin::grpc_api

#endif  // FANIN_SERVER_GRPC_BATCH_CACHE_H_
