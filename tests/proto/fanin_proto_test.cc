// The generated API round-trips through the wire format and keeps the field
// names that outside programs are written against.
#include <string>

#include "fanin/v1/fanin.grpc.pb.h"
#include "fanin/v1/fanin.pb.h"
#include "gtest/gtest.h"

namespace {

TEST(FaninProto, EventRoundTripsThroughTheWire) {
  fanin::v1::Event event;
  event.set_seq(42);
  event.set_connection_id(7);
  event.set_listener("default");
  event.mutable_data()->set_payload(std::string("a\0b", 3));
  event.mutable_data()->set_size(3);

  std::string wire;
  ASSERT_TRUE(event.SerializeToString(&wire));
  fanin::v1::Event back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.seq(), 42u);
  EXPECT_EQ(back.kind_case(), fanin::v1::Event::kData);
  EXPECT_EQ(back.data().payload(), std::string("a\0b", 3));
}

TEST(FaninProto, ServiceHasTheContractedMethods) {
  const auto* service =
      fanin::v1::Event::descriptor()->file()->FindServiceByName("FanIn");
  ASSERT_NE(service, nullptr);
  for (const char* method : {"Subscribe", "Write", "CloseConnection",
                             "ListConnections", "GetStats", "Read"}) {
    EXPECT_NE(service->FindMethodByName(method), nullptr) << method;
  }
  EXPECT_TRUE(service->FindMethodByName("Subscribe")->server_streaming());
}

}  // namespace
