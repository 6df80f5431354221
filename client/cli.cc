#include "client/cli.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/command.h"
#include "client/exit_codes.h"
#include "grpcpp/grpcpp.h"

namespace fanin::cli {
namespace {

std::vector<FlagSpec> HelpFlags() {
  return {{.name = "help",
           .short_name = 'h',
           .type = FlagType::kBool,
           .help = "show help for fanin or the command"},
          {.name = "version",
           .type = FlagType::kBool,
           .help = "print the client version and exit"}};
}

std::vector<FlagSpec> Concat(std::vector<FlagSpec> a,
                             const std::vector<FlagSpec>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

FlagSpec TimeoutFlag() {
  return {.name = "timeout",
          .type = FlagType::kDuration,
          .value_name = "DURATION",
          .help =
              "unary calls: give up after DURATION (default 10s); watch: "
              "stop after DURATION"};
}

std::string MainHelp() {
  std::string out =
      "fanin - watch and steer a running fanin server (fanin.v1 API).\n"
      "\n"
      "Usage: fanin [common flags] COMMAND [flags] [args]\n"
      "\n"
      "Commands:\n";
  for (const Command& c : Commands()) {
    absl::StrAppendFormat(&out, "  %-8s %s\n", c.name, c.summary);
  }
  absl::StrAppend(
      &out, "\nCommon flags (every command accepts them):\n",
      FlagsHelp(
          Concat(ServerFlagSpecs(), Concat({TimeoutFlag()}, HelpFlags()))),
      "\nEnvironment (the command line wins):\n"
      "  FANIN_SERVER, FANIN_TLS_CA, FANIN_TLS_SERVER_NAME,\n"
      "  FANIN_TOKEN_FILE  defaults for the flags of those names\n\n",
      ExitCodesHelp(),
      "\nExamples:\n"
      "  fanin watch --kind data,closed\n"
      "  fanin watch -o json --follow | jq .\n"
      "  printf 'hello\\n' | fanin write 42\n"
      "  fanin list -o json\n"
      "  fanin watch --last 20 --follow --server a:50051,b:50051\n"
      "  fanin nodes\n"
      "  fanin health && echo up\n"
      "\nRun \"fanin COMMAND --help\" for a command's flags and "
      "examples; docs/CLI.md has the details.\n");
  return out;
}

std::string CommandHelp(const Command& c) {
  return absl::StrCat("Usage: fanin ", c.synopsis, "\n\n", c.description,
                      "\nFlags:\n", FlagsHelp(c.flags), "\nCommon flags:\n",
                      FlagsHelp(Concat(ServerFlagSpecs(), HelpFlags())),
                      "\nExamples:\n", c.examples,
                      "\nExit codes: see \"fanin --help\".\n");
}

const Command* FindCommand(absl::string_view name) {
  for (const Command& c : Commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

int Usage(absl::string_view message, absl::string_view help_hint) {
  PrintError(absl::StrCat(message, " (see ", help_hint, ")"));
  return kExitUsage;
}

}  // namespace

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      WatchCommand(),  WriteCommand(), CloseCommand(), ListCommand(),
      GroupsCommand(), StatsCommand(), NodesCommand(), HealthCommand()};
  return *commands;
}

bool Output::Write(absl::string_view bytes) {
  if (failed_) return false;
  if (!bytes.empty() &&
      fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) {
    Fail();
  }
  return !failed_;
}

bool Output::Line(absl::string_view line) { return Write(line) && Write("\n"); }

bool Output::Flush() {
  if (failed_) return false;
  if (fflush(file_) != 0) Fail();
  return !failed_;
}

void Output::Fail() {
  failed_ = true;
  broken_pipe_ = errno == EPIPE;
}

void PrintError(absl::string_view message) {
  fprintf(stderr, "fanin: %.*s\n", static_cast<int>(message.size()),
          message.data());
  fflush(stderr);
}

int OutputFailureExit(const Output& out) {
  if (out.broken_pipe()) return kExitOk;
  PrintError(absl::StrCat("cannot write output: ", strerror(errno)));
  return kExitFailure;
}

bool ParseConnectionId(absl::string_view command, absl::string_view text,
                       uint64_t* id) {
  if (text.empty() || text[0] == '+' || text[0] == '-' ||
      !absl::SimpleAtoi(text, id) || *id == 0) {
    PrintError(absl::StrCat(command,
                            ": connection id must be a positive "
                            "integer, got \"",
                            text, "\" (see fanin ", command, " --help)"));
    return false;
  }
  return true;
}

FlagSpec UnaryTimeoutFlag() {
  return {.name = "timeout",
          .type = FlagType::kDuration,
          .value_name = "DURATION",
          .help = "give up on the call after DURATION (default 10s)"};
}

int RunCli(const std::vector<std::string>& args) {
  // Our own errors are reported from the return value of each write.
  signal(SIGPIPE, SIG_IGN);

  std::vector<FlagSpec> common = Concat(ServerFlagSpecs(), HelpFlags());
  // Before the command name, --timeout is accepted too; its meaning is the
  // command's (a call deadline, or how long watch runs).
  std::vector<FlagSpec> before_command = Concat(common, {TimeoutFlag()});
  absl::StatusOr<ParsedFlags> pre = ParseFlags(before_command, args, true);
  if (!pre.ok()) return Usage(pre.status().message(), "fanin --help");
  if (pre->Bool("version")) {
    printf("fanin %s (API fanin.v1, gRPC %s)\n", kVersion,
           grpc::Version().c_str());
    return kExitOk;
  }
  const std::vector<std::string>& rest = pre->positional();
  if (rest.empty()) {
    if (pre->Bool("help")) {
      fputs(MainHelp().c_str(), stdout);
      return kExitOk;
    }
    fputs(MainHelp().c_str(), stderr);
    return Usage("missing command", "fanin --help");
  }
  if (rest[0] == "help") {
    const Command* c = rest.size() > 1 ? FindCommand(rest[1]) : nullptr;
    if (rest.size() > 1 && c == nullptr) {
      return Usage(absl::StrCat("unknown command \"", rest[1], "\""),
                   "fanin --help");
    }
    fputs(c != nullptr ? CommandHelp(*c).c_str() : MainHelp().c_str(), stdout);
    return kExitOk;
  }
  const Command* command = FindCommand(rest[0]);
  if (command == nullptr) {
    return Usage(absl::StrCat("unknown command \"", rest[0], "\""),
                 "fanin --help");
  }
  std::string hint = absl::StrCat("fanin ", command->name, " --help");
  if (pre->Bool("help")) {
    fputs(CommandHelp(*command).c_str(), stdout);
    return kExitOk;
  }

  // The common flags given before the command name.
  std::vector<std::string> prefix(args.begin(),
                                  args.end() - static_cast<long>(rest.size()));
  absl::StatusOr<ParsedFlags> flags = ParseFlags(before_command, prefix);
  std::vector<std::string> after(rest.begin() + 1, rest.end());
  absl::StatusOr<ParsedFlags> own =
      ParseFlags(Concat(command->flags, common), after);
  if (!own.ok()) {
    return Usage(absl::StrCat(command->name, ": ", own.status().message()),
                 hint);
  }
  if (own->Bool("help")) {
    fputs(CommandHelp(*command).c_str(), stdout);
    return kExitOk;
  }
  if (own->Bool("version")) {
    printf("fanin %s (API fanin.v1, gRPC %s)\n", kVersion,
           grpc::Version().c_str());
    return kExitOk;
  }
  flags->Merge(*own);
  absl::Status env = ApplyEnvironment(
      common, [](const char* name) -> const char* { return getenv(name); },
      &*flags);
  if (!env.ok()) {
    return Usage(absl::StrCat(command->name, ": ", env.message()), hint);
  }

  absl::StatusOr<ServerOptions> server = ServerOptionsFromFlags(*flags);
  if (!server.ok()) {
    return Usage(absl::StrCat(command->name, ": ", server.status().message()),
                 hint);
  }
  return command->run(Invocation{*std::move(flags), *std::move(server)});
}

}  // namespace fanin::cli
