// BatchCache: equal streams share one encoding; anything that would change
// the bytes (class, range, count) gets its own; memory stays bounded.
#include "server/grpc/batch_cache.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fanin/v1/fanin.pb.h"
#include "gtest/gtest.h"
#include "server/fanout/filter.h"
#include "server/grpc/batch_encoder.h"

namespace fanin::grpc_api {
namespace {

using fanout::EventPtr;

std::vector<EventPtr> Events(uint64_t first_seq, int n, size_t size = 16) {
  std::vector<EventPtr> out;
  for (int i = 0; i < n; ++i) {
    auto e = fanout::MakeDataEvent(7, 0, "default", "", 1000 + i,
                                   std::string(size, 'a' + i % 26));
    e->seq = first_seq + i;
    out.push_back(e);
  }
  return out;
}

std::string Bytes(const grpc::Slice& s) {
  return std::string(reinterpret_cast<const char*>(s.begin()), s.size());
}

std::string Expected(const std::vector<EventPtr>& events,
                     const fanout::PayloadPolicy& policy) {
  std::string wire;
  AppendBatchResponse(events, policy, &wire);
  return wire;
}

TEST(BatchCacheTest, EqualStreamsShareTheEncoding) {
  BatchCache cache;
  const fanout::PayloadPolicy policy;
  const std::string k = BatchCache::ClassOf(fanout::Filter().Key(), policy);
  cache.AddStream(k);
  cache.AddStream(k);
  auto events = Events(10, 5);
  bool shared = true;
  grpc::Slice a = cache.Encode(k, events, policy, &shared);
  EXPECT_FALSE(shared);
  grpc::Slice b = cache.Encode(k, events, policy, &shared);
  EXPECT_TRUE(shared);
  EXPECT_EQ(a.begin(), b.begin()) << "the same bytes, not a copy";
  EXPECT_EQ(Bytes(b), Expected(events, policy));
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.encodes(), 1u);
}

TEST(BatchCacheTest, ALoneStreamIsNotCached) {
  BatchCache cache;
  const fanout::PayloadPolicy policy;
  const std::string k = BatchCache::ClassOf(fanout::Filter().Key(), policy);
  cache.AddStream(k);
  auto events = Events(1, 3);
  bool shared = true;
  cache.Encode(k, events, policy, &shared);
  grpc::Slice again = cache.Encode(k, events, policy, &shared);
  EXPECT_FALSE(shared);
  EXPECT_EQ(cache.cached_bytes(), 0u);
  EXPECT_EQ(Bytes(again), Expected(events, policy));
}

TEST(BatchCacheTest, OtherClassRangeOrPolicyIsNeverShared) {
  BatchCache cache;
  fanout::PayloadPolicy whole;
  fanout::PayloadPolicy omit;
  omit.omit = true;
  const std::string all = BatchCache::ClassOf(fanout::Filter().Key(), whole);
  const std::string omitted = BatchCache::ClassOf(fanout::Filter().Key(), omit);
  ASSERT_NE(all, omitted);
  for (const std::string& k : {all, all, omitted, omitted}) cache.AddStream(k);
  auto events = Events(100, 4);
  bool shared;
  cache.Encode(all, events, whole, &shared);
  grpc::Slice o = cache.Encode(omitted, events, omit, &shared);
  EXPECT_FALSE(shared);
  EXPECT_EQ(Bytes(o), Expected(events, omit));
  EXPECT_NE(Bytes(o), Expected(events, whole));
  // A longer or later run of the same class is encoded again.
  auto longer = Events(100, 5);
  grpc::Slice l = cache.Encode(all, longer, whole, &shared);
  EXPECT_FALSE(shared);
  EXPECT_EQ(Bytes(l), Expected(longer, whole));
  auto later = Events(101, 4);
  grpc::Slice t = cache.Encode(all, later, whole, &shared);
  EXPECT_FALSE(shared);
  EXPECT_EQ(Bytes(t), Expected(later, whole));
}

TEST(BatchCacheTest, FilterKeysDifferExactlyWhenTheFiltersDo) {
  auto key = [](std::vector<uint64_t> ids,
                std::vector<fanin::v1::EventKind> kinds) {
    fanin::v1::SubscribeRequest r;
    for (uint64_t id : ids) r.add_connection_ids(id);
    for (auto k : kinds) r.add_kinds(k);
    auto f = fanout::Filter::FromRequest(r, {"default"});
    EXPECT_TRUE(f.ok()) << f.status();
    return f->Key();
  };
  EXPECT_EQ(key({3, 1, 2}, {}), key({1, 2, 3}, {}));
  EXPECT_NE(key({1, 2}, {}), key({1, 2, 3}, {}));
  EXPECT_NE(key({}, {fanin::v1::EVENT_KIND_DATA}), key({}, {}));
  EXPECT_EQ(
      key({}, {fanin::v1::EVENT_KIND_DATA, fanin::v1::EVENT_KIND_OPENED}),
      key({}, {fanin::v1::EVENT_KIND_OPENED, fanin::v1::EVENT_KIND_DATA}));
}

TEST(BatchCacheTest, MemoryIsBoundedAndLastStreamDropsItsEntries) {
  BatchCache cache(/*max_bytes=*/64 << 10);
  const fanout::PayloadPolicy policy;
  const std::string k = BatchCache::ClassOf(fanout::Filter().Key(), policy);
  cache.AddStream(k);
  cache.AddStream(k);
  bool shared;
  grpc::Slice held;
  for (int i = 0; i < 200; ++i) {
    grpc::Slice s =
        cache.Encode(k, Events(1 + i * 10, 10, 1000), policy, &shared);
    if (i == 0) held = s;
    EXPECT_LE(cache.cached_bytes(), size_t{64} << 10);
  }
  // An evicted batch still in use by a write stays valid.
  EXPECT_EQ(Bytes(held), Expected(Events(1, 10, 1000), policy));
  cache.RemoveStream(k);
  EXPECT_GT(cache.cached_bytes(), 0u) << "one stream of the class is left";
  cache.RemoveStream(k);
  EXPECT_EQ(cache.cached_bytes(), 0u);
}

}  // namespace
}  // namespace fanin::grpc_api
