// The command-line parser of the `fanin` subcommands.
//
// Each subcommand declares its flags as FlagSpecs; ParseFlags checks names,
// types and values up front, so the typed getters of ParsedFlags never fail.
// Values are parsed by Abseil's flag marshalling (absl::ParseFlag and
// AbslParseFlag overloads such as OutputFormat's), the same code
// ABSL_FLAG uses. The tokenizer stays ours: Abseil's global flags and
// ParseCommandLine (which exits 1 on an error; 20220623 has no
// ParseAbseilFlagsOnly) cannot give per-subcommand flag sets and help,
// short options or exit code 2 for usage errors.
// Accepted forms: --name=value, --name value, -x value, -xvalue, --bool,
// --bool=true|false, `--` (everything after is positional) and a lone `-`
// (positional, conventionally stdin). '-' and '_' in long names are
// interchangeable: --resume-after and --resume_after are the same flag.
//
// Example:
//   std::vector<FlagSpec> specs = {
//       {.name = "count", .short_name = 'n', .type = FlagType::kUint,
//        .value_name = "N", .help = "stop after N events"}};
//   absl::StatusOr<ParsedFlags> flags = ParseFlags(specs, {"-n", "5"});
//   uint64_t n = flags->Uint("count", 0);  // 5
#ifndef FANIN_CLIENT_FLAGS_H_
#define FANIN_CLIENT_FLAGS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/marshalling.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fanin::cli {

enum class FlagType {
  kBool,
  kString,
  kUint,      // a non-negative decimal integer (uint64)
  kDuration,  // "1.5s", "300ms", "2m", or a plain number of seconds
  kList,      // repeatable; each value may also be comma-separated
};

struct FlagSpec {
  std::string name;
  char short_name = 0;
  FlagType type = FlagType::kString;
  // Shown in help: --name=VALUE_NAME.
  std::string value_name;
  std::string help;
  // Restricts a kString flag to these values (case-sensitive) when non-empty.
  std::vector<std::string> choices;
  // Also read from $FANIN_<NAME> (upper case, '-' as '_') when absent from
  // the command line; see ApplyEnvironment.
  bool env = false;
};

// -o/--output of the subcommands.
enum class OutputFormat { kText, kJson, kRaw };
// "text", "json" or "raw"; Abseil's flag marshalling hooks.
bool AbslParseFlag(absl::string_view text, OutputFormat* format,
                   std::string* error);
std::string AbslUnparseFlag(OutputFormat format);

class ParsedFlags {
 public:
  bool Has(absl::string_view name) const;
  // The last value given, or def.
  std::string String(absl::string_view name, absl::string_view def) const;
  bool Bool(absl::string_view name) const;
  uint64_t Uint(absl::string_view name, uint64_t def) const;
  absl::Duration Duration(absl::string_view name, absl::Duration def) const;
  // Every value, in order, split at commas, without empty items.
  std::vector<std::string> List(absl::string_view name) const;

  // The last value given parsed as T by absl::ParseFlag, or def. For types
  // with an AbslParseFlag overload (OutputFormat) and Abseil's built-ins.
  template <typename T>
  T Get(absl::string_view name, T def) const {
    auto it = values_.find(Canonical(name));
    T value;
    std::string error;
    if (it == values_.end() ||
        !absl::ParseFlag(it->second.back(), &value, &error)) {
      return def;
    }
    return value;
  }

  const std::vector<std::string>& positional() const { return positional_; }

  // Adds other's flags (overriding on String/Uint/Duration, appending on List)
  // and positional arguments.
  void Merge(const ParsedFlags& other);

 private:
  friend absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<FlagSpec>&,
                                                const std::vector<std::string>&,
                                                bool);
  friend absl::Status ApplyEnvironment(
      const std::vector<FlagSpec>&, absl::FunctionRef<const char*(const char*)>,
      ParsedFlags*);
  // "resume_after" and "resume-after" are one flag.
  static std::string Canonical(absl::string_view name);
  // Canonical name -> values in order.
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// Parses args against specs. With stop_at_positional, parsing stops at the
// first positional argument, which is returned with everything after it as
// positional (used to find the subcommand after the common flags).
// InvalidArgument with a user-facing message on an unknown flag, a missing or
// malformed value, or a value outside `choices`.
absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<FlagSpec>& specs,
                                       const std::vector<std::string>& args,
                                       bool stop_at_positional = false);

// The one environment overlay: every spec marked `env` that the command
// line did not set takes $FANIN_<NAME> when that is set and non-empty
// (FANIN_SERVER, FANIN_TOKEN_FILE, ...), checked like a flag value. The
// command line wins. getenv is a parameter so tests need not touch the
// process environment. InvalidArgument naming the variable on a bad value.
absl::Status ApplyEnvironment(
    const std::vector<FlagSpec>& specs,
    absl::FunctionRef<const char*(const char*)> getenv, ParsedFlags* flags);

// Aligned help lines, one flag per line, for --help output.
std::string FlagsHelp(const std::vector<FlagSpec>& specs);

// Parses a duration as accepted for kDuration flags.
bool ParseDurationValue(absl::string_view text, absl::Duration* out);

}  // namespace fanin::cli

#endif  // FANIN_CLIENT_FLAGS_H_
