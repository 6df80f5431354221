// The cluster stream's message format: one JetStream message per batch of
// events. Headers Fanin-Base (the seq of its first event) and Fanin-Count
// (how many); the body is each event's encoding (an Event without seq) with
// its length in front as a varint. Publisher, consumer, fetcher and the tail
// catch-up all read and write it through here.
//
// Example:
//   std::string payload;
//   AppendBody(event_body, &payload);          // once per event
//   SetBatchHeaders(msg, /*base=*/101, /*count=*/1);
//   ...
//   std::optional<BatchHeaders> h = ReadBatchHeaders(msg);
//   BatchBodies bodies(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
//   std::string body;
//   for (uint64_t i = 0; i < h->count && bodies.Next(&body); ++i) { ... }
#ifndef FANIN_SERVER_CLUSTER_BATCH_H_
#define FANIN_SERVER_CLUSTER_BATCH_H_

#include <nats/nats.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace fanin::cluster {

inline constexpr char kBaseHeader[] = "Fanin-Base";
inline constexpr char kCountHeader[] = "Fanin-Count";

struct BatchHeaders {
  uint64_t base = 0;   // seq of the first event
  uint64_t count = 0;  // events in the message
};

// The batch headers of `msg`; nullopt when either is missing or not a
// number (a message fanin did not write).
std::optional<BatchHeaders> ReadBatchHeaders(natsMsg* msg);
void SetBatchHeaders(natsMsg* msg, uint64_t base, uint64_t count);

// Appends one event's body, length first.
void AppendBody(absl::string_view body, std::string* out);

// Walks a batch's bodies in order.
class BatchBodies {
 public:
  BatchBodies(const char* data, size_t size) : p_(data), end_(data + size) {}
  // The next body into *body; false at the end, or when the rest is not a
  // whole length-prefixed body (the message is cut or not fanin's).
  bool Next(std::string* body);

 private:
  const char* p_;
  const char* end_;
};

}  // namespace fanin::cluster

#endif  // FANIN_SERVER_CLUSTER_BATCH_H_
