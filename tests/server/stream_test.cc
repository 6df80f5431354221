// Subscribe end to end, on every poller: byte-exact lossless delivery under
// back-pressure, lossy gap accounting, filters and payload options, resume,
// Started and heartbeats.
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "tests/server/e2e_util.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {
namespace {

using fanin::testing::ConnectTcp;
using fanin::testing::WaitFor;
using fanin::v1::Event;
using fanin::v1::EventKind;
using fanin::v1::SubscribeRequest;

class StreamTest : public ::testing::TestWithParam<reactor::PollerKind> {};

// Seqs strictly increase along one stream.
void ExpectSeqIncreasing(const std::vector<Event>& events,
                         const std::string& who) {
  for (size_t i = 1; i < events.size(); ++i) {
    if (events[i].seq() <= events[i - 1].seq()) {
      ADD_FAILURE() << who << ": seq " << events[i].seq() << " after "
                    << events[i - 1].seq() << " at index " << i;
      return;
    }
  }
}

std::vector<uint64_t> SeqsOf(const std::vector<Event>& events) {
  std::vector<uint64_t> out;
  for (const Event& e : events) out.push_back(e.seq());
  return out;
}

// One client's life as a subscriber must see it: Opened first, its bytes in
// order, ReadClosed, Closed(PEER_CLOSED) last with the right totals.
void ExpectPeerClosedLife(const std::vector<Event>& all, uint64_t id,
                          const std::string& sent, const std::string& who) {
  std::vector<Event> mine = EventsOf(all, id);
  ASSERT_GE(mine.size(), 3u) << who << " connection " << id;
  EXPECT_TRUE(mine.front().has_opened()) << who << " connection " << id;
  EXPECT_TRUE(mine.back().has_closed()) << who << " connection " << id;
  EXPECT_EQ(mine.back().closed().reason(), fanin::v1::CLOSE_REASON_PEER_CLOSED);
  EXPECT_EQ(mine.back().closed().bytes_received(), sent.size());
  EXPECT_TRUE(mine[mine.size() - 2].has_read_closed())
      << who << " connection " << id << ": ReadClosed must precede Closed";
  for (size_t i = 1; i + 2 < mine.size(); ++i) {
    EXPECT_TRUE(mine[i].has_data()) << who << " connection " << id << " event "
                                    << i << " is " << KindName(KindOf(mine[i]));
    EXPECT_EQ(mine[i].data().size(), mine[i].data().payload().size());
  }
  std::string got = PayloadOf(mine, id);
  EXPECT_EQ(got.size(), sent.size()) << who << " connection " << id;
  EXPECT_TRUE(got == sent)
      << who << " connection " << id << ": bytes differ (first difference at "
      << std::mismatch(got.begin(), got.end(), sent.begin(), sent.end()).first -
             got.begin()
      << ")";
}

// Hundreds of clients stream random bytes in random-sized writes; one
// lossless subscriber keeps up, another is held (it does not read its stream)
// until the hub reports it paused or the clients are done, then drains. Both
// must see every byte of every connection, in order, with no gap. With
// `small_hub` the queue bound and the history are small, so the overflow queue
// and the socket pause must engage (and the pause is asserted).
void RunLosslessByteExact(reactor::PollerKind poller, bool small_hub) {
  constexpr int kClients = 200;
  ServerConfig config = BaseConfig(poller);
  if (small_hub) {
    config.hub.lossless_queue_bytes = 256 << 10;
    config.hub.history_events = 512;
  }
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();

  auto fast = Subscriber::Start(address, LosslessRequest());
  SubscribeRequest slow_request = LosslessRequest();
  slow_request.set_max_batch_events(16);
  auto slow = Subscriber::Start(address, slow_request);
  ASSERT_TRUE(fast->WaitStarted(Deadline()).ok());
  ASSERT_TRUE(slow->WaitStarted(Deadline()).ok());
  // The slow subscriber stops reading its stream: the behaviour under test.
  slow->Hold();

  const std::string listen = ListenAddress(*server, "default");
  std::vector<TcpClient> clients;
  std::vector<SendJob> jobs;
  std::vector<std::string> remotes;
  for (int i = 0; i < kClients; ++i) {
    auto client = ConnectTcp(listen);
    ASSERT_TRUE(client.ok()) << client.status();
    remotes.push_back(LocalAddressOf(client->fd()));
    size_t size = (16 << 10) + (static_cast<size_t>(i) * 7919) % (48 << 10);
    jobs.push_back({client->fd(), RandomBytes(size, 1000 + i)});
    clients.push_back(*std::move(client));
  }
  std::atomic<bool> sent{false};
  absl::Status send_status;
  std::thread sender([&] {
    send_status =
        SendAllInterleaved(jobs, 4096, 7, Deadline(absl::Seconds(90)));
    for (TcpClient& c : clients) c.ShutdownWrite().IgnoreError();
    sent = true;
  });

  bool paused = false;
  WaitFor(
      [&] {
        paused = paused || server->hub()->GetStats().paused_subscribers > 0;
        return paused || sent;
      },
      Deadline(absl::Seconds(60)));
  slow->Release();
  sender.join();
  ASSERT_TRUE(send_status.ok()) << send_status;
  if (small_hub) {
    EXPECT_TRUE(paused) << "the held lossless subscriber never paused reading";
  }

  auto all_closed = [&](const Subscriber::State& s) {
    return s.closed.size() >= kClients || s.done;
  };
  ASSERT_TRUE(fast->WaitUntil(all_closed, Deadline(absl::Seconds(60))));
  ASSERT_TRUE(slow->WaitUntil(all_closed, Deadline(absl::Seconds(60))));
  Subscriber::State f = fast->Snapshot();
  Subscriber::State s = slow->Snapshot();
  EXPECT_FALSE(f.done) << f.status.error_message();
  EXPECT_FALSE(s.done) << s.status.error_message();
  EXPECT_TRUE(f.gaps.empty());
  EXPECT_TRUE(s.gaps.empty());
  ExpectSeqIncreasing(f.events, "fast");
  ExpectSeqIncreasing(s.events, "slow");
  EXPECT_EQ(SeqsOf(f.events), SeqsOf(s.events));
  for (int n : s.batch_sizes) ASSERT_LE(n, 16);

  // Ids: one per client, never reused.
  EXPECT_EQ(f.opened.size(), static_cast<size_t>(kClients));
  absl::flat_hash_set<uint64_t> ids;
  for (const Event& e : f.events) {
    if (e.has_opened()) {
      EXPECT_TRUE(ids.insert(e.connection_id()).second)
          << "id " << e.connection_id() << " opened twice";
    }
  }
  for (int i = 0; i < kClients; ++i) {
    auto it = f.id_by_remote.find(remotes[i]);
    ASSERT_NE(it, f.id_by_remote.end()) << "no Opened for " << remotes[i];
    ExpectPeerClosedLife(f.events, it->second, jobs[i].data, "fast");
    ExpectPeerClosedLife(s.events, it->second, jobs[i].data, "slow");
    if (::testing::Test::HasFailure()) break;
  }
}

TEST_P(StreamTest, LosslessByteExactUnderBackPressure) {
  RunLosslessByteExact(GetParam(), /*small_hub=*/true);
}

TEST_P(StreamTest, LosslessByteExactDefaultHub) {
  RunLosslessByteExact(GetParam(), /*small_hub=*/false);
}

// A stalled lossy subscriber with a small history: afterwards its Gaps' lost
// counts plus what it received equal exactly what it matched, for an
// unfiltered and a filtered subscription; the server's events_lost agrees.
TEST_P(StreamTest, LossyGapsAccountForEveryMissedEvent) {
  constexpr int kClients = 100;
  ServerConfig config = BaseConfig(GetParam());
  config.hub.history_events = 64;
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();

  auto reference = Subscriber::Start(address, LosslessRequest());
  auto lossy_all = Subscriber::Start(address, SubscribeRequest());
  SubscribeRequest filtered;
  filtered.add_kinds(fanin::v1::EVENT_KIND_DATA);
  filtered.add_kinds(fanin::v1::EVENT_KIND_CLOSED);
  filtered.set_delivery(fanin::v1::DELIVERY_LOSSY);
  auto lossy_some = Subscriber::Start(address, filtered);
  auto started_all = lossy_all->WaitStarted(Deadline());
  auto started_some = lossy_some->WaitStarted(Deadline());
  ASSERT_TRUE(reference->WaitStarted(Deadline()).ok());
  ASSERT_TRUE(started_all.ok()) << started_all.status();
  ASSERT_TRUE(started_some.ok()) << started_some.status();
  // Stalled while events flow: the behaviour under test.
  lossy_all->Hold();
  lossy_some->Hold();

  const std::string listen = ListenAddress(*server, "default");
  std::vector<TcpClient> clients;
  std::vector<SendJob> jobs;
  for (int i = 0; i < kClients; ++i) {
    auto client = ConnectTcp(listen);
    ASSERT_TRUE(client.ok()) << client.status();
    jobs.push_back({client->fd(), RandomBytes(64 << 10, i)});
    clients.push_back(*std::move(client));
  }
  ASSERT_TRUE(SendAllInterleaved(jobs, 8192, 3, Deadline()).ok());
  for (TcpClient& c : clients) ASSERT_TRUE(c.ShutdownWrite().ok());
  ASSERT_TRUE(reference->WaitUntil(
      [&](const Subscriber::State& s) {
        return s.closed.size() >= kClients || s.done;
      },
      Deadline()));
  const uint64_t head = server->hub()->head_seq();

  lossy_all->Release();
  lossy_some->Release();
  auto covered = [&](const Subscriber::State& s) {
    return s.covered_seq >= head || s.done;
  };
  ASSERT_TRUE(lossy_all->WaitUntil(covered, Deadline()));
  ASSERT_TRUE(lossy_some->WaitUntil(covered, Deadline()));

  Subscriber::State ref = reference->Snapshot();
  ASSERT_EQ(ref.events.size(), head) << "the reference starts at seq 1";
  struct Case {
    const char* name;
    Subscriber::State state;
    uint64_t start_head;
    std::function<bool(const Event&)> matches;
  };
  Case cases[] = {
      {"unfiltered", lossy_all->Snapshot(), started_all->head_seq(),
       [](const Event&) { return true; }},
      {"DATA+CLOSED", lossy_some->Snapshot(), started_some->head_seq(),
       [](const Event& e) { return e.has_data() || e.has_closed(); }},
  };
  uint64_t total_lost = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    uint64_t matched = 0;
    for (const Event& e : ref.events) {
      if (e.seq() > c.start_head && c.matches(e)) ++matched;
    }
    EXPECT_FALSE(c.state.done) << c.state.status.error_message();
    EXPECT_GT(c.state.lost, 0u) << "the stall lost nothing: test too weak";
    EXPECT_GT(c.state.events.size(), 0u);
    EXPECT_EQ(c.state.events.size() + c.state.lost, matched);
    ExpectSeqIncreasing(c.state.events, c.name);
    for (const fanin::v1::Gap& gap : c.state.gaps) {
      EXPECT_EQ(gap.reason(), fanin::v1::GAP_REASON_SUBSCRIBER_TOO_SLOW);
      EXPECT_LE(gap.first_seq(), gap.last_seq());
      EXPECT_LE(gap.lost(), gap.last_seq() - gap.first_seq() + 1);
      uint64_t in_range = 0;
      for (const Event& e : ref.events) {
        if (e.seq() >= gap.first_seq() && e.seq() <= gap.last_seq() &&
            c.matches(e)) {
          ++in_range;
        }
      }
      EXPECT_EQ(gap.lost(), in_range)
          << "gap " << gap.first_seq() << ".." << gap.last_seq();
      for (const Event& e : c.state.events) {
        EXPECT_FALSE(e.seq() >= gap.first_seq() && e.seq() <= gap.last_seq())
            << "event " << e.seq() << " inside a gap";
      }
    }
    // Received events are the reference's, unchanged.
    for (const Event& e : c.state.events) {
      ASSERT_TRUE(c.matches(e));
      const Event& r = ref.events[e.seq() - 1];
      ASSERT_EQ(r.seq(), e.seq());
      EXPECT_EQ(r.SerializeAsString(), e.SerializeAsString());
    }
    total_lost += c.state.lost;
  }
  auto stub = NewStub(address);
  fanin::v1::GetStatsResponse stats;
  auto context = NewContext();
  ASSERT_TRUE(stub->GetStats(context.get(), {}, &stats).ok());
  EXPECT_EQ(stats.events_lost(), total_lost);
}

// Filters by kind, listener and connection, payload options and batch size,
// each compared with an unfiltered lossless reference.
TEST_P(StreamTest, FiltersAndPayloadOptions) {
  ServerConfig config = BaseConfig(GetParam());
  config.core.listen.push_back({"other", net::Endpoint::Loopback(0)});
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  auto reference = Subscriber::Start(address, LosslessRequest());
  ASSERT_TRUE(reference->WaitStarted(Deadline()).ok());

  // An early client, so A's Opened is not seq 1 (resume_after_seq 0 would
  // mean "live"); then A, so the connection filter can name its id.
  auto early = ConnectTcp(ListenAddress(*server, "other"));
  ASSERT_TRUE(early.ok());
  ASSERT_NE(reference->WaitOpened(early->fd(), Deadline()), 0u);
  auto a = ConnectTcp(ListenAddress(*server, "default"));
  ASSERT_TRUE(a.ok());
  const uint64_t a_id = reference->WaitOpened(a->fd(), Deadline());
  ASSERT_NE(a_id, 0u);
  const uint64_t a_opened_seq =
      reference->WaitEvent(a_id, fanin::v1::EVENT_KIND_OPENED, Deadline())
          ->seq();
  ASSERT_GT(a_opened_seq, 1u);

  SubscribeRequest kinds = LosslessRequest();
  kinds.add_kinds(fanin::v1::EVENT_KIND_OPENED);
  kinds.add_kinds(fanin::v1::EVENT_KIND_CLOSED);
  SubscribeRequest listeners = LosslessRequest();
  listeners.add_listeners("other");
  SubscribeRequest one = LosslessRequest();
  one.add_connection_ids(a_id);
  one.set_resume_after_seq(a_opened_seq - 1);  // Replays A's Opened.
  SubscribeRequest omit = LosslessRequest();
  omit.set_omit_payload(true);
  SubscribeRequest cap = LosslessRequest();
  cap.set_max_payload_bytes(5);
  struct Case {
    const char* name;
    SubscribeRequest request;
    std::function<bool(const Event&)> matches;
    std::unique_ptr<Subscriber> sub;
    uint64_t after = 0;
  };
  std::vector<Case> cases;
  cases.push_back({"kinds", kinds, [](const Event& e) {
                     return e.has_opened() || e.has_closed();
                   }});
  cases.push_back({"listeners", listeners,
                   [](const Event& e) { return e.listener() == "other"; }});
  cases.push_back({"connection_ids", one, [a_id](const Event& e) {
                     return e.connection_id() == a_id;
                   }});
  cases.push_back({"omit_payload", omit, [](const Event&) { return true; }});
  cases.push_back(
      {"max_payload_bytes", cap, [](const Event&) { return true; }});
  for (Case& c : cases) {
    c.sub = Subscriber::Start(address, c.request);
    auto started = c.sub->WaitStarted(Deadline());
    ASSERT_TRUE(started.ok()) << c.name << ": " << started.status();
    c.after = c.request.resume_after_seq() != 0 ? c.request.resume_after_seq()
                                                : started->head_seq();
    if (c.request.connection_ids_size() > 0) {
      ASSERT_EQ(c.after, a_opened_seq - 1) << "must replay A's Opened";
    }
  }

  std::vector<TcpClient> clients;
  clients.push_back(*std::move(a));
  clients.push_back(*std::move(early));
  for (const char* listener : {"default", "other", "other"}) {
    auto c = ConnectTcp(ListenAddress(*server, listener));
    ASSERT_TRUE(c.ok());
    clients.push_back(*std::move(c));
  }
  for (size_t i = 0; i < clients.size(); ++i) {
    ASSERT_TRUE(
        clients[i].SendAll(absl::StrCat("client ", i, " says hello")).ok());
    ASSERT_TRUE(clients[i].ShutdownWrite().ok());
  }
  ASSERT_TRUE(reference->WaitUntil(
      [&](const Subscriber::State& s) { return s.closed.size() >= 5; },
      Deadline()));
  Subscriber::State ref = reference->Snapshot();

  for (Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<Event> want;
    for (const Event& e : ref.events) {
      if (e.seq() > c.after && c.matches(e)) want.push_back(e);
    }
    ASSERT_FALSE(want.empty());
    ASSERT_TRUE(c.sub->WaitUntil(
        [&](const Subscriber::State& s) {
          return s.events.size() >= want.size() || s.done;
        },
        Deadline()));
    Subscriber::State got = c.sub->Snapshot();
    ASSERT_EQ(SeqsOf(got.events), SeqsOf(want));
    for (size_t i = 0; i < want.size(); ++i) {
      const Event& w = want[i];
      const Event& g = got.events[i];
      ASSERT_EQ(KindOf(g), KindOf(w));
      EXPECT_EQ(g.connection_id(), w.connection_id());
      EXPECT_EQ(g.listener(), w.listener());
      if (!w.has_data()) {
        EXPECT_EQ(g.SerializeAsString(), w.SerializeAsString());
        continue;
      }
      EXPECT_EQ(g.data().size(), w.data().size());
      if (c.request.omit_payload()) {
        EXPECT_EQ(g.data().payload(), "");
      } else if (c.request.max_payload_bytes() > 0) {
        EXPECT_EQ(g.data().payload(),
                  w.data().payload().substr(0, c.request.max_payload_bytes()));
      } else {
        EXPECT_EQ(g.data().payload(), w.data().payload());
      }
    }
  }

  // max_batch_events: a replay of everything is available at once, so the
  // server could send it in one batch; it must cut batches at 3.
  SubscribeRequest batched = LosslessRequest();
  batched.set_max_batch_events(3);
  batched.set_resume_after_seq(1);
  auto batch_sub = Subscriber::Start(address, batched);
  ASSERT_TRUE(batch_sub->WaitUntil(
      [&](const Subscriber::State& s) {
        return s.events.size() >= ref.events.size() - 1 || s.done;
      },
      Deadline()));
  Subscriber::State b = batch_sub->Snapshot();
  EXPECT_EQ(SeqsOf(b.events), SeqsOf(std::vector<Event>(ref.events.begin() + 1,
                                                        ref.events.end())));
  ASSERT_FALSE(b.batch_sizes.empty());
  EXPECT_EQ(*std::max_element(b.batch_sizes.begin(), b.batch_sizes.end()), 3);
}

// Invalid subscriptions fail with INVALID_ARGUMENT naming the field.
TEST_P(StreamTest, BadSubscribeRequestsNameTheField) {
  auto server = StartServer(BaseConfig(GetParam()));
  ASSERT_NE(server, nullptr);
  struct Case {
    SubscribeRequest request;
    const char* field;
  };
  std::vector<Case> cases(3);
  cases[0].request.add_listeners("nope");
  cases[0].field = "listeners";
  cases[1].request.add_kinds(static_cast<EventKind>(99));
  cases[1].field = "kinds";
  cases[2].request.set_delivery(static_cast<fanin::v1::Delivery>(7));
  cases[2].field = "delivery";
  for (const Case& c : cases) {
    auto sub = Subscriber::Start(server->grpc_address(), c.request);
    auto started = sub->WaitStarted(Deadline());
    ASSERT_FALSE(started.ok()) << c.field;
    EXPECT_EQ(started.status().code(), absl::StatusCode::kInvalidArgument)
        << started.status();
    EXPECT_NE(started.status().message().find(c.field), std::string::npos)
        << started.status();
  }
}

// Started, resume inside history, beyond history (HISTORY_EXPIRED), beyond
// head (OUT_OF_RANGE) and from another epoch (EPOCH_CHANGED).
TEST_P(StreamTest, StartedAndResume) {
  ServerConfig config = BaseConfig(GetParam());
  config.hub.history_events = 40;
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  const std::string listen = ListenAddress(*server, "default");

  auto reference = Subscriber::Start(address, LosslessRequest());
  auto first = reference->WaitStarted(Deadline());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->server_epoch().empty());
  EXPECT_EQ(first->oldest_seq(), 0u) << "empty history";
  EXPECT_EQ(first->head_seq(), 0u);

  // Each client: Opened, Data, ReadClosed, Closed.
  int closed_so_far = 0;
  auto run_clients = [&](int n) {
    for (int i = 0; i < n; ++i) {
      auto c = ConnectTcp(listen);
      ASSERT_TRUE(c.ok());
      ASSERT_TRUE(c->SendAll("x").ok());
      ASSERT_TRUE(c->ShutdownWrite().ok());
      std::string drained;
      // The server closes once it has read our FIN.
      ASSERT_TRUE(c->WaitForPeerClose(Deadline(), &drained));
      ++closed_so_far;
      ASSERT_TRUE(reference->WaitUntil(
          [&](const Subscriber::State& s) {
            return static_cast<int>(s.closed.size()) >= closed_so_far;
          },
          Deadline()));
    }
  };
  run_clients(5);
  Subscriber::State ref = reference->Snapshot();
  ASSERT_EQ(ref.events.size(), 20u);
  ExpectSeqIncreasing(ref.events, "reference");
  EXPECT_EQ(ref.events.front().seq(), 1u);

  {
    auto sub = Subscriber::Start(address, LosslessRequest());
    auto started = sub->WaitStarted(Deadline());
    ASSERT_TRUE(started.ok());
    EXPECT_EQ(started->server_epoch(), first->server_epoch());
    EXPECT_EQ(started->oldest_seq(), 1u);
    EXPECT_EQ(started->head_seq(), 20u);
  }
  {
    SubscribeRequest r = LosslessRequest();
    r.set_resume_after_seq(7);
    r.set_resume_epoch(first->server_epoch());
    auto sub = Subscriber::Start(address, r);
    ASSERT_TRUE(sub->WaitUntil(
        [](const Subscriber::State& s) { return s.events.size() >= 13; },
        Deadline()));
    Subscriber::State s = sub->Snapshot();
    EXPECT_TRUE(s.gaps.empty());
    ASSERT_EQ(s.events.size(), 13u);
    for (size_t i = 0; i < 13; ++i) {
      EXPECT_EQ(s.events[i].SerializeAsString(),
                ref.events[7 + i].SerializeAsString());
    }
  }
  {
    SubscribeRequest r;
    r.set_resume_after_seq(21);
    auto sub = Subscriber::Start(address, r);
    auto started = sub->WaitStarted(Deadline());
    ASSERT_FALSE(started.ok());
    EXPECT_EQ(started.status().code(), absl::StatusCode::kOutOfRange);
    EXPECT_NE(started.status().message().find("resume_after_seq"),
              std::string::npos)
        << started.status();
  }
  // resume_after_seq == head: nothing replayed, the next live event first.
  SubscribeRequest at_head = LosslessRequest();
  at_head.set_resume_after_seq(20);
  auto live = Subscriber::Start(address, at_head);
  ASSERT_TRUE(live->WaitStarted(Deadline()).ok());

  run_clients(10);  // 40 more events: history now holds 21..60.
  ref = reference->Snapshot();
  ASSERT_EQ(ref.events.size(), 60u);
  ASSERT_TRUE(live->WaitUntil(
      [](const Subscriber::State& s) { return s.events.size() >= 40; },
      Deadline()));
  EXPECT_EQ(live->Snapshot().events.front().seq(), 21u);

  {
    SubscribeRequest r = LosslessRequest();
    r.set_resume_after_seq(5);
    auto sub = Subscriber::Start(address, r);
    auto started = sub->WaitStarted(Deadline());
    ASSERT_TRUE(started.ok());
    EXPECT_EQ(started->oldest_seq(), 21u);
    EXPECT_EQ(started->head_seq(), 60u);
    ASSERT_TRUE(sub->WaitUntil(
        [](const Subscriber::State& s) { return s.events.size() >= 40; },
        Deadline()));
    Subscriber::State s = sub->Snapshot();
    ASSERT_EQ(s.gaps.size(), 1u);
    EXPECT_EQ(s.gaps[0].reason(), fanin::v1::GAP_REASON_HISTORY_EXPIRED);
    EXPECT_EQ(s.gaps[0].first_seq(), 6u);
    EXPECT_EQ(s.gaps[0].last_seq(), 20u);
    EXPECT_EQ(s.gaps[0].lost(), 15u) << "every expired seq counts";
    ASSERT_TRUE(s.messages.front().has_gap()) << "the gap comes first";
    ASSERT_EQ(s.events.size(), 40u);
    for (size_t i = 0; i < 40; ++i) {
      EXPECT_EQ(s.events[i].SerializeAsString(),
                ref.events[20 + i].SerializeAsString());
    }
  }
  {
    SubscribeRequest r = LosslessRequest();
    r.set_resume_after_seq(3);
    r.set_resume_epoch("not-" + first->server_epoch());
    auto sub = Subscriber::Start(address, r);
    ASSERT_TRUE(sub->WaitUntil(
        [](const Subscriber::State& s) { return !s.events.empty() || s.done; },
        Deadline()));
    Subscriber::State s = sub->Snapshot();
    ASSERT_FALSE(s.messages.empty());
    ASSERT_TRUE(s.messages.front().has_gap());
    EXPECT_EQ(s.messages.front().gap().reason(),
              fanin::v1::GAP_REASON_EPOCH_CHANGED);
    EXPECT_EQ(s.messages.front().gap().lost(), 0u)
        << "fanin.proto: for EPOCH_CHANGED lost is 0 (unknowable)";
    ASSERT_FALSE(s.events.empty());
    EXPECT_EQ(s.events.front().seq(), 21u) << "the oldest retained event";
  }
}

// An idle stream gets heartbeats carrying head_seq and its delivered count.
TEST_P(StreamTest, HeartbeatOnIdleStream) {
  ServerConfig config = BaseConfig(GetParam());
  config.service.heartbeat_interval = absl::Milliseconds(200);
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  auto sub = Subscriber::Start(server->grpc_address(), LosslessRequest());
  ASSERT_TRUE(sub->WaitStarted(Deadline()).ok());
  auto client = ConnectTcp(ListenAddress(*server, "default"));
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client->SendAll("ping").ok());
  uint64_t id = sub->WaitOpened(client->fd(), Deadline());
  ASSERT_TRUE(sub->WaitEvent(id, fanin::v1::EVENT_KIND_DATA, Deadline()));
  const uint64_t head = server->hub()->head_seq();
  ASSERT_TRUE(sub->WaitUntil(
      [&](const Subscriber::State& s) {
        return !s.heartbeats.empty() && s.heartbeats.back().delivered() >= 2;
      },
      Deadline()));
  Subscriber::State s = sub->Snapshot();
  const fanin::v1::Heartbeat& hb = s.heartbeats.back();
  EXPECT_EQ(hb.head_seq(), head);
  EXPECT_EQ(hb.delivered(), s.events.size());
  EXPECT_EQ(hb.lost(), 0u);
}

// Subscribers with equal filters and payload options share each encoded
// batch; ones with other options never get those bytes. A client sends one
// message at a time and waits until every subscriber has it, so the equal
// subscribers read the same single event and must share its batch.
TEST_P(StreamTest, EqualSubscribersShareEncodedBatches) {
  auto server = StartServer(BaseConfig(GetParam()));
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  std::vector<std::unique_ptr<Subscriber>> same;
  for (int i = 0; i < 3; ++i) {
    same.push_back(Subscriber::Start(address, LosslessRequest()));
    ASSERT_TRUE(same.back()->WaitStarted(Deadline()).ok());
  }
  SubscribeRequest omit = LosslessRequest();
  omit.set_omit_payload(true);
  auto other = Subscriber::Start(address, omit);
  ASSERT_TRUE(other->WaitStarted(Deadline()).ok());

  auto client = ConnectTcp(ListenAddress(*server, "default"));
  ASSERT_TRUE(client.ok());
  const uint64_t id = same[0]->WaitOpened(client->fd(), Deadline());
  ASSERT_NE(id, 0u);
  const auto& cache = server->service()->batch_cache();
  const uint64_t hits_before = cache.hits();
  constexpr int kMessages = 20;
  std::string sent;
  for (int m = 0; m < kMessages; ++m) {
    const std::string word = absl::StrCat("message-", m, ";");
    ASSERT_TRUE(client->SendAll(word).ok());
    sent += word;
    auto has_all = [&](const Subscriber::State& s) {
      std::string got;
      for (const Event& e : EventsOf(s.events, id)) {
        if (e.has_data()) got += e.data().payload();
      }
      return got == sent;
    };
    for (auto& sub : same) ASSERT_TRUE(sub->WaitUntil(has_all, Deadline()));
    ASSERT_TRUE(other->WaitUntil(
        [&](const Subscriber::State& s) {
          uint64_t size = 0;
          for (const Event& e : EventsOf(s.events, id)) {
            if (!e.has_data()) continue;
            EXPECT_TRUE(e.data().payload().empty()) << "omit_payload ignored";
            size += e.data().size();
          }
          return size == sent.size();
        },
        Deadline()));
  }
  // Three equal streams, one batch per message: two of them reuse it.
  EXPECT_GE(cache.hits() - hits_before, 2u * kMessages);
  Subscriber::State s0 = same[0]->Snapshot();
  for (auto& sub : same) {
    Subscriber::State s = sub->Snapshot();
    ASSERT_EQ(s.events.size(), s0.events.size());
    for (size_t i = 0; i < s.events.size(); ++i) {
      EXPECT_EQ(s.events[i].SerializeAsString(),
                s0.events[i].SerializeAsString());
    }
  }
}

// The byte at offset i of a long client stream: cheap to make again, so the
// test keeps none of what it sent and needs no allocation while sending.
char PatternByte(uint64_t i) {
  return static_cast<char>(((i * 2654435761u) >> 13) ^ (i >> 16));
}

// VmRSS of this process (the in-process server's memory is part of it).
size_t ResidentBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    size_t kib = 0;
    if (absl::StartsWith(line, "VmRSS:") &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::StripSuffix(
                             absl::StripPrefix(line, "VmRSS:"), "kB")),
                         &kib)) {
      return kib << 10;
    }
  }
  ADD_FAILURE() << "no VmRSS in /proc/self/status";
  return 0;
}

// Sends the pattern from *offset until the socket has had no room for
// `stall` (the peer stopped reading: returns true) or `limit` bytes went out
// (returns false).
bool SendUntilBlocked(int fd, uint64_t* offset, uint64_t limit,
                      absl::Duration stall) {
  char buf[16 << 10];
  while (*offset < limit) {
    const size_t n = std::min<uint64_t>(sizeof(buf), limit - *offset);
    for (size_t i = 0; i < n; ++i) buf[i] = PatternByte(*offset + i);
    ssize_t sent = ::send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent > 0) {
      *offset += sent;
      continue;
    }
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      ADD_FAILURE() << "send: " << std::strerror(errno);
      return false;
    }
    pollfd p = {fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(stall))) ==
        0) {
      return true;
    }
  }
  return false;
}

// A lossless subscriber that stops reading must stop the server reading the
// sockets it matches, not only flag itself paused: the raw client's sends
// block (TCP back-pressure reaches it) and the server's memory stays bounded
// by --subscriber_queue_bytes plus the kernel's buffers, however long the
// client pushes. Released, the subscriber gets every byte, in order.
TEST_P(StreamTest, StalledLosslessSubscriberBlocksTheClient) {
  constexpr size_t kQueueBytes = 1 << 20;
  // Far more than the queue bound and every kernel buffer on the way
  // (tcp_wmem and tcp_rmem top out at a few MiB each).
  constexpr uint64_t kLimit = uint64_t{96} << 20;
  ServerConfig config = BaseConfig(GetParam());
  config.hub.lossless_queue_bytes = kQueueBytes;
  config.hub.history_events = 256;
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  auto sub = Subscriber::Start(server->grpc_address(), LosslessRequest());
  ASSERT_TRUE(sub->WaitStarted(Deadline()).ok());
  auto client = ConnectTcp(ListenAddress(*server, "default"));
  ASSERT_TRUE(client.ok()) << client.status();
  const uint64_t id = sub->WaitOpened(client->fd(), Deadline());
  ASSERT_NE(id, 0u);
  sub->Hold();
  const size_t rss_before = ResidentBytes();

  uint64_t sent = 0;
  const bool blocked =
      SendUntilBlocked(client->fd(), &sent, kLimit, absl::Seconds(2));
  ASSERT_TRUE(blocked) << "the client sent " << sent
                       << " bytes and never blocked: the server kept reading "
                          "for a stalled lossless subscriber";
  EXPECT_LT(sent, kQueueBytes + (uint64_t{32} << 20)) << "blocked too late";
  fanout::EventHub::Stats stats = server->hub()->GetStats();
  EXPECT_EQ(stats.paused_subscribers, 1u);
  // At most one read (64 KiB) past the bound, plus the events' headers.
  EXPECT_LE(stats.lossless_pending_bytes, kQueueBytes + (256 << 10));
  const size_t rss_after = ResidentBytes();
  EXPECT_LT(rss_after, rss_before + (size_t{64} << 20))
      << "RSS grew from " << rss_before << " to " << rss_after;
  // Pushed again, the server still reads nothing more (the kernel may still
  // take a little as its buffers grow, the server must not).
  auto stub = NewStub(server->grpc_address());
  auto received = [&] {
    fanin::v1::GetStatsResponse stats;
    auto context = NewContext();
    EXPECT_TRUE(stub->GetStats(context.get(), {}, &stats).ok());
    return stats.bytes_received();
  };
  const uint64_t read_at_block = received();
  EXPECT_LE(read_at_block, sent);
  EXPECT_TRUE(SendUntilBlocked(client->fd(), &sent, kLimit, absl::Seconds(1)));
  EXPECT_EQ(received(), read_at_block) << "the server read on while paused";

  // Released: reading resumes, and the subscriber has every byte in order.
  sub->Release();
  const uint64_t total = sent + (4 << 20);
  ASSERT_FALSE(SendUntilBlocked(client->fd(), &sent, total, absl::Seconds(30)))
      << "reading did not resume after the subscriber caught up";
  ASSERT_EQ(sent, total);
  ASSERT_TRUE(client->ShutdownWrite().ok());
  ASSERT_TRUE(sub->WaitClosed(id, Deadline()).has_value());
  Subscriber::State s = sub->Snapshot();
  EXPECT_TRUE(s.gaps.empty());
  const std::string got = PayloadOf(s.events, id);
  ASSERT_EQ(got.size(), total);
  for (uint64_t i = 0; i < total; ++i) {
    if (got[i] != PatternByte(i)) {
      ADD_FAILURE() << "byte " << i << " of " << total << " differs";
      break;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPollers, StreamTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::servertest
