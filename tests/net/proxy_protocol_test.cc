// The PROXY protocol parser: v1 and v2 as HAProxy's spec writes them, fed
// whole and byte by byte; TLVs, CRC32C, bounds and the garbage that must be
// refused as soon as it shows.
#include "server/net/proxy_protocol.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fanin::net {
namespace {

using Result = ProxyHeaderParser::Result;

std::string Be16(uint16_t v) {
  return {static_cast<char>(v >> 8), static_cast<char>(v & 0xFF)};
}

std::string V2(uint8_t cmd, uint8_t family, const std::string& block) {
  return std::string("\r\n\r\n\0\r\nQUIT\n", 12) + static_cast<char>(cmd) +
         static_cast<char>(family) + Be16(static_cast<uint16_t>(block.size())) +
         block;
}

std::string Tlv(uint8_t type, const std::string& value) {
  return static_cast<char>(type) + Be16(static_cast<uint16_t>(value.size())) +
         value;
}

std::string Inet4Block(uint16_t sport, uint16_t dport) {
  return std::string("\xc0\x00\x02\x01\xc6\x33\x64\x02", 8) + Be16(sport) +
         Be16(dport);
}

// Feeds one byte at a time; the last result.
Result FeedBytes(ProxyHeaderParser* p, const std::string& text) {
  Result r = Result::kNeedMore;
  for (char c : text) {
    r = p->Feed(std::string(1, c));
    if (r != Result::kNeedMore) break;
  }
  return r;
}

TEST(ProxyProtocolTest, V1Tcp4WithTheStreamAfterIt) {
  ProxyHeaderParser p;
  ASSERT_EQ(p.Feed("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /"),
            Result::kDone);
  EXPECT_EQ(p.header().version, 1);
  EXPECT_FALSE(p.header().local);
  EXPECT_EQ(p.header().source.address, "192.0.2.1:56324");
  EXPECT_EQ(p.header().source.host, "192.0.2.1");
  EXPECT_EQ(p.header().destination.address, "198.51.100.2:443");
  EXPECT_EQ(p.remainder(), "GET /");
}

TEST(ProxyProtocolTest, V1Tcp6ByteByByte) {
  ProxyHeaderParser p;
  ASSERT_EQ(FeedBytes(&p, "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n"),
            Result::kDone);
  EXPECT_EQ(p.header().source.address, "[2001:db8::1]:1");
  EXPECT_EQ(p.header().source.host, "2001:db8::1");
  EXPECT_EQ(p.header().destination.address, "[::1]:65535");
  EXPECT_EQ(p.remainder(), "");
  EXPECT_EQ(p.MaxWanted(), 0u);
}

TEST(ProxyProtocolTest, V1UnknownKeepsTheSocketAddresses) {
  ProxyHeaderParser p;
  ASSERT_EQ(p.Feed("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nx"), Result::kDone);
  EXPECT_TRUE(p.header().local);
  EXPECT_TRUE(p.header().source.address.empty());
  EXPECT_EQ(p.remainder(), "x");
}

TEST(ProxyProtocolTest, V1GarbageIsRefused) {
  for (const std::string& bad : std::vector<std::string>{
           "GET / HTTP/1.1\r\n",
           "PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
           "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
           "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",
           "PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n",
           "PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
           "PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n",
           "PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
           "PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",
           "PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
           "PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
           std::string("PROXY TCP4 1.2.3.4\0 1.2.3.4 1 2\r\n", 32),
           "PROXY " + std::string(120, 'A'),
       }) {
    ProxyHeaderParser whole;
    EXPECT_EQ(whole.Feed(bad), Result::kError) << bad;
    EXPECT_FALSE(whole.error().empty());
    ProxyHeaderParser bytes;
    EXPECT_EQ(FeedBytes(&bytes, bad), Result::kError) << bad;
  }
}

TEST(ProxyProtocolTest, GarbageIsRefusedAtTheFirstWrongByte) {
  ProxyHeaderParser p;
  EXPECT_EQ(p.Feed("G"), Result::kError);
  ProxyHeaderParser q;
  EXPECT_EQ(q.Feed("PROX"), Result::kNeedMore);
  EXPECT_EQ(q.Feed("I"), Result::kError);
  ProxyHeaderParser r;
  EXPECT_EQ(r.Feed(std::string("\r\n\r\n\0X", 6)), Result::kError);
}

TEST(ProxyProtocolTest, V1WithoutEndWithin107BytesIsRefused) {
  ProxyHeaderParser p;
  const std::string line = "PROXY TCP4 " + std::string(95, '1');
  ASSERT_EQ(line.size(), 106u);
  EXPECT_EQ(p.Feed(line), Result::kNeedMore);
  EXPECT_EQ(p.MaxWanted(), 1u);
  EXPECT_EQ(p.Feed("1"), Result::kError);
}

TEST(ProxyProtocolTest, V2Tcp4WithTlvs) {
  const std::string ssl = std::string("\x05\0\0\0\0", 5) +
                          Tlv(0x21, "TLSv1.3") + Tlv(0x22, "device-1") +
                          Tlv(0x23, "TLS_AES_128_GCM_SHA256") +
                          Tlv(0x24, "SHA256") + Tlv(0x25, "EC256");
  const std::string header =
      V2(0x21, 0x11,
         Inet4Block(40000, 443) + Tlv(0x01, "h2") + Tlv(0x02, "api.example") +
             Tlv(0x04, "") + Tlv(0x05, "id-1") + Tlv(0x20, ssl) +
             Tlv(0x30, "blue") + Tlv(0xEA, "vpce-1"));
  ProxyHeaderParser p;
  EXPECT_EQ(p.MaxWanted(), 16u);
  ASSERT_EQ(p.Feed(header.substr(0, 16)), Result::kNeedMore);
  EXPECT_EQ(p.MaxWanted(), header.size() - 16) << "v2 reads exactly";
  ASSERT_EQ(p.Feed(header.substr(16) + "tail"), Result::kDone);
  const ProxyHeader& h = p.header();
  EXPECT_EQ(h.version, 2);
  EXPECT_EQ(h.source.address, "192.0.2.1:40000");
  EXPECT_EQ(h.destination.address, "198.51.100.2:443");
  EXPECT_EQ(h.alpn, "h2");
  EXPECT_EQ(h.authority, "api.example");
  EXPECT_EQ(h.unique_id, "id-1");
  EXPECT_EQ(h.netns, "blue");
  ASSERT_TRUE(h.ssl.has_value());
  EXPECT_TRUE(h.ssl->client_ssl);
  EXPECT_FALSE(h.ssl->client_cert_conn);
  EXPECT_TRUE(h.ssl->client_cert_sess);
  EXPECT_TRUE(h.ssl->verified);
  EXPECT_EQ(h.ssl->version, "TLSv1.3");
  EXPECT_EQ(h.ssl->cn, "device-1");
  EXPECT_EQ(h.ssl->cipher, "TLS_AES_128_GCM_SHA256");
  EXPECT_EQ(h.ssl->sig_alg, "SHA256");
  EXPECT_EQ(h.ssl->key_alg, "EC256");
  ASSERT_EQ(h.tlvs.size(), 7u);
  EXPECT_EQ(h.tlvs[6].type, 0xEA);
  EXPECT_EQ(h.tlvs[6].value, "vpce-1");
  EXPECT_EQ(p.remainder(), "tail");
}

TEST(ProxyProtocolTest, V2Ipv6UnixLocalAndUnspec) {
  std::string v6(32, '\0');
  v6[15] = 1;  // ::1
  v6[31] = 2;  // ::2
  ProxyHeaderParser p6;
  ASSERT_EQ(FeedBytes(&p6, V2(0x21, 0x21, v6 + Be16(7) + Be16(8))),
            Result::kDone);
  EXPECT_EQ(p6.header().source.address, "[::1]:7");
  EXPECT_EQ(p6.header().destination.address, "[::2]:8");

  std::string paths(216, '\0');
  paths.replace(0, 6, "/run/a");
  paths.replace(108, 6, "/run/b");
  ProxyHeaderParser pu;
  ASSERT_EQ(pu.Feed(V2(0x21, 0x31, paths)), Result::kDone);
  EXPECT_EQ(pu.header().source.address, "/run/a");
  EXPECT_EQ(pu.header().source.host, "") << "unix peers are not per-IP";

  ProxyHeaderParser local;  // LOCAL: the block is ignored, whatever it holds
  ASSERT_EQ(local.Feed(V2(0x20, 0x11, "junk")), Result::kDone);
  EXPECT_TRUE(local.header().local);
  ProxyHeaderParser unspec;
  ASSERT_EQ(unspec.Feed(V2(0x21, 0x00, "")), Result::kDone);
  EXPECT_TRUE(unspec.header().local);
}

TEST(ProxyProtocolTest, V2Crc32cIsChecked) {
  std::string header =
      V2(0x21, 0x11, Inet4Block(1, 2) + Tlv(0x03, std::string(4, '\0')));
  const uint32_t crc = Crc32c(header);
  header.replace(
      header.size() - 4, 4,
      std::string{static_cast<char>(crc >> 24), static_cast<char>(crc >> 16),
                  static_cast<char>(crc >> 8), static_cast<char>(crc)});
  ProxyHeaderParser good;
  EXPECT_EQ(good.Feed(header), Result::kDone) << good.error();
  header[14 + 2 + 3] ^= 1;  // a source address byte
  ProxyHeaderParser bad;
  EXPECT_EQ(bad.Feed(header), Result::kError);
  EXPECT_EQ(bad.error(), "v2: CRC32C mismatch");
  // RFC 3720's check value.
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
}

TEST(ProxyProtocolTest, V2MalformedIsRefused) {
  const std::string block = Inet4Block(1, 2);
  for (const std::string& bad : std::vector<std::string>{
           V2(0x11, 0x11, block),                // version 1
           V2(0x22, 0x11, block),                // command 2
           V2(0x21, 0x12, block),                // UDP
           V2(0x21, 0x41, block),                // family 4
           V2(0x21, 0x11, block.substr(0, 11)),  // short block
           V2(0x21, 0x21, block),                // short IPv6 block
           V2(0x21, 0x11, block + "\x01\x00"),   // truncated TLV
           V2(0x21, 0x11, block + Tlv(0x01, "h2").substr(0, 4)),
           V2(0x21, 0x11, block + Tlv(0x20, "\x01\0\0")),  // short SSL
           V2(0x21, 0x11, block + Tlv(0x05, std::string(129, 'u'))),
           V2(0x21, 0x11, block + Tlv(0x03, "abc")),  // CRC of 3 bytes
       }) {
    ProxyHeaderParser p;
    EXPECT_EQ(p.Feed(bad), Result::kError) << p.error();
  }
}

TEST(ProxyProtocolTest, V2OverTheBoundIsRefusedFromItsLength) {
  ProxyHeaderParser p;
  std::string start = std::string("\r\n\r\n\0\r\nQUIT\n\x21\x11", 14) +
                      Be16(ProxyHeaderParser::kMaxHeaderBytes);
  EXPECT_EQ(p.Feed(start), Result::kError) << "16 + 4096 is over 4096";
  ProxyHeaderParser q;
  std::string ok = std::string("\r\n\r\n\0\r\nQUIT\n\x21\x11", 14) +
                   Be16(ProxyHeaderParser::kMaxHeaderBytes - 16);
  EXPECT_EQ(q.Feed(ok), Result::kNeedMore);
}

}  // namespace
}  // namespace fanin::net
