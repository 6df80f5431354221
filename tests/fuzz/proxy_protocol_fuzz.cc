// Fuzzes the PROXY protocol parser (--listen_proxy_protocol): any bytes give
// the same answer whether they arrive at once, one byte at a time, or split
// where the input says; a header taken is within its bound, and what follows
// it is exactly the rest of the input.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "server/net/proxy_protocol.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using fanin::net::ProxyHeaderParser;

// Feeds `text` in pieces of `piece` bytes (0: all at once); the last result.
ProxyHeaderParser::Result FeedAll(ProxyHeaderParser* parser,
                                  absl::string_view text, size_t piece) {
  if (piece == 0) return parser->Feed(text);
  ProxyHeaderParser::Result r = ProxyHeaderParser::Result::kNeedMore;
  for (size_t at = 0;
       at < text.size() && r == ProxyHeaderParser::Result::kNeedMore;
       at += piece) {
    r = parser->Feed(text.substr(at, piece));
  }
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  ProxyHeaderParser whole;
  const ProxyHeaderParser::Result r = FeedAll(&whole, text, 0);
  const size_t split = size == 0 ? 1 : 1 + data[0] % 17;
  for (size_t piece : {size_t{1}, split}) {
    ProxyHeaderParser parts;
    const ProxyHeaderParser::Result p = FeedAll(&parts, text, piece);
    FUZZ_CHECK(p == r, "the result depends on how the bytes arrive");
    if (r == ProxyHeaderParser::Result::kDone) {
      FUZZ_CHECK(
          parts.header().source.address == whole.header().source.address &&
              parts.header().destination.address ==
                  whole.header().destination.address &&
              parts.header().tlvs.size() == whole.header().tlvs.size(),
          "the header depends on how the bytes arrive");
    }
  }
  if (r == ProxyHeaderParser::Result::kDone) {
    const size_t header = size - whole.remainder().size();
    FUZZ_CHECK(header <= ProxyHeaderParser::kMaxHeaderBytes,
               "a header over the bound was taken");
    FUZZ_CHECK(whole.remainder() == text.substr(header),
               "the remainder is not the rest of the input");
    const int v = whole.header().version;
    FUZZ_CHECK(v == 1 || v == 2, "a header without a version");
    FUZZ_CHECK(whole.header().local || !whole.header().source.address.empty(),
               "a PROXY header without a source");
  } else if (r == ProxyHeaderParser::Result::kError) {
    FUZZ_CHECK(!whole.error().empty(), "an error without a reason");
  } else {
    FUZZ_CHECK(whole.MaxWanted() > 0, "waiting for nothing");
  }
  return 0;
}
