// The floor: a bare single-threaded level-triggered epoll reader with no gRPC
// (epoll_reader.h). It accepts, reads (one 64 KiB read per readiness report),
// reassembles and parses the load generator's messages exactly as the
// subscriber does, and prints one JSON line when every expected connection has
// closed (or at
// --timeout / SIGTERM).
//
//   floor --listen=127.0.0.1:0 --ready_file=/tmp/f.ready
//   --expect_connections=1000
//
// The ready file gets "listen default 127.0.0.1:PORT", as fanin_server writes.
// When --expect_connections connections have been accepted it prints
// {"event":"all_accepted",...} at once (scale runs read the RSS then).
#include <signal.h>
#include <sys/resource.h>

#include <atomic>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "tests/bench/e2e/epoll_reader.h"
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

// Parses what the reader reads, as the subscriber does.
struct Floor : public EpollReader::Handler {
  Floor(int message_bytes, uint64_t expect)
      : verifier(message_bytes), expect(expect) {}

  void OnAccepted(uint64_t key) override {
    const int64_t now = MonotonicNanos();
    if (key == 1) first_accept = now;
    last_accept = now;
    if (key == expect) {
      std::printf("{\"event\":\"all_accepted\",\"accepted\":%llu}\n",
                  static_cast<unsigned long long>(key));
      std::fflush(stdout);
    }
  }
  void OnBytes(uint64_t key, absl::string_view bytes) override {
    ++reads;
    verifier.OnBytes(key, bytes, MonotonicNanos());
  }
  void OnClosed(uint64_t key, bool) override {
    verifier.OnClose(key);
    ++closed;
  }

  bool all_closed() const { return expect != 0 && closed >= expect; }

  StreamVerifier verifier;
  const uint64_t expect;
  uint64_t reads = 0, closed = 0;
  int64_t first_accept = 0, last_accept = 0;
};

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  EpollReader reader(absl::GetFlag(FLAGS_listen), "floor");
  const std::string ready_file = absl::GetFlag(FLAGS_ready_file);
  if (!ready_file.empty() &&
      !WriteFileAtomically(
          ready_file,
          absl::StrFormat("listen default 127.0.0.1:%d\n", reader.port()))) {
    std::fprintf(stderr, "floor: cannot write %s\n", ready_file.c_str());
    return 2;
  }
  Floor floor(absl::GetFlag(FLAGS_message_bytes),
              absl::GetFlag(FLAGS_expect_connections));
  const int64_t deadline =
      MonotonicNanos() +
      static_cast<int64_t>(absl::GetFlag(FLAGS_timeout) * 1e9);
  bool timed_out = false;
  reader.Run(floor, [&] {
    timed_out = MonotonicNanos() > deadline;
    return g_stop.load() || floor.all_closed() || timed_out;
  });
  const std::string cdf = absl::GetFlag(FLAGS_latency_cdf);
  if (!cdf.empty()) {
    WriteFileAtomically(cdf, floor.verifier.latency().CdfText(1e3));
  }
  const int64_t accept_span = floor.last_accept - floor.first_accept;
  const uint64_t accepted = reader.accepted();
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  const double cpu_s = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                       (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  absl::PrintF(
      "{\"event\":\"done\",\"role\":\"floor\",%s,\"reads\":%llu,"
      "\"accepted\":%llu,\"closed\":%llu,\"timed_out\":%s,\"accept_s\":%.6f,"
      "\"accept_per_s\":%.1f,\"cpu_s\":%.6f}\n",
      VerifierJsonFields(floor.verifier),
      static_cast<unsigned long long>(floor.reads),
      static_cast<unsigned long long>(accepted),
      static_cast<unsigned long long>(floor.closed),
      timed_out ? "true" : "false", accept_span / 1e9,
      accept_span > 0 ? (accepted - 1) * 1e9 / accept_span : 0.0, cpu_s);
  return 0;
}

}  // namespace
}  // namespace fanin::bench

int main(int argc, char** argv) { return fanin::bench::Main(argc, argv); }
