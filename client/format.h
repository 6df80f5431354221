// Output formatting for the `fanin` client: terminal-safe previews, the text
// renderings of fanin.v1 messages, and their JSON (protobuf's canonical proto3
// JSON mapping, so the JSON contract is fanin.proto itself). Pure functions;
// any thread.
#ifndef FANIN_CLIENT_FORMAT_H_
#define FANIN_CLIENT_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "fanin/v1/fanin.pb.h"
#include "google/protobuf/message.h"

namespace fanin::cli {

// Escapes bytes for a terminal: printable ASCII stays (except '\\' and '"'),
// \n \r \t \\ \" get C escapes, everything else (control bytes, DEL, every
// byte >= 0x80) becomes \xHH. At most max_bytes input bytes are rendered.
std::string EscapeBytes(absl::string_view bytes,
                        size_t max_bytes = static_cast<size_t>(-1));

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
// "up", "draining", "left", "lost", "joined", "unspecified".
std::string NodeStateName(v1::NodeState state);

struct TextOptions {
  // Payload bytes shown in a DATA line's preview.
  size_t preview_bytes = 64;
};

// One aligned line (no newline): time, seq, connection, in cluster mode the
// node in brackets, listener, kind and a kind-specific detail; a NodeChange
// has the node in place of connection and listener. Every server-supplied
// string is escaped. For example (times shortened):
//   ..53Z  seq=12        conn=3      default    DATA        5 B "hi\n"
//   ..54Z  seq=13        conn=4      [node-a] default    OPENED      from ...
//   ..55Z  seq=14        [node-b]               NODE        lost ...
std::string FormatEventText(const v1::Event& event,
                            const TextOptions& options = {});

// One API message as one line of JSON (no newline): protobuf's canonical
// proto3 JSON mapping, printed by its own printer. Field names as in
// fanin.proto (snake_case), every field present even at its default value
// (scripts need no defaults), enums by name ("CLOSE_REASON_RESET"), 64-bit
// integers as strings ("seq":"12"), bytes in base64, a oneof as the one
// member set ("data":{"payload":..,"size":..}).
//   MessageJson(event) ->
//   {"seq":"12","time_unix_nano":"1795765373123456789","connection_id":"3",
//    "listener":"default","data":{"payload":"aGkK","size":3}}
std::string MessageJson(const google::protobuf::Message& message);
// Human sentences for stderr (no "fanin: " prefix, no newline).
std::string FormatGapText(const v1::Gap& gap);
// A group member's Assigned, e.g. "assigned conn=12 (default, from
// 127.0.0.1:5555) from seq=345, in=120 out=0: its member 3 left; seq
// 345..350 may repeat what member 3 got".
std::string FormatAssignedText(const v1::Assigned& assigned);
std::string FormatHeartbeatText(const v1::Heartbeat& heartbeat);

// `fanin groups` in text: per group a line (name, delivery, members,
// connections, backlog), then a line per member; newline-terminated.
//   workers  lossless  3 members  300 connections (0 unassigned)  0 queued
//     member 3  ipv4:127.0.0.1:50322  100 connections  0 queued
//     1234 delivered  joined 5s ago
std::string FormatGroupsText(const v1::ListGroupsResponse& groups,
                             absl::Time now);

// "name   value" lines, aligned, newline-terminated. The cluster rows (node,
// cluster head and oldest seq) only when the server is in a cluster.
std::string FormatStatsText(const v1::GetStatsResponse& stats);

// A text table: one line per row (the first is the header), columns two
// spaces apart, those marked in `right_aligned` (numbers) aligned right, the
// others left; the last column is not padded. Cells are printed as given:
// escape server-supplied text first.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows,
                        const std::vector<bool>& right_aligned);

// `fanin nodes`' table: NAME (- when empty, as in standalone), STATE,
// GRPC ADDRESS, CONNECTIONS, LAST SEEN (how long before `now`), INCARNATION.
std::string FormatNodesTable(const v1::ListNodesResponse& nodes,
                             absl::Time now);

}  // namespace fanin::cli

#endif  // FANIN_CLIENT_FORMAT_H_
