// Reactor benchmark after libevent's test/bench.c: per-event cost of a chain of
// one-byte writes over N socketpairs with A active, for a hand-written epoll
// floor, fanin's EventLoop backends and libevent, libev and libuv, side by side
// in one run. See docs/BENCHMARKS.md ("Reactor").
//
// Each (N, A) cell: probe every implementation once in a forked child at the
// highest fd of the cell (a select backend that aborts past FD_SETSIZE is shown
// as "n/a"), calibrate the number of writes per implementation so one run lasts
// about --run_ms, then --rounds rounds in which every implementation runs once,
// the order rotated each round so machine noise hits all alike. Prints medians
// and their ratio to the floor as Markdown tables.

#include <ev.h>
#include <event2/event.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/bench/reactor/chain.h"
#include "tests/bench/reactor/runner.h"

ABSL_FLAG(std::vector<std::string>, n,
          std::vector<std::string>({"100", "1000", "10000"}),
          "socketpair counts N (capped to what fits RLIMIT_NOFILE)");
ABSL_FLAG(std::vector<std::string>, a, std::vector<std::string>({"1", "100"}),
          "active token counts A");
ABSL_FLAG(
    int, rounds, 7,
    "measured rounds per cell (median over them; at least 5 for targets)");
ABSL_FLAG(int, run_ms, 60,
          "calibrated duration of one measured run, per implementation");
ABSL_FLAG(int64_t, min_writes, 1000, "fewest writes in one run");
ABSL_FLAG(int64_t, max_writes, 400000, "most writes in one run");
ABSL_FLAG(std::string, only, "",
          "comma-separated substrings: run only implementations whose name "
          "contains one (the "
          "floor always runs)");

namespace fanin::bench {
namespace {

// fds besides the pairs: stdio, each loop's own (epoll fd, eventfd, libuv's),
// the probe's pipe.
constexpr int kReservedFds = 100;

// A lost token would block a loop forever; no single run may take this long.
constexpr unsigned kRunWatchdogSeconds = 60;
const char* g_running = "";

void OnWatchdog(int) {
  const char prefix[] = "\nreactor_bench: a run hung (a lost token?): ";
  ssize_t ignored = ::write(STDERR_FILENO, prefix, sizeof(prefix) - 1);
  ignored = ::write(STDERR_FILENO, g_running, std::strlen(g_running));
  ignored = ::write(STDERR_FILENO, "\n", 1);
  (void)ignored;
  ::_exit(3);
}

// MeasureOnce under the watchdog.
absl::StatusOr<Sample> Measure(const Impl& impl, const SocketPairs& pairs,
                               int active, int64_t writes) {
  g_running = impl.name.c_str();
  ::alarm(kRunWatchdogSeconds);
  absl::StatusOr<Sample> sample = MeasureOnce(impl, pairs, active, writes);
  ::alarm(0);
  return sample;
}

struct Cell {
  bool available = false;
  std::string why_not;
  int64_t writes = 0;  // per run
  std::vector<double> setup_ns;
  std::vector<double> event_ns;
  int64_t empty_reads = 0;
  int64_t events = 0;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

double Min(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}

std::vector<int> ParseInts(const std::vector<std::string>& values,
                           const char* flag) {
  std::vector<int> out;
  for (const std::string& v : values) {
    int x;
    if (!absl::SimpleAtoi(v, &x) || x < 1) {
      std::fprintf(stderr, "--%s: '%s' is not a positive integer\n", flag,
                   v.c_str());
      std::exit(2);
    }
    out.push_back(x);
  }
  return out;
}

std::string Ratio(double x, double floor) {
  if (floor <= 0) return "-";
  return absl::StrFormat("%.2fx", x / floor);
}

std::string Thousands(int64_t v) {
  std::string digits = absl::StrCat(v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// Why a probe failure means "cannot run this size": a select backend that dies
// or refuses fds at or past FD_SETSIZE is the known case; anything else is
// shown with its message.
std::string WhyNot(const absl::Status& probe, int max_fd) {
  if (max_fd >= FD_SETSIZE &&
      (absl::IsUnavailable(probe) || absl::IsResourceExhausted(probe))) {
    return "n/a (FD_SETSIZE)";
  }
  return absl::StrCat("n/a (", probe.message(), ")");
}

struct Result {
  int n;
  int a;
  std::string name;
  double event_ns;
  bool available;
};

void PrintHeader(int nofile) {
  utsname u = {};
  ::uname(&u);
  std::printf("# fanin reactor benchmark (libevent test/bench.c method)\n\n");
  std::printf("- host: %s %s, %ld online CPUs; RLIMIT_NOFILE %d\n", u.sysname,
              u.release, ::sysconf(_SC_NPROCESSORS_ONLN), nofile);
  std::printf("- peers: libevent %s, libev %d.%d, libuv %s\n",
              event_get_version(), ev_version_major(), ev_version_minor(),
              uv_version_string());
  std::printf(
      "- %d rounds per cell, implementations interleaved (order rotated each "
      "round); one run "
      "calibrated to ~%d ms\n",
      absl::GetFlag(FLAGS_rounds), absl::GetFlag(FLAGS_run_ms));
  std::printf(
      "- setup = arming read interest on N fds (libev/libuv: plus the "
      "non-blocking iteration "
      "that makes their lazy registrations reach the kernel); per event = run "
      "time / bytes "
      "read; medians, ratio = median / floor's median in the same cell\n\n");
  std::fflush(stdout);
}

int Main() {
  ::signal(SIGALRM, &OnWatchdog);
  rlimit rl = {};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  const int nofile = static_cast<int>(rl.rlim_cur);
  const std::vector<int> ns = ParseInts(absl::GetFlag(FLAGS_n), "n");
  const std::vector<int> as = ParseInts(absl::GetFlag(FLAGS_a), "a");
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  const absl::Duration run_target =
      absl::Milliseconds(absl::GetFlag(FLAGS_run_ms));
  const int64_t min_writes = absl::GetFlag(FLAGS_min_writes);
  const int64_t max_writes =
      std::max(min_writes, absl::GetFlag(FLAGS_max_writes));

  std::vector<Impl> impls;
  {
    const std::vector<std::string> only =
        absl::StrSplit(absl::GetFlag(FLAGS_only), ',', absl::SkipEmpty());
    for (Impl& impl : AllImpls()) {
      bool keep = impl.floor || only.empty();
      for (const std::string& o : only)
        keep = keep || impl.name.find(o) != std::string::npos;
      if (keep) impls.push_back(std::move(impl));
    }
  }
  PrintHeader(nofile);

  std::vector<Result> results;
  const absl::Time start = absl::Now();
  for (int n_asked : ns) {
    const int n_cap = (nofile - kReservedFds) / 2;
    const int n = std::min(n_asked, n_cap);
    // Pairs take the lowest free fds, so the highest fd of the cell is about 2n
    // + 2.
    const int max_fd = 2 * n + 2;
    std::vector<absl::Status> probes;
    for (const Impl& impl : impls) probes.push_back(ProbeHighFd(impl, max_fd));

    absl::StatusOr<SocketPairs> pairs = SocketPairs::Create(n);
    if (!pairs.ok()) {
      std::printf("N=%d: %s\n", n, pairs.status().ToString().c_str());
      return 1;
    }
    for (int a : as) {
      if (a > n) continue;
      std::vector<Cell> cells(impls.size());
      for (size_t k = 0; k < impls.size(); ++k) {
        Cell& cell = cells[k];
        if (!probes[k].ok()) {
          cell.why_not = WhyNot(probes[k], pairs->max_fd());
          continue;
        }
        // Calibration run, also the warm-up: per-event cost spans 1 us (epoll)
        // to 1 ms (select over 10,000 fds), so a fixed write count would be too
        // short for one or too long for the other.
        constexpr int64_t kCalibrationWrites = 2000;
        absl::StatusOr<Sample> s =
            Measure(impls[k], *pairs, a, kCalibrationWrites);
        if (!s.ok()) {
          cell.why_not = absl::StrCat("n/a (", s.status().message(), ")");
          pairs->Drain();
          continue;
        }
        const double per_event = absl::ToDoubleNanoseconds(s->run) / s->events;
        const int64_t writes =
            static_cast<int64_t>(absl::ToDoubleNanoseconds(run_target) /
                                 std::max(per_event, 1.0)) /
            1000 * 1000;
        cell.writes = std::clamp(writes, min_writes, max_writes);
        cell.available = true;
      }
      for (int r = 0; r < rounds; ++r) {
        for (size_t j = 0; j < impls.size(); ++j) {
          const size_t k = (j + r) % impls.size();
          Cell& cell = cells[k];
          if (!cell.available) continue;
          absl::StatusOr<Sample> s = Measure(impls[k], *pairs, a, cell.writes);
          if (!s.ok()) {
            cell.available = false;
            cell.why_not =
                absl::StrCat("n/a (failed: ", s.status().message(), ")");
            pairs->Drain();
            continue;
          }
          cell.setup_ns.push_back(absl::ToDoubleNanoseconds(s->setup));
          cell.event_ns.push_back(absl::ToDoubleNanoseconds(s->run) /
                                  s->events);
          cell.empty_reads += s->empty_reads;
          cell.events = s->events;
        }
      }

      size_t floor_k = 0;
      for (size_t k = 0; k < impls.size(); ++k) {
        if (impls[k].floor) floor_k = k;
      }
      const double floor_setup = Median(cells[floor_k].setup_ns);
      const double floor_event = Median(cells[floor_k].event_ns);
      std::printf("## N = %s socketpairs%s, A = %d\n\n", Thousands(n).c_str(),
                  n == n_asked ? ""
                               : absl::StrCat(" (asked ", Thousands(n_asked),
                                              "; 2N fds must fit ",
                                              "RLIMIT_NOFILE ", nofile, ")")
                                     .c_str(),
                  a);
      std::printf(
          "| implementation | setup us | setup ns/fd | setup vs floor | "
          "ns/event (median) | "
          "vs floor | ns/event (min) | events/run |\n");
      std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
      for (size_t k = 0; k < impls.size(); ++k) {
        const Cell& cell = cells[k];
        if (!cell.available) {
          std::printf("| %s | %s | | | | | | |\n", impls[k].name.c_str(),
                      cell.why_not.c_str());
          results.push_back({n, a, impls[k].name, 0, false});
          continue;
        }
        const double setup = Median(cell.setup_ns);
        const double event = Median(cell.event_ns);
        std::printf(
            "| %s | %.1f | %.1f | %s | %.0f | %s | %.0f | %s%s |\n",
            impls[k].name.c_str(), setup / 1000, setup / n,
            Ratio(setup, floor_setup).c_str(), event,
            Ratio(event, floor_event).c_str(), Min(cell.event_ns),
            Thousands(cell.events).c_str(),
            cell.empty_reads > 0
                ? absl::StrCat(" (", cell.empty_reads, " empty reads)").c_str()
                : "");
        results.push_back({n, a, impls[k].name, event, true});
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }

  // Targets, at the largest N: fanin's epoll within 1.15x of the floor, and no
  // slower than the fastest peer epoll backend.
  const int n_top =
      results.empty() ? 0
                      : std::max_element(results.begin(), results.end(),
                                         [](const Result& x, const Result& y) {
                                           return x.n < y.n;
                                         })
                            ->n;
  std::printf("## Targets at N = %s\n\n", Thousands(n_top).c_str());
  for (int a : as) {
    double floor = 0, best_peer = 0;
    std::string best_peer_name;
    for (const Result& r : results) {
      if (r.n != n_top || r.a != a || !r.available) continue;
      for (const Impl& impl : impls) {
        if (impl.name != r.name) continue;
        if (impl.floor) floor = r.event_ns;
        if (impl.epoll && !impl.fanin && !impl.floor &&
            (best_peer_name.empty() || r.event_ns < best_peer)) {
          best_peer = r.event_ns;
          best_peer_name = r.name;
        }
      }
    }
    for (const Result& r : results) {
      if (r.n != n_top || r.a != a || !r.available) continue;
      bool fanin_epoll = false;
      for (const Impl& impl : impls)
        fanin_epoll |= impl.name == r.name && impl.fanin && impl.epoll;
      if (!fanin_epoll || floor <= 0) continue;
      const double vs_floor = r.event_ns / floor;
      std::printf(
          "- A = %d, %s: %.0f ns/event = %.2fx floor (target <= 1.15x: %s)", a,
          r.name.c_str(), r.event_ns, vs_floor,
          vs_floor <= 1.15 ? "met" : "MISSED");
      if (!best_peer_name.empty()) {
        std::printf(
            "; fastest peer %s %.0f ns/event = %.2fx of it (target <= 1.00x: "
            "%s)",
            best_peer_name.c_str(), best_peer, r.event_ns / best_peer,
            r.event_ns <= best_peer ? "met" : "MISSED");
      }
      std::printf("\n");
    }
  }
  std::printf("\ntotal wall time %.1f s\n",
              absl::ToDoubleSeconds(absl::Now() - start));
  return 0;
}

}  // namespace
}  // namespace fanin::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return fanin::bench::Main();
}
