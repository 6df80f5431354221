// The floor: a bare single-threaded level-triggered epoll reader with no gRPC.
// It accepts, reads (one 64 KiB read per readiness report), reassembles and
// parses the load generator's messages exactly as the subscriber does, and
// prints one JSON line when every expected connection has closed (or at
// --timeout / SIGTERM).
//
//   floor --listen=127.0.0.1:0 --ready_file=/tmp/f.ready
//   --expect_connections=1000
//
// The ready file gets "listen default 127.0.0.1:PORT", as fanin_server writes.
// When --expect_connections connections have been accepted it prints
// {"event":"all_accepted",...} at once (scale runs read the RSS then).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "tests/bench/e2e/frame.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "IPv4 HOST:PORT to listen on");
ABSL_FLAG(std::string, ready_file, "", "written once listening");
ABSL_FLAG(int, message_bytes, 64, "bytes per message");
ABSL_FLAG(int, expect_connections, 0,
          "stop when this many connections have come and gone");
ABSL_FLAG(double, timeout, 120, "give up after this many seconds");
ABSL_FLAG(std::string, latency_cdf, "", "write the latency CDF (µs) here");

namespace fanin::bench {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

void Die(const char* what) {
  std::fprintf(stderr, "floor: %s: %s\n", what, std::strerror(errno));
  std::exit(2);
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  const int expect = absl::GetFlag(FLAGS_expect_connections);
  const int message_bytes = absl::GetFlag(FLAGS_message_bytes);

  std::vector<std::string> hp =
      absl::StrSplit(absl::GetFlag(FLAGS_listen), ':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  int port = 0;
  if (hp.size() != 2 ||
      inet_pton(AF_INET, hp[0].c_str(), &addr.sin_addr) != 1 ||
      !absl::SimpleAtoi(hp[1], &port)) {
    std::fprintf(stderr, "floor: --listen must be IPv4:PORT\n");
    return 2;
  }
  addr.sin_port = htons(port);
  const int lfd =
      socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) Die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Die("bind");
  }
  if (listen(lfd, SOMAXCONN) != 0) Die("listen");
  socklen_t len = sizeof(addr);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string ready_file = absl::GetFlag(FLAGS_ready_file);
  if (!ready_file.empty() &&
      !WriteFileAtomically(ready_file,
                           absl::StrFormat("listen default 127.0.0.1:%d\n",
                                           ntohs(addr.sin_port)))) {
    Die("write ready file");
  }

  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) Die("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) != 0) Die("epoll_ctl(ADD)");

  StreamVerifier verifier(message_bytes);
  std::vector<uint64_t> key_of_fd;  // fds are reused; keys are not
  uint64_t next_key = 1, accepted = 0, closed = 0, reads = 0;
  int64_t first_accept = 0, last_accept = 0;
  std::vector<char> buf(64 * 1024);
  std::vector<epoll_event> events(1024);
  const int64_t deadline =
      MonotonicNanos() +
      static_cast<int64_t>(absl::GetFlag(FLAGS_timeout) * 1e9);
  bool timed_out = false;
  while (!g_stop.load() &&
         (expect == 0 || closed < static_cast<uint64_t>(expect))) {
    if (MonotonicNanos() > deadline) {
      timed_out = true;
      break;
    }
    const int n = epoll_wait(epfd, events.data(), events.size(), 100);
    if (n < 0 && errno != EINTR) Die("epoll_wait");
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == lfd) {
        for (;;) {
          const int cfd =
              accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
              break;
            Die("accept4");
          }
          const int64_t now = MonotonicNanos();
          if (first_accept == 0) first_accept = now;
          last_accept = now;
          if (static_cast<size_t>(cfd) >= key_of_fd.size()) {
            key_of_fd.resize(cfd + 1024);
          }
          key_of_fd[cfd] = next_key++;
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = cfd;
          if (epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &cev) != 0)
            Die("epoll_ctl(ADD)");
          if (++accepted == static_cast<uint64_t>(expect)) {
            std::printf("{\"event\":\"all_accepted\",\"accepted\":%llu}\n",
                        static_cast<unsigned long long>(accepted));
            std::fflush(stdout);
          }
        }
        continue;
      }
      const ssize_t r = read(fd, buf.data(), buf.size());
      if (r > 0) {
        ++reads;
        verifier.OnBytes(key_of_fd[fd], absl::string_view(buf.data(), r),
                         MonotonicNanos());
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      verifier.OnClose(key_of_fd[fd]);
      close(fd);
      ++closed;
    }
  }
  const std::string cdf = absl::GetFlag(FLAGS_latency_cdf);
  if (!cdf.empty()) WriteFileAtomically(cdf, verifier.latency().CdfText(1e3));
  const int64_t accept_span = last_accept - first_accept;
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  const double cpu_s = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                       (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  absl::PrintF(
      "{\"event\":\"done\",\"role\":\"floor\",%s,\"reads\":%llu,"
      "\"accepted\":%llu,\"closed\":%llu,\"timed_out\":%s,\"accept_s\":%.6f,"
      "\"accept_per_s\":%.1f,\"cpu_s\":%.6f}\n",
      VerifierJsonFields(verifier), static_cast<unsigned long long>(reads),
      static_cast<unsigned long long>(accepted),
      static_cast<unsigned long long>(closed), timed_out ? "true" : "false",
      accept_span / 1e9,
      accept_span > 0 ? (accepted - 1) * 1e9 / accept_span : 0.0, cpu_s);
  return 0;
}

}  // namespace
}  // namespace fanin::bench

int main(int argc, char** argv) { return fanin::bench::Main(argc, argv); }
