#include "server/cluster/batch.h"

#include <google/protobuf/io/coded_stream.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/cluster/nats.h"

namespace fanin::cluster {

std::optional<BatchHeaders> ReadBatchHeaders(natsMsg* msg) {
  BatchHeaders h;
  if (!absl::SimpleAtoi(Header(msg, kBaseHeader), &h.base) ||
      !absl::SimpleAtoi(Header(msg, kCountHeader), &h.count)) {
    return std::nullopt;
  }
  return h;
}

void SetBatchHeaders(natsMsg* msg, uint64_t base, uint64_t count) {
  natsMsgHeader_Set(msg, kBaseHeader, absl::StrCat(base).c_str());
  natsMsgHeader_Set(msg, kCountHeader, absl::StrCat(count).c_str());
}

void AppendBody(absl::string_view body, std::string* out) {
  uint8_t len[5];
  uint8_t* end = google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(
      static_cast<uint32_t>(body.size()), len);
  out->append(reinterpret_cast<const char*>(len), end - len);
  out->append(body.data(), body.size());
}

bool BatchBodies::Next(std::string* body) {
  uint32_t n = 0;
  int shift = 0;
  const char* p = p_;
  while (p < end_ && shift < 35) {
    const auto b = static_cast<uint8_t>(*p++);
    n |= static_cast<uint32_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      if (static_cast<size_t>(end_ - p) < n) return false;
      body->assign(p, n);
      p_ = p + n;
      return true;
    }
    shift += 7;
  }
  return false;
}

}  // namespace fanin::cluster
