#include "tests/testing/subprocess.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

extern char** environ;

namespace fanin::testing {
namespace {

void CloseFd(int* fd) {
  if (*fd >= 0) {
    close(*fd);
    *fd = -1;
  }
}

absl::Status SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return absl::ErrnoToStatus(errno,
                               absl::StrCat("fcntl(O_NONBLOCK) fd ", fd));
  }
  return absl::OkStatus();
}

// Milliseconds left until deadline for poll(), clamped to [0, cap_ms].
int PollTimeoutMs(absl::Time deadline, int cap_ms) {
  absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  int64_t ms = absl::ToInt64Milliseconds(left) + 1;
  return static_cast<int>(std::min<int64_t>(ms, cap_ms));
}

std::vector<std::string> BuildEnv(const Subprocess::Options& options) {
  std::vector<std::string> env;
  auto overridden = [&options](absl::string_view entry) {
    absl::string_view name = entry.substr(0, entry.find('='));
    for (const auto& [key, value] : options.env) {
      if (key == name) return true;
    }
    for (const auto& key : options.unset_env) {
      if (key == name) return true;
    }
    return false;
  };
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (!overridden(*e)) env.emplace_back(*e);
  }
  for (const auto& [key, value] : options.env) {
    env.push_back(absl::StrCat(key, "=", value));
  }
  return env;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(
    const std::vector<std::string>& argv, const Options& options) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  absl::Cleanup close_all = [&] {
    for (int* fd : {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1]}) {
      CloseFd(fd);
    }
  };
  if (pipe2(in, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  if (options.capture_output) {
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
      return absl::ErrnoToStatus(errno, "pipe2");
    }
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  absl::Cleanup destroy_actions = [&] {
    posix_spawn_file_actions_destroy(&actions);
  };
  posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
  if (options.capture_output) {
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  }

  // The test process may ignore SIGPIPE or block signals (gRPC, gtest); the
  // child must start with default dispositions and an empty mask, as it would
  // from a shell.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  absl::Cleanup destroy_attr = [&] { posix_spawnattr_destroy(&attr); };
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  std::vector<std::string> args = argv;
  std::vector<char*> c_args = CStrings(args);
  std::vector<std::string> env = BuildEnv(options);
  std::vector<char*> c_env = CStrings(env);

  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0].c_str(), &actions, &attr, c_args.data(),
                        c_env.data());
  if (rc != 0) {
    return absl::ErrnoToStatus(
        rc, absl::StrCat("posix_spawnp ", absl::StrJoin(argv, " ")));
  }

  auto process = std::unique_ptr<Subprocess>(new Subprocess());
  process->pid_ = pid;
  process->stdin_fd_ = std::exchange(in[1], -1);
  process->stdout_fd_ = std::exchange(out[0], -1);
  process->stderr_fd_ = std::exchange(err[0], -1);
  for (int fd :
       {process->stdin_fd_, process->stdout_fd_, process->stderr_fd_}) {
    if (fd >= 0) {
      absl::Status status = SetNonBlocking(fd);
      if (!status.ok()) return status;
    }
  }
  return process;
}

Subprocess::~Subprocess() {
  if (!exited_ && pid_ > 0) {
    kill(pid_, SIGKILL);
    ReapIfExited(/*block=*/true);
  }
  CloseFd(&stdin_fd_);
  CloseFd(&stdout_fd_);
  CloseFd(&stderr_fd_);
}

void Subprocess::QueueStdin(absl::string_view bytes, bool close_after) {
  stdin_pending_.append(bytes.data(), bytes.size());
  close_stdin_after_ = close_stdin_after_ || close_after;
  if (stdin_pending_.empty() && close_stdin_after_) CloseFd(&stdin_fd_);
}

absl::Status Subprocess::FlushStdin(absl::Time deadline) {
  while (!stdin_pending_.empty()) {
    if (stdin_fd_ < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("child ", pid_, " closed its stdin with ",
                       stdin_pending_.size(), " bytes unwritten"));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "stdin of child ", pid_, ": ", stdin_pending_.size(), " bytes left"));
    }
    Pump(deadline);
  }
  return absl::OkStatus();
}

void Subprocess::Pump(absl::Time deadline) {
  pollfd fds[3];
  int n = 0;
  if (stdin_fd_ >= 0 && !stdin_pending_.empty()) {
    fds[n++] = {stdin_fd_, POLLOUT, 0};
  }
  if (stdout_fd_ >= 0) fds[n++] = {stdout_fd_, POLLIN, 0};
  if (stderr_fd_ >= 0) fds[n++] = {stderr_fd_, POLLIN, 0};
  if (n == 0) {
    // Nothing to poll: only the exit can change; check it with a short wait.
    ReapIfExited(false);
    if (!exited_) {
      int ms = PollTimeoutMs(deadline, 5);
      if (ms > 0) poll(nullptr, 0, ms);
    }
    return;
  }
  // Capped so that an exit is noticed even while a grandchild holds the pipes.
  int ready = poll(fds, n, PollTimeoutMs(deadline, 20));
  if (ready < 0 && errno != EINTR) return;
  for (int i = 0; i < n && ready > 0; ++i) {
    if (fds[i].revents == 0) continue;
    if (fds[i].fd == stdin_fd_) {
      ssize_t w =
          write(stdin_fd_, stdin_pending_.data(), stdin_pending_.size());
      if (w > 0) {
        stdin_pending_.erase(0, static_cast<size_t>(w));
        if (stdin_pending_.empty() && close_stdin_after_) CloseFd(&stdin_fd_);
      } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        CloseFd(&stdin_fd_);  // EPIPE: the child closed its stdin.
      }
      continue;
    }
    int* fd = fds[i].fd == stdout_fd_ ? &stdout_fd_ : &stderr_fd_;
    std::string* sink = fds[i].fd == stdout_fd_ ? &stdout_ : &stderr_;
    char buf[65536];
    ssize_t r = read(*fd, buf, sizeof(buf));
    if (r > 0) {
      sink->append(buf, static_cast<size_t>(r));
    } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
      CloseFd(fd);
    }
  }
  ReapIfExited(false);
}

void Subprocess::ReapIfExited(bool block) {
  if (exited_ || pid_ <= 0) return;
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r != pid_) return;
  exited_ = true;
  if (WIFEXITED(status)) {
    result_.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result_.term_signal = WTERMSIG(status);
    result_.exit_code = 128 + result_.term_signal;
  }
}

bool Subprocess::WaitForOutput(
    absl::FunctionRef<bool(absl::string_view, absl::string_view)> done,
    absl::Time deadline) {
  while (true) {
    if (done(stdout_, stderr_)) return true;
    bool outputs_closed = stdout_fd_ < 0 && stderr_fd_ < 0;
    if (outputs_closed || absl::Now() >= deadline) return false;
    Pump(deadline);
  }
}

absl::Status Subprocess::Signal(int sig) {
  if (exited_) {
    return absl::FailedPreconditionError(
        absl::StrCat("child ", pid_, " already exited"));
  }
  if (kill(pid_, sig) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("kill(", sig, ") ", pid_));
  }
  return absl::OkStatus();
}

absl::StatusOr<CommandResult> Subprocess::Wait(absl::Time deadline) {
  while (!exited_) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "child ", pid_, " still running; stdout so far: ", stdout_,
          "\nstderr so far: ", stderr_));
    }
    Pump(deadline);
  }
  // The child is gone: take what it left in the pipes, but do not wait for
  // EOF, which a grandchild holding the pipes could delay forever.
  for (int* fd : {&stdout_fd_, &stderr_fd_}) {
    std::string* sink = fd == &stdout_fd_ ? &stdout_ : &stderr_;
    while (*fd >= 0) {
      char buf[65536];
      ssize_t r = read(*fd, buf, sizeof(buf));
      if (r > 0) {
        sink->append(buf, static_cast<size_t>(r));
      } else if (r < 0 && errno == EINTR) {
        continue;
      } else {
        break;
      }
    }
  }
  CommandResult result = result_;
  result.stdout_data = stdout_;
  result.stderr_data = stderr_;
  return result;
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::string_view stdin_bytes,
                                         const RunOptions& options) {
  auto process = Subprocess::Start(argv, options.process);
  if (!process.ok()) return process.status();
  (*process)->QueueStdin(stdin_bytes, /*close_after=*/true);
  absl::Time deadline = absl::Now() + options.timeout;
  absl::StatusOr<CommandResult> result = (*process)->Wait(deadline);
  if (!result.ok()) {
    return absl::DeadlineExceededError(absl::StrCat(
        "timed out after ", absl::FormatDuration(options.timeout), ": ",
        absl::StrJoin(argv, " "), ": ", result.status().message()));
  }
  return result;
}

bool WaitFor(absl::FunctionRef<bool()> predicate, absl::Time deadline) {
  absl::Duration pause = absl::Milliseconds(1);
  while (true) {
    if (predicate()) return true;
    absl::Time now = absl::Now();
    if (now >= deadline) return false;
    // Polling the predicate with back-off, bounded by the deadline.
    absl::SleepFor(std::min(pause, deadline - now));
    pause = std::min(pause * 2, absl::Milliseconds(50));
  }
}

}  // namespace fanin::testing
