// Addresses to bind (the listen grammar) and socket address formatting.
//
// Example:
//   auto spec = ParseListenSpec("raw=127.0.0.1:7000");  // name "raw"
//   auto unix_spec = ParseListenSpec("unix:/run/fanin.sock");  // "default"
//   auto grpc = Endpoint::Parse("[::1]:50051");  // kInet6, host "::1"
//   grpc->ToString();  // "[::1]:50051"
#ifndef FANIN_SERVER_NET_ADDRESS_H_
#define FANIN_SERVER_NET_ADDRESS_H_

#include <sys/socket.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fanin::net {

// An address to bind, parsed once from "HOST:PORT" (IPv4 literal or
// "localhost"), "[V6-LITERAL]:PORT" or "unix:PATH" (PATH starting with '@'
// is in the abstract namespace). PORT is 0..65535 (0 = pick a free one).
// "localhost" stays as written; it means 127.0.0.1 and never asks a resolver.
struct Endpoint {
  enum class Family { kInet, kInet6, kUnix };

  // Errors: InvalidArgument `address "TEXT": what is wrong`.
  static absl::StatusOr<Endpoint> Parse(absl::string_view text);
  // 127.0.0.1:port.
  static Endpoint Loopback(int port);

  // The canonical text, which Parse takes back: "127.0.0.1:7000",
  // "localhost:0", "[::1]:9", "unix:/run/fanin.sock".
  std::string ToString() const;

  Family family = Family::kInet;
  // kInet / kInet6: the host as written, without brackets.
  std::string host;
  int port = 0;
  // kUnix: the socket path ("@name" for the abstract namespace).
  std::string path;
};

bool operator==(const Endpoint& a, const Endpoint& b);

// Abseil flag marshalling: an Endpoint flag takes the text Parse takes.
bool AbslParseFlag(absl::string_view text, Endpoint* endpoint,
                   std::string* error);
std::string AbslUnparseFlag(const Endpoint& endpoint);

struct ListenSpec {
  std::string name = "default";
  Endpoint endpoint;
};

// Parses "[NAME=]ENDPOINT" (see Endpoint). NAME is [A-Za-z0-9_.-]+;
// "unix:/a=b" has no name, "n=unix:/a=b" has one.
// Errors: InvalidArgument `listen spec "SPEC": what is wrong`.
absl::StatusOr<ListenSpec> ParseListenSpec(absl::string_view spec);
// "NAME=ENDPOINT", which ParseListenSpec takes back.
std::string ListenSpecToString(const ListenSpec& spec);

// Abseil flag marshalling for a list of listen specs: comma-separated (so a
// unix path in such a list cannot contain a comma), at least one.
bool AbslParseFlag(absl::string_view text, std::vector<ListenSpec>* specs,
                   std::string* error);
std::string AbslUnparseFlag(const std::vector<ListenSpec>& specs);

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
// The same from the address accept(2) returned: it holds even when the peer
// has already reset, where getpeername fails.
Peer PeerFromSockaddr(const sockaddr* sa, socklen_t len);

}  // namespace fanin::net

#endif  // FANIN_SERVER_NET_ADDRESS_H_
