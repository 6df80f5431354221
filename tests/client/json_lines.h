// Parses JSON-lines output with /usr/bin/python3's json module, so the
// client's own encoder is checked by an independent, strict parser (control
// characters in strings, bad escapes, duplicate keys and trailing garbage are
// all rejected).
#ifndef FANIN_TESTS_CLIENT_JSON_LINES_H_
#define FANIN_TESTS_CLIENT_JSON_LINES_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fanin::testing {

struct JsonValue {
  enum Type { kString, kInt, kFloat, kBool, kNull, kNested };
  Type type = kNull;
  // kString: the decoded UTF-8 text; kInt/kFloat: Python's repr;
  // kBool: "true"/"false"; kNested: the re-encoded JSON.
  std::string text;
};

// One JSON object: key -> value. Nested objects are flattened too: for
// {"data":{"size":3}} both "data" (kNested) and "data.size" are keys.
using JsonMap = std::map<std::string, JsonValue>;

// Every non-empty line must be one JSON object. InvalidArgument with
// Python's message otherwise.
absl::StatusOr<std::vector<JsonMap>> ParseJsonLines(absl::string_view text);

// Convenience accessors for tests: empty / 0 when absent or of another type.
// JsonUint also takes a decimal string (proto3 JSON's 64-bit integers).
std::string JsonStr(const JsonMap& object, const std::string& key);
uint64_t JsonUint(const JsonMap& object, const std::string& key);
bool JsonBool(const JsonMap& object, const std::string& key);
bool JsonHas(const JsonMap& object, const std::string& key);

// Which fanin.v1 message a line of `fanin watch -o json` is, by the fields
// only it has: "event" (seq), "started" (server_epoch), "gap" (first_seq),
// "heartbeat" (delivered), "assigned" (from_seq); "" otherwise.
std::string JsonType(const JsonMap& object);
// The kind an event object carries: the one member of Event's oneof present
// ("opened", "data", ..., "readable"); "" when none is.
std::string JsonKind(const JsonMap& event);

// Standard base64 decoding (the test's own, independent of the client).
absl::StatusOr<std::string> Base64Decode(absl::string_view text);

}  // namespace fanin::testing

#endif  // FANIN_TESTS_CLIENT_JSON_LINES_H_
