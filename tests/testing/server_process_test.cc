// The test helpers on their own, without a fanin server: /bin/sh commands, a
// shell-script stand-in for the server, and a loopback listener made here.
#include "tests/testing/server_process.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kFakeServer[] = "tests/testing/fake_server.sh";

absl::Time Deadline() { return absl::Now() + absl::Seconds(10); }

TEST(RunCommand, CapturesStdoutStderrAndExitCode) {
  auto result =
      RunCommand({"/bin/sh", "-c", "printf out; printf err >&2; exit 7"});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 7);
  EXPECT_EQ(result->term_signal, 0);
  EXPECT_EQ(result->stdout_data, "out");
  EXPECT_EQ(result->stderr_data, "err");
}

TEST(RunCommand, PassesBinaryStdinLargerThanAPipeBuffer) {
  std::string input;
  for (int i = 0; i < 1 << 20; ++i) input.push_back(static_cast<char>(i * 7));
  auto result = RunCommand({"cat"}, input);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0);
  ASSERT_EQ(result->stdout_data.size(), input.size());
  EXPECT_TRUE(result->stdout_data == input);
}

TEST(RunCommand, ReportsTheSignalThatEndedTheChild) {
  auto result = RunCommand({"/bin/sh", "-c", "kill -TERM $$"});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->term_signal, SIGTERM);
  EXPECT_EQ(result->exit_code, 128 + SIGTERM);
}

TEST(RunCommand, KillsTheChildAtTheTimeout) {
  absl::Time start = absl::Now();
  auto result = RunCommand({"/bin/sh", "-c", "echo started; exec sleep 30"}, "",
                           {.timeout = absl::Milliseconds(300)});
  EXPECT_TRUE(absl::IsDeadlineExceeded(result.status())) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("started"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(RunCommand, SetsAndUnsetsEnvironment) {
  setenv("FANIN_HELPER_TEST_UNSET", "present", 1);
  RunOptions options;
  options.process.env = {{"FANIN_HELPER_TEST", "a b=c"}};
  options.process.unset_env = {"FANIN_HELPER_TEST_UNSET"};
  auto result = RunCommand({"/bin/sh", "-c",
                            "printf '%s|%s' \"$FANIN_HELPER_TEST\" "
                            "\"${FANIN_HELPER_TEST_UNSET-unset}\""},
                           "", options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->stdout_data, "a b=c|unset");
}

TEST(RunCommand, FailsForAMissingBinary) {
  auto result = RunCommand({"/nonexistent/fanin-helper-test"});
  EXPECT_FALSE(result.ok());
}

TEST(Subprocess, WaitsForOutputThenSignals) {
  auto child =
      Subprocess::Start({"/bin/sh", "-c",
                         "trap 'echo bye; exit 5' INT; echo ready; "
                         "while :; do read line || exit 9; echo \"got $line\"; "
                         "done"});
  ASSERT_TRUE(child.ok()) << child.status();
  Subprocess& p = **child;
  ASSERT_TRUE(p.WaitForOutput(
      [](absl::string_view out, absl::string_view) { return out == "ready\n"; },
      Deadline()))
      << p.stdout_data();
  p.QueueStdin("one\n", false);
  ASSERT_TRUE(p.FlushStdin(Deadline()).ok());
  ASSERT_TRUE(p.WaitForOutput(
      [](absl::string_view out, absl::string_view) {
        return absl::StrContains(out, "got one\n");
      },
      Deadline()))
      << p.stdout_data();
  ASSERT_TRUE(p.Signal(SIGINT).ok());
  auto result = p.Wait(Deadline());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 5);
  EXPECT_EQ(result->stdout_data, "ready\ngot one\nbye\n");
}

TEST(Subprocess, WaitGivesUpAtTheDeadlineAndTheDestructorKills) {
  auto child = Subprocess::Start({"sleep", "30"});
  ASSERT_TRUE(child.ok()) << child.status();
  auto result = (*child)->Wait(absl::Now() + absl::Milliseconds(50));
  EXPECT_TRUE(absl::IsDeadlineExceeded(result.status()));
  pid_t pid = (*child)->pid();
  child->reset();
  EXPECT_NE(kill(pid, 0), 0) << "child " << pid << " outlived its Subprocess";
}

TEST(WaitFor, ReturnsTrueOnceThePredicateHolds) {
  int calls = 0;
  EXPECT_TRUE(WaitFor([&] { return ++calls == 5; }, Deadline()));
  EXPECT_EQ(calls, 5);
}

TEST(WaitFor, ReturnsFalseAtTheDeadline) {
  absl::Time start = absl::Now();
  EXPECT_FALSE(
      WaitFor([] { return false; }, absl::Now() + absl::Milliseconds(30)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(30));
}

TEST(ParseReadyFile, ReadsGrpcAndListeners) {
  auto info = ParseReadyFile(
      "grpc 127.0.0.1:43121\nlisten default 127.0.0.1:40999\n"
      "listen other [::1]:40001\n");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->grpc_address, "127.0.0.1:43121");
  EXPECT_EQ(info->listeners.at("default"), "127.0.0.1:40999");
  EXPECT_EQ(info->listeners.at("other"), "[::1]:40001");
}

TEST(ParseReadyFile, RejectsMalformedText) {
  EXPECT_FALSE(ParseReadyFile("listen default 127.0.0.1:1\n").ok());
  EXPECT_FALSE(ParseReadyFile("grpc 127.0.0.1:1\nbogus\n").ok());
  EXPECT_FALSE(ParseReadyFile("").ok());
}

TEST(ServerProcess, StartsReadsTheReadyFileAndStopsWithSigterm) {
  auto server = ServerProcess::Start(
      {.binary = kFakeServer,
       .flags = {"--grpc_address=127.0.0.1:0", "--listen=127.0.0.1:0",
                 "--listen=other=127.0.0.1:0"}});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  EXPECT_THAT(s.grpc_address(), StartsWith("127.0.0.1:"));
  EXPECT_NE(s.grpc_address(), "127.0.0.1:0");
  ASSERT_TRUE(s.listen_address("default").ok());
  ASSERT_TRUE(s.listen_address("other").ok());
  EXPECT_TRUE(absl::IsNotFound(s.listen_address("missing").status()));
  EXPECT_TRUE(s.running());
  auto code = s.Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  EXPECT_FALSE(s.running());
}

TEST(ServerProcess, RestartKeepsTheBoundPorts) {
  auto server = ServerProcess::Start(
      {.binary = kFakeServer,
       .flags = {"--grpc_address=127.0.0.1:0", "--listen=raw=127.0.0.1:0"}});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  std::string grpc = s.grpc_address();
  std::string raw = *s.listen_address("raw");
  pid_t first = s.pid();
  ASSERT_TRUE(s.Restart().ok());
  EXPECT_NE(s.pid(), first);
  EXPECT_EQ(s.grpc_address(), grpc);
  EXPECT_EQ(*s.listen_address("raw"), raw);
}

TEST(ServerProcess, ReportsAServerThatExitsBeforeReady) {
  auto server =
      ServerProcess::Start({.binary = kFakeServer, .flags = {"--fake_exit=3"}});
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()),
              HasSubstr("exited with code 3"));
}

TEST(TcpClient, SendsReceivesAndSeesEof) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)),
            0);
  ASSERT_EQ(listen(listener, 4), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);

  auto client = ConnectTcp(absl::StrCat("127.0.0.1:", ntohs(addr.sin_port)));
  ASSERT_TRUE(client.ok()) << client.status();
  TcpClient server_side(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  close(listener);
  ASSERT_GE(server_side.fd(), 0);

  ASSERT_TRUE(client->SendAll(std::string("a\0b", 3)).ok());
  auto got = server_side.RecvExactly(3);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, std::string("a\0b", 3));

  EXPECT_TRUE(absl::IsDeadlineExceeded(
      client->Recv(10, absl::Now() + absl::Milliseconds(20)).status()));

  ASSERT_TRUE(server_side.SendAll("xyz").ok());
  ASSERT_TRUE(server_side.ShutdownWrite().ok());
  auto rest = client->RecvUntilEof();
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(*rest, "xyz");

  server_side.Close();
  EXPECT_TRUE(client->WaitForPeerClose());
  auto short_read = ConnectTcp(absl::StrCat("127.0.0.1:", ntohs(addr.sin_port)),
                               absl::Now() + absl::Seconds(2));
  EXPECT_FALSE(short_read.ok()) << "the listener is closed";
}

}  // namespace
}  // namespace fanin::testing
