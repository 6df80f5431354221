// fanin_server (a child process, so it can be stopped and resumed) under
// faults: paused with SIGSTOP for seconds under load, subscriber processes
// killed while batches stream to them, and storms of clients that reset at
// once. After each, a lossless subscriber has every byte of every connection
// and every connection ends with exactly one Closed.
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/net/address.h"
#include "tests/server/e2e_util.h"
#include "tests/testing/grpc_util.h"
#include "tests/testing/server_process.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {
namespace {

using fanin::testing::ConnectTcp;
using fanin::testing::ServerProcess;
using fanin::testing::Subprocess;
using fanin::testing::WaitFor;

std::unique_ptr<ServerProcess> StartChild(std::vector<std::string> extra = {}) {
  std::vector<std::string> flags = {"--listen=127.0.0.1:0",
                                    "--grpc_address=127.0.0.1:0", "--loops=1",
                                    "--drain_timeout=5s"};
  flags.insert(flags.end(), extra.begin(), extra.end());
  auto server = ServerProcess::Start({.flags = flags});
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

// Every connection the reference saw open has exactly one Closed, last.
void ExpectEachClosedOnce(const Subscriber::State& s) {
  absl::flat_hash_map<uint64_t, int> closed;
  absl::flat_hash_map<uint64_t, bool> after_closed;
  for (const auto& e : s.events) {
    if (closed[e.connection_id()] > 0) after_closed[e.connection_id()] = true;
    if (e.has_closed()) ++closed[e.connection_id()];
  }
  for (const auto& [id, index] : s.opened) {
    EXPECT_EQ(closed[id], 1) << "connection " << id;
    EXPECT_FALSE(after_closed[id]) << "events after Closed on " << id;
  }
}

// Streams `clients` x `bytes` through the server; `during` runs while they
// send. Then every byte must have reached the lossless reference.
void StreamThrough(ServerProcess& server, int clients, size_t bytes,
                   absl::FunctionRef<void()> during) {
  auto reference = Subscriber::Start(server.grpc_address(), LosslessRequest());
  ASSERT_TRUE(reference->WaitStarted(Deadline()).ok());
  std::vector<fanin::testing::TcpClient> conns;
  std::vector<SendJob> jobs;
  std::vector<std::string> remotes;
  for (int i = 0; i < clients; ++i) {
    auto c = ConnectTcp(*server.listen_address());
    ASSERT_TRUE(c.ok()) << c.status();
    remotes.push_back(fanin::net::LocalAddressOf(c->fd()));
    jobs.push_back({c->fd(), RandomBytes(bytes, 500 + i)});
    conns.push_back(*std::move(c));
  }
  absl::Status sent;
  std::thread sender([&] {
    sent = SendAllInterleaved(jobs, 16 << 10, 9, Deadline(absl::Seconds(90)));
    for (auto& c : conns) c.ShutdownWrite().IgnoreError();
  });
  during();
  sender.join();
  ASSERT_TRUE(sent.ok()) << sent;
  // Every connection it saw opened (the storm's too) has closed, ours
  // included.
  ASSERT_TRUE(reference->WaitUntil(
      [&](const Subscriber::State& s) {
        if (s.done) return true;
        for (const std::string& remote : remotes) {
          auto it = s.id_by_remote.find(remote);
          if (it == s.id_by_remote.end() || !s.closed.contains(it->second)) {
            return false;
          }
        }
        return s.closed.size() >= s.opened.size();
      },
      Deadline(absl::Seconds(60))));
  Subscriber::State s = reference->Snapshot();
  EXPECT_TRUE(s.gaps.empty());
  for (int i = 0; i < clients; ++i) {
    auto it = s.id_by_remote.find(remotes[i]);
    ASSERT_NE(it, s.id_by_remote.end()) << remotes[i];
    EXPECT_TRUE(PayloadOf(s.events, it->second) == jobs[i].data)
        << "connection " << it->second << " lost or reordered bytes";
  }
  ExpectEachClosedOnce(s);
}

// Stopped for two seconds mid-stream, then resumed: the kernel held the
// clients' bytes, the server catches up, nothing is lost.
TEST(FaultsTest, PausedServerCatchesUpLosingNothing) {
  auto server = StartChild();
  ASSERT_NE(server, nullptr);
  StreamThrough(*server, 20, 512 << 10, [&] {
    ASSERT_TRUE(server->Signal(SIGSTOP).ok());
    // The fault itself is a pause of fixed length.
    absl::SleepFor(absl::Seconds(2));
    ASSERT_TRUE(server->Signal(SIGCONT).ok());
  });
  auto code = server->Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

// Three subscriber processes (the real CLI) are SIGKILLed while batches
// stream to them: the server drops their subscriptions, serves the rest and
// loses nothing for the reference.
TEST(FaultsTest, SubscribersKilledMidBatchHarmNoOne) {
  auto server = StartChild();
  ASSERT_NE(server, nullptr);
  auto stub = NewStub(server->grpc_address());
  auto subscribers = [&] {
    fanin::v1::GetStatsResponse r;
    auto context = NewContext();
    return stub->GetStats(context.get(), {}, &r).ok() ? r.subscribers() : 99;
  };
  std::vector<std::unique_ptr<Subprocess>> watchers;
  for (int i = 0; i < 3; ++i) {
    auto w = Subprocess::Start(
        {"/bin/sh", "-c",
         absl::StrCat("exec client/fanin watch -o json --server=",
                      server->grpc_address(), " > /dev/null")},
        {.capture_output = false});
    ASSERT_TRUE(w.ok()) << w.status();
    watchers.push_back(*std::move(w));
  }
  ASSERT_TRUE(WaitFor([&] { return subscribers() == 3; }, Deadline()));
  StreamThrough(*server, 10, 1 << 20, [&] {
    // Killed once events flow to them (the reference joined: 4 in all).
    ASSERT_TRUE(WaitFor([&] { return subscribers() == 4; }, Deadline()));
    for (auto& w : watchers) ASSERT_TRUE(w->Signal(SIGKILL).ok());
    EXPECT_TRUE(WaitFor([&] { return subscribers() == 1; }, Deadline()))
        << "killed subscribers still subscribed";
  });
  auto code = server->Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

// Thousands of clients that connect and reset at once, beside one steady
// client: every storm connection ends with one Closed, the steady one keeps
// its bytes, and nothing stays open.
TEST(FaultsTest, ResetStormLeavesNothingBehind) {
  auto server = StartChild();
  ASSERT_NE(server, nullptr);
  constexpr int kStorm = 2000;
  std::atomic<int> resets{0};
  StreamThrough(*server, 1, 4 << 20, [&] {
    std::vector<std::thread> storm;
    for (int t = 0; t < 4; ++t) {
      storm.emplace_back([&] {
        for (int i = 0; i < kStorm / 4; ++i) {
          auto c = ConnectTcp(*server->listen_address());
          if (!c.ok()) continue;
          if (i % 2 == 0) (void)c->SendAll("x");
          c->Abort();
          ++resets;
        }
      });
    }
    for (auto& t : storm) t.join();
  });
  EXPECT_GE(resets.load(), kStorm * 9 / 10);
  auto stub = NewStub(server->grpc_address());
  EXPECT_TRUE(WaitFor(
      [&] {
        fanin::v1::GetStatsResponse r;
        auto context = NewContext();
        return stub->GetStats(context.get(), {}, &r).ok() &&
               r.connections_open() == 0;
      },
      Deadline()))
      << "connections left open after the storm";
  auto code = server->Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace fanin::servertest
