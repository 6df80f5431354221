// The `fanin` binary against scripted cluster nodes: what a cluster sends
// that a standalone server never does (nodes on events and connections,
// NodeChange events, the stats' cluster rows, several nodes in ListNodes),
// and what the client sends (node filters, its start, and the resume with
// the shared epoch when it moves from one node to the next).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/client/json_lines.h"
#include "tests/testing/subprocess.h"

namespace fanin::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kFanin[] = "client/fanin";
constexpr char kEpoch[] = "cluster-epoch";

v1::Event DataOn(const std::string& node, uint64_t seq, uint64_t id) {
  v1::Event e;
  e.set_seq(seq);
  e.set_time_unix_nano(1795765373123456789u);
  e.set_connection_id(id);
  e.set_listener("default");
  e.set_node(node);
  e.mutable_data()->set_payload("hi");
  e.mutable_data()->set_size(2);
  return e;
}

// One scripted node: Subscribe sends Started (the cluster's epoch), the
// scripted events, then either ends the stream with `end` or holds it open
// until the client cancels.
class ScriptedNode final : public v1::FanIn::Service {
 public:
  struct Script {
    std::string name;
    std::vector<v1::Event> events;
    bool hold = true;
    grpc::Status end;
  };

  explicit ScriptedNode(Script script) : script_(std::move(script)) {}

  std::vector<v1::SubscribeRequest> subscribes() {
    absl::MutexLock lock(&mu_);
    return subscribes_;
  }
  std::vector<v1::ListConnectionsRequest> lists() {
    absl::MutexLock lock(&mu_);
    return lists_;
  }

  grpc::Status Subscribe(
      grpc::ServerContext* context, const v1::SubscribeRequest* request,
      grpc::ServerWriter<v1::SubscribeResponse>* writer) override {
    {
      absl::MutexLock lock(&mu_);
      subscribes_.push_back(*request);
    }
    v1::SubscribeResponse m;
    m.mutable_started()->set_server_epoch(kEpoch);
    m.mutable_started()->set_head_seq(100);
    m.mutable_started()->set_node(script_.name);
    writer->Write(m);
    if (!script_.events.empty()) {
      m.Clear();
      for (const v1::Event& e : script_.events) {
        *m.mutable_batch()->add_events() = e;
      }
      writer->Write(m);
    }
    if (!script_.hold) return script_.end;
    while (!context->IsCancelled()) {
      never_.WaitForNotificationWithTimeout(absl::Milliseconds(20));
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  }

  grpc::Status ListConnections(grpc::ServerContext*,
                               const v1::ListConnectionsRequest* request,
                               v1::ListConnectionsResponse* response) override {
    {
      absl::MutexLock lock(&mu_);
      lists_.push_back(*request);
    }
    uint64_t id = 1;
    for (const char* node : {"node-a", "node-b"}) {
      v1::Connection* c = response->add_connections();
      c->set_connection_id(id++);
      c->set_listener("default");
      c->set_remote_address("10.1.0.9:4000");
      c->set_node(node);
    }
    return grpc::Status::OK;
  }

  grpc::Status GetStats(grpc::ServerContext*, const v1::GetStatsRequest*,
                        v1::GetStatsResponse* response) override {
    response->set_poller("epoll");
    response->set_head_seq(40);
    response->set_oldest_seq(1);
    response->set_node(script_.name);
    response->set_cluster_head_seq(900);
    response->set_cluster_oldest_seq(12);
    return grpc::Status::OK;
  }

  grpc::Status ListNodes(grpc::ServerContext*, const v1::ListNodesRequest*,
                         v1::ListNodesResponse* response) override {
    const int64_t now = absl::GetCurrentTimeNanos();
    v1::NodeInfo* a = response->add_nodes();
    a->set_name("node-a");
    a->set_grpc_address("10.0.0.1:50051");
    a->set_state(v1::NODE_STATE_UP);
    a->set_connections_open(1200);
    a->set_last_seen_unix_nano(now);
    a->set_incarnation(3);
    v1::NodeInfo* b = response->add_nodes();
    b->set_name("node-b");
    b->set_grpc_address("10.0.0.2:50051");
    b->set_state(v1::NODE_STATE_LOST);
    b->set_last_seen_unix_nano(now - absl::ToInt64Nanoseconds(absl::Hours(2)));
    b->set_incarnation(12);
    return grpc::Status::OK;
  }

 private:
  const Script script_;
  absl::Mutex mu_;
  std::vector<v1::SubscribeRequest> subscribes_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ListConnectionsRequest> lists_ ABSL_GUARDED_BY(mu_);
  absl::Notification never_;
};

// A node served on a loopback port of its own.
struct RunningNode {
  explicit RunningNode(ScriptedNode::Script script)
      : service(std::move(script)) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    address = absl::StrCat("127.0.0.1:", port);
  }
  ~RunningNode() { server->Shutdown(absl::ToChronoTime(absl::Now())); }

  ScriptedNode service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

CommandResult Fanin(std::vector<std::string> args) {
  args.insert(args.begin(), kFanin);
  auto result = RunCommand(args);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *result : CommandResult();
}

TEST(CliClusterTest, FollowMovesToTheNextNodeAndResumesInTheSharedEpoch) {
  // node-a sends seq 5 and 6, then fails; node-b continues with 7.
  RunningNode a({.name = "node-a",
                 .events = {DataOn("node-a", 5, 1), DataOn("node-a", 6, 1)},
                 .hold = false,
                 .end = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                     "node-a is going away")});
  RunningNode b({.name = "node-b", .events = {DataOn("node-b", 7, 2)}});
  CommandResult r =
      Fanin({"watch", "--server", absl::StrCat(a.address, ",", b.address),
             "--follow", "--last", "2", "-n", "3", "--timeout", "60s"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  std::vector<std::string> lines =
      absl::StrSplit(r.stdout_data, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << r.stdout_data;
  EXPECT_THAT(lines[0],
              HasSubstr("seq=5         conn=1      [node-a] default"));
  EXPECT_THAT(lines[1], HasSubstr("seq=6"));
  EXPECT_THAT(lines[2],
              HasSubstr("seq=7         conn=2      [node-b] default"));

  // node-a was asked for the last 2; node-b to resume after 6 in the epoch
  // both serve, so nothing is repeated or lost.
  ASSERT_EQ(a.service.subscribes().size(), 1u);
  const v1::SubscribeRequest first = a.service.subscribes()[0];
  EXPECT_EQ(first.start_back(), 2u);
  EXPECT_EQ(first.resume_after_seq(), 0u);
  EXPECT_EQ(first.resume_epoch(), "");
  ASSERT_EQ(b.service.subscribes().size(), 1u);
  const v1::SubscribeRequest next = b.service.subscribes()[0];
  EXPECT_EQ(next.resume_after_seq(), 6u);
  EXPECT_EQ(next.resume_epoch(), kEpoch);
  EXPECT_EQ(next.start_back(), 0u);
  EXPECT_EQ(next.start_time_unix_nano(), 0u);
  EXPECT_THAT(r.stderr_data,
              HasSubstr(absl::StrCat("stream from ", a.address,
                                     " ended (UNAVAILABLE: node-a is going "
                                     "away); trying ",
                                     b.address)));
  EXPECT_THAT(r.stderr_data,
              HasSubstr(absl::StrCat("reconnected to ", b.address, " (epoch ",
                                     kEpoch, "), resuming after seq 6")));
  EXPECT_THAT(r.stderr_data, Not(HasSubstr("restarted")));
  EXPECT_THAT(r.stderr_data, Not(HasSubstr("serves epoch")));
}

TEST(CliClusterTest, StartIsAskedAgainUntilSomethingWasPrinted) {
  // node-a fails before sending any event: node-b gets the command's own
  // start again, not a resume.
  RunningNode a({.name = "node-a",
                 .hold = false,
                 .end = grpc::Status(grpc::StatusCode::UNAVAILABLE, "gone")});
  RunningNode b({.name = "node-b", .events = {DataOn("node-b", 9, 2)}});
  const absl::Time before = absl::Now();
  CommandResult r =
      Fanin({"watch", "--server", absl::StrCat(a.address, ",", b.address),
             "--follow", "--since", "5m", "-n", "1", "--timeout", "60s", "-q"});
  const absl::Time after = absl::Now();
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  ASSERT_EQ(a.service.subscribes().size(), 1u);
  ASSERT_EQ(b.service.subscribes().size(), 1u);
  for (const v1::SubscribeRequest& request :
       {a.service.subscribes()[0], b.service.subscribes()[0]}) {
    // --since 5m: five minutes before the command ran, by its clock.
    const absl::Time t = absl::FromUnixNanos(
        static_cast<int64_t>(request.start_time_unix_nano()));
    EXPECT_GE(t, before - absl::Minutes(5));
    EXPECT_LE(t, after - absl::Minutes(5));
    EXPECT_EQ(request.resume_after_seq(), 0u);
    EXPECT_EQ(request.resume_epoch(), "");
  }
  EXPECT_EQ(a.service.subscribes()[0].start_time_unix_nano(),
            b.service.subscribes()[0].start_time_unix_nano());
  EXPECT_THAT(r.stderr_data, HasSubstr("nothing was printed yet"));
  EXPECT_THAT(r.stdout_data, HasSubstr("seq=9"));
}

TEST(CliClusterTest, WatchSendsNodeFiltersAndShowsNodeChanges) {
  v1::Event change;
  change.set_seq(8);
  change.set_time_unix_nano(1795765373123456789u);
  change.set_node("node-b");
  change.mutable_node_change()->set_state(v1::NODE_STATE_LOST);
  change.mutable_node_change()->set_incarnation(12);
  change.mutable_node_change()->set_detail("no heartbeat for 10s");
  RunningNode a({.name = "node-a", .events = {change}});
  CommandResult r = Fanin({"watch", "--server", a.address, "--node", "node-a",
                           "--node", "node-b,node-c", "-n", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_THAT(r.stdout_data,
              HasSubstr("seq=8         [node-b]               NODE        "
                        "lost incarnation=12 \"no heartbeat for 10s\""));
  ASSERT_EQ(a.service.subscribes().size(), 1u);
  const v1::SubscribeRequest request = a.service.subscribes()[0];
  const auto& nodes = request.nodes();
  EXPECT_THAT(std::vector<std::string>(nodes.begin(), nodes.end()),
              ElementsAre("node-a", "node-b", "node-c"));

  // JSON: the node fields as the API has them.
  r = Fanin({"watch", "--server", a.address, "-o", "json", "-n", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ(JsonStr((*parsed)[0], "node"), "node-a") << "Started.node";
  EXPECT_EQ(JsonStr((*parsed)[1], "node"), "node-b");
  EXPECT_EQ(JsonStr((*parsed)[1], "node_change.state"), "NODE_STATE_LOST");
}

TEST(CliClusterTest, ListShowsTheNodeColumnAndSendsTheNodeFilter) {
  RunningNode a({.name = "node-a"});
  CommandResult r = Fanin({"list", "--server", a.address, "--node", "node-a"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  std::vector<std::string> lines =
      absl::StrSplit(r.stdout_data, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << r.stdout_data;
  EXPECT_THAT(lines[0], HasSubstr("ID  NODE    LISTENER  REMOTE"));
  EXPECT_THAT(lines[1], HasSubstr(" 1  node-a  default   10.1.0.9:4000"));
  EXPECT_THAT(lines[2], HasSubstr(" 2  node-b  default   10.1.0.9:4000"));
  ASSERT_EQ(a.service.lists().size(), 1u);
  EXPECT_EQ(a.service.lists()[0].node(), "node-a");

  r = Fanin({"list", "--server", a.address, "-o", "json"});
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ(JsonStr((*parsed)[1], "node"), "node-b");
  EXPECT_EQ(a.service.lists()[1].node(), "");
}

TEST(CliClusterTest, StatsShowsTheClusterRows) {
  RunningNode a({.name = "node-a"});
  CommandResult r = Fanin({"stats", "--server", a.address});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_THAT(r.stdout_data, HasSubstr("head seq                  40\n"));
  EXPECT_THAT(r.stdout_data, HasSubstr("node                      node-a\n"));
  EXPECT_THAT(r.stdout_data, HasSubstr("cluster head seq          900\n"));
  EXPECT_THAT(r.stdout_data, HasSubstr("cluster oldest seq        12\n"));
}

TEST(CliClusterTest, NodesTableAndJsonLines) {
  RunningNode a({.name = "node-a"});
  CommandResult r = Fanin({"nodes", "--server", a.address});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  std::vector<std::string> lines =
      absl::StrSplit(r.stdout_data, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << r.stdout_data;
  EXPECT_EQ(lines[0],
            "NAME    STATE  GRPC ADDRESS    CONNECTIONS  LAST SEEN  "
            "INCARNATION");
  EXPECT_THAT(
      lines[1],
      ::testing::MatchesRegex(
          "node-a  up     10.0.0.1:50051         1200  [0-9]+ms ago +3"));
  EXPECT_THAT(lines[2],
              ::testing::MatchesRegex(
                  "node-b  lost   10.0.0.2:50051            0  2h0[0-9]m ago +"
                  "12"));

  r = Fanin({"nodes", "--server", a.address, "-o", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ(JsonStr((*parsed)[0], "name"), "node-a");
  EXPECT_EQ(JsonStr((*parsed)[0], "state"), "NODE_STATE_UP");
  EXPECT_EQ(JsonUint((*parsed)[0], "connections_open"), 1200u);
  EXPECT_EQ(JsonStr((*parsed)[1], "incarnation"), "12");
  EXPECT_EQ((*parsed)[1].size(),
            static_cast<size_t>(v1::NodeInfo::descriptor()->field_count()))
      << "the fields of fanin.v1.NodeInfo";
}

}  // namespace
}  // namespace fanin::testing
