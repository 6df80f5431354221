#include "server/reactor/epoll_poller.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace fanin::reactor {
namespace {

// epoll_wait takes whole milliseconds; round up so a timer is never woken
// early (which would cost a spurious iteration).
int TimeoutMs(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return -1;
  if (timeout <= absl::ZeroDuration()) return 0;
  int64_t ms =
      absl::ToInt64Milliseconds(absl::Ceil(timeout, absl::Milliseconds(1)));
  return static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

class EpollPoller : public Poller {
 public:
  EpollPoller(int epfd, bool edge) : epfd_(epfd), edge_(edge), events_(64) {}
  ~EpollPoller() override { close(epfd_); }

  absl::Status Watch(int fd, uint32_t interest) override {
    if (fd < 0)
      return absl::InvalidArgumentError(absl::StrCat("epoll: bad fd ", fd));
    // Interest 0 means "not in the set": epoll would report HUP/ERR anyway.
    if (interest == 0) {
      // Still validate the fd so Watch fails the same way for every interest.
      epoll_event ev = Event(fd, kReadable);
      if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        return Errno("epoll_ctl(ADD)", fd);
      }
      if (epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr) != 0) {
        return Errno("epoll_ctl(DEL)", fd);
      }
      return absl::OkStatus();
    }
    epoll_event ev = Event(fd, interest);
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return Errno("epoll_ctl(ADD)", fd);
    }
    return absl::OkStatus();
  }

  absl::Status Rewatch(int fd, uint32_t interest) override {
    if (interest == 0) {
      if (epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr) != 0 &&
          errno != ENOENT) {
        return Errno("epoll_ctl(DEL)", fd);
      }
      return absl::OkStatus();
    }
    epoll_event ev = Event(fd, interest);
    if (epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) == 0) return absl::OkStatus();
    if (errno != ENOENT) return Errno("epoll_ctl(MOD)", fd);
    // Removed by an earlier Rewatch(fd, 0): add it back.
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return Errno("epoll_ctl(ADD)", fd);
    }
    return absl::OkStatus();
  }

  absl::Status Unwatch(int fd) override {
    // ENOENT: parked by Rewatch(fd, 0), nothing to remove.
    if (epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr) != 0 && errno != ENOENT) {
      return Errno("epoll_ctl(DEL)", fd);
    }
    return absl::OkStatus();
  }

  absl::Status Wait(absl::Duration timeout,
                    std::vector<Ready>* ready) override {
    int n = epoll_wait(epfd_, events_.data(), static_cast<int>(events_.size()),
                       TimeoutMs(timeout));
    if (n < 0) {
      if (errno == EINTR) return absl::OkStatus();
      return Errno("epoll_wait", epfd_);
    }
    for (int i = 0; i < n; ++i) {
      const uint32_t e = events_[i].events;
      uint32_t out = 0;
      if (e & EPOLLIN) out |= kReadable;
      if (e & EPOLLOUT) out |= kWritable;
      if (e & EPOLLRDHUP) out |= kReadClosed;
      if (e & EPOLLHUP) out |= kHangup;
      if (e & EPOLLERR) out |= kError;
      ready->push_back({events_[i].data.fd, out});
    }
    // A full array means more may be waiting: grow so one call sees them all
    // (bounded by the number of watched fds, which the kernel caps for us).
    if (n == static_cast<int>(events_.size()) && events_.size() < kMaxEvents) {
      events_.resize(events_.size() * 2);
    }
    return absl::OkStatus();
  }

  absl::string_view name() const override {
    return edge_ ? "epoll-edge" : "epoll";
  }
  bool edge_triggered() const override { return edge_; }

 private:
  static constexpr size_t kMaxEvents = 1 << 16;

  epoll_event Event(int fd, uint32_t interest) const {
    epoll_event ev{};
    ev.events = EPOLLRDHUP;
    if (interest & kReadable) ev.events |= EPOLLIN;
    if (interest & kWritable) ev.events |= EPOLLOUT;
    if (edge_) ev.events |= EPOLLET;
    ev.data.fd = fd;
    return ev;
  }

  static absl::Status Errno(absl::string_view call, int fd) {
    return absl::ErrnoToStatus(errno, absl::StrCat(call, " fd ", fd));
  }

  const int epfd_;
  const bool edge_;
  std::vector<epoll_event> events_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Poller>> NewEpollPoller(bool edge_triggered) {
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return absl::ErrnoToStatus(errno, "epoll_create1");
  return std::unique_ptr<Poller>(new EpollPoller(epfd, edge_triggered));
}

}  // namespace fanin::reactor
