#include "server/reactor/poll_poller.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"

namespace fanin::reactor {
namespace {

int TimeoutMs(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return -1;
  if (timeout <= absl::ZeroDuration()) return 0;
  int64_t ms =
      absl::ToInt64Milliseconds(absl::Ceil(timeout, absl::Milliseconds(1)));
  return static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

short PollEvents(uint32_t interest) {
  short events = POLLRDHUP;
  if (interest & kReadable) events |= POLLIN;
  if (interest & kWritable) events |= POLLOUT;
  return events;
}

// poll ignores negative fds, and with them POLLHUP/POLLERR, which events = 0
// would still report: that is how interest 0 goes quiet. -fd-1 keeps fd 0
// negative too.
int Parked(int fd) { return -fd - 1; }

class PollPoller : public Poller {
 public:
  absl::Status Watch(int fd, uint32_t interest) override {
    if (fd < 0) {
      return absl::InvalidArgumentError(absl::StrCat("poll: bad fd ", fd));
    }
    if (IndexOf(fd) >= 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("poll: fd ", fd, " is already watched"));
    }
    // poll itself would accept a closed fd and report POLLNVAL forever.
    if (fcntl(fd, F_GETFD) < 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("fcntl(F_GETFD) fd ", fd));
    }
    if (static_cast<size_t>(fd) >= index_.size()) {
      index_.resize(std::max<size_t>(fd + 1, index_.size() * 2), -1);
    }
    index_[fd] = static_cast<int>(pfds_.size());
    pollfd p{};
    p.fd = interest == 0 ? Parked(fd) : fd;
    p.events = PollEvents(interest);
    pfds_.push_back(p);
    return absl::OkStatus();
  }

  absl::Status Rewatch(int fd, uint32_t interest) override {
    int i = IndexOf(fd);
    if (i < 0) {
      return absl::NotFoundError(
          absl::StrCat("poll: Rewatch of unwatched fd ", fd));
    }
    pfds_[i].fd = interest == 0 ? Parked(fd) : fd;
    pfds_[i].events = PollEvents(interest);
    return absl::OkStatus();
  }

  absl::Status Unwatch(int fd) override {
    int i = IndexOf(fd);
    if (i < 0) {
      return absl::NotFoundError(
          absl::StrCat("poll: Unwatch of unwatched fd ", fd));
    }
    // Swap-remove keeps the array dense, so poll never scans holes.
    const int last = static_cast<int>(pfds_.size()) - 1;
    if (i != last) {
      pfds_[i] = pfds_[last];
      index_[FdOf(pfds_[i])] = i;
    }
    pfds_.pop_back();
    index_[fd] = -1;
    return absl::OkStatus();
  }

  absl::Status Wait(absl::Duration timeout,
                    std::vector<Ready>* ready) override {
    int n = poll(pfds_.data(), pfds_.size(), TimeoutMs(timeout));
    if (n < 0) {
      if (errno == EINTR) return absl::OkStatus();
      return absl::ErrnoToStatus(errno,
                                 absl::StrCat("poll (", pfds_.size(), " fds)"));
    }
    for (size_t i = 0; i < pfds_.size() && n > 0; ++i) {
      const short r = pfds_[i].revents;
      if (r == 0) continue;
      --n;
      uint32_t out = 0;
      if (r & POLLIN) out |= kReadable;
      if (r & POLLOUT) out |= kWritable;
      if (r & POLLRDHUP) out |= kReadClosed;
      if (r & POLLHUP) out |= kHangup;
      if (r & POLLERR) out |= kError;
      // Closed while watched: a caller bug, reported so the handler drops it.
      if (r & POLLNVAL) out |= kError | kHangup;
      ready->push_back({pfds_[i].fd, out});
    }
    return absl::OkStatus();
  }

  absl::string_view name() const override { return "poll"; }

 private:
  static int FdOf(const pollfd& p) { return p.fd < 0 ? -p.fd - 1 : p.fd; }

  int IndexOf(int fd) const {
    if (fd < 0 || static_cast<size_t>(fd) >= index_.size()) return -1;
    return index_[fd];
  }

  std::vector<pollfd> pfds_;
  std::vector<int> index_;  // fd -> position in pfds_, -1 if not watched
};

}  // namespace

std::unique_ptr<Poller> NewPollPoller() {
  return std::make_unique<PollPoller>();
}

}  // namespace fanin::reactor
