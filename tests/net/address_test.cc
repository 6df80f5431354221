// Endpoint and listen spec parsing, and sockaddr formatting.
#include "server/net/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/reactor/test_util.h"

namespace fanin::net {
namespace {

TEST(ParseListenSpecTest, AcceptsTheDocumentedForms) {
  struct Case {
    const char* spec;
    const char* name;
    const char* address;
  } cases[] = {
      {"127.0.0.1:7000", "default", "127.0.0.1:7000"},
      {"raw=127.0.0.1:0", "raw", "127.0.0.1:0"},
      {"localhost:65535", "default", "localhost:65535"},
      {"v6=[::1]:9", "v6", "[::1]:9"},
      {"0.0.0.0:80", "default", "0.0.0.0:80"},
      {"unix:/tmp/fanin.sock", "default", "unix:/tmp/fanin.sock"},
      {"u_1.x-y=unix:/tmp/a=b", "u_1.x-y", "unix:/tmp/a=b"},
      {"unix:/tmp/a=b", "default", "unix:/tmp/a=b"},
      {"abs=unix:@fanin", "abs", "unix:@fanin"},
  };
  for (const Case& c : cases) {
    auto spec = ParseListenSpec(c.spec);
    ASSERT_TRUE(spec.ok()) << c.spec << ": " << spec.status();
    EXPECT_EQ(spec->name, c.name) << c.spec;
    EXPECT_EQ(spec->endpoint.ToString(), c.address) << c.spec;
  }
}

TEST(ParseListenSpecTest, RejectsWithAMessageSayingWhat) {
  struct Case {
    const char* spec;
    const char* says;
  } cases[] = {
      {"", "missing address"},
      {"name=", "missing address"},
      {"=127.0.0.1:1", "listener name"},
      {"bad name=127.0.0.1:1", "listener name"},
      {"127.0.0.1", "HOST:PORT"},
      {"127.0.0.1:65536", "port"},
      {":80", "empty host"},
      {"name=:80", "empty host"},
      {"[::1]", "[::1]:PORT"},
      {"[::1]80", "[::1]:PORT"},
      {"[]:80", "not an IPv6"},
      {"[::1]:", "port"},
      {"[::1]:99999", "port"},
      {"n=unix:", "empty unix"},
      {"a/b=127.0.0.1:1", "listener name"},
      {"a:b=127.0.0.1:1", "listener name"},
      {"sp ace=unix:/x", "listener name"},
      {"127.0.0.1:-1", "port"},
      {"127.0.0.1:", "port"},
      {"127.0.0.1:http", "port"},
      {"example.com:80", "not an IPv4"},
      {"::1:80", "not an IPv4"},
      {"[::1:80", "[::1]:PORT"},
      {"[zz]:80", "not an IPv6"},
      {"unix:", "empty unix"},
      {"unix:/this/path/is/far/too/long/for/a/sockaddr_un/because/it/has/"
       "more/than/one/hundred/and/eight/bytes/in/it/which/is/the/limit/x",
       "longer than"},
  };
  for (const Case& c : cases) {
    auto spec = ParseListenSpec(c.spec);
    ASSERT_FALSE(spec.ok()) << c.spec;
    EXPECT_TRUE(absl::IsInvalidArgument(spec.status())) << c.spec;
    EXPECT_NE(spec.status().message().find(c.says), absl::string_view::npos)
        << c.spec << ": " << spec.status();
  }
}

TEST(ParseListenSpecTest, ErrorsNameTheSpec) {
  auto spec = ParseListenSpec("raw=127.0.0.1:70000");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().message(),
            "listen spec \"raw=127.0.0.1:70000\": port \"70000\" is not "
            "0..65535");
}

TEST(EndpointTest, ParsesEachFamilyIntoFields) {
  auto v4 = Endpoint::Parse("10.0.0.1:7000");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->family, Endpoint::Family::kInet);
  EXPECT_EQ(v4->host, "10.0.0.1");
  EXPECT_EQ(v4->port, 7000);

  auto local = Endpoint::Parse("localhost:0");
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->family, Endpoint::Family::kInet);
  EXPECT_EQ(local->host, "localhost");
  EXPECT_EQ(local->port, 0);

  auto v6 = Endpoint::Parse("[::1]:65535");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->family, Endpoint::Family::kInet6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 65535);

  auto un = Endpoint::Parse("unix:/run/fanin.sock");
  ASSERT_TRUE(un.ok()) << un.status();
  EXPECT_EQ(un->family, Endpoint::Family::kUnix);
  EXPECT_EQ(un->path, "/run/fanin.sock");

  auto abstract = Endpoint::Parse("unix:@fanin");
  ASSERT_TRUE(abstract.ok()) << abstract.status();
  EXPECT_EQ(abstract->path, "@fanin");

  EXPECT_EQ(Endpoint::Loopback(9), *Endpoint::Parse("127.0.0.1:9"));
}

TEST(EndpointTest, ToStringGivesTheCanonicalTextBack) {
  for (const char* text :
       {"127.0.0.1:7000", "0.0.0.0:0", "localhost:65535", "[::1]:9", "[::]:80",
        "[fe80::1]:1", "unix:/tmp/a=b,c", "unix:@abstract"}) {
    auto endpoint = Endpoint::Parse(text);
    ASSERT_TRUE(endpoint.ok()) << text << ": " << endpoint.status();
    EXPECT_EQ(endpoint->ToString(), text);
    EXPECT_EQ(*Endpoint::Parse(endpoint->ToString()), *endpoint) << text;
  }
  // Leading zeros in the port are not kept.
  EXPECT_EQ(Endpoint::Parse("127.0.0.1:0080")->ToString(), "127.0.0.1:80");
}

TEST(EndpointTest, RejectsWithAMessageSayingWhat) {
  struct Case {
    const char* text;
    const char* says;
  } cases[] = {
      {"", "missing address"},
      {":80", "empty host"},
      {"127.0.0.1", "HOST:PORT"},
      {"127.0.0.1:", "port"},
      {"127.0.0.1:65536", "port \"65536\" is not 0..65535"},
      {"127.0.0.1:123456", "port"},
      {"127.0.0.1:+80", "port"},
      {"127.0.0.1: 80", "port"},
      {"127.0.0.1:8o", "port"},
      {"1.2.3:80", "not an IPv4"},
      {"example.com:80", "not an IPv4"},
      {"::1:80", "IPv6 goes in brackets"},
      {"::1", "IPv6 goes in brackets"},
      {"[::1:80", "[::1]:PORT"},
      {"[::1]", "[::1]:PORT"},
      {"[::1]:", "port"},
      {"[1.2.3.4]:80", "not an IPv6"},
      {"unix:", "empty unix"},
      {"name=127.0.0.1:1", "not an IPv4"},  // no NAME= in a plain address
  };
  for (const Case& c : cases) {
    auto endpoint = Endpoint::Parse(c.text);
    ASSERT_FALSE(endpoint.ok()) << c.text;
    EXPECT_TRUE(absl::IsInvalidArgument(endpoint.status())) << c.text;
    EXPECT_TRUE(absl::StartsWith(endpoint.status().message(),
                                 absl::StrCat("address \"", c.text, "\": ")))
        << endpoint.status();
    EXPECT_NE(endpoint.status().message().find(c.says), absl::string_view::npos)
        << c.text << ": " << endpoint.status();
  }
}

TEST(EndpointTest, FlagMarshalling) {
  Endpoint endpoint;
  std::string error;
  EXPECT_TRUE(AbslParseFlag("[::1]:5", &endpoint, &error)) << error;
  EXPECT_EQ(AbslUnparseFlag(endpoint), "[::1]:5");
  EXPECT_FALSE(AbslParseFlag("[::1]:x", &endpoint, &error));
  EXPECT_EQ(error, "port \"x\" is not 0..65535");
  EXPECT_EQ(AbslUnparseFlag(endpoint), "[::1]:5");  // untouched on error

  std::vector<ListenSpec> specs;
  EXPECT_TRUE(AbslParseFlag("a=127.0.0.1:1,unix:/x,", &specs, &error)) << error;
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[0].name, "a");
  EXPECT_EQ(specs[1].name, "default");
  EXPECT_EQ(AbslUnparseFlag(specs), "a=127.0.0.1:1,default=unix:/x");
  EXPECT_FALSE(AbslParseFlag("a=127.0.0.1:1,b=:2", &specs, &error));
  EXPECT_NE(error.find("listen spec \"b=:2\": empty host"), std::string::npos)
      << error;
  EXPECT_FALSE(AbslParseFlag("", &specs, &error));
  EXPECT_EQ(specs.size(), 2u);
}

TEST(FormatSockaddrTest, FormatsEachFamily) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(5);
  inet_pton(AF_INET, "1.2.3.4", &in.sin_addr);
  EXPECT_EQ(FormatSockaddr(reinterpret_cast<sockaddr*>(&in), sizeof(in)),
            "1.2.3.4:5");

  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(443);
  inet_pton(AF_INET6, "::1", &in6.sin6_addr);
  EXPECT_EQ(FormatSockaddr(reinterpret_cast<sockaddr*>(&in6), sizeof(in6)),
            "[::1]:443");

  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  strcpy(un.sun_path, "/run/x.sock");
  socklen_t len = offsetof(sockaddr_un, sun_path) + strlen(un.sun_path) + 1;
  EXPECT_EQ(FormatSockaddr(reinterpret_cast<sockaddr*>(&un), len),
            "/run/x.sock");
  // Unnamed (e.g. a connecting client) and abstract.
  EXPECT_EQ(FormatSockaddr(reinterpret_cast<sockaddr*>(&un),
                           offsetof(sockaddr_un, sun_path)),
            "");
  un.sun_path[0] = '\0';
  memcpy(un.sun_path + 1, "abs", 3);
  EXPECT_EQ(FormatSockaddr(reinterpret_cast<sockaddr*>(&un),
                           offsetof(sockaddr_un, sun_path) + 4),
            "@abs");
  EXPECT_EQ(FormatSockaddr(nullptr, 0), "");
}

TEST(FormatSockaddrTest, LocalAndPeerOfAConnectedPair) {
  auto [client, server] = testing::TcpPair();
  ASSERT_GE(client, 0);
  EXPECT_EQ(LocalAddressOf(client), PeerAddressOf(server));
  EXPECT_EQ(PeerAddressOf(client), LocalAddressOf(server));
  EXPECT_EQ(LocalAddressOf(server).rfind("127.0.0.1:", 0), 0u)
      << LocalAddressOf(server);
  auto [a, b] = testing::UnixPair();
  EXPECT_EQ(PeerAddressOf(a), "");  // unnamed socketpair
  EXPECT_EQ(LocalAddressOf(-1), "");
  close(client);
  close(server);
  close(a);
  close(b);
}

}  // namespace
}  // namespace fanin::net
