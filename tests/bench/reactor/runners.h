// Factories for every Runner the benchmark compares. Each returns a fresh,
// un-Init()ed runner.

#ifndef FANIN_TESTS_BENCH_REACTOR_RUNNERS_H_
#define FANIN_TESTS_BENCH_REACTOR_RUNNERS_H_

#include <memory>
#include <string>

#include "tests/bench/reactor/runner.h"

namespace fanin::bench {

// The floor: the least a level-triggered epoll loop can do (epoll_ctl ADD per
// fd, epoll_wait into a fixed array, one callback per ready fd).
std::unique_ptr<Runner> NewFloorRunner();

// libevent 2.1 with its backend forced to `method` ("epoll", "poll" or
// "select") by avoiding every other method; Init() fails if libevent picked
// another.
std::unique_ptr<Runner> NewLibeventRunner(std::string method);

// libev 4 with ev_loop_new(backend | EVFLAG_NOENV); `backend` is an EVBACKEND_*
// bit.
std::unique_ptr<Runner> NewLibevRunner(unsigned int backend);

// libuv 1.x (epoll on Linux) with one uv_poll_t per read end.
std::unique_ptr<Runner> NewLibuvRunner();

}  // namespace fanin::bench

#endif  // FANIN_TESTS_BENCH_REACTOR_RUNNERS_H_
