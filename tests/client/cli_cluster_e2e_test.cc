// The `fanin` binary against a real cluster: a nats-server with JetStream and
// two fanin_server nodes on loopback. The watch with --follow and both nodes
// in --server loses its node and goes on at the other one, exactly where it
// was (the nodes share one epoch); nodes and list show the cluster.
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/json_lines.h"
#include "tests/testing/nats_server.h"
#include "tests/testing/server_process.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kFanin[] = "client/fanin";

absl::Time Deadline(absl::Duration d = absl::Seconds(30)) {
  return absl::Now() + d;
}

std::string CompleteLines(absl::string_view text) {
  size_t end = text.rfind('\n');
  return end == absl::string_view::npos ? ""
                                        : std::string(text.substr(0, end + 1));
}

class CliClusterE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    for (const char* name : {"a", "b"}) {
      auto node = ServerProcess::Start(
          {.flags = {"--cluster_nats=" + nats_->url(),
                     absl::StrCat("--node_name=", name),
                     "--cluster_storage=memory", "--listen=127.0.0.1:0",
                     "--grpc_address=127.0.0.1:0", "--loops=1"}});
      ASSERT_TRUE(node.ok()) << node.status();
      nodes_.push_back(*std::move(node));
    }
  }

  CommandResult Fanin(std::vector<std::string> args) {
    args.insert(args.begin(), kFanin);
    auto result = RunCommand(args);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : CommandResult();
  }

  // The payloads of the data events printed so far, concatenated.
  static std::string DataSoFar(const std::vector<JsonMap>& objects) {
    std::string data;
    for (const JsonMap& o : objects) {
      if (JsonKind(o) == "data") {
        data += Base64Decode(JsonStr(o, "data.payload")).value_or("?");
      }
    }
    return data;
  }

  static bool Printed(const Subprocess& watch, absl::string_view want) {
    auto parsed = ParseJsonLines(CompleteLines(watch.stdout_data()));
    return parsed.ok() && absl::StrContains(DataSoFar(*parsed), want);
  }

  std::unique_ptr<NatsServer> nats_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
};

TEST_F(CliClusterE2eTest, FollowGoesOnAtTheNextNodeExactly) {
  const std::string a = nodes_[0]->grpc_address();
  const std::string b = nodes_[1]->grpc_address();
  auto watch =
      Subprocess::Start({kFanin, "watch", "-o", "json", "--follow", "--kind",
                         "data", "--server", absl::StrCat(a, ",", b)});
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_TRUE((*watch)->WaitForOutput(
      [](absl::string_view out, absl::string_view) {
        return absl::StrContains(out, "\"server_epoch\"");
      },
      Deadline()))
      << (*watch)->stderr_data();

  // A client of node b: its connection outlives node a.
  auto client = ConnectTcp(*nodes_[1]->listen_address());
  ASSERT_TRUE(client.ok()) << client.status();
  std::string sent;
  auto send = [&](int i) {
    const std::string m = absl::StrCat("m", i, ";");
    ASSERT_TRUE(client->SendAll(m).ok());
    sent += m;
  };
  for (int i = 0; i < 5; ++i) {
    send(i);
    ASSERT_TRUE((*watch)->WaitForOutput(
        [&](absl::string_view, absl::string_view) {
          return Printed(**watch, sent);
        },
        Deadline()))
        << (*watch)->stdout_data();
  }
  // Node a, the watch's, dies; the client keeps sending meanwhile.
  ASSERT_TRUE(nodes_[0]->Signal(SIGKILL).ok());
  for (int i = 5; i < 10; ++i) send(i);
  ASSERT_TRUE((*watch)->WaitForOutput(
      [&](absl::string_view, absl::string_view) {
        return Printed(**watch, sent);
      },
      Deadline()))
      << (*watch)->stdout_data() << (*watch)->stderr_data();

  ASSERT_TRUE((*watch)->Signal(SIGINT).ok());
  auto result = (*watch)->Wait(Deadline());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 130) << result->stderr_data;
  auto parsed = ParseJsonLines(CompleteLines(result->stdout_data));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  // Every byte once, in order: nothing repeated, nothing lost.
  EXPECT_EQ(DataSoFar(*parsed), sent);
  std::vector<std::string> epochs;
  uint64_t last_seq = 0;
  for (const JsonMap& o : *parsed) {
    if (JsonType(o) == "started") epochs.push_back(JsonStr(o, "server_epoch"));
    if (JsonType(o) == "event") {
      EXPECT_GT(JsonUint(o, "seq"), last_seq) << "seq went back";
      last_seq = JsonUint(o, "seq");
      EXPECT_EQ(JsonStr(o, "node"), "b");
    }
    EXPECT_NE(JsonType(o), "gap") << "a gap at the switch";
  }
  ASSERT_EQ(epochs.size(), 2u) << result->stderr_data;
  EXPECT_EQ(epochs[0], epochs[1]) << "the cluster's one epoch";
  EXPECT_THAT(result->stderr_data,
              HasSubstr(absl::StrCat("stream from ", a, " ended")));
  EXPECT_THAT(result->stderr_data,
              HasSubstr(absl::StrCat("reconnected to ", b, " (epoch ",
                                     epochs[0], "), resuming after seq")));
  EXPECT_THAT(result->stderr_data, Not(HasSubstr("serves epoch")));
}

TEST_F(CliClusterE2eTest, NodesAndListShowTheCluster) {
  auto client = ConnectTcp(*nodes_[1]->listen_address());
  ASSERT_TRUE(client.ok()) << client.status();
  const std::string servers =
      absl::StrCat(nodes_[0]->grpc_address(), ",", nodes_[1]->grpc_address());
  CommandResult r;
  // b holds the one connection once its next heartbeat says so.
  ASSERT_TRUE(WaitFor(
      [&] {
        r = Fanin({"nodes", "--server", servers, "-o", "json"});
        auto parsed = ParseJsonLines(r.stdout_data);
        if (r.exit_code != 0 || !parsed.ok()) return false;
        for (const JsonMap& o : *parsed) {
          if (JsonStr(o, "name") == "b") {
            return JsonUint(o, "connections_open") == 1;
          }
        }
        return false;
      },
      Deadline()))
      << r.stdout_data << r.stderr_data;
  // Both nodes up, each with its address.
  r = Fanin({"nodes", "--server", servers});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  std::vector<std::string> lines =
      absl::StrSplit(r.stdout_data, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << r.stdout_data;
  EXPECT_THAT(lines[1], HasSubstr(absl::StrCat("a     up     ",
                                               nodes_[0]->grpc_address())));
  EXPECT_THAT(lines[2], HasSubstr(absl::StrCat("b     up     ",
                                               nodes_[1]->grpc_address())));

  // Asked at node a, the list names the owner b.
  r = Fanin({"list", "--server", servers});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  lines = absl::StrSplit(r.stdout_data, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << r.stdout_data;
  EXPECT_THAT(lines[0], HasSubstr("ID  NODE  LISTENER"));
  std::vector<std::string> row =
      absl::StrSplit(lines[1], ' ', absl::SkipEmpty());
  ASSERT_GE(row.size(), 3u);
  EXPECT_EQ(row[1], "b");
  r = Fanin({"list", "--server", servers, "--node", "a"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  lines = absl::StrSplit(r.stdout_data, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 1u) << "only the header: a has no connection\n"
                              << r.stdout_data;

  // Stats carry the cluster rows.
  r = Fanin({"stats", "--server", servers});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_THAT(r.stdout_data, HasSubstr("node                      a\n"));
  EXPECT_THAT(r.stdout_data, HasSubstr("cluster head seq"));
}

}  // namespace
}  // namespace fanin::testing
