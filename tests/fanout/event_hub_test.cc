// EventHub and the event codec: sequencing, filters, exact loss accounting,
// lossless overflow and pause, resume, waking.
#include "server/fanout/event_hub.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/fanout/event_codec.h"

namespace fanin::fanout {
namespace {

using fanin::v1::EventKind;

std::shared_ptr<StoredEvent> Data(uint64_t conn, absl::string_view bytes,
                                  uint32_t listener = 0) {
  return MakeDataEvent(conn, listener, listener == 0 ? "default" : "other", "",
                       1234, bytes);
}

std::shared_ptr<StoredEvent> Opened(uint64_t conn) {
  fanin::v1::Event e;
  e.set_connection_id(conn);
  e.set_listener("default");
  e.mutable_opened()->set_remote_address("127.0.0.1:1");
  return MakeEvent(e, 0);
}

Filter MakeFilter(const fanin::v1::SubscribeRequest& req) {
  auto f = Filter::FromRequest(req, {"default", "other"});
  EXPECT_TRUE(f.ok()) << f.status();
  return *f;
}

std::shared_ptr<EventHub::Subscription> Sub(EventHub& hub,
                                            EventHub::SubscribeSpec spec) {
  EventHub::Started started;
  auto sub = hub.Subscribe(std::move(spec), &started);
  EXPECT_TRUE(sub.ok()) << sub.status();
  return *sub;
}

TEST(EventCodec, EventDecodesWithPayloadPolicies) {
  auto e = Data(7, std::string("ab\0cdef", 7));
  e->seq = 99;
  auto o = Opened(8);
  o->seq = 100;
  for (PayloadPolicy p : {PayloadPolicy{}, PayloadPolicy{.omit = true},
                          PayloadPolicy{.max = 3}}) {
    // As the two events of an EventBatch.
    std::string wire;
    AppendEventField(fanin::v1::EventBatch::kEventsFieldNumber, *e, p, &wire);
    AppendEventField(fanin::v1::EventBatch::kEventsFieldNumber, *o, p, &wire);
    fanin::v1::EventBatch batch;
    ASSERT_TRUE(batch.ParseFromString(wire));
    ASSERT_EQ(batch.events_size(), 2);
    const fanin::v1::Event& d = batch.events(0);
    EXPECT_EQ(d.seq(), 99u);
    EXPECT_EQ(d.connection_id(), 7u);
    EXPECT_EQ(d.listener(), "default");
    EXPECT_EQ(d.data().size(), 7u);
    std::string want = p.omit  ? ""
                       : p.max ? "ab" + std::string(1, '\0')
                               : std::string("ab\0cdef", 7);
    EXPECT_EQ(d.data().payload(), want);
    const fanin::v1::Event& opened = batch.events(1);
    EXPECT_EQ(opened.seq(), 100u);
    EXPECT_EQ(opened.opened().remote_address(), "127.0.0.1:1");
  }
}

TEST(EventHub, SequencesAndFiltersInOrder) {
  EventHub hub({});
  fanin::v1::SubscribeRequest req;
  req.add_kinds(fanin::v1::EVENT_KIND_DATA);
  req.add_connection_ids(2);
  auto all = Sub(hub, {});
  auto only2 = Sub(hub, {.filter = MakeFilter(req)});
  hub.Publish(Opened(1));
  hub.Publish(Data(1, "x"));
  hub.Publish(Opened(2));
  hub.Publish(Data(2, "y"));
  EventHub::ReadResult r;
  hub.Read(all.get(), 100, 1 << 20, true, &r);
  ASSERT_EQ(r.events.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(r.events[i]->seq, i + 1);
  hub.Read(only2.get(), 100, 1 << 20, true, &r);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0]->seq, 4u);
  hub.Read(only2.get(), 100, 1 << 20, true, &r);
  EXPECT_TRUE(r.parked);
}

TEST(EventHub, RejectsBadFilters) {
  fanin::v1::SubscribeRequest req;
  req.add_listeners("nope");
  auto f = Filter::FromRequest(req, {"default"});
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(f.status().message().find("listeners[0]"), std::string::npos);
  req.Clear();
  req.add_kinds(static_cast<EventKind>(42));
  EXPECT_EQ(Filter::FromRequest(req, {"default"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EventHub, LossySubscriberGetsExactGap) {
  EventHub hub({.history_events = 10});
  fanin::v1::SubscribeRequest req;
  req.add_connection_ids(1);
  auto sub = Sub(hub, {.filter = MakeFilter(req)});
  int matched = 0;
  for (int i = 0; i < 100; ++i) {
    uint64_t conn = 1 + (i % 3 == 0 ? 0 : 1);
    if (conn == 1) ++matched;
    hub.Publish(Data(conn, "z"));
  }
  uint64_t lost = 0, got = 0, last_seq = 0;
  EventHub::ReadResult r;
  for (;;) {
    hub.Read(sub.get(), 3, 1 << 20, true, &r);
    if (r.gap) {
      EXPECT_EQ(r.gap->reason(), fanin::v1::GAP_REASON_SUBSCRIBER_TOO_SLOW);
      EXPECT_GT(r.gap->first_seq(), last_seq);
      lost += r.gap->lost();
      last_seq = r.gap->last_seq();
      continue;
    }
    for (const auto& e : r.events) {
      EXPECT_GT(e->seq, last_seq);
      last_seq = e->seq;
      EXPECT_EQ(e->connection_id, 1u);
    }
    got += r.events.size();
    if (r.parked) break;
  }
  EXPECT_EQ(lost + got, static_cast<uint64_t>(matched));
  EXPECT_GT(lost, 0u);
  EXPECT_EQ(hub.GetStats().events_lost, lost);
}

TEST(EventHub, LosslessKeepsEverythingAndPausesAtItsBudget) {
  EventHub hub({.history_events = 4, .lossless_queue_bytes = 4096});
  std::atomic<int> changes{0};
  hub.SetPauseObserver([&] { changes++; });
  auto sub = Sub(hub, {.lossless = true});
  uint64_t n = 0;
  while (!hub.ReadingPaused(0, 1)) {
    hub.Publish(Data(1, std::string(100, 'q')));
    ++n;
    ASSERT_LT(n, 1000u) << "never paused";
  }
  EXPECT_TRUE(hub.AcceptingPaused(0));
  EXPECT_EQ(changes.load(), 1);
  uint64_t got = 0, next = 1;
  EventHub::ReadResult r;
  do {
    hub.Read(sub.get(), 2, 1 << 20, true, &r);
    ASSERT_FALSE(r.gap.has_value());
    for (const auto& e : r.events) EXPECT_EQ(e->seq, next++);
    got += r.events.size();
  } while (!r.parked);
  EXPECT_EQ(got, n);
  EXPECT_FALSE(hub.ReadingPaused(0, 1));
  EXPECT_EQ(changes.load(), 2);
}

TEST(EventHub, ResumeInsideAndBeyondHistory) {
  EventHub hub({.history_events = 5});
  for (int i = 0; i < 20; ++i) hub.Publish(Data(1, "r"));
  EventHub::Started started;
  auto inside = hub.Subscribe({.resume_after_seq = 17}, &started);
  ASSERT_TRUE(inside.ok());
  EXPECT_EQ(started.oldest_seq, 16u);
  EXPECT_EQ(started.head_seq, 20u);
  EventHub::ReadResult r;
  hub.Read(inside->get(), 100, 1 << 20, true, &r);
  ASSERT_EQ(r.events.size(), 3u);
  EXPECT_EQ(r.events[0]->seq, 18u);

  auto expired = hub.Subscribe({.resume_after_seq = 3}, &started);
  ASSERT_TRUE(expired.ok());
  hub.Read(expired->get(), 100, 1 << 20, true, &r);
  ASSERT_TRUE(r.gap.has_value());
  EXPECT_EQ(r.gap->reason(), fanin::v1::GAP_REASON_HISTORY_EXPIRED);
  EXPECT_EQ(r.gap->first_seq(), 4u);
  EXPECT_EQ(r.gap->last_seq(), 15u);
  EXPECT_EQ(r.gap->lost(), 12u);
  hub.Read(expired->get(), 100, 1 << 20, true, &r);
  EXPECT_EQ(r.events.size(), 5u);

  EXPECT_EQ(hub.Subscribe({.resume_after_seq = 21}, &started).status().code(),
            absl::StatusCode::kOutOfRange);

  auto other = hub.Subscribe(
      {.resume_after_seq = 999, .resume_epoch = "not-" + hub.epoch()},
      &started);
  ASSERT_TRUE(other.ok());
  hub.Read(other->get(), 100, 1 << 20, true, &r);
  ASSERT_TRUE(r.gap.has_value());
  EXPECT_EQ(r.gap->reason(), fanin::v1::GAP_REASON_EPOCH_CHANGED);
  hub.Read(other->get(), 100, 1 << 20, true, &r);
  ASSERT_EQ(r.events.size(), 5u);
  EXPECT_EQ(r.events[0]->seq, 16u);
}

TEST(EventHub, ParkedSubscriptionIsWokenOnceFromAnotherThread) {
  EventHub hub({});
  std::atomic<int> wakes{0};
  auto sub = Sub(hub, {.wake = [&] { wakes++; }});
  EventHub::ReadResult r;
  hub.Read(sub.get(), 10, 1 << 20, true, &r);
  ASSERT_TRUE(r.parked);
  std::thread t([&] {
    for (int i = 0; i < 50; ++i) hub.Publish(Data(1, "w"));
  });
  t.join();
  EXPECT_EQ(wakes.load(), 1);
  hub.Read(sub.get(), 100, 1 << 20, true, &r);
  EXPECT_EQ(r.events.size(), 50u);
  hub.Unsubscribe(sub.get());
  hub.Publish(Data(1, "after"));
  EXPECT_EQ(wakes.load(), 1);
}

}  // namespace
}  // namespace fanin::fanout
