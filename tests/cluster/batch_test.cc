// The cluster stream's batch format (server/cluster/batch.h): what the
// publisher writes, the consumer, fetcher and tail catch-up read back.
#include "server/cluster/batch.h"

#include <nats/nats.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/cluster/nats.h"

namespace fanin::cluster {
namespace {

// libnats' message functions need the library opened (its garbage
// collector), as the server's ClusterNode does when it connects.
class NatsLibrary : public ::testing::Environment {
 public:
  void SetUp() override { ASSERT_EQ(nats_Open(-1), NATS_OK); }
  void TearDown() override { nats_Close(); }
};
const auto* const kNats = ::testing::AddGlobalTestEnvironment(new NatsLibrary);

NatsPtr<natsMsg> NewMsg(const std::string& payload) {
  natsMsg* raw = nullptr;
  EXPECT_EQ(natsMsg_Create(&raw, "fanin.ev.a", nullptr, payload.data(),
                           static_cast<int>(payload.size())),
            NATS_OK);
  return NatsPtr<natsMsg>(raw);
}

std::vector<std::string> Bodies(const std::string& payload) {
  BatchBodies bodies(payload.data(), payload.size());
  std::vector<std::string> out;
  std::string body;
  while (bodies.Next(&body)) out.push_back(body);
  return out;
}

TEST(BatchTest, BodiesRoundTripIncludingEmptyAndMultiByteLengths) {
  const std::vector<std::string> in = {"", "x", std::string(127, 'a'),
                                       std::string(128, 'b'),
                                       std::string(70000, 'c')};
  std::string payload;
  for (const auto& b : in) AppendBody(b, &payload);
  // Lengths 0, 1, 127 take one byte; 128 two; 70000 three.
  EXPECT_EQ(payload.size(), 1 + 1 + 1 + 1 + 127 + 2 + 128 + 3 + 70000);
  EXPECT_EQ(Bodies(payload), in);
}

TEST(BatchTest, ACutBatchYieldsOnlyItsWholeBodies) {
  std::string payload;
  AppendBody("first", &payload);
  AppendBody("second", &payload);
  for (size_t cut = 0; cut < payload.size(); ++cut) {
    const std::vector<std::string> got = Bodies(payload.substr(0, cut));
    const size_t whole = cut >= 6 ? 1 : 0;  // "first" with its length byte
    ASSERT_EQ(got.size(), whole) << "cut at " << cut;
    if (whole == 1) {
      EXPECT_EQ(got[0], "first");
    }
  }
}

TEST(BatchTest, ALengthPastTheEndOrOverlongVarintStops) {
  // A length of 200 with 3 bytes after it.
  EXPECT_TRUE(Bodies(std::string("\xc8\x01"
                                 "abc",
                                 5))
                  .empty());
  // Six continuation bytes: no 32-bit length.
  EXPECT_TRUE(Bodies(std::string(6, '\xff') + "x").empty());
}

TEST(BatchTest, HeadersRoundTripAndForeignMessagesHaveNone) {
  auto msg = NewMsg("");
  SetBatchHeaders(msg.get(), 18446744073709551615ull, 37);
  auto h = ReadBatchHeaders(msg.get());
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->base, 18446744073709551615ull);
  EXPECT_EQ(h->count, 37u);

  auto foreign = NewMsg("hello");
  EXPECT_FALSE(ReadBatchHeaders(foreign.get()).has_value());

  auto bad = NewMsg("");
  natsMsgHeader_Set(bad.get(), kBaseHeader, "12");
  natsMsgHeader_Set(bad.get(), kCountHeader, "many");
  EXPECT_FALSE(ReadBatchHeaders(bad.get()).has_value());
}

}  // namespace
}  // namespace fanin::cluster
