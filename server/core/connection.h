// Connection: one accepted client socket, owned by the loop (shard) that
// reads and writes it.
//
// Lifecycle: Open -> (peer FIN) ReadClosed -> flush -> closed(PEER_CLOSED);
// a subscriber's graceful close flushes pending writes, sends FIN, drains the
// peer's remaining input (so the FIN does not turn into a RST) until EOF or
// the linger time, then closes. Every transition publishes its event to the
// hub; Closed is always last.
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

  // Publishes Opened and starts watching; on failure closes the fd and
  // returns the poller's status: the caller counts the rejection, drops the
  // connection and then publishes RejectedEvent.
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
  // True once a close was requested or under way (the connection is "gone"
  // for Write/Close/Read).
  bool closing() const { return state_ >= State::kClosing; }

 private:
  enum class State {
    kOpen,
    kReadClosed,   // peer FIN seen; flushing then closing (or half-open)
    kClosing,      // subscriber asked to close: flushing, then FIN
    kLingering,    // FIN sent: draining the peer's input until EOF
    kShuttingDown  // server shutdown: flushing, then close
  };

  void HandleReadable(uint32_t events);
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
  // Closes the fd, publishes Closed and deletes this. Return right after.
  void Finish(fanin::v1::CloseReason reason, std::string detail);
  void FinishWithErrno(const char* op, int err);

  Shard* const shard_;
  const ListenerInfo* const listener_;
  const uint64_t id_;
  int fd_;
  const std::string remote_;
  const std::string local_;
  const std::string peer_host_;
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
};

}  // namespace fanin::core

#endif  // FANIN_SERVER_CORE_CONNECTION_H_
