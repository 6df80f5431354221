#include "server/net/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <array>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fanin::net {
namespace {

constexpr absl::string_view kV1Signature = "PROXY ";
constexpr char kV2SignatureBytes[] = "\r\n\r\n\0\r\nQUIT\n";
constexpr absl::string_view kV2Signature(kV2SignatureBytes, 12);
constexpr size_t kV2FixedBytes = 16;

// v2 TLV types and the SSL TLV's client bits and sub-types.
constexpr uint8_t kTlvAlpn = 0x01;
constexpr uint8_t kTlvAuthority = 0x02;
constexpr uint8_t kTlvCrc32c = 0x03;
constexpr uint8_t kTlvUniqueId = 0x05;
constexpr uint8_t kTlvSsl = 0x20;
constexpr uint8_t kTlvNetns = 0x30;
constexpr uint8_t kSslVersion = 0x21;
constexpr uint8_t kSslCn = 0x22;
constexpr uint8_t kSslCipher = 0x23;
constexpr uint8_t kSslSigAlg = 0x24;
constexpr uint8_t kSslKeyAlg = 0x25;
constexpr uint8_t kClientSsl = 0x01;
constexpr uint8_t kClientCertConn = 0x02;
constexpr uint8_t kClientCertSess = 0x04;
constexpr size_t kMaxUniqueIdBytes = 128;

uint16_t Be16(const char* p) {
  return static_cast<uint16_t>((static_cast<uint8_t>(p[0]) << 8) |
                               static_cast<uint8_t>(p[1]));
}

uint32_t Be32(const char* p) {
  return (uint32_t{static_cast<uint8_t>(p[0])} << 24) |
         (uint32_t{static_cast<uint8_t>(p[1])} << 16) |
         (uint32_t{static_cast<uint8_t>(p[2])} << 8) |
         uint32_t{static_cast<uint8_t>(p[3])};
}

// A v1 port: 1 to 5 decimal digits, at most 65535.
bool ParsePort(absl::string_view text, uint16_t* port) {
  if (text.empty() || text.size() > 5) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  uint32_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value > 65535) return false;
  *port = static_cast<uint16_t>(value);
  return true;
}

// A v1 address of the family and a port, as a Peer; false if either is bad.
bool V1Peer(bool v6, absl::string_view host, absl::string_view port_text,
            Peer* out) {
  uint16_t port = 0;
  if (!ParsePort(port_text, &port)) return false;
  const std::string h(host);
  if (v6) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(port);
    if (inet_pton(AF_INET6, h.c_str(), &sa.sin6_addr) != 1) return false;
    *out = PeerFromSockaddr(reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  } else {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, h.c_str(), &sa.sin_addr) != 1) return false;
    *out = PeerFromSockaddr(reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  }
  return true;
}

Peer V2InetPeer(const char* addr, const char* port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  std::memcpy(&sa.sin_addr, addr, 4);
  std::memcpy(&sa.sin_port, port, 2);  // both in network order already
  return PeerFromSockaddr(reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
}

Peer V2Inet6Peer(const char* addr, const char* port) {
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  std::memcpy(&sa.sin6_addr, addr, 16);
  std::memcpy(&sa.sin6_port, port, 2);
  return PeerFromSockaddr(reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
}

// A 108-byte v2 unix path (NUL-padded; a leading NUL is the abstract
// namespace).
Peer V2UnixPeer(const char* path) {
  constexpr size_t kPath = 108;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path, std::min(kPath, sizeof(sa.sun_path)));
  size_t n =
      path[0] == '\0' ? 1 + strnlen(path + 1, kPath - 1) : strnlen(path, kPath);
  Peer peer = PeerFromSockaddr(reinterpret_cast<sockaddr*>(&sa),
                               offsetof(sockaddr_un, sun_path) + n);
  peer.host.clear();  // unix peers are not counted per IP
  return peer;
}

std::array<uint32_t, 256> MakeCrc32cTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0x82F63B78u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}

}  // namespace

uint32_t Crc32c(absl::string_view data) {
  static const std::array<uint32_t, 256> table = MakeCrc32cTable();
  uint32_t crc = 0xFFFFFFFFu;
  for (char ch : data) {
    crc = table[(crc ^ static_cast<uint8_t>(ch)) & 0xFF] ^ (crc >> 8);
  }
  return crc ^ 0xFFFFFFFFu;
}

ProxyHeaderParser::Result ProxyHeaderParser::Fail(std::string why) {
  state_ = State::kError;
  error_ = std::move(why);
  return Result::kError;
}

size_t ProxyHeaderParser::MaxWanted() const {
  switch (state_) {
    case State::kDetect:
      return kV2FixedBytes - buffer_.size();
    case State::kV1:
      return kMaxV1Bytes - buffer_.size();
    case State::kV2:
      return buffer_.size() < kV2FixedBytes
                 ? kV2FixedBytes - buffer_.size()
                 : header_size_ - std::min(header_size_, buffer_.size());
    case State::kDone:
    case State::kError:
      return 0;
  }
  return 0;
}

ProxyHeaderParser::Result ProxyHeaderParser::Feed(absl::string_view bytes) {
  if (state_ == State::kDone || state_ == State::kError) {
    return state_ == State::kDone ? Result::kDone : Result::kError;
  }
  const size_t before = buffer_.size();
  buffer_.append(bytes.data(), bytes.size());
  if (state_ == State::kDetect) {
    if (buffer_.empty()) return Result::kNeedMore;
    if (buffer_[0] == kV1Signature[0]) {
      state_ = State::kV1;
    } else if (buffer_[0] == kV2Signature[0]) {
      state_ = State::kV2;
    } else {
      return Fail(
          "no PROXY protocol header (want \"PROXY \" or the v2 "
          "signature)");
    }
  }
  if (state_ == State::kV1) {
    const size_t check = std::min(buffer_.size(), kV1Signature.size());
    if (absl::string_view(buffer_).substr(0, check) !=
        kV1Signature.substr(0, check)) {
      return Fail("v1: bad signature");
    }
    // Look for the end of the line only in what is new (and the byte before,
    // for a CR that ended the previous piece).
    const size_t from = before == 0 ? 0 : before - 1;
    const size_t limit = std::min(buffer_.size(), kMaxV1Bytes);
    for (size_t i = from; i < limit; ++i) {
      const char c = buffer_[i];
      if (c == '\n') {
        if (i == 0 || buffer_[i - 1] != '\r') {
          return Fail("v1: line ends without CRLF");
        }
        return ParseV1(i + 1);
      }
      if (c == '\r') {
        if (i + 1 < buffer_.size() && buffer_[i + 1] != '\n') {
          return Fail("v1: CR not followed by LF");
        }
        continue;
      }
      if (c < 0x20 || c > 0x7e) return Fail("v1: a byte that is not text");
    }
    if (buffer_.size() >= kMaxV1Bytes) {
      return Fail("v1: no CRLF within 107 bytes");
    }
    return Result::kNeedMore;
  }
  // kV2
  const size_t check = std::min(buffer_.size(), kV2Signature.size());
  if (absl::string_view(buffer_).substr(0, check) !=
      kV2Signature.substr(0, check)) {
    return Fail("v2: bad signature");
  }
  if (buffer_.size() < kV2FixedBytes) return Result::kNeedMore;
  if (header_size_ == 0) {
    const uint8_t ver_cmd = static_cast<uint8_t>(buffer_[12]);
    if ((ver_cmd >> 4) != 2) return Fail("v2: version is not 2");
    if ((ver_cmd & 0x0F) > 1) return Fail("v2: command is not LOCAL or PROXY");
    header_size_ = kV2FixedBytes + Be16(buffer_.data() + 14);
    if (header_size_ > kMaxHeaderBytes) {
      return Fail(absl::StrCat("v2: header of ", header_size_,
                               " bytes is over the limit of ",
                               kMaxHeaderBytes));
    }
  }
  if (buffer_.size() < header_size_) return Result::kNeedMore;
  return ParseV2();
}

ProxyHeaderParser::Result ProxyHeaderParser::ParseV1(size_t line_end) {
  header_size_ = line_end;
  header_.version = 1;
  const absl::string_view line =
      absl::string_view(buffer_).substr(0, line_end - 2);
  std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
  // parts[0] is "PROXY" (checked with the signature).
  if (parts.size() >= 2 && parts[1] == "UNKNOWN") {
    header_.local = true;  // the rest of the line is to be ignored
    state_ = State::kDone;
    return Result::kDone;
  }
  if (parts.size() < 2 || (parts[1] != "TCP4" && parts[1] != "TCP6")) {
    return Fail("v1: protocol is not TCP4, TCP6 or UNKNOWN");
  }
  if (parts.size() != 6) {
    return Fail("v1: want PROXY TCPn SRC DST SPORT DPORT");
  }
  const bool v6 = parts[1] == "TCP6";
  if (!V1Peer(v6, parts[2], parts[4], &header_.source)) {
    return Fail("v1: bad source address or port");
  }
  if (!V1Peer(v6, parts[3], parts[5], &header_.destination)) {
    return Fail("v1: bad destination address or port");
  }
  state_ = State::kDone;
  return Result::kDone;
}

ProxyHeaderParser::Result ProxyHeaderParser::ParseV2() {
  header_.version = 2;
  const absl::string_view whole =
      absl::string_view(buffer_).substr(0, header_size_);
  const char* p = whole.data();
  const bool local = (static_cast<uint8_t>(p[12]) & 0x0F) == 0;
  if (local) {
    // LOCAL: the balancer speaks for itself; the address block is ignored.
    header_.local = true;
    state_ = State::kDone;
    return Result::kDone;
  }
  const absl::string_view block = whole.substr(kV2FixedBytes);
  size_t address_bytes = 0;
  switch (static_cast<uint8_t>(p[13])) {
    case 0x00:  // UNSPEC: keep the socket's addresses
      header_.local = true;
      break;
    case 0x11:  // TCP over IPv4
      address_bytes = 12;
      if (block.size() < address_bytes) return Fail("v2: short IPv4 block");
      header_.source = V2InetPeer(block.data(), block.data() + 8);
      header_.destination = V2InetPeer(block.data() + 4, block.data() + 10);
      break;
    case 0x21:  // TCP over IPv6
      address_bytes = 36;
      if (block.size() < address_bytes) return Fail("v2: short IPv6 block");
      header_.source = V2Inet6Peer(block.data(), block.data() + 32);
      header_.destination = V2Inet6Peer(block.data() + 16, block.data() + 34);
      break;
    case 0x31:  // unix stream
      address_bytes = 216;
      if (block.size() < address_bytes) return Fail("v2: short unix block");
      header_.source = V2UnixPeer(block.data());
      header_.destination = V2UnixPeer(block.data() + 108);
      break;
    default:
      return Fail(absl::StrCat(
          "v2: unsupported address family/transport 0x",
          absl::Hex(static_cast<uint8_t>(p[13]), absl::kZeroPad2)));
  }
  if (header_.local) {
    state_ = State::kDone;
    return Result::kDone;
  }
  return ParseTlvs(block.substr(address_bytes), whole);
}

ProxyHeaderParser::Result ProxyHeaderParser::ParseTlvs(
    absl::string_view tlvs, absl::string_view whole) {
  while (!tlvs.empty()) {
    if (tlvs.size() < 3) return Fail("v2: truncated TLV");
    const uint8_t type = static_cast<uint8_t>(tlvs[0]);
    const size_t len = Be16(tlvs.data() + 1);
    if (tlvs.size() < 3 + len) return Fail("v2: TLV longer than the header");
    const absl::string_view value = tlvs.substr(3, len);
    header_.tlvs.push_back({type, std::string(value)});
    switch (type) {
      case kTlvAlpn:
        header_.alpn = std::string(value);
        break;
      case kTlvAuthority:
        header_.authority = std::string(value);
        break;
      case kTlvUniqueId:
        if (len > kMaxUniqueIdBytes)
          return Fail("v2: UNIQUE_ID over 128 bytes");
        header_.unique_id = std::string(value);
        break;
      case kTlvNetns:
        header_.netns = std::string(value);
        break;
      case kTlvCrc32c: {
        if (len != 4) return Fail("v2: CRC32C TLV is not 4 bytes");
        std::string copy(whole);
        const size_t at = static_cast<size_t>(value.data() - whole.data());
        std::memset(copy.data() + at, 0, 4);
        if (Crc32c(copy) != Be32(value.data())) {
          return Fail("v2: CRC32C mismatch");
        }
        break;
      }
      case kTlvSsl: {
        if (len < 5) return Fail("v2: SSL TLV shorter than 5 bytes");
        ProxyHeader::Ssl ssl;
        const uint8_t client = static_cast<uint8_t>(value[0]);
        ssl.client_ssl = client & kClientSsl;
        ssl.client_cert_conn = client & kClientCertConn;
        ssl.client_cert_sess = client & kClientCertSess;
        ssl.verified = Be32(value.data() + 1) == 0;
        absl::string_view sub = value.substr(5);
        while (!sub.empty()) {
          if (sub.size() < 3) return Fail("v2: truncated SSL sub-TLV");
          const uint8_t sub_type = static_cast<uint8_t>(sub[0]);
          const size_t sub_len = Be16(sub.data() + 1);
          if (sub.size() < 3 + sub_len) {
            return Fail("v2: SSL sub-TLV longer than the SSL TLV");
          }
          std::string sub_value(sub.substr(3, sub_len));
          switch (sub_type) {
            case kSslVersion:
              ssl.version = std::move(sub_value);
              break;
            case kSslCn:
              ssl.cn = std::move(sub_value);
              break;
            case kSslCipher:
              ssl.cipher = std::move(sub_value);
              break;
            case kSslSigAlg:
              ssl.sig_alg = std::move(sub_value);
              break;
            case kSslKeyAlg:
              ssl.key_alg = std::move(sub_value);
              break;
            default:
              break;
          }
          sub.remove_prefix(3 + sub_len);
        }
        header_.ssl = std::move(ssl);
        break;
      }
      default:
        break;  // NOOP and the types fanin does not know: kept in tlvs
    }
    tlvs.remove_prefix(3 + len);
  }
  state_ = State::kDone;
  return Result::kDone;
}

}  // namespace fanin::net
