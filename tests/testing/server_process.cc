#include "tests/testing/server_process.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fanin::testing {
namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream buf;
  buf << in.rdbuf();
  *out = buf.str();
  return true;
}

// "NAME=ADDR" -> {"NAME", "ADDR"}; "ADDR" -> {"", "ADDR"}. A '=' inside a
// unix path after "unix:" does not name the listener.
std::pair<std::string, std::string> SplitListenFlag(absl::string_view value) {
  size_t eq = value.find('=');
  if (eq == absl::string_view::npos || absl::StartsWith(value, "unix:")) {
    return {"", std::string(value)};
  }
  return {std::string(value.substr(0, eq)), std::string(value.substr(eq + 1))};
}

}  // namespace

absl::StatusOr<ReadyInfo> ParseReadyFile(absl::string_view text) {
  ReadyInfo info;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    std::vector<absl::string_view> parts =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (parts.size() == 2 && parts[0] == "grpc") {
      info.grpc_address = std::string(parts[1]);
    } else if (parts.size() == 3 && parts[0] == "listen") {
      info.listeners[parts[1]] = std::string(parts[2]);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("ready file: unexpected line \"", line, "\""));
    }
  }
  if (info.grpc_address.empty()) {
    return absl::InvalidArgumentError("ready file: no \"grpc\" line");
  }
  return info;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    Options options) {
  auto server = std::unique_ptr<ServerProcess>(new ServerProcess(options));
  const char* tmp = getenv("TEST_TMPDIR");
  std::string pattern =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/fanin-ready-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("mkdtemp ", pattern));
  }
  server->ready_dir_ = pattern;
  server->ready_path_ = absl::StrCat(pattern, "/ready");
  absl::Status status = server->Launch(server->options_.flags);
  if (!status.ok()) return status;
  return server;
}

ServerProcess::~ServerProcess() {
  if (running()) {
    absl::StatusOr<int> code = Stop();
    if (!code.ok()) {
      fprintf(stderr, "ServerProcess: stop failed: %s\n",
              code.status().ToString().c_str());
    }
  }
  process_.reset();
  if (!ready_dir_.empty()) {
    unlink(ready_path_.c_str());
    unlink(absl::StrCat(ready_path_, ".tmp").c_str());
    rmdir(ready_dir_.c_str());
  }
}

pid_t ServerProcess::pid() const {
  return process_ != nullptr ? process_->pid() : -1;
}

absl::StatusOr<std::string> ServerProcess::listen_address(
    absl::string_view name) const {
  auto it = ready_.listeners.find(name);
  if (it == ready_.listeners.end()) {
    return absl::NotFoundError(absl::StrCat("no listener named ", name));
  }
  return it->second;
}

absl::Status ServerProcess::Launch(const std::vector<std::string>& flags) {
  unlink(ready_path_.c_str());
  std::vector<std::string> argv = {options_.binary};
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.push_back(absl::StrCat("--ready_file=", ready_path_));
  auto process = Subprocess::Start(argv, options_.process);
  if (!process.ok()) return process.status();
  process_ = *std::move(process);

  absl::Time deadline = absl::Now() + options_.ready_timeout;
  std::string text;
  bool ready = WaitFor(
      [&] { return ReadFile(ready_path_, &text) || process_->CheckExited(); },
      deadline);
  if (!ready || text.empty()) {
    std::string why =
        process_->exited()
            ? absl::StrCat("exited with code ",
                           process_->Wait(absl::Now())->exit_code)
            : absl::StrCat("no ready file after ",
                           absl::FormatDuration(options_.ready_timeout));
    if (!process_->exited()) {
      process_->Signal(SIGKILL).IgnoreError();
      process_->Wait(absl::Now() + options_.stop_timeout).IgnoreError();
    }
    return absl::UnavailableError(
        absl::StrCat(options_.binary, " did not become ready: ", why));
  }
  absl::StatusOr<ReadyInfo> info = ParseReadyFile(text);
  if (!info.ok()) return info.status();
  ready_ = *std::move(info);
  return absl::OkStatus();
}

absl::Status ServerProcess::Signal(int sig) {
  if (process_ == nullptr) return absl::FailedPreconditionError("not started");
  return process_->Signal(sig);
}

absl::StatusOr<int> ServerProcess::Stop() {
  if (process_ == nullptr) return absl::FailedPreconditionError("not started");
  if (!process_->CheckExited()) process_->Signal(SIGTERM).IgnoreError();
  absl::StatusOr<CommandResult> result =
      process_->Wait(absl::Now() + options_.stop_timeout);
  if (!result.ok()) {
    process_->Signal(SIGKILL).IgnoreError();
    result = process_->Wait(absl::Now() + options_.stop_timeout);
    if (!result.ok()) return result.status();
    return absl::DeadlineExceededError(
        absl::StrCat(options_.binary, " ignored SIGTERM for ",
                     absl::FormatDuration(options_.stop_timeout), "; killed"));
  }
  return result->exit_code;
}

std::vector<std::string> ServerProcess::PinnedFlags() const {
  std::vector<std::string> pinned;
  for (const std::string& flag : options_.flags) {
    absl::string_view value = flag;
    if (absl::ConsumePrefix(&value, "--grpc_address=") &&
        !absl::StartsWith(value, "unix:")) {
      pinned.push_back(absl::StrCat("--grpc_address=", ready_.grpc_address));
      continue;
    }
    value = flag;
    if (absl::ConsumePrefix(&value, "--listen=") &&
        !absl::StartsWith(value, "unix:")) {
      auto [name, address] = SplitListenFlag(value);
      auto it = ready_.listeners.find(name.empty() ? "default" : name);
      if (it != ready_.listeners.end()) {
        pinned.push_back(
            name.empty() ? absl::StrCat("--listen=", it->second)
                         : absl::StrCat("--listen=", name, "=", it->second));
        continue;
      }
    }
    pinned.push_back(flag);
  }
  return pinned;
}

absl::Status ServerProcess::Restart() {
  std::vector<std::string> pinned = PinnedFlags();
  if (running()) {
    absl::StatusOr<int> code = Stop();
    if (!code.ok()) return code.status();
  }
  absl::Status status = Launch(pinned);
  if (status.ok()) return status;
  fprintf(stderr,
          "ServerProcess: restart on the same ports failed (%s); "
          "using the original flags\n",
          status.ToString().c_str());
  return Launch(options_.flags);
}

}  // namespace fanin::testing
