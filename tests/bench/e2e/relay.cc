// The relay: the least a socket-to-gRPC gateway can do, as a baseline for
// fanin's latency. One thread runs a level-triggered epoll loop over the
// client sockets (one 64 KiB read per readiness report, like the floor); each
// read becomes one Data event (Opened and Closed too) appended to every
// Subscribe stream's pending batch, and at the end of each loop iteration the
// loop thread starts the write itself on every idle stream. A stream has one
// write in flight; what arrives meanwhile is sent, as one batch, by
// OnWriteDone on gRPC's thread. No history, no filters, no resume, no
// bounds beyond a crude one (the loop waits while a stream holds more than
// --max_pending_bytes): what is left is the socket hop the floor measures
// plus the gRPC stream the ceiling measures, with the clock starting where
// fanin's does (the load generator's send).
//
//   relay --listen=default=127.0.0.1:0 --ready_file=/tmp/r.ready
//
// It takes fanin_server's address flags and writes the same ready file
// ("grpc ..." and "listen default ..." lines), so ab.sh and hops.sh run it as
// they run fanin_server. Runs until SIGTERM.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/bench/e2e/frame.h"

ABSL_FLAG(std::string, listen, "default=127.0.0.1:0",
          "NAME=IPv4HOST:PORT to accept clients on (as fanin_server's)");
ABSL_FLAG(std::string, grpc_address, "127.0.0.1:0", "gRPC HOST:PORT");
ABSL_FLAG(std::string, ready_file, "", "written once serving");
ABSL_FLAG(int64_t, max_pending_bytes, int64_t{64} << 20,
          "the loop waits while a stream has more than this unsent");

namespace fanin::bench {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "relay: %s: %s\n", what, std::strerror(errno));
  std::exit(2);
}

// One Subscribe stream: `pending_` collects events until the stream is idle,
// then becomes the write in flight (`sending_`).
class Stream : public grpc::ServerWriteReactor<v1::SubscribeResponse> {
 public:
  using Unregister = std::function<void(Stream*)>;

  Stream(int64_t max_pending_bytes, Unregister unregister)
      : max_pending_bytes_(max_pending_bytes),
        unregister_(std::move(unregister)) {
    sending_.mutable_started()->set_server_epoch("relay");
    in_flight_ = true;
    StartWrite(&sending_);
  }

  // Loop thread: appends a copy of `events` (waiting while too much is
  // pending), then starts a write if none is in flight.
  void Append(const v1::EventBatch& events, int64_t bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    while (pending_bytes_ > max_pending_bytes_ && !done_ && !g_stop.load()) {
      cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
    if (done_) return;
    pending_.mutable_batch()->MergeFrom(events);
    pending_bytes_ += bytes;
    if (in_flight_) return;
    TakePending();
    lock.unlock();
    StartWrite(&sending_);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    in_flight_ = false;
    if (!ok || cancelled_) {
      EndLocked(std::move(lock));
      return;
    }
    if (pending_.batch().events_size() == 0) return;
    TakePending();
    lock.unlock();
    StartWrite(&sending_);
  }

  void OnCancel() override {
    std::unique_lock<std::mutex> lock(mu_);
    cancelled_ = true;
    if (!in_flight_) EndLocked(std::move(lock));
  }

  void OnDone() override {
    unregister_(this);
    delete this;
  }

 private:
  // mu_ held, no write in flight: pending_ becomes the next write.
  void TakePending() {
    sending_.Swap(&pending_);
    pending_.Clear();
    pending_bytes_ = 0;
    in_flight_ = true;
    cv_.notify_all();
  }

  void EndLocked(std::unique_lock<std::mutex> lock) {
    if (done_) return;
    done_ = true;
    cv_.notify_all();
    lock.unlock();
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream ended"));
  }

  const int64_t max_pending_bytes_;
  const Unregister unregister_;
  std::mutex mu_;
  std::condition_variable cv_;
  v1::SubscribeResponse pending_;  // guarded by mu_
  v1::SubscribeResponse sending_;  // owned by the write in flight
  int64_t pending_bytes_ = 0;
  bool in_flight_ = false;
  bool cancelled_ = false;
  bool done_ = false;
};

class RelayService : public v1::FanIn::CallbackService {
 public:
  explicit RelayService(int64_t max_pending_bytes)
      : max_pending_bytes_(max_pending_bytes) {}

  grpc::ServerWriteReactor<v1::SubscribeResponse>* Subscribe(
      grpc::CallbackServerContext*, const v1::SubscribeRequest*) override {
    auto* stream = new Stream(max_pending_bytes_, [this](Stream* s) {
      std::lock_guard<std::mutex> lock(mu_);
      std::erase(streams_, s);
    });
    std::lock_guard<std::mutex> lock(mu_);
    streams_.push_back(stream);
    return stream;
  }

  // Loop thread: hands one iteration's events to every stream. Holding mu_
  // keeps each stream alive (OnDone unregisters under it first).
  void Publish(const v1::EventBatch& events, int64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    for (Stream* s : streams_) s->Append(events, bytes);
  }

 private:
  const int64_t max_pending_bytes_;
  std::mutex mu_;
  std::vector<Stream*> streams_;
};

int Listen(const std::string& spec, int* port) {
  // NAME=HOST:PORT
  std::vector<std::string> nv = absl::StrSplit(spec, absl::MaxSplits('=', 1));
  std::vector<std::string> hp =
      absl::StrSplit(nv.size() == 2 ? nv[1] : spec, ':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (hp.size() != 2 ||
      inet_pton(AF_INET, hp[0].c_str(), &addr.sin_addr) != 1 ||
      !absl::SimpleAtoi(hp[1], port)) {
    std::fprintf(stderr, "relay: --listen must be NAME=IPv4:PORT\n");
    std::exit(2);
  }
  addr.sin_port = htons(*port);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) Die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Die("bind");
  }
  if (listen(fd, SOMAXCONN) != 0) Die("listen");
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

v1::Event* NewEvent(v1::EventBatch& batch, uint64_t& seq, uint64_t id) {
  v1::Event* e = batch.add_events();
  e->set_seq(++seq);
  e->set_time_unix_nano(absl::GetCurrentTimeNanos());
  e->set_connection_id(id);
  e->set_listener("default");
  return e;
}

// The loop: accept, read, and publish each iteration's events.
void Run(int lfd, RelayService& service) {
  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) Die("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) != 0) Die("epoll_ctl(ADD)");
  std::vector<uint64_t> id_of_fd;  // fds are reused; ids are not
  uint64_t next_id = 1, seq = 0;
  std::vector<char> buf(64 * 1024);
  std::vector<epoll_event> events(1024);
  v1::EventBatch batch;
  while (!g_stop.load()) {
    const int n = epoll_wait(epfd, events.data(), events.size(), 100);
    if (n < 0 && errno != EINTR) Die("epoll_wait");
    int64_t bytes = 0;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == lfd) {
        for (;;) {
          const int cfd =
              accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
              break;
            if (errno == EMFILE || errno == ENFILE) break;
            Die("accept4");
          }
          if (static_cast<size_t>(cfd) >= id_of_fd.size()) {
            id_of_fd.resize(cfd + 1024);
          }
          id_of_fd[cfd] = next_id++;
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = cfd;
          if (epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &cev) != 0) {
            Die("epoll_ctl(ADD)");
          }
          NewEvent(batch, seq, id_of_fd[cfd])->mutable_opened();
        }
        continue;
      }
      const ssize_t r = read(fd, buf.data(), buf.size());
      if (r > 0) {
        v1::Data* data = NewEvent(batch, seq, id_of_fd[fd])->mutable_data();
        data->set_payload(buf.data(), r);
        data->set_size(r);
        bytes += r;
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      NewEvent(batch, seq, id_of_fd[fd])
          ->mutable_closed()
          ->set_reason(r == 0 ? v1::CLOSE_REASON_PEER_CLOSED
                              : v1::CLOSE_REASON_ERROR);
      close(fd);
    }
    if (batch.events_size() > 0) {
      service.Publish(batch, bytes + 64 * batch.events_size());
      batch.Clear();
    }
  }
  close(epfd);
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  signal(SIGPIPE, SIG_IGN);
  int listen_port = 0;
  const int lfd = Listen(absl::GetFlag(FLAGS_listen), &listen_port);
  RelayService service(absl::GetFlag(FLAGS_max_pending_bytes));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_grpc_address),
                           grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "relay: cannot listen on %s\n",
                 absl::GetFlag(FLAGS_grpc_address).c_str());
    return 2;
  }
  const std::string ready_file = absl::GetFlag(FLAGS_ready_file);
  if (!ready_file.empty() &&
      !WriteFileAtomically(ready_file,
                           absl::StrFormat("grpc 127.0.0.1:%d\nlisten default "
                                           "127.0.0.1:%d\n",
                                           port, listen_port))) {
    std::fprintf(stderr, "relay: cannot write %s\n", ready_file.c_str());
    return 2;
  }
  Run(lfd, service);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace
}  // namespace fanin::bench

int main(int argc, char** argv) { return fanin::bench::Main(argc, argv); }
