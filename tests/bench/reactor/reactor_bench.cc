// Reactor benchmark after libevent's test/bench.c: per-event cost of a chain of
// one-byte writes over N socketpairs with A active, for a hand-written epoll
// floor, fanin's EventLoop backends and libevent, libev and libuv, side by side
// in one run. See docs/BENCHMARKS.md ("Reactor").
//
// Each (N, A) cell: probe every implementation once in a forked child at the
// highest fd of the cell (a select backend that aborts past FD_SETSIZE is shown
// as "n/a"), calibrate the number of writes per implementation so one run
// lasts about --run_ms, then --rounds rounds in which every implementation runs
// once, the order rotated each round so machine noise hits all alike. Prints
// medians and their ratio to the floor's median as Markdown tables.

#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

// ev.h before event2/event.h: libevent #defines EV_READ, which libev's enum
// declares.
#include <ev.h>
#include <event2/event.h>
#include <uv.h>

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
#include "tests/bench/reactor/impls.h"
#include "tests/bench/reactor/runner.h"

ABSL_FLAG(std::vector<std::string>, n,
          std::vector<std::string>({"100", "1000", "10000"}),
          "socketpair counts N (capped to what fits RLIMIT_NOFILE)");
ABSL_FLAG(std::vector<std::string>, a, std::vector<std::string>({"1", "100"}),
          "active token counts A");
ABSL_FLAG(int, rounds, 9,
          "measured rounds per cell (medians over them; at least 5 for the "
          "targets)");
ABSL_FLAG(int, run_ms, 60,
          "calibrated CPU time of one measured run, per implementation");
ABSL_FLAG(int64_t, min_writes, 100, "fewest writes in one run");
ABSL_FLAG(int64_t, max_writes, 400000, "most writes in one run");
ABSL_FLAG(std::string, only, "",
          "comma-separated substrings: run only implementations whose name "
          "contains one (the floor always runs)");

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

// One implementation in one (N, A) cell: a value per round.
struct Cell {
  bool available = false;
  std::string why_not;
  int64_t writes = 0;  // per run
  std::vector<double> setup_ns;
  std::vector<double> setup_cpu_ns;
  std::vector<double> event_ns;
  std::vector<double> event_cpu_ns;
  int64_t empty_reads = 0;
  int64_t events = 0;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
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
  const std::string digits = absl::StrCat(v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// A probe failure at or past FD_SETSIZE that killed the child or was refused
// as a resource limit is the known select limit; anything else is shown with
// its message.
std::string WhyNot(const absl::Status& probe, int max_fd) {
  if (max_fd >= FD_SETSIZE &&
      (absl::IsUnavailable(probe) || absl::IsResourceExhausted(probe))) {
    return "n/a (FD_SETSIZE)";
  }
  return absl::StrCat("n/a (", probe.message(), ")");
}

// Medians of one implementation in one cell, for the targets.
struct Result {
  int n;
  int a;
  const Impl* impl;
  double event_ns;
  double event_cpu_ns;
  // Per round, in round order: paired with another implementation's values of
  // the same round they give ratios in which slow drifts of the machine cancel.
  std::vector<double> round_ns;
  std::vector<double> round_cpu_ns;
};

// Median over rounds of x's value / y's value in the same round.
double PairedRatio(const std::vector<double>& x, const std::vector<double>& y) {
  std::vector<double> ratios;
  for (size_t r = 0; r < x.size() && r < y.size(); ++r) {
    if (y[r] > 0) ratios.push_back(x[r] / y[r]);
  }
  return Median(std::move(ratios));
}

void PrintHeader(int nofile) {
  utsname u = {};
  ::uname(&u);
  double load[3] = {0, 0, 0};
  ::getloadavg(load, 3);
  std::printf("# fanin reactor benchmark (libevent test/bench.c method)\n\n");
  std::printf(
      "- host: %s %s, %ld online CPUs, load average %.2f at start; "
      "RLIMIT_NOFILE %d\n",
      u.sysname, u.release, ::sysconf(_SC_NPROCESSORS_ONLN), load[0], nofile);
  const int policy = ::sched_getscheduler(0);
  sched_param param = {};
  ::sched_getparam(0, &param);
  std::printf(
      "- scheduling: %s\n",
      policy == SCHED_FIFO
          ? absl::StrCat("SCHED_FIFO priority ", param.sched_priority,
                         " (run.sh: other processes wait, the figures keep "
                         "only this process's own cost)")
                .c_str()
          : "SCHED_OTHER (other processes' load shows in the wall times)");
  std::printf("- peers: libevent %s, libev %d.%d, libuv %s\n",
              event_get_version(), ev_version_major(), ev_version_minor(),
              uv_version_string());
  std::printf(
      "- %d rounds per cell, implementations interleaved (order rotated each "
      "round); writes per run calibrated to ~%d ms of CPU per implementation\n",
      absl::GetFlag(FLAGS_rounds), absl::GetFlag(FLAGS_run_ms));
  std::printf(
      "- setup: arming read interest on the N read ends (libev, libuv: plus "
      "the non-blocking iteration that hands their queued registrations to "
      "the kernel). event: one read callback (read 1 byte, write 1 byte to "
      "the next pair); cost = run time / bytes read\n");
  std::printf(
      "- wall = CLOCK_MONOTONIC; CPU = CLOCK_THREAD_CPUTIME_ID of the one "
      "loop thread (a run never idles, so the two agree unless other "
      "processes take the core). Figures are medians over the rounds; x = "
      "ratio to the floor's median in the same cell\n\n");
  std::fflush(stdout);
}

int Main() {
  ::signal(SIGALRM, &OnWatchdog);
  rlimit rl = {};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  const int nofile =
      rl.rlim_cur > (1u << 30) ? (1 << 30) : static_cast<int>(rl.rlim_cur);
  const std::vector<int> ns = ParseInts(absl::GetFlag(FLAGS_n), "n");
  const std::vector<int> as = ParseInts(absl::GetFlag(FLAGS_a), "a");
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  const double run_target_ns = absl::GetFlag(FLAGS_run_ms) * 1e6;
  const int64_t min_writes =
      std::max<int64_t>(1, absl::GetFlag(FLAGS_min_writes));
  const int64_t max_writes =
      std::max(min_writes, absl::GetFlag(FLAGS_max_writes));

  std::vector<Impl> impls;
  {
    const std::vector<std::string> only =
        absl::StrSplit(absl::GetFlag(FLAGS_only), ',', absl::SkipEmpty());
    for (Impl& impl : AllImpls()) {
      bool keep = impl.floor || only.empty();
      for (const std::string& o : only) {
        keep = keep || impl.name.find(o) != std::string::npos;
      }
      if (keep) impls.push_back(std::move(impl));
    }
  }
  PrintHeader(nofile);

  std::vector<Result> results;
  const absl::Time start = absl::Now();
  for (const int n_asked : ns) {
    const int n = std::min(n_asked, (nofile - kReservedFds) / 2);
    // Pairs take the lowest free fds, so the highest fd of the cell is about
    // 2n + 2: probe there before creating them.
    const int max_fd = 2 * n + 2;
    std::vector<absl::Status> probes;
    for (const Impl& impl : impls) probes.push_back(ProbeHighFd(impl, max_fd));

    absl::StatusOr<SocketPairs> pairs = SocketPairs::Create(n);
    if (!pairs.ok()) {
      std::printf("N=%d: %s\n", n, pairs.status().ToString().c_str());
      return 1;
    }
    for (const int a : as) {
      if (a > n) continue;
      std::vector<Cell> cells(impls.size());
      for (size_t k = 0; k < impls.size(); ++k) {
        Cell& cell = cells[k];
        if (!probes[k].ok()) {
          cell.why_not = WhyNot(probes[k], pairs->max_fd());
          continue;
        }
        // Calibration, also the warm-up: per-event cost spans 1 us (epoll) to
        // 10 ms (poll over 10,000 fds on a busy machine), so a fixed write
        // count would be too short for one or too long for the other. A short
        // first run sizes a second one of ~10 ms, whose cost sizes the rounds.
        double per_event = 0;
        bool failed = false;
        for (int64_t probe_writes = 100; probe_writes > 0;) {
          absl::StatusOr<Sample> s = Measure(impls[k], *pairs, a, probe_writes);
          if (!s.ok()) {
            cell.why_not = absl::StrCat("n/a (", s.status().message(), ")");
            pairs->Drain();
            failed = true;
            break;
          }
          per_event =
              std::max(1.0, absl::ToDoubleNanoseconds(s->run_cpu) / s->events);
          const int64_t next = static_cast<int64_t>(1e7 / per_event);
          probe_writes = next > 2 * probe_writes ? next : 0;
        }
        if (failed) continue;
        int64_t writes = static_cast<int64_t>(run_target_ns / per_event);
        writes = writes >= 10000 ? writes / 1000 * 1000 : writes / 10 * 10;
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
          const double events = static_cast<double>(s->events);
          cell.setup_ns.push_back(absl::ToDoubleNanoseconds(s->setup));
          cell.setup_cpu_ns.push_back(absl::ToDoubleNanoseconds(s->setup_cpu));
          cell.event_ns.push_back(absl::ToDoubleNanoseconds(s->run) / events);
          cell.event_cpu_ns.push_back(absl::ToDoubleNanoseconds(s->run_cpu) /
                                      events);
          cell.empty_reads += s->empty_reads;
          cell.events = s->events;
        }
      }

      const Cell* floor = nullptr;
      for (size_t k = 0; k < impls.size(); ++k) {
        if (impls[k].floor) floor = &cells[k];
      }
      const double floor_setup = floor ? Median(floor->setup_ns) : 0;
      const double floor_setup_cpu = floor ? Median(floor->setup_cpu_ns) : 0;
      const double floor_event = floor ? Median(floor->event_ns) : 0;
      const double floor_event_cpu = floor ? Median(floor->event_cpu_ns) : 0;
      const std::string capped =
          n == n_asked
              ? ""
              : absl::StrCat(" (asked ", Thousands(n_asked), "; its ",
                             Thousands(2 * n_asked),
                             " fds do not fit RLIMIT_NOFILE ", nofile, ")");
      std::printf("## N = %s socketpairs%s, A = %d\n\n", Thousands(n).c_str(),
                  capped.c_str(), a);
      std::printf(
          "| implementation | setup ms (wall) | setup ns/fd (wall) | x | "
          "setup ns/fd (CPU) | x | ns/event (wall) | x | ns/event (CPU) | x | "
          "events/run |\n");
      std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
      for (size_t k = 0; k < impls.size(); ++k) {
        const Cell& cell = cells[k];
        if (!cell.available) {
          std::printf("| %s | %s | | | | | | | | | |\n", impls[k].name.c_str(),
                      cell.why_not.c_str());
          continue;
        }
        const double setup = Median(cell.setup_ns);
        const double setup_cpu = Median(cell.setup_cpu_ns);
        const double event = Median(cell.event_ns);
        const double event_cpu = Median(cell.event_cpu_ns);
        const std::string empty =
            cell.empty_reads > 0
                ? absl::StrCat(" (", cell.empty_reads, " empty reads)")
                : "";
        std::printf(
            "| %s | %.2f | %.0f | %s | %.0f | %s | %.0f | %s | %.0f | %s | "
            "%s%s |\n",
            impls[k].name.c_str(), setup / 1e6, setup / n,
            Ratio(setup, floor_setup).c_str(), setup_cpu / n,
            Ratio(setup_cpu, floor_setup_cpu).c_str(), event,
            Ratio(event, floor_event).c_str(), event_cpu,
            Ratio(event_cpu, floor_event_cpu).c_str(),
            Thousands(cell.events).c_str(), empty.c_str());
        results.push_back({n, a, &impls[k], event, event_cpu, cell.event_ns,
                           cell.event_cpu_ns});
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }

  // The targets, at the largest N: fanin's epoll within 1.15x of the floor,
  // and no slower than the fastest peer on its epoll backend.
  int n_top = 0;
  for (const Result& r : results) n_top = std::max(n_top, r.n);
  std::printf(
      "## Targets at N = %s (ratios of medians, wall / CPU; verdicts on "
      "those. Per-round pairs: median over rounds of the ratio within one "
      "round)\n\n",
      Thousands(n_top).c_str());
  for (const int a : as) {
    const Result* floor = nullptr;
    const Result* best_peer = nullptr;
    for (const Result& r : results) {
      if (r.n != n_top || r.a != a) continue;
      if (r.impl->floor) floor = &r;
      if (r.impl->epoll && !r.impl->fanin && !r.impl->floor &&
          (best_peer == nullptr || r.event_ns < best_peer->event_ns)) {
        best_peer = &r;
      }
    }
    for (const Result& r : results) {
      if (r.n != n_top || r.a != a || !r.impl->fanin || !r.impl->epoll ||
          floor == nullptr) {
        continue;
      }
      const double wall = r.event_ns / floor->event_ns;
      const double cpu = r.event_cpu_ns / floor->event_cpu_ns;
      std::printf(
          "- A = %d, %s: %.0f / %.0f ns/event = %.2fx / %.2fx the floor "
          "(target <= 1.15x: %s; per-round pairs %.2fx / %.2fx)",
          a, r.impl->name.c_str(), r.event_ns, r.event_cpu_ns, wall, cpu,
          wall <= 1.15 && cpu <= 1.15   ? "met"
          : wall <= 1.15 || cpu <= 1.15 ? "met on one clock only"
                                        : "MISSED",
          PairedRatio(r.round_ns, floor->round_ns),
          PairedRatio(r.round_cpu_ns, floor->round_cpu_ns));
      if (best_peer != nullptr) {
        const double pw = r.event_ns / best_peer->event_ns;
        const double pc = r.event_cpu_ns / best_peer->event_cpu_ns;
        std::printf(
            "; %.2fx / %.2fx the fastest peer epoll, %s (target <= 1.00x: "
            "%s; per-round pairs %.2fx / %.2fx)",
            pw, pc, best_peer->impl->name.c_str(),
            pw <= 1 && pc <= 1   ? "met"
            : pw <= 1 || pc <= 1 ? "met on one clock only"
                                 : "MISSED",
            PairedRatio(r.round_ns, best_peer->round_ns),
            PairedRatio(r.round_cpu_ns, best_peer->round_cpu_ns));
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
