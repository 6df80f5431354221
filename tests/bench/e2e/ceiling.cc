// The gRPC ceiling: a minimal fanin.v1 server whose Subscribe streams
// pre-built EventBatch messages of Data events (--messages_per_event
// load-generator messages each, round-robin over --connections virtual
// connections) as fast as the stream takes them, or at --rate events/s, for
// --duration seconds per stream; then it ends the stream with OK. No sockets
// are read: this is what gRPC alone can carry to the same subscriber.
//
//   ceiling --grpc_address=127.0.0.1:0 --ready_file=/tmp/c.ready --duration=5
//
// The ready file gets "grpc 127.0.0.1:PORT", as fanin_server writes. Each
// finished stream prints {"event":"stream_done","events":N,...}.
//
// Each stream is a callback reactor with one write in flight: the next batch
// is rewritten in place (seq fields, timestamp) in OnWriteDone. In rate mode a
// pacing thread per stream issues the writes at their due times.
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/bench/e2e/frame.h"
#include "tests/bench/e2e/grpc_server.h"

ABSL_FLAG(std::string, grpc_address, "127.0.0.1:0", "gRPC HOST:PORT");
ABSL_FLAG(std::string, ready_file, "", "written once serving");
ABSL_FLAG(int, connections, 1000, "virtual connections events rotate over");
ABSL_FLAG(int, message_bytes, 64, "bytes per message (one per Data event)");
ABSL_FLAG(int, batch_events, 64, "events per EventBatch");
ABSL_FLAG(int, messages_per_event, 1,
          "messages in each Data payload (as a read of a burst would hold)");
ABSL_FLAG(double, rate, 0, "events/s per stream; 0 = as fast as possible");
ABSL_FLAG(double, duration, 5, "seconds each stream runs");

namespace fanin::bench {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

struct Config {
  int connections;
  int message_bytes;
  int batch_events;
  int messages_per_event;
  double rate;
  int64_t duration_ns;
};

std::mutex g_out_mu;

class SubscribeStream : public grpc::ServerWriteReactor<v1::SubscribeResponse> {
 public:
  explicit SubscribeStream(const Config& config)
      : config_(config),
        conn_seq_(config.connections, 0),
        padding_(config.message_bytes, '\0') {
    for (int i = 0; i < config.message_bytes; ++i) {
      padding_[i] = static_cast<char>(i);
    }
    start_ns_ = MonotonicNanos();
    first_.mutable_started()->set_server_epoch("ceiling");
    if (config_.rate > 0) pacer_ = std::thread([this] { Pace(); });
    StartWrite(&first_);
  }

  void OnWriteDone(bool ok) override {
    if (config_.rate > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      write_done_ = true;
      write_ok_ = ok;
      cv_.notify_one();
      return;
    }
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    if (MonotonicNanos() - start_ns_ >= config_.duration_ns || g_stop.load()) {
      Finish(grpc::Status::OK);
      return;
    }
    Build(config_.batch_events);
    StartWrite(&batch_);
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    cv_.notify_one();
  }

  void OnDone() override {
    if (pacer_.joinable()) pacer_.join();
    const int64_t span = MonotonicNanos() - start_ns_;
    {
      std::lock_guard<std::mutex> lock(g_out_mu);
      std::printf(
          "{\"event\":\"stream_done\",\"role\":\"ceiling\",\"events\":%llu,"
          "\"batches\":%llu,\"seconds\":%.6f,\"events_per_s\":%.1f}\n",
          static_cast<unsigned long long>(events_),
          static_cast<unsigned long long>(batches_), span / 1e9,
          events_ * 1e9 / span);
      std::fflush(stdout);
    }
    delete this;
  }

 private:
  // Rewrites batch_ with the next `n` events, reusing its allocations.
  void Build(int n) {
    auto* events = batch_.mutable_batch()->mutable_events();
    events->Clear();
    const int64_t now_mono = MonotonicNanos();
    const uint64_t now_wall = absl::GetCurrentTimeNanos();
    for (int i = 0; i < n; ++i) {
      const int conn = static_cast<int>(events_ % config_.connections);
      v1::Event* e = events->Add();
      e->set_seq(++events_);
      e->set_time_unix_nano(now_wall);
      e->set_connection_id(conn + 1);
      e->set_listener("default");
      v1::Data* data = e->mutable_data();
      std::string* payload = data->mutable_payload();
      payload->clear();
      for (int m = 0; m < config_.messages_per_event; ++m) {
        EncodeMessage(conn, conn_seq_[conn]++, now_mono, padding_.data());
        payload->append(padding_);
      }
      data->set_size(payload->size());
    }
    ++batches_;
  }

  // Rate mode: waits for the previous write, then for the next due event,
  // and sends every event due by then (at most batch_events).
  void Pace() {
    const double interval = 1e9 / config_.rate;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return write_done_ || cancelled_; });
        if (cancelled_ || !write_ok_) {
          lock.unlock();
          Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
          return;
        }
        write_done_ = false;
      }
      const int64_t due =
          start_ns_ + static_cast<int64_t>((events_ + 1) * interval);
      if (due - start_ns_ >= config_.duration_ns || g_stop.load()) {
        Finish(grpc::Status::OK);
        return;
      }
      timespec ts{static_cast<time_t>(due / 1000000000),
                  static_cast<long>(due % 1000000000)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
      const int64_t owed =
          static_cast<int64_t>((MonotonicNanos() - start_ns_) / interval) -
          static_cast<int64_t>(events_);
      Build(
          static_cast<int>(std::clamp<int64_t>(owed, 1, config_.batch_events)));
      StartWrite(&batch_);
    }
  }

  const Config config_;
  std::vector<uint32_t> conn_seq_;
  std::string padding_;
  int64_t start_ns_ = 0;
  uint64_t events_ = 0;
  uint64_t batches_ = 0;
  v1::SubscribeResponse first_;
  v1::SubscribeResponse batch_;
  std::thread pacer_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool write_done_ = false;
  bool write_ok_ = true;
  bool cancelled_ = false;
};

class CeilingService : public v1::FanIn::CallbackService {
 public:
  explicit CeilingService(const Config& config) : config_(config) {}
  grpc::ServerWriteReactor<v1::SubscribeResponse>* Subscribe(
      grpc::CallbackServerContext*, const v1::SubscribeRequest*) override {
    return new SubscribeStream(config_);
  }

 private:
  const Config config_;
};

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  Config config{absl::GetFlag(FLAGS_connections),
                absl::GetFlag(FLAGS_message_bytes),
                absl::GetFlag(FLAGS_batch_events),
                std::max(1, absl::GetFlag(FLAGS_messages_per_event)),
                absl::GetFlag(FLAGS_rate),
                static_cast<int64_t>(absl::GetFlag(FLAGS_duration) * 1e9)};
  if (config.connections <= 0 || config.batch_events <= 0 ||
      config.message_bytes < static_cast<int>(kHeaderBytes)) {
    std::fprintf(stderr,
                 "ceiling: bad --connections/--batch_events/--message_bytes\n");
    return 2;
  }
  CeilingService service(config);
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartGrpcServer(
      &service, absl::GetFlag(FLAGS_grpc_address), "ceiling", &port);
  const std::string ready_file = absl::GetFlag(FLAGS_ready_file);
  if (!ready_file.empty() &&
      !WriteFileAtomically(ready_file,
                           absl::StrFormat("grpc 127.0.0.1:%d\n", port))) {
    std::fprintf(stderr, "ceiling: cannot write %s\n", ready_file.c_str());
    return 2;
  }
  while (!g_stop.load()) {
    timespec ts{0, 20 * 1000 * 1000};
    nanosleep(&ts, nullptr);
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace
}  // namespace fanin::bench

int main(int argc, char** argv) { return fanin::bench::Main(argc, argv); }
