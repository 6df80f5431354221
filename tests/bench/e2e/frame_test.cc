// The harness's own checks must catch what they claim to: reassembly across
// arbitrary splits, seq gaps, reordering, a shared index and a torn tail.
#include "tests/bench/e2e/frame.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/bench/e2e/histogram.h"

namespace fanin::bench {
namespace {

std::string Messages(uint32_t index, uint32_t first_seq, int count,
                     int64_t send_ns, size_t size = 64) {
  std::string out;
  std::string msg(size, 'x');
  for (int i = 0; i < count; ++i) {
    EncodeMessage(index, first_seq + i, send_ns, msg.data());
    out += msg;
  }
  return out;
}

TEST(StreamVerifier, ReassemblesMessagesSplitAnywhere) {
  const std::string stream = Messages(7, 0, 10, 1000);
  for (size_t split = 1; split < stream.size(); split += 13) {
    StreamVerifier v(64);
    v.OnBytes(1, absl::string_view(stream).substr(0, split), 1500);
    v.OnBytes(1, absl::string_view(stream).substr(split), 1500);
    v.OnClose(1);
    EXPECT_EQ(v.messages(), 10u) << "split at " << split;
    EXPECT_EQ(v.errors(), 0u) << v.first_error();
    EXPECT_EQ(v.latency().Quantile(0.5), 500);
  }
}

TEST(StreamVerifier, FlagsAGapInSeq) {
  StreamVerifier v(64);
  v.OnBytes(1, Messages(3, 0, 2, 0), 1);
  v.OnBytes(1, Messages(3, 3, 1, 0), 1);  // seq 2 is missing
  EXPECT_EQ(v.messages(), 3u);
  EXPECT_EQ(v.errors(), 1u);
  EXPECT_NE(v.first_error().find("seq 3 where 2"), std::string::npos);
}

TEST(StreamVerifier, FlagsReorderingAndDuplicates) {
  StreamVerifier v(64);
  v.OnBytes(1, Messages(3, 1, 1, 0), 1);  // starts at 1, not 0
  v.OnBytes(1, Messages(3, 1, 1, 0), 1);  // 1 again
  EXPECT_EQ(v.errors(), 2u);
}

TEST(StreamVerifier, FlagsTwoConnectionsWithOneIndex) {
  StreamVerifier v(64);
  v.OnBytes(1, Messages(5, 0, 1, 0), 1);
  v.OnBytes(2, Messages(5, 0, 1, 0), 1);
  EXPECT_EQ(v.errors(), 1u);
  EXPECT_EQ(v.connections_seen(), 2u);
}

TEST(StreamVerifier, FlagsATornLastMessage) {
  StreamVerifier v(64);
  const std::string s = Messages(1, 0, 2, 0);
  v.OnBytes(9, absl::string_view(s).substr(0, 100), 1);
  v.OnClose(9);
  EXPECT_EQ(v.messages(), 1u);
  EXPECT_EQ(v.errors(), 1u);
}

TEST(Histogram, QuantilesWithinBucketError) {
  Histogram h;
  for (int64_t v = 1; v <= 100000; ++v) h.Record(v * 1000);  // 1 µs .. 100 ms
  EXPECT_EQ(h.count(), 100000u);
  EXPECT_NEAR(h.Quantile(0.5), 50000000, 50000000 * 0.016);
  EXPECT_NEAR(h.Quantile(0.99), 99000000, 99000000 * 0.016);
  EXPECT_NEAR(h.Quantile(0.999), 99900000, 99900000 * 0.016);
  EXPECT_EQ(h.Quantile(1.0), 100000000);
  EXPECT_EQ(h.max(), 100000000);
}

TEST(Histogram, ExactForSmallValuesAndMerges) {
  Histogram a, b;
  a.Record(3);
  b.Record(100);
  b.Record(-5);  // clamps to 0
  a.Merge(b);
  EXPECT_EQ(a.count(), 3u);
  EXPECT_EQ(a.Quantile(0.0), 0);
  EXPECT_EQ(a.Quantile(0.5), 3);
  EXPECT_EQ(a.Quantile(1.0), 100);
  EXPECT_EQ(a.CdfText(1), "0.000 0.333333\n3.000 0.666667\n100.000 1.000000\n");
}

}  // namespace
}  // namespace fanin::bench
