// The subcommand flag parser: forms, types, errors.
#include "client/flags.h"

#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fanin::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<FlagSpec> Specs() {
  return {
      {.name = "output",
       .short_name = 'o',
       .type = FlagType::kString,
       .value_name = "FORMAT",
       .help = "format",
       .choices = {"text", "json"}},
      {.name = "follow", .short_name = 'f', .type = FlagType::kBool},
      {.name = "count", .short_name = 'n', .type = FlagType::kUint},
      {.name = "timeout", .type = FlagType::kDuration},
      {.name = "kind", .type = FlagType::kList},
      {.name = "resume-after", .type = FlagType::kUint},
      {.name = "tls_ca", .type = FlagType::kString},
  };
}

TEST(ParseFlags, AcceptsLongShortAndAttachedForms) {
  auto f = ParseFlags(Specs(), {"--output=json", "-n", "5", "-f", "pos1",
                                "--timeout", "1.5s", "pos2"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->String("output", "text"), "json");
  EXPECT_EQ(f->Uint("count", 0), 5u);
  EXPECT_TRUE(f->Bool("follow"));
  EXPECT_EQ(f->Duration("timeout", absl::ZeroDuration()),
            absl::Milliseconds(1500));
  EXPECT_THAT(f->positional(), ElementsAre("pos1", "pos2"));

  auto g = ParseFlags(Specs(), {"-ojson", "-n7"});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->String("output", ""), "json");
  EXPECT_EQ(g->Uint("count", 0), 7u);
}

TEST(ParseFlags, DashesAndUnderscoresAreTheSameFlag) {
  auto f = ParseFlags(Specs(), {"--resume_after=9", "--tls-ca", "ca.pem"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->Uint("resume-after", 0), 9u);
  EXPECT_EQ(f->Uint("resume_after", 0), 9u);
  EXPECT_EQ(f->String("tls_ca", ""), "ca.pem");
}

TEST(ParseFlags, DefaultsWhenAbsent) {
  auto f = ParseFlags(Specs(), {});
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE(f->Has("output"));
  EXPECT_EQ(f->String("output", "text"), "text");
  EXPECT_FALSE(f->Bool("follow"));
  EXPECT_EQ(f->Uint("count", 42), 42u);
  EXPECT_TRUE(f->List("kind").empty());
}

TEST(ParseFlags, BoolTakesExplicitValuesOnlyAfterEquals) {
  auto f = ParseFlags(Specs(), {"--follow=false", "next"});
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE(f->Bool("follow"));
  EXPECT_TRUE(f->Has("follow"));
  EXPECT_THAT(f->positional(), ElementsAre("next"));
  // Abseil's bool syntax: yes/no and 1/0 too, nothing else.
  EXPECT_TRUE(ParseFlags(Specs(), {"--follow=yes"})->Bool("follow"));
  EXPECT_FALSE(ParseFlags(Specs(), {"--follow=0"})->Bool("follow"));
  auto bad = ParseFlags(Specs(), {"--follow=maybe"});
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("--follow: want true or false, got \"maybe\""));
}

TEST(ParseFlags, ListsRepeatAndSplitAtCommas) {
  auto f = ParseFlags(Specs(), {"--kind", "data,closed", "--kind=opened,"});
  ASSERT_TRUE(f.ok());
  EXPECT_THAT(f->List("kind"), ElementsAre("data", "closed", "opened"));
}

TEST(ParseFlags, DoubleDashEndsFlagsAndLoneDashIsPositional) {
  auto f = ParseFlags(Specs(), {"-", "--", "--count", "-n"});
  ASSERT_TRUE(f.ok());
  EXPECT_THAT(f->positional(), ElementsAre("-", "--count", "-n"));
  EXPECT_FALSE(f->Has("count"));
}

TEST(ParseFlags, StopsAtTheFirstPositionalWhenAsked) {
  auto f = ParseFlags(Specs(), {"-f", "watch", "--count=3"}, true);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->Bool("follow"));
  EXPECT_FALSE(f->Has("count"));
  EXPECT_THAT(f->positional(), ElementsAre("watch", "--count=3"));
}

TEST(ParseFlags, RejectsUnknownFlagsAndBadValues) {
  auto unknown = ParseFlags(Specs(), {"--bogus"});
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr("unknown flag --bogus"));
  EXPECT_FALSE(ParseFlags(Specs(), {"-x"}).ok());
  auto missing = ParseFlags(Specs(), {"--count"});
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("needs a value"));
  EXPECT_FALSE(ParseFlags(Specs(), {"--count=-1"}).ok());
  EXPECT_FALSE(ParseFlags(Specs(), {"--count=12abc"}).ok());
  EXPECT_FALSE(ParseFlags(Specs(), {"--count=99999999999999999999999"}).ok());
  EXPECT_FALSE(ParseFlags(Specs(), {"--timeout=soon"}).ok());
  EXPECT_FALSE(ParseFlags(Specs(), {"--timeout=-5s"}).ok());
  auto choice = ParseFlags(Specs(), {"-o", "yaml"});
  EXPECT_THAT(std::string(choice.status().message()),
              HasSubstr("want text, json"));
}

TEST(ParsedFlags, GetParsesWithAbslParseFlag) {
  auto f = ParseFlags(Specs(), {"-o", "json", "-n", "18446744073709551615"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->Get<OutputFormat>("output", OutputFormat::kText),
            OutputFormat::kJson);
  EXPECT_EQ(f->Uint("count", 0), 18446744073709551615u);
  EXPECT_EQ(f->Get<OutputFormat>("absent", OutputFormat::kRaw),
            OutputFormat::kRaw);
}

TEST(OutputFormat, RoundTripsThroughAbseilsMarshalling) {
  for (OutputFormat format :
       {OutputFormat::kText, OutputFormat::kJson, OutputFormat::kRaw}) {
    OutputFormat back;
    std::string error;
    ASSERT_TRUE(absl::ParseFlag(absl::UnparseFlag(format), &back, &error));
    EXPECT_EQ(back, format);
  }
  OutputFormat format;
  std::string error;
  EXPECT_FALSE(absl::ParseFlag("yaml", &format, &error));
  EXPECT_THAT(error, HasSubstr("text, json or raw"));
}

TEST(ApplyEnvironment, FillsMarkedFlagsTheCommandLineLeftOut) {
  std::vector<FlagSpec> specs = {
      {.name = "server", .type = FlagType::kString, .env = true},
      {.name = "token_file", .type = FlagType::kString, .env = true},
      {.name = "tls_cert", .type = FlagType::kString},
      {.name = "count", .type = FlagType::kUint, .env = true},
  };
  std::map<std::string, std::string> env = {
      {"FANIN_SERVER", "from-env:1"},
      {"FANIN_TOKEN_FILE", "/t"},
      {"FANIN_TLS_CERT", "server.pem"},  // not an env flag: ignored
      {"FANIN_COUNT", ""},               // empty: ignored
  };
  auto lookup = [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  auto f = ParseFlags(specs, {"--server=from-flag:2"});
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(ApplyEnvironment(specs, lookup, &*f).ok());
  EXPECT_EQ(f->String("server", ""), "from-flag:2");  // the command line wins
  EXPECT_EQ(f->String("token_file", ""), "/t");
  EXPECT_FALSE(f->Has("tls_cert"));
  EXPECT_FALSE(f->Has("count"));

  env["FANIN_COUNT"] = "many";
  auto g = ParseFlags(specs, {});
  absl::Status status = ApplyEnvironment(specs, lookup, &*g);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("$FANIN_COUNT: --count: want a non-negative integer"));
}

TEST(ParseDurationValue, TakesUnitsOrPlainSeconds) {
  absl::Duration d;
  ASSERT_TRUE(ParseDurationValue("250ms", &d));
  EXPECT_EQ(d, absl::Milliseconds(250));
  ASSERT_TRUE(ParseDurationValue("2", &d));
  EXPECT_EQ(d, absl::Seconds(2));
  ASSERT_TRUE(ParseDurationValue("1m", &d));
  EXPECT_EQ(d, absl::Minutes(1));
  EXPECT_FALSE(ParseDurationValue("inf", &d));
}

TEST(ParsedFlags, MergeAppendsListsAndOverridesScalars) {
  auto a = ParseFlags(Specs(), {"-n", "1", "--kind=data", "x"});
  auto b = ParseFlags(Specs(), {"-n", "2", "--kind=closed", "y"});
  ASSERT_TRUE(a.ok() && b.ok());
  a->Merge(*b);
  EXPECT_EQ(a->Uint("count", 0), 2u);
  EXPECT_THAT(a->List("kind"), ElementsAre("data", "closed"));
  EXPECT_THAT(a->positional(), ElementsAre("x", "y"));
}

TEST(FlagsHelp, ListsEveryFlagWithItsValueAndChoices) {
  std::string help = FlagsHelp(Specs());
  EXPECT_THAT(help, HasSubstr("-o, --output=FORMAT"));
  EXPECT_THAT(help, HasSubstr("(text|json)"));
  EXPECT_THAT(help, HasSubstr("-f, --follow"));
  EXPECT_THAT(help, HasSubstr("--tls_ca="));
}

}  // namespace
}  // namespace fanin::cli
