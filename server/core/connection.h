// Connection: one accepted client socket, owned by the loop (shard) that
// reads and writes it.
//
// Lifecycle: Open -> (peer FIN) ReadClosed -> flush -> closed(PEER_CLOSED);
// a subscriber's graceful close flushes pending writes, sends FIN, drains the
// peer's remaining input (so the FIN does not turn into a RST) until EOF or
// the linger time, then closes. Every transition publishes its event to the
// hub; Closed is always last.
//
// TLS and PROXY listeners put a setup phase first: the PROXY header is read
// (bounded by --proxy_header_timeout), then the TLS handshake runs (bounded
// by --tls_handshake_timeout); only then is Opened published, with the
// header's addresses and the session's TlsInfo. A connection whose setup
// fails or times out is counted (SetupCounters), logged rate-limited and
// closed without any event. Afterwards its bytes go through a net::Transport
// (plaintext in Data, Write and Read; close_notify before FIN); plain TCP
// connections have none and keep the direct read/send path.
//
// Thread: everything here runs on the owning loop's thread (checked in debug
// builds); no locks. Ownership: owns the fd; owned by its Shard, which
// deletes it in Finish().
#ifndef FANIN_SERVER_CORE_CONNECTION_H_
#define FANIN_SERVER_CORE_CONNECTION_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "fanin/v1/fanin.pb.h"
#include "server/fanout/stored_event.h"
#include "server/net/proxy_protocol.h"
#include "server/net/tls_transport.h"
#include "server/net/transport.h"
#include "server/reactor/event_loop.h"

namespace fanin::core {

class Shard;
struct ListenerInfo;

class Connection : public reactor::IoHandler {
 public:
  // `peer_host` is what the connection's slot was taken for
  // (ConnectionSlots::TryAcquire); the shard gives it back on Erase.
  Connection(Shard* shard, const ListenerInfo* listener, uint64_t id, int fd,
             std::string remote, std::string local, std::string peer_host);
  ~Connection() override;

  // Publishes Opened (TLS / PROXY: once set up) and starts watching; on
  // failure publishes Opened, closes the fd and returns the poller's status:
  // the caller counts the rejection, drops the connection and then
  // publishes RejectedEvent.
  absl::Status Start();
  // Closed(REJECTED) of this connection, for `why`.
  std::shared_ptr<fanout::StoredEvent> RejectedEvent(
      absl::string_view why) const;

  void OnIo(uint32_t events) override;

  // RPC operations (loop thread). Errors are gRPC-shaped absl statuses.
  absl::StatusOr<uint64_t> Write(absl::string_view data, bool close_after);
  absl::Status Close(bool abort);
  struct ReadOutcome {
    std::string data;
    bool read_closed = false;
  };
  absl::StatusOr<ReadOutcome> Read(uint32_t max_bytes);

  // Back-pressure from lossless subscribers (loop thread).
  void ResumeReading();
  // Server shutdown: flush what is queued, then close(SERVER_SHUTDOWN).
  void BeginShutdown();
  // Closes now if idle since before `cutoff`.
  void CloseIfIdle(absl::Time cutoff);
  // Shutdown deadline passed: close now, whatever is pending.
  void ForceClose();

  uint64_t id() const { return id_; }
  const std::string& remote_address() const { return remote_; }
  const std::string& peer_host() const { return peer_host_; }
  const ListenerInfo& listener() const { return *listener_; }
  void FillInfo(fanin::v1::Connection* out) const;
  // True once a close was requested or under way, and while a TLS / PROXY
  // connection is not yet Opened (the connection is "gone" for Write, Close,
  // Read and List).
  bool closing() const { return !established_ || state_ >= State::kClosing; }
  // False while a TLS handshake or PROXY header is under way.
  bool established() const { return established_; }

 private:
  enum class State {
    kOpen,
    kReadClosed,   // peer FIN seen; flushing then closing (or half-open)
    kClosing,      // subscriber asked to close: flushing, then FIN
    kLingering,    // FIN sent: draining the peer's input until EOF
    kShuttingDown  // server shutdown: flushing, then close
  };

  // Setup (TLS / PROXY listeners).
  void BeginSetup();
  void OnSetupIo();
  void ReadProxyHeader();
  void OnProxyHeader();
  void StartTls(std::string prefix);
  void ContinueHandshake();
  void SetSetupInterest(uint32_t want);
  void Establish();
  void FailSetup(bool tls, int reason, absl::string_view detail);
  void RejectAfterProxy(const std::string& host);
  // Closes the fd and erases this without any event (never Opened).
  void Abandon();

  void HandleReadable(uint32_t events);
  void ReadTransport();
  absl::StatusOr<ReadOutcome> ReadRpcTransport(uint32_t max, ReadOutcome out);
  int SendSomeTransport(const char* data, size_t len, size_t* sent);
  void HandlePullReadable();
  void OnPeerEof();
  // Sends data[0, len) until all is sent or the socket is full; counts what
  // went out in *sent. 0, or the errno that failed the send.
  int SendSome(const char* data, size_t len, size_t* sent);
  // Writes from the outbound buffer; false if the connection was finished.
  bool Flush();
  bool AfterFlushed();
  bool SendFinAndLinger();
  void UpdateInterest();
  // An event of this connection with its header filled in; Publish sends it.
  fanin::v1::Event NewEvent() const;
  void Publish(const fanin::v1::Event& event);
  // Gives a stored event of this connection its identity and the totals so
  // far (what worker-pool groups tell a member that takes it over).
  std::shared_ptr<fanout::StoredEvent> Stamp(
      std::shared_ptr<fanout::StoredEvent> event) const;
  // Closes the fd, publishes Closed and deletes this. Return right after.
  void Finish(fanin::v1::CloseReason reason, std::string detail);
  void FinishWithErrno(const char* op, int err);

  Shard* const shard_;
  const ListenerInfo* const listener_;
  const uint64_t id_;
  int fd_;
  // The PROXY header's addresses replace the socket's.
  std::string remote_;
  std::string local_;
  std::string peer_host_;
  // Who it is, for stored events (Stamp): made at the first event, the
  // Opened, which comes after a PROXY header replaced the addresses.
  mutable std::shared_ptr<const fanout::ConnectionInfo> info_;
  const int64_t opened_unix_nano_;
  absl::Time last_activity_;
  State state_ = State::kOpen;
  uint32_t interest_ = 0;
  bool watching_ = false;
  bool read_paused_ = false;         // back-pressure
  bool readable_announced_ = false;  // pull mode: Readable sent, not drained
  bool write_waited_ = false;        // a Write had to queue: Writable owed
  bool peer_eof_ = false;
  bool fin_signalled_ = false;  // poller reported the peer's FIN (RDHUP/HUP)
  uint64_t bytes_received_ = 0;
  uint64_t bytes_sent_ = 0;
  // Outbound bytes not yet written: out_[out_head_, out_.size()). Empty (and
  // without capacity) while nothing waits, so idle connections cost little.
  std::string out_;
  size_t out_head_ = 0;
  reactor::EventLoop::TimerId linger_timer_ = 0;

  // TLS / PROXY only; plain TCP connections leave these empty.
  bool established_ = true;        // Opened published
  bool read_wants_write_ = false;  // a TLS read waits for writability
  bool write_wants_read_ = false;  // a TLS write waits for readability
  bool close_notify_pending_ = false;
  bool close_notified_ = false;
  reactor::EventLoop::TimerId setup_timer_ = 0;
  std::unique_ptr<net::ProxyHeaderParser> proxy_;  // while reading the header
  std::unique_ptr<fanin::v1::ProxyInfo> proxy_info_;  // until Opened
  std::unique_ptr<net::Transport> transport_;
  net::TlsTransport* tls_ = nullptr;  // transport_, on TLS listeners
  std::string transport_error_;       // a TLS failure, for Closed.detail
};

}  // namespace fanin::core

#endif  // FANIN_SERVER_CORE_CONNECTION_H_
