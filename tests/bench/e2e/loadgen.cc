// Load generator: opens C TCP connections to --target and sends fixed-size
// framed messages (see frame.h) on them, at a total --rate or as fast as the
// sockets take them, for --duration; then flushes, closes and prints one JSON
// line with what it did.
//
//   loadgen --target=127.0.0.1:40999 --connections=1000 --rate=0 --duration=5
//
// Rate mode is open-loop: message k is due at start + k/rate on connection
// k % C, and each message carries the time of its actual write, so latency is
// measured from the socket write. Max mode writes --messages_per_send messages
// (default 1) per send() to every writable connection in turn.
//
// With --hold, it connects and then sends nothing until --hold seconds pass or
// SIGTERM/SIGINT arrives (idle-connection scale runs); it prints a
// {"event":"connected"} line as soon as every connection is up.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
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

ABSL_FLAG(std::string, target, "", "HOST:PORT to connect to (IPv4)");
ABSL_FLAG(int, connections, 1000, "connections to open");
ABSL_FLAG(int, message_bytes, 64, "bytes per message (>= 16)");
ABSL_FLAG(double, rate, 0, "total messages/s over all connections; 0 = max");
ABSL_FLAG(double, duration, 5, "seconds of sending");
ABSL_FLAG(double, hold, 0,
          "if > 0: connect, send nothing, hold this many seconds (or until "
          "SIGTERM), close");
ABSL_FLAG(std::string, source_addrs, "",
          "comma-separated local IPv4 addresses, used round-robin (e.g. "
          "127.0.0.2,127.0.0.3); empty = kernel's choice");
ABSL_FLAG(std::string, source_base, "",
          "first of --source_count consecutive local IPv4 addresses (e.g. "
          "127.1.0.1), used round-robin; fresh addresses keep connect()'s port "
          "search short when earlier runs left ports in TIME_WAIT");
ABSL_FLAG(int, source_count, 0, "addresses from --source_base");
ABSL_FLAG(int, messages_per_send, 1,
          "max mode: messages written by one send() (each still carries its "
          "own seq and timestamp)");
ABSL_FLAG(int, index_base, 0, "first connection index (several processes)");
ABSL_FLAG(double, start_delay, 0,
          "seconds to wait, idle, between connecting and sending (lets the "
          "receiver finish taking the connections, so latency figures are of "
          "the steady state rather than of the connection burst)");
ABSL_FLAG(int, connect_window, 256, "connects in flight at most");
ABSL_FLAG(double, flush_timeout, 30,
          "seconds to wait for unsent bytes after --duration");

namespace fanin::bench {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

struct Conn {
  int fd = -1;
  uint32_t seq = 0;
  bool connected = false;
  bool failed = false;
  bool want_out = false;  // EPOLLOUT armed (rate mode)
  std::string pending;    // bytes accepted for sending, not yet written
  int64_t connect_start = 0;
};

struct Result {
  uint64_t sent_messages = 0;
  uint64_t sent_bytes = 0;
  uint64_t failed_connections = 0;
  int64_t connect_ns = 0;
  int64_t max_connect_ns = 0;
  int64_t send_ns = 0;
  int64_t behind_max_ns = 0;
  uint64_t would_block = 0;
};

void Die(const char* what) {
  std::fprintf(stderr, "loadgen: %s: %s\n", what, std::strerror(errno));
  std::exit(2);
}

class LoadGen {
 public:
  LoadGen(sockaddr_in target, std::vector<in_addr> sources, int n,
          int message_bytes)
      : target_(target),
        sources_(std::move(sources)),
        conns_(n),
        message_bytes_(message_bytes),
        scratch_(message_bytes, '\0') {
    for (int i = 0; i < message_bytes; ++i) scratch_[i] = static_cast<char>(i);
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) Die("epoll_create1");
  }

  // Opens every connection with at most `window` connects in flight.
  void ConnectAll(int window) {
    const int64_t start = MonotonicNanos();
    int next = 0, in_flight = 0, done = 0;
    const int n = static_cast<int>(conns_.size());
    std::vector<epoll_event> events(1024);
    while (done < n && !g_stop.load()) {
      while (next < n && in_flight < window) {
        StartConnect(next++);
        ++in_flight;
      }
      int k = epoll_wait(epfd_, events.data(), events.size(), 1000);
      if (k < 0 && errno != EINTR) Die("epoll_wait");
      for (int i = 0; i < k; ++i) {
        Conn& c = conns_[events[i].data.u32];
        if (c.connected || c.failed) {
          // Only an error or hang-up can report an idle connection.
          Fail(events[i].data.u32, "connection reset while connecting others");
          continue;
        }
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        result_.max_connect_ns = std::max(result_.max_connect_ns,
                                          MonotonicNanos() - c.connect_start);
        if (err != 0) {
          Fail(events[i].data.u32, std::strerror(err));
        } else {
          c.connected = true;
          SetInterest(events[i].data.u32, 0);
        }
        --in_flight;
        ++done;
      }
    }
    result_.connect_ns = MonotonicNanos() - start;
  }

  void RunMax(int64_t duration_ns, int index_base) {
    for (size_t i = 0; i < conns_.size(); ++i) {
      if (conns_[i].connected) SetInterest(i, uint32_t{EPOLLOUT});
    }
    const int64_t start = MonotonicNanos();
    const int64_t end = start + duration_ns;
    std::vector<epoll_event> events(4096);
    while (!g_stop.load()) {
      int k = epoll_wait(epfd_, events.data(), events.size(), 100);
      if (k < 0 && errno != EINTR) Die("epoll_wait");
      const int64_t now = MonotonicNanos();
      if (now >= end) break;
      for (int i = 0; i < k; ++i) {
        const uint32_t ci = events[i].data.u32;
        Conn& c = conns_[ci];
        if (!c.connected) continue;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) {
          Fail(ci, "reset by the server");
          continue;
        }
        if (c.pending.empty()) {
          const int64_t now_ns = MonotonicNanos();
          for (int m = 0; m < messages_per_send_; ++m) {
            EncodeMessage(index_base + ci, c.seq++, now_ns, scratch_.data());
            c.pending.append(scratch_.data(), message_bytes_);
          }
          result_.sent_messages += messages_per_send_;
        }
        Flush(ci);
      }
    }
    result_.send_ns = MonotonicNanos() - start;
  }

  void RunRate(double rate, int64_t duration_ns, int index_base) {
    const uint64_t total = static_cast<uint64_t>(rate * duration_ns / 1e9);
    const double interval_ns = 1e9 / rate;
    const int64_t start = MonotonicNanos();
    const size_t n = conns_.size();
    std::vector<epoll_event> events(1024);
    uint64_t k = 0;
    while (k < total && !g_stop.load()) {
      int64_t now = MonotonicNanos();
      while (k < total) {
        const int64_t due = start + static_cast<int64_t>(k * interval_ns);
        if (due > now) break;
        result_.behind_max_ns = std::max(result_.behind_max_ns, now - due);
        const size_t ci = k % n;
        ++k;
        Conn& c = conns_[ci];
        if (!c.connected) continue;
        EncodeMessage(index_base + ci, c.seq++, MonotonicNanos(),
                      scratch_.data());
        ++result_.sent_messages;
        c.pending.append(scratch_.data(), message_bytes_);
        Flush(ci);
        now = MonotonicNanos();
      }
      if (k >= total) break;
      const int64_t due = start + static_cast<int64_t>(k * interval_ns);
      if (armed_ > 0) {
        // Some sockets are full: wait for them or the next due time.
        const int64_t wait_ms = std::max<int64_t>(0, (due - now) / 1000000);
        int got = epoll_wait(epfd_, events.data(), events.size(), wait_ms);
        if (got < 0 && errno != EINTR) Die("epoll_wait");
        for (int i = 0; i < got; ++i) OnReady(events[i]);
      } else if (due > now) {
        timespec ts{static_cast<time_t>(due / 1000000000),
                    static_cast<long>(due % 1000000000)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
      }
    }
    result_.send_ns = MonotonicNanos() - start;
  }

  // Writes out whatever is still pending, for at most `timeout_ns`.
  void Drain(int64_t timeout_ns) {
    const int64_t end = MonotonicNanos() + timeout_ns;
    for (size_t i = 0; i < conns_.size(); ++i) {
      Conn& c = conns_[i];
      SetInterest(i,
                  c.connected && !c.pending.empty() ? uint32_t{EPOLLOUT} : 0u);
    }
    std::vector<epoll_event> events(1024);
    while (armed_ > 0 && MonotonicNanos() < end) {
      int k = epoll_wait(epfd_, events.data(), events.size(), 100);
      if (k < 0 && errno != EINTR) Die("epoll_wait");
      for (int i = 0; i < k; ++i) OnReady(events[i]);
    }
    if (armed_ > 0) {
      std::fprintf(stderr, "loadgen: %d connections still had unsent bytes\n",
                   armed_);
    }
  }

  void CloseAll() {
    for (Conn& c : conns_) {
      if (c.fd >= 0) close(c.fd);
      c.fd = -1;
    }
  }

  Result& result() { return result_; }
  size_t connected() const {
    return std::count_if(conns_.begin(), conns_.end(),
                         [](const Conn& c) { return c.connected; });
  }

 private:
  void StartConnect(int i) {
    Conn& c = conns_[i];
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) Die("socket");
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!sources_.empty()) {
      setsockopt(c.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
      sockaddr_in local{};
      local.sin_family = AF_INET;
      local.sin_addr = sources_[i % sources_.size()];
      if (bind(c.fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
        Die("bind");
      }
    }
    c.connect_start = MonotonicNanos();
    if (connect(c.fd, reinterpret_cast<const sockaddr*>(&target_),
                sizeof(target_)) != 0 &&
        errno != EINPROGRESS) {
      Die("connect");
    }
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u32 = i;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, c.fd, &ev) != 0) Die("epoll_ctl(ADD)");
    c.want_out = true;
    ++armed_;
  }

  void OnReady(const epoll_event& ev) {
    if (ev.events & (EPOLLERR | EPOLLHUP)) {
      if (conns_[ev.data.u32].fd >= 0) Fail(ev.data.u32, "reset by the server");
      return;
    }
    Flush(ev.data.u32);
  }

  // Closes a broken connection (closing also removes it from epoll, so its
  // hang-up cannot be reported again).
  void Fail(size_t i, const char* why) {
    Conn& c = conns_[i];
    if (result_.failed_connections++ < 5) {
      std::fprintf(stderr, "loadgen: connection %zu: %s\n", i, why);
    }
    if (c.want_out) --armed_;
    c.want_out = false;
    c.connected = false;
    c.failed = true;
    c.pending.clear();
    close(c.fd);
    c.fd = -1;
  }

  void SetInterest(size_t i, uint32_t events) {
    Conn& c = conns_[i];
    const bool want = events != 0;
    if (c.fd < 0 || want == c.want_out) return;
    epoll_event ev{};
    ev.events = events;
    ev.data.u32 = i;
    if (epoll_ctl(epfd_, EPOLL_CTL_MOD, c.fd, &ev) != 0) Die("epoll_ctl(MOD)");
    c.want_out = want;
    armed_ += want ? 1 : -1;
  }

  // Writes pending bytes of connection i; arms EPOLLOUT while some remain
  // (except in max mode, where it is always armed).
  void Flush(size_t i) {
    Conn& c = conns_[i];
    if (c.fd < 0) return;
    while (!c.pending.empty()) {
      ssize_t w = send(c.fd, c.pending.data(), c.pending.size(),
                       MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) {
        result_.sent_bytes += w;
        c.pending.erase(0, w);
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        ++result_.would_block;
        SetInterest(i, uint32_t{EPOLLOUT});
        return;
      }
      Fail(i, std::strerror(errno));
      return;
    }
    if (!max_mode_) SetInterest(i, 0);
  }

 public:
  bool max_mode_ = false;
  int messages_per_send_ = 1;

 private:
  sockaddr_in target_;
  std::vector<in_addr> sources_;
  std::vector<Conn> conns_;
  int message_bytes_;
  std::string scratch_;
  int epfd_ = -1;
  int armed_ = 0;
  Result result_;
};

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  signal(SIGPIPE, SIG_IGN);
  const int n = absl::GetFlag(FLAGS_connections);
  const int message_bytes = absl::GetFlag(FLAGS_message_bytes);
  if (n <= 0 || message_bytes < static_cast<int>(kHeaderBytes)) {
    std::fprintf(stderr,
                 "loadgen: need --connections > 0, --message_bytes >= 16\n");
    return 2;
  }
  std::vector<std::string> hp =
      absl::StrSplit(absl::GetFlag(FLAGS_target), ':');
  sockaddr_in target{};
  target.sin_family = AF_INET;
  int port = 0;
  if (hp.size() != 2 ||
      inet_pton(AF_INET, hp[0].c_str(), &target.sin_addr) != 1 ||
      !absl::SimpleAtoi(hp[1], &port)) {
    std::fprintf(stderr, "loadgen: --target must be IPv4:PORT\n");
    return 2;
  }
  target.sin_port = htons(port);
  std::vector<in_addr> sources;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_source_addrs),
                                            ',', absl::SkipEmpty())) {
    in_addr a;
    if (inet_pton(AF_INET, std::string(s).c_str(), &a) != 1) {
      std::fprintf(stderr, "loadgen: bad source address %s\n",
                   std::string(s).c_str());
      return 2;
    }
    sources.push_back(a);
  }
  if (!absl::GetFlag(FLAGS_source_base).empty()) {
    in_addr base;
    if (inet_pton(AF_INET, absl::GetFlag(FLAGS_source_base).c_str(), &base) !=
        1) {
      std::fprintf(stderr, "loadgen: bad --source_base\n");
      return 2;
    }
    for (int i = 0; i < absl::GetFlag(FLAGS_source_count); ++i) {
      in_addr a;
      a.s_addr = htonl(ntohl(base.s_addr) + i);
      sources.push_back(a);
    }
  }

  LoadGen gen(target, std::move(sources), n, message_bytes);
  gen.ConnectAll(std::max(1, absl::GetFlag(FLAGS_connect_window)));
  Result& r = gen.result();
  std::printf(
      "{\"event\":\"connected\",\"connected\":%zu,\"connect_s\":%.6f,"
      "\"max_connect_ms\":%.3f}\n",
      gen.connected(), r.connect_ns / 1e9, r.max_connect_ns / 1e6);
  std::fflush(stdout);

  const int64_t start_at =
      MonotonicNanos() +
      static_cast<int64_t>(absl::GetFlag(FLAGS_start_delay) * 1e9);
  while (!g_stop.load() && MonotonicNanos() < start_at) usleep(1000);
  const double hold = absl::GetFlag(FLAGS_hold);
  const double rate = absl::GetFlag(FLAGS_rate);
  const int64_t duration_ns =
      static_cast<int64_t>(absl::GetFlag(FLAGS_duration) * 1e9);
  if (hold > 0) {
    const int64_t end = MonotonicNanos() + static_cast<int64_t>(hold * 1e9);
    while (!g_stop.load() && MonotonicNanos() < end) usleep(10000);
  } else if (rate > 0) {
    gen.RunRate(rate, duration_ns, absl::GetFlag(FLAGS_index_base));
  } else {
    gen.max_mode_ = true;
    gen.messages_per_send_ =
        std::max(1, absl::GetFlag(FLAGS_messages_per_send));
    gen.RunMax(duration_ns, absl::GetFlag(FLAGS_index_base));
    gen.max_mode_ = false;
  }
  gen.Drain(static_cast<int64_t>(absl::GetFlag(FLAGS_flush_timeout) * 1e9));
  gen.CloseAll();
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  const double cpu_s = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                       (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  std::printf(
      "{\"event\":\"done\",\"connections\":%d,\"connected\":%zu,"
      "\"failed_connections\":%llu,\"connect_s\":%.6f,\"max_connect_ms\":%.3f,"
      "\"sent_messages\":%llu,\"sent_bytes\":%llu,\"send_s\":%.6f,"
      "\"sent_per_s\":%.1f,\"would_block\":%llu,\"behind_max_ms\":%.3f,"
      "\"cpu_s\":%.3f}\n",
      n, gen.connected(), static_cast<unsigned long long>(r.failed_connections),
      r.connect_ns / 1e9, r.max_connect_ns / 1e6,
      static_cast<unsigned long long>(r.sent_messages),
      static_cast<unsigned long long>(r.sent_bytes), r.send_ns / 1e9,
      r.send_ns > 0 ? r.sent_messages * 1e9 / r.send_ns : 0.0,
      static_cast<unsigned long long>(r.would_block), r.behind_max_ns / 1e6,
      cpu_s);
  return 0;
}

}  // namespace
}  // namespace fanin::bench

int main(int argc, char** argv) { return fanin::bench::Main(argc, argv); }
