#include "tests/testing/tcp_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fanin::testing {
namespace {

int PollTimeoutMs(absl::Time deadline) {
  absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1 << 30));
}

// Waits for `events` on fd until the deadline; false on timeout.
bool PollFor(int fd, short events, absl::Time deadline) {
  while (true) {
    pollfd p = {fd, events, 0};
    int r = poll(&p, 1, PollTimeoutMs(deadline));
    if (r > 0) return true;
    if (r < 0 && errno == EINTR) continue;
    if (r == 0 && absl::Now() < deadline) continue;
    return false;
  }
}

absl::StatusOr<TcpClient> ConnectSockaddr(const sockaddr* addr, socklen_t len,
                                          absl::string_view address,
                                          absl::Time deadline) {
  int fd =
      socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("socket for ", address));
  }
  TcpClient client(fd);
  if (connect(fd, addr, len) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) {
      return absl::ErrnoToStatus(errno, absl::StrCat("connect ", address));
    }
    if (!PollFor(fd, POLLOUT, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat("connect ", address));
    }
    int err = 0;
    socklen_t err_len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
    if (err != 0) {
      return absl::ErrnoToStatus(err, absl::StrCat("connect ", address));
    }
  }
  if (addr->sa_family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return client;
}

}  // namespace

TcpClient::~TcpClient() { Close(); }

TcpClient::TcpClient(TcpClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

TcpClient& TcpClient::operator=(TcpClient&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

absl::Status TcpClient::SendAll(absl::string_view bytes, absl::Time deadline) {
  while (!bytes.empty()) {
    ssize_t w = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (w > 0) {
      bytes.remove_prefix(static_cast<size_t>(w));
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno != EAGAIN) {
      return absl::ErrnoToStatus(errno, absl::StrCat("send fd ", fd_));
    }
    if (!PollFor(fd_, POLLOUT, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "send fd ", fd_, ": ", bytes.size(), " bytes left at deadline"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> TcpClient::Recv(size_t max_bytes,
                                            absl::Time deadline) {
  std::string buf(max_bytes, '\0');
  while (true) {
    ssize_t r = recv(fd_, buf.data(), buf.size(), 0);
    if (r >= 0) {
      buf.resize(static_cast<size_t>(r));
      return buf;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      return absl::ErrnoToStatus(errno, absl::StrCat("recv fd ", fd_));
    }
    if (!PollFor(fd_, POLLIN, deadline)) {
      return absl::DeadlineExceededError(
          absl::StrCat("recv fd ", fd_, ": nothing arrived"));
    }
  }
}

absl::StatusOr<std::string> TcpClient::RecvExactly(size_t n,
                                                   absl::Time deadline) {
  std::string out;
  while (out.size() < n) {
    absl::StatusOr<std::string> chunk = Recv(n - out.size(), deadline);
    if (!chunk.ok()) {
      return absl::Status(chunk.status().code(),
                          absl::StrCat(chunk.status().message(), " (have ",
                                       out.size(), " of ", n, " bytes)"));
    }
    if (chunk->empty()) {
      return absl::OutOfRangeError(
          absl::StrCat("EOF after ", out.size(), " of ", n, " bytes: ", out));
    }
    out += *chunk;
  }
  return out;
}

absl::StatusOr<std::string> TcpClient::RecvUntilEof(absl::Time deadline) {
  std::string out;
  while (true) {
    absl::StatusOr<std::string> chunk = Recv(65536, deadline);
    if (!chunk.ok()) {
      return absl::Status(
          chunk.status().code(),
          absl::StrCat(chunk.status().message(), " (have ", out.size(),
                       " bytes: ", out.substr(0, 200), ")"));
    }
    if (chunk->empty()) return out;
    out += *chunk;
  }
}

bool TcpClient::WaitForPeerClose(absl::Time deadline, std::string* drained) {
  while (true) {
    absl::StatusOr<std::string> chunk = Recv(65536, deadline);
    if (!chunk.ok()) {
      return !absl::IsDeadlineExceeded(chunk.status());  // a reset counts
    }
    if (chunk->empty()) return true;
    if (drained != nullptr) *drained += *chunk;
  }
}

absl::Status TcpClient::ShutdownWrite() {
  if (shutdown(fd_, SHUT_WR) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("shutdown fd ", fd_));
  }
  return absl::OkStatus();
}

void TcpClient::Abort() {
  if (fd_ < 0) return;
  linger l = {1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  Close();
}

void TcpClient::Close() {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

absl::StatusOr<TcpClient> ConnectTcp(absl::string_view address,
                                     absl::Time deadline) {
  if (absl::StartsWith(address, "unix:")) {
    absl::string_view path = address.substr(5);
    sockaddr_un un = {};
    un.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(un.sun_path)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad unix socket path: ", address));
    }
    memcpy(un.sun_path, path.data(), path.size());
    return ConnectSockaddr(reinterpret_cast<sockaddr*>(&un), sizeof(un),
                           address, deadline);
  }
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("want HOST:PORT, got ", address));
  }
  std::string host(address.substr(0, colon));
  std::string port(address.substr(colon + 1));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("getaddrinfo ", address, ": ", gai_strerror(rc)));
  }
  absl::Status last =
      absl::UnavailableError(absl::StrCat("no address for ", address));
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    absl::StatusOr<TcpClient> client =
        ConnectSockaddr(ai->ai_addr, ai->ai_addrlen, address, deadline);
    if (client.ok()) {
      freeaddrinfo(found);
      return client;
    }
    last = client.status();
  }
  freeaddrinfo(found);
  return last;
}

absl::StatusOr<TcpClient> ConnectFrom(const std::string& source_ip,
                                      const std::string& address, int rcvbuf) {
  size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("bad address ", address));
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket");
  TcpClient client(fd);
  if (rcvbuf > 0 &&
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0) {
    return absl::ErrnoToStatus(errno, "setsockopt(SO_RCVBUF)");
  }
  sockaddr_in src = {};
  src.sin_family = AF_INET;
  inet_pton(AF_INET, source_ip.c_str(), &src.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("bind ", source_ip));
  }
  sockaddr_in dst = {};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &dst.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("connect ", address));
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return client;
}

std::string ReadUntilEofOrError(int fd, absl::Time deadline, int* error) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      out.append(buf, n);
      continue;
    }
    if (n == 0) {
      *error = 0;
      return out;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      *error = errno;
      return out;
    }
    if (!PollFor(fd, POLLIN, deadline)) {
      *error = -1;
      return out;
    }
  }
}

}  // namespace fanin::testing
