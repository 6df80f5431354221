// Listener on every backend: accepting TCP/unix/IPv6, bounded accepts per
// wake-up, pause/resume, and surviving EMFILE without spinning.
#include "server/net/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/reactor/event_loop.h"
#include "tests/reactor/test_util.h"
#include "tests/testing/pollers.h"

namespace fanin::net {
namespace {

using ::fanin::reactor::EventLoop;
using ::fanin::reactor::PollerKind;
using ::fanin::testing::AllPollerKinds;
using ::fanin::testing::LoopThread;
using ::fanin::testing::PollerTestName;
using ::fanin::testing::ProcessCpuTime;
using ::fanin::testing::RunLoopUntil;
using ::fanin::testing::WaitFor;

// A unix socket path short enough for sun_path (Bazel's TEST_TMPDIR may not
// be), unique per process.
std::string TempPath(absl::string_view name) {
  const char* dir = getenv("TEST_TMPDIR");
  std::string path = absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    path = absl::StrCat("/tmp/fanin-", name, ".", getpid());
  }
  return path;
}

// A blocking client connected to "host:port" or "unix:/path"; -1 on error.
int Connect(const std::string& address) {
  sockaddr_storage ss{};
  socklen_t len;
  if (address.rfind("unix:", 0) == 0) {
    auto* un = reinterpret_cast<sockaddr_un*>(&ss);
    un->sun_family = AF_UNIX;
    std::string path = address.substr(5);
    memcpy(un->sun_path, path.data(), path.size());
    len = offsetof(sockaddr_un, sun_path) + path.size() + 1;
  } else if (address[0] == '[') {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    size_t close = address.find(']');
    in6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, address.substr(1, close - 1).c_str(), &in6->sin6_addr);
    int port = 0;
    (void)absl::SimpleAtoi(address.substr(close + 2), &port);
    in6->sin6_port = htons(port);
    len = sizeof(*in6);
  } else {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    size_t colon = address.rfind(':');
    in->sin_family = AF_INET;
    inet_pton(AF_INET, address.substr(0, colon).c_str(), &in->sin_addr);
    int port = 0;
    (void)absl::SimpleAtoi(address.substr(colon + 1), &port);
    in->sin_port = htons(port);
    len = sizeof(*in);
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// True once the server side closed this (non-blocking) client: EOF or RST.
bool ClosedByServer(int fd) {
  char c;
  ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
  return n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE));
}

class ListenerTest : public ::testing::TestWithParam<PollerKind> {
 protected:
  void SetUp() override {
    auto loop = EventLoop::Create(GetParam());
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
  }
  void TearDown() override {
    for (int fd : fds_) close(fd);
  }
  std::unique_ptr<Listener> BindOrDie(const std::string& spec) {
    auto parsed = ParseListenSpec(spec);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    if (!parsed.ok()) return nullptr;
    auto listener = Listener::Bind(*parsed);
    EXPECT_TRUE(listener.ok()) << listener.status();
    return listener.ok() ? *std::move(listener) : nullptr;
  }

  std::unique_ptr<EventLoop> loop_;
  std::vector<int> fds_;  // closed at the end
};

TEST_P(ListenerTest, AcceptsTcpWithTheDocumentedSocketOptions) {
  auto listener = BindOrDie("raw=127.0.0.1:0");
  ASSERT_NE(listener, nullptr);
  EXPECT_EQ(listener->name(), "raw");
  EXPECT_EQ(listener->bound_address().rfind("127.0.0.1:", 0), 0u);
  EXPECT_NE(listener->bound_address(), "127.0.0.1:0");
  std::vector<int> accepted;
  ASSERT_TRUE(listener
                  ->Start(loop_.get(),
                          [&](int fd, Peer) {
                            accepted.push_back(fd);
                            fds_.push_back(fd);
                          })
                  .ok());
  int client = Connect(listener->bound_address());
  ASSERT_GE(client, 0);
  fds_.push_back(client);
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return !accepted.empty(); }));
  const int fd = accepted[0];
  EXPECT_EQ(PeerAddressOf(fd), LocalAddressOf(client));
  EXPECT_EQ(LocalAddressOf(fd), listener->bound_address());
  EXPECT_TRUE(fcntl(fd, F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  int nodelay = 0;
  socklen_t len = sizeof(nodelay);
  ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
  EXPECT_NE(nodelay, 0);
  EXPECT_EQ(listener->accepted(), 1u);
  EXPECT_EQ(listener->accept_errors(), 0u);
  listener->Close();
  listener->Close();  // idempotent
  EXPECT_EQ(Connect(listener->bound_address()), -1);
  EXPECT_TRUE(absl::IsFailedPrecondition(
      listener->Start(loop_.get(), [](int, Peer) {})));
}

TEST_P(ListenerTest, StartTwiceAndBindOnABusyPortFail) {
  auto first = BindOrDie("127.0.0.1:0");
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(first->Start(loop_.get(), [](int fd, Peer) { close(fd); }).ok());
  EXPECT_TRUE(
      absl::IsFailedPrecondition(first->Start(loop_.get(), [](int, Peer) {})));
  auto second = Listener::Bind(*ParseListenSpec(first->bound_address()));
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("bind"), absl::string_view::npos)
      << second.status();
  EXPECT_NE(second.status().message().find(first->bound_address()),
            absl::string_view::npos)
      << second.status();
  first->Close();
}

TEST_P(ListenerTest, UnixListenerReplacesAStaleSocketAndCleansUp) {
  const std::string path = TempPath("stale");
  {  // A socket file left behind by a dead server.
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    ASSERT_LT(path.size(), sizeof(un.sun_path));
    memcpy(un.sun_path, path.data(), path.size());
    ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&un), sizeof(un)), 0);
    close(s);
  }
  auto listener = BindOrDie(absl::StrCat("u=unix:", path));
  ASSERT_NE(listener, nullptr);
  EXPECT_EQ(listener->bound_address(), absl::StrCat("unix:", path));
  // A second server on a live socket must not steal it.
  auto thief = Listener::Bind(*ParseListenSpec(absl::StrCat("unix:", path)));
  EXPECT_TRUE(absl::IsAlreadyExists(thief.status())) << thief.status();

  std::vector<int> accepted;
  ASSERT_TRUE(listener
                  ->Start(loop_.get(),
                          [&](int fd, Peer) {
                            accepted.push_back(fd);
                            fds_.push_back(fd);
                          })
                  .ok());
  int client = Connect(listener->bound_address());
  ASSERT_GE(client, 0);
  fds_.push_back(client);
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return !accepted.empty(); }));
  EXPECT_EQ(LocalAddressOf(accepted[0]), path);
  listener->Close();
  struct stat st;
  EXPECT_NE(lstat(path.c_str(), &st), 0) << "socket file left behind";
}

TEST_P(ListenerTest, RefusesToReplaceANonSocketFile) {
  const std::string path = TempPath("regular");
  int f = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(f, 0);
  close(f);
  auto listener = Listener::Bind(*ParseListenSpec(absl::StrCat("unix:", path)));
  EXPECT_FALSE(listener.ok());
  struct stat st;
  EXPECT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  unlink(path.c_str());
}

TEST_P(ListenerTest, AcceptsIpv6Loopback) {
  auto listener = Listener::Bind(*ParseListenSpec("[::1]:0"));
  if (!listener.ok()) {
    GTEST_SKIP() << "no IPv6 loopback here: " << listener.status();
  }
  EXPECT_EQ((*listener)->bound_address().rfind("[::1]:", 0), 0u);
  int accepted = -1;
  ASSERT_TRUE((*listener)
                  ->Start(loop_.get(), [&](int fd, Peer) { accepted = fd; })
                  .ok());
  int client = Connect((*listener)->bound_address());
  ASSERT_GE(client, 0);
  fds_.push_back(client);
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return accepted >= 0; }));
  fds_.push_back(accepted);
  EXPECT_EQ(PeerAddressOf(accepted), LocalAddressOf(client));
}

// 200 clients already queued: at most kMaxAcceptsPerWakeup per iteration, and
// all of them eventually (edge mode: through Redispatch, no new edge needed).
TEST_P(ListenerTest, AcceptsABoundedNumberPerWakeup) {
  auto listener = BindOrDie("127.0.0.1:0");
  ASSERT_NE(listener, nullptr);
  constexpr int kClients = 200;
  for (int i = 0; i < kClients; ++i) {
    int c = Connect(listener->bound_address());
    ASSERT_GE(c, 0);
    fds_.push_back(c);
  }
  std::map<uint64_t, int> per_iteration;
  int accepted = 0;
  ASSERT_TRUE(listener
                  ->Start(loop_.get(),
                          [&](int fd, Peer) {
                            ++per_iteration[loop_->iterations()];
                            ++accepted;
                            fds_.push_back(fd);
                          })
                  .ok());
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return accepted == kClients; }));
  EXPECT_GE(per_iteration.size(), 4u);
  for (auto& [iteration, n] : per_iteration) {
    EXPECT_LE(n, Listener::kMaxAcceptsPerWakeup) << "iteration " << iteration;
  }
}

TEST_P(ListenerTest, PauseLeavesClientsInTheBacklogUntilResume) {
  auto listener = BindOrDie("127.0.0.1:0");
  ASSERT_NE(listener, nullptr);
  int accepted = 0;
  ASSERT_TRUE(listener
                  ->Start(loop_.get(),
                          [&](int fd, Peer) {
                            ++accepted;
                            fds_.push_back(fd);
                          })
                  .ok());
  listener->Pause();
  int client = Connect(listener->bound_address());
  ASSERT_GE(client, 0);
  fds_.push_back(client);
  bool window_over = false;
  loop_->RunAfter(absl::Milliseconds(50), [&] { window_over = true; });
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return window_over; }));
  EXPECT_EQ(accepted, 0);
  listener->Resume();
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return accepted == 1; }));
}

// Provokes EMFILE cheaply by lowering RLIMIT_NOFILE: the listener must shed
// the connections it cannot take (clients see them closed), count them, and
// then sit idle instead of spinning on the still-readable listener.
TEST_P(ListenerTest, SurvivesEmfileWithoutSpinning) {
  auto listener = BindOrDie("127.0.0.1:0");
  ASSERT_NE(listener, nullptr);
  std::vector<int> accepted;  // loop thread while it runs
  ASSERT_TRUE(
      listener
          ->Start(loop_.get(), [&](int fd, Peer) { accepted.push_back(fd); })
          .ok());
  constexpr int kClients = 40;
  std::vector<int> clients;
  for (int i = 0; i < kClients; ++i) {
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(c, 0);
    clients.push_back(c);
    fds_.push_back(c);
  }
  LoopThread thread(loop_.get());

  rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old_limit), 0);
  const int lowest_free = dup(0);
  ASSERT_GE(lowest_free, 0);
  close(lowest_free);
  rlimit low = old_limit;
  low.rlim_cur = lowest_free + 5;  // room for at most 5 accepted sockets
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(listener->bound_address().substr(10), &port));
  addr.sin_port = htons(port);
  for (int c : clients) {
    ASSERT_EQ(connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
        << strerror(errno);
  }
  auto settled = [&] {
    int closed = 0;
    for (int c : clients) closed += ClosedByServer(c) ? 1 : 0;
    size_t n = 0;
    thread.RunSync([&] { n = accepted.size(); });
    return closed + static_cast<int>(n) == kClients;
  };
  const bool ok = WaitFor(settled, absl::Seconds(10));

  // Now measure: the listener's backlog is empty, descriptors are still
  // exhausted. A spinning loop would burn a whole core here.
  const uint64_t iterations = loop_->iterations();
  const absl::Duration cpu = ProcessCpuTime();
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Duration cpu_used = ProcessCpuTime() - cpu;
  const uint64_t iterations_used = loop_->iterations() - iterations;
  // More clients while still out of descriptors are shed too.
  int late = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old_limit), 0);
  EXPECT_LT(cpu_used, absl::Milliseconds(60));
  EXPECT_LE(iterations_used, 5u);
  ASSERT_TRUE(ok) << "clients neither accepted nor closed";
  size_t n_accepted = 0;
  thread.RunSync([&] { n_accepted = accepted.size(); });
  EXPECT_GE(n_accepted, 1u);
  EXPECT_LE(n_accepted, 5u);
  EXPECT_EQ(listener->accept_errors(), kClients - n_accepted);
  EXPECT_EQ(listener->accepted(), n_accepted);
  (void)late;
  if (late >= 0) close(late);
  thread.RunSync([&] {
    for (int fd : accepted) close(fd);
    listener->Close();
  });
}

INSTANTIATE_TEST_SUITE_P(AllBackends, ListenerTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::net
