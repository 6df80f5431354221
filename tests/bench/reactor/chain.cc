#include "tests/bench/reactor/chain.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace fanin::bench {

absl::StatusOr<SocketPairs> SocketPairs::Create(int n) {
  SocketPairs pairs;
  pairs.read_fds_.reserve(n);
  pairs.write_fds_.reserve(n);
  for (int i = 0; i < n; ++i) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                     fds) != 0) {
      return absl::ErrnoToStatus(
          errno, absl::StrCat("socketpair() for pair ", i, " of ", n));
    }
    pairs.read_fds_.push_back(fds[0]);
    pairs.write_fds_.push_back(fds[1]);
  }
  return pairs;
}

SocketPairs SocketPairs::Adopt(std::vector<int> read_fds,
                               std::vector<int> write_fds) {
  SocketPairs pairs;
  pairs.read_fds_ = std::move(read_fds);
  pairs.write_fds_ = std::move(write_fds);
  return pairs;
}

SocketPairs::SocketPairs(SocketPairs&& other) noexcept
    : read_fds_(std::move(other.read_fds_)),
      write_fds_(std::move(other.write_fds_)) {
  other.read_fds_.clear();
  other.write_fds_.clear();
}

SocketPairs& SocketPairs::operator=(SocketPairs&& other) noexcept {
  if (this != &other) {
    CloseAll();
    read_fds_ = std::move(other.read_fds_);
    write_fds_ = std::move(other.write_fds_);
    other.read_fds_.clear();
    other.write_fds_.clear();
  }
  return *this;
}

SocketPairs::~SocketPairs() { CloseAll(); }

void SocketPairs::CloseAll() {
  for (int fd : read_fds_) ::close(fd);
  for (int fd : write_fds_) ::close(fd);
  read_fds_.clear();
  write_fds_.clear();
}

int SocketPairs::max_fd() const {
  int max = -1;
  for (int fd : read_fds_) max = fd > max ? fd : max;
  for (int fd : write_fds_) max = fd > max ? fd : max;
  return max;
}

absl::Status SocketPairs::ExpectDrained() const {
  for (int i = 0; i < size(); ++i) {
    char byte;
    const ssize_t n = ::recv(read_fds_[i], &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "pair ", i, " (fd ", read_fds_[i], ") still holds unread bytes"));
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      return absl::ErrnoToStatus(
          errno, absl::StrCat("recv(MSG_PEEK) fd ", read_fds_[i]));
    }
  }
  return absl::OkStatus();
}

void SocketPairs::Drain() const {
  char buf[256];
  for (int fd : read_fds_) {
    while (::read(fd, buf, sizeof(buf)) > 0) {
    }
  }
}

Chain::Chain(const SocketPairs* pairs, int active, int64_t writes)
    : read_fds_(pairs->read_fds()),
      write_fds_(pairs->write_fds()),
      size_(pairs->size()),
      active_(active),
      writes_left_(writes),
      target_reads_(active + writes),
      expected_reads_(active + writes),
      held_(pairs->size(), 0) {}

absl::Status Chain::Start() {
  if (active_ < 1 || active_ > size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "active tokens ", active_, " must be in [1, ", size_, "]"));
  }
  const int space = size_ / active_;
  for (int t = 0; t < active_; ++t) {
    const int i = t * space;
    const char byte = 'e';
    if (::write(write_fds_[i], &byte, 1) != 1) {
      return absl::ErrnoToStatus(errno,
                                 absl::StrCat("write() fd ", write_fds_[i]));
    }
    ++held_[i];
  }
  return absl::OkStatus();
}

absl::Status Chain::Verify() const {
  if (write_errors_ > 0) {
    return absl::InternalError(
        absl::StrCat(write_errors_, " forwarding writes failed"));
  }
  if (reads_ != target_reads_) {
    return absl::InternalError(absl::StrCat(
        "chain read ", reads_, " bytes, expected ", target_reads_));
  }
  return absl::OkStatus();
}

}  // namespace fanin::bench
