// The implementations the reactor benchmark compares.

#ifndef FANIN_TESTS_BENCH_REACTOR_IMPLS_H_
#define FANIN_TESTS_BENCH_REACTOR_IMPLS_H_

#include <vector>

#include "tests/bench/reactor/runner.h"

namespace fanin::bench {

// Every implementation, floor first: the hand-written epoll floor, fanin's
// epoll (level, edge), poll and select through EventLoop, libevent (epoll,
// poll, select), libev (epoll, poll, select) and libuv (epoll).
std::vector<Impl> AllImpls();

}  // namespace fanin::bench

#endif  // FANIN_TESTS_BENCH_REACTOR_IMPLS_H_
