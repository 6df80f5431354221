// Filter: building one from a SubscribeRequest (errors name the field), what
// it matches, and its Key (equal exactly when two filters match the same
// events, which BatchCache relies on to share encoded batches).
#include "server/fanout/filter.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fanin::fanout {
namespace {

using fanin::v1::EventKind;
using fanin::v1::SubscribeRequest;
using ::testing::HasSubstr;

constexpr EventKind kOpened = fanin::v1::EVENT_KIND_OPENED;
constexpr EventKind kData = fanin::v1::EVENT_KIND_DATA;
constexpr EventKind kClosed = fanin::v1::EVENT_KIND_CLOSED;
constexpr EventKind kReadable = fanin::v1::EVENT_KIND_READABLE;

const std::vector<std::string>& Names() {
  static const auto* names =
      new std::vector<std::string>{"default", "admin", "metrics"};
  return *names;
}

Filter Make(const SubscribeRequest& request) {
  absl::StatusOr<Filter> f = Filter::FromRequest(request, Names());
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *f : Filter();
}

SubscribeRequest Request(std::vector<EventKind> kinds,
                         std::vector<std::string> listeners,
                         std::vector<uint64_t> ids) {
  SubscribeRequest r;
  for (EventKind k : kinds) r.add_kinds(k);
  for (const std::string& l : listeners) r.add_listeners(l);
  for (uint64_t id : ids) r.add_connection_ids(id);
  return r;
}

TEST(FilterTest, FromRequestErrorsNameTheField) {
  struct Case {
    SubscribeRequest request;
    std::string field;
  };
  SubscribeRequest bad_kind = Request({kOpened}, {}, {});
  bad_kind.add_kinds(static_cast<EventKind>(99));
  SubscribeRequest unspecified =
      Request({kOpened, kData, fanin::v1::EVENT_KIND_UNSPECIFIED}, {}, {});
  const Case cases[] = {
      {bad_kind, "kinds[1]"},
      {unspecified, "kinds[2]"},
      {Request({}, {"default", "nope"}, {}), "listeners[1]"},
      {Request({}, {}, {7, 0}), "connection_ids[1]"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Filter> f = Filter::FromRequest(c.request, Names());
    ASSERT_FALSE(f.ok()) << c.field;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(f.status().message(), HasSubstr(c.field + ":"));
  }
  absl::StatusOr<Filter> f =
      Filter::FromRequest(Request({}, {"nope"}, {}), Names());
  // The unknown name and the ones the server has.
  EXPECT_THAT(f.status().message(), HasSubstr("\"nope\""));
  EXPECT_THAT(f.status().message(), HasSubstr("default, admin, metrics"));
}

TEST(FilterTest, EmptyRequestMatchesEverything) {
  const Filter f = Make(SubscribeRequest());
  for (EventKind k : {kOpened, kData, kClosed, kReadable}) {
    for (uint32_t listener : {0u, 1u, 2u}) {
      EXPECT_TRUE(f.Matches(k, listener, 42));
    }
  }
  EXPECT_TRUE(f.MatchesNewConnections(0));
  EXPECT_TRUE(f.MatchesNewConnections(2));
}

TEST(FilterTest, MatchesChecksKindListenerAndConnection) {
  const Filter f = Make(Request({kData, kClosed}, {"admin"}, {7, 9}));
  EXPECT_TRUE(f.Matches(kData, 1, 7));
  EXPECT_TRUE(f.Matches(kClosed, 1, 9));
  EXPECT_FALSE(f.Matches(kOpened, 1, 7));    // kind
  EXPECT_FALSE(f.Matches(kData, 0, 7));      // listener
  EXPECT_FALSE(f.Matches(kData, 2, 7));      // listener
  EXPECT_FALSE(f.Matches(kData, 1, 8));      // connection
  EXPECT_FALSE(f.Matches(kReadable, 1, 9));  // kind
}

TEST(FilterTest, MatchesAnyTakesAKindMask) {
  const Filter f = Make(Request({kOpened}, {"default"}, {}));
  EXPECT_FALSE(f.MatchesAny(kReadProducedKinds, 0, 5));
  EXPECT_TRUE(f.MatchesAny(kReadProducedKinds | KindBit(kOpened), 0, 5));
  EXPECT_FALSE(f.MatchesAny(KindBit(kOpened), 1, 5));  // other listener
  const Filter data = Make(Request({kData}, {}, {5}));
  EXPECT_TRUE(data.MatchesAny(kReadProducedKinds, 2, 5));
  EXPECT_FALSE(data.MatchesAny(kReadProducedKinds, 2, 6));
  EXPECT_FALSE(data.MatchesAny(0, 2, 5));
}

TEST(FilterTest, MatchesNewConnectionsOnlyWithoutConnectionIds) {
  const Filter by_listener = Make(Request({kData}, {"metrics"}, {}));
  EXPECT_TRUE(by_listener.MatchesNewConnections(2));
  EXPECT_FALSE(by_listener.MatchesNewConnections(0));
  // A filter naming connections can never match one not yet opened.
  const Filter by_id = Make(Request({}, {"metrics"}, {3}));
  EXPECT_FALSE(by_id.MatchesNewConnections(2));
}

TEST(FilterTest, KeyIsEqualForEqualFiltersInAnyOrder) {
  const std::string key =
      Make(Request({kData, kClosed}, {"admin", "default"}, {3, 1, 2})).Key();
  EXPECT_EQ(
      Make(Request({kClosed, kData}, {"default", "admin"}, {2, 3, 1})).Key(),
      key);
  // Repeats change nothing.
  EXPECT_EQ(Make(Request({kClosed, kData, kClosed}, {"default", "admin"},
                         {1, 2, 3, 3}))
                .Key(),
            key);
  EXPECT_EQ(Make(SubscribeRequest()).Key(), Filter().Key());
}

TEST(FilterTest, KeyDiffersWhenTheFiltersDiffer) {
  const std::vector<SubscribeRequest> requests = {
      SubscribeRequest(),
      Request({kData}, {}, {}),
      Request({kData, kClosed}, {}, {}),
      Request({kData}, {"admin"}, {}),
      Request({kData}, {"default"}, {}),
      Request({kData}, {"admin"}, {1}),
      Request({kData}, {"admin"}, {12}),
      Request({kData}, {"admin"}, {1, 2}),
      Request({}, {}, {1}),
      Request({}, {}, {11}),
  };
  for (size_t i = 0; i < requests.size(); ++i) {
    for (size_t j = i + 1; j < requests.size(); ++j) {
      EXPECT_NE(Make(requests[i]).Key(), Make(requests[j]).Key())
          << requests[i].ShortDebugString() << " vs "
          << requests[j].ShortDebugString();
    }
  }
}

TEST(FilterTest, KeyIsEqualWhenListingEverythingMeansNoRestriction) {
  // Every kind, or every listener of the server, matches the same events as
  // naming none, so such subscribers can share batches.
  SubscribeRequest all_kinds;
  for (int k = fanin::v1::EventKind_MIN; k <= fanin::v1::EventKind_MAX; ++k) {
    if (k != fanin::v1::EVENT_KIND_UNSPECIFIED) {
      all_kinds.add_kinds(static_cast<EventKind>(k));
    }
  }
  EXPECT_EQ(Make(all_kinds).Key(), Filter().Key());
  EXPECT_EQ(Make(Request({}, {"metrics", "default", "admin"}, {})).Key(),
            Filter().Key());
}

}  // namespace
}  // namespace fanin::fanout
