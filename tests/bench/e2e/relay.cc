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
#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/bench/e2e/epoll_reader.h"
#include "tests/bench/e2e/frame.h"
#include "tests/bench/e2e/grpc_server.h"

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

// The loop's handler: each iteration's events go to every stream at its end.
class Relay : public EpollReader::Handler {
 public:
  explicit Relay(RelayService* service) : service_(service) {}

  void OnAccepted(uint64_t key) override { Add(key)->mutable_opened(); }
  void OnBytes(uint64_t key, absl::string_view bytes) override {
    v1::Data* data = Add(key)->mutable_data();
    data->set_payload(bytes.data(), bytes.size());
    data->set_size(bytes.size());
    bytes_ += bytes.size();
  }
  void OnClosed(uint64_t key, bool error) override {
    Add(key)->mutable_closed()->set_reason(
        error ? v1::CLOSE_REASON_ERROR : v1::CLOSE_REASON_PEER_CLOSED);
  }
  void OnIterationEnd() override {
    if (batch_.events_size() == 0) return;
    service_->Publish(batch_, bytes_ + 64 * batch_.events_size());
    batch_.Clear();
    bytes_ = 0;
  }

 private:
  v1::Event* Add(uint64_t key) {
    v1::Event* e = batch_.add_events();
    e->set_seq(++seq_);
    e->set_time_unix_nano(absl::GetCurrentTimeNanos());
    e->set_connection_id(key);
    e->set_listener("default");
    return e;
  }

  RelayService* const service_;
  v1::EventBatch batch_;
  int64_t bytes_ = 0;
  uint64_t seq_ = 0;
};

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  signal(SIGPIPE, SIG_IGN);
  // NAME=HOST:PORT, as fanin_server's --listen.
  const std::string listen = absl::GetFlag(FLAGS_listen);
  const size_t eq = listen.find('=');
  EpollReader reader(eq == std::string::npos ? listen : listen.substr(eq + 1),
                     "relay");
  RelayService service(absl::GetFlag(FLAGS_max_pending_bytes));
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartGrpcServer(
      &service, absl::GetFlag(FLAGS_grpc_address), "relay", &port);
  const std::string ready_file = absl::GetFlag(FLAGS_ready_file);
  if (!ready_file.empty() &&
      !WriteFileAtomically(
          ready_file,
          absl::StrFormat("grpc 127.0.0.1:%d\nlisten default 127.0.0.1:%d\n",
                          port, reader.port()))) {
    std::fprintf(stderr, "relay: cannot write %s\n", ready_file.c_str());
    return 2;
  }
  Relay relay(&service);
  reader.Run(relay, [] { return g_stop.load(); });
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace
}  // namespace fanin::bench

int main(int argc, char** argv) { return fanin::bench::Main(argc, argv); }
