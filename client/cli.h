// The `fanin` command-line client: `fanin COMMAND [flags] [args]`, where
// COMMAND is watch, write, close, list, stats, nodes or health. See `fanin
// --help` and docs/CLI.md.
#ifndef FANIN_CLIENT_CLI_H_
#define FANIN_CLIENT_CLI_H_

#include <string>
#include <vector>

namespace fanin::cli {

inline constexpr char kVersion[] = "0.1.0";

// Runs one invocation; args exclude the program name. Writes to stdout and
// stderr and returns the process exit code (client/exit_codes.h). Call from
// main() only: `watch` installs signal handling for the process.
int RunCli(const std::vector<std::string>& args);

}  // namespace fanin::cli

#endif  // FANIN_CLIENT_CLI_H_
