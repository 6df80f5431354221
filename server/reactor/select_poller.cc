#include "server/reactor/select_poller.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/select.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"

namespace fanin::reactor {
namespace {

// The kernel reads an fd_set as an array of unsigned longs, fd i being bit
// i % 64 of word i / 64. Using our own arrays of that word lets nfds exceed
// FD_SETSIZE, which glibc's FD_SET (fortified) would abort on.
using Word = unsigned long;  // NOLINT(runtime/int): the kernel's fd_set word
constexpr int kBits = 8 * sizeof(Word);

constexpr uint8_t kWatched = 1 << 7;  // plus the kReadable/kWritable bits

class SelectPoller : public Poller {
 public:
  explicit SelectPoller(int fd_limit) : fd_limit_(fd_limit) {}

  absl::Status Watch(int fd, uint32_t interest) override {
    if (fd < 0) {
      return absl::InvalidArgumentError(absl::StrCat("select: bad fd ", fd));
    }
    if (fd >= fd_limit_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("select poller cannot watch fd ", fd, " (limit ",
                       fd_limit_, " fds); use --poller=epoll or poll"));
    }
    if (static_cast<size_t>(fd) < state_.size() && state_[fd] != 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("select: fd ", fd, " is already watched"));
    }
    // select would fail for every fd (EBADF) if one of them is closed.
    if (fcntl(fd, F_GETFD) < 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("fcntl(F_GETFD) fd ", fd));
    }
    if (static_cast<size_t>(fd) >= state_.size()) {
      size_t n = std::max<size_t>(fd + 1, state_.size() * 2);
      n = std::min<size_t>(n, fd_limit_);
      state_.resize(n, 0);
      const size_t words = (n + kBits - 1) / kBits;
      read_.resize(words, 0);
      write_.resize(words, 0);
    }
    state_[fd] = kWatched;
    Set(fd, interest);
    max_fd_ = std::max(max_fd_, fd);
    return absl::OkStatus();
  }

  absl::Status Rewatch(int fd, uint32_t interest) override {
    if (!IsWatched(fd)) {
      return absl::NotFoundError(
          absl::StrCat("select: Rewatch of unwatched fd ", fd));
    }
    Set(fd, interest);
    return absl::OkStatus();
  }

  absl::Status Unwatch(int fd) override {
    if (!IsWatched(fd)) {
      return absl::NotFoundError(
          absl::StrCat("select: Unwatch of unwatched fd ", fd));
    }
    Set(fd, 0);
    state_[fd] = 0;
    if (fd == max_fd_) {
      while (max_fd_ >= 0 && state_[max_fd_] == 0) --max_fd_;
    }
    return absl::OkStatus();
  }

  absl::Status Wait(absl::Duration timeout,
                    std::vector<Ready>* ready) override {
    const int nfds = max_fd_ + 1;
    const size_t words = (static_cast<size_t>(nfds) + kBits - 1) / kBits;
    // select overwrites its sets, so it gets copies of ours.
    read_out_.assign(read_.begin(), read_.begin() + words);
    write_out_.assign(write_.begin(), write_.begin() + words);
    timeval tv{};
    timeval* tvp = nullptr;
    if (timeout != absl::InfiniteDuration()) {
      if (timeout > absl::ZeroDuration()) {
        tv = absl::ToTimeval(absl::Ceil(timeout, absl::Microseconds(1)));
      }
      tvp = &tv;
    }
    int n = select(nfds, reinterpret_cast<fd_set*>(read_out_.data()),
                   reinterpret_cast<fd_set*>(write_out_.data()), nullptr, tvp);
    if (n < 0) {
      if (errno == EINTR) return absl::OkStatus();
      if (errno == EBADF) return ReportClosedFds(ready);
      return absl::ErrnoToStatus(errno,
                                 absl::StrCat("select (nfds ", nfds, ")"));
    }
    for (size_t w = 0; w < words && n > 0; ++w) {
      Word bits = read_out_[w] | write_out_[w];
      while (bits != 0) {
        const int bit = __builtin_ctzl(bits);
        bits &= bits - 1;
        const int fd = static_cast<int>(w) * kBits + bit;
        const Word mask = Word{1} << bit;
        uint32_t out = 0;
        if (read_out_[w] & mask) {
          out |= kReadable;
          --n;
        }
        if (write_out_[w] & mask) {
          out |= kWritable;
          --n;
        }
        ready->push_back({fd, out});
      }
    }
    return absl::OkStatus();
  }

  absl::string_view name() const override { return "select"; }

 private:
  bool IsWatched(int fd) const {
    return fd >= 0 && static_cast<size_t>(fd) < state_.size() &&
           state_[fd] != 0;
  }

  void Set(int fd, uint32_t interest) {
    const Word mask = Word{1} << (fd % kBits);
    Word& r = read_[fd / kBits];
    Word& w = write_[fd / kBits];
    r = (interest & kReadable) ? (r | mask) : (r & ~mask);
    w = (interest & kWritable) ? (w | mask) : (w & ~mask);
    state_[fd] = kWatched | (interest & (kReadable | kWritable));
  }

  // An fd was closed while watched (a caller bug). Rather than failing every
  // Wait from now on, find it, take it out of the sets and report it so its
  // handler unwatches it; the other fds keep being served.
  absl::Status ReportClosedFds(std::vector<Ready>* ready) {
    for (int fd = 0; fd <= max_fd_; ++fd) {
      if ((state_[fd] & (kReadable | kWritable)) == 0) continue;
      if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
        Set(fd, 0);
        ready->push_back({fd, kError | kHangup});
      }
    }
    return absl::OkStatus();
  }

  const int fd_limit_;
  std::vector<uint8_t> state_;  // per fd: kWatched | interest bits
  std::vector<Word> read_;
  std::vector<Word> write_;
  std::vector<Word> read_out_;
  std::vector<Word> write_out_;
  int max_fd_ = -1;
};

}  // namespace

std::unique_ptr<Poller> NewSelectPoller(int fd_limit) {
  return std::make_unique<SelectPoller>(fd_limit);
}

}  // namespace fanin::reactor
