// Fuzzes the tokens file parser (--auth_tokens_file): any text either parses
// into exactly one token entry per token line, or fails with a short message
// that names a line but never quotes a credential.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "server/grpc/auth.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto table = fanin::grpc_api::ParseCredentials(text);

  // An independent reading of the same lines: words split on space, tab and
  // CR after cutting a '#' comment.
  size_t token_lines = 0, cert_lines = 0;
  std::vector<std::string> long_words;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = line.substr(0, line.find('#'));
    std::vector<absl::string_view> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    for (absl::string_view w : words) {
      if (w.size() >= 16) long_words.emplace_back(w);
    }
    if (words.size() != 2) continue;
    if (absl::StartsWith(words[1], "cert:")) {
      ++cert_lines;
    } else {
      ++token_lines;
    }
  }

  if (table.ok()) {
    // Duplicate tokens are refused, so every token line is one entry.
    FUZZ_CHECK(table->tokens.size() == token_lines, "a token line was lost");
    FUZZ_CHECK(table->identities.size() <= cert_lines,
               "an identity appeared from nowhere");
    for (const auto& [digest, entry] : table->tokens) {
      FUZZ_CHECK(entry.role != fanin::grpc_api::Role::kNone,
                 "a token without a role");
      FUZZ_CHECK(entry.line >= 1, "a token without its line");
      FUZZ_CHECK(digest.size() == 32, "tokens are kept as SHA-256 digests");
    }
    return 0;
  }
  const std::string message(table.status().message());
  FUZZ_CHECK(table.status().code() == absl::StatusCode::kInvalidArgument,
             message);
  FUZZ_CHECK(message.size() < 200, message);
  FUZZ_CHECK(absl::StartsWith(message, "line "), message);
  for (const std::string& word : long_words) {
    FUZZ_CHECK(!absl::StrContains(message, word),
               "the error quotes a credential: " + message);
  }
  return 0;
}
