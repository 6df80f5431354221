// Fuzzes the CLI's rendering of whatever a server may send: the input is read
// as a fanin.v1.Event (and as the other streamed/listed messages, the stats
// and the nodes table). Text lines
// must be valid UTF-8 with no control character (a hostile payload cannot
// drive the terminal); JSON lines must be valid UTF-8 and valid JSON
// that protobuf's own parser turns back into exactly the message printed.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "client/format.h"
#include "fanin/v1/fanin.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

bool ValidUtf8(absl::string_view s) {
  static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    size_t extra;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;
    for (size_t k = 1; k <= extra; ++k) {
      const unsigned char b = s[i + k];
      if ((b & 0xc0) != 0x80) return false;
      cp = cp << 6 | (b & 0x3f);
    }
    if (cp < kMin[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

// What a terminal shows as text: valid UTF-8 without a C0 control byte, DEL
// or a C1 control character (U+0080..U+009F), any of which could drive it.
bool SafeText(absl::string_view s) {
  if (!ValidUtf8(s)) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = s[i];
    if (c < 0x20 || c == 0x7f) return false;
    if (c == 0xc2 && i + 1 < s.size() &&
        static_cast<unsigned char>(s[i + 1]) < 0xa0) {
      return false;
    }
  }
  return true;
}

template <typename Message>
void CheckJson(const Message& message) {
  const std::string json = fanin::cli::MessageJson(message);
  FUZZ_CHECK(ValidUtf8(json), "JSON is not valid UTF-8: " + json);
  FUZZ_CHECK(json.find('\n') == std::string::npos, "JSON spans lines: " + json);
  Message back;
  auto status = google::protobuf::util::JsonStringToMessage(json, &back);
  FUZZ_CHECK(status.ok(), "JSON does not parse: " + json);
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(message, back),
             "JSON does not round-trip: " + json);
}

template <typename Message>
bool Parse(const uint8_t* data, size_t size, Message* out) {
  if (!out->ParseFromArray(data, static_cast<int>(size))) return false;
  // What JSON cannot carry (fields this build does not know) is not compared.
  out->DiscardUnknownFields();
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fanin::v1::Event event;
  if (Parse(data, size, &event)) {
    for (size_t preview : {size_t{0}, size_t{8}, size_t{64}}) {
      const std::string line =
          fanin::cli::FormatEventText(event, {.preview_bytes = preview});
      FUZZ_CHECK(SafeText(line), "raw bytes in a text line: " + line);
    }
    CheckJson(event);
  }
  fanin::v1::Gap gap;
  if (Parse(data, size, &gap)) {
    FUZZ_CHECK(SafeText(fanin::cli::FormatGapText(gap)), "gap text");
    CheckJson(gap);
  }
  fanin::v1::Heartbeat heartbeat;
  if (Parse(data, size, &heartbeat)) {
    FUZZ_CHECK(SafeText(fanin::cli::FormatHeartbeatText(heartbeat)),
               "heartbeat text");
    CheckJson(heartbeat);
  }
  fanin::v1::Connection connection;
  if (Parse(data, size, &connection)) CheckJson(connection);
  fanin::v1::GetStatsResponse stats;
  if (Parse(data, size, &stats)) {
    for (absl::string_view line :
         absl::StrSplit(fanin::cli::FormatStatsText(stats), '\n')) {
      FUZZ_CHECK(SafeText(line), "stats text: " + std::string(line));
    }
    CheckJson(stats);
  }
  fanin::v1::ListNodesResponse nodes;
  if (Parse(data, size, &nodes)) {
    for (absl::string_view line : absl::StrSplit(
             fanin::cli::FormatNodesTable(nodes, absl::Now()), '\n')) {
      FUZZ_CHECK(SafeText(line), "nodes table: " + std::string(line));
    }
    for (const fanin::v1::NodeInfo& node : nodes.nodes()) CheckJson(node);
  }
  return 0;
}
