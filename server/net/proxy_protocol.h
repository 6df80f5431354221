// The PROXY protocol (HAProxy's, versions 1 and 2): the header an L4 load
// balancer puts in front of a connection's first byte to say which client it
// relays. A pure, incremental parser: no sockets, no clock; the connection
// feeds it what it reads and acts on the result.
//
// Example:
//   ProxyHeaderParser parser;
//   ProxyHeaderParser::Result r = parser.Feed("PROXY TCP4 1.2.3.4 ");
//   // kNeedMore
//   r = parser.Feed("5.6.7.8 1111 2222\r\nhello");
//   // kDone: parser.header().source.address == "1.2.3.4:1111",
//   //        parser.remainder() == "hello" (the stream's first bytes)
//
// Bounded: a header longer than kMaxHeaderBytes (or a v1 line longer than
// 107 bytes) is kError, decided as soon as the bytes seen prove it; so is the
// first byte that cannot start or continue a header. Thread: one at a time.
#ifndef FANIN_SERVER_NET_PROXY_PROTOCOL_H_
#define FANIN_SERVER_NET_PROXY_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/net/address.h"

namespace fanin::net {

// What a header carries.
struct ProxyHeader {
  int version = 0;  // 1 or 2
  // v2 LOCAL (the balancer's own health check) or v1 UNKNOWN: no client
  // addresses; the connection keeps its socket's.
  bool local = false;
  // The client (source) and the address it connected to (destination), as
  // net::Peer: "1.2.3.4:5" / "[::1]:5" / a unix path, and the host alone.
  // Empty when local.
  Peer source;
  Peer destination;
  // v2 TLVs as received (type, value), in order; the ones fanin knows are
  // also decoded below. CRC32C (0x03) is checked when present.
  struct Tlv {
    uint8_t type = 0;
    std::string value;
  };
  std::vector<Tlv> tlvs;
  std::string alpn;       // PP2_TYPE_ALPN (0x01)
  std::string authority;  // PP2_TYPE_AUTHORITY (0x02): the SNI the balancer saw
  std::string unique_id;  // PP2_TYPE_UNIQUE_ID (0x05)
  std::string netns;      // PP2_TYPE_NETNS (0x30)
  // PP2_TYPE_SSL (0x20): the balancer terminated TLS (or saw it).
  struct Ssl {
    bool client_ssl = false;        // PP2_CLIENT_SSL
    bool client_cert_conn = false;  // PP2_CLIENT_CERT_CONN
    bool client_cert_sess = false;  // PP2_CLIENT_CERT_SESS
    bool verified = false;          // the verify field was 0
    std::string version;            // PP2_SUBTYPE_SSL_VERSION
    std::string cn;                 // PP2_SUBTYPE_SSL_CN
    std::string cipher;             // PP2_SUBTYPE_SSL_CIPHER
    std::string sig_alg;            // PP2_SUBTYPE_SSL_SIG_ALG
    std::string key_alg;            // PP2_SUBTYPE_SSL_KEY_ALG
  };
  std::optional<Ssl> ssl;
};

class ProxyHeaderParser {
 public:
  // Longest header taken: v1's 107 bytes, v2's 16 + at most this much less 16.
  static constexpr size_t kMaxHeaderBytes = 4096;
  static constexpr size_t kMaxV1Bytes = 107;

  enum class Result { kNeedMore, kDone, kError };

  // Takes the next bytes of the stream. After kDone or kError the parser is
  // finished and Feed must not be called again.
  Result Feed(absl::string_view bytes);

  // How many bytes the parser can still use: read at most this much so that
  // little or nothing of the stream after the header is read with it (v2 and
  // the first 16 bytes exactly; v1 up to its longest line). 0 once finished.
  size_t MaxWanted() const;

  // After kDone.
  const ProxyHeader& header() const { return header_; }
  // After kDone: bytes fed past the end of the header (the stream's first
  // bytes, to be delivered as if read after it).
  absl::string_view remainder() const {
    return absl::string_view(buffer_).substr(header_size_);
  }
  // After kError: what is wrong, e.g. "v1: bad source address".
  const std::string& error() const { return error_; }

 private:
  Result Fail(std::string why);
  Result ParseV1(size_t line_end);
  Result ParseV2();
  Result ParseTlvs(absl::string_view tlvs, absl::string_view whole);

  enum class State { kDetect, kV1, kV2, kDone, kError };
  State state_ = State::kDetect;
  std::string buffer_;
  size_t header_size_ = 0;  // v2: known once 16 bytes are in
  ProxyHeader header_;
  std::string error_;
};

// CRC-32C (Castagnoli) of data, as the v2 CRC32C TLV carries it.
uint32_t Crc32c(absl::string_view data);

}  // namespace fanin::net

#endif  // FANIN_SERVER_NET_PROXY_PROTOCOL_H_
