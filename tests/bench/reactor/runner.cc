#include "tests/bench/reactor/runner.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fanin::bench {
namespace {

absl::Duration ThreadCpu() {
  timespec ts;
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

}  // namespace

absl::StatusOr<Sample> MeasureOnce(const Impl& impl, const SocketPairs& pairs,
                                   int active, int64_t writes) {
  Sample sample;
  {
    // The chain outlives the runner: a runner may use it while it unregisters.
    Chain chain(&pairs, active, writes);
    std::unique_ptr<Runner> runner = impl.make();
    if (absl::Status s = runner->Init(); !s.ok()) return s;
    const absl::Duration c0 = ThreadCpu();
    const absl::Time t0 = absl::Now();
    if (absl::Status s = runner->Arm(&chain); !s.ok()) return s;
    const absl::Time t1 = absl::Now();
    const absl::Duration c1 = ThreadCpu();
    if (absl::Status s = chain.Start(); !s.ok()) return s;
    const absl::Duration c2 = ThreadCpu();
    const absl::Time t2 = absl::Now();
    if (absl::Status s = runner->Run(); !s.ok()) return s;
    const absl::Time t3 = absl::Now();
    const absl::Duration c3 = ThreadCpu();
    if (absl::Status s = chain.Verify(); !s.ok()) return s;
    sample.setup = t1 - t0;
    sample.run = t3 - t2;
    sample.setup_cpu = c1 - c0;
    sample.run_cpu = c3 - c2;
    sample.events = chain.reads();
    sample.empty_reads = chain.empty_reads();
  }
  // After the runner is gone, so a loop that read ahead or left bytes behind is
  // caught.
  if (absl::Status s = pairs.ExpectDrained(); !s.ok()) return s;
  return sample;
}

namespace {

// Moves `fd` to the lowest free fd >= min_fd.
absl::StatusOr<int> MoveUp(int fd, int min_fd) {
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, min_fd);
  const int saved_errno = errno;
  ::close(fd);
  if (moved < 0) {
    return absl::ErrnoToStatus(saved_errno,
                               absl::StrCat("fcntl(F_DUPFD) ", min_fd));
  }
  return moved;
}

absl::Status ProbeInChild(const Impl& impl, int min_fd) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   fds) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair()");
  }
  absl::StatusOr<int> r = MoveUp(fds[0], min_fd);
  absl::StatusOr<int> w = MoveUp(fds[1], min_fd);
  if (!r.ok()) return r.status();
  if (!w.ok()) return w.status();
  SocketPairs pairs = SocketPairs::Adopt({*r}, {*w});
  return MeasureOnce(impl, pairs, 1, 3).status();
}

}  // namespace

absl::Status ProbeHighFd(const Impl& impl, int min_fd) {
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    return absl::ErrnoToStatus(errno, "pipe2()");
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int saved_errno = errno;
    ::close(report[0]);
    ::close(report[1]);
    return absl::ErrnoToStatus(saved_errno, "fork()");
  }
  if (pid == 0) {
    // glibc's fortify check prints "buffer overflow detected" on the tty unless
    // told otherwise; send it to a silenced stderr instead so the table stays
    // readable.
    ::setenv("LIBC_FATAL_STDERR_", "1", 1);
    const int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, STDERR_FILENO);
    ::close(report[0]);
    // A loop that loses the token would block forever; SIGALRM ends it.
    ::alarm(30);
    const absl::Status s = ProbeInChild(impl, min_fd);
    const std::string text = s.ToString();
    if (!s.ok()) {
      ssize_t ignored = ::write(report[1], text.data(), text.size());
      (void)ignored;
    }
    ::_exit(s.ok() ? 0 : 1);
  }
  ::close(report[1]);
  std::string text;
  char buf[512];
  for (;;) {
    const ssize_t n = ::read(report[0], buf, sizeof(buf));
    if (n > 0) {
      text.append(buf, n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  ::close(report[0]);
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return absl::ErrnoToStatus(errno, "waitpid()");
  }
  if (WIFSIGNALED(wstatus)) {
    return absl::UnavailableError(
        absl::StrCat("died of signal ", WTERMSIG(wstatus), " (",
                     ::strsignal(WTERMSIG(wstatus)), ") with fd >= ", min_fd));
  }
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(
      text.empty()
          ? absl::StrCat("child exited with status ", WEXITSTATUS(wstatus))
          : text);
}

}  // namespace fanin::bench
