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
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace fanin::net {
namespace {

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
         c == '-' || c == '.';
}

// Parse's body; errors carry only what is wrong, the callers say in what.
absl::StatusOr<int> ParsePort(absl::string_view port) {
  int value;
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(),
                   [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(port, &value) || value > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port \"", port, "\" is not 0..65535"));
  }
  return value;
}

absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view text) {
  Endpoint out;
  if (text.empty()) return absl::InvalidArgumentError("missing address");
  if (absl::StartsWith(text, "unix:")) {
    absl::string_view path = text.substr(5);
    if (path.empty()) {
      return absl::InvalidArgumentError("empty unix socket path");
    }
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unix socket path longer than ",
                       sizeof(sockaddr_un::sun_path) - 1, " bytes"));
    }
    out.family = Endpoint::Family::kUnix;
    out.path = std::string(path);
    return out;
  }
  absl::string_view port;
  if (absl::StartsWith(text, "[")) {
    size_t close = text.find(']');
    if (close == absl::string_view::npos || close + 1 >= text.size() ||
        text[close + 1] != ':') {
      return absl::InvalidArgumentError(
          "IPv6 address must look like [::1]:PORT");
    }
    out.family = Endpoint::Family::kInet6;
    out.host = std::string(text.substr(1, close - 1));
    in6_addr a6;
    if (inet_pton(AF_INET6, out.host.c_str(), &a6) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", out.host, "\" is not an IPv6 address"));
    }
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          "expected HOST:PORT, [V6]:PORT or unix:PATH");
    }
    out.host = std::string(text.substr(0, colon));
    if (out.host.empty()) {
      return absl::InvalidArgumentError(
          "empty host (0.0.0.0 for every IPv4 interface, [::] for IPv6)");
    }
    in_addr a4;
    if (out.host != "localhost" &&
        inet_pton(AF_INET, out.host.c_str(), &a4) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "host \"", out.host,
          "\" is not an IPv4 address or \"localhost\" (IPv6 goes in "
          "brackets)"));
    }
    port = text.substr(colon + 1);
  }
  absl::StatusOr<int> p = ParsePort(port);
  if (!p.ok()) return p.status();
  out.port = *p;
  return out;
}

absl::Status Prefixed(absl::string_view what, absl::string_view text,
                      const absl::Status& status) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " \"", text, "\": ", status.message()));
}

}  // namespace

absl::StatusOr<Endpoint> Endpoint::Parse(absl::string_view text) {
  absl::StatusOr<Endpoint> out = ParseEndpoint(text);
  if (!out.ok()) return Prefixed("address", text, out.status());
  return out;
}

Endpoint Endpoint::Loopback(int port) {
  Endpoint out;
  out.host = "127.0.0.1";
  out.port = port;
  return out;
}

std::string Endpoint::ToString() const {
  switch (family) {
    case Family::kInet:
      return absl::StrCat(host, ":", port);
    case Family::kInet6:
      return absl::StrCat("[", host, "]:", port);
    case Family::kUnix:
      return absl::StrCat("unix:", path);
  }
  return "";
}

bool operator==(const Endpoint& a, const Endpoint& b) {
  return a.family == b.family && a.host == b.host && a.port == b.port &&
         a.path == b.path;
}

bool AbslParseFlag(absl::string_view text, Endpoint* endpoint,
                   std::string* error) {
  absl::StatusOr<Endpoint> parsed = ParseEndpoint(text);
  if (!parsed.ok()) {
    *error = std::string(parsed.status().message());
    return false;
  }
  *endpoint = *std::move(parsed);
  return true;
}

std::string AbslUnparseFlag(const Endpoint& endpoint) {
  return endpoint.ToString();
}

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
  absl::StatusOr<Endpoint> endpoint = ParseEndpoint(address);
  if (!endpoint.ok()) return Prefixed("listen spec", spec, endpoint.status());
  out.endpoint = *std::move(endpoint);
  return out;
}

std::string ListenSpecToString(const ListenSpec& spec) {
  return absl::StrCat(spec.name, "=", spec.endpoint.ToString());
}

bool AbslParseFlag(absl::string_view text, std::vector<ListenSpec>* specs,
                   std::string* error) {
  std::vector<ListenSpec> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    absl::StatusOr<ListenSpec> spec = ParseListenSpec(part);
    if (!spec.ok()) {
      *error = std::string(spec.status().message());
      return false;
    }
    out.push_back(*std::move(spec));
  }
  if (out.empty()) {
    *error = "at least one listen spec needed";
    return false;
  }
  *specs = std::move(out);
  return true;
}

std::string AbslUnparseFlag(const std::vector<ListenSpec>& specs) {
  std::vector<std::string> parts;
  for (const ListenSpec& spec : specs) {
    parts.push_back(ListenSpecToString(spec));
  }
  return absl::StrJoin(parts, ",");
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
  return PeerFromSockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
}

Peer PeerFromSockaddr(const sockaddr* sa, socklen_t len) {
  if (sa == nullptr) return {};
  return {FormatSockaddr(sa, len), HostOfSockaddr(sa, len)};
}

}  // namespace fanin::net
