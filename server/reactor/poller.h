// Readiness backends for the event loop: epoll (level or edge), poll, select.
//
// A Poller only translates interest masks into one syscall and reports (fd,
// events) pairs. Per-fd state (handlers, generations, pending work) lives in
// EventLoop, so every backend stays small and one test suite covers them all.
//
// Example:
//   auto poller = NewPoller(PollerKind::kPoll);
//   if (!poller.ok()) return poller.status();
//   RETURN_IF_ERROR((*poller)->Watch(fd, kReadable));
//   std::vector<Poller::Ready> ready;
//   RETURN_IF_ERROR((*poller)->Wait(absl::Milliseconds(10), &ready));
#ifndef FANIN_SERVER_REACTOR_POLLER_H_
#define FANIN_SERVER_REACTOR_POLLER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fanin::reactor {

// Event bits, used both as interest (kReadable | kWritable only) and as
// reported readiness (any combination).
inline constexpr uint32_t kReadable = 1u << 0;
inline constexpr uint32_t kWritable = 1u << 1;
// Peer FIN seen (EPOLLRDHUP / POLLRDHUP). The select backend cannot see it:
// there the handler learns it by read() == 0. Data queued before the FIN is
// still readable; kReadable is reported alongside whenever it is.
inline constexpr uint32_t kReadClosed = 1u << 2;
// Both directions gone (EPOLLHUP / POLLHUP). Reported even without interest.
inline constexpr uint32_t kHangup = 1u << 3;
// Socket error pending (EPOLLERR / POLLERR); getsockopt(SO_ERROR) tells which.
// Reported even without interest. The select backend reports errors as
// readable/writable; read() or write() then fails with the error.
inline constexpr uint32_t kError = 1u << 4;

// Readiness backend. Loop thread only (not thread-safe); never owns the fds it
// watches; holds only what its syscall needs.
//
// Semantics every backend shares:
//  - Watch fails with InvalidArgument for fd < 0 and with the errno status
//    for a closed fd. Watching an fd twice is a caller error (EventLoop keeps
//    the table that prevents it; poll/select also say AlreadyExists).
//  - Rewatch(fd, 0) stops all reports for fd, including kHangup and kError,
//    so a dead fd whose interest is removed never keeps Wait busy.
//  - Unwatch must be called before the fd is closed.
//  - Level-triggered: an fd is reported on every Wait while it stays ready.
//    Edge-triggered (edge_triggered() == true): only on a new readiness edge
//    (or after Rewatch), so the caller must drain or remember.
class Poller {
 public:
  struct Ready {
    int fd;
    uint32_t events;  // k* bits
  };

  virtual ~Poller() = default;

  // Starts watching fd for interest (kReadable | kWritable, or 0).
  virtual absl::Status Watch(int fd, uint32_t interest) = 0;
  // Replaces the interest of a watched fd; interest 0 = watch nothing.
  virtual absl::Status Rewatch(int fd, uint32_t interest) = 0;
  // Stops watching fd. Call before closing it.
  virtual absl::Status Unwatch(int fd) = 0;
  // Blocks at most `timeout` (absl::InfiniteDuration() = until something is
  // ready; rounded up to whole milliseconds for epoll/poll) and appends every
  // ready fd to *ready, at most once per fd. EINTR returns OkStatus with
  // nothing appended.
  virtual absl::Status Wait(absl::Duration timeout,
                            std::vector<Ready>* ready) = 0;
  // "epoll", "epoll-edge", "poll" or "select".
  virtual absl::string_view name() const = 0;
  virtual bool edge_triggered() const { return false; }
};

enum class PollerKind { kEpollLevel, kEpollEdge, kPoll, kSelect };

// Accepts "epoll" (= level), "epoll-level", "epoll-edge", "poll", "select".
// Error: InvalidArgument naming the accepted values.
absl::StatusOr<PollerKind> ParsePollerKind(absl::string_view name);

// "epoll", "epoll-edge", "poll" or "select" (what the --poller flag takes).
absl::string_view PollerKindName(PollerKind kind);

// Creates a backend. Errors: the syscall's status (e.g. epoll_create1).
absl::StatusOr<std::unique_ptr<Poller>> NewPoller(PollerKind kind);

}  // namespace fanin::reactor

#endif  // FANIN_SERVER_REACTOR_POLLER_H_
