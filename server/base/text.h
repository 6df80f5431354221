// Echoing caller-supplied text into an error message without letting the
// caller decide its size: a long value would otherwise travel back in the
// grpc-message trailer (a 10,000-byte listener name made a client refuse the
// whole reply as "metadata size exceeds limit").
//
// Example:
//   QuoteBounded("default")          -> "\"default\""
//   QuoteBounded(std::string(1e4, 'x'))
//       -> "\"xxxx...xxxx\"... (10000 bytes)"   (64 bytes kept)
#ifndef FANIN_SERVER_BASE_TEXT_H_
#define FANIN_SERVER_BASE_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace fanin::base {

// `text` in double quotes, C-escaped (control and non-ASCII bytes as \xHH
// escapes), cut after `max_bytes` input bytes with "... (N bytes)" appended.
std::string QuoteBounded(absl::string_view text, size_t max_bytes = 64);

}  // namespace fanin::base

#endif  // FANIN_SERVER_BASE_TEXT_H_
