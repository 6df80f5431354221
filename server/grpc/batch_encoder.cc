#include "server/grpc/batch_encoder.h"

#include <cstdint>

#include "fanin/v1/fanin.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace fanin::grpc_api {
namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedOutputStream;

constexpr uint32_t kBatchTag =
    WireFormatLite::MakeTag(fanin::v1::SubscribeResponse::kBatchFieldNumber,
                            WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
constexpr uint32_t kEventsTag =
    WireFormatLite::MakeTag(fanin::v1::EventBatch::kEventsFieldNumber,
                            WireFormatLite::WIRETYPE_LENGTH_DELIMITED);

}  // namespace

void AppendBatchResponse(const std::vector<fanout::EventPtr>& events,
                         const fanout::PayloadPolicy& policy,
                         std::string* out) {
  // Sizes twice rather than kept: computing one is a few branches, keeping
  // them would allocate.
  size_t batch = 0;
  for (const fanout::EventPtr& e : events) {
    batch += CodedOutputStream::VarintSize32(kEventsTag) +
             WireFormatLite::LengthDelimitedSize(EventByteSize(*e, policy));
  }
  out->reserve(out->size() + CodedOutputStream::VarintSize32(kBatchTag) +
               WireFormatLite::LengthDelimitedSize(batch));
  uint8_t head[10];
  uint8_t* end = CodedOutputStream::WriteTagToArray(kBatchTag, head);
  end = CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(batch),
                                                end);
  out->append(reinterpret_cast<const char*>(head), end - head);
  for (const fanout::EventPtr& e : events) {
    fanout::AppendEventField(fanin::v1::EventBatch::kEventsFieldNumber, *e,
                             policy, out);
  }
}

}  // namespace fanin::grpc_api
