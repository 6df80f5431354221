// A Shard on a real reactor::EventLoop (run on its own thread) publishing to
// a real fanout::EventHub, and one subscription that the test reads: the
// pieces of server/core without listeners, threads of gRPC or FaninCore.
// A test hands one end of a socket pair to a Connection and drives the other.
//
// Example:
//   CoreHarness h(reactor::PollerKind::kPoll, {});
//   auto [peer, mine] = testing::UnixPair();
//   uint64_t id = h.Adopt(mine);
//   testing::WriteSome(peer, "hi");
//   ASSERT_TRUE(h.WaitUntil([&] { return h.Payload(id) == "hi"; }));
//
// Waits poll the subscription with a deadline; nothing sleeps for a fixed
// time.
#ifndef FANIN_TESTS_CORE_CORE_HARNESS_H_
#define FANIN_TESTS_CORE_CORE_HARNESS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "fanin/v1/fanin.pb.h"
#include "gtest/gtest.h"
#include "server/core/connection.h"
#include "server/core/fanin_core.h"
#include "server/core/shard.h"
#include "server/fanout/event_hub.h"
#include "server/reactor/event_loop.h"
#include "tests/reactor/test_util.h"

namespace fanin::coretest {

struct HarnessOptions {
  core::CoreOptions core;
  fanout::HubOptions hub;
  bool pull = false;      // the listener's mode
  bool lossless = false;  // the test's subscription
  size_t max_connections = 100;
  size_t max_connections_per_ip = 0;
};

class CoreHarness {
 public:
  CoreHarness(reactor::PollerKind kind, HarnessOptions options);
  // Stops the loop first; connections still open are deleted unpublished.
  ~CoreHarness();

  // Takes a slot for `peer_host` and starts a connection on `fd` (on the
  // loop thread); its id, or 0 (test failed) when it could not start.
  uint64_t Adopt(int fd, const std::string& peer_host = "");

  // Runs fn on the loop thread and waits for it.
  void RunSync(std::function<void()> fn) { loop_thread_->RunSync(fn); }
  // Runs fn against connection `id` on the loop thread; fails the test when
  // there is no such connection.
  void WithConnection(uint64_t id, std::function<void(core::Connection&)> fn);
  // Connections the shard holds (asked on the loop thread).
  size_t ConnectionCount();
  // The connection's FillInfo (on the loop thread).
  fanin::v1::Connection Info(uint64_t id);

  // Reads the subscription until pred() holds; false at the deadline.
  bool WaitUntil(const std::function<bool()>& pred,
                 absl::Duration timeout = absl::Seconds(10));
  // Reads whatever the subscription has now.
  void Drain();
  // Waits for the first event of `kind` on `id`.
  std::optional<fanin::v1::Event> WaitEvent(
      uint64_t id, fanin::v1::EventKind kind,
      absl::Duration timeout = absl::Seconds(10));

  // What the subscription has delivered so far, for connection `id`.
  std::vector<fanin::v1::Event> Events(uint64_t id) const;
  std::vector<fanin::v1::EventKind> Kinds(uint64_t id) const;
  // The concatenated Data payloads and the sizes of the Data events.
  std::string Payload(uint64_t id) const;
  std::vector<size_t> DataSizes(uint64_t id) const;
  size_t Count(uint64_t id, fanin::v1::EventKind kind) const;

  fanout::EventHub& hub() { return hub_; }
  core::Shard& shard() { return *shard_; }
  core::ConnectionSlots& slots() { return slots_; }
  reactor::EventLoop& loop() { return *loop_; }
  const core::CoreOptions& options() const { return options_.core; }

 private:
  const HarnessOptions options_;
  fanout::EventHub hub_;
  std::shared_ptr<fanout::EventHub::Subscription> sub_;
  std::unique_ptr<reactor::EventLoop> loop_;
  core::ConnectionSlots slots_;
  core::SetupCounters setup_counters_;
  core::ListenerInfo listener_;
  std::unique_ptr<core::Shard> shard_;
  std::unique_ptr<testing::LoopThread> loop_thread_;
  uint64_t next_id_ = 1;
  std::vector<fanout::EventPtr> events_;  // test thread only
};

// Deterministic bytes: "0123456789abcdef..." repeated, so order errors show.
std::string Pattern(size_t n);
// Sets SO_SNDBUF small, so writes queue. (Not SO_RCVBUF on a TCP peer:
// below loopback's MSS the window stalls for seconds.)
void ShrinkBuffers(int fd);
// True when two large byte strings are equal; says where they differ
// instead of printing them.
::testing::AssertionResult SameBytes(const std::string& got,
                                     const std::string& want);
// True once a read of the non-blocking `fd` returns EOF (bytes before it are
// dropped); false at the deadline.
bool PeerSeesEof(int fd);
// Reads a non-blocking `fd` until `n` bytes arrived; what came by the
// deadline.
std::string ReadBytes(int fd, size_t n);

}  // namespace fanin::coretest

#endif  // FANIN_TESTS_CORE_CORE_HARNESS_H_
