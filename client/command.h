// Internal to the `fanin` binary: what every subcommand shares (its
// description, its invocation, stdout handling and error reporting).
#ifndef FANIN_CLIENT_COMMAND_H_
#define FANIN_CLIENT_COMMAND_H_

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "client/connect.h"
#include "client/flags.h"

namespace fanin::cli {

struct Invocation {
  // Common and subcommand flags, plus the positional arguments after the
  // subcommand name.
  ParsedFlags flags;
  ServerOptions server;
};

struct Command {
  std::string name;
  // After "fanin ": "watch [flags]".
  std::string synopsis;
  // One line for the command list.
  std::string summary;
  // Paragraphs for `fanin NAME --help`.
  std::string description;
  std::string examples;
  // The subcommand's own flags (the common ones are added by the caller).
  std::vector<FlagSpec> flags;
  int (*run)(const Invocation& invocation);
};

// Every subcommand, in the order `fanin --help` lists them.
const std::vector<Command>& Commands();

// Defined one per subcommand file.
Command WatchCommand();
Command WriteCommand();
Command CloseCommand();
Command ListCommand();
Command StatsCommand();
Command NodesCommand();
Command GroupsCommand();
Command HealthCommand();

// stdout for machine-readable output: remembers the first write error so a
// closed pipe (`fanin watch | head`) can end the command quietly.
class Output {
 public:
  explicit Output(FILE* file) : file_(file) {}
  // False once any write has failed.
  bool Write(absl::string_view bytes);
  bool Line(absl::string_view line);
  bool Flush();
  bool failed() const { return failed_; }
  // The failure was EPIPE: the reader went away; end quietly.
  bool broken_pipe() const { return broken_pipe_; }

 private:
  void Fail();
  FILE* file_;
  bool failed_ = false;
  bool broken_pipe_ = false;
};

// "fanin: <message>\n" on stderr.
void PrintError(absl::string_view message);

// The exit code for a failed write to stdout: quiet 0 for a closed pipe,
// kExitFailure (with a message) otherwise.
int OutputFailureExit(const Output& out);

// Parses a connection id argument (positive integer); prints a usage error
// and returns false when it is not one.
bool ParseConnectionId(absl::string_view command, absl::string_view text,
                       uint64_t* id);

// The --timeout flag of the unary subcommands (default 10s).
FlagSpec UnaryTimeoutFlag();
inline constexpr absl::Duration kDefaultUnaryTimeout = absl::Seconds(10);

}  // namespace fanin::cli

#endif  // FANIN_CLIENT_COMMAND_H_
