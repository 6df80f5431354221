#include "tests/bench/e2e/epoll_reader.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace fanin::bench {

EpollReader::EpollReader(absl::string_view host_port, const char* who)
    : who_(who) {
  std::vector<std::string> hp = absl::StrSplit(host_port, ':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (hp.size() != 2 ||
      inet_pton(AF_INET, hp[0].c_str(), &addr.sin_addr) != 1 ||
      !absl::SimpleAtoi(hp[1], &port_)) {
    std::fprintf(stderr, "%s: the listen address must be IPv4:PORT\n", who_);
    std::exit(2);
  }
  addr.sin_port = htons(port_);
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) Die("socket");
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Die("bind");
  }
  if (listen(listen_fd_, SOMAXCONN) != 0) Die("listen");
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) Die("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) {
    Die("epoll_ctl(ADD)");
  }
}

EpollReader::~EpollReader() {
  close(epoll_fd_);
  close(listen_fd_);
}

void EpollReader::Die(const char* what) const {
  std::fprintf(stderr, "%s: %s: %s\n", who_, what, std::strerror(errno));
  std::exit(2);
}

void EpollReader::Run(Handler& handler, absl::FunctionRef<bool()> stop) {
  std::vector<char> buf(64 * 1024);
  std::vector<epoll_event> events(1024);
  while (!stop()) {
    const int n = epoll_wait(epoll_fd_, events.data(), events.size(), 100);
    if (n < 0 && errno != EINTR) Die("epoll_wait");
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listen_fd_) {
        for (;;) {
          const int cfd = accept4(listen_fd_, nullptr, nullptr,
                                  SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) {
              break;
            }
            Die("accept4");
          }
          if (static_cast<size_t>(cfd) >= key_of_fd_.size()) {
            key_of_fd_.resize(cfd + 1024);
          }
          key_of_fd_[cfd] = next_key_++;
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = cfd;
          if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, cfd, &cev) != 0) {
            Die("epoll_ctl(ADD)");
          }
          handler.OnAccepted(key_of_fd_[cfd]);
        }
        continue;
      }
      const ssize_t r = read(fd, buf.data(), buf.size());
      if (r > 0) {
        handler.OnBytes(key_of_fd_[fd], absl::string_view(buf.data(), r));
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      close(fd);
      handler.OnClosed(key_of_fd_[fd], r < 0);
    }
    handler.OnIterationEnd();
  }
}

}  // namespace fanin::bench
