// The C++ subscriber: one fanin.v1 Subscribe stream (all event kinds) read
// with the synchronous API. It reassembles each connection's Data payloads,
// checks seq continuity per connection (frame.h), measures latency from the
// send time inside each message to the arrival of its batch, and prints one
// JSON line when --expect_connections Closed events have arrived, the stream
// ends, --timeout passes or SIGTERM arrives.
//
//   subscriber --server=127.0.0.1:43121 --expect_connections=1000
//
// Works against fanin_server and against the ceiling (same API). The ready
// file is written once the Started message has arrived, so the load may begin.
#include <signal.h>
#include <sys/resource.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/bench/e2e/frame.h"

ABSL_FLAG(std::string, server, "", "gRPC HOST:PORT");
ABSL_FLAG(std::string, delivery, "lossless", "lossless or lossy");
ABSL_FLAG(int, max_batch_events, 0, "SubscribeRequest.max_batch_events");
ABSL_FLAG(int, message_bytes, 64, "bytes per message");
ABSL_FLAG(int, expect_connections, 0,
          "stop after this many Closed events (0: run until the stream ends)");
ABSL_FLAG(double, timeout, 120, "give up after this many seconds");
ABSL_FLAG(std::string, ready_file, "", "written once Started has arrived");
ABSL_FLAG(std::string, group, "",
          "join this worker-pool group (SubscribeRequest.group): this process "
          "gets only its share of the connections");
ABSL_FLAG(std::string, latency_cdf, "", "write the latency CDF (µs) here");
ABSL_FLAG(std::string, progress_file, "",
          "kept holding the number of events received so far (redelivered "
          "ones included), so a driver can wait until a group member has read "
          "every event the server wrote to it before stopping it");
ABSL_FLAG(double, slow_ms, 5,
          "report (up to 20) batches holding a message older than this, with "
          "their time since the first data, to tell a stall from steady noise");

namespace fanin::bench {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  const uint64_t expect = absl::GetFlag(FLAGS_expect_connections);

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  auto channel = grpc::CreateCustomChannel(
      absl::GetFlag(FLAGS_server), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::FanIn::NewStub(channel);
  v1::SubscribeRequest request;
  request.set_delivery(absl::GetFlag(FLAGS_delivery) == "lossy"
                           ? v1::DELIVERY_LOSSY
                           : v1::DELIVERY_LOSSLESS);
  request.set_max_batch_events(absl::GetFlag(FLAGS_max_batch_events));
  request.set_group(absl::GetFlag(FLAGS_group));

  grpc::ClientContext context;
  std::atomic<bool> finished{false};
  const double timeout = absl::GetFlag(FLAGS_timeout);
  bool timed_out = false;
  // Cancels the stream on SIGTERM or timeout; Read() then returns false.
  // Events received (redelivered ones included), for --progress_file.
  std::atomic<uint64_t> received{0};
  const std::string progress_file = absl::GetFlag(FLAGS_progress_file);
  std::thread watchdog([&] {
    const int64_t deadline =
        MonotonicNanos() + static_cast<int64_t>(timeout * 1e9);
    uint64_t reported = UINT64_MAX;
    while (!finished.load()) {
      if (g_stop.load() || MonotonicNanos() > deadline) {
        timed_out = !g_stop.load();
        context.TryCancel();
        return;
      }
      const uint64_t now = received.load();
      if (!progress_file.empty() && now != reported) {
        WriteFileAtomically(progress_file, absl::StrCat(now, "\n"));
        reported = now;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });

  StreamVerifier verifier(absl::GetFlag(FLAGS_message_bytes));
  uint64_t batches = 0, events = 0, data_events = 0, opened = 0, closed = 0,
           rejected = 0, gaps = 0, gap_lost = 0, heartbeats = 0, started = 0,
           node_changes = 0, seq_jumps = 0, last_seq = 0, assigned = 0,
           redelivered = 0;
  // Group members: events an Assigned marked possibly redelivered (the
  // connection's previous member may have had them) are skipped, as a worker
  // does; per connection, the seq through which they may repeat.
  absl::flat_hash_map<uint64_t, uint64_t> redelivered_through;
  const bool member = !absl::GetFlag(FLAGS_group).empty();
  std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>> reader =
      stub->Subscribe(&context, request);
  v1::SubscribeResponse response;
  const std::string ready_file = absl::GetFlag(FLAGS_ready_file);
  bool done = false;
  const int64_t slow_ns =
      static_cast<int64_t>(absl::GetFlag(FLAGS_slow_ms) * 1e6);
  std::string slow;  // JSON array body: [ms since first data, max ms, msgs]
  int slow_batches = 0;
  while (!done && reader->Read(&response)) {
    const int64_t arrival = MonotonicNanos();
    switch (response.message_case()) {
      case v1::SubscribeResponse::kStarted:
        if (started++ == 0 && !ready_file.empty()) {
          WriteFileAtomically(ready_file, "started\n");
        }
        break;
      case v1::SubscribeResponse::kBatch: {
        ++batches;
        received.fetch_add(response.batch().events_size());
        const uint64_t before = verifier.messages();
        const int64_t max_before = verifier.latency().max();
        for (const v1::Event& e : response.batch().events()) {
          auto again = redelivered_through.find(e.connection_id());
          if (again != redelivered_through.end() && e.seq() <= again->second) {
            ++redelivered;
            continue;
          }
          ++events;
          // The stream is unfiltered, so its seqs must be contiguous (in
          // cluster mode too: every node serves the stream's one order); a
          // group member sees only its connections' events.
          if (!member && last_seq != 0 && e.seq() != last_seq + 1) {
            ++seq_jumps;
          }
          last_seq = e.seq();
          switch (e.kind_case()) {
            case v1::Event::kData:
              ++data_events;
              verifier.OnBytes(e.connection_id(), e.data().payload(), arrival);
              break;
            case v1::Event::kOpened:
              ++opened;
              break;
            case v1::Event::kClosed:
              ++closed;
              if (e.closed().reason() == v1::CLOSE_REASON_REJECTED) ++rejected;
              verifier.OnClose(e.connection_id());
              break;
            case v1::Event::kNodeChange:
              // Cluster mode: a node joined or left (connection id 0, no
              // payload); counted, not verified.
              ++node_changes;
              break;
            default:
              break;
          }
        }
        if (expect > 0 && closed >= expect) done = true;
        // The histogram's max only grows, so a new max above the threshold
        // marks a batch that carried a slow message; later slow batches below
        // the running max are caught by the count alone.
        if (verifier.messages() > before &&
            verifier.latency().max() > max_before &&
            verifier.latency().max() > slow_ns && slow_batches++ < 20) {
          absl::StrAppendFormat(
              &slow, "%s[%.1f,%.2f,%d]", slow.empty() ? "" : ",",
              (arrival - verifier.first_arrival_ns()) / 1e6,
              verifier.latency().max() / 1e6, verifier.messages() - before);
        }
        break;
      }
      case v1::SubscribeResponse::kGap:
        ++gaps;
        gap_lost += response.gap().lost();
        break;
      case v1::SubscribeResponse::kHeartbeat:
        ++heartbeats;
        break;
      case v1::SubscribeResponse::kAssigned:
        ++assigned;
        if (!response.assigned().revoked()) {
          redelivered_through[response.assigned().connection_id()] =
              response.assigned().possibly_redelivered_through_seq();
        }
        break;
      default:
        break;
    }
  }
  finished.store(true);
  if (done) context.TryCancel();
  const grpc::Status status = reader->Finish();
  watchdog.join();
  const std::string cdf = absl::GetFlag(FLAGS_latency_cdf);
  if (!cdf.empty()) WriteFileAtomically(cdf, verifier.latency().CdfText(1e3));
  // This process's CPU: on one machine the subscribers' share is CPU the
  // load generator and the server do not get.
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  const double cpu_s = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                       (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  absl::PrintF(
      "{\"event\":\"done\",\"role\":\"subscriber\",%s,\"batches\":%d,"
      "\"events\":%d,\"data_events\":%d,\"opened\":%d,\"closed\":%d,"
      "\"rejected\":%d,\"node_changes\":%d,\"seq_jumps\":%d,\"gaps\":%d,"
      "\"gap_lost\":%d,\"heartbeats\":%d,\"assigned\":%d,\"redelivered\":%d,"
      "\"cpu_s\":%.3f,\"timed_out\":%s,\"complete\":%s,\"status\":\"%s\","
      "\"new_max_batches\":[%s]}\n",
      VerifierJsonFields(verifier), batches, events, data_events, opened,
      closed, rejected, node_changes, seq_jumps, gaps, gap_lost, heartbeats,
      assigned, redelivered, cpu_s, timed_out ? "true" : "false",
      (done || (expect == 0 && status.ok())) ? "true" : "false",
      done ? "OK" : absl::StrCat(status.error_code()), slow);
  return 0;
}

}  // namespace
}  // namespace fanin::bench

int main(int argc, char** argv) { return fanin::bench::Main(argc, argv); }
