// One event-loop implementation driving a Chain, and how a run of it is
// measured.
//
// Single-threaded: everything here runs on the calling thread, which becomes
// the loop thread.

#ifndef FANIN_TESTS_BENCH_REACTOR_RUNNER_H_
#define FANIN_TESTS_BENCH_REACTOR_RUNNER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/bench/reactor/chain.h"

namespace fanin::bench {

// A loop under test. The harness calls, in order: Init (untimed), Arm (timed as
// setup), then Chain::Start (untimed), Run (timed), and finally destroys the
// runner (untimed), which must unregister every fd and release the loop without
// closing the chain's fds. The Chain passed to Arm outlives the runner.
class Runner {
 public:
  virtual ~Runner() = default;
  // Creates the loop; fails (e.g. Unavailable) when the requested backend is
  // not the one the library picked.
  virtual absl::Status Init() = 0;
  // Arms read interest on every read end of `chain` and does whatever the
  // library needs for the kernel to watch them all (libraries that register
  // lazily run one non-blocking iteration).
  virtual absl::Status Arm(Chain* chain) = 0;
  // Runs the loop until chain->OnReadable() returns true.
  virtual absl::Status Run() = 0;
};

// A named implementation; `make` returns a fresh Runner for every run.
struct Impl {
  std::string name;
  // An epoll backend: the family the 1.15x floor target and the peer comparison
  // are about.
  bool epoll = false;
  // fanin's own backend (as opposed to the floor or a peer library).
  bool fanin = false;
  // The floor every ratio is taken against.
  bool floor = false;
  std::function<std::unique_ptr<Runner>()> make;
};

// Wall time is CLOCK_MONOTONIC (absl::Now). CPU time is the calling thread's
// (CLOCK_THREAD_CPUTIME_ID): every run keeps its one thread busy (a ready fd is
// always pending), so on an idle machine the two agree, while on a shared one
// the CPU figure leaves out the time spent waiting for a core.
struct Sample {
  absl::Duration setup;      // Arm(), wall
  absl::Duration run;        // Run(), wall
  absl::Duration setup_cpu;  // Arm(), thread CPU
  absl::Duration run_cpu;    // Run(), thread CPU
  int64_t events = 0;        // bytes read = active + writes
  int64_t empty_reads = 0;
};

// Runs `impl` once over `pairs` with `active` tokens and `writes` forwarding
// writes; fails if the loop fails or the chain did not complete (reads !=
// active + writes, bytes left unread).
absl::StatusOr<Sample> MeasureOnce(const Impl& impl, const SocketPairs& pairs,
                                   int active, int64_t writes);

// Checks up front, in a forked child so that an abort (libevent's select past
// FD_SETSIZE) cannot take the caller down, that `impl` completes a short chain
// on a socketpair whose fds are at least `min_fd`. Returns the child's failure
// as a status: Unavailable naming the signal if it died, the child's error text
// otherwise.
absl::Status ProbeHighFd(const Impl& impl, int min_fd);

}  // namespace fanin::bench

#endif  // FANIN_TESTS_BENCH_REACTOR_RUNNER_H_
