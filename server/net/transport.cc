#include "server/net/transport.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "server/reactor/poller.h"

namespace fanin::net {

PrefixTransport::PrefixTransport(int fd, std::string prefix)
    : fd_(fd), prefix_(std::move(prefix)) {}

IoResult PrefixTransport::Read(char* buf, size_t len) {
  if (pos_ < prefix_.size()) {
    const size_t n = std::min(len, prefix_.size() - pos_);
    std::memcpy(buf, prefix_.data() + pos_, n);
    pos_ += n;
    if (pos_ == prefix_.size()) {
      std::string().swap(prefix_);
      pos_ = 0;
    }
    return IoResult::Ok(n);
  }
  ssize_t n;
  do {
    n = ::read(fd_, buf, len);
  } while (n < 0 && errno == EINTR);
  if (n > 0) return IoResult::Ok(static_cast<size_t>(n));
  if (n == 0) return IoResult::Eof();
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    return IoResult::Blocked(reactor::kReadable);
  }
  return IoResult::Errno(errno);
}

IoResult PrefixTransport::Write(const char* data, size_t len) {
  ssize_t n;
  do {
    n = ::send(fd_, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) return IoResult::Ok(static_cast<size_t>(n));
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    return IoResult::Blocked(reactor::kWritable);
  }
  return IoResult::Errno(errno);
}

}  // namespace fanin::net
