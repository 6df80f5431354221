#include "tests/client/json_lines.h"

#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/testing/subprocess.h"

namespace fanin::testing {
namespace {

// Prints "O" per object, then "F <key hex> <type> <value hex>" per field;
// a nested object is a field ("o", re-encoded) and so is each of its fields,
// under "outer.inner".
constexpr char kScript[] = R"PY(
import json, sys
def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in %r" % keys)
    return dict(pairs)
text = sys.stdin.buffer.read().decode("utf-8")
out = []
for number, line in enumerate(text.split("\n"), 1):
    if not line:
        continue
    try:
        obj = json.loads(line, object_pairs_hook=no_duplicates)
    except Exception as e:
        sys.stderr.write("line %d: %s: %r\n" % (number, e, line[:200]))
        sys.exit(1)
    if not isinstance(obj, dict):
        sys.stderr.write("line %d is not an object: %r\n" % (number, line[:200]))
        sys.exit(1)
    out.append("O")
    def fields(prefix, obj):
        for k, v in obj.items():
            yield prefix + k, v
            if isinstance(v, dict):
                yield from fields(prefix + k + ".", v)
    for k, v in fields("", obj):
        if isinstance(v, bool): t, s = "b", "true" if v else "false"
        elif v is None: t, s = "z", ""
        elif isinstance(v, int): t, s = "i", str(v)
        elif isinstance(v, float): t, s = "f", repr(v)
        elif isinstance(v, str): t, s = "s", v
        else: t, s = "o", json.dumps(v)
        out.append("F %s %s %s" % (k.encode("utf-8", "surrogatepass").hex(), t,
                                  s.encode("utf-8", "surrogatepass").hex()))
sys.stdout.write("\n".join(out) + "\n")
)PY";

}  // namespace

absl::StatusOr<std::vector<JsonMap>> ParseJsonLines(absl::string_view text) {
  auto result = RunCommand({"/usr/bin/python3", "-c", kScript}, text);
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("python3 json: ", result->stderr_data));
  }
  std::vector<JsonMap> objects;
  for (absl::string_view line :
       absl::StrSplit(result->stdout_data, '\n', absl::SkipEmpty())) {
    if (line == "O") {
      objects.emplace_back();
      continue;
    }
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    if (parts.size() != 4 || parts[0] != "F" || objects.empty()) {
      return absl::InternalError(absl::StrCat("helper output: ", line));
    }
    JsonValue value;
    switch (parts[2][0]) {
      case 's':
        value.type = JsonValue::kString;
        break;
      case 'i':
        value.type = JsonValue::kInt;
        break;
      case 'f':
        value.type = JsonValue::kFloat;
        break;
      case 'b':
        value.type = JsonValue::kBool;
        break;
      case 'z':
        value.type = JsonValue::kNull;
        break;
      default:
        value.type = JsonValue::kNested;
    }
    value.text = absl::HexStringToBytes(parts[3]);
    objects.back()[absl::HexStringToBytes(parts[1])] = value;
  }
  return objects;
}

std::string JsonStr(const JsonMap& object, const std::string& key) {
  auto it = object.find(key);
  if (it == object.end() || it->second.type != JsonValue::kString) return "";
  return it->second.text;
}

uint64_t JsonUint(const JsonMap& object, const std::string& key) {
  auto it = object.find(key);
  uint64_t n = 0;
  // proto3 JSON writes 64-bit integers as strings, 32-bit ones as numbers.
  if (it == object.end() ||
      (it->second.type != JsonValue::kInt &&
       it->second.type != JsonValue::kString) ||
      !absl::SimpleAtoi(it->second.text, &n)) {
    return 0;
  }
  return n;
}

bool JsonBool(const JsonMap& object, const std::string& key) {
  auto it = object.find(key);
  return it != object.end() && it->second.type == JsonValue::kBool &&
         it->second.text == "true";
}

bool JsonHas(const JsonMap& object, const std::string& key) {
  return object.count(key) > 0;
}

std::string JsonType(const JsonMap& o) {
  if (JsonHas(o, "seq")) return "event";
  if (JsonHas(o, "from_seq")) return "assigned";
  if (JsonHas(o, "server_epoch")) return "started";
  if (JsonHas(o, "first_seq")) return "gap";
  if (JsonHas(o, "delivered")) return "heartbeat";
  return "";
}

std::string JsonKind(const JsonMap& event) {
  for (const char* kind :
       {"opened", "data", "writable", "read_closed", "closed", "readable"}) {
    if (JsonHas(event, kind)) return kind;
  }
  return "";
}

absl::StatusOr<std::string> Base64Decode(absl::string_view text) {
  std::string out;
  if (!absl::Base64Unescape(text, &out)) {
    return absl::InvalidArgumentError(absl::StrCat("bad base64: ", text));
  }
  return out;
}

}  // namespace fanin::testing
