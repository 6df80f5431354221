// The `fanin` binary against a scripted in-process gRPC server: the answers a
// real fanin_server gives only rarely (every error class, NOT_SERVING, a
// stalled call, gaps) and what the client sends (the bearer token).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "tests/client/json_lines.h"
#include "tests/testing/subprocess.h"

namespace fanin::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kFanin[] = "client/fanin";

class ScriptedFanIn final : public v1::FanIn::Service {
 public:
  void SetStatus(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    status_ = std::move(status);
  }
  void SetStall(bool stall) {
    absl::MutexLock lock(&mu_);
    stall_ = stall;
  }
  std::vector<std::string> authorizations() {
    absl::MutexLock lock(&mu_);
    return authorizations_;
  }

  grpc::Status GetStats(grpc::ServerContext* context,
                        const v1::GetStatsRequest*,
                        v1::GetStatsResponse* response) override {
    grpc::Status status = Begin(context);
    if (!status.ok()) return status;
    bool stall;
    {
      absl::MutexLock lock(&mu_);
      stall = stall_;
    }
    if (stall) {
      // Never answers: the client's deadline has to end the call.
      while (!context->IsCancelled()) {
        never_.WaitForNotificationWithTimeout(absl::Milliseconds(20));
      }
      return grpc::Status(grpc::StatusCode::CANCELLED, "client gave up");
    }
    response->set_poller("scripted");
    response->set_head_seq(7);
    return grpc::Status::OK;
  }

  grpc::Status Write(grpc::ServerContext* context, const v1::WriteRequest*,
                     v1::WriteResponse*) override {
    return Begin(context);
  }

  // Started, a gap, a heartbeat, one data event, then the end of the stream.
  grpc::Status Subscribe(
      grpc::ServerContext* context, const v1::SubscribeRequest*,
      grpc::ServerWriter<v1::SubscribeResponse>* writer) override {
    grpc::Status status = Begin(context);
    if (!status.ok()) return status;
    v1::SubscribeResponse m;
    m.mutable_started()->set_server_epoch("epoch-1");
    m.mutable_started()->set_head_seq(4);
    writer->Write(m);
    m.Clear();
    v1::Gap* gap = m.mutable_gap();
    gap->set_first_seq(5);
    gap->set_last_seq(7);
    gap->set_lost(3);
    gap->set_reason(v1::GAP_REASON_SUBSCRIBER_TOO_SLOW);
    writer->Write(m);
    m.Clear();
    m.mutable_heartbeat()->set_head_seq(8);
    m.mutable_heartbeat()->set_delivered(0);
    m.mutable_heartbeat()->set_lost(3);
    writer->Write(m);
    m.Clear();
    v1::Event* e = m.mutable_batch()->add_events();
    e->set_seq(8);
    e->set_connection_id(2);
    e->set_listener("l");
    e->mutable_data()->set_payload("\x1b]0;pwned\x07");
    e->mutable_data()->set_size(10);
    writer->Write(m);
    return grpc::Status::OK;
  }

 private:
  grpc::Status Begin(grpc::ServerContext* context) {
    absl::MutexLock lock(&mu_);
    auto it = context->client_metadata().find("authorization");
    authorizations_.push_back(
        it == context->client_metadata().end()
            ? "(none)"
            : std::string(it->second.data(), it->second.size()));
    return status_;
  }

  absl::Mutex mu_;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  bool stall_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> authorizations_ ABSL_GUARDED_BY(mu_);
  absl::Notification never_;
};

class CliFakeServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    address_ = absl::StrCat("127.0.0.1:", port);
  }

  void TearDown() override { server_->Shutdown(); }

  CommandResult Fanin(std::vector<std::string> args) {
    args.insert(args.begin(), kFanin);
    args.push_back(absl::StrCat("--server=", address_));
    auto result = RunCommand(args);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : CommandResult();
  }

  ScriptedFanIn service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

TEST_F(CliFakeServerTest, EachErrorClassHasItsExitCode) {
  struct Case {
    grpc::StatusCode code;
    int exit_code;
  };
  for (Case c : std::vector<Case>{
           {grpc::StatusCode::NOT_FOUND, 4},
           {grpc::StatusCode::INVALID_ARGUMENT, 5},
           {grpc::StatusCode::OUT_OF_RANGE, 5},
           {grpc::StatusCode::RESOURCE_EXHAUSTED, 6},
           {grpc::StatusCode::UNAUTHENTICATED, 8},
           {grpc::StatusCode::PERMISSION_DENIED, 8},
           {grpc::StatusCode::FAILED_PRECONDITION, 9},
           {grpc::StatusCode::INTERNAL, 11},
           {grpc::StatusCode::DATA_LOSS, 11},
       }) {
    service_.SetStatus(grpc::Status(c.code, "scripted failure"));
    CommandResult r = Fanin({"stats"});
    EXPECT_EQ(r.exit_code, c.exit_code) << c.code << ": " << r.stderr_data;
    EXPECT_THAT(r.stderr_data, HasSubstr("fanin: get stats: "));
    EXPECT_THAT(r.stderr_data, HasSubstr("scripted failure"));
    EXPECT_EQ(r.stdout_data, "");
  }
  service_.SetStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                  "outbound buffer full"));
  CommandResult r = Fanin({"write", "2", "x"});
  EXPECT_EQ(r.exit_code, 6) << r.stderr_data;
  EXPECT_THAT(r.stderr_data, HasSubstr("outbound buffer full"));
}

TEST_F(CliFakeServerTest, StalledCallEndsAtTheTimeoutWithExitSeven) {
  service_.SetStall(true);
  CommandResult r = Fanin({"stats", "--timeout", "300ms"});
  EXPECT_EQ(r.exit_code, 7) << r.stderr_data;
  EXPECT_THAT(r.stderr_data, HasSubstr("no answer from " + address_));
  EXPECT_THAT(r.stderr_data, HasSubstr("--timeout"));
}

TEST_F(CliFakeServerTest, BearerTokenIsSentOnlyWhenGiven) {
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/token");
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fputs("  s3cret\n", f);
  fclose(f);
  EXPECT_EQ(Fanin({"stats", "--token_file", path}).exit_code, 0);
  EXPECT_EQ(Fanin({"stats"}).exit_code, 0);
  EXPECT_EQ(Fanin({"watch", "--token_file", path, "-q"}).exit_code, 0);
  EXPECT_EQ(
      service_.authorizations(),
      (std::vector<std::string>{"Bearer s3cret", "(none)", "Bearer s3cret"}));
}

TEST_F(CliFakeServerTest, HealthNotServingExitsTwelve) {
  server_->GetHealthCheckService()->SetServingStatus(false);
  CommandResult r = Fanin({"health"});
  EXPECT_EQ(r.exit_code, 12) << r.stderr_data;
  EXPECT_EQ(r.stdout_data, "NOT_SERVING\n");
  EXPECT_THAT(r.stderr_data, HasSubstr("answers but is NOT_SERVING"));
  server_->GetHealthCheckService()->SetServingStatus(true);
  EXPECT_EQ(Fanin({"health"}).exit_code, 0);
}

TEST_F(CliFakeServerTest, ServerWithoutTheCallIsUnimplemented) {
  // A gRPC server that only has the health service.
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  auto bare = builder.BuildAndStart();
  ASSERT_NE(bare, nullptr);
  auto r = RunCommand(
      {kFanin, "stats", "--server", absl::StrCat("127.0.0.1:", port)});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 10) << r->stderr_data;
  EXPECT_THAT(r->stderr_data, HasSubstr("does not implement"));
  bare->Shutdown();
}

TEST_F(CliFakeServerTest, WatchShowsGapsAndHeartbeatsPerMode) {
  // Text: events on stdout (escaped), gap and heartbeat on stderr, and a
  // hint when the server ends the stream.
  CommandResult r = Fanin({"watch"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_THAT(r.stdout_data,
              HasSubstr("DATA        10 B \"\\x1b]0;pwned\\x07\""));
  EXPECT_THAT(r.stderr_data,
              HasSubstr("fanin: gap: 3 events lost (seq 5..7): this "
                        "subscriber fell behind"));
  EXPECT_THAT(r.stderr_data,
              HasSubstr("fanin: heartbeat: head seq 8, 0 delivered, 3 lost"));
  EXPECT_THAT(r.stderr_data, HasSubstr("use --follow"));

  // JSON: all four as objects on stdout, in order.
  r = Fanin({"watch", "-o", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  std::vector<std::string> types;
  for (const auto& o : *parsed) types.push_back(JsonType(o));
  EXPECT_EQ(types,
            (std::vector<std::string>{"started", "gap", "heartbeat", "event"}));
  EXPECT_EQ(JsonStr((*parsed)[1], "reason"), "GAP_REASON_SUBSCRIBER_TOO_SLOW");
  EXPECT_EQ(JsonUint((*parsed)[1], "lost"), 3u);
  EXPECT_EQ(JsonUint((*parsed)[2], "lost"), 3u);

  // Raw: only the payload bytes.
  r = Fanin({"watch", "-o", "raw", "-q"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_EQ(r.stdout_data, "\x1b]0;pwned\x07");
}

TEST_F(CliFakeServerTest, WatchRejectedByTheServerIsNotRetried) {
  service_.SetStatus(
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "unknown kind"));
  CommandResult r = Fanin({"watch", "--follow", "--timeout", "20s"});
  EXPECT_EQ(r.exit_code, 5) << r.stderr_data;
  EXPECT_THAT(r.stderr_data,
              HasSubstr("watch: the server rejected the request: unknown "
                        "kind"));
}

}  // namespace
}  // namespace fanin::testing
