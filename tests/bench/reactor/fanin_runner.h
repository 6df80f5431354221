// fanin's own reactor as a benchmark Runner: kept apart from the peers' runners
// so they build and run without server/reactor.

#ifndef FANIN_TESTS_BENCH_REACTOR_FANIN_RUNNER_H_
#define FANIN_TESTS_BENCH_REACTOR_FANIN_RUNNER_H_

#include <memory>

#include "server/reactor/poller.h"
#include "tests/bench/reactor/runner.h"

namespace fanin::bench {

// fanin::reactor::EventLoop on `kind`, one IoHandler per read end, as the
// server uses it. On the edge-triggered backend the handler follows the edge
// contract (Chain::OnReadableDrain, and Redispatch when the read filled its
// buffer).
std::unique_ptr<Runner> NewFaninRunner(fanin::reactor::PollerKind kind);

}  // namespace fanin::bench

#endif  // FANIN_TESTS_BENCH_REACTOR_FANIN_RUNNER_H_
