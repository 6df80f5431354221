// Output formatting for the `fanin` client: terminal-safe previews, base64,
// a small JSON object encoder (RFC 8259 escaping), and the text and JSON
// renderings of fanin.v1 messages. Pure functions; any thread.
//
// JSON field names are a stable contract for scripts (docs/CLI.md lists them);
// add fields, never rename or remove them.
#ifndef FANIN_CLIENT_FORMAT_H_
#define FANIN_CLIENT_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "fanin/v1/fanin.pb.h"

namespace fanin::cli {

// Escapes bytes for a terminal: printable ASCII stays (except '\\' and '"'),
// \n \r \t \\ \" get C escapes, everything else (control bytes, DEL, every
// byte >= 0x80) becomes \xHH. At most max_bytes input bytes are rendered.
std::string EscapeBytes(absl::string_view bytes,
                        size_t max_bytes = static_cast<size_t>(-1));

// Standard base64 (RFC 4648, with padding).
std::string Base64Encode(absl::string_view bytes);

// A JSON string literal, quotes included. Bytes that are not valid UTF-8 are
// replaced by U+FFFD so the output is always valid JSON.
std::string JsonString(absl::string_view text);

// Builds one flat JSON object, keys in insertion order.
//   JsonObject o; o.Add("seq", 5).Add("kind", "data"); o.str() ->
//   {"seq":5,"kind":"data"}
class JsonObject {
 public:
  JsonObject& Add(absl::string_view key, absl::string_view value);
  JsonObject& Add(absl::string_view key, const char* value) {
    return Add(key, absl::string_view(value));
  }
  JsonObject& Add(absl::string_view key, const std::string& value) {
    return Add(key, absl::string_view(value));
  }
  JsonObject& Add(absl::string_view key, uint64_t value);
  JsonObject& Add(absl::string_view key, uint32_t value) {
    return Add(key, static_cast<uint64_t>(value));
  }
  JsonObject& Add(absl::string_view key, int value) {
    return Add(key, static_cast<uint64_t>(value < 0 ? 0 : value));
  }
  JsonObject& Add(absl::string_view key, double value);
  JsonObject& Add(absl::string_view key, bool value);
  // The object text, without a trailing newline.
  std::string str() const { return body_ + "}"; }

 private:
  void Key(absl::string_view key);
  std::string body_ = "{";
};

// RFC 3339 UTC with nanoseconds: "2026-11-27T07:31:02.123456789Z".
std::string FormatTimeRfc3339(uint64_t unix_nano);
// Time of day, UTC, microseconds: "07:31:02.123456Z".
std::string FormatTimeOfDay(uint64_t unix_nano);
// Compact age: "850ms", "42s", "3m07s", "5h02m", "2d03h".
std::string FormatAge(absl::Duration age);

// Lower-case names used in JSON and accepted by --kind: "opened", "data",
// "writable", "read_closed", "closed", "readable"; "unknown" otherwise.
std::string KindName(v1::EventKind kind);
// The kind an Event carries.
v1::EventKind EventKindOf(const v1::Event& event);
// Parses a --kind value: the names above, case-insensitive, '-' or '_', or
// the proto enum name (EVENT_KIND_DATA). InvalidArgument otherwise.
absl::StatusOr<v1::EventKind> ParseKind(absl::string_view text);
// "peer_closed", "reset", "closed_by_subscriber", "idle_timeout", "error",
// "server_shutdown", "rejected", "unspecified".
std::string CloseReasonName(v1::CloseReason reason);
// "subscriber_too_slow", "history_expired", "epoch_changed", "unspecified".
std::string GapReasonName(v1::GapReason reason);

struct TextOptions {
  // Payload bytes shown in a DATA line's preview.
  size_t preview_bytes = 64;
};

// One aligned line (no newline): time, seq, connection, listener, kind and a
// kind-specific detail. Every server-supplied string is escaped.
//   07:31:02.123456Z  seq=12        conn=3      default     DATA         5 B
//   "hi\n"
std::string FormatEventText(const v1::Event& event,
                            const TextOptions& options = {});

// {"type":"event","seq":..,"time":..,"time_unix_nano":..,"connection_id":..,
//  "listener":..,"kind":.., + per kind: opened: remote_address,
//  local_address; data: size, payload (base64), payload_truncated; closed:
//  reason, detail, bytes_received, bytes_sent}
std::string FormatEventJson(const v1::Event& event);
// {"type":"started","server_epoch":..,"oldest_seq":..,"head_seq":..}
std::string FormatStartedJson(const v1::Started& started);
// {"type":"gap","first_seq":..,"last_seq":..,"lost":..,"reason":..}
std::string FormatGapJson(const v1::Gap& gap);
// {"type":"heartbeat","head_seq":..,"delivered":..,"lost":..}
std::string FormatHeartbeatJson(const v1::Heartbeat& heartbeat);
// Human sentences for stderr (no "fanin: " prefix, no newline).
std::string FormatGapText(const v1::Gap& gap);
std::string FormatHeartbeatText(const v1::Heartbeat& heartbeat);

// {"connection_id":..,"listener":..,"remote_address":..,"local_address":..,
//  "opened":..,"opened_unix_nano":..,"age_seconds":..,"bytes_received":..,
//  "bytes_sent":..,"queued_bytes":..}
std::string FormatConnectionJson(const v1::Connection& connection,
                                 absl::Time now);
// Proto field names: {"poller":..,"connections_open":.., ...}
std::string FormatStatsJson(const v1::GetStatsResponse& stats);
// "name   value" lines, aligned, newline-terminated.
std::string FormatStatsText(const v1::GetStatsResponse& stats);

}  // namespace fanin::cli

#endif  // FANIN_CLIENT_FORMAT_H_
