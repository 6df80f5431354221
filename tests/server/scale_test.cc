// 10,000 raw connections on every poller (select included). The server runs
// as a child process (//server:fanin_server with --ready_file) because the
// test holds the 10,000 client ends and one process may hold only ~20,000
// fds. Each client sends 16 bytes naming itself; a subscriber must see
// 10,000 Opened events and every client's bytes, and GetStats must count
// 10,000 open connections.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/server/e2e_util.h"
#include "tests/testing/server_process.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {
namespace {

using fanin::testing::ServerProcess;

constexpr int kConnections = 10000;
constexpr int kBatch = 1000;
constexpr int kSources = 8;  // 127.0.0.1 .. 127.0.0.8

class ScaleTest : public ::testing::TestWithParam<reactor::PollerKind> {};

// Starts a non-blocking connect from 127.0.0.<source> to `to`. The source
// address spreads the ephemeral ports; IP_BIND_ADDRESS_NO_PORT lets the
// kernel pick the port at connect time (per destination) rather than at bind.
int StartConnect(const sockaddr_in& to, int source) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
  sockaddr_in from = {};
  from.sin_family = AF_INET;
  from.sin_addr.s_addr = htonl(0x7f000000u + static_cast<uint32_t>(source));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) != 0 &&
       errno != EINPROGRESS)) {
    int err = errno;
    ::close(fd);
    return -err;
  }
  return fd;
}

// Waits until every fd in fds[from, to) finished connecting; false with a
// failure on error or deadline.
bool AwaitConnected(const std::vector<int>& fds, size_t from, size_t to,
                    absl::Time deadline) {
  std::vector<pollfd> pending;
  for (size_t i = from; i < to; ++i) pending.push_back({fds[i], POLLOUT, 0});
  while (!pending.empty()) {
    if (absl::Now() > deadline) {
      ADD_FAILURE() << pending.size() << " connects still pending";
      return false;
    }
    ::poll(pending.data(), pending.size(), 100);
    std::vector<pollfd> still;
    for (const pollfd& p : pending) {
      if (p.revents == 0) {
        still.push_back({p.fd, POLLOUT, 0});
        continue;
      }
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        ADD_FAILURE() << "connect: " << std::strerror(err);
        return false;
      }
    }
    pending.swap(still);
  }
  return true;
}

TEST_P(ScaleTest, TenThousandConnections) {
  const std::string poller(reactor::PollerKindName(GetParam()));
  auto server = ServerProcess::Start(
      {.flags = {"--listen=default=127.0.0.1:0", "--grpc_address=127.0.0.1:0",
                 absl::StrCat("--poller=", poller), "--loops=2",
                 "--max_connections=20000"}});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string grpc_address = (*server)->grpc_address();
  auto listen = (*server)->listen_address("default");
  ASSERT_TRUE(listen.ok()) << listen.status();

  fanin::v1::SubscribeRequest request = LosslessRequest();
  request.add_kinds(fanin::v1::EVENT_KIND_OPENED);
  request.add_kinds(fanin::v1::EVENT_KIND_DATA);
  request.add_kinds(fanin::v1::EVENT_KIND_CLOSED);
  request.set_max_batch_events(1000);
  auto sub = Subscriber::Start(grpc_address, request);
  ASSERT_TRUE(sub->WaitStarted(Deadline()).ok());

  sockaddr_in to = {};
  to.sin_family = AF_INET;
  size_t colon = listen->rfind(':');
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(listen->substr(colon + 1), &port));
  to.sin_port = htons(static_cast<uint16_t>(port));
  ASSERT_EQ(inet_pton(AF_INET, listen->substr(0, colon).c_str(), &to.sin_addr),
            1);

  std::vector<TcpClient> clients;  // Owns the fds (closes them at the end).
  std::vector<int> fds;
  clients.reserve(kConnections);
  const absl::Time deadline = Deadline(absl::Seconds(90));
  for (int start = 0; start < kConnections; start += kBatch) {
    // Keep the unaccepted backlog well under somaxconn (4096): a dropped SYN
    // would be retried only after a second.
    ASSERT_TRUE(sub->WaitUntil(
        [&](const Subscriber::State& s) {
          return static_cast<int>(s.opened.size()) + 2 * kBatch >= start ||
                 s.done;
        },
        deadline));
    for (int i = start; i < start + kBatch; ++i) {
      int fd = StartConnect(to, 1 + i % kSources);
      ASSERT_GE(fd, 0) << "connection " << i << ": " << std::strerror(-fd);
      fds.push_back(fd);
      clients.emplace_back(fd);
    }
    ASSERT_TRUE(AwaitConnected(fds, start, start + kBatch, deadline));
  }
  // Each client names itself; the send fits any socket buffer at once.
  absl::flat_hash_map<std::string, std::string> payload_of;  // by remote
  for (int i = 0; i < kConnections; ++i) {
    std::string payload = absl::StrFormat("client %08d\n", i);
    payload_of[LocalAddressOf(fds[i])] = payload;
    ASSERT_EQ(::send(fds[i], payload.data(), payload.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(payload.size()))
        << "client " << i << ": " << std::strerror(errno);
  }
  const uint64_t want_bytes = uint64_t{kConnections} * 16;
  ASSERT_TRUE(sub->WaitUntil(
      [&](const Subscriber::State& s) {
        return (s.opened.size() >= kConnections &&
                s.data_bytes >= want_bytes) ||
               s.done;
      },
      deadline))
      << "opened " << sub->Snapshot().opened.size() << ", data bytes "
      << sub->Snapshot().data_bytes;

  Subscriber::State s = sub->Snapshot();
  EXPECT_FALSE(s.done) << s.status.error_message();
  EXPECT_EQ(s.opened.size(), static_cast<size_t>(kConnections));
  EXPECT_TRUE(s.closed.empty()) << "a connection closed (rejected?)";
  absl::flat_hash_map<uint64_t, std::string> got;
  for (const auto& e : s.events) {
    if (e.has_data()) got[e.connection_id()] += e.data().payload();
  }
  int mismatched = 0;
  for (const auto& [remote, id] : s.id_by_remote) {
    auto want = payload_of.find(remote);
    if (want == payload_of.end() || got[id] != want->second) ++mismatched;
  }
  EXPECT_EQ(mismatched, 0);
  EXPECT_EQ(s.id_by_remote.size(), static_cast<size_t>(kConnections));

  auto stub = NewStub(grpc_address);
  fanin::v1::GetStatsResponse stats;
  auto context = NewContext();
  ASSERT_TRUE(stub->GetStats(context.get(), {}, &stats).ok());
  EXPECT_EQ(stats.poller(), poller);
  EXPECT_EQ(stats.connections_open(), static_cast<uint64_t>(kConnections));
  EXPECT_EQ(stats.connections_accepted(), static_cast<uint64_t>(kConnections));
  EXPECT_EQ(stats.connections_rejected(), 0u);
  EXPECT_EQ(stats.bytes_received(), want_bytes);
  sub.reset();
}

INSTANTIATE_TEST_SUITE_P(AllPollers, ScaleTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::servertest
