#include "server/net/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fanin::net {
namespace {

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
         c == '-' || c == '.';
}

absl::Status CheckPort(absl::string_view port, absl::string_view spec) {
  int value;
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(),
                   [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(port, &value) || value > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen spec \"", spec, "\": port \"", port, "\" is not 0..65535"));
  }
  return absl::OkStatus();
}

absl::Status CheckAddress(absl::string_view address, absl::string_view spec) {
  if (absl::StartsWith(address, "unix:")) {
    absl::string_view path = address.substr(5);
    if (path.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen spec \"", spec, "\": empty unix socket path"));
    }
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "listen spec \"", spec, "\": unix socket path longer than ",
          sizeof(sockaddr_un::sun_path) - 1, " bytes"));
    }
    return absl::OkStatus();
  }
  if (absl::StartsWith(address, "[")) {
    size_t close = address.find(']');
    if (close == absl::string_view::npos || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("listen spec \"", spec,
                       "\": IPv6 address must look like [::1]:PORT"));
    }
    std::string host(address.substr(1, close - 1));
    in6_addr a6;
    if (inet_pton(AF_INET6, host.c_str(), &a6) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "listen spec \"", spec, "\": \"", host, "\" is not an IPv6 address"));
    }
    return CheckPort(address.substr(close + 2), spec);
  }
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen spec \"", spec,
                     "\": expected HOST:PORT, [V6]:PORT or unix:PATH"));
  }
  std::string host(address.substr(0, colon));
  in_addr a4;
  if (host != "localhost" && inet_pton(AF_INET, host.c_str(), &a4) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen spec \"", spec, "\": host \"", host,
        "\" is not an IPv4 address or \"localhost\" (IPv6 goes in brackets)"));
  }
  return CheckPort(address.substr(colon + 1), spec);
}

}  // namespace

absl::StatusOr<ListenSpec> ParseListenSpec(absl::string_view spec) {
  ListenSpec out;
  absl::string_view address = spec;
  // "unix:/a=b" has no name; "n=unix:/a=b" has one.
  if (!absl::StartsWith(spec, "unix:")) {
    size_t eq = spec.find('=');
    if (eq != absl::string_view::npos) {
      absl::string_view name = spec.substr(0, eq);
      if (name.empty() || !std::all_of(name.begin(), name.end(), IsNameChar)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "listen spec \"", spec, "\": listener name \"", name,
            "\" must be non-empty letters, digits, '_', '-' or '.'"));
      }
      out.name = std::string(name);
      address = spec.substr(eq + 1);
    }
  }
  if (address.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen spec \"", spec, "\": missing address"));
  }
  absl::Status s = CheckAddress(address, spec);
  if (!s.ok()) return s;
  out.address = std::string(address);
  return out;
}

namespace {

// The IP of an AF_INET/AF_INET6 address without port or brackets; "" else.
std::string HostOfSockaddr(const sockaddr* sa, socklen_t len) {
  char buf[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_INET &&
      len >= static_cast<socklen_t>(sizeof(sockaddr_in)) &&
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr,
                buf, sizeof(buf)) != nullptr) {
    return buf;
  }
  if (sa->sa_family == AF_INET6 &&
      len >= static_cast<socklen_t>(sizeof(sockaddr_in6)) &&
      inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr,
                buf, sizeof(buf)) != nullptr) {
    return buf;
  }
  return "";
}

}  // namespace

std::string FormatSockaddr(const sockaddr* sa, socklen_t len) {
  if (sa == nullptr || len < static_cast<socklen_t>(sizeof(sa_family_t))) {
    return "";
  }
  char buf[INET6_ADDRSTRLEN];
  switch (sa->sa_family) {
    case AF_INET: {
      if (len < static_cast<socklen_t>(sizeof(sockaddr_in))) return "";
      const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
      if (inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf)) == nullptr) {
        return "";
      }
      return absl::StrCat(buf, ":", ntohs(in->sin_port));
    }
    case AF_INET6: {
      if (len < static_cast<socklen_t>(sizeof(sockaddr_in6))) return "";
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
      if (inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf)) == nullptr) {
        return "";
      }
      return absl::StrCat("[", buf, "]:", ntohs(in6->sin6_port));
    }
    case AF_UNIX: {
      const auto* un = reinterpret_cast<const sockaddr_un*>(sa);
      const size_t offset = offsetof(sockaddr_un, sun_path);
      if (static_cast<size_t>(len) <= offset) return "";  // unnamed
      size_t n =
          std::min(static_cast<size_t>(len) - offset, sizeof(un->sun_path));
      if (un->sun_path[0] == '\0') {  // abstract namespace
        return absl::StrCat("@", absl::string_view(un->sun_path + 1, n - 1));
      }
      return std::string(un->sun_path, strnlen(un->sun_path, n));
    }
    default:
      return "";
  }
}

std::string LocalAddressOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  return FormatSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

std::string PeerAddressOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  return FormatSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

Peer PeerOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  const auto* sa = reinterpret_cast<const sockaddr*>(&ss);
  return {FormatSockaddr(sa, len), HostOfSockaddr(sa, len)};
}

}  // namespace fanin::net
