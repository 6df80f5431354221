#include "client/flags.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace fanin::cli {
namespace {

std::string Canonical(absl::string_view name) {
  return absl::StrReplaceAll(name, {{"_", "-"}});
}

// Whether absl::ParseFlag takes the text as a T.
template <typename T>
bool Parses(absl::string_view text) {
  T value;
  std::string error;
  return absl::ParseFlag(text, &value, &error);
}

const FlagSpec* FindLong(const std::vector<FlagSpec>& specs,
                         absl::string_view name) {
  std::string want = Canonical(name);
  for (const FlagSpec& spec : specs) {
    if (Canonical(spec.name) == want) return &spec;
  }
  return nullptr;
}

const FlagSpec* FindShort(const std::vector<FlagSpec>& specs, char c) {
  for (const FlagSpec& spec : specs) {
    if (spec.short_name != 0 && spec.short_name == c) return &spec;
  }
  return nullptr;
}

absl::Status CheckValue(const FlagSpec& spec, absl::string_view value) {
  auto bad = [&](absl::string_view want) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", spec.name, ": want ", want, ", got \"", value, "\""));
  };
  switch (spec.type) {
    case FlagType::kBool:
      if (!Parses<bool>(value)) return bad("true or false");
      break;
    case FlagType::kUint:
      // A leading digit: Abseil alone would also take "+5" and "0x10".
      if (value.empty() || !absl::ascii_isdigit(value[0]) ||
          !Parses<uint64_t>(value)) {
        return bad("a non-negative integer");
      }
      break;
    case FlagType::kDuration: {
      absl::Duration d;
      if (!ParseDurationValue(value, &d)) {
        return bad("a duration such as 500ms, 10s or 2m");
      }
      break;
    }
    case FlagType::kString:
      if (!spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), value) ==
              spec.choices.end()) {
        return bad(absl::StrJoin(spec.choices, ", "));
      }
      break;
    case FlagType::kList:
      break;
  }
  return absl::OkStatus();
}

}  // namespace

std::string ParsedFlags::Canonical(absl::string_view name) {
  return fanin::cli::Canonical(name);
}

bool AbslParseFlag(absl::string_view text, OutputFormat* format,
                   std::string* error) {
  if (text == "text") {
    *format = OutputFormat::kText;
  } else if (text == "json") {
    *format = OutputFormat::kJson;
  } else if (text == "raw") {
    *format = OutputFormat::kRaw;
  } else {
    *error = "want text, json or raw";
    return false;
  }
  return true;
}

std::string AbslUnparseFlag(OutputFormat format) {
  switch (format) {
    case OutputFormat::kText:
      return "text";
    case OutputFormat::kJson:
      return "json";
    case OutputFormat::kRaw:
      return "raw";
  }
  return "text";
}

bool ParseDurationValue(absl::string_view text, absl::Duration* out) {
  double seconds;
  if (absl::SimpleAtod(text, &seconds)) {
    if (!std::isfinite(seconds) || seconds < 0) return false;
    *out = absl::Seconds(seconds);
    return true;
  }
  if (!absl::ParseDuration(text, out)) return false;
  return *out >= absl::ZeroDuration() && *out != absl::InfiniteDuration();
}

absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<FlagSpec>& specs,
                                       const std::vector<std::string>& args,
                                       bool stop_at_positional) {
  ParsedFlags parsed;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (arg == "--") {
      parsed.positional_.insert(parsed.positional_.end(), args.begin() + i + 1,
                                args.end());
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      if (stop_at_positional) {
        parsed.positional_.insert(parsed.positional_.end(), args.begin() + i,
                                  args.end());
        break;
      }
      parsed.positional_.emplace_back(arg);
      continue;
    }
    const FlagSpec* spec = nullptr;
    std::string value;
    bool has_value = false;
    std::string shown;  // the flag as the user wrote it, for messages
    if (absl::StartsWith(arg, "--")) {
      absl::string_view body = arg.substr(2);
      size_t eq = body.find('=');
      absl::string_view name = body.substr(0, eq);
      shown = absl::StrCat("--", name);
      spec = FindLong(specs, name);
      if (eq != absl::string_view::npos) {
        value = std::string(body.substr(eq + 1));
        has_value = true;
      }
    } else {
      shown = std::string(arg.substr(0, 2));
      spec = FindShort(specs, arg[1]);
      if (arg.size() > 2) {
        value = std::string(arg.substr(2));
        if (!value.empty() && value[0] == '=') value.erase(0, 1);
        has_value = true;
      }
    }
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", shown));
    }
    if (spec->type == FlagType::kBool) {
      if (!has_value) value = "true";
    } else if (!has_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat(shown, " needs a value (", spec->value_name, ")"));
      }
      value = args[++i];
    }
    absl::Status status = CheckValue(*spec, value);
    if (!status.ok()) return status;
    parsed.values_[Canonical(spec->name)].push_back(std::move(value));
  }
  return parsed;
}

bool ParsedFlags::Has(absl::string_view name) const {
  return values_.count(Canonical(name)) > 0;
}

std::string ParsedFlags::String(absl::string_view name,
                                absl::string_view def) const {
  auto it = values_.find(Canonical(name));
  return it == values_.end() ? std::string(def) : it->second.back();
}

bool ParsedFlags::Bool(absl::string_view name) const {
  return Get<bool>(name, false);
}

uint64_t ParsedFlags::Uint(absl::string_view name, uint64_t def) const {
  return Get<uint64_t>(name, def);
}

absl::Duration ParsedFlags::Duration(absl::string_view name,
                                     absl::Duration def) const {
  auto it = values_.find(Canonical(name));
  absl::Duration d = def;
  if (it != values_.end() && !ParseDurationValue(it->second.back(), &d)) {
    d = def;
  }
  return d;
}

std::vector<std::string> ParsedFlags::List(absl::string_view name) const {
  std::vector<std::string> out;
  auto it = values_.find(Canonical(name));
  if (it == values_.end()) return out;
  for (const std::string& value : it->second) {
    for (absl::string_view item :
         absl::StrSplit(value, ',', absl::SkipEmpty())) {
      out.emplace_back(absl::StripAsciiWhitespace(item));
    }
  }
  return out;
}

void ParsedFlags::Merge(const ParsedFlags& other) {
  for (const auto& [name, values] : other.values_) {
    auto& mine = values_[name];
    mine.insert(mine.end(), values.begin(), values.end());
  }
  positional_.insert(positional_.end(), other.positional_.begin(),
                     other.positional_.end());
}

absl::Status ApplyEnvironment(
    const std::vector<FlagSpec>& specs,
    absl::FunctionRef<const char*(const char*)> getenv, ParsedFlags* flags) {
  for (const FlagSpec& spec : specs) {
    if (!spec.env || flags->Has(spec.name)) continue;
    std::string var = absl::StrCat(
        "FANIN_",
        absl::AsciiStrToUpper(absl::StrReplaceAll(spec.name, {{"-", "_"}})));
    const char* value = getenv(var.c_str());
    if (value == nullptr || *value == '\0') continue;
    absl::Status status = CheckValue(spec, value);
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("$", var, ": ", status.message()));
    }
    flags->values_[Canonical(spec.name)].push_back(value);
  }
  return absl::OkStatus();
}

std::string FlagsHelp(const std::vector<FlagSpec>& specs) {
  std::vector<std::string> heads;
  size_t width = 0;
  for (const FlagSpec& spec : specs) {
    std::string head = spec.short_name != 0
                           ? absl::StrCat("-", std::string(1, spec.short_name),
                                          ", --", spec.name)
                           : absl::StrCat("    --", spec.name);
    if (spec.type != FlagType::kBool) {
      absl::StrAppend(&head, "=",
                      spec.value_name.empty() ? "VALUE" : spec.value_name);
    }
    width = std::max(width, head.size());
    heads.push_back(std::move(head));
  }
  std::string out;
  for (size_t i = 0; i < specs.size(); ++i) {
    std::string help = specs[i].help;
    if (!specs[i].choices.empty()) {
      absl::StrAppend(&help, " (", absl::StrJoin(specs[i].choices, "|"), ")");
    }
    absl::StrAppendFormat(&out, "  %-*s  %s\n", static_cast<int>(width),
                          heads[i], help);
  }
  return out;
}

}  // namespace fanin::cli
