// Listen specs and socket address formatting.
//
// Example:
//   auto spec = ParseListenSpec("raw=127.0.0.1:7000");  // name "raw"
//   auto unix_spec = ParseListenSpec("unix:/run/fanin.sock");  // "default"
#ifndef FANIN_SERVER_NET_ADDRESS_H_
#define FANIN_SERVER_NET_ADDRESS_H_

#include <sys/socket.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fanin::net {

struct ListenSpec {
  std::string name = "default";
  // "HOST:PORT" ("127.0.0.1:7000", "localhost:0", "[::1]:7000") or
  // "unix:PATH".
  std::string address;
};

// Parses "[NAME=]HOST:PORT" (IPv4 literal, hostname "localhost", or
// "[v6-literal]:PORT") or "[NAME=]unix:PATH". NAME is [A-Za-z0-9_.-]+.
// PORT is 0..65535 (0 = pick a free one). The address is normalised
// ("localhost" stays as written; resolution happens at bind time).
// Errors: InvalidArgument saying what is wrong.
absl::StatusOr<ListenSpec> ParseListenSpec(absl::string_view spec);

// "1.2.3.4:5", "[::1]:5", the path for unix sockets ("" when unnamed, "@name"
// for the abstract namespace), "" for a null/unknown address family.
std::string FormatSockaddr(const sockaddr* sa, socklen_t len);

// getsockname / getpeername formatted as above; "" on error.
std::string LocalAddressOf(int fd);
std::string PeerAddressOf(int fd);

// A connected peer, read once: `address` formatted as above, and `host` its
// IP ("1.2.3.4", "::1") for per-host accounting, "" for unix peers.
struct Peer {
  std::string address;
  std::string host;
};
Peer PeerOf(int fd);

}  // namespace fanin::net

#endif  // FANIN_SERVER_NET_ADDRESS_H_
