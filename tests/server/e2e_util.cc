#include "tests/server/e2e_util.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace fanin::servertest {

using fanin::v1::Event;
using fanin::v1::EventKind;

ServerConfig BaseConfig(reactor::PollerKind poller) {
  ServerConfig config;
  config.core.listen = {{"default", net::Endpoint::Loopback(0)}};
  config.core.poller = poller;
  config.core.loops = 2;
  config.grpc_address = net::Endpoint::Loopback(0);
  config.drain_timeout = absl::Seconds(5);
  return config;
}

std::unique_ptr<FaninServer> StartServer(ServerConfig config) {
  auto server = FaninServer::Start(std::move(config));
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  return *std::move(server);
}

std::string ListenAddress(const FaninServer& server, const std::string& name) {
  for (const auto& [n, address] : server.listen_addresses()) {
    if (n == name) return address;
  }
  return "";
}

std::string KindName(EventKind kind) {
  std::string name = fanin::v1::EventKind_Name(kind);
  constexpr absl::string_view kPrefix = "EVENT_KIND_";
  if (absl::StartsWith(name, kPrefix)) name.erase(0, kPrefix.size());
  return name;
}

std::vector<Event> EventsOf(const std::vector<Event>& events,
                            uint64_t connection_id) {
  std::vector<Event> out;
  for (const Event& e : events) {
    if (e.connection_id() == connection_id) out.push_back(e);
  }
  return out;
}

std::vector<EventKind> KindsOf(const std::vector<Event>& events) {
  std::vector<EventKind> out;
  for (const Event& e : events) out.push_back(KindOf(e));
  return out;
}

std::string PayloadOf(const std::vector<Event>& events,
                      uint64_t connection_id) {
  std::string out;
  for (const Event& e : events) {
    if (e.connection_id() == connection_id && e.has_data()) {
      out += e.data().payload();
    }
  }
  return out;
}

absl::Status SendAllInterleaved(std::vector<SendJob>& jobs, size_t max_piece,
                                uint64_t seed, absl::Time deadline) {
  std::mt19937_64 rng(seed);
  std::vector<pollfd> waiting;
  for (;;) {
    bool progress = false;
    bool left = false;
    waiting.clear();
    for (SendJob& job : jobs) {
      if (job.sent == job.data.size()) continue;
      left = true;
      size_t piece =
          std::min<size_t>(job.data.size() - job.sent,
                           1 + rng() % std::max<size_t>(max_piece, 1));
      ssize_t n = ::send(job.fd, job.data.data() + job.sent, piece,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        job.sent += n;
        progress = true;
        continue;
      }
      if (n < 0 &&
          (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        waiting.push_back({job.fd, POLLOUT, 0});
        continue;
      }
      return absl::ErrnoToStatus(errno, absl::StrCat("send fd ", job.fd));
    }
    if (!left) return absl::OkStatus();
    if (absl::Now() > deadline) {
      size_t remaining = 0;
      for (const SendJob& job : jobs) remaining += job.data.size() - job.sent;
      return absl::DeadlineExceededError(
          absl::StrCat(remaining, " bytes still unsent"));
    }
    if (!progress && !waiting.empty()) {
      // Blocks until some socket can take bytes again (bounded so the
      // deadline is checked).
      ::poll(waiting.data(), waiting.size(), 100);
    }
  }
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(rng() & 0xff);
  return out;
}

}  // namespace fanin::servertest
