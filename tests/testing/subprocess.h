// Child processes for end-to-end tests: start a binary with piped stdin,
// stdout and stderr, feed it bytes, watch its output with deadlines, signal it
// and reap it. Nothing here sleeps for a fixed time; every wait has a deadline.
//
// Example:
//   auto result = fanin::testing::RunCommand({"/bin/sh", "-c", "cat"}, "hi");
//   ASSERT_TRUE(result.ok());
//   EXPECT_EQ(result->stdout_data, "hi");
//
// Thread-compatible: one thread drives one Subprocess.
#ifndef FANIN_TESTS_TESTING_SUBPROCESS_H_
#define FANIN_TESTS_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fanin::testing {

// How a finished command ended and what it printed.
struct CommandResult {
  // The exit status, or 128 + signal number when a signal ended it.
  int exit_code = -1;
  // The signal that ended it, 0 when it exited.
  int term_signal = 0;
  std::string stdout_data;
  std::string stderr_data;
};

class Subprocess {
 public:
  struct Options {
    // Pipe stdout/stderr to this object; false lets the child inherit the
    // test's own (useful for servers whose logs belong in the test log).
    bool capture_output = true;
    // Variables to set (or override) in the child's environment.
    std::vector<std::pair<std::string, std::string>> env;
    // Variables to remove from the child's environment.
    std::vector<std::string> unset_env;
  };

  // Starts argv[0] (looked up in PATH when it has no '/'). Errors when the
  // pipes cannot be made or the binary cannot be started.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      const std::vector<std::string>& argv, const Options& options);
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      const std::vector<std::string>& argv) {
    return Start(argv, Options());
  }

  // Kills (SIGKILL) and reaps the child if it still runs.
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }

  // Queues bytes for the child's stdin; they are written while this object
  // pumps (in WaitForOutput, Wait or FlushStdin). With close_after, stdin is
  // closed once everything queued is written.
  void QueueStdin(absl::string_view bytes, bool close_after);
  // Pumps until everything queued for stdin is written (or the child closed
  // its stdin: an error then).
  absl::Status FlushStdin(absl::Time deadline);

  // Pumps output until done(stdout so far, stderr so far) is true or the
  // deadline passes; returns whether done became true. Also returns (with
  // done's last answer) once the child has closed both outputs.
  bool WaitForOutput(
      absl::FunctionRef<bool(absl::string_view out, absl::string_view err)>
          done,
      absl::Time deadline);

  const std::string& stdout_data() const { return stdout_; }
  const std::string& stderr_data() const { return stderr_; }
  // Removes and returns what stdout holds so far.
  std::string TakeStdout() { return std::exchange(stdout_, std::string()); }

  absl::Status Signal(int sig);

  // Pumps output until the child exits and both pipes reach EOF; returns
  // DeadlineExceeded (child left running) when the deadline passes first.
  absl::StatusOr<CommandResult> Wait(absl::Time deadline);

  bool exited() const { return exited_; }
  // Reaps the child if it has exited (without blocking); returns exited().
  bool CheckExited() {
    ReapIfExited(false);
    return exited_;
  }

 private:
  Subprocess() = default;
  // One round of poll over the pipes, at most until deadline.
  void Pump(absl::Time deadline);
  void ReapIfExited(bool block);

  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  int stderr_fd_ = -1;
  std::string stdin_pending_;
  bool close_stdin_after_ = false;
  std::string stdout_;
  std::string stderr_;
  bool exited_ = false;
  CommandResult result_;
};

struct RunOptions {
  absl::Duration timeout = absl::Seconds(30);
  Subprocess::Options process;
};

// Runs argv to completion with stdin_bytes on its stdin (then EOF). When the
// timeout passes the child is killed and DeadlineExceeded is returned with
// what it printed so far in the message.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::string_view stdin_bytes = {},
                                         const RunOptions& options = {});

// Calls predicate until it returns true or the deadline passes, backing off
// from 1 ms to 50 ms between calls. Returns the predicate's last answer.
bool WaitFor(absl::FunctionRef<bool()> predicate, absl::Time deadline);

}  // namespace fanin::testing

#endif  // FANIN_TESTS_TESTING_SUBPROCESS_H_
