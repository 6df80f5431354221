// Transport: how a connection moves its bytes when a listener is not plain
// TCP — the seam between core's Connection and TLS (tls_transport.h), or the
// bytes a PROXY protocol header was read with (PrefixTransport). A plain TCP
// connection has none and calls read/send itself, so the seam costs it
// nothing.
//
// Every call is non-blocking on a non-blocking fd: kWouldBlock says which
// readiness to wait for (a TLS read can need the socket writable, and a
// write readable). Thread: the owning loop's; does not own the fd.
#ifndef FANIN_SERVER_NET_TRANSPORT_H_
#define FANIN_SERVER_NET_TRANSPORT_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace fanin::net {

struct IoResult {
  enum class Kind {
    kOk,          // `bytes` moved (> 0)
    kWouldBlock,  // wait for `wait_for` (kReadable or kWritable), then retry
    kEof,         // the peer closed its sending side (TLS: close_notify, or
                  // TCP FIN where no close_notify came: see clean_eof)
    kError,       // `err` (an errno, e.g. ECONNRESET) or `error` (TLS) says
  };
  Kind kind = Kind::kOk;
  size_t bytes = 0;
  uint32_t wait_for = 0;  // reactor::kReadable / kWritable
  int err = 0;
  std::string error;

  static IoResult Ok(size_t n) { return {Kind::kOk, n}; }
  static IoResult Eof() { return {Kind::kEof}; }
  static IoResult Blocked(uint32_t wait_for) {
    return {Kind::kWouldBlock, 0, wait_for};
  }
  static IoResult Errno(int err) { return {Kind::kError, 0, 0, err}; }
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Up to len plaintext bytes into buf.
  virtual IoResult Read(char* buf, size_t len) = 0;
  // Up to len plaintext bytes from data (len > 0); kOk may be short. After
  // kWouldBlock retry with the same bytes first (more may follow them).
  virtual IoResult Write(const char* data, size_t len) = 0;
  // Bytes the transport holds that the kernel no longer reports readable
  // (a PROXY header's tail, records OpenSSL read ahead): the caller must read
  // again without waiting for readiness.
  virtual bool HasPendingInput() const = 0;
  // TLS: sends close_notify (kOk once sent, kWouldBlock to retry). Plain: kOk.
  virtual IoResult CloseNotify() = 0;
};

// Plain TCP after a PROXY header: first the bytes read with the header, then
// the socket.
class PrefixTransport : public Transport {
 public:
  PrefixTransport(int fd, std::string prefix);
  IoResult Read(char* buf, size_t len) override;
  IoResult Write(const char* data, size_t len) override;
  bool HasPendingInput() const override { return pos_ < prefix_.size(); }
  IoResult CloseNotify() override { return IoResult::Ok(0); }

 private:
  const int fd_;
  std::string prefix_;
  size_t pos_ = 0;
};

}  // namespace fanin::net

#endif  // FANIN_SERVER_NET_TRANSPORT_H_
