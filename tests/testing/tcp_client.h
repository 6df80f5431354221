// A raw stream-socket client for tests: connects to "HOST:PORT", "[V6]:PORT"
// or "unix:PATH", and sends/receives with deadlines (non-blocking socket plus
// poll; no fixed sleeps).
//
// Example:
//   auto client = fanin::testing::ConnectTcp(server->listen_address().value());
//   ASSERT_TRUE(client.ok());
//   ASSERT_TRUE(client->SendAll("hello").ok());
//   auto bytes = client->RecvExactly(5);
//
// Owns its fd (closed on destruction). Movable, not copyable. One thread at a
// time.
#ifndef FANIN_TESTS_TESTING_TCP_CLIENT_H_
#define FANIN_TESTS_TESTING_TCP_CLIENT_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fanin::testing {

inline absl::Time DefaultDeadline() { return absl::Now() + absl::Seconds(10); }

class TcpClient {
 public:
  TcpClient() = default;
  explicit TcpClient(int fd) : fd_(fd) {}
  ~TcpClient();
  TcpClient(TcpClient&& other) noexcept;
  TcpClient& operator=(TcpClient&& other) noexcept;
  TcpClient(const TcpClient&) = delete;
  TcpClient& operator=(const TcpClient&) = delete;

  int fd() const { return fd_; }

  // Sends every byte or fails (peer reset, deadline).
  absl::Status SendAll(absl::string_view bytes,
                       absl::Time deadline = DefaultDeadline());
  // Returns 1..max_bytes bytes, or "" at EOF. DeadlineExceeded when nothing
  // arrives in time.
  absl::StatusOr<std::string> Recv(size_t max_bytes = 65536,
                                   absl::Time deadline = DefaultDeadline());
  // Exactly n bytes; OutOfRange when EOF comes first (message holds what
  // arrived).
  absl::StatusOr<std::string> RecvExactly(
      size_t n, absl::Time deadline = DefaultDeadline());
  // Everything until the peer closes. Fails on deadline or reset.
  absl::StatusOr<std::string> RecvUntilEof(
      absl::Time deadline = DefaultDeadline());
  // True once the peer has closed (EOF, or reset), draining any bytes still
  // unread into *drained when given. False at the deadline.
  bool WaitForPeerClose(absl::Time deadline = DefaultDeadline(),
                        std::string* drained = nullptr);

  // shutdown(SHUT_WR): sends FIN, keeps reading.
  absl::Status ShutdownWrite();
  // close() with SO_LINGER 0: the peer sees a RST.
  void Abort();
  void Close();

 private:
  int fd_ = -1;
};

// Connects to "127.0.0.1:PORT", "[::1]:PORT", "localhost:PORT" or
// "unix:PATH".
absl::StatusOr<TcpClient> ConnectTcp(absl::string_view address,
                                     absl::Time deadline = DefaultDeadline());

// A TCP client bound to `source_ip` (any 127.x.y.z) connected to
// "HOST:PORT" (IPv4), non-blocking once connected; an error status when it
// cannot connect. A positive `rcvbuf` is set as SO_RCVBUF before connecting,
// so the kernel cannot absorb much of what the server sends while the client
// does not read.
absl::StatusOr<TcpClient> ConnectFrom(const std::string& source_ip,
                                      const std::string& address,
                                      int rcvbuf = 0);

// Reads a non-blocking or blocking socket (it does not own) until EOF or an
// error; returns the bytes and sets *error to 0 on EOF, to the errno (e.g.
// ECONNRESET) on error, or to -1 at the deadline.
std::string ReadUntilEofOrError(int fd, absl::Time deadline, int* error);

}  // namespace fanin::testing

#endif  // FANIN_TESTS_TESTING_TCP_CLIENT_H_
