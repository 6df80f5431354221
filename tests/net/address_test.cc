// Listen spec parsing and sockaddr formatting.
#include "server/net/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

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
    EXPECT_EQ(spec->address, c.address) << c.spec;
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
