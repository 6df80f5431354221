// SIGTERM under load, against fanin_server as a child process: health turns
// NOT_SERVING at once, listeners stop accepting, pending writes reach their
// clients, every connection ends with CLOSED(SERVER_SHUTDOWN), a lossless
// subscriber gets every byte the server read, its stream ends OK, and the
// process exits 0 within --drain_timeout. A second signal exits at once.
#include <signal.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/ops/ops_util.h"
#include "tests/testing/server_process.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::opstest {
namespace {

using fanin::testing::ConnectTcp;
using fanin::testing::ReadyInfo;
using fanin::testing::Subprocess;
using fanin::testing::TcpClient;
using fanin::testing::WaitFor;

constexpr int kSenders = 16;
// More than the kernel can buffer for a client with a tiny receive window, so
// most of it waits in fanin's outbound queue when the drain starts.
constexpr size_t kPendingWrite = 8 << 20;
constexpr size_t kWriteChunk = 256 << 10;
constexpr int kTinyWindow = 4096;

// fanin_server started directly (not through ServerProcess, whose Stop would
// send the second SIGTERM this test wants to control).
struct Child {
  std::unique_ptr<Subprocess> process;
  ReadyInfo ready;
};

Child StartServer(const std::vector<std::string>& flags) {
  Child child;
  std::string ready = absl::StrCat(MakeTempDir(), "/ready");
  std::vector<std::string> argv = {"server/fanin_server",
                                   "--grpc_address=127.0.0.1:0",
                                   "--listen=127.0.0.1:0", "--loops=2",
                                   absl::StrCat("--ready_file=", ready)};
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto process = Subprocess::Start(argv, {.capture_output = false});
  EXPECT_TRUE(process.ok()) << process.status();
  if (!process.ok()) return child;
  child.process = *std::move(process);
  std::string text;
  EXPECT_TRUE(WaitFor(
      [&] {
        if (access(ready.c_str(), F_OK) != 0) return false;
        text = ReadFileOrDie(ready);
        return !text.empty();
      },
      Deadline()));
  auto info = fanin::testing::ParseReadyFile(text);
  EXPECT_TRUE(info.ok()) << info.status();
  if (info.ok()) child.ready = *info;
  return child;
}

TEST(DrainTest, SigtermUnderLoadLosesNothing) {
  Child server =
      StartServer({"--drain_timeout=10s", "--max_outbound_bytes=16777216"});
  ASSERT_NE(server.process, nullptr);
  const std::string grpc = server.ready.grpc_address;
  const std::string raw = server.ready.listeners.at("default");

  fanin::v1::SubscribeRequest request = LosslessRequest();
  request.set_omit_payload(true);
  auto watch = Subscriber::Start(grpc, request);
  ASSERT_TRUE(watch->WaitStarted(Deadline()).ok());

  // A client that reads nothing yet, owed 8 MiB that must still reach it.
  auto sink = ConnectFrom("127.0.0.1", raw, kTinyWindow);
  ASSERT_TRUE(sink.ok()) << sink.status();
  uint64_t sink_id = watch->WaitOpened(sink->fd(), Deadline());
  ASSERT_NE(sink_id, 0u);
  auto stub = fanin::v1::FanIn::NewStub(NewChannel(grpc));
  std::string payload(kPendingWrite, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = 'a' + i % 26;
  for (size_t off = 0; off < payload.size(); off += kWriteChunk) {
    fanin::v1::WriteRequest req;
    req.set_connection_id(sink_id);
    req.set_data(payload.substr(off, kWriteChunk));
    fanin::v1::WriteResponse r;
    grpc::Status s = stub->Write(NewContext().get(), req, &r);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // Senders that keep writing until the server closes them.
  std::atomic<bool> stop{false};
  std::vector<std::thread> senders;
  std::vector<TcpClient> clients;
  // The connections the drain must close: the sink and the senders. (The
  // listener probe below may get accepted once before the listener closes;
  // that connection is not part of the load.)
  absl::flat_hash_set<uint64_t> loaded = {sink_id};
  for (int i = 0; i < kSenders; ++i) {
    auto c = ConnectTcp(raw);
    ASSERT_TRUE(c.ok()) << c.status();
    uint64_t id = watch->WaitOpened(c->fd(), Deadline());
    ASSERT_NE(id, 0u);
    loaded.insert(id);
    clients.push_back(*std::move(c));
  }
  for (TcpClient& c : clients) {
    senders.emplace_back([&c, &stop] {
      std::string chunk(4096, 'x');
      while (!stop.load()) {
        if (!c.SendAll(chunk, absl::Now() + absl::Seconds(2)).ok() &&
            c.WaitForPeerClose(absl::Now())) {
          return;  // closed by the server
        }
      }
    });
  }
  // Load is flowing: the subscriber has seen a good amount of data.
  ASSERT_TRUE(watch->WaitUntil(
      [](const Subscriber::State& s) {
        uint64_t total = 0;
        for (const auto& [id, bytes] : s.data_bytes_by_id) total += bytes;
        return s.data_bytes_by_id.size() >= kSenders && total > (4u << 20);
      },
      Deadline()));

  const absl::Time term = absl::Now();
  ASSERT_TRUE(server.process->Signal(SIGTERM).ok());
  // Health turns NOT_SERVING at once (the pending write keeps the drain
  // going until the sink reads).
  auto health_channel = NewChannel(grpc);
  EXPECT_TRUE(WaitFor(
      [&] {
        auto h = HealthCheck(health_channel);
        return !h.ok() || *h == 2;
      },
      term + absl::Seconds(2)))
      << "health still SERVING after SIGTERM";
  // The listener no longer accepts.
  EXPECT_TRUE(WaitFor(
      [&] { return !ConnectTcp(raw, absl::Now() + absl::Seconds(1)).ok(); },
      term + absl::Seconds(3)));

  // The sink gets everything it was owed, then EOF.
  auto received = sink->RecvUntilEof(Deadline());
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_EQ(received->size(), kPendingWrite);
  EXPECT_TRUE(*received == payload);

  stop.store(true);
  for (std::thread& t : senders) t.join();

  auto exit = server.process->Wait(term + absl::Seconds(12));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_code, 0);
  EXPECT_LT(absl::Now() - term, absl::Seconds(11));

  grpc::Status done = watch->WaitDone(Deadline());
  EXPECT_TRUE(done.ok()) << done.error_code() << " " << done.error_message();
  Subscriber::State s = watch->Snapshot();
  EXPECT_EQ(s.lost, 0u);
  for (uint64_t id : loaded) {
    EXPECT_TRUE(s.closed.contains(id)) << "no Closed for connection " << id;
  }
  for (const auto& [id, index] : s.closed) {
    const fanin::v1::Closed& closed = s.events[index].closed();
    if (!loaded.contains(id)) {
      EXPECT_EQ(closed.bytes_received(), 0u) << "unexpected connection " << id;
      continue;
    }
    EXPECT_EQ(closed.reason(), fanin::v1::CLOSE_REASON_SERVER_SHUTDOWN)
        << "connection " << id << ": " << closed.detail();
    uint64_t seen =
        s.data_bytes_by_id.contains(id) ? s.data_bytes_by_id.at(id) : 0;
    EXPECT_EQ(seen, closed.bytes_received())
        << "connection " << id << " read " << closed.bytes_received()
        << " bytes, subscriber saw " << seen;
  }
  EXPECT_EQ(s.events[s.closed.at(sink_id)].closed().bytes_sent(),
            kPendingWrite);
}

TEST(DrainTest, SecondSignalExitsAtOnce) {
  Child server =
      StartServer({"--drain_timeout=25s", "--max_outbound_bytes=16777216"});
  ASSERT_NE(server.process, nullptr);
  const std::string grpc = server.ready.grpc_address;
  auto watch = Subscriber::Start(grpc, LosslessRequest());
  ASSERT_TRUE(watch->WaitStarted(Deadline()).ok());
  // A client that never reads holds the drain open with a pending write.
  auto sink = ConnectFrom("127.0.0.1", server.ready.listeners.at("default"),
                          kTinyWindow);
  ASSERT_TRUE(sink.ok()) << sink.status();
  uint64_t id = watch->WaitOpened(sink->fd(), Deadline());
  ASSERT_NE(id, 0u);
  auto stub = fanin::v1::FanIn::NewStub(NewChannel(grpc));
  for (size_t off = 0; off < kPendingWrite; off += kWriteChunk) {
    fanin::v1::WriteRequest req;
    req.set_connection_id(id);
    req.set_data(std::string(kWriteChunk, 'z'));
    fanin::v1::WriteResponse r;
    ASSERT_TRUE(stub->Write(NewContext().get(), req, &r).ok());
  }
  ASSERT_TRUE(server.process->Signal(SIGTERM).ok());
  auto health_channel = NewChannel(grpc);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto h = HealthCheck(health_channel);
        return h.ok() && *h == 2;
      },
      Deadline(absl::Seconds(5))));
  const absl::Time second = absl::Now();
  ASSERT_TRUE(server.process->Signal(SIGINT).ok());
  auto exit = server.process->Wait(second + absl::Seconds(5));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_code, 1);
  EXPECT_LT(absl::Now() - second, absl::Seconds(3));
}

}  // namespace
}  // namespace fanin::opstest
