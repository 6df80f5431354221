// Output formatting: escapes, enum names, time and age, the text renderings,
// and the JSON mapping (checked by python3's strict parser).
#include "client/format.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/json_lines.h"

namespace fanin::cli {
namespace {

using ::fanin::testing::Base64Decode;
using ::fanin::testing::JsonHas;
using ::fanin::testing::JsonKind;
using ::fanin::testing::JsonStr;
using ::fanin::testing::JsonType;
using ::fanin::testing::JsonUint;
using ::fanin::testing::ParseJsonLines;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// True when s holds only printable ASCII: nothing a terminal would act on.
bool TerminalSafe(absl::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c >= 0x7f) return false;
  }
  return true;
}

std::string AllBytes() {
  std::string s;
  for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
  return s;
}

TEST(EscapeBytes, KeepsPrintableAsciiAndEscapesTheRest) {
  EXPECT_EQ(EscapeBytes("hello world"), "hello world");
  EXPECT_EQ(EscapeBytes(std::string("a\n\r\t\\\"\0\x1b[2J\x7f\xff", 13)),
            "a\\n\\r\\t\\\\\\\"\\x00\\x1b[2J\\x7f\\xff");
  EXPECT_EQ(EscapeBytes("abcdef", 3), "abc");
  EXPECT_TRUE(TerminalSafe(EscapeBytes(AllBytes())));
}

TEST(FormatTime, TimeOfDayInUtc) {
  uint64_t t = 1795765373123456789u;  // 2026-11-27 07:42:53.123456789 UTC
  EXPECT_EQ(FormatTimeOfDay(t), "07:42:53.123456Z");
  EXPECT_EQ(FormatTimeOfDay(0), "00:00:00.000000Z");
}

TEST(FormatAge, PicksTheTwoLargestUnits) {
  EXPECT_EQ(FormatAge(absl::Milliseconds(850)), "850ms");
  EXPECT_EQ(FormatAge(absl::Seconds(42)), "42s");
  EXPECT_EQ(FormatAge(absl::Seconds(187)), "3m07s");
  EXPECT_EQ(FormatAge(absl::Hours(5) + absl::Minutes(2)), "5h02m");
  EXPECT_EQ(FormatAge(absl::Hours(51)), "2d03h");
  EXPECT_EQ(FormatAge(-absl::Seconds(3)), "0ms");
}

TEST(ParseKind, AcceptsNamesInAnyCaseAndTheEnumName) {
  EXPECT_EQ(*ParseKind("data"), v1::EVENT_KIND_DATA);
  EXPECT_EQ(*ParseKind("READ-CLOSED"), v1::EVENT_KIND_READ_CLOSED);
  EXPECT_EQ(*ParseKind("read_closed"), v1::EVENT_KIND_READ_CLOSED);
  EXPECT_EQ(*ParseKind("EVENT_KIND_OPENED"), v1::EVENT_KIND_OPENED);
  EXPECT_FALSE(ParseKind("dat").ok());
  EXPECT_FALSE(ParseKind("unspecified").ok());
  for (auto kind : {v1::EVENT_KIND_OPENED, v1::EVENT_KIND_DATA,
                    v1::EVENT_KIND_WRITABLE, v1::EVENT_KIND_READ_CLOSED,
                    v1::EVENT_KIND_CLOSED, v1::EVENT_KIND_READABLE}) {
    EXPECT_EQ(*ParseKind(KindName(kind)), kind);
  }
}

TEST(EnumNames, AreTheGeneratedNamesWithoutTheirPrefix) {
  EXPECT_EQ(KindName(v1::EVENT_KIND_READ_CLOSED), "read_closed");
  EXPECT_EQ(KindName(v1::EVENT_KIND_UNSPECIFIED), "unknown");
  EXPECT_EQ(KindName(static_cast<v1::EventKind>(99)), "unknown");
  EXPECT_EQ(CloseReasonName(v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER),
            "closed_by_subscriber");
  EXPECT_EQ(CloseReasonName(v1::CLOSE_REASON_REJECTED), "rejected");
  EXPECT_EQ(CloseReasonName(static_cast<v1::CloseReason>(99)), "unspecified");
  EXPECT_EQ(GapReasonName(v1::GAP_REASON_HISTORY_EXPIRED), "history_expired");
  EXPECT_EQ(GapReasonName(v1::GAP_REASON_UNSPECIFIED), "unspecified");
  EXPECT_THAT(std::string(ParseKind("bogus").status().message()),
              HasSubstr("want opened, data, writable, read_closed, closed, "
                        "readable"));
}

v1::Event DataEvent(absl::string_view payload, uint32_t size) {
  v1::Event e;
  e.set_seq(12);
  e.set_time_unix_nano(1795765373123456789u);
  e.set_connection_id(3);
  e.set_listener("default");
  e.mutable_data()->set_payload(std::string(payload));
  e.mutable_data()->set_size(size);
  return e;
}

TEST(FormatEventText, DataLineIsAlignedAndEscaped) {
  std::string line = FormatEventText(DataEvent("hi\n\x1b", 4));
  EXPECT_EQ(line,
            "07:42:53.123456Z  seq=12        conn=3      default    DATA"
            "        4 B \"hi\\n\\x1b\"");
  EXPECT_TRUE(TerminalSafe(line));
}

TEST(FormatEventText, MarksCutAndOmittedPayloads) {
  EXPECT_THAT(FormatEventText(DataEvent("abcdef", 6), {.preview_bytes = 3}),
              HasSubstr("6 B \"abc\"..."));
  EXPECT_THAT(FormatEventText(DataEvent("ab", 100)),
              HasSubstr("100 B \"ab\"..."));
  EXPECT_THAT(FormatEventText(DataEvent("", 100)),
              HasSubstr("100 B (payload omitted)"));
}

TEST(FormatEventText, EveryKindHasItsDetail) {
  v1::Event e;
  e.set_seq(1);
  e.set_connection_id(9);
  e.set_listener("bad\x1b]0;title\x07");
  e.mutable_opened()->set_remote_address("127.0.0.1:5000");
  e.mutable_opened()->set_local_address("127.0.0.1:4000");
  std::string opened = FormatEventText(e);
  EXPECT_THAT(opened, HasSubstr("OPENED"));
  EXPECT_THAT(opened, HasSubstr("from 127.0.0.1:5000 to 127.0.0.1:4000"));
  EXPECT_TRUE(TerminalSafe(opened)) << opened;

  e.mutable_closed()->set_reason(v1::CLOSE_REASON_RESET);
  e.mutable_closed()->set_detail("read: Connection reset by peer");
  e.mutable_closed()->set_bytes_received(5);
  e.mutable_closed()->set_bytes_sent(7);
  EXPECT_THAT(FormatEventText(e),
              HasSubstr("CLOSED      reset in=5 out=7 \"read: Connection "
                        "reset by peer\""));
  e.mutable_read_closed();
  EXPECT_THAT(FormatEventText(e), HasSubstr("READ_CLOSED peer sent FIN"));
  e.mutable_writable();
  EXPECT_THAT(FormatEventText(e), HasSubstr("WRITABLE"));
  e.mutable_readable();
  EXPECT_THAT(FormatEventText(e), HasSubstr("READABLE"));
}

TEST(FormatEventText, ClusterEventsShowTheirNode) {
  v1::Event e = DataEvent("hi", 2);
  e.set_node("node-a");
  EXPECT_EQ(FormatEventText(e),
            "07:42:53.123456Z  seq=12        conn=3      [node-a] default    "
            "DATA        2 B \"hi\"");
  e.set_node("evil\x1b[2J");
  EXPECT_TRUE(TerminalSafe(FormatEventText(e)));

  // A NodeChange is about a node, not a connection: the node takes the
  // connection and listener columns, the kind column stays aligned.
  v1::Event change;
  change.set_seq(13);
  change.set_time_unix_nano(1795765373123456789u);
  change.set_node("node-b");
  change.mutable_node_change()->set_state(v1::NODE_STATE_LOST);
  change.mutable_node_change()->set_incarnation(2);
  change.mutable_node_change()->set_grpc_address("10.0.0.2:50051");
  change.mutable_node_change()->set_detail("no heartbeat for 10s");
  const std::string line = FormatEventText(change);
  EXPECT_EQ(line,
            "07:42:53.123456Z  seq=13        [node-b]               NODE       "
            " lost incarnation=2 at 10.0.0.2:50051 \"no heartbeat for 10s\"");
  EXPECT_EQ(line.find("NODE"), FormatEventText(DataEvent("x", 1)).find("DATA"));
  EXPECT_EQ(*ParseKind("node"), v1::EVENT_KIND_NODE);
  EXPECT_EQ(NodeStateName(v1::NODE_STATE_DRAINING), "draining");
  EXPECT_EQ(NodeStateName(static_cast<v1::NodeState>(99)), "unspecified");
}

TEST(FormatTable, AlignsColumnsAndLeavesTheLastUnpadded) {
  EXPECT_EQ(
      FormatTable(
          {{"ID", "NAME", "N"}, {"7", "a", "100"}, {"12", "long name", "5"}},
          {true, false, true}),
      "ID  NAME         N\n"
      " 7  a          100\n"
      "12  long name    5\n");
  EXPECT_EQ(FormatTable({{"A", "LAST"}, {"1", "x"}}, {true, false}),
            "A  LAST\n"
            "1  x\n");
}

TEST(FormatNodesTable, OneRowPerNodeWithRelativeLastSeen) {
  const absl::Time now = absl::FromUnixSeconds(1795765373);
  v1::ListNodesResponse nodes;
  v1::NodeInfo* a = nodes.add_nodes();
  a->set_name("node-a");
  a->set_grpc_address("10.0.0.1:50051");
  a->set_state(v1::NODE_STATE_UP);
  a->set_connections_open(1200);
  a->set_last_seen_unix_nano(absl::ToUnixNanos(now - absl::Seconds(2)));
  a->set_incarnation(3);
  v1::NodeInfo* b = nodes.add_nodes();
  b->set_name("node-b");
  b->set_grpc_address("10.0.0.2:50051");
  b->set_state(v1::NODE_STATE_LOST);
  b->set_last_seen_unix_nano(absl::ToUnixNanos(now - absl::Seconds(187)));
  b->set_incarnation(12);
  v1::NodeInfo* standalone = nodes.add_nodes();
  standalone->set_state(v1::NODE_STATE_UP);
  EXPECT_EQ(FormatNodesTable(nodes, now),
            "NAME    STATE  GRPC ADDRESS    CONNECTIONS  LAST SEEN  "
            "INCARNATION\n"
            "node-a  up     10.0.0.1:50051         1200  2s ago     "
            "          3\n"
            "node-b  lost   10.0.0.2:50051            0  3m07s ago  "
            "         12\n"
            "-       up                               0  -          "
            "          0\n");
}

TEST(MessageJson, IsTheCanonicalProto3MappingOnOneLine) {
  // Exact text: proto field names, 64-bit integers as strings, 32-bit ones as
  // numbers, bytes in base64, the oneof member as a nested object.
  EXPECT_EQ(MessageJson(DataEvent("hi\n", 3)),
            "{\"seq\":\"12\",\"time_unix_nano\":\"1795765373123456789\","
            "\"connection_id\":\"3\",\"listener\":\"default\",\"node\":\"\","
            "\"data\":{\"payload\":\"aGkK\",\"size\":3}}");
}

TEST(MessageJson, DataEventRoundTripsThroughPython) {
  std::string payload("\0\x01\xff binary \n", 12);
  auto parsed = ParseJsonLines(MessageJson(DataEvent(payload, 20)));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& o = (*parsed)[0];
  EXPECT_EQ(JsonType(o), "event");
  EXPECT_EQ(JsonKind(o), "data");
  EXPECT_EQ(JsonStr(o, "seq"), "12");
  EXPECT_EQ(JsonUint(o, "time_unix_nano"), 1795765373123456789u);
  EXPECT_EQ(JsonUint(o, "connection_id"), 3u);
  EXPECT_EQ(JsonStr(o, "listener"), "default");
  EXPECT_EQ(JsonUint(o, "data.size"), 20u);
  EXPECT_EQ(*Base64Decode(JsonStr(o, "data.payload")), payload);
}

TEST(MessageJson, StringsComeBackAsTheSameText) {
  std::vector<std::string> inputs = {
      "plain", "quote \" backslash \\ slash / <tag>",
      std::string("ctl \x01\x1f\x7f\n\r\t\b\f end\0z", 18),
      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",  // é € 😀
  };
  std::string lines;
  for (const std::string& text : inputs) {
    v1::Closed closed;
    closed.set_detail(text);
    std::string line = MessageJson(closed);
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    absl::StrAppend(&lines, line, "\n");
  }
  auto parsed = ParseJsonLines(lines);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << lines;
  ASSERT_EQ(parsed->size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_EQ(JsonStr((*parsed)[i], "detail"), inputs[i]) << i;
  }
}

TEST(MessageJson, EveryFieldIsPresentEvenAtItsDefault) {
  v1::Event opened;
  opened.set_seq(1);
  opened.set_connection_id(2);
  opened.set_listener("l");
  opened.mutable_opened()->set_remote_address("[::1]:5");
  opened.mutable_opened()->set_local_address("[::1]:6");
  v1::Event closed = opened;
  closed.mutable_closed()->set_reason(v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER);
  closed.mutable_closed()->set_bytes_received(10);
  v1::Event writable = opened;
  writable.mutable_writable();
  v1::Gap gap;
  gap.set_first_seq(5);
  gap.set_last_seq(9);
  gap.set_lost(3);
  gap.set_reason(v1::GAP_REASON_SUBSCRIBER_TOO_SLOW);
  v1::Heartbeat hb;
  hb.set_head_seq(100);
  hb.set_delivered(90);
  v1::Started started;
  started.set_server_epoch("e1");
  started.set_head_seq(100);
  auto parsed = ParseJsonLines(
      absl::StrCat(MessageJson(opened), "\n", MessageJson(closed), "\n",
                   MessageJson(writable), "\n", MessageJson(gap), "\n",
                   MessageJson(hb), "\n", MessageJson(started), "\n"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 6u);
  const auto& p = *parsed;
  EXPECT_EQ(JsonKind(p[0]), "opened");
  EXPECT_EQ(JsonStr(p[0], "opened.remote_address"), "[::1]:5");
  EXPECT_EQ(JsonStr(p[0], "opened.local_address"), "[::1]:6");
  EXPECT_EQ(JsonUint(p[0], "time_unix_nano"), 0u);
  EXPECT_TRUE(JsonHas(p[0], "time_unix_nano"));
  EXPECT_FALSE(JsonHas(p[0], "data")) << "only the oneof member set";
  EXPECT_EQ(JsonKind(p[1]), "closed");
  EXPECT_EQ(JsonStr(p[1], "closed.reason"),
            "CLOSE_REASON_CLOSED_BY_SUBSCRIBER");
  EXPECT_EQ(JsonUint(p[1], "closed.bytes_received"), 10u);
  EXPECT_EQ(JsonStr(p[1], "closed.bytes_sent"), "0");
  EXPECT_EQ(JsonStr(p[1], "closed.detail"), "");
  EXPECT_TRUE(JsonHas(p[1], "closed.detail"));
  EXPECT_EQ(JsonKind(p[2]), "writable");
  EXPECT_EQ(p[2].at("writable").text, "{}");
  EXPECT_EQ(JsonType(p[3]), "gap");
  EXPECT_EQ(JsonUint(p[3], "first_seq"), 5u);
  EXPECT_EQ(JsonUint(p[3], "last_seq"), 9u);
  EXPECT_EQ(JsonUint(p[3], "lost"), 3u);
  EXPECT_EQ(JsonStr(p[3], "reason"), "GAP_REASON_SUBSCRIBER_TOO_SLOW");
  EXPECT_EQ(JsonType(p[4]), "heartbeat");
  EXPECT_EQ(JsonUint(p[4], "head_seq"), 100u);
  EXPECT_EQ(JsonUint(p[4], "delivered"), 90u);
  EXPECT_EQ(JsonStr(p[4], "lost"), "0");
  EXPECT_EQ(JsonType(p[5]), "started");
  EXPECT_EQ(JsonStr(p[5], "server_epoch"), "e1");
  EXPECT_EQ(JsonStr(p[5], "oldest_seq"), "0");
}

TEST(FormatGapText, SaysWhatWasLostAndWhy) {
  v1::Gap gap;
  gap.set_first_seq(5);
  gap.set_last_seq(9);
  gap.set_lost(3);
  gap.set_reason(v1::GAP_REASON_SUBSCRIBER_TOO_SLOW);
  EXPECT_THAT(FormatGapText(gap), StartsWith("gap: 3 events lost (seq 5..9)"));
  gap.set_reason(v1::GAP_REASON_EPOCH_CHANGED);
  EXPECT_THAT(FormatGapText(gap), HasSubstr("restarted"));
}

TEST(FormatStats, TextAndJsonCarryEveryCounter) {
  v1::GetStatsResponse s;
  s.set_poller("epoll");
  s.set_connections_open(3);
  s.set_events_published(77);
  s.set_head_seq(77);
  std::string text = FormatStatsText(s);
  EXPECT_THAT(text, HasSubstr("poller                    epoll\n"));
  EXPECT_THAT(text, HasSubstr("connections open          3\n"));
  auto parsed = ParseJsonLines(MessageJson(s));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& o = (*parsed)[0];
  EXPECT_EQ(JsonStr(o, "poller"), "epoll");
  EXPECT_EQ(JsonUint(o, "connections_open"), 3u);
  EXPECT_EQ(JsonUint(o, "events_published"), 77u);
  EXPECT_EQ(JsonStr(o, "events_lost"), "0");
  // Standalone: the cluster fields are there, empty.
  EXPECT_EQ(JsonStr(o, "node"), "");
  EXPECT_EQ(JsonStr(o, "cluster_head_seq"), "0");
  EXPECT_EQ(JsonStr(o, "cluster_oldest_seq"), "0");
  EXPECT_EQ(o.size(), static_cast<size_t>(
                          v1::GetStatsResponse::descriptor()->field_count()));
  EXPECT_THAT(text, Not(HasSubstr("node"))) << "standalone: no cluster rows";
  EXPECT_THAT(text, Not(HasSubstr("cluster")));

  s.set_node("node-a");
  s.set_cluster_head_seq(900);
  s.set_cluster_oldest_seq(12);
  text = FormatStatsText(s);
  EXPECT_THAT(text, HasSubstr("head seq                  77\n"));
  EXPECT_THAT(text, HasSubstr("node                      node-a\n"));
  EXPECT_THAT(text, HasSubstr("cluster head seq          900\n"));
  EXPECT_THAT(text, HasSubstr("cluster oldest seq        12\n"));
}

TEST(MessageJson, ConnectionHasEveryField) {
  v1::Connection c;
  c.set_connection_id(4);
  c.set_listener("default");
  c.set_remote_address("127.0.0.1:1");
  c.set_local_address("127.0.0.1:2");
  c.set_opened_unix_nano(1795765373000000000u);
  c.set_bytes_received(5);
  c.set_queued_bytes(7);
  auto parsed = ParseJsonLines(MessageJson(c));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& o = (*parsed)[0];
  EXPECT_EQ(JsonStr(o, "node"), "");
  EXPECT_EQ(o.size(),
            static_cast<size_t>(v1::Connection::descriptor()->field_count()));
  EXPECT_EQ(JsonUint(o, "connection_id"), 4u);
  EXPECT_EQ(JsonStr(o, "remote_address"), "127.0.0.1:1");
  EXPECT_EQ(JsonUint(o, "opened_unix_nano"), 1795765373000000000u);
  EXPECT_EQ(JsonStr(o, "bytes_sent"), "0");
  EXPECT_EQ(JsonUint(o, "queued_bytes"), 7u);
}

TEST(FormatAssignedText, SaysWhyFromWhereAndWhatMayRepeat) {
  v1::Assigned a;
  a.set_group("workers");
  a.set_connection_id(12);
  a.set_listener("default");
  a.set_remote_address("127.0.0.1:5555");
  a.set_from_seq(345);
  a.set_bytes_received(120);
  a.set_reason(v1::ASSIGN_REASON_MEMBER_LEFT);
  a.set_previous_member(3);
  a.set_possibly_redelivered_through_seq(350);
  EXPECT_EQ(FormatAssignedText(a),
            "assigned conn=12 (default, from 127.0.0.1:5555) from seq=345, "
            "in=120 out=0: its member 3 left; seq 345..350 may repeat what "
            "the previous member got");
  a.set_reason(v1::ASSIGN_REASON_EVENTS_LOST);
  a.set_possibly_redelivered_through_seq(0);
  a.mutable_gap()->set_first_seq(300);
  a.mutable_gap()->set_last_seq(339);
  a.mutable_gap()->set_lost(5);
  EXPECT_THAT(FormatAssignedText(a),
              HasSubstr("still yours, events were lost; 5 of its events lost "
                        "(seq 300..339)"));
  a.set_revoked(true);
  EXPECT_THAT(FormatAssignedText(a),
              StartsWith("unassigned conn=12 (default, from 127.0.0.1:5555): "
                         "a rebalance moved it"));
  // Escaped: a remote address is server-supplied text.
  a.set_remote_address("\x1b[31m");
  EXPECT_THAT(FormatAssignedText(a), HasSubstr("from \\x1b[31m"));
}

TEST(MessageJson, AssignedIsToldApartByFromSeq) {
  v1::Assigned a;
  a.set_connection_id(12);
  a.set_from_seq(345);
  auto parsed = ParseJsonLines(MessageJson(a));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(JsonType((*parsed)[0]), "assigned");
  EXPECT_EQ(JsonUint((*parsed)[0], "from_seq"), 345u);
  EXPECT_EQ(JsonStr((*parsed)[0], "reason"), "ASSIGN_REASON_UNSPECIFIED");
}

TEST(FormatGroupsText, OneLinePerGroupAndPerMember) {
  v1::ListGroupsResponse r;
  v1::GroupInfo* g = r.add_groups();
  g->set_name("workers");
  g->set_delivery(v1::DELIVERY_LOSSLESS);
  g->set_connections(300);
  g->set_queued_events(7);
  g->set_backlog_bytes(4096);
  g->set_handovers(2);
  const absl::Time now = absl::FromUnixSeconds(1795765373);
  for (uint64_t id : {3, 4}) {
    v1::GroupMember* m = g->add_members();
    m->set_member_id(id);
    m->set_peer("ipv4:127.0.0.1:50322");
    m->set_connections(150);
    m->set_delivered_events(1234);
    m->set_joined_unix_nano(
        static_cast<uint64_t>(absl::ToUnixNanos(now - absl::Seconds(5))));
  }
  EXPECT_EQ(FormatGroupsText(r, now),
            "workers  lossless  2 members  300 connections (0 unassigned)  7 "
            "queued  backlog 4096 B  handovers=2 redelivered=0 lost=0\n"
            "  member 3  ipv4:127.0.0.1:50322  150 connections  0 queued  "
            "1234 delivered  joined 5s ago\n"
            "  member 4  ipv4:127.0.0.1:50322  150 connections  0 queued  "
            "1234 delivered  joined 5s ago\n");
}

TEST(FormatStatsText, GroupRowsOnceAGroupExisted) {
  v1::GetStatsResponse s;
  EXPECT_THAT(FormatStatsText(s), ::testing::Not(HasSubstr("group")));
  s.set_groups(1);
  s.set_group_members(3);
  EXPECT_THAT(FormatStatsText(s), HasSubstr("group members             3\n"));
}

}  // namespace
}  // namespace fanin::cli
