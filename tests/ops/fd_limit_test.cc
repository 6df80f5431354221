// The server out of file descriptors: started under `ulimit -n 64` and
// flooded with connects, it keeps serving gRPC, turns the connections it has
// no descriptor for into Opened + Closed(REJECTED) (their clients see the
// connection end), does not spin, and takes new clients again once the flood
// leaves.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/testing/server_process.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::opstest {
namespace {

using fanin::testing::ConnectTcp;
using fanin::testing::ServerProcess;
using fanin::testing::TcpClient;
using fanin::testing::WaitFor;

absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

// CPU seconds (user + system) the process has used so far.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses.
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// A Subscribe stream's Opened and Closed events, read by a thread.
class Watch {
 public:
  explicit Watch(fanin::v1::FanIn::Stub* stub) {
    fanin::v1::SubscribeRequest request;
    request.add_kinds(fanin::v1::EVENT_KIND_OPENED);
    request.add_kinds(fanin::v1::EVENT_KIND_DATA);
    request.add_kinds(fanin::v1::EVENT_KIND_CLOSED);
    request.set_delivery(fanin::v1::DELIVERY_LOSSLESS);
    reader_ = stub->Subscribe(&context_, request);
    thread_ = std::thread([this] {
      fanin::v1::SubscribeResponse msg;
      while (reader_->Read(&msg)) {
        absl::MutexLock lock(&mu_);
        if (msg.has_started()) started_ = true;
        for (const auto& e : msg.batch().events()) {
          if (e.has_opened()) {
            id_of_[e.opened().remote_address()] = e.connection_id();
          }
          if (e.has_closed()) closed_[e.connection_id()] = e.closed();
          if (e.has_data()) data_[e.connection_id()] += e.data().payload();
        }
      }
    });
  }
  ~Watch() {
    context_.TryCancel();
    thread_.join();
  }
  // The server has subscribed it (events from now on reach it).
  bool Started() {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  // Closed events with reason REJECTED whose detail names descriptors.
  std::vector<uint64_t> RejectedForFds() {
    absl::MutexLock lock(&mu_);
    std::vector<uint64_t> ids;
    for (const auto& [id, closed] : closed_) {
      if (closed.reason() == fanin::v1::CLOSE_REASON_REJECTED &&
          absl::StrContains(closed.detail(), "file descriptors")) {
        ids.push_back(id);
      }
    }
    return ids;
  }
  uint64_t IdOf(const std::string& remote) {
    absl::MutexLock lock(&mu_);
    auto it = id_of_.find(remote);
    return it == id_of_.end() ? 0 : it->second;
  }
  bool IsClosed(uint64_t id) {
    absl::MutexLock lock(&mu_);
    return closed_.contains(id);
  }
  std::string DataOf(uint64_t id) {
    absl::MutexLock lock(&mu_);
    return data_[id];
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<fanin::v1::SubscribeResponse>> reader_;
  std::thread thread_;
  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, uint64_t> id_of_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, fanin::v1::Closed> closed_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::string> data_ ABSL_GUARDED_BY(mu_);
};

std::string LocalAddressOf(int fd) {
  sockaddr_in in = {};
  socklen_t len = sizeof(in);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&in), &len);
  char ip[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &in.sin_addr, ip, sizeof(ip));
  return std::string(ip) + ":" + std::to_string(ntohs(in.sin_port));
}

TEST(FdLimitTest, OutOfDescriptorsRejectsKeepsServingAndRecovers) {
  // The shell lowers the limit, then becomes the server (same pid).
  auto server = ServerProcess::Start(
      {.binary = "/bin/sh",
       .flags = {"-c", "ulimit -n 64 && exec \"$0\" \"$@\"",
                 "server/fanin_server", "--listen=127.0.0.1:0",
                 "--grpc_address=127.0.0.1:0", "--loops=1",
                 "--drain_timeout=2s"}});
  ASSERT_TRUE(server.ok()) << server.status();
  const pid_t pid = (*server)->pid();
  auto channel = grpc::CreateChannel((*server)->grpc_address(),
                                     grpc::InsecureChannelCredentials());
  auto stub = fanin::v1::FanIn::NewStub(channel);
  auto watch = std::make_unique<Watch>(stub.get());
  auto stats = [&](fanin::v1::GetStatsResponse* out) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(30));
    return stub->GetStats(&context, {}, out);
  };
  fanin::v1::GetStatsResponse s;
  ASSERT_TRUE(WaitFor([&] { return stats(&s).ok(); }, Deadline()));
  const std::string address = (*server)->listen_address().value();
  // The watch is subscribed before the flood (its Subscribe may reach the
  // server after GetStats did; a live subscription misses what came before).
  ASSERT_TRUE(WaitFor([&] { return watch->Started(); }, Deadline()));

  // Far more clients than the 64 descriptors (less those gRPC holds).
  std::vector<TcpClient> flood;
  for (int i = 0; i < 120; ++i) {
    auto c = ConnectTcp(address);
    ASSERT_TRUE(c.ok()) << c.status();
    flood.push_back(*std::move(c));
  }
  ASSERT_TRUE(
      WaitFor([&] { return watch->RejectedForFds().size() >= 20; }, Deadline()))
      << "no Closed(REJECTED) naming descriptors; rejected so far: "
      << watch->RejectedForFds().size();
  // Still serving, and counting what it rejected.
  ASSERT_TRUE(stats(&s).ok());
  EXPECT_GE(s.connections_rejected(), 20u);
  EXPECT_GT(s.connections_open(), 0u);

  // A rejected client sees its connection end.
  int ended = 0;
  for (TcpClient& c : flood) {
    const uint64_t id = watch->IdOf(LocalAddressOf(c.fd()));
    if (id == 0 || !watch->IsClosed(id)) continue;
    EXPECT_TRUE(c.WaitForPeerClose(Deadline())) << "connection " << id;
    if (++ended == 5) break;
  }
  EXPECT_EQ(ended, 5);

  // No busy loop while the limit holds: the process is idle. (A fixed window
  // is the measurement itself, not a wait for a condition.)
  const double cpu_before = CpuSeconds(pid);
  absl::SleepFor(absl::Seconds(1));
  const double cpu_used = CpuSeconds(pid) - cpu_before;
  EXPECT_LT(cpu_used, 0.3) << "the server spun while out of descriptors";

  // The flood leaves; a new client is taken and read as usual.
  flood.clear();
  ASSERT_TRUE(WaitFor(
      [&] { return stats(&s).ok() && s.connections_open() == 0; }, Deadline()))
      << s.connections_open() << " connections still open";
  auto late = ConnectTcp(address);
  ASSERT_TRUE(late.ok()) << late.status();
  ASSERT_TRUE(late->SendAll("still here").ok());
  uint64_t id = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        id = watch->IdOf(LocalAddressOf(late->fd()));
        return id != 0 && watch->DataOf(id) == "still here";
      },
      Deadline()));
  EXPECT_FALSE(watch->IsClosed(id));
  watch.reset();
  auto code = (*server)->Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace fanin::opstest
