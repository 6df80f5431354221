#include "client/format.h"

#include <algorithm>
#include <cmath>
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

namespace fanin::cli {
namespace {

constexpr char kHex[] = "0123456789abcdef";

// Decodes one UTF-8 code point at s[*i]; advances *i. Returns -1 (and
// advances one byte) on an invalid or overlong sequence or a surrogate.
int32_t DecodeUtf8(absl::string_view s, size_t* i) {
  unsigned char c = static_cast<unsigned char>(s[*i]);
  int len;
  int32_t cp;
  if (c < 0x80) {
    ++*i;
    return c;
  } else if ((c & 0xe0) == 0xc0) {
    len = 2;
    cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3;
    cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4;
    cp = c & 0x07;
  } else {
    ++*i;
    return -1;
  }
  if (*i + len > s.size()) {
    ++*i;
    return -1;
  }
  for (int k = 1; k < len; ++k) {
    unsigned char cc = static_cast<unsigned char>(s[*i + k]);
    if ((cc & 0xc0) != 0x80) {
      ++*i;
      return -1;
    }
    cp = (cp << 6) | (cc & 0x3f);
  }
  static constexpr int32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    ++*i;
    return -1;
  }
  *i += len;
  return cp;
}

void AppendU16Escape(std::string* out, uint32_t unit) {
  absl::StrAppendFormat(out, "\\u%04x", unit);
}

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
    case v1::Event::kOpened:
      return absl::StrCat("from ", EscapeBytes(event.opened().remote_address()),
                          " to ", EscapeBytes(event.opened().local_address()));
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

std::string Base64Encode(absl::string_view bytes) {
  return absl::Base64Escape(bytes);
}

std::string JsonString(absl::string_view text) {
  // Everything outside printable ASCII is escaped, so the output is plain
  // ASCII: valid JSON, and safe to show on a terminal.
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  size_t i = 0;
  while (i < text.size()) {
    // Runs that need no escape (all of a base64 payload) go in one append.
    size_t run = i;
    while (run < text.size() && text[run] >= 0x20 && text[run] < 0x7f &&
           text[run] != '"' && text[run] != '\\') {
      ++run;
    }
    if (run > i) {
      out.append(text.data() + i, run - i);
      i = run;
      continue;
    }
    int32_t cp = DecodeUtf8(text, &i);
    if (cp < 0) cp = 0xfffd;
    switch (cp) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      case '\b':
        out += "\\b";
        continue;
      case '\f':
        out += "\\f";
        continue;
      default:
        break;
    }
    if (cp >= 0x20 && cp < 0x7f) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x10000) {
      AppendU16Escape(&out, static_cast<uint32_t>(cp));
    } else {
      uint32_t v = static_cast<uint32_t>(cp) - 0x10000;
      AppendU16Escape(&out, 0xd800 + (v >> 10));
      AppendU16Escape(&out, 0xdc00 + (v & 0x3ff));
    }
  }
  out += "\"";
  return out;
}

void JsonObject::Key(absl::string_view key) {
  if (body_.size() > 1) body_ += ",";
  body_ += JsonString(key);
  body_ += ":";
}

JsonObject& JsonObject::Add(absl::string_view key, absl::string_view value) {
  Key(key);
  body_ += JsonString(value);
  return *this;
}

JsonObject& JsonObject::Add(absl::string_view key, uint64_t value) {
  Key(key);
  absl::StrAppend(&body_, value);
  return *this;
}

JsonObject& JsonObject::Add(absl::string_view key, double value) {
  Key(key);
  if (std::isfinite(value)) {
    absl::StrAppendFormat(&body_, "%.3f", value);
  } else {
    body_ += "null";
  }
  return *this;
}

JsonObject& JsonObject::Add(absl::string_view key, bool value) {
  Key(key);
  body_ += value ? "true" : "false";
  return *this;
}

std::string FormatTimeRfc3339(uint64_t unix_nano) {
  absl::Time t = absl::FromUnixNanos(static_cast<int64_t>(unix_nano));
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E9SZ", t, absl::UTCTimeZone());
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

std::string FormatEventText(const v1::Event& event,
                            const TextOptions& options) {
  std::string line = absl::StrFormat(
      "%s  seq=%-9d conn=%-6d %-10s %-11s %s",
      FormatTimeOfDay(event.time_unix_nano()), event.seq(),
      event.connection_id(), EscapeBytes(event.listener()),
      UpperKind(EventKindOf(event)), EventDetailText(event, options));
  absl::string_view trimmed = absl::StripTrailingAsciiWhitespace(line);
  line.resize(trimmed.size());
  return line;
}

std::string FormatEventJson(const v1::Event& event) {
  JsonObject o;
  o.Add("type", "event")
      .Add("seq", event.seq())
      .Add("time", FormatTimeRfc3339(event.time_unix_nano()))
      .Add("time_unix_nano", event.time_unix_nano())
      .Add("connection_id", event.connection_id())
      .Add("listener", event.listener())
      .Add("kind", KindName(EventKindOf(event)));
  switch (event.kind_case()) {
    case v1::Event::kOpened:
      o.Add("remote_address", event.opened().remote_address())
          .Add("local_address", event.opened().local_address());
      break;
    case v1::Event::kData:
      o.Add("size", event.data().size())
          .Add("payload", Base64Encode(event.data().payload()))
          .Add("payload_truncated",
               event.data().payload().size() < event.data().size());
      break;
    case v1::Event::kClosed:
      o.Add("reason", CloseReasonName(event.closed().reason()))
          .Add("detail", event.closed().detail())
          .Add("bytes_received", event.closed().bytes_received())
          .Add("bytes_sent", event.closed().bytes_sent());
      break;
    default:
      break;
  }
  return o.str();
}

std::string FormatStartedJson(const v1::Started& started) {
  JsonObject o;
  o.Add("type", "started")
      .Add("server_epoch", started.server_epoch())
      .Add("oldest_seq", started.oldest_seq())
      .Add("head_seq", started.head_seq());
  return o.str();
}

std::string FormatGapJson(const v1::Gap& gap) {
  JsonObject o;
  o.Add("type", "gap")
      .Add("first_seq", gap.first_seq())
      .Add("last_seq", gap.last_seq())
      .Add("lost", gap.lost())
      .Add("reason", GapReasonName(gap.reason()));
  return o.str();
}

std::string FormatHeartbeatJson(const v1::Heartbeat& heartbeat) {
  JsonObject o;
  o.Add("type", "heartbeat")
      .Add("head_seq", heartbeat.head_seq())
      .Add("delivered", heartbeat.delivered())
      .Add("lost", heartbeat.lost());
  return o.str();
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

std::string FormatHeartbeatText(const v1::Heartbeat& heartbeat) {
  return absl::StrCat("heartbeat: head seq ", heartbeat.head_seq(), ", ",
                      heartbeat.delivered(), " delivered, ", heartbeat.lost(),
                      " lost on this stream");
}

std::string FormatConnectionJson(const v1::Connection& c, absl::Time now) {
  absl::Time opened =
      absl::FromUnixNanos(static_cast<int64_t>(c.opened_unix_nano()));
  double age = std::max(0.0, absl::ToDoubleSeconds(now - opened));
  JsonObject o;
  o.Add("connection_id", c.connection_id())
      .Add("listener", c.listener())
      .Add("remote_address", c.remote_address())
      .Add("local_address", c.local_address())
      .Add("opened", FormatTimeRfc3339(c.opened_unix_nano()))
      .Add("opened_unix_nano", c.opened_unix_nano())
      .Add("age_seconds", age)
      .Add("bytes_received", c.bytes_received())
      .Add("bytes_sent", c.bytes_sent())
      .Add("queued_bytes", c.queued_bytes());
  return o.str();
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
  };
}

}  // namespace

std::string FormatStatsJson(const v1::GetStatsResponse& s) {
  JsonObject o;
  o.Add("poller", s.poller())
      .Add("connections_open", s.connections_open())
      .Add("connections_accepted", s.connections_accepted())
      .Add("connections_rejected", s.connections_rejected())
      .Add("events_published", s.events_published())
      .Add("events_lost", s.events_lost())
      .Add("bytes_received", s.bytes_received())
      .Add("bytes_sent", s.bytes_sent())
      .Add("subscribers", s.subscribers())
      .Add("head_seq", s.head_seq())
      .Add("oldest_seq", s.oldest_seq());
  return o.str();
}

std::string FormatStatsText(const v1::GetStatsResponse& s) {
  std::string out;
  for (auto& [name, value] : StatsRows(s)) {
    std::string label = absl::StrReplaceAll(name, {{"_", " "}});
    absl::StrAppendFormat(&out, "%-22s%s\n", label, EscapeBytes(value));
  }
  return out;
}

}  // namespace fanin::cli
