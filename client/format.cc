#include "client/format.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"

namespace fanin::cli {
namespace {

constexpr char kHex[] = "0123456789abcdef";

// The generated enum name without its prefix, lower case:
// ("EVENT_KIND_READ_CLOSED", "EVENT_KIND_") -> "read_closed". Empty for a
// value the enum lacks (its _Name() is empty then).
std::string ShortName(absl::string_view full, absl::string_view prefix) {
  absl::ConsumePrefix(&full, prefix);
  return absl::AsciiStrToLower(full);
}

std::string UpperKind(v1::EventKind kind) {
  return absl::AsciiStrToUpper(KindName(kind));
}

std::string EventDetailText(const v1::Event& event,
                            const TextOptions& options) {
  switch (event.kind_case()) {
    case v1::Event::kOpened: {
      const v1::Opened& o = event.opened();
      std::string out = absl::StrCat("from ", EscapeBytes(o.remote_address()),
                                     " to ", EscapeBytes(o.local_address()));
      if (o.has_proxy()) {
        absl::StrAppend(&out, " via ", EscapeBytes(o.proxy().proxy_address()),
                        " (PROXY v", o.proxy().version(), ")");
      }
      if (o.has_tls()) {
        absl::StrAppend(&out, " ", EscapeBytes(o.tls().version()), " ",
                        EscapeBytes(o.tls().cipher()));
        if (!o.tls().server_name().empty()) {
          absl::StrAppend(&out, " sni=", EscapeBytes(o.tls().server_name()));
        }
        if (!o.tls().alpn().empty()) {
          absl::StrAppend(&out, " alpn=", EscapeBytes(o.tls().alpn()));
        }
        if (!o.tls().peer_subject().empty()) {
          absl::StrAppend(&out, " peer=", EscapeBytes(o.tls().peer_subject()));
        }
      }
      return out;
    }
    case v1::Event::kData: {
      const v1::Data& data = event.data();
      std::string out = absl::StrCat(data.size(), " B");
      if (data.payload().empty()) {
        if (data.size() > 0) absl::StrAppend(&out, " (payload omitted)");
        return out;
      }
      size_t shown = std::min(options.preview_bytes, data.payload().size());
      absl::StrAppend(&out, " \"", EscapeBytes(data.payload(), shown), "\"");
      if (shown < data.size()) absl::StrAppend(&out, "...");
      return out;
    }
    case v1::Event::kReadClosed:
      return "peer sent FIN";
    case v1::Event::kClosed: {
      const v1::Closed& closed = event.closed();
      std::string out = absl::StrCat(CloseReasonName(closed.reason()),
                                     " in=", closed.bytes_received(),
                                     " out=", closed.bytes_sent());
      if (!closed.detail().empty()) {
        absl::StrAppend(&out, " \"", EscapeBytes(closed.detail()), "\"");
      }
      return out;
    }
    case v1::Event::kNodeChange: {
      const v1::NodeChange& change = event.node_change();
      std::string out = absl::StrCat(NodeStateName(change.state()),
                                     " incarnation=", change.incarnation());
      if (!change.grpc_address().empty()) {
        absl::StrAppend(&out, " at ", EscapeBytes(change.grpc_address()));
      }
      if (!change.detail().empty()) {
        absl::StrAppend(&out, " \"", EscapeBytes(change.detail()), "\"");
      }
      return out;
    }
    case v1::Event::kGroupChange: {
      const v1::GroupChange& change = event.group_change();
      return absl::StrCat(
          change.change() == v1::GroupChange::MEMBER_JOINED ? "member joined"
          : change.change() == v1::GroupChange::MEMBER_LEFT ? "member left"
                                                            : "changed",
          " group=", EscapeBytes(change.group()),
          " member=", change.member_id());
    }
    case v1::Event::kWritable:
    case v1::Event::kReadable:
    case v1::Event::KIND_NOT_SET:
      break;
  }
  return "";
}

}  // namespace

std::string EscapeBytes(absl::string_view bytes, size_t max_bytes) {
  std::string out;
  size_t n = std::min(bytes.size(), max_bytes);
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(bytes[i]);
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      default:
        if (c >= 0x20 && c < 0x7f) {
          out.push_back(static_cast<char>(c));
        } else {
          out += "\\x";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xf]);
        }
    }
  }
  return out;
}

std::string FormatTimeOfDay(uint64_t unix_nano) {
  absl::Time t = absl::FromUnixNanos(static_cast<int64_t>(unix_nano));
  return absl::FormatTime("%H:%M:%E6SZ", t, absl::UTCTimeZone());
}

std::string FormatAge(absl::Duration age) {
  if (age < absl::ZeroDuration()) age = absl::ZeroDuration();
  int64_t ms = absl::ToInt64Milliseconds(age);
  if (ms < 1000) return absl::StrCat(ms, "ms");
  int64_t s = ms / 1000;
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, s % 86400 / 3600);
}

std::string KindName(v1::EventKind kind) {
  std::string name = ShortName(v1::EventKind_Name(kind), "EVENT_KIND_");
  return name.empty() || kind == v1::EVENT_KIND_UNSPECIFIED ? "unknown" : name;
}

v1::EventKind EventKindOf(const v1::Event& event) {
  switch (event.kind_case()) {
    case v1::Event::kOpened:
      return v1::EVENT_KIND_OPENED;
    case v1::Event::kData:
      return v1::EVENT_KIND_DATA;
    case v1::Event::kWritable:
      return v1::EVENT_KIND_WRITABLE;
    case v1::Event::kReadClosed:
      return v1::EVENT_KIND_READ_CLOSED;
    case v1::Event::kClosed:
      return v1::EVENT_KIND_CLOSED;
    case v1::Event::kReadable:
      return v1::EVENT_KIND_READABLE;
    case v1::Event::kNodeChange:
      return v1::EVENT_KIND_NODE;
    case v1::Event::kGroupChange:
      return v1::EVENT_KIND_GROUP;
    case v1::Event::KIND_NOT_SET:
      break;
  }
  return v1::EVENT_KIND_UNSPECIFIED;
}

absl::StatusOr<v1::EventKind> ParseKind(absl::string_view text) {
  std::string name = absl::AsciiStrToUpper(text);
  absl::StrReplaceAll({{"-", "_"}}, &name);
  if (!absl::StartsWith(name, "EVENT_KIND_")) name.insert(0, "EVENT_KIND_");
  v1::EventKind kind;
  if (v1::EventKind_Parse(name, &kind) && kind != v1::EVENT_KIND_UNSPECIFIED) {
    return kind;
  }
  // Every kind the API defines, so a newer proto needs no change here.
  std::vector<std::string> names;
  const google::protobuf::EnumDescriptor* kinds = v1::EventKind_descriptor();
  for (int i = 0; i < kinds->value_count(); ++i) {
    if (kinds->value(i)->number() == v1::EVENT_KIND_UNSPECIFIED) continue;
    names.push_back(
        KindName(static_cast<v1::EventKind>(kinds->value(i)->number())));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown event kind \"", text, "\"; want ", absl::StrJoin(names, ", ")));
}

std::string CloseReasonName(v1::CloseReason reason) {
  std::string name = ShortName(v1::CloseReason_Name(reason), "CLOSE_REASON_");
  return name.empty() ? "unspecified" : name;
}

std::string GapReasonName(v1::GapReason reason) {
  std::string name = ShortName(v1::GapReason_Name(reason), "GAP_REASON_");
  return name.empty() ? "unspecified" : name;
}

std::string NodeStateName(v1::NodeState state) {
  std::string name = ShortName(v1::NodeState_Name(state), "NODE_STATE_");
  return name.empty() ? "unspecified" : name;
}

std::string FormatEventText(const v1::Event& event,
                            const TextOptions& options) {
  // The columns of "conn=ID LISTENER": a NodeChange is about no connection.
  std::string source;
  if (event.has_node_change() || event.has_group_change()) {
    source = absl::StrFormat("%-22s",
                             absl::StrCat("[", EscapeBytes(event.node()), "]"));
  } else {
    source = absl::StrFormat("conn=%-6d ", event.connection_id());
    if (!event.node().empty()) {
      absl::StrAppend(&source, "[", EscapeBytes(event.node()), "] ");
    }
    absl::StrAppendFormat(&source, "%-10s", EscapeBytes(event.listener()));
  }
  std::string line = absl::StrFormat(
      "%s  seq=%-9d %s %-11s %s", FormatTimeOfDay(event.time_unix_nano()),
      event.seq(), source, UpperKind(EventKindOf(event)),
      EventDetailText(event, options));
  absl::string_view trimmed = absl::StripTrailingAsciiWhitespace(line);
  line.resize(trimmed.size());
  return line;
}

std::string MessageJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.add_whitespace = false;  // one object per line
  std::string out;
  google::protobuf::util::Status status =
      google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) {
    // Only a message the generated pool does not describe gets here: a bug,
    // but the line must stay one JSON object.
    std::string why = status.message().as_string();
    std::replace_if(
        why.begin(), why.end(),
        [](char c) { return c == '"' || c == '\\' || c < 0x20 || c >= 0x7f; },
        '?');
    out = absl::StrCat("{\"error\":\"", why, "\"}");
  }
  return out;
}

std::string FormatGapText(const v1::Gap& gap) {
  switch (gap.reason()) {
    case v1::GAP_REASON_EPOCH_CHANGED:
      return "gap: the server restarted (new epoch); events of the old "
             "epoch that were not delivered are lost";
    case v1::GAP_REASON_HISTORY_EXPIRED:
      return absl::StrCat("gap: seq ", gap.first_seq(), "..", gap.last_seq(),
                          " expired from the server's history (", gap.lost(),
                          " events lost)");
    case v1::GAP_REASON_SUBSCRIBER_TOO_SLOW:
      return absl::StrCat("gap: ", gap.lost(), " events lost (seq ",
                          gap.first_seq(), "..", gap.last_seq(),
                          "): this subscriber fell behind; try --lossless, "
                          "--omit-payload or narrower filters");
    default:
      return absl::StrCat("gap: ", gap.lost(), " events lost (seq ",
                          gap.first_seq(), "..", gap.last_seq(), ")");
  }
}

std::string FormatAssignedText(const v1::Assigned& a) {
  const std::string where = absl::StrCat(
      "conn=", a.connection_id(), " (", EscapeBytes(a.listener(), 64),
      ", from ", EscapeBytes(a.remote_address(), 64), ")");
  if (a.revoked()) {
    return absl::StrCat(
        "unassigned ", where,
        ": a rebalance moved it to another member from seq=", a.from_seq());
  }
  std::string out =
      absl::StrCat("assigned ", where, " from seq=", a.from_seq(),
                   ", in=", a.bytes_received(), " out=", a.bytes_sent());
  switch (a.reason()) {
    case v1::ASSIGN_REASON_EXISTING:
      absl::StrAppend(&out, ": open before the group");
      break;
    case v1::ASSIGN_REASON_MEMBER_LEFT:
      absl::StrAppend(&out, ": its member ", a.previous_member(), " left");
      break;
    case v1::ASSIGN_REASON_REBALANCE:
      absl::StrAppend(&out, ": rebalanced from member ", a.previous_member());
      break;
    case v1::ASSIGN_REASON_UNASSIGNED:
      absl::StrAppend(&out, ": it waited for a member");
      break;
    case v1::ASSIGN_REASON_EVENTS_LOST:
      absl::StrAppend(&out, ": still yours, events were lost");
      break;
    default:
      break;
  }
  if (a.possibly_redelivered_through_seq() != 0) {
    absl::StrAppend(&out, "; seq ", a.from_seq(), "..",
                    a.possibly_redelivered_through_seq(),
                    " may repeat what the previous member got");
  }
  if (a.has_gap() && a.gap().lost() > 0) {
    absl::StrAppend(&out, "; ", a.gap().lost(), " of its events lost (seq ",
                    a.gap().first_seq(), "..", a.gap().last_seq(), ")");
  }
  return out;
}

std::string FormatGroupsText(const v1::ListGroupsResponse& groups,
                             absl::Time now) {
  std::string out;
  for (const v1::GroupInfo& g : groups.groups()) {
    absl::StrAppend(
        &out, EscapeBytes(g.name(), 128), "  ",
        g.delivery() == v1::DELIVERY_LOSSLESS ? "lossless" : "lossy", "  ",
        g.members_size(), g.members_size() == 1 ? " member  " : " members  ",
        g.connections(), " connections (", g.unassigned_connections(),
        " unassigned)  ", g.queued_events(), " queued");
    if (g.delivery() == v1::DELIVERY_LOSSLESS) {
      absl::StrAppend(&out, "  backlog ", g.backlog_bytes(), " B",
                      g.paused() ? " PAUSED" : "");
    }
    absl::StrAppend(&out, "  handovers=", g.handovers(),
                    " redelivered=", g.redelivered_events(),
                    " lost=", g.events_lost());
    if (g.empty_since_unix_nano() != 0) {
      absl::StrAppend(&out, "  empty for ",
                      FormatAge(now - absl::FromUnixNanos(static_cast<int64_t>(
                                          g.empty_since_unix_nano()))));
    }
    absl::StrAppend(&out, "\n");
    for (const v1::GroupMember& m : g.members()) {
      absl::StrAppend(
          &out, "  member ", m.member_id(),
          m.node().empty() ? ""
                           : absl::StrCat(" [", EscapeBytes(m.node()), "]"),
          "  ", EscapeBytes(m.peer(), 128), "  ", m.connections(),
          " connections  ", m.queued_events(), " queued  ",
          m.delivered_events(), " delivered",
          m.events_lost() > 0 ? absl::StrCat("  ", m.events_lost(), " lost")
                              : "",
          "  joined ",
          FormatAge(now - absl::FromUnixNanos(
                              static_cast<int64_t>(m.joined_unix_nano()))),
          " ago\n");
    }
  }
  return out;
}

std::string FormatHeartbeatText(const v1::Heartbeat& heartbeat) {
  return absl::StrCat("heartbeat: head seq ", heartbeat.head_seq(), ", ",
                      heartbeat.delivered(), " delivered, ", heartbeat.lost(),
                      " lost on this stream");
}

namespace {

std::vector<std::pair<std::string, std::string>> StatsRows(
    const v1::GetStatsResponse& s) {
  return {
      {"poller", s.poller()},
      {"connections_open", absl::StrCat(s.connections_open())},
      {"connections_accepted", absl::StrCat(s.connections_accepted())},
      {"connections_rejected", absl::StrCat(s.connections_rejected())},
      {"events_published", absl::StrCat(s.events_published())},
      {"events_lost", absl::StrCat(s.events_lost())},
      {"bytes_received", absl::StrCat(s.bytes_received())},
      {"bytes_sent", absl::StrCat(s.bytes_sent())},
      {"subscribers", absl::StrCat(s.subscribers())},
      {"head_seq", absl::StrCat(s.head_seq())},
      {"oldest_seq", absl::StrCat(s.oldest_seq())},
      {"tls_handshakes", absl::StrCat(s.tls_handshakes())},
      {"tls_handshake_failures", absl::StrCat(s.tls_handshake_failures())},
      {"tls_handshake_timeouts", absl::StrCat(s.tls_handshake_timeouts())},
      {"tls_client_cert_failures", absl::StrCat(s.tls_client_cert_failures())},
      {"proxy_headers", absl::StrCat(s.proxy_headers())},
      {"proxy_header_failures", absl::StrCat(s.proxy_header_failures())},
      {"proxy_header_timeouts", absl::StrCat(s.proxy_header_timeouts())},
      {"tls_reloads", absl::StrCat(s.tls_reloads())},
      {"tls_reload_failures", absl::StrCat(s.tls_reload_failures())},
  };
}

// Only a node of a cluster fills these.
std::vector<std::pair<std::string, std::string>> ClusterStatsRows(
    const v1::GetStatsResponse& s) {
  if (s.node().empty() && s.cluster_head_seq() == 0 &&
      s.cluster_oldest_seq() == 0) {
    return {};
  }
  return {
      {"node", s.node()},
      {"cluster_head_seq", absl::StrCat(s.cluster_head_seq())},
      {"cluster_oldest_seq", absl::StrCat(s.cluster_oldest_seq())},
  };
}

// Worker-pool group counters, once a group has existed.
std::vector<std::pair<std::string, std::string>> GroupStatsRows(
    const v1::GetStatsResponse& s) {
  if (s.groups() == 0 && s.group_handovers() == 0) return {};
  return {
      {"groups", absl::StrCat(s.groups())},
      {"group_members", absl::StrCat(s.group_members())},
      {"group_connections", absl::StrCat(s.group_connections())},
      {"group_unassigned", absl::StrCat(s.group_unassigned_connections())},
      {"group_handovers", absl::StrCat(s.group_handovers())},
      {"group_redelivered", absl::StrCat(s.group_redelivered_events())},
      {"group_events_lost", absl::StrCat(s.group_events_lost())},
  };
}

}  // namespace

std::string FormatStatsText(const v1::GetStatsResponse& s) {
  std::vector<std::pair<std::string, std::string>> rows = StatsRows(s);
  for (auto& row : ClusterStatsRows(s)) rows.push_back(std::move(row));
  std::string out;
  for (auto& row : GroupStatsRows(s)) rows.push_back(std::move(row));
  for (auto& [name, value] : rows) {
    std::string label = absl::StrReplaceAll(name, {{"_", " "}});
    absl::StrAppendFormat(&out, "%-26s%s\n", label, EscapeBytes(value));
  }
  return out;
}

std::string FormatTable(const std::vector<std::vector<std::string>>& rows,
                        const std::vector<bool>& right_aligned) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      const bool right = i < right_aligned.size() && right_aligned[i];
      const int w = static_cast<int>(width[i]);
      const bool last = i + 1 == row.size();
      if (right) {
        absl::StrAppendFormat(&out, "%*s", w, row[i]);
      } else if (last) {
        out += row[i];
      } else {
        absl::StrAppendFormat(&out, "%-*s", w, row[i]);
      }
      if (!last) out += "  ";
    }
    out.push_back('\n');
  }
  return out;
}

std::string FormatNodesTable(const v1::ListNodesResponse& nodes,
                             absl::Time now) {
  std::vector<std::vector<std::string>> rows = {{"NAME", "STATE",
                                                 "GRPC ADDRESS", "CONNECTIONS",
                                                 "LAST SEEN", "INCARNATION"}};
  for (const v1::NodeInfo& n : nodes.nodes()) {
    std::string seen = "-";
    if (n.last_seen_unix_nano() != 0) {
      absl::Time at =
          absl::FromUnixNanos(static_cast<int64_t>(n.last_seen_unix_nano()));
      seen = absl::StrCat(FormatAge(now - at), " ago");
    }
    rows.push_back({n.name().empty() ? "-" : EscapeBytes(n.name()),
                    NodeStateName(n.state()), EscapeBytes(n.grpc_address()),
                    absl::StrCat(n.connections_open()), seen,
                    absl::StrCat(n.incarnation())});
  }
  return FormatTable(rows, {false, false, false, true, false, true});
}

}  // namespace fanin::cli
