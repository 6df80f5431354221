#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "tests/bench/reactor/runners.h"

namespace fanin::bench {
namespace {

class FloorRunner final : public Runner {
 public:
  ~FloorRunner() override {
    // Closing the epoll fd drops every registration; the chain's fds stay open.
    if (epfd_ >= 0) ::close(epfd_);
  }

  absl::Status Init() override {
    epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) return absl::ErrnoToStatus(errno, "epoll_create1()");
    return absl::OkStatus();
  }

  absl::Status Arm(Chain* chain) override {
    chain_ = chain;
    for (int i = 0; i < chain->size(); ++i) {
      epoll_event ev = {};
      ev.events = EPOLLIN;
      ev.data.u32 = static_cast<uint32_t>(i);
      if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, chain->read_fd(i), &ev) != 0) {
        return absl::ErrnoToStatus(
            errno, absl::StrCat("epoll_ctl(ADD) fd ", chain->read_fd(i)));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Run() override {
    epoll_event events[kMaxEvents];
    for (;;) {
      const int n = ::epoll_wait(epfd_, events, kMaxEvents, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, "epoll_wait()");
      }
      for (int k = 0; k < n; ++k) {
        if (chain_->OnReadable(static_cast<int>(events[k].data.u32))) {
          return absl::OkStatus();
        }
      }
    }
  }

 private:
  static constexpr int kMaxEvents = 1024;
  int epfd_ = -1;
  Chain* chain_ = nullptr;
};

}  // namespace

std::unique_ptr<Runner> NewFloorRunner() {
  return std::make_unique<FloorRunner>();
}

}  // namespace fanin::bench
