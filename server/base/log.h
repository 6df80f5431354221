// A tiny structured logger: one line per event of note, on stderr.
//
// Two formats: human-readable text (the default)
//   2026-11-27T07:55:11.123Z INFO listener bound name=default
//   addr=127.0.0.1:7070
// and JSON for log collectors (--log_format=json)
//   {"ts":"2026-11-27T07:55:11.123Z","level":"info","msg":"listener bound",
//    "name":"default","addr":"127.0.0.1:7070"}
// Fields carry the ids (conn, subscriber, ...); integers stay numbers in JSON.
// Nothing per packet belongs at kInfo or above.
//
// Example:
//   base::Log(base::LogLevel::kInfo, "connection rejected",
//            {{"conn", id}, {"listener", name}, {"reason", why}});
//
// Thread-safe: each line is formatted first and written with one write(2), so
// lines from different threads never interleave. Secrets (tokens) must never
// be passed in fields.
#ifndef FANIN_SERVER_BASE_LOG_H_
#define FANIN_SERVER_BASE_LOG_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fanin::base {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kText, kJson };

// "debug", "info", "warning" (or "warn"), "error"; INVALID_ARGUMENT otherwise.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);
// "text" or "json"; INVALID_ARGUMENT otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);

// Process-wide settings; any thread, any time (defaults: kInfo, kText).
void ConfigureLogging(LogLevel min_level, LogFormat format);
bool LogEnabled(LogLevel level);

// One key=value pair. Strings are quoted/escaped as the format needs;
// integers and bools are written bare.
class LogField {
 public:
  LogField(absl::string_view key, absl::string_view value)
      : key_(key), value_(value) {}
  LogField(absl::string_view key, const char* value)
      : key_(key), value_(value) {}
  LogField(absl::string_view key, const std::string& value)
      : key_(key), value_(value) {}
  LogField(absl::string_view key, bool value)
      : key_(key), value_(value ? "true" : "false"), bare_(true) {}
  template <typename T, typename = std::enable_if_t<std::is_integral_v<T> &&
                                                    !std::is_same_v<T, bool>>>
  LogField(absl::string_view key, T value)
      : key_(key), value_(absl::StrCat(value)), bare_(true) {}

  absl::string_view key() const { return key_; }
  absl::string_view value() const { return value_; }
  bool bare() const { return bare_; }

 private:
  absl::string_view key_;
  std::string value_;
  bool bare_ = false;
};

// The line (with its trailing newline) as it would be written.
std::string FormatLogLine(LogFormat format, absl::Time when, LogLevel level,
                          absl::string_view message,
                          std::initializer_list<LogField> fields);

// Writes one line when `level` is enabled.
void Log(LogLevel level, absl::string_view message,
         std::initializer_list<LogField> fields = {});

// Keeps a line that a hostile peer can trigger (a refused call, a rejected
// connection) from flooding the log: at most `per_second` lines pass each
// second; the rest are counted and reported with the next line that passes.
// Thread-safe.
//
// Example:
//   static LogRateLimiter limiter(5);
//   uint64_t dropped = 0;
//   if (limiter.Allow(&dropped)) Log(kWarning, "rpc refused", {{"suppressed",
//   dropped}});
class LogRateLimiter {
 public:
  explicit LogRateLimiter(int per_second) : per_second_(per_second) {}
  // True when this line may be written; then *suppressed (if given) is the
  // number of lines held back since the last one allowed.
  bool Allow(uint64_t* suppressed = nullptr);

 private:
  const int per_second_;
  std::atomic<int64_t> second_{0};
  std::atomic<int> in_second_{0};
  std::atomic<uint64_t> suppressed_{0};
};

// Tests: send lines to `sink` instead of stderr (empty: back to stderr).
void SetLogSinkForTesting(std::function<void(absl::string_view line)> sink);

}  // namespace fanin::base

#endif  // FANIN_SERVER_BASE_LOG_H_
