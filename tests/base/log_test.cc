// The logger's two formats, escaping and level filtering.
#include "server/base/log.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace fanin::base {
namespace {

const absl::Time kWhen = absl::FromUnixMillis(1795737600123);  // 2026-11-27

TEST(LogTest, TextIsOneReadableLine) {
  std::string line = FormatLogLine(LogFormat::kText, kWhen, LogLevel::kWarning,
                                   "connection rejected",
                                   {{"conn", uint64_t{42}},
                                    {"listener", "default"},
                                    {"why", "max_connections (2) reached"},
                                    {"empty", ""},
                                    {"ok", false}});
  EXPECT_EQ(line,
            "2026-11-27T00:00:00.123Z WARN connection rejected conn=42 "
            "listener=default why=\"max_connections (2) reached\" empty=\"\" "
            "ok=false\n");
}

TEST(LogTest, JsonEscapesAndKeepsNumbersBare) {
  std::string line = FormatLogLine(
      LogFormat::kJson, kWhen, LogLevel::kInfo, "say \"hi\"\n",
      {{"subscriber", 7}, {"peer", "ipv4:127.0.0.1:5\x01"}, {"tls", true}});
  EXPECT_EQ(line,
            "{\"ts\":\"2026-11-27T00:00:00.123Z\",\"level\":\"info\","
            "\"msg\":\"say \\\"hi\\\"\\n\",\"subscriber\":7,"
            "\"peer\":\"ipv4:127.0.0.1:5\\u0001\",\"tls\":true}\n");
}

TEST(LogTest, LevelsFilterAndParse) {
  std::vector<std::string> lines;
  SetLogSinkForTesting(
      [&](absl::string_view line) { lines.emplace_back(line); });
  ConfigureLogging(LogLevel::kWarning, LogFormat::kJson);
  Log(LogLevel::kDebug, "per packet");
  Log(LogLevel::kInfo, "routine");
  Log(LogLevel::kWarning, "odd", {{"conn", 1}});
  Log(LogLevel::kError, "bad");
  SetLogSinkForTesting(nullptr);
  ConfigureLogging(LogLevel::kInfo, LogFormat::kText);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(absl::StrContains(lines[0], "\"level\":\"warning\"")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "\"conn\":1")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[1], "\"msg\":\"bad\"")) << lines[1];

  EXPECT_EQ(*ParseLogLevel("WARN"), LogLevel::kWarning);
  EXPECT_EQ(*ParseLogLevel("debug"), LogLevel::kDebug);
  EXPECT_FALSE(ParseLogLevel("verbose").ok());
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_FALSE(ParseLogFormat("xml").ok());
}

TEST(LogTest, RateLimiterPassesAFewAndCountsTheRest) {
  LogRateLimiter limiter(3);
  // All within one second (or straddling two: then more pass, never fewer).
  int passed = 0;
  uint64_t reported = 0;
  for (int i = 0; i < 100; ++i) {
    uint64_t suppressed = 0;
    if (limiter.Allow(&suppressed)) {
      ++passed;
      reported += suppressed;
    }
  }
  EXPECT_GE(passed, 3);
  EXPECT_LE(passed, 6);
  // What was held back is reported with the next line that passes.
  const absl::Time next_second =
      absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()) + 1);
  // The limiter's window is the wall-clock second: its passing is the
  // behaviour under test, so this waits for the clock, not a condition.
  while (absl::Now() < next_second) {
    absl::SleepFor(next_second - absl::Now());
  }
  uint64_t suppressed = 0;
  ASSERT_TRUE(limiter.Allow(&suppressed));
  EXPECT_EQ(reported + suppressed, static_cast<uint64_t>(100 - passed));
}

}  // namespace
}  // namespace fanin::base
