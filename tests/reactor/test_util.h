// Helpers for reactor, net and core tests: real fds and running a loop until
// a condition holds. The poller kinds as test parameters are in
// tests/testing/pollers.h.
#ifndef FANIN_TESTS_REACTOR_TEST_UTIL_H_
#define FANIN_TESTS_REACTOR_TEST_UTIL_H_

#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/reactor/event_loop.h"
#include "server/reactor/poller.h"

namespace fanin::testing {

// A connected AF_UNIX stream pair, both ends non-blocking and CLOEXEC.
// Fails the test (and returns {-1, -1}) on error.
std::pair<int, int> UnixPair();

// A connected loopback TCP pair (client, server), both non-blocking.
std::pair<int, int> TcpPair();

// Writes all of data to a non-blocking fd, or as much as fits; returns bytes.
size_t WriteSome(int fd, const std::string& data);

// Reads everything currently available (non-blocking); sets *eof on read 0.
std::string ReadAvailable(int fd, bool* eof = nullptr, int* error = nullptr);

// Runs loop on the calling thread until done() (checked every millisecond
// from a timer, on the loop thread) or timeout; returns done().
bool RunLoopUntil(reactor::EventLoop* loop, const std::function<bool()>& done,
                  absl::Duration timeout = absl::Seconds(20));

// Polls done() from the calling thread until it holds or timeout.
bool WaitFor(const std::function<bool()>& done,
             absl::Duration timeout = absl::Seconds(20));

// User + system CPU time of this process.
absl::Duration ProcessCpuTime();

// Runs an EventLoop on its own thread for the lifetime of the object.
class LoopThread {
 public:
  explicit LoopThread(reactor::EventLoop* loop);
  ~LoopThread();  // Stop() and join
  // Runs fn on the loop thread and waits for it.
  void RunSync(std::function<void()> fn);

 private:
  reactor::EventLoop* loop_;
  std::thread thread_;
};

}  // namespace fanin::testing

#endif  // FANIN_TESTS_REACTOR_TEST_UTIL_H_
