#include "tests/reactor/test_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/synchronization/notification.h"

namespace fanin::testing {

std::pair<int, int> UnixPair() {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) !=
      0) {
    ADD_FAILURE() << "socketpair: " << strerror(errno);
    return {-1, -1};
  }
  return {fds[0], fds[1]};
}

std::pair<int, int> TcpPair() {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (lfd < 0 || bind(lfd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      listen(lfd, 1) != 0 ||
      getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "listen on loopback: " << strerror(errno);
    if (lfd >= 0) close(lfd);
    return {-1, -1};
  }
  int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client < 0 ||
      connect(client, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    ADD_FAILURE() << "connect: " << strerror(errno);
    close(lfd);
    if (client >= 0) close(client);
    return {-1, -1};
  }
  int server = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  close(lfd);
  if (server < 0) {
    ADD_FAILURE() << "accept: " << strerror(errno);
    close(client);
    return {-1, -1};
  }
  fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK);
  return {client, server};
}

size_t WriteSome(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n > 0) {
      done += n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  return done;
}

std::string ReadAvailable(int fd, bool* eof, int* error) {
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
      out.append(buf, n);
      continue;
    }
    if (n == 0) {
      if (eof != nullptr) *eof = true;
    } else if (errno == EINTR) {
      continue;
    } else if (errno != EAGAIN && error != nullptr) {
      *error = errno;
    }
    return out;
  }
}

bool RunLoopUntil(reactor::EventLoop* loop, const std::function<bool()>& done,
                  absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  bool result = false;
  reactor::EventLoop::TimerId id = 0;
  auto check = [&] {
    result = done();
    if (result || absl::Now() >= deadline) loop->Stop();
  };
  id = loop->RunEvery(absl::Milliseconds(1), check);
  loop->Post([&] { check(); });
  loop->Run();
  loop->Cancel(id);
  return result || done();
}

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));  // polling a condition, bounded
  }
  return true;
}

absl::Duration ProcessCpuTime() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return absl::DurationFromTimeval(ru.ru_utime) +
         absl::DurationFromTimeval(ru.ru_stime);
}

LoopThread::LoopThread(reactor::EventLoop* loop)
    : loop_(loop), thread_([loop] { loop->Run(); }) {
  // Return only once the loop runs, so IsInLoopThread-based checks hold.
  RunSync([] {});
}

LoopThread::~LoopThread() {
  loop_->Stop();
  thread_.join();
}

void LoopThread::RunSync(std::function<void()> fn) {
  absl::Notification done;
  loop_->Post([&] {
    fn();
    done.Notify();
  });
  done.WaitForNotification();
}

}  // namespace fanin::testing
