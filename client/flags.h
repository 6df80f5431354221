// A small command-line parser for the `fanin` subcommands.
//
// Each subcommand declares its flags as FlagSpecs; ParseFlags checks names,
// types and values up front, so the typed getters of ParsedFlags never fail.
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
};

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

  const std::vector<std::string>& positional() const { return positional_; }

  // Adds other's flags (overriding on String/Uint/Duration, appending on List)
  // and positional arguments.
  void Merge(const ParsedFlags& other);

 private:
  friend absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<FlagSpec>&,
                                                const std::vector<std::string>&,
                                                bool);
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

// Aligned help lines, one flag per line, for --help output.
std::string FlagsHelp(const std::vector<FlagSpec>& specs);

// Parses a duration as accepted for kDuration flags.
bool ParseDurationValue(absl::string_view text, absl::Duration* out);

}  // namespace fanin::cli

#endif  // FANIN_CLIENT_FLAGS_H_
